"""Tests for coursekit.autoregressive against independent computations: causality by autograd (the receptive
field of every output), exact normalisation by enumerating every sequence of a tiny model, torch.distributions'
categorical log-probabilities, brute-force nearest neighbours (scipy), the straight-through gradient by autograd,
counting for the independent-pixel baseline, seeded determinism of sampling and errors on bad input."""

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist

from coursekit import autoregressive as A
from coursekit import data


def strictly_lower(n):
    return torch.tril(torch.ones(n, n, dtype=torch.bool), -1)


# ------------------------------------------------------------------------------------------------ tokens
def test_tokens_round_trip():
    x, _ = data.load_digits("val")
    t = A.digits_to_tokens(x)
    assert t.dtype == torch.int64 and t.shape == (250, 64) and int(t.min()) >= 0 and int(t.max()) <= 16
    assert torch.equal(A.tokens_to_digits(t), x)
    assert torch.equal(A.digits_to_tokens(x.reshape(-1, 1, 8, 8)), t)
    with pytest.raises(ValueError, match="k/16"):
        A.digits_to_tokens(x + 0.01)
    with pytest.raises(TypeError, match="floating"):
        A.digits_to_tokens(t)


# ------------------------------------------------------------------------------------------------ masks
@pytest.mark.parametrize("k", [1, 3, 5, 7])
def test_causal_mask_against_raster_order(k):
    c = k // 2
    for mask_type in ("A", "B"):
        m = A.causal_mask(k, mask_type)
        for r, s in itertools.product(range(k), range(k)):
            before = r * k + s < c * k + c  # raster order relative to the centre
            want = before or (mask_type == "B" and (r, s) == (c, c))
            assert m[r, s] == float(want)
    assert A.causal_mask(k, "V_A")[c:].sum() == 0 and A.causal_mask(k, "V_A")[:c].all()
    assert A.causal_mask(k, "V_B")[: c + 1].all() and A.causal_mask(k, "V_B")[c + 1:].sum() == 0
    assert A.causal_mask(k, "H_A").sum() == c and A.causal_mask(k, "H_B").sum() == c + 1


def test_causal_mask_errors():
    with pytest.raises(ValueError, match="odd"):
        A.causal_mask(4, "A")
    with pytest.raises(ValueError, match="mask_type"):
        A.causal_mask(3, "C")


def test_masked_conv_uses_the_mask_at_every_call():
    conv = A.MaskedConv2d(2, 3, 3, "A")
    x = torch.randn(1, 2, 5, 5, requires_grad=True)
    conv(x)[0, :, 2, 2].sum().backward()
    g = x.grad.abs().sum(dim=(0, 1))
    assert g[2, 2] == 0 and g[2, 3] == 0 and g[3].sum() == 0  # centre, right and below are never seen
    assert g[1].sum() > 0 and g[2, 1] > 0


# ------------------------------------------------------------------------------------------------ causality
def causal_models():
    torch.manual_seed(0)
    return {
        "pixelcnn": A.PixelCNN(channels=8, n_layers=2),
        "gated": A.GatedPixelCNN(channels=8, n_layers=4, kernel=5),
        "gated_k3": A.GatedPixelCNN(channels=8, n_layers=2, kernel=3),
        "transformer": A.CausalTransformer(17, 64, d_model=16, n_heads=2, n_layers=2),
    }


@pytest.mark.parametrize("name", ["pixelcnn", "gated", "gated_k3", "transformer"])
def test_every_model_is_causal_by_autograd(name):
    model = causal_models()[name]
    g = A.dependency_matrix(model, generator=torch.Generator().manual_seed(0))
    assert g.shape == (64, 64)
    assert torch.triu(g).max() == 0  # output i never depends on input j >= i


def test_causality_by_perturbation():
    """Changing token j changes no logit at positions <= j (an independent check of the autograd one)."""
    for model in causal_models().values():
        model.eval()
        t = torch.randint(17, (3, 64), generator=torch.Generator().manual_seed(1))
        base = model(t)
        for j in (0, 9, 35, 63):
            t2 = t.clone()
            t2[:, j] = (t2[:, j] + 5) % 17
            diff = (model(t2) - base).abs().amax(dim=(0, 2))
            assert diff[: j + 1].max() == 0 and (j == 63 or diff[j + 1:].max() > 0)


