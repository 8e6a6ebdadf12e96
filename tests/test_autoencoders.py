"""Tests for coursekit.autoencoders (chapter 03), against independent references: scikit-learn's PCA and scipy's
principal angles for the linear autoencoder, Monte Carlo and the mixture's exact score for the optimal denoiser,
finite differences and autograd for the encoder Jacobian, torch.distributions for the KL sparsity penalty and
scipy's k-d tree for nearest codes."""

import math

import numpy as np
import pytest
import scipy.linalg
import torch
from scipy.spatial import cKDTree
from sklearn.decomposition import PCA as SkPCA
from torch.distributions import Bernoulli, kl_divergence

import coursekit as ck
from coursekit import autoencoders as ae

MEANS = torch.tensor([[-1.5, 0.0], [1.5, 0.5], [0.0, 2.0]], dtype=torch.float64)
STDS = torch.tensor([0.3, 0.5, 0.4], dtype=torch.float64)
WEIGHTS = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)


def low_rank_data(n=600, d=6, seed=0):
    """Data with a clear spectrum: variances 9, 4, then 0.25 and below, so the top-2 subspace is well separated."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    scales = torch.tensor([3.0, 2.0, 0.5, 0.4, 0.3, 0.2], dtype=torch.float64)[:d]
    return (torch.randn(n, d, generator=g, dtype=torch.float64) * scales) @ q.T + 1.0


# ----------------------------------------------------------------------------- models
def test_autoencoder_shapes_and_output_ranges():
    model = ae.Autoencoder(64, 8, hidden=(32,), code_activation="sigmoid", output="sigmoid")
    x = torch.rand(5, 64)
    h = model.encode(x)
    assert h.shape == (5, 8) and bool(((h > 0) & (h < 1)).all())
    r = model(x)
    assert r.shape == (5, 64) and bool(((r > 0) & (r < 1)).all())
    assert model.decode(torch.randn(3, 8)).shape == (3, 64)


def test_linear_maps_are_the_affine_encoder_and_decoder():
    model = ae.Autoencoder(6, 2, hidden=()).double()
    x = torch.randn(7, 6, dtype=torch.float64)
    a_mat, a_vec, b_mat, b_vec = model.linear_maps()
    assert a_mat.shape == (2, 6) and b_mat.shape == (6, 2)
    torch.testing.assert_close(model.encode(x), x @ a_mat.T + a_vec)
    torch.testing.assert_close(model(x), (x @ a_mat.T + a_vec) @ b_mat.T + b_vec)
    with pytest.raises(ValueError, match="linear autoencoder"):
        ae.Autoencoder(6, 2, hidden=(4,)).linear_maps()
    with pytest.raises(ValueError, match="linear autoencoder"):
        ae.Autoencoder(6, 2, hidden=(), output="sigmoid").linear_maps()


def test_model_arguments_and_inputs_are_checked():
    with pytest.raises(ValueError, match="code_activation"):
        ae.Autoencoder(4, 2, code_activation="tanh")
    with pytest.raises(ValueError, match="output"):
        ae.Autoencoder(4, 2, output="softmax")
    with pytest.raises(ValueError, match="positive integer"):
        ae.Autoencoder(4, 0)
    model = ae.Autoencoder(4, 2, hidden=())
    with pytest.raises(ValueError, match=r"x must have shape \(N, 4\)"):
        model.encode(torch.zeros(3, 5))
    with pytest.raises(ValueError, match=r"z must have shape \(N, 2\)"):
        model.decode(torch.zeros(3, 3))
    tied = ae.TiedSigmoidAutoencoder(4, 3)
    with pytest.raises(ValueError, match=r"h must have shape \(N, 3\)"):
        tied.decode(torch.zeros(2, 4))
    with pytest.raises(TypeError, match="torch.Tensor"):
        tied.encode(np.zeros((2, 4)))


def test_tied_autoencoder_decodes_with_the_transposed_encoder_weights():
    tied = ae.TiedSigmoidAutoencoder(5, 3).double()
    x = torch.randn(4, 5, dtype=torch.float64)
    h = torch.sigmoid(x @ tied.weight.T + tied.bias)
    torch.testing.assert_close(tied(x), h @ tied.weight + tied.out_bias)
    assert sum(p.numel() for p in tied.parameters()) == 3 * 5 + 3 + 5  # one weight matrix only


# ----------------------------------------------------------------------------- reconstruction and PCA
def test_reconstruction_error_and_loss_sum_over_coordinates_and_average_over_examples():
    x, x_hat = torch.randn(2, 6, 5, dtype=torch.float64)
    err = ae.reconstruction_error(x, x_hat)
    assert err.shape == (6,)
    np.testing.assert_allclose(err.numpy(), ((x - x_hat).numpy() ** 2).sum(1), rtol=1e-12)
    model = ae.Autoencoder(5, 2, hidden=()).double().requires_grad_(False)
    loss, metrics = ae.autoencoder_loss(model, (x, torch.zeros(6)))
    assert math.isclose(float(loss), float(ae.reconstruction_error(x, model(x)).mean()), rel_tol=1e-12)
    assert math.isclose(metrics["mse"], float(loss), rel_tol=1e-12)
    with pytest.raises(ValueError, match="same shape"):
        ae.reconstruction_error(x, x_hat[:, :4])
    with pytest.raises(ValueError, match="NaN"):
        ae.reconstruction_error(x, torch.full_like(x, float("nan")))


@pytest.mark.parametrize("k", [0, 1, 2, 4])
def test_eckart_young_floor_matches_sklearn_pca_reconstruction(k):
    x = low_rank_data()
    floor = float(ae.eckart_young_floor(x, k))
    if k == 0:
        ref = float(((x - x.mean(0)) ** 2).sum(1).mean())
    else:
        pca = SkPCA(n_components=k).fit(x.numpy())
        rec = pca.inverse_transform(pca.transform(x.numpy()))
        ref = float(((x.numpy() - rec) ** 2).sum(1).mean())
    assert math.isclose(floor, ref, rel_tol=1e-9, abs_tol=1e-12)


def test_no_rank_k_affine_map_beats_the_eckart_young_floor():
    x = low_rank_data()
    floor = float(ae.eckart_young_floor(x, 2))
    g = torch.Generator().manual_seed(1)
    for _ in range(20):
        a_mat, b_mat = torch.randn(2, 2, 6, generator=g, dtype=torch.float64)
        m = b_mat.T @ a_mat  # rank <= 2
        c = x.mean(0) - x.mean(0) @ m.T  # the optimal offset for this M
        err = float(((x - x @ m.T - c) ** 2).sum(1).mean())
        assert err >= floor - 1e-9
    with pytest.raises(ValueError, match="non-negative integer"):
        ae.eckart_young_floor(x, -1)


def test_trained_linear_autoencoder_spans_the_principal_subspace():
    """Baldi & Hornik 1989: the decoder's column space is the top-k principal subspace (scipy's principal angles
    to scikit-learn's components), the error reaches the Eckart-Young floor, yet the columns are not the
    principal directions."""
    x = low_rank_data().float()
    torch.manual_seed(0)
    model = ae.Autoencoder(6, 2, hidden=())
    ck.train.fit(model, torch.optim.Adam(model.parameters(), lr=3e-2), ae.autoencoder_loss, x, steps=1500,
                 batch_size=x.shape[0], progress=False)
    _, _, b_mat, _ = model.linear_maps()
    pcs = SkPCA(n_components=2).fit(x.double().numpy()).components_.T  # (D, 2)
    angles = scipy.linalg.subspace_angles(b_mat.double().numpy(), pcs)
    assert angles.max() < 1e-2, angles
    with torch.no_grad():
        err = float(ae.reconstruction_error(x, model(x)).mean())
    floor = float(ae.eckart_young_floor(x.double(), 2))
    assert err <= floor * (1 + 1e-3) + 1e-6 and err >= floor * (1 - 1e-4)
    # the learnt columns are not the orthonormal principal directions (rotation and scaling freedom)
    gram = (b_mat.T @ b_mat).double().numpy()
    assert np.abs(gram - np.eye(2)).max() > 0.05


def test_l2_weight_penalty_keeps_an_orthogonal_symmetry_but_not_a_general_one():
    """(A, B) -> (O^T A, B O) leaves both the reconstruction and ||A||_F^2 + ||B||_F^2 unchanged for orthogonal O
    (so an L2 penalty cannot pin the principal directions down by itself); a non-orthogonal G changes the penalty."""
    g = torch.Generator().manual_seed(3)
    a = torch.randn(3, 7, generator=g, dtype=torch.float64)
    b = torch.randn(7, 3, generator=g, dtype=torch.float64)
    x = torch.randn(20, 7, generator=g, dtype=torch.float64)
    o, _ = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))
    def penalty(a_, b_):
        return float((a_**2).sum() + (b_**2).sum())
    torch.testing.assert_close(x @ (o.T @ a).T @ (b @ o).T, x @ a.T @ b.T, rtol=1e-12, atol=1e-12)
    assert math.isclose(penalty(o.T @ a, b @ o), penalty(a, b), rel_tol=1e-12)
    gm = torch.diag(torch.tensor([2.0, 1.0, 0.5], dtype=torch.float64))
    torch.testing.assert_close(x @ (torch.linalg.inv(gm) @ a).T @ (b @ gm).T, x @ a.T @ b.T, rtol=1e-10, atol=1e-10)
    assert abs(penalty(torch.linalg.inv(gm) @ a, b @ gm) - penalty(a, b)) > 1e-3


# ----------------------------------------------------------------------------- denoising
def test_mixture_posterior_mean_is_tweedie_with_the_exact_score():
    g = torch.Generator().manual_seed(2)
    x = 2 * torch.randn(50, 2, generator=g, dtype=torch.float64)
    for sigma in (0.05, 0.3, 1.0):
        post = ae.mixture_posterior_mean(x, MEANS, STDS, WEIGHTS, sigma)
        tweedie = x + sigma**2 * ck.mixtures.gaussian_mixture_score(x, MEANS, STDS, WEIGHTS, sigma)
        torch.testing.assert_close(post, tweedie, rtol=1e-10, atol=1e-12)
        score = ae.dae_score(post, x, sigma)
        torch.testing.assert_close(score, ck.mixtures.gaussian_mixture_score(x, MEANS, STDS, WEIGHTS, sigma),
                                   rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(ae.mixture_posterior_mean(x, MEANS, STDS, WEIGHTS, 0.0), x)


def test_mixture_posterior_mean_matches_monte_carlo():
    """E[x | x~] by self-normalised importance sampling: x_m ~ p, weights N(x~; x_m, sigma^2 I)."""
    sigma, n_mc = 0.5, 400_000
    x_clean = ck.data.gaussian_mixture(n_mc, MEANS, STDS, WEIGHTS, seed=3).double()
    x_noisy = torch.tensor([[0.0, 0.5], [1.0, 1.0], [-1.0, 1.5]], dtype=torch.float64)
    logw = -((x_noisy[:, None, :] - x_clean[None]) ** 2).sum(-1) / (2 * sigma**2)  # (3, M)
    w = torch.softmax(logw, dim=1)
    mc = w @ x_clean
    # standard error of a self-normalised estimate: sqrt(sum w^2 (x - mean)^2)
    se = torch.sqrt((w[:, :, None] ** 2 * (x_clean[None] - mc[:, None]) ** 2).sum(1))
    exact = ae.mixture_posterior_mean(x_noisy, MEANS, STDS, WEIGHTS, sigma)
    assert bool(((mc - exact).abs() < 5 * se + 1e-4).all()), (mc, exact, se)


def test_trained_denoiser_recovers_the_smoothed_score():
    """A DAE trained on the mixture: (r(x~) - x~) / sigma^2 is close to the exact score of q_sigma."""
    sigma = 0.5
    x = ck.data.gaussian_mixture(4000, MEANS.float(), STDS.float(), WEIGHTS.float(), seed=4)
    torch.manual_seed(0)
    model = ae.Autoencoder(2, 2, hidden=(64, 64))
    ck.train.fit(model, torch.optim.Adam(model.parameters(), lr=3e-3),
                 lambda m, b: ae.denoising_loss(m, b, sigma), x, steps=1500, batch_size=256, progress=False)
    g = torch.Generator().manual_seed(5)
    x_test = ck.data.gaussian_mixture(2000, MEANS.float(), STDS.float(), WEIGHTS.float(), seed=6)
    x_noisy = x_test + sigma * torch.randn(x_test.shape, generator=g)
    with torch.no_grad():
        est = ae.dae_score(model(x_noisy), x_noisy, sigma)
    true = ck.mixtures.gaussian_mixture_score(x_noisy, MEANS.float(), STDS.float(), WEIGHTS.float(), sigma)
    rel = float(((est - true) ** 2).sum(1).mean() / (true**2).sum(1).mean())
    assert rel < 0.1, rel


def test_denoising_loss_uses_fresh_noise_and_checks_sigma():
    model = ae.Autoencoder(3, 3, hidden=()).requires_grad_(False)
    x = torch.randn(8, 3)
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    l1, _ = ae.denoising_loss(model, x, 0.3, generator=g1)
    l2, _ = ae.denoising_loss(model, x, 0.3, generator=g2)
    l3, _ = ae.denoising_loss(model, x, 0.3, generator=g1)
    v1, v2, v3 = (t.detach().item() for t in (l1, l2, l3))  # detached: no grad-to-scalar conversion
    assert v1 == v2 and v1 != v3
    with pytest.raises(ValueError, match="sigma"):
        ae.denoising_loss(model, x, 0.0)
    with pytest.raises(ValueError, match="sigma"):
        ae.dae_score(x, x, -1.0)
    with pytest.raises(ValueError, match="same shape"):
        ae.dae_score(x, x[:, :2], 0.5)


def test_mixture_posterior_mean_rejects_bad_input():
    x = torch.zeros(3, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="means"):
        ae.mixture_posterior_mean(x, MEANS[:, :1], STDS, WEIGHTS, 0.5)
    with pytest.raises(ValueError, match="stds"):
        ae.mixture_posterior_mean(x, MEANS, -STDS, WEIGHTS, 0.5)
    with pytest.raises(ValueError, match="sigma"):
        ae.mixture_posterior_mean(x, MEANS, STDS, WEIGHTS, -0.5)
    with pytest.raises(ValueError, match="NaN"):
        ae.mixture_posterior_mean(torch.full((3, 2), float("nan")), MEANS, STDS, WEIGHTS, 0.5)


@pytest.mark.parametrize("arg", ["x_noisy", "means", "stds", "weights"])
def test_mixture_posterior_mean_rejects_integer_tensors_by_name(arg):
    args = {"x_noisy": torch.zeros(3, 2), "means": MEANS.float(), "stds": STDS.float(), "weights": WEIGHTS.float()}
    args[arg] = args[arg].round().long()
    with pytest.raises(TypeError, match=f"{arg} must be a floating-point tensor"):
        ae.mixture_posterior_mean(args["x_noisy"], args["means"], args["stds"], args["weights"], 0.5)


def test_mixture_posterior_mean_rejects_non_finite_parameters_and_wrong_sizes():
    x = torch.zeros(3, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="means.*NaN"):
        ae.mixture_posterior_mean(x, torch.full_like(MEANS, float("nan")), STDS, WEIGHTS, 0.5)
    with pytest.raises(ValueError, match=r"stds must be a scalar or have shape \(3,\)"):
        ae.mixture_posterior_mean(x, MEANS, STDS[:2], WEIGHTS, 0.5)
    # python numbers and lists are still accepted and converted to x_noisy's dtype
    out = ae.mixture_posterior_mean(x, MEANS.tolist(), 0.5, None, 0.5)
    assert out.dtype == torch.float64 and out.shape == (3, 2)


# ----------------------------------------------------------------------------- contractive
def finite_difference_frobenius_sq(fn, x, eps=1e-6):
    """Sum of squared central differences of fn (rows of x to codes), one Jacobian column per coordinate."""
    out = torch.zeros(x.shape[0], dtype=torch.float64)
    for i in range(x.shape[1]):
        e = torch.zeros_like(x)
        e[:, i] = eps
        col = (fn(x + e) - fn(x - e)) / (2 * eps)  # (N, k)
        out += (col**2).sum(1)
    return out


def test_jacobian_frobenius_matches_finite_differences_and_autograd():
    torch.manual_seed(0)
    model = ae.Autoencoder(5, 3, hidden=(7,), code_activation="sigmoid").double()
    x = torch.randn(6, 5, dtype=torch.float64)
    got = ae.jacobian_frobenius_sq(model.encode, x)
    with torch.no_grad():
        fd = finite_difference_frobenius_sq(model.encode, x)
    torch.testing.assert_close(got.detach(), fd, rtol=1e-6, atol=1e-9)
    jac = torch.stack([torch.autograd.functional.jacobian(lambda v: model.encode(v[None])[0], xi) for xi in x])
    torch.testing.assert_close(got.detach(), (jac**2).sum((1, 2)), rtol=1e-12, atol=1e-14)


def test_sigmoid_closed_form_matches_torch_func_and_finite_differences():
    tied = ae.TiedSigmoidAutoencoder(6, 4).double()
    with torch.no_grad():
        tied.bias.normal_()
    x = torch.randn(9, 6, dtype=torch.float64)
    closed = ae.sigmoid_jacobian_frobenius_sq(tied.weight, tied.bias, x)
    torch.testing.assert_close(closed, ae.jacobian_frobenius_sq(tied.encode, x), rtol=1e-12, atol=1e-14)
    with torch.no_grad():
        torch.testing.assert_close(closed.detach(), finite_difference_frobenius_sq(tied.encode, x), rtol=1e-6,
                                   atol=1e-9)
    torch.testing.assert_close(tied.contractive_penalty(x), closed)
    with pytest.raises(ValueError, match="bias"):
        ae.sigmoid_jacobian_frobenius_sq(tied.weight, tied.bias[:2], x)
    with pytest.raises(ValueError, match="weight"):
        ae.sigmoid_jacobian_frobenius_sq(tied.weight[:, :5], tied.bias, x)


@pytest.mark.parametrize("arg", ["weight", "bias", "x"])
def test_sigmoid_closed_form_rejects_integer_and_non_finite_tensors_by_name(arg):
    args = {"weight": torch.randn(4, 6), "bias": torch.randn(4), "x": torch.randn(5, 6)}
    bad_int = dict(args, **{arg: args[arg].round().long()})
    with pytest.raises(TypeError, match=f"{arg} must be a floating-point tensor"):
        ae.sigmoid_jacobian_frobenius_sq(bad_int["weight"], bad_int["bias"], bad_int["x"])
    for value in (float("nan"), float("inf")):
        bad = dict(args, **{arg: args[arg].clone()})
        bad[arg].view(-1)[0] = value
        with pytest.raises(ValueError, match=f"{arg} .*(NaN|Inf|finite)"):
            ae.sigmoid_jacobian_frobenius_sq(bad["weight"], bad["bias"], bad["x"])


def test_contractive_loss_is_mse_plus_weighted_penalty_and_trains():
    torch.manual_seed(0)
    x = torch.rand(32, 6, dtype=torch.float64)
    generic = ae.Autoencoder(6, 4, hidden=(5,), code_activation="sigmoid").double()
    loss, m = ae.contractive_loss(generic, x, weight=0.7)
    pen = float(ae.jacobian_frobenius_sq(generic.encode, x).detach().mean())
    assert math.isclose(float(loss.detach()), m["mse"] + 0.7 * pen, rel_tol=1e-10)
    assert math.isclose(m["jacobian"], pen, rel_tol=1e-10)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in generic.parameters())
    tied = ae.TiedSigmoidAutoencoder(6, 4).double()
    _, m_t = ae.contractive_loss(tied, x, weight=2.0)
    assert math.isclose(m_t["jacobian"], float(ae.jacobian_frobenius_sq(tied.encode, x).detach().mean()), rel_tol=1e-10)
    with pytest.raises(ValueError, match="weight"):
        ae.contractive_loss(tied, x, weight=-1.0)


def test_contractive_penalty_shrinks_the_jacobian_when_trained():
    x = ck.data.load_digits("train")[0][:256]
    norms = {}
    for lam in (0.0, 1.0):
        torch.manual_seed(0)
        model = ae.TiedSigmoidAutoencoder(64, 32)
        ck.train.fit(model, torch.optim.Adam(model.parameters(), lr=1e-2),
                     lambda m, b, lam=lam: ae.contractive_loss(m, b, lam), x, steps=150, batch_size=64,
                     progress=False)
        norms[lam] = float(model.contractive_penalty(x).detach().mean())
    assert norms[1.0] < 0.5 * norms[0.0], norms


# ----------------------------------------------------------------------------- sparse
def test_kl_sparsity_matches_torch_distributions():
    g = torch.Generator().manual_seed(7)
    h = torch.rand(40, 6, generator=g, dtype=torch.float64)
    rho = 0.1
    ref = kl_divergence(Bernoulli(probs=torch.full((6,), rho, dtype=torch.float64)), Bernoulli(probs=h.mean(0)))
    assert math.isclose(float(ae.kl_sparsity_penalty(h, rho)), float(ref.sum()), rel_tol=1e-10)
    h_at_target = torch.full((10, 6), rho, dtype=torch.float64)
    assert abs(float(ae.kl_sparsity_penalty(h_at_target, rho))) < 1e-12
    # penalises the MEAN activation: rows of 0 and 1 averaging to rho cost nothing
    mixed = torch.zeros(10, 6, dtype=torch.float64)
    mixed[0] = 1.0
    assert abs(float(ae.kl_sparsity_penalty(mixed, 0.1))) < 1e-12


def test_kl_sparsity_gradient_matches_the_derivative():
    rho_hat = torch.tensor([0.02, 0.3, 0.7], dtype=torch.float64, requires_grad=True)
    rho = 0.05
    (grad,) = torch.autograd.grad(ae.kl_sparsity_penalty(rho_hat[None], rho), rho_hat)
    ref = -rho / rho_hat.detach() + (1 - rho) / (1 - rho_hat.detach())
    torch.testing.assert_close(grad, ref, rtol=1e-10, atol=1e-12)


def test_l1_penalty_and_sparse_loss():
    h = torch.tensor([[-1.0, 2.0], [0.5, 0.0]])
    torch.testing.assert_close(ae.l1_activity_penalty(h), torch.tensor([3.0, 0.5]))
    torch.manual_seed(0)
    model = ae.Autoencoder(5, 4, hidden=(), code_activation="sigmoid").double().requires_grad_(False)
    x = torch.rand(16, 5, dtype=torch.float64)
    h = model.encode(x)
    mse = float(ae.reconstruction_error(x, model.decode(h)).mean())
    loss_l1, _ = ae.sparse_loss(model, x, "l1", 0.5)
    assert math.isclose(float(loss_l1), mse + 0.5 * float(h.sum(1).mean()), rel_tol=1e-10)
    loss_kl, m2 = ae.sparse_loss(model, x, "kl", 0.5, rho=0.2)
    assert math.isclose(float(loss_kl), mse + 0.5 * float(ae.kl_sparsity_penalty(h, 0.2)), rel_tol=1e-10)
    assert math.isclose(m2["mean_activation"], float(h.mean()), rel_tol=1e-10)
    with pytest.raises(ValueError, match="penalty"):
        ae.sparse_loss(model, x, "l2", 0.5)


def test_kl_sparsity_rejects_bad_input():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        ae.kl_sparsity_penalty(torch.tensor([[1.5, 0.2]]), 0.1)
    with pytest.raises(ValueError, match="rho"):
        ae.kl_sparsity_penalty(torch.tensor([[0.5, 0.2]]), 1.0)
    with pytest.raises(ValueError, match="rho"):
        ae.kl_sparsity_penalty(torch.tensor([[0.5, 0.2]]), 0.0)
    with pytest.raises(TypeError, match="floating"):
        ae.l1_activity_penalty(torch.tensor([[1, 2]]))


LOSSES = {
    "autoencoder_loss": ae.autoencoder_loss,
    "denoising_loss": lambda m, b: ae.denoising_loss(m, b, 0.3),
    "contractive_loss": lambda m, b: ae.contractive_loss(m, b, 0.5),
    "sparse_loss": lambda m, b: ae.sparse_loss(m, b, "kl", 0.5, rho=0.1),
}


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_losses_raise_on_a_non_finite_batch_instead_of_returning_nan(name, value):
    """A NaN (or Inf) in the batch is a ValueError naming x and counting the bad entries, for every loss, also
    when the batch is a (data, labels) tuple; the same batch without it gives a finite loss."""
    model = ae.Autoencoder(4, 3, hidden=(5,), code_activation="sigmoid").double().requires_grad_(False)
    x = torch.rand(6, 4, dtype=torch.float64)
    loss, _ = LOSSES[name](model, x)
    assert torch.isfinite(loss)
    x[2, 1] = value
    with pytest.raises(ValueError, match=r"x .*(NaN|Inf)"):
        LOSSES[name](model, x)
    with pytest.raises(ValueError, match=r"x .*(NaN|Inf)"):
        LOSSES[name](model, (x, torch.zeros(6)))


@pytest.mark.parametrize("name", LOSSES)
def test_losses_reject_integer_and_misshapen_batches(name):
    model = ae.Autoencoder(4, 3, hidden=(), code_activation="sigmoid").double().requires_grad_(False)
    with pytest.raises(TypeError, match="x must be a floating-point tensor"):
        LOSSES[name](model, torch.ones(6, 4, dtype=torch.int64))
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        LOSSES[name](model, np.ones((6, 4)))
    for shape in [(4,), (2, 3, 4), (0, 4)]:
        with pytest.raises(ValueError, match="x must have shape"):
            LOSSES[name](model, torch.rand(*shape, dtype=torch.float64))


# ----------------------------------------------------------------------------- codes as a sampling space
def test_nearest_code_distance_matches_a_kd_tree():
    g = torch.Generator().manual_seed(8)
    codes = torch.randn(200, 3, generator=g, dtype=torch.float64)
    z = 2 * torch.randn(50, 3, generator=g, dtype=torch.float64)
    ref, _ = cKDTree(codes.numpy()).query(z.numpy(), k=1)
    np.testing.assert_allclose(ae.nearest_code_distance(z, codes).numpy(), ref, rtol=1e-9)
    with pytest.raises(ValueError, match="codes"):
        ae.nearest_code_distance(z, codes[:, :2])


def test_far_from_codes_fraction_matches_a_direct_count():
    g = torch.Generator().manual_seed(9)
    codes = 0.3 * torch.randn(300, 2, generator=g, dtype=torch.float64)
    z = torch.randn(1000, 2, generator=g, dtype=torch.float64)
    frac, radius = ae.far_from_codes_fraction(z, codes, quantile=0.9)
    tree = cKDTree(codes.numpy())
    loo = tree.query(codes.numpy(), k=2)[0][:, 1]  # nearest other code
    assert math.isclose(radius, float(np.quantile(loo, 0.9)), rel_tol=1e-9)
    dz = tree.query(z.numpy(), k=1)[0]
    assert math.isclose(frac, float((dz > radius).mean()), abs_tol=1e-12)
    # queries drawn like the codes are mostly near them; a wide prior is not
    near, _ = ae.far_from_codes_fraction(0.3 * torch.randn(1000, 2, generator=g, dtype=torch.float64), codes, 0.9)
    assert near < 0.2 < frac
    with pytest.raises(ValueError, match="quantile"):
        ae.far_from_codes_fraction(z, codes, quantile=1.5)
    with pytest.raises(ValueError, match="N >= 2"):
        ae.far_from_codes_fraction(z, codes[:1])
