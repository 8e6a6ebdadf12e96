"""Tests for coursekit.guidance (chapter 12): the guided noise predictions against autograd on closed-form Gaussians,
condition dropout, dynamic thresholding against numpy, captions and the text encoder's masking, the contrastive
logits and InfoNCE against scikit-learn and a Monte Carlo bound, zero-shot classification, masked cross-attention
against torch's scaled_dot_product_attention, the latent space, FLOP counting, the stroke dilation against a direct
definition, the pix2pix and CycleGAN losses and players, and errors on bad input."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import log_loss
from sklearn.metrics.pairwise import cosine_similarity
from torch import nn

from coursekit import diffusion as dm
from coursekit import gan, mixtures
from coursekit import guidance as gd
from coursekit.autoencoders import Autoencoder
from coursekit.train import fit_players

ABAR = dm.alphas_cumprod_from_betas(dm.beta_schedule("linear", 100))  # float64 (100,)


def _grad(f, x):
    x = x.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(f(x).sum(), x)
    return g


class _GaussianClasses:
    """Two or three Gaussian classes N(mu_y, s^2 I) with priors, noised by the forward process: every score closed."""

    def __init__(self, means, std, prior):
        self.means, self.std, self.prior = means, std, prior

    def parts(self, t):
        a = ABAR[t]
        return a.sqrt() * self.means, a.sqrt() * self.std * torch.ones(len(self.prior), dtype=torch.float64), float(
            (1 - a).sqrt())

    def log_marginal(self, x, t):
        m, s, sig = self.parts(t)
        return mixtures.gaussian_mixture_log_prob(x, m, s, self.prior, sigma=sig)

    def log_conditional(self, x, t, y):
        a = ABAR[t]
        var = a * self.std**2 + 1 - a
        return torch.distributions.Normal(a.sqrt() * self.means[y], var.sqrt()).log_prob(x).sum(-1)

    def conditional_score(self, x, t, y):
        a = ABAR[t]
        return -(x - a.sqrt() * self.means[y]) / (a * self.std**2 + 1 - a)


TOY = _GaussianClasses(torch.tensor([[-2.0, 0.0], [1.0, 1.5], [1.5, -1.0]], dtype=torch.float64), 0.5,
                       torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64))


# ------------------------------------------------------------------------------------------------ guidance


@pytest.mark.parametrize("t", [0, 40, 99])
@pytest.mark.parametrize("w", [0.0, 1.0, 2.5])
def test_classifier_guided_eps_is_the_noise_of_the_tilted_score(t, w):
    """eps - w sqrt(1 - abar) grad log p(y | x) = -sqrt(1 - abar) grad [log p_t(x) + w log p_t(y | x)] (autograd),
    and at w = 1 the noise of the closed-form conditional score (Bayes' rule for scores)."""
    g = torch.Generator().manual_seed(t)
    x = 2 * torch.randn(64, 2, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (64,), generator=g)
    sigma = float((1 - ABAR[t]).sqrt())

    def log_post(z):
        return TOY.log_conditional(z, t, y) + TOY.prior[y].log() - TOY.log_marginal(z, t)

    eps_u = -sigma * _grad(lambda z: TOY.log_marginal(z, t), x)
    guided = gd.classifier_guided_eps(eps_u, _grad(log_post, x), t, ABAR, w)
    tilted = -sigma * _grad(lambda z: TOY.log_marginal(z, t) + w * log_post(z), x)
    assert torch.allclose(guided, tilted, atol=1e-10)
    if w == 1.0:
        assert torch.allclose(guided, -sigma * TOY.conditional_score(x, t, y), atol=1e-10)


def test_classifier_free_eps_equals_classifier_guidance_with_the_implicit_classifier():
    g = torch.Generator().manual_seed(1)
    x = 2 * torch.randn(50, 2, generator=g, dtype=torch.float64)
    y = torch.full((50,), 1)
    for t in (5, 60):
        sigma = float((1 - ABAR[t]).sqrt())
        eps_u = -sigma * _grad(lambda z, t=t: TOY.log_marginal(z, t), x)
        eps_c = -sigma * TOY.conditional_score(x, t, y)
        post = _grad(lambda z, t=t: TOY.log_conditional(z, t, y) - TOY.log_marginal(z, t), x)
        for w in (0.0, 0.7, 3.0):
            assert torch.allclose(gd.classifier_free_eps(eps_c, eps_u, w),
                                  gd.classifier_guided_eps(eps_u, post, t, ABAR, w), atol=1e-10)
    assert torch.allclose(gd.classifier_free_eps(eps_c, eps_u, 0.0), eps_u)
    assert torch.allclose(gd.classifier_free_eps(eps_c, eps_u, 1.0), eps_c, atol=1e-15)


def test_guidance_arithmetic_rejects_bad_input():
    e = torch.zeros(3, 1, 2, 2)
    with pytest.raises(ValueError, match="same shape"):
        gd.classifier_free_eps(e, torch.zeros(3, 1, 2, 3), 1.0)
    with pytest.raises(ValueError, match="w must be a finite"):
        gd.classifier_free_eps(e, e, math.inf)
    with pytest.raises(TypeError, match="w must be a real"):
        gd.classifier_free_eps(e, e, True)
    with pytest.raises(ValueError, match="NaN"):
        gd.classifier_guided_eps(e, torch.full_like(e, math.nan), 0, ABAR, 1.0)
    with pytest.raises(ValueError, match="t must lie"):
        gd.classifier_guided_eps(e, e, 100, ABAR, 1.0)
    with pytest.raises(TypeError, match="integer time"):
        gd.classifier_guided_eps(e, e, torch.zeros(3), ABAR, 1.0)
    with pytest.raises(ValueError, match="alphas_cumprod"):
        gd.classifier_guided_eps(e, e, 0, torch.zeros(10, dtype=torch.float64), 1.0)


def test_class_log_prob_grad_matches_the_softmax_gradient_of_a_linear_classifier():
    """For logits x W + b: grad_x log softmax_y = W[:, y] - sum_k p_k W[:, k], per image."""
    g = torch.Generator().manual_seed(2)
    w_mat = torch.randn(4, 3, generator=g, dtype=torch.float64)
    b = torch.randn(3, generator=g, dtype=torch.float64)

    def clf(x, t):
        return x.reshape(x.shape[0], -1) @ w_mat + b

    x = torch.randn(6, 1, 2, 2, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 2, 1, 0])
    p = torch.softmax(clf(x, None), 1)
    want = (w_mat[:, y].T - p @ w_mat.T).reshape(x.shape)
    assert torch.allclose(gd.class_log_prob_grad(clf, x, None, y), want, atol=1e-12)
    with pytest.raises(ValueError, match=r"y must lie in 0\.\.2"):
        gd.class_log_prob_grad(clf, x, None, torch.full((6,), 3))


