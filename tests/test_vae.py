"""Tests for coursekit.vae: every identity checked against an independent reference
(scipy, numerical integration, torch.distributions, Monte Carlo, autograd)."""

import math

import numpy as np
import pytest
import torch
from scipy.stats import multivariate_normal
from torch.distributions import Bernoulli, Independent, MultivariateNormal, Normal, kl_divergence

from coursekit import vae
from coursekit.divergences import gaussian_kl

F64 = torch.float64


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _lgm(D=5, d=2, sigma=0.6, seed=0):
    g = _gen(seed)
    W = torch.randn(D, d, generator=g, dtype=F64)
    b = torch.randn(D, generator=g, dtype=F64)
    return vae.LinearGaussianModel(W, b, sigma)


def _orthogonal_lgm(D=4, d=2, sigma=0.5, seed=0):
    """W with orthogonal columns -> W^T W diagonal -> the exact posterior covariance is diagonal."""
    g = _gen(seed)
    Q, _ = torch.linalg.qr(torch.randn(D, d, generator=g, dtype=F64))
    W = Q * torch.tensor([2.0, 0.7], dtype=F64)[:d]
    return vae.LinearGaussianModel(W, torch.randn(D, generator=g, dtype=F64), sigma)


# ----------------------------------------------------------------------------- linear-Gaussian model
def test_log_marginal_matches_scipy():
    m = _lgm()
    x = m.sample(6, generator=_gen(1))
    C = (m.W @ m.W.T + m.sigma**2 * torch.eye(5, dtype=F64)).numpy()
    want = multivariate_normal(mean=m.b.numpy(), cov=C).logpdf(x.numpy())
    np.testing.assert_allclose(m.log_marginal(x).numpy(), want, rtol=1e-10, atol=1e-10)