def test_blind_spot_of_plain_pixelcnn_and_the_gated_fix():
    torch.manual_seed(0)
    deep_plain = A.PixelCNN(channels=8, n_layers=8, first_kernel=5)  # its field covers the image except the spot
    g_plain = A.dependency_matrix(deep_plain)
    g_gated = A.dependency_matrix(A.GatedPixelCNN(channels=8, n_layers=4, kernel=5))
    # pixel (r, c) = (4, 3): the pixels (3, 6), (3, 7) and (2, 7) up and to the right are blind for the plain
    # model (the B masks grow the field right by one column per row up), while (3, 5) and (1, 7) are seen
    i = 4 * 8 + 3
    assert g_plain[i, 3 * 8 + 6] == 0 and g_plain[i, 3 * 8 + 7] == 0 and g_plain[i, 2 * 8 + 7] == 0
    assert g_plain[i, 3 * 8 + 5] > 0 and g_plain[i, 1 * 8 + 7] > 0
    assert bool((g_gated[strictly_lower(64)] > 0).all())  # the gated model sees every earlier pixel
    assert int((g_plain[strictly_lower(64)] == 0).sum()) > 0


def test_conditional_gated_is_causal_and_uses_the_label():
    torch.manual_seed(0)
    m = A.GatedPixelCNN(channels=8, n_layers=2, n_classes=10).eval()
    y = torch.tensor([0, 1, 2, 3])
    g = A.dependency_matrix(m, y=y)
    assert torch.triu(g).max() == 0
    t = torch.randint(17, (4, 64))
    assert not torch.allclose(m(t, y=y), m(t, y=(y + 1) % 10))
    with pytest.raises(ValueError, match="n_classes"):
        m(t)
    with pytest.raises(ValueError, match="0..9"):
        m(t, y=torch.tensor([0, 1, 2, 10]))


# ------------------------------------------------------------------------------------------------ likelihood
def tiny_models():
    torch.manual_seed(3)
    return [A.CausalTransformer(3, 4, d_model=8, n_heads=2, n_layers=1),
            A.GatedPixelCNN(levels=2, channels=4, n_layers=2, kernel=3, height=2, width=2),
            A.PixelCNN(levels=3, channels=4, n_layers=1, first_kernel=3, height=2, width=2)]


@pytest.mark.parametrize("k", [0, 1, 2])
def test_exact_normalisation_by_enumeration(k):
    model = tiny_models()[k].double()
    v, length = model.vocab_size, model.seq_len
    every = torch.tensor(list(itertools.product(range(v), repeat=length)))  # all V^L sequences
    with torch.no_grad():
        total = torch.logsumexp(A.sequence_log_prob(model, every), 0)
    assert every.shape[0] == v**length
    assert abs(total.item()) < 1e-10


def test_log_prob_is_the_sum_of_categorical_log_probs():
    model = causal_models()["transformer"]
    t = torch.randint(17, (5, 64))
    logits = model(t)
    want = torch.distributions.Categorical(logits=logits).log_prob(t).sum(1)
    assert torch.allclose(A.sequence_log_prob(model, t), want, atol=1e-5)
    loss, parts = A.nll_loss(model, t)
    assert torch.isclose(loss, -want.mean(), atol=1e-5) and torch.isclose(parts["nll"], loss)
    w = torch.zeros(64)
    w[10:] = 1
    assert torch.allclose(A.sequence_log_prob(model, t, weights=w),
                          torch.distributions.Categorical(logits=logits[:, 10:]).log_prob(t[:, 10:]).sum(1), atol=1e-5)


def test_bits_per_dim_and_the_uniform_model():
    assert A.bits_per_dim(64 * math.log(17), 64) == pytest.approx(math.log2(17))


def test_pixel_marginals_by_counting():
    t = torch.randint(5, (40, 7), generator=torch.Generator().manual_seed(0))
    p = A.pixel_marginals(t, 5, pseudocount=0.5)
    counts = np.zeros((7, 5))
    for row in t.numpy():
        for i, v in enumerate(row):
            counts[i, v] += 1
    assert np.allclose(p.numpy(), (counts + 0.5) / (40 + 2.5))
    assert torch.allclose(p.sum(1), torch.ones(7))
    nll = A.marginal_nll(p, t)
    assert torch.allclose(nll, -torch.log(p[torch.arange(7), t]).sum(1))
    with pytest.raises(ValueError, match="0..4"):
        A.pixel_marginals(t + 1, 5)