def test_noise_aware_classifier_and_its_loss():
    net = gd.NoiseAwareClassifier(n_classes=10, width=16, channels=4)
    x0 = torch.rand(8, 1, 8, 8) * 2 - 1
    y = torch.arange(8)
    assert net(x0, torch.arange(8)).shape == (8, 10)
    loss, metrics = gd.noise_aware_classifier_loss(net, (x0, y), ABAR.float(),
                                                   generator=torch.Generator().manual_seed(0))
    assert loss.ndim == 0 and torch.isfinite(loss) and 0 <= float(metrics["accuracy"]) <= 1

    def blind(x, t):  # constant logits: the cross-entropy is log K whatever the noise
        return torch.zeros(x.shape[0], 10, requires_grad=True)

    loss, _ = gd.noise_aware_classifier_loss(blind, (x0, y), ABAR.float())
    assert loss.item() == pytest.approx(math.log(10), rel=1e-6)
    with pytest.raises(ValueError, match="even"):
        gd.NoiseAwareClassifier(width=15)


class _Spy(nn.Module):
    """A noise model that records the labels it was given and predicts zero noise."""

    def __init__(self):
        super().__init__()
        self.seen = []
        self.scale = nn.Parameter(torch.zeros(()))

    def forward(self, x, t, y):
        self.seen.append(y.clone())
        return self.scale * x