def test_log_marginal_and_posterior_match_numerical_integration_1d_latent():
    m = _lgm(D=3, d=1, sigma=0.8, seed=3)
    x = m.sample(4, generator=_gen(4))
    z = torch.linspace(-15, 15, 30001, dtype=F64)
    log_joint = m.log_joint(x, z[:, None, None].expand(-1, 4, 1))  # (Z, N)
    shift = log_joint.max(0).values
    dens = torch.exp(log_joint - shift)
    mass = torch.trapezoid(dens, z, dim=0)
    torch.testing.assert_close(m.log_marginal(x), torch.log(mass) + shift, rtol=1e-9, atol=1e-9)
    mean_num = torch.trapezoid(dens * z[:, None], z, dim=0) / mass
    var_num = torch.trapezoid(dens * z[:, None] ** 2, z, dim=0) / mass - mean_num**2
    mean, cov = m.posterior(x)
    torch.testing.assert_close(mean[:, 0], mean_num, rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(cov[0, 0].expand(4), var_num, rtol=1e-7, atol=1e-8)


def test_posterior_matches_gaussian_conditioning_and_bayes_rule():
    m = _lgm(D=6, d=3)
    x = m.sample(5, generator=_gen(2))
    # (z, x) jointly Gaussian: cov(z, x) = W^T, cov(x) = C  =>  z | x ~ N(W^T C^-1 (x - b), I - W^T C^-1 W)
    C = m.W @ m.W.T + m.sigma**2 * torch.eye(6, dtype=F64)
    K = torch.linalg.solve(C, m.W).T  # W^T C^-1
    mean, cov = m.posterior(x)
    torch.testing.assert_close(mean, (x - m.b) @ K.T)
    torch.testing.assert_close(cov, torch.eye(3, dtype=F64) - K @ m.W)
    # Bayes: log p(z|x) = log p(x, z) - log p(x) for any z
    z = torch.randn(4, 5, 3, generator=_gen(3), dtype=F64)
    torch.testing.assert_close(MultivariateNormal(mean, cov).log_prob(z), m.log_joint(x, z) - m.log_marginal(x))


def test_elbo_gap_equals_kl_to_exact_posterior():
    m = _lgm(D=5, d=3)
    x = m.sample(8, generator=_gen(5))
    g = _gen(6)
    q_mu = torch.randn(8, 3, generator=g, dtype=F64)
    q_lv = torch.randn(8, 3, generator=g, dtype=F64)
    gap = m.log_marginal(x) - m.elbo_closed_form(x, q_mu, q_lv)
    mean, cov = m.posterior(x)
    kl = kl_divergence(MultivariateNormal(q_mu, torch.diag_embed(q_lv.exp())), MultivariateNormal(mean, cov))
    torch.testing.assert_close(gap, kl, rtol=1e-5, atol=1e-5)
    assert torch.all(gap > 0)


def test_elbo_closed_form_matches_monte_carlo():
    m = _lgm(D=4, d=2)
    x = m.sample(3, generator=_gen(7))
    q_mu = torch.tensor([[0.1, -0.3], [1.0, 0.0], [-0.5, 0.5]], dtype=F64)
    q_lv = torch.tensor([[-1.0, -0.5], [0.0, -2.0], [-0.3, -0.3]], dtype=F64)
    n = 100_000
    eps = torch.randn(n, 3, 2, generator=_gen(8), dtype=F64)
    z = q_mu + torch.exp(0.5 * q_lv) * eps
    log_w = m.log_joint(x, z) - Independent(Normal(q_mu, torch.exp(0.5 * q_lv)), 1).log_prob(z)
    mc, se = log_w.mean(0), log_w.std(0) / math.sqrt(n)
    assert torch.all((mc - m.elbo_closed_form(x, q_mu, q_lv)).abs() < 4 * se)


def test_elbo_equals_log_marginal_at_exact_posterior():
    m = _orthogonal_lgm()
    x = m.sample(5, generator=_gen(9))
    mean, cov = m.posterior(x)
    assert torch.allclose(cov, torch.diag(torch.diagonal(cov)), atol=1e-12)  # diagonal, so q can match it
    q_lv = torch.log(torch.diagonal(cov)).expand(5, 2)
    torch.testing.assert_close(m.elbo_closed_form(x, mean, q_lv), m.log_marginal(x), rtol=1e-10, atol=1e-10)
    # every importance weight equals p(x): IWAE is exact for any k, with zero variance
    torch.testing.assert_close(m.iwae(x, mean, q_lv, k=7, generator=_gen(1)), m.log_marginal(x))
    # 1-D latent: the posterior is always "diagonal"
    m1 = _lgm(D=3, d=1)
    x1 = m1.sample(4, generator=_gen(2))
    mean1, cov1 = m1.posterior(x1)
    torch.testing.assert_close(m1.elbo_closed_form(x1, mean1, torch.log(cov1).expand(4, 1)), m1.log_marginal(x1))


def test_elbo_le_iwae_k_le_log_marginal_and_increasing_in_k():
    m = _lgm(D=5, d=2, sigma=0.5, seed=11)
    x = m.sample(10, generator=_gen(12))
    mean, cov = m.posterior(x)
    q_mu = mean + 0.3  # a deliberately imperfect q
    q_lv = torch.log(torch.diagonal(cov)).expand(10, 2) + 0.5
    elbo = m.elbo_closed_form(x, q_mu, q_lv).mean()
    log_px = m.log_marginal(x).mean()
    g = _gen(13)
    reps = 400  # independent replicates, batched as extra rows
    xr, mur, lvr = x.repeat(reps, 1), q_mu.repeat(reps, 1), q_lv.repeat(reps, 1)
    means, ses = [], []
    for k in (1, 3, 10, 100):
        est = m.iwae(xr, mur, lvr, k, generator=g).reshape(reps, 10).mean(1)
        means.append(float(est.mean()))
        ses.append(float(est.std()) / math.sqrt(reps))
    assert abs(means[0] - float(elbo)) < 4 * ses[0]  # IWAE_1 is an unbiased ELBO estimate
    for a, b, sa, sb in zip(means, means[1:], ses, ses[1:]):
        assert b - a > 4 * math.hypot(sa, sb), (means, ses)  # strictly increasing in k
    assert means[-1] < float(log_px) + 4 * ses[-1]
    assert float(elbo) < means[1] and means[-1] <= float(log_px) + 1e-9 + 4 * ses[-1]
    assert float(log_px) - means[-1] < 0.1 * (float(log_px) - float(elbo))  # k=100 closes most of the gap


def test_lgm_sample_moments_match_marginal():
    m = _lgm(D=3, d=2, seed=4)
    x = m.sample(40_000, generator=_gen(5))
    C = m.W @ m.W.T + m.sigma**2 * torch.eye(3, dtype=F64)
    assert x.dtype == F64 and x.shape == (40_000, 3)
    assert torch.allclose(x.mean(0), m.b, atol=5 * float(C.diagonal().max().sqrt()) / 200)
    assert torch.allclose(torch.cov(x.T), C, atol=0.05 * float(C.abs().max()))


def test_lgm_fit_is_maximum_likelihood():
    true = _lgm(D=5, d=2, seed=21)
    x = true.sample(3000, generator=_gen(22))
    fit = vae.LinearGaussianModel.fit(x, latent_dim=2)
    ll_fit = float(fit.log_marginal(x).mean())
    assert ll_fit >= float(true.log_marginal(x).mean())
    g = _gen(23)
    for _ in range(5):  # any perturbation of the ML parameters lowers the likelihood
        pert = vae.LinearGaussianModel(fit.W + 0.05 * torch.randn(5, 2, generator=g, dtype=F64),
                                       fit.b + 0.05 * torch.randn(5, generator=g, dtype=F64), fit.sigma * 1.05)
        assert float(pert.log_marginal(x).mean()) < ll_fit
    C_true = true.W @ true.W.T + true.sigma**2 * torch.eye(5, dtype=F64)
    C_fit = fit.W @ fit.W.T + fit.sigma**2 * torch.eye(5, dtype=F64)
    assert torch.allclose(C_fit, C_true, atol=0.15 * float(C_true.abs().max()))


def test_lgm_float32_inputs_return_float32():
    m = vae.LinearGaussianModel(torch.randn(4, 2), torch.zeros(4), 1.0)
    x = m.sample(3)
    assert x.dtype == torch.float32
    assert m.log_marginal(x).dtype == torch.float32
    mean, cov = m.posterior(x)
    assert mean.shape == (3, 2) and cov.shape == (2, 2) and mean.dtype == torch.float32
    assert m.log_joint(x, torch.zeros(5, 3, 2)).shape == (5, 3)
    assert m.elbo_closed_form(x, torch.zeros(3, 2), torch.zeros(2)).shape == (3,)


@pytest.mark.parametrize(
    "call, err, match",
    [
        (lambda: vae.LinearGaussianModel(torch.randn(4, 2), torch.zeros(4), 0.0), ValueError, "sigma"),
        (lambda: vae.LinearGaussianModel(torch.randn(4, 2), torch.zeros(4), -1.0), ValueError, "sigma"),
        (lambda: vae.LinearGaussianModel(torch.randn(4), torch.zeros(4), 1.0), ValueError, "W must have shape"),
        (lambda: vae.LinearGaussianModel(torch.randn(4, 2), torch.zeros(3), 1.0), ValueError, "b must have shape"),
        (lambda: vae.LinearGaussianModel(torch.randn(4, 2), torch.zeros(4), "1"), TypeError, "sigma"),
        (lambda: _lgm().log_marginal(torch.zeros(3, 4, dtype=F64)), ValueError, "x must have shape"),
        (lambda: _lgm().log_marginal(torch.full((1, 5), float("nan"), dtype=F64)), ValueError, "finite"),
        (lambda: _lgm().elbo_closed_form(torch.zeros(2, 5, dtype=F64), torch.zeros(2, 2, dtype=F64),
                                         torch.full((2, 2), float("inf"), dtype=F64)), ValueError,
         "q_logvar must be finite"),
        (lambda: _lgm().elbo_closed_form(torch.zeros(2, 5, dtype=F64), torch.zeros(3, 2, dtype=F64),
                                         torch.zeros(2, 2, dtype=F64)), ValueError, "q_mu"),
        (lambda: _lgm().iwae(torch.zeros(2, 5, dtype=F64), torch.zeros(2, 2, dtype=F64),
                             torch.zeros(2, 2, dtype=F64), 0),
         ValueError, "k must be a positive integer"),
        (lambda: _lgm().log_joint(torch.zeros(2, 5, dtype=F64), torch.zeros(2, 3, dtype=F64)), ValueError,
         "z must have shape"),
    ],
)
def test_lgm_bad_input(call, err, match):
    with pytest.raises(err, match=match):
        call()


# ----------------------------------------------------------------------------- building blocks
def test_reparameterise_value_gradient_and_moments():
    g = _gen(30)
    mu = torch.randn(4, 3, generator=g, dtype=F64, requires_grad=True)
    lv = torch.randn(4, 3, generator=g, dtype=F64, requires_grad=True)
    eps = torch.randn(4, 3, generator=g, dtype=F64)
    z = vae.reparameterise(mu, lv, eps)
    sd = torch.exp(0.5 * lv.detach())
    torch.testing.assert_close(z.detach(), mu.detach() + sd * eps)
    c = torch.randn(4, 3, generator=g, dtype=F64)
    g_mu, g_lv = torch.autograd.grad((c * z).sum(), [mu, lv])
    torch.testing.assert_close(g_mu, c)
    torch.testing.assert_close(g_lv, c * 0.5 * sd * eps)
    # moments of freshly drawn samples; eps with a leading sample dimension broadcasts
    mu1, lv1 = torch.tensor([1.0, -2.0], dtype=F64), torch.tensor([0.5, -1.0], dtype=F64)
    zs = vae.reparameterise(mu1, lv1, torch.randn(50_000, 2, generator=_gen(31), dtype=F64))
    assert zs.shape == (50_000, 2)
    assert torch.all((zs.mean(0) - mu1).abs() < 4 * torch.exp(0.5 * lv1) / math.sqrt(50_000))
    assert torch.all((zs.var(0) / lv1.exp() - 1).abs() < 4 * math.sqrt(2 / 50_000))
    z_a = vae.reparameterise(mu1, lv1, generator=_gen(5))
    z_b = vae.reparameterise(mu1, lv1, generator=_gen(5))
    assert z_a.shape == (2,) and torch.equal(z_a, z_b)


@pytest.mark.parametrize(
    "args, err, match",
    [
        ((torch.zeros(2, 3), torch.full((2, 3), float("inf"))), ValueError, "logvar must be finite"),
        ((torch.full((2, 3), float("nan")), torch.zeros(2, 3)), ValueError, "mu must be finite"),
        ((torch.zeros(2, 3), torch.zeros(2, 4)), ValueError, "broadcast"),
        ((torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(2, 4)), ValueError, "broadcast"),
        ((torch.zeros(2, 3), [[0.0] * 3] * 2), TypeError, "torch.Tensor"),
    ],
)
def test_reparameterise_bad_input(args, err, match):
    with pytest.raises(err, match=match):
        vae.reparameterise(*args)


def test_bernoulli_log_likelihood_matches_torch_distributions():
    g = _gen(40)
    logits = 4 * torch.randn(3, 5, 10, generator=g)
    x = (torch.rand(5, 10, generator=g) > 0.5).float()
    got = vae.bernoulli_log_likelihood(logits, x)
    assert got.shape == (3, 5)
    torch.testing.assert_close(got, Bernoulli(logits=logits).log_prob(x.expand(3, 5, 10)).sum(-1))
    # grey-level targets: minus the summed binary cross-entropy
    xs = torch.rand(5, 10, generator=g)
    want = -torch.nn.functional.binary_cross_entropy_with_logits(logits[0], xs, reduction="none").sum(-1)
    torch.testing.assert_close(vae.bernoulli_log_likelihood(logits[0], xs), want)
    # saturated logits stay finite and exact: log sigmoid(60) ~ -exp(-60), log(1 - sigmoid(60)) = -60
    big = torch.tensor([[60.0, -60.0]], dtype=F64)
    torch.testing.assert_close(vae.bernoulli_log_likelihood(big, torch.tensor([[1.0, 1.0]], dtype=F64)),
                               torch.tensor([-60.0 - 2 * math.exp(-60)], dtype=F64))


@pytest.mark.parametrize(
    "logits, x, match",
    [
        (torch.zeros(2, 4), torch.full((2, 4), 1.5), r"\[0, 1\]"),
        (torch.zeros(2, 4), torch.full((2, 4), -0.1), r"\[0, 1\]"),
        (torch.full((2, 4), float("nan")), torch.zeros(2, 4), "logits must be finite"),
        (torch.zeros(2, 4), torch.zeros(2, 5), "last"),
        (torch.zeros(3, 4), torch.zeros(2, 4), "broadcast"),
    ],
)
def test_bernoulli_log_likelihood_bad_input(logits, x, match):
    with pytest.raises(ValueError, match=match):
        vae.bernoulli_log_likelihood(logits, x)


def test_log_mean_exp_and_iwae_from_log_weights():
    g = _gen(50)
    lw = torch.randn(6, 4, generator=g, dtype=F64)
    naive = torch.log(torch.exp(lw).mean(0))
    torch.testing.assert_close(vae.iwae_from_log_weights(lw), naive)
    torch.testing.assert_close(vae.log_mean_exp(lw.T, dim=1), naive)
    torch.testing.assert_close(vae.iwae_from_log_weights(lw[:1]), lw[0])  # k = 1: the log weight itself
    # huge magnitudes where exp under/overflows: identical weights give exactly that weight
    for v in (-1e4, 1e4):
        out = vae.iwae_from_log_weights(torch.full((5, 3), v))
        torch.testing.assert_close(out, torch.full((3,), v))
    out = vae.iwae_from_log_weights(torch.tensor([[-1000.0], [-1000.0 + math.log(3)]], dtype=F64))
    torch.testing.assert_close(out, torch.tensor([-1000.0 + math.log(2)], dtype=F64))  # log((1 + 3)/2)
    # -inf (zero weight) is allowed
    torch.testing.assert_close(vae.iwae_from_log_weights(torch.tensor([[0.0], [-float("inf")]])),
                               torch.tensor([-math.log(2)]))
    # Jensen: mean log weight <= IWAE <= max log weight
    assert torch.all(lw.mean(0) <= vae.iwae_from_log_weights(lw))
    assert torch.all(vae.iwae_from_log_weights(lw) <= lw.max(0).values)


@pytest.mark.parametrize(
    "log_w, err, match",
    [
        (torch.zeros(5), ValueError, "log_w must have shape"),
        (torch.zeros(2, 3, 4), ValueError, "log_w must have shape"),
        (torch.zeros(0, 3), ValueError, "k >= 1"),
        (torch.tensor([[float("nan")], [0.0]]), ValueError, "NaN"),
        (torch.tensor([[float("inf")], [0.0]]), ValueError, r"\+inf"),
        (torch.zeros(2, 3, dtype=torch.long), TypeError, "floating"),
    ],
)
def test_iwae_from_log_weights_bad_input(log_w, err, match):
    with pytest.raises(err, match=match):
        vae.iwae_from_log_weights(log_w)


# ----------------------------------------------------------------------------- the VAE
@pytest.fixture
def model():
    torch.manual_seed(0)
    return vae.VAE(data_dim=64, latent_dim=4, hidden=(32, 32))


@pytest.fixture
def xbin():
    return (torch.rand(12, 64, generator=_gen(60)) > 0.6).float()


def test_vae_shapes(model, xbin):
    mu, lv = model.encode(xbin)
    assert mu.shape == lv.shape == (12, 4)
    assert model.decode(mu).shape == (12, 64)
    assert model.decode(torch.zeros(3, 12, 4)).shape == (3, 12, 64)
    logits, mu2, lv2 = model(xbin)
    assert logits.shape == (12, 64) and torch.equal(mu, mu2) and torch.equal(lv, lv2)
    s = model.sample(7, generator=_gen(1))
    assert s.shape == (7, 64) and s.min() >= 0 and s.max() <= 1 and not s.requires_grad
    # image-shaped input is flattened
    torch.testing.assert_close(model.encode(xbin.reshape(12, 1, 8, 8))[0], mu)
    assert vae.VAE().latent_dim == 8 and vae.VAE().data_dim == 64  # contract defaults


def test_vae_determinism_under_seed(xbin):
    torch.manual_seed(3)
    a = vae.VAE(hidden=(16,))
    torch.manual_seed(3)
    b = vae.VAE(hidden=(16,))
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)
    torch.testing.assert_close(vae.elbo(a, xbin, generator=_gen(2))["elbo"],
                               vae.elbo(b, xbin, generator=_gen(2))["elbo"], rtol=0, atol=0)
    assert torch.equal(a.sample(5, generator=_gen(4)), b.sample(5, generator=_gen(4)))
    assert torch.equal(vae.iwae_bound(a, xbin, 8, generator=_gen(6)), vae.iwae_bound(b, xbin, 8, generator=_gen(6)))
    assert not torch.equal(a.sample(5, generator=_gen(4)), a.sample(5, generator=_gen(5)))