# ------------------------------------------------------------------------------------------------ sampling
def test_top_k_and_sample_next():
    logits = torch.tensor([[1.0, 3.0, 2.0, 0.0]])
    assert torch.equal(torch.isfinite(A.top_k_logits(logits, 2)), torch.tensor([[False, True, True, False]]))
    assert torch.equal(A.top_k_logits(logits, None), logits)
    g = torch.Generator().manual_seed(0)
    draws = A.sample_next(logits.expand(20000, 4), temperature=0.5, top_k=3, generator=g)
    freq = torch.bincount(draws, minlength=4).double() / 20000
    want = torch.softmax(torch.tensor([1.0, 3.0, 2.0]).double() / 0.5, 0)
    assert freq[3] == 0 and torch.allclose(freq[:3], want, atol=5 * math.sqrt(0.25 / 20000))
    with pytest.raises(ValueError, match="temperature"):
        A.sample_next(logits, temperature=0.0)
    with pytest.raises(ValueError, match="at most"):
        A.top_k_logits(logits, 5)
    with pytest.raises(ValueError, match="NaN"):
        A.sample_next(torch.tensor([[0.0, float("nan")]]))


@pytest.mark.parametrize("name", ["gated", "transformer"])
def test_sampling_is_deterministic_with_a_seed(name):
    model = causal_models()[name]
    s1 = A.sample(model, 4, generator=torch.Generator().manual_seed(5), temperature=0.9, top_k=8)
    s2 = A.sample(model, 4, generator=torch.Generator().manual_seed(5), temperature=0.9, top_k=8)
    s3 = A.sample(model, 4, generator=torch.Generator().manual_seed(6), temperature=0.9, top_k=8)
    assert torch.equal(s1, s2) and not torch.equal(s1, s3)
    assert s1.shape == (4, 64) and s1.dtype == torch.int64 and int(s1.max()) < 17


def test_sample_keeps_the_prefix_and_the_token_range():
    torch.manual_seed(0)
    model = A.CausalTransformer(10, 6, d_model=8, n_heads=2, n_layers=1)
    prefix = torch.tensor([[1, 2], [3, 4]])
    s = A.sample(model, 2, prefix=prefix, token_range=(5, 10), generator=torch.Generator().manual_seed(0))
    assert torch.equal(s[:, :2], prefix) and int(s[:, 2:].min()) >= 5
    with pytest.raises(ValueError, match="prefix"):
        A.sample(model, 3, prefix=prefix)


def test_sampling_matches_the_model_distribution():
    """Ancestral samples of a tiny model follow its exact sequence probabilities (chi-square-like check)."""
    model = tiny_models()[0]
    every = torch.tensor(list(itertools.product(range(3), repeat=4)))
    with torch.no_grad():
        p = A.sequence_log_prob(model, every).exp()
    s = A.sample(model, 20000, generator=torch.Generator().manual_seed(0))
    idx = (s * torch.tensor([27, 9, 3, 1])).sum(1)
    freq = torch.bincount(idx, minlength=81).double() / 20000
    se = (p.double() * (1 - p.double()) / 20000).sqrt()
    assert ((freq - p.double()).abs() <= 5 * se + 1e-4).all()


# ------------------------------------------------------------------------------------------------ VQ
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_vq_assign_matches_brute_force(seed):
    g = torch.Generator().manual_seed(seed)
    z, e = torch.randn(200, 5, generator=g), torch.randn(17, 5, generator=g)
    want = cdist(z.double().numpy(), e.double().numpy()).argmin(1)
    assert np.array_equal(A.vq_assign(z, e).numpy(), want)
    with pytest.raises(ValueError, match="shape"):
        A.vq_assign(z, e[:, :4])
    with pytest.raises(ValueError, match="NaN"):
        A.vq_assign(torch.full((2, 5), float("nan")), e)