def test_conditional_diffusion_loss_drops_conditions_at_the_requested_rate():
    x0 = torch.zeros(4000, 1, 2, 2)
    y = torch.arange(4000) % 10
    spy = _Spy()
    loss = gd.conditional_diffusion_loss(spy, x0, y, ABAR.float(), null=torch.tensor(10), p_uncond=0.3,
                                         generator=torch.Generator().manual_seed(0))
    seen = spy.seen[-1]
    dropped = (seen == 10).double().mean().item()
    assert abs(dropped - 0.3) < 4 * math.sqrt(0.3 * 0.7 / 4000)  # binomial, 4 standard errors
    assert bool((seen[seen != 10] == y[seen != 10]).all())  # kept labels are the true ones
    assert loss.item() == pytest.approx(1.0, abs=0.05)  # zero prediction: the mean squared noise, about 1
    for p, want in ((0.0, y), (1.0, torch.full_like(y, 10))):
        gd.conditional_diffusion_loss(spy, x0, y, ABAR.float(), null=torch.tensor(10), p_uncond=p)
        assert torch.equal(spy.seen[-1], want)


def test_conditional_diffusion_loss_with_a_tuple_of_conditions_and_errors():
    calls = []

    def model(x, t, ctx, mask):
        calls.append((ctx.clone(), mask.clone()))
        return torch.zeros_like(x) + 0 * ctx.sum()

    x0 = torch.zeros(6, 3)
    ctx, mask = torch.ones(6, 4, 2), torch.ones(6, 4, dtype=torch.bool)
    null_ctx, null_mask = torch.zeros(4, 2), torch.tensor([True, False, False, False])
    gd.conditional_diffusion_loss(model, x0, (ctx, mask), ABAR.float(), null=(null_ctx, null_mask), p_uncond=1.0)
    got_ctx, got_mask = calls[-1]
    assert torch.equal(got_ctx, torch.zeros(6, 4, 2)) and torch.equal(got_mask, null_mask.expand(6, 4))
    with pytest.raises(ValueError, match="p_uncond"):
        gd.conditional_diffusion_loss(model, x0, (ctx, mask), ABAR.float(), null=(null_ctx, null_mask), p_uncond=1.5)
    with pytest.raises(ValueError, match="one entry per condition"):
        gd.conditional_diffusion_loss(model, x0, (ctx, mask), ABAR.float(), null=(null_ctx,), p_uncond=0.5)
    with pytest.raises(ValueError, match="one example's shape"):
        gd.conditional_diffusion_loss(model, x0, (ctx, mask), ABAR.float(), null=(torch.zeros(3, 2), null_mask),
                                      p_uncond=0.5)
    with pytest.raises(ValueError, match="6 rows"):
        gd.conditional_diffusion_loss(model, x0, (ctx[:5], mask), ABAR.float(), null=(null_ctx, null_mask),
                                      p_uncond=0.5)


def test_classifier_free_guidance_makes_one_call_on_the_doubled_batch():
    g = torch.Generator().manual_seed(3)
    net = nn.Linear(4, 4).double()
    emb = torch.randn(11, 4, generator=g, dtype=torch.float64)
    batches = []

    def model(x, t, y):
        batches.append(x.shape[0])
        return net(x) + emb[y] * (1 + t[:, None])

    x = torch.randn(5, 4, generator=g, dtype=torch.float64)
    t = torch.full((5,), 3)
    y = torch.tensor([0, 1, 2, 3, 4])
    out = gd.classifier_free_guidance(model, y, torch.tensor(10), 2.5)(x, t)
    assert batches == [10]
    with torch.no_grad():
        want = gd.classifier_free_eps(model(x, t, y), model(x, t, torch.full_like(y, 10)), 2.5)
    assert torch.allclose(out, want, atol=1e-12)
    with pytest.raises(ValueError, match="one entry per condition"):  # zip would drop the second condition
        gd.classifier_free_guidance(model, (y, y), torch.tensor(10), 2.5)
    with pytest.raises(ValueError, match="one example's shape"):
        gd.classifier_free_guidance(model, y, torch.tensor([[10]]), 2.5)


def test_classifier_guidance_eps_function():
    g = torch.Generator().manual_seed(4)
    w_mat = torch.randn(4, 3, generator=g, dtype=torch.float64)

    def model(x, t, y):
        assert bool((y == 7).all())  # the null label, once per image
        return 0.1 * x

    def clf(x, t):
        return x @ w_mat

    x = torch.randn(5, 4, generator=g, dtype=torch.float64)
    t = torch.full((5,), 20)
    y = torch.tensor([0, 1, 2, 0, 1])
    fn = gd.classifier_guidance(model, clf, y, 2.0, ABAR, null=torch.tensor(7))
    want = gd.classifier_guided_eps(0.1 * x, gd.class_log_prob_grad(clf, x, t, y), t, ABAR, 2.0)
    assert torch.allclose(fn(x, t), want, atol=1e-12)
    assert torch.allclose(gd.classifier_guidance(model, clf, y, 0.0, ABAR, null=torch.tensor(7))(x, t), 0.1 * x)