def test_elbo_components(model, xbin):
    out = vae.elbo(model, xbin, beta=4.0, n_samples=3, generator=_gen(7))
    assert set(out) == {"elbo", "rec", "kl", "objective"}
    assert all(v.shape == (12,) for v in out.values())
    torch.testing.assert_close(out["elbo"], out["rec"] - out["kl"])
    torch.testing.assert_close(out["objective"], out["rec"] - 4.0 * out["kl"])
    mu, lv = model.encode(xbin)
    torch.testing.assert_close(out["kl"], gaussian_kl(mu, lv))
    assert torch.all(out["rec"] <= 0) and torch.all(out["kl"] >= 0)
    # rec recomputed independently with torch.distributions from the same noise
    eps = torch.randn((3, 12, 4), generator=_gen(7))
    z = mu + torch.exp(0.5 * lv) * eps
    rec = Independent(Bernoulli(logits=model.decode(z)), 1).log_prob(xbin).mean(0)
    torch.testing.assert_close(out["rec"], rec)


def test_iwae_bound_ge_elbo_on_average_untrained_k64(model, xbin):
    with torch.no_grad():
        el = vae.elbo(model, xbin, n_samples=20, generator=_gen(0))["elbo"].mean()
    iw = vae.iwae_bound(model, xbin, k=64, generator=_gen(100))
    assert iw.shape == (12,) and not iw.requires_grad
    assert float(iw.mean()) > float(el)