def test_straight_through_gradient_is_the_identity():
    z_e = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    z_q = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)
    out = A.straight_through(z_e, z_q)
    assert torch.equal(out.detach(), z_q.detach())
    jac = torch.autograd.functional.jacobian(lambda a: A.straight_through(a, z_q.detach()), z_e.detach())
    assert torch.equal(jac.reshape(18, 18), torch.eye(18, dtype=torch.float64))
    w = torch.randn(6, 3, dtype=torch.float64)
    (out * w).sum().backward()
    assert torch.equal(z_e.grad, w) and (z_q.grad is None or z_q.grad.abs().max() == 0)
    with pytest.raises(ValueError, match="same shape"):
        A.straight_through(z_e, z_q[:3])


def test_vector_quantizer_losses_and_gradients():
    torch.manual_seed(0)
    vq = A.VectorQuantizer(8, 4, beta=0.25)
    z_e = torch.randn(2, 4, 3, 3, requires_grad=True)
    z_q, codes, losses = vq(z_e)
    flat = z_e.detach().permute(0, 2, 3, 1).reshape(-1, 4)
    assert torch.equal(codes.reshape(-1), A.vq_assign(flat, vq.codebook.detach()))
    e = vq.codebook.detach()[codes.reshape(-1)]
    assert torch.allclose(z_q.detach().permute(0, 2, 3, 1).reshape(-1, 4), e)
    d2 = ((flat - e) ** 2).sum(1).mean()
    assert torch.isclose(losses["codebook"], d2) and torch.isclose(losses["commitment"], 0.25 * d2)
    # the codebook loss moves only the codes, the commitment loss only the encoder output
    g_code = torch.autograd.grad(losses["codebook"], [vq.codebook, z_e], allow_unused=True, retain_graph=True)
    g_commit = torch.autograd.grad(losses["commitment"], [vq.codebook, z_e], allow_unused=True, retain_graph=True)
    assert g_code[1] is None and g_code[0].abs().sum() > 0
    assert g_commit[0] is None and g_commit[1].abs().sum() > 0
    assert int(vq.usage.sum()) == 18