def _numpy_dynamic_threshold(x, p):
    flat = np.abs(x.reshape(x.shape[0], -1))
    s = np.maximum(np.quantile(flat, p, axis=1), 1.0).reshape((-1,) + (1,) * (x.ndim - 1))
    return np.clip(x, -s, s) / s


def test_dynamic_threshold_against_numpy():
    g = torch.Generator().manual_seed(5)
    scales = torch.tensor([0.3, 0.5, 1, 2, 3, 5], dtype=torch.float64)[:, None, None, None]
    x = torch.randn(6, 1, 4, 4, generator=g, dtype=torch.float64) * scales
    for p in (0.5, 0.9, 0.995, 1.0):
        out = gd.dynamic_threshold(x, p)
        assert np.allclose(out.numpy(), _numpy_dynamic_threshold(x.numpy(), p), atol=1e-12)
        assert float(out.abs().max()) <= 1 + 1e-12
    inside = x[:1].clamp(-1, 1)
    assert torch.equal(gd.dynamic_threshold(inside, 0.9), inside)  # s = 1: unchanged
    assert torch.allclose(gd.dynamic_threshold(x, 1.0)[5], x[5] / x[5].abs().max())  # p = 1: divide by the max
    with pytest.raises(ValueError, match="percentile"):
        gd.dynamic_threshold(x, 1.5)


def test_thresholded_eps_implies_the_thresholded_image():
    g = torch.Generator().manual_seed(6)
    x = torch.randn(4, 1, 3, 3, generator=g, dtype=torch.float64)
    t = torch.full((4,), 50)

    def eps_fn(xt, tt):
        return 3 * xt  # pushes x0_hat far outside [-1, 1]

    out = gd.thresholded(eps_fn, ABAR, 0.9)(x, t)
    x0 = dm.predict_x0_from_eps(x, t, out, ABAR)
    want = gd.dynamic_threshold(dm.predict_x0_from_eps(x, t, eps_fn(x, t), ABAR), 0.9)
    assert torch.allclose(x0, want, atol=1e-10)


# ------------------------------------------------------------------------------------------------ captions, CLIP


def test_tokenize_captions_pads_and_masks():
    tok = gd.caption_tokenizer()
    tokens, mask = gd.tokenize_captions(tok, ["a thick seven", "", "seven"], 4)
    start, pad = tok.index[gd.START], tok.index[gd.PAD]
    assert tokens.dtype == torch.int64 and mask.dtype == torch.bool and tokens.shape == (3, 4)
    assert tokens[:, 0].tolist() == [start] * 3
    assert mask.tolist() == [[True] * 4, [True, False, False, False], [True, True, False, False]]
    assert bool((tokens[~mask] == pad).all())
    assert tok.decode(tokens[:1]) == [f"{gd.START} a thick seven"]
    with pytest.raises(ValueError, match="max_len=3"):
        gd.tokenize_captions(tok, ["a thick seven"], 3)
    with pytest.raises(ValueError, match="unknown word"):
        gd.tokenize_captions(tok, ["a fat seven"], 4)
    with pytest.raises(ValueError, match="must contain"):
        gd.tokenize_captions(gd.WordTokenizer(("a", "b")), ["a"], 2)


def test_text_encoder_ignores_padding_and_checks_masks():
    torch.manual_seed(0)
    tok = gd.caption_tokenizer()
    enc = gd.TextEncoder(len(tok), 4, d_model=16, n_heads=2, n_layers=2, embed_dim=8).eval()
    tokens, mask = gd.tokenize_captions(tok, ["a thin two", "two", ""], 4)
    other = tokens.clone()
    other[~mask] = tok.index["nine"]  # different content at the padded positions
    with torch.no_grad():
        a, b = enc(tokens, mask), enc(other, mask)
        feats = enc.token_features(tokens, mask)
    assert a.shape == (3, 8) and feats.shape == (3, 4, 16)
    assert torch.allclose(a, b, atol=1e-6)
    assert bool((feats[~mask] == 0).all())
    with pytest.raises(ValueError, match="at least one token"):
        enc(tokens, torch.zeros_like(mask))
    with pytest.raises(ValueError, match="bool tensor"):
        enc(tokens, mask.long())
    with pytest.raises(ValueError, match="at most max_len"):
        enc(torch.zeros(2, 5, dtype=torch.int64))