def test_iwae_bound_matches_independent_computation_and_chunks(model, xbin):
    k = 5
    got = vae.iwae_bound(model, xbin, k, batch_size=100, generator=_gen(8))
    with torch.no_grad():
        mu, lv = model.encode(xbin)
        eps = torch.randn((k, 12, 4), generator=_gen(8))
        z = mu + torch.exp(0.5 * lv) * eps
        q = Independent(Normal(mu, torch.exp(0.5 * lv)), 1)
        prior = Independent(Normal(torch.zeros(4), torch.ones(4)), 1)
        log_w = Independent(Bernoulli(logits=model.decode(z)), 1).log_prob(xbin) + prior.log_prob(z) - q.log_prob(z)
    torch.testing.assert_close(got, torch.logsumexp(log_w, 0) - math.log(k))
    chunked = vae.iwae_bound(model, xbin, k, batch_size=5)
    assert chunked.shape == (12,) and torch.isfinite(chunked).all()
    # k = 1 with the same noise is exactly a one-sample ELBO with Monte Carlo KL; on average equal to elbo
    reps = xbin.repeat(400, 1)  # 400 independent draws for each example, in one call
    iw1 = vae.iwae_bound(model, reps, 1, generator=_gen(9)).reshape(400, 12).mean(1)
    with torch.no_grad():
        el = vae.elbo(model, reps, generator=_gen(10))["elbo"].reshape(400, 12).mean(1)
    diff = iw1 - el
    assert abs(float(diff.mean())) < 4 * float(diff.std()) / math.sqrt(400)