def test_codebook_loss_minimiser_is_the_mean_of_the_assigned_vectors():
    """For fixed assignments the codebook loss is minimised by the cluster means (a k-means M-step)."""
    torch.manual_seed(1)
    vq = A.VectorQuantizer(3, 2)
    z = torch.randn(1, 2, 10, 10)
    codes = vq(z)[1].reshape(-1)
    opt = torch.optim.SGD(vq.parameters(), lr=0.5)
    for _ in range(200):
        flat = z.permute(0, 2, 3, 1).reshape(-1, 2)
        loss = ((flat - vq.codebook[codes]) ** 2).sum(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    flat = z.permute(0, 2, 3, 1).reshape(-1, 2)
    for k in codes.unique():
        assert torch.allclose(vq.codebook[k].detach(), flat[codes == k].mean(0), atol=1e-4)


def test_code_usage_and_perplexity():
    u = A.code_usage(torch.tensor([0, 0, 1, 3]), 4)
    p = np.array([0.5, 0.25, 0.25])
    assert u["used"] == 3 and u["fraction"] == 0.75
    assert u["perplexity"] == pytest.approx(math.exp(-(p * np.log(p)).sum()))
    assert A.code_usage(torch.zeros(10, dtype=torch.int64), 4)["perplexity"] == pytest.approx(1.0)
    assert A.code_usage(torch.arange(8) % 4, 4)["perplexity"] == pytest.approx(4.0)
    with pytest.raises(ValueError, match="0..3"):
        A.code_usage(torch.tensor([4]), 4)


def test_dead_code_restart():
    torch.manual_seed(0)
    vq = A.VectorQuantizer(6, 2)
    with torch.no_grad():
        vq.codebook[:] = torch.tensor([[0.0, 0.0]] + [[100.0 + i, 100.0] for i in range(5)])
    z = 0.1 * torch.randn(1, 2, 4, 4)
    vq(z)
    assert int((vq.usage > 0).sum()) == 1
    assert vq.restart_dead_codes(z, generator=torch.Generator().manual_seed(0)) == 5
    flat = z.permute(0, 2, 3, 1).reshape(-1, 2)
    for k in range(1, 6):  # each restarted code is one of the encoder outputs
        assert (vq.codebook[k].detach() - flat).abs().sum(1).min() == 0
    assert vq.usage.sum() == 0


def test_vqvae_shapes_and_loss():
    torch.manual_seed(0)
    m = A.VQVAE(n_codes=8, dim=4, channels=8)
    x = data.load_digits("val", image_shape=True)[0][:5]
    recon, codes, _ = m(x)
    assert recon.shape == x.shape and codes.shape == (5, 4, 4)
    assert torch.equal(m.tokenize(x), codes.reshape(5, 16))
    assert m.decode_codes(m.tokenize(x)).shape == x.shape
    loss, parts = A.vqvae_loss(m, x)
    assert torch.isclose(loss, parts["recon"] + parts["codebook"] + parts["commitment"])
    loss.backward()
    assert m.encoder[0].weight.grad.abs().sum() > 0  # the straight-through path reaches the encoder
    with pytest.raises(ValueError, match="shape"):
        m.encode(x.reshape(5, 64))


def test_vqvae_loss_is_the_written_objective_and_straight_through_leaves_the_codes_alone():
    """vqvae_loss = mean over images of ||x - x_hat||^2 (summed over pixels) + (1/M) sum_m (codebook + beta *
    commitment), computed here from the encoder, the brute-force nearest codes and the decoder; the
    reconstruction's exact gradient moves the codes, the straight-through one does not."""
    torch.manual_seed(3)
    m = A.VQVAE(n_codes=8, dim=4, channels=8, beta=0.4)
    x = data.load_digits("val", image_shape=True)[0][:6]
    loss, _ = A.vqvae_loss(m, x)
    with torch.no_grad():
        z = m.encode(x).permute(0, 2, 3, 1).reshape(6, 16, 4)  # (N, M, d)
    codes = torch.from_numpy(cdist(z.reshape(-1, 4).numpy(), m.vq.codebook.detach().numpy()).argmin(1))
    e = m.vq.codebook[codes.reshape(6, 16)]
    rec = m.decode(e.permute(0, 2, 1).reshape(6, 4, 4, 4))
    per_image = ((x - rec) ** 2).sum((1, 2, 3)) + (1 + 0.4) * ((z - e) ** 2).sum(2).mean(1)
    assert torch.isclose(loss, per_image.mean(), rtol=1e-5)
    (g_exact,) = torch.autograd.grad(((rec - x) ** 2).sum(), m.vq.codebook)
    g_st = torch.autograd.grad(((m(x)[0] - x) ** 2).sum(), m.vq.codebook, allow_unused=True)[0]
    assert g_exact.abs().max() > 0 and (g_st is None or g_st.abs().max() == 0)


# ------------------------------------------------------------------------------------------------ captions
def test_captions_and_tokenizer():
    x, y = data.load_digits("train")
    caps, thr = A.digit_captions(x, y)
    ink = x.sum(1)
    assert len(caps) == len(y) and thr.shape == (10,)
    for c in range(10):
        assert thr[c] == ink[y == c].median()
    assert caps[0].split()[2] == A.DIGIT_NAMES[int(y[0])]
    assert ("thick" in caps[0]) == bool(ink[0] >= thr[y[0]])
    tok = A.WordTokenizer(("a", "thin", "thick") + A.DIGIT_NAMES)
    t = tok.encode(caps[:5])
    assert t.shape == (5, 3) and tok.decode(t) == caps[:5]
    with pytest.raises(ValueError, match="unknown"):
        tok.encode(["a fat seven"])
    with pytest.raises(ValueError, match="unique"):
        A.WordTokenizer(["a", "a"])


# ------------------------------------------------------------------------------------------------ bad input
def test_bad_token_input():
    model = causal_models()["transformer"]
    with pytest.raises(TypeError, match="integer"):
        model(torch.zeros(2, 64))
    with pytest.raises(ValueError, match="0..16"):
        model(torch.full((2, 64), 17))
    with pytest.raises(ValueError, match="at most"):
        model(torch.zeros(2, 65, dtype=torch.int64))
    gated = causal_models()["gated"]
    with pytest.raises(ValueError, match="shape"):
        gated(torch.zeros(2, 63, dtype=torch.int64))
    with pytest.raises(ValueError, match="divisible"):
        A.CausalTransformer(5, 4, d_model=10, n_heads=3)
    with pytest.raises(ValueError, match="n"):
        A.sample(model, 0)