def test_contrastive_logits_against_sklearn_cosine_similarity():
    g = torch.Generator().manual_seed(7)
    u, v = torch.randn(5, 3, generator=g, dtype=torch.float64), torch.randn(4, 3, generator=g, dtype=torch.float64)
    got = gd.contrastive_logits(u, v, 0.2)
    assert np.allclose(got.numpy(), cosine_similarity(u.numpy(), v.numpy()) / 0.2, atol=1e-12)
    tau = torch.tensor(0.5, dtype=torch.float64, requires_grad=True)
    gd.contrastive_logits(u, v, tau).sum().backward()  # a learnt temperature keeps its gradient
    assert tau.grad is not None and torch.isfinite(tau.grad)
    with pytest.raises(ValueError, match="same embedding size"):
        gd.contrastive_logits(u, torch.randn(4, 2, dtype=torch.float64), 0.2)
    with pytest.raises(ValueError, match="temperature"):
        gd.contrastive_logits(u, v, 0.0)
    with pytest.raises(ValueError, match="temperature"):
        gd.contrastive_logits(u, v, torch.tensor(-1.0))


def test_info_nce_against_sklearn_log_loss_and_symmetric_form():
    g = torch.Generator().manual_seed(8)
    logits = torch.randn(6, 6, generator=g, dtype=torch.float64) * 3
    probs = torch.softmax(logits, 1).numpy()
    want = log_loss(np.arange(6), probs, labels=np.arange(6))
    assert gd.info_nce(logits).item() == pytest.approx(want, rel=1e-10)
    both = 0.5 * (want + log_loss(np.arange(6), torch.softmax(logits.T, 1).numpy(), labels=np.arange(6)))
    assert gd.symmetric_info_nce(logits).item() == pytest.approx(both, rel=1e-10)
    assert gd.info_nce(torch.zeros(1, 1, dtype=torch.float64)).item() == 0.0  # N = 1: nothing to tell apart
    with pytest.raises(ValueError, match="square"):
        gd.info_nce(torch.zeros(3, 4))


def test_info_nce_bound_below_the_mutual_information_and_log_n():
    """Correlated Gaussians with the optimal critic: log N - L <= min(I, log N) (Monte Carlo, 4 standard errors),
    and the bound grows with N."""
    rho, d = 0.9, 2
    mi = -d / 2 * math.log(1 - rho**2)
    g = torch.Generator().manual_seed(9)
    rows = []
    for n in (4, 64, 512):
        reps = 4096 // n
        x = torch.randn(reps, n, d, generator=g, dtype=torch.float64)
        y = rho * x + math.sqrt(1 - rho**2) * torch.randn(reps, n, d, generator=g, dtype=torch.float64)
        dist = ((y[:, None] - rho * x[:, :, None]) ** 2).sum(-1)
        critic = -dist / (2 * (1 - rho**2)) + (y[:, None] ** 2).sum(-1) / 2
        vals = torch.tensor([math.log(n) - gd.info_nce(c).item() for c in critic])
        mean, se = vals.mean().item(), vals.std().item() / math.sqrt(reps)
        assert mean <= min(mi, math.log(n)) + 4 * se
        rows.append(mean)
    assert rows[0] < rows[1] < rows[2]