def test_vae_loss_and_training_decreases_loss(xbin):
    torch.manual_seed(1)
    m = vae.VAE(data_dim=64, latent_dim=2, hidden=(32,))
    loss, metrics = vae.vae_loss(m, (xbin, torch.zeros(12)), beta=1.0)
    assert loss.shape == () and set(metrics) >= {"elbo", "rec", "kl"}
    assert all(isinstance(v, torch.Tensor) and v.shape == () and not v.requires_grad for v in metrics.values())
    assert abs(float(loss.detach()) + metrics["elbo"]) < 1e-5  # beta = 1: loss is the negative ELBO
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())
    torch.manual_seed(5)
    loss3, metrics3 = vae.vae_loss(m, xbin, beta=3.0)
    # beta weights the KL in the loss only; the reported elbo stays the beta = 1 bound
    want = -(metrics3["rec"] - 3.0 * metrics3["kl"])
    assert abs(float(loss3.detach()) - want) < 1e-4
    assert abs(metrics3["elbo"] - (metrics3["rec"] - metrics3["kl"])) < 1e-4
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    first = None
    for _ in range(60):
        opt.zero_grad()
        loss, _ = vae.vae_loss(m, xbin)
        loss.backward()
        opt.step()
        first = float(loss.detach()) if first is None else first
    with torch.no_grad():
        final = -float(vae.elbo(m, xbin, n_samples=16)["elbo"].mean())
    assert final < first - 5


@pytest.mark.parametrize(
    "call, err, match",
    [
        (lambda m, x: m.encode(torch.zeros(3, 63)), ValueError, "x must have shape"),
        (lambda m, x: m.decode(torch.zeros(3, 5)), ValueError, "z must have shape"),
        (lambda m, x: m.sample(0), ValueError, "n must be a positive integer"),
        (lambda m, x: m.sample(2.5), TypeError, "integer"),
        (lambda m, x: vae.elbo(m, 2 * x), ValueError, r"\[0, 1\]"),
        (lambda m, x: vae.elbo(m, x, beta=-1.0), ValueError, "beta"),
        (lambda m, x: vae.elbo(m, x, n_samples=0), ValueError, "n_samples"),
        (lambda m, x: vae.elbo(m, x.masked_fill(x > 0, float("nan"))), ValueError, "finite"),
        (lambda m, x: vae.iwae_bound(m, x, 0), ValueError, "k must be a positive integer"),
        (lambda m, x: vae.iwae_bound(m, x, 3, batch_size=0), ValueError, "batch_size"),
        (lambda m, x: vae.VAE(latent_dim=0), ValueError, "latent_dim"),
    ],
)
def test_vae_bad_input(model, xbin, call, err, match):
    with pytest.raises(err, match=match):
        call(model, xbin)


# ----------------------------------------------------------------------------- gradient estimators
def test_gradient_estimators_unbiased_and_reparam_has_lower_variance():
    mu, sigma, n = 1.3, 0.7, 40_000
    f = lambda z: z**2
    rep = vae.reparam_gradient_samples(f, mu, sigma, n, generator=_gen(70))
    sf = vae.score_function_gradient_samples(f, mu, sigma, n, generator=_gen(71))
    sfb = vae.score_function_gradient_samples(f, mu, sigma, n, baseline=mu**2 + sigma**2, generator=_gen(72))
    assert rep.shape == sf.shape == (n,)
    for est in (rep, sf, sfb):
        assert abs(float(est.mean()) - 2 * mu) < 4 * float(est.std()) / math.sqrt(n)
    assert float(rep.var()) < float(sfb.var()) < float(sf.var())
    assert abs(float(rep.var()) / (4 * sigma**2) - 1) < 0.05  # per-sample 2 z: variance 4 sigma^2
    # the score-function estimator also handles a non-differentiable f: d/dmu P(z > 0) = phi(mu / sigma) / sigma
    step = vae.score_function_gradient_samples(lambda z: (z > 0).to(z.dtype), 0.4, 1.0, n, generator=_gen(73))
    want = math.exp(-0.5 * 0.4**2) / math.sqrt(2 * math.pi)
    assert abs(float(step.mean()) - want) < 4 * float(step.std()) / math.sqrt(n)
    # reproducible with a generator
    assert torch.equal(vae.reparam_gradient_samples(f, mu, sigma, 10, generator=_gen(1)),
                       vae.reparam_gradient_samples(f, mu, sigma, 10, generator=_gen(1)))