def test_contrastive_model_temperature_and_loss():
    torch.manual_seed(0)
    tok = gd.caption_tokenizer()
    from coursekit.nets import ConvEncoder8x8

    model = gd.ContrastiveModel(ConvEncoder8x8(8, channels=4), gd.TextEncoder(len(tok), 4, 16, 2, 1, 8),
                                temperature=0.07)
    assert model.temperature.item() == pytest.approx(0.07, rel=1e-5)
    assert any(p is model.log_scale for p in model.parameters())
    with torch.no_grad():
        model.log_scale.fill_(10.0)
    assert model.temperature.item() == pytest.approx(0.01, rel=1e-5)  # clipped at 1/tau = 100
    fixed = gd.ContrastiveModel(ConvEncoder8x8(8, channels=4), gd.TextEncoder(len(tok), 4, 16, 2, 1, 8),
                                temperature=1.0, learn_temperature=False)
    assert not any(p is fixed.log_scale for p in fixed.parameters())
    tokens, mask = gd.tokenize_captions(tok, ["a thin two", "seven", "a thick one"], 4)
    x = torch.rand(3, 1, 8, 8)
    logits = fixed(x, tokens, mask)
    assert logits.shape == (3, 3) and float(logits.detach().abs().max()) <= 1 + 1e-6  # cosine / 1
    loss, metrics = gd.contrastive_loss(fixed, (x, tokens, mask))
    assert loss.item() >= math.log(1 + 2 * math.exp(-2)) - 1e-6  # the temperature floor at tau = 1, N = 3
    assert float(metrics["temperature"]) == pytest.approx(1.0)
    assert torch.allclose(fixed.encode_image(x).norm(dim=1), torch.ones(3), atol=1e-6)
    with pytest.raises(ValueError, match="same number N"):  # 2 images, 3 captions: no pairs
        gd.contrastive_loss(fixed, (x[:2], tokens, mask))
    with pytest.raises(ValueError, match="x must be finite"):
        gd.contrastive_loss(fixed, (torch.full_like(x, math.nan), tokens, mask))
    with pytest.raises(TypeError, match="x must be a floating-point"):
        gd.contrastive_loss(fixed, ((x > 0.5).long(), tokens, mask))


def test_zero_shot_classify_and_retrieval_accuracy():
    prompts = torch.tensor([[1.0, 0, 0], [0.9, 0.1, 0], [0, 1.0, 0], [0, 0, 1.0]])
    prompt_class = torch.tensor([0, 0, 1, 2])
    images = torch.tensor([[2.0, 0.1, 0], [0, 0, 3.0], [0.1, 1.0, 0.2]])
    assert gd.zero_shot_classify(images, prompts, prompt_class, 3).tolist() == [0, 2, 1]
    with pytest.raises(ValueError, match="classes without one"):
        gd.zero_shot_classify(images, prompts[:3], prompt_class[:3], 3)
    assert gd.retrieval_accuracy(images, prompts, torch.tensor([0, 3, 2])) == 1.0
    assert gd.retrieval_accuracy(images, prompts, torch.tensor([1, 3, 0])) == pytest.approx(1 / 3)


# ------------------------------------------------------------------------------------------------ cross-attention, LDM


def test_cross_attention_against_scaled_dot_product_attention_with_a_mask():
    torch.manual_seed(0)
    attn = gd.CrossAttention(query_dim=8, context_dim=6, n_heads=2).double()
    nn.init.normal_(attn.out.weight)
    x = torch.randn(3, 5, 8, dtype=torch.float64)
    ctx = torch.randn(3, 4, 6, dtype=torch.float64)
    mask = torch.tensor([[True, True, True, True], [True, True, False, False], [True, False, False, False]])
    out, weights = attn(x, ctx, mask, return_weights=True)
    q = attn.q(attn.norm(x)).reshape(3, 5, 2, 4).transpose(1, 2)
    k = attn.k(ctx).reshape(3, 4, 2, 4).transpose(1, 2)
    v = attn.v(ctx).reshape(3, 4, 2, 4).transpose(1, 2)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None, None, :])
    want = x + attn.out(ref.transpose(1, 2).reshape(3, 5, 8))
    assert out.shape == (3, 5, 8) and weights.shape == (3, 2, 5, 4)
    assert torch.allclose(out, want, atol=1e-10)
    assert bool((weights.permute(0, 3, 1, 2)[~mask] == 0).all())
    ctx2 = ctx.clone()
    ctx2[~mask] = 50.0
    assert torch.allclose(attn(x, ctx2, mask), out, atol=1e-12)