@pytest.mark.parametrize("fn", [vae.reparam_gradient_samples, vae.score_function_gradient_samples])
def test_gradient_estimators_bad_input(fn):
    f = lambda z: z**2
    with pytest.raises(ValueError, match="sigma"):
        fn(f, 0.0, 0.0, 10)
    with pytest.raises(ValueError, match="n must be a positive integer"):
        fn(f, 0.0, 1.0, 0)
    with pytest.raises(ValueError, match="mu must be a scalar"):
        fn(f, torch.zeros(2), 1.0, 10)
    with pytest.raises(ValueError, match="elementwise"):
        fn(lambda z: z.sum(), 0.0, 1.0, 10)
    with pytest.raises(ValueError, match="finite"):
        fn(f, float("nan"), 1.0, 10)


# ----------------------------------------------------------------------------- independent-pixel baseline
def test_independent_bernoulli_hand_computation():
    x_train = torch.tensor([[1.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    probs = vae.fit_independent_bernoulli(x_train, alpha=1.0)
    torch.testing.assert_close(probs, torch.tensor([3 / 4, 2 / 4, 2 / 4]))  # (count + 1) / (N + 2)
    lp = vae.independent_bernoulli_log_prob(torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]]), probs)
    torch.testing.assert_close(lp, torch.tensor([math.log(0.75 * 0.5 * 0.5), math.log(0.25 * 0.5 * 0.5)]))
    mle = vae.fit_independent_bernoulli(x_train, alpha=0.0)  # plain MLE = pixel means
    torch.testing.assert_close(mle, torch.tensor([1.0, 0.5, 0.5]))
    lp0 = vae.independent_bernoulli_log_prob(torch.tensor([[1.0, 1.0, 0.0], [0.0, 1.0, 0.0]]), mle)
    assert float(lp0[0]) == pytest.approx(2 * math.log(0.5)) and lp0[1] == -float("inf")  # 0 log 0 = 0
    # agrees with torch.distributions on random data
    x = (torch.rand(20, 6, generator=_gen(80)) > 0.5).float()
    p = vae.fit_independent_bernoulli(x)
    torch.testing.assert_close(vae.independent_bernoulli_log_prob(x, p), Independent(Bernoulli(probs=p), 1).log_prob(x))


@pytest.mark.parametrize(
    "call, err, match",
    [
        (lambda: vae.fit_independent_bernoulli(torch.full((2, 3), 2.0)), ValueError, r"\[0, 1\]"),
        (lambda: vae.fit_independent_bernoulli(torch.zeros(2, 3), alpha=-1.0), ValueError, "alpha"),
        (lambda: vae.fit_independent_bernoulli(torch.zeros(3)), ValueError, "x_train must have shape"),
        (lambda: vae.independent_bernoulli_log_prob(torch.zeros(2, 3), torch.full((4,), 0.5)), ValueError,
         "probs must have shape"),
        (lambda: vae.independent_bernoulli_log_prob(torch.zeros(2, 3), torch.full((3,), 1.5)), ValueError, r"\[0, 1\]"),
        (lambda: vae.independent_bernoulli_log_prob(torch.full((2, 3), -1.0), torch.full((3,), 0.5)), ValueError,
         r"\[0, 1\]"),
    ],
)
def test_independent_bernoulli_bad_input(call, err, match):
    with pytest.raises(err, match=match):
        call()


def test_cpu_generator_works_for_tensors_on_another_device():
    # a CPU torch.Generator with a model on CUDA/MPS: noise is drawn on the CPU and moved
    z = vae._randn((3, 2), _gen(0), torch.float32, "meta")
    assert z.device.type == "meta" and z.shape == (3, 2)
    torch.testing.assert_close(vae._randn((3, 2), _gen(0), torch.float32, "cpu"), torch.randn(3, 2, generator=_gen(0)))


# ----------------------------------------------------------------------------- beta objective, collapse remedies
def test_beta_objective_is_a_bound_for_beta_at_least_one_and_not_below():
    # L_beta = ELBO - (beta - 1) KL(q || p(z)); at the exact (diagonal) posterior ELBO = log p(x) exactly
    m = _orthogonal_lgm(D=6, d=2, sigma=0.4, seed=3)
    x = m.sample(8, generator=_gen(4))
    post_mu, post_cov = m.posterior(x)
    logvar = torch.diagonal(post_cov).log().expand_as(post_mu)
    log_px = m.log_marginal(x)
    elbo = m.elbo_closed_form(x, post_mu, logvar)
    torch.testing.assert_close(elbo, log_px)
    rate = kl_divergence(Independent(Normal(post_mu, (0.5 * logvar).exp()), 1),
                         Independent(Normal(torch.zeros_like(post_mu), torch.ones_like(post_mu)), 1))
    assert (rate > 1e-3).all()
    for beta in (1.0, 1.5, 4.0):
        assert (elbo - (beta - 1) * rate <= log_px + 1e-10).all()
    for beta in (0.0, 0.5, 0.9):  # beta < 1 overshoots log p(x) by exactly (1 - beta) * rate
        l_beta = elbo - (beta - 1) * rate
        assert (l_beta > log_px).all()
        torch.testing.assert_close(l_beta - log_px, (1 - beta) * rate)
    # for random diagonal q the beta >= 1 objectives stay below log p(x)
    g = _gen(5)
    for _ in range(5):
        q_mu = post_mu + torch.randn(post_mu.shape, generator=g, dtype=F64)
        q_lv = torch.randn(post_mu.shape, generator=g, dtype=F64)
        e = m.elbo_closed_form(x, q_mu, q_lv)
        assert (e - 1.0 * gaussian_kl(q_mu, q_lv) <= log_px).all()


def test_kl_per_dimension_sums_to_the_kl_and_matches_torch():
    g = _gen(90)
    mu, logvar = torch.randn(2, 7, 5, generator=g, dtype=F64)
    terms = vae.kl_per_dimension(mu, logvar)
    assert terms.shape == (7, 5) and (terms >= 0).all()
    ref = kl_divergence(Normal(mu, (0.5 * logvar).exp()), Normal(torch.zeros_like(mu), torch.ones_like(mu)))
    torch.testing.assert_close(terms, ref)
    torch.testing.assert_close(terms.sum(-1), gaussian_kl(mu, logvar))
    with pytest.raises(ValueError, match="same shape"):
        vae.kl_per_dimension(mu, logvar[:, :3])


def test_latent_activity_is_the_variance_of_the_posterior_means():
    g = _gen(91)
    mu = torch.randn(50, 4, generator=g, dtype=F64) * torch.tensor([1.0, 0.5, 1e-3, 0.0], dtype=F64)
    act = vae.latent_activity(mu)
    np.testing.assert_allclose(act.numpy(), np.var(mu.numpy(), axis=0, ddof=1), rtol=1e-12)
    assert ((act > vae.ACTIVE_UNIT_THRESHOLD).tolist()) == [True, True, False, False]
    with pytest.raises(ValueError, match="at least 2 rows"):
        vae.latent_activity(mu[:1])
    with pytest.raises(ValueError, match="shape"):
        vae.latent_activity(mu[:, 0])


def test_kl_warmup_beta_schedule():
    assert [vae.kl_warmup_beta(t, 4) for t in (0, 1, 2, 4, 9)] == [0.0, 0.25, 0.5, 1.0, 1.0]
    with pytest.raises(ValueError, match="warmup_steps"):
        vae.kl_warmup_beta(1, 0)
    with pytest.raises(ValueError, match="step"):
        vae.kl_warmup_beta(-1, 5)
    with pytest.raises(TypeError):
        vae.kl_warmup_beta(1.5, 5)


def test_free_bits_kl_against_a_loop_and_its_gradient():
    g = _gen(92)
    kl_dims = torch.rand(6, 4, generator=g, dtype=F64) * torch.tensor([0.1, 1.0, 2.0, 0.01], dtype=F64)
    lam = 0.3
    ref = sum(max(lam, float(kl_dims[:, j].mean())) for j in range(4))
    assert float(vae.free_bits_kl(kl_dims, lam)) == pytest.approx(ref, rel=1e-12)
    # lambda = 0 gives the batch mean of the ordinary KL term
    assert float(vae.free_bits_kl(kl_dims, 0.0)) == pytest.approx(float(kl_dims.sum(-1).mean()), rel=1e-12)
    # below lambda a dimension gets no gradient; above it the gradient of the mean
    k = kl_dims.clone().requires_grad_(True)
    vae.free_bits_kl(k, lam).backward()
    below = kl_dims.mean(0) < lam
    assert (k.grad[:, below] == 0).all()
    torch.testing.assert_close(k.grad[:, ~below], torch.full_like(k.grad[:, ~below], 1 / 6))
    with pytest.raises(ValueError, match=">= 0"):
        vae.free_bits_kl(-kl_dims, lam)
    with pytest.raises(ValueError, match="free_bits"):
        vae.free_bits_kl(kl_dims, -1.0)


def test_free_bits_loss_bounds_the_elbo_and_equals_vae_loss_at_zero():
    torch.manual_seed(0)
    model = vae.VAE(data_dim=12, latent_dim=3, hidden=(8,)).double()
    x = (torch.rand(10, 12, generator=_gen(93), dtype=F64) > 0.5).double()
    torch.manual_seed(1)
    loss0, metrics0 = vae.free_bits_loss(model, x, 0.0)
    torch.manual_seed(1)
    ref, _ = vae.vae_loss(model, x)
    torch.testing.assert_close(loss0, ref)
    torch.manual_seed(1)
    loss_fb, metrics = vae.free_bits_loss(model, x, 2.0)
    assert float(loss_fb.detach()) >= -metrics["elbo"] - 1e-9  # the objective is <= the mean ELBO
    assert metrics["elbo"] == pytest.approx(metrics0["elbo"])