def test_cross_attention_starts_as_the_identity_and_rejects_bad_masks():
    attn = gd.CrossAttention(8, 6, 2)
    x, ctx = torch.randn(2, 3, 8), torch.randn(2, 4, 6)
    assert torch.equal(attn(x, ctx), x)  # zero output projection at initialisation
    with pytest.raises(ValueError, match="at least one context position"):
        attn(x, ctx, torch.zeros(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="bool tensor of shape"):
        attn(x, ctx, torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="context"):
        attn(x, torch.randn(2, 4, 5))
    with pytest.raises(ValueError, match="divisible"):
        gd.CrossAttention(7, 6, 2)


def test_latent_denoiser_shapes_and_padding():
    torch.manual_seed(0)
    den = gd.LatentDenoiser(latent_dim=5, context_dim=6, width=16, depth=2, n_heads=2)
    for attn in den.attns:
        nn.init.normal_(attn.out.weight)
    z, t = torch.randn(4, 5), torch.arange(4)
    ctx = torch.randn(4, 3, 6)
    mask = torch.tensor([[True, True, True], [True, False, False], [True, True, False], [True, False, False]])
    out = den(z, t, ctx, mask)
    assert out.shape == (4, 5)
    ctx2 = ctx.clone()
    ctx2[~mask] = -7.0
    assert torch.allclose(den(z, t, ctx2, mask), out, atol=1e-6)
    with pytest.raises(ValueError):
        den(torch.randn(4, 6), t, ctx, mask)


def test_latent_space_standardises_the_codes():
    torch.manual_seed(0)
    ae = Autoencoder(64, 3, hidden=(16,), output="sigmoid")
    x = torch.rand(200, 64)
    with torch.no_grad():
        space = gd.LatentSpace(ae, ae.encode(x))
        z = space.encode(x)
        assert torch.allclose(z.mean(0), torch.zeros(3), atol=1e-5)
        assert torch.allclose(z.std(0), torch.ones(3), atol=1e-5)
        assert torch.allclose(space.decode(z), ae(x), atol=1e-5)
    assert space.dim == 3
    with pytest.raises(ValueError):
        space.decode(torch.zeros(2, 4))


def test_count_flops_of_a_linear_layer():
    lin = nn.Linear(7, 5)
    with torch.no_grad():
        assert gd.count_flops(lin, torch.zeros(3, 7)) == 2 * 3 * 7 * 5

    def forward_backward():
        x = torch.zeros(3, 7, requires_grad=True)
        lin(x).sum().backward()

    assert gd.count_flops(forward_backward) > 2 * 3 * 7 * 5  # the backward pass is counted too
    with pytest.raises(TypeError):
        gd.count_flops(3)


# ------------------------------------------------------------------------------------------------ translation


def test_thicken_strokes_is_a_horizontal_maximum():
    g = torch.Generator().manual_seed(10)
    x = torch.rand(5, 1, 8, 8, generator=g)
    right = torch.cat([x[..., 1:], x[..., -1:]], dim=-1)  # x[j + 1], the last column kept
    assert torch.equal(gd.thicken_strokes(x), torch.maximum(x, right))
    assert torch.equal(gd.thicken_strokes(x, width=1), x)
    left = torch.cat([x[..., :1], x[..., :-1]], dim=-1)
    assert torch.equal(gd.thicken_strokes(x, width=3), torch.maximum(torch.maximum(left, x), right))
    with pytest.raises(ValueError):
        gd.thicken_strokes(torch.rand(5, 8, 8))
    with pytest.raises(ValueError, match="width"):
        gd.thicken_strokes(x, width=0)


def test_translator_and_patch_discriminator_shapes():
    g, d = gd.ImageTranslator(8), gd.PatchDiscriminator(2, 8)
    x = torch.rand(3, 1, 8, 8)
    with torch.no_grad():
        y = g(x)
    assert y.shape == (3, 1, 8, 8) and float(y.min()) > 0 and float(y.max()) < 1
    assert d(x, y).shape == (3, 16)
    with pytest.raises(ValueError):
        d(x)  # a conditional discriminator needs both images


def test_pix2pix_generator_loss_is_the_gan_loss_plus_weighted_l1():
    g = torch.Generator().manual_seed(11)
    logits = torch.randn(4, 16, generator=g)
    fake, target = torch.rand(4, 1, 8, 8, generator=g), torch.rand(4, 1, 8, 8, generator=g)
    want = F.softplus(-logits).mean() + 100 * (fake - target).abs().mean()
    assert torch.allclose(gd.pix2pix_generator_loss(logits, fake, target), want)
    assert torch.allclose(gd.pix2pix_generator_loss(logits, fake, target, 0.0), gan.generator_loss(logits.reshape(-1)))
    with pytest.raises(ValueError, match="l1_weight"):
        gd.pix2pix_generator_loss(logits, fake, target, -1.0)


def test_cycle_consistency_loss_values():
    g = torch.Generator().manual_seed(12)
    a, b = torch.randn(5, 3, generator=g), torch.randn(7, 3, generator=g)
    assert gd.cycle_consistency_loss(lambda x: 2 * x + 1, lambda x: (x - 1) / 2, a, b).item() == pytest.approx(0.0,
                                                                                                          abs=1e-6)
    f, h = torch.tanh, lambda x: 0.5 * x
    want = (h(f(a)) - a).abs().mean() + (f(h(b)) - b).abs().mean()
    assert torch.allclose(gd.cycle_consistency_loss(f, h, a, b), want)
    with pytest.raises(ValueError, match="NaN"):
        gd.cycle_consistency_loss(f, h, torch.full((2, 3), math.nan), b)


def _frozen_during(players, data, steps=3):
    """Train the players a few steps; return the first player's (the discriminator's) parameters before and after, and
    after every step whether all of them require grad (they are frozen only during the generator's update)."""
    first = players[0].module
    before = [p.detach().clone() for p in first.parameters()]
    seen = []

    def check(step, history):
        seen.append(all(p.requires_grad for p in first.parameters()))

    fit_players(players, data, steps=steps, batch_size=8, seed=0, progress=False, callback=check)
    return before, [p.detach() for p in first.parameters()], seen


def test_pix2pix_players_train_and_restore_the_discriminator():
    torch.manual_seed(0)
    src = torch.rand(32, 1, 8, 8)
    tgt = gd.thicken_strokes(src)
    gen, dis = gd.ImageTranslator(4), gd.PatchDiscriminator(2, 4)
    players = gd.pix2pix_players(gen, dis, torch.optim.Adam(gen.parameters(), 1e-3),
                                 torch.optim.Adam(dis.parameters(), 1e-3))
    assert [p.name for p in players] == ["discriminator", "generator"]
    before, after, seen = _frozen_during(players, (src, tgt))
    assert all(seen)  # requires_grad restored after each generator update
    assert any(not torch.equal(b, a) for b, a in zip(before, after))  # the discriminator did learn


def test_pix2pix_generator_update_leaves_the_discriminator_without_gradients():
    torch.manual_seed(0)
    src = torch.rand(8, 1, 8, 8)
    gen, dis = gd.ImageTranslator(4), gd.PatchDiscriminator(2, 4)
    d_player, g_player = gd.pix2pix_players(gen, dis, torch.optim.SGD(gen.parameters(), 0.1),
                                            torch.optim.SGD(dis.parameters(), 0.1))
    assert not g_player.uses_batch  # the generator reuses the discriminator's minibatch and translation
    d_player.loss_fn((src, src))
    loss, metrics = g_player.loss_fn(None)
    loss.backward()
    assert all(p.grad is None for p in dis.parameters()) and all(p.grad is not None for p in gen.parameters())
    assert float(metrics["l1"]) >= 0


def test_cyclegan_players_run_and_log_the_cycle_loss():
    torch.manual_seed(0)
    a = torch.rand(32, 1, 8, 8)
    b = gd.thicken_strokes(torch.rand(32, 1, 8, 8))
    g_ab, g_ba = gd.ImageTranslator(4), gd.ImageTranslator(4)
    d_a, d_b = gd.PatchDiscriminator(1, 4), gd.PatchDiscriminator(1, 4)
    players = gd.cyclegan_players(g_ab, g_ba, d_a, d_b,
                                  torch.optim.Adam(list(g_ab.parameters()) + list(g_ba.parameters()), 1e-3),
                                  torch.optim.Adam(list(d_a.parameters()) + list(d_b.parameters()), 1e-3))
    hist = fit_players(players, (a, b), steps=3, batch_size=8, seed=0, progress=False, log_every=1)
    assert "cycle" in hist and len(hist["cycle"]) == 3 and all(math.isfinite(v) for v in hist["cycle"])
    assert all(p.requires_grad for p in list(d_a.parameters()) + list(d_b.parameters()))
    with pytest.raises(ValueError, match="cycle_weight"):
        gd.cyclegan_players(g_ab, g_ba, d_a, d_b, players[1].optimizer, players[0].optimizer, cycle_weight=-1.0)


def test_translation_scores():
    from coursekit.data import load_digits

    x, y = load_digits("test", image_shape=True)
    same = gd.translation_scores(x[:50], x[:50], y[:50])
    assert same["mae"] == 0.0 and same["class_kept"] >= 0.9
    assert gd.translation_scores(torch.zeros(50, 1, 8, 8), x[:50], y[:50])["mae"] == pytest.approx(
        x[:50].mean().item(), rel=1e-5)
    with pytest.raises(ValueError, match="same shape"):
        gd.translation_scores(x[:5], x[:6], y[:5])
