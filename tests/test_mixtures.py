"""Tests for coursekit.mixtures against independent references: torch.distributions' mixture, autograd of the
log-density, quadrature (a density integrates to one), scikit-learn (PCA, KMeans, GaussianMixture) and scipy
(multivariate_normal, linear_sum_assignment)."""

import math

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment
from scipy.stats import multivariate_normal
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA as SkPCA
from sklearn.mixture import GaussianMixture
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal

from coursekit import mixtures as M
from coursekit import score


def test_gaussian_mixture_density_and_score_against_torch_distributions():
    means = torch.tensor([[0.0, 1.0], [2.0, -1.0], [-1.0, -2.0]], dtype=torch.float64)
    stds = torch.tensor([0.5, 1.0, 0.3], dtype=torch.float64)
    w = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    sigma = 0.4
    ref = MixtureSameFamily(Categorical(w),
                            Independent(Normal(means, (stds**2 + sigma**2).sqrt()[:, None].expand(3, 2)), 1))
    x = (3 * torch.randn(50, 2, dtype=torch.float64)).requires_grad_(True)
    lp = M.gaussian_mixture_log_prob(x, means, stds, w, sigma=sigma)
    assert torch.allclose(lp, ref.log_prob(x), atol=1e-10)
    (grad,) = torch.autograd.grad(ref.log_prob(x).sum(), x)
    assert torch.allclose(M.gaussian_mixture_score(x.detach(), means, stds, w, sigma=sigma), grad, atol=1e-10)
    far = torch.tensor([[80.0, -60.0]], dtype=torch.float64)
    assert torch.isfinite(M.gaussian_mixture_score(far, means, stds, w)).all()


def test_defaults_uniform_weights_scalar_std_and_unnormalised_weights():
    means = torch.tensor([[-1.0], [3.0]], dtype=torch.float64)
    x = torch.linspace(-5, 7, 9, dtype=torch.float64)[:, None]
    ref = MixtureSameFamily(Categorical(torch.tensor([0.5, 0.5], dtype=torch.float64)),
                            Independent(Normal(means, torch.full((2, 1), 0.7, dtype=torch.float64)), 1))
    assert torch.allclose(M.gaussian_mixture_log_prob(x, means, 0.7), ref.log_prob(x), atol=1e-12)
    # weights are normalised: (2, 2) is the same mixture as (0.5, 0.5)
    assert torch.allclose(M.gaussian_mixture_score(x, means, 0.7, [2.0, 2.0]), M.gaussian_mixture_score(x, means, 0.7))


def test_density_integrates_to_one_and_noise_adds_variance():
    """Quadrature on a fine 1-D grid: mass 1, and the variance of q_sigma is that of p plus sigma^2."""
    means, stds, w = torch.tensor([[-2.0], [1.5]], dtype=torch.float64), torch.tensor([0.6, 1.0]), [0.3, 0.7]
    x = torch.linspace(-20, 20, 80001, dtype=torch.float64)[:, None]
    dx = float(x[1] - x[0])
    var = {}
    for sigma in (0.0, 0.8):
        p = M.gaussian_mixture_log_prob(x, means, stds, w, sigma=sigma).exp()
        assert float(p.sum() * dx) == pytest.approx(1.0, abs=1e-9)
        mean = float((p * x[:, 0]).sum() * dx)
        var[sigma] = float((p * (x[:, 0] - mean) ** 2).sum() * dx)
    assert var[0.8] == pytest.approx(var[0.0] + 0.8**2, rel=1e-8)


def test_score_re_exports_the_mixture_functions():
    assert score.gaussian_mixture_log_prob is M.gaussian_mixture_log_prob
    assert score.gaussian_mixture_score is M.gaussian_mixture_score


@pytest.mark.parametrize(
    "call, err, match",
    [
        (lambda: M.gaussian_mixture_log_prob(torch.zeros(3), [[0.0]], 1.0), ValueError, r"x must have shape \(N, D\)"),
        (lambda: M.gaussian_mixture_log_prob(torch.zeros(3, 2, dtype=torch.long), [[0.0, 0.0]], 1.0), TypeError,
         "floating"),
        (lambda: M.gaussian_mixture_log_prob(torch.zeros(3, 2), [[0.0, 0.0, 0.0]], 1.0), ValueError,
         r"means must have shape \(k, 2\)"),
        (lambda: M.gaussian_mixture_score(torch.zeros(3, 1), [[0.0], [1.0]], [1.0, 0.0]), ValueError,
         "stds must be > 0"),
        (lambda: M.gaussian_mixture_score(torch.zeros(3, 1), [[0.0], [1.0]], 1.0, [1.0, -1.0]), ValueError,
         "weights must be >= 0"),
        (lambda: M.gaussian_mixture_score(torch.zeros(3, 1), [[0.0], [1.0]], 1.0, [0.0, 0.0]), ValueError,
         "positive sum"),
        (lambda: M.gaussian_mixture_score(torch.zeros(3, 1), [[0.0], [1.0]], 1.0, [1.0]), ValueError,
         r"weights must have shape \(2,\)"),
        (lambda: M.gaussian_mixture_score(torch.zeros(3, 1), [[float("nan")]], 1.0), ValueError,
         "means must be finite"),
        (lambda: M.gaussian_mixture_score(torch.zeros(3, 1), [[0.0]], 1.0, sigma=-0.1), ValueError, "sigma"),
        (lambda: M.gaussian_mixture_score(torch.zeros(3, 1), [[0.0], [1.0]], [1.0, 1.0, 1.0]), ValueError,
         r"stds must have shape \(2,\)"),
    ],
)
def test_bad_input(call, err, match):
    with pytest.raises(err, match=match):
        call()


# ---------------------------------------------------------------------------------------------------------------
# PCA, k-means, GMM / EM
# ---------------------------------------------------------------------------------------------------------------


def _blobs(n_per=80, seed=0, centres=((0.0, 0.0), (5.0, 5.0), (0.0, 6.0)), scale=1.0):
    g = torch.Generator().manual_seed(seed)
    c = torch.tensor(centres, dtype=torch.float64)
    return torch.cat([m + scale * torch.randn(n_per, c.shape[1], generator=g, dtype=torch.float64) for m in c])


def _correlated(n=400, d=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64) @ torch.randn(d, d, generator=g, dtype=torch.float64)


def test_pca_against_sklearn_and_contract():
    x = _correlated()
    p, ref = M.pca(x, 3), SkPCA(3).fit(x.numpy())
    assert p.components.shape == (3, 5) and p.mean.shape == (5,) and p.explained_variance.shape == (3,)
    assert torch.allclose(p.components @ p.components.T, torch.eye(3, dtype=torch.float64), atol=1e-12)
    assert (p.explained_variance[:-1] >= p.explained_variance[1:]).all()
    # components agree up to the sign of each row
    assert np.allclose(np.abs(p.components.numpy() @ ref.components_.T), np.eye(3), atol=1e-10)
    assert np.allclose(p.explained_variance.numpy(), ref.explained_variance_, rtol=1e-10)
    assert p.noise_variance == pytest.approx(ref.noise_variance_, rel=1e-10)
    z = p.encode(x)
    assert np.allclose(np.abs(z.numpy()), np.abs(ref.transform(x.numpy())), atol=1e-10)
    assert np.allclose(p.decode(z).numpy(), ref.inverse_transform(ref.transform(x.numpy())), atol=1e-10)
    assert p.encode(x.float()).dtype == torch.float32
    with pytest.raises(AttributeError):
        p.mean = None  # frozen


def test_pca_full_rank_reconstructs_and_rejects_bad_input():
    x = _correlated(50, 4)
    p = M.pca(x, 4)
    assert torch.allclose(p.decode(p.encode(x)), x, atol=1e-10) and p.noise_variance == 0.0
    with pytest.raises(ValueError, match="n_components must be <= min"):
        M.pca(x, 5)
    with pytest.raises(ValueError, match="finite"):
        M.pca(torch.full((5, 2), float("nan")), 1)
    with pytest.raises(ValueError, match=r"x must have shape \(N, 4\)"):
        p.encode(torch.zeros(3, 2, dtype=torch.float64))


def test_kmeans_objective_never_increases_and_matches_sklearn_from_same_centres():
    x = _blobs(scale=1.5)
    for seed in range(4):
        init = M.kmeans_plus_plus(x, 3, generator=torch.Generator().manual_seed(seed))
        res = M.kmeans(x, 3, init=init)
        j = np.array(res.objective)
        assert (np.diff(j) <= 1e-9 * j[0]).all(), j
        assert res.converged
        ref = KMeans(3, init=init.numpy(), n_init=1, algorithm="lloyd", tol=0.0, max_iter=300).fit(x.numpy())
        assert j[-1] == pytest.approx(ref.inertia_, rel=1e-9)
        assert j[-1] == pytest.approx(M.kmeans_objective(x, res.centres, res.labels), rel=1e-12)
        assert (res.labels.numpy() == ref.labels_).mean() == 1.0  # same initial centres: same labels
        assert np.allclose(res.centres.numpy(), ref.cluster_centers_, atol=1e-9)


def test_kmeans_is_deterministic_unpacks_and_rejects_bad_input():
    x = _blobs()
    a, b = M.kmeans(x, 3, seed=5), M.kmeans(x, 3, seed=5)
    assert torch.equal(a.centres, b.centres) and a.objective == b.objective
    centres, labels, objective = a
    assert centres.shape == (3, 2) and labels.shape == (x.shape[0],) and labels.dtype == torch.int64
    assert objective is a.objective
    with pytest.raises(ValueError, match="larger than the number of points"):
        M.kmeans(x[:2], 3)
    with pytest.raises(ValueError, match="finite"):
        M.kmeans(torch.tensor([[0.0], [float("nan")]]), 1)
    with pytest.raises(ValueError, match=r"init must have shape \(3, 2\)"):
        M.kmeans(x, 3, init=x[:2])


def test_kmeans_plus_plus_picks_distinct_points_proportional_to_squared_distance():
    """Second centre: P(x_j) = D(x_j)^2 / sum D^2 given the first; checked by frequency on four points."""
    x = torch.tensor([[0.0], [1.0], [3.0], [7.0]], dtype=torch.float64)
    counts = torch.zeros(4)
    g = torch.Generator().manual_seed(0)
    n_first_zero = 0
    for _ in range(4000):
        c = M.kmeans_plus_plus(x, 2, generator=g)
        assert c[0, 0] != c[1, 0]
        if c[0, 0] == 0.0:
            n_first_zero += 1
            counts[int((x[:, 0] == c[1, 0]).nonzero())] += 1
    freq = counts / counts.sum()
    expected = torch.tensor([0.0, 1.0, 9.0, 49.0]) / 59.0
    assert torch.allclose(freq, expected, atol=0.04), freq  # ~1000 draws: 4 standard errors
    assert n_first_zero / 4000 == pytest.approx(0.25, abs=0.04)


def _random_gmm(k=3, d=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.rand(k, generator=g, dtype=torch.float64) + 0.2
    a = torch.randn(k, d, d, generator=g, dtype=torch.float64)
    cov = a @ a.transpose(1, 2) + 0.3 * torch.eye(d, dtype=torch.float64)
    return w / w.sum(), 3 * torch.randn(k, d, generator=g, dtype=torch.float64), cov


def test_gmm_log_prob_and_responsibilities_against_scipy():
    w, mu, cov = _random_gmm(4, 3)
    x = 4 * torch.randn(100, 3, dtype=torch.float64)
    dens = np.stack([w[k].item() * multivariate_normal(mu[k].numpy(), cov[k].numpy()).pdf(x.numpy())
                     for k in range(4)], 1)
    assert np.allclose(M.gmm_log_prob(x, w, mu, cov).numpy(), np.log(dens.sum(1)), atol=1e-10)
    assert np.allclose(M.gmm_responsibilities(x, w, mu, cov).numpy(), dens / dens.sum(1, keepdims=True),
                       atol=1e-10)
    far = torch.full((1, 3), 1e3, dtype=torch.float64)  # exp underflows; log-sum-exp does not
    assert torch.isfinite(M.gmm_log_prob(far, w, mu, cov)).all()
    assert torch.allclose(M.gmm_responsibilities(far, w, mu, cov).sum(1), torch.ones(1, dtype=torch.float64))


@pytest.mark.parametrize(
    "args, match",
    [
        ((torch.zeros(2, 2), [0.5, 0.5], torch.zeros(2, 2), torch.eye(2).expand(2, 2, 2).clone() * -1.0),
         "positive definite"),
        ((torch.zeros(2, 2), [0.5, 0.5], torch.zeros(2, 2), torch.tensor([[[1.0, 2.0], [0.0, 1.0]]] * 2)),
         "symmetric"),
        ((torch.zeros(2, 2), [0.7, 0.7], torch.zeros(2, 2), torch.eye(2).expand(2, 2, 2)), "sum to 1"),
        ((torch.full((2, 2), float("nan")), [0.5, 0.5], torch.zeros(2, 2), torch.eye(2).expand(2, 2, 2)),
         "finite"),
        ((torch.zeros(2, 2), [1.0], torch.zeros(2, 3), torch.eye(3)[None]), r"means must have shape \(K, 2\)"),
    ],
)
def test_gmm_log_prob_rejects_bad_input(args, match):
    with pytest.raises(ValueError, match=match):
        M.gmm_log_prob(*[torch.as_tensor(a, dtype=torch.float32) for a in args])


@pytest.mark.parametrize("fn", [M.gaussian_mixture_log_prob, M.gaussian_mixture_score])
@pytest.mark.parametrize("name", ["x", "means", "stds", "weights"])
def test_mixture_density_rejects_an_integer_tensor_by_name(fn, name):
    """An integer tensor is a mistake (e.g. ``torch.tensor([1, 2])`` for stds), not something to cast silently."""
    args = {"x": torch.zeros(3, 2), "means": torch.zeros(2, 2), "stds": torch.ones(2), "weights": torch.ones(2)}
    args[name] = args[name].long()
    with pytest.raises(TypeError, match=rf"^{name} must be a floating-point tensor"):
        fn(**args)


@pytest.mark.parametrize("fn", [M.gmm_log_prob, M.gmm_responsibilities])
@pytest.mark.parametrize("name", ["x", "weights", "means", "covariances"])
def test_gmm_rejects_an_integer_tensor_by_name(fn, name):
    args = {"x": torch.zeros(3, 2), "weights": torch.tensor([0.5, 0.5]), "means": torch.zeros(2, 2),
            "covariances": torch.eye(2).expand(2, 2, 2).clone()}
    args[name] = args[name].long() if name != "weights" else torch.tensor([1, 0])
    with pytest.raises(TypeError, match=rf"^{name} must be a floating-point tensor"):
        fn(**args)


@pytest.mark.parametrize("fn", [M.gmm_log_prob, M.gmm_responsibilities])
def test_gmm_weights_sum_is_checked_at_the_tolerance_of_their_own_dtype(fn):
    """float32 weights off 1 by round-off (3e-7 > float64's 1e-8, < float32's tolerance) are accepted; the same
    deviation in float64 is rejected, naming the weights."""
    _, mu, cov = _random_gmm(2, 2)
    x = torch.randn(5, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    w32 = torch.tensor([0.5, 0.5 + 3e-7], dtype=torch.float32)
    dev = float((w32.double().sum() - 1).abs())
    assert 1e-8 < dev < 1e-5, dev
    out = fn(x, w32, mu, cov)
    ref = fn(x, w32.double() / w32.double().sum(), mu, cov)
    assert torch.allclose(out, ref, atol=1e-5)
    g = torch.Generator().manual_seed(1)
    for _ in range(20):  # a float32 softmax is accepted, whatever its round-off
        w_soft = torch.softmax(3 * torch.randn(7, generator=g), 0)
        assert torch.isfinite(fn(x.float(), w_soft, torch.randn(7, 2, generator=g), torch.eye(2).expand(7, 2, 2))).all()
    with pytest.raises(ValueError, match=r"^weights must sum to 1"):
        fn(x, w32.double(), mu, cov)


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_em_log_likelihood_never_decreases_and_matches_sklearn(covariance_type):
    x = _blobs(scale=1.2, seed=1)
    w0, m0, c0 = M.initial_gmm(x, 3, seed=2, covariance_type=covariance_type)
    fit = M.fit_gmm(x, 3, seed=2, tol=1e-10, max_iter=500, covariance_type=covariance_type)
    ll = np.array(fit.log_likelihoods)
    assert (np.diff(ll) >= -1e-10).all(), np.diff(ll).min()
    assert fit.converged and fit.n_iter == len(ll) - 1
    assert ll[-1] == pytest.approx(float(fit.log_prob(x).mean()), abs=1e-9)
    prec = np.linalg.inv(c0.numpy()) if covariance_type == "full" else 1.0 / np.diagonal(c0.numpy(), 0, 1, 2)
    ref = GaussianMixture(3, covariance_type=covariance_type, weights_init=w0.numpy(), means_init=m0.numpy(),
                          precisions_init=prec, tol=1e-10, max_iter=500, reg_covar=1e-6).fit(x.numpy())
    test = _blobs(scale=1.2, seed=99)
    # the floors differ (sklearn adds reg_covar, ours raises eigenvalues to it): 1e-6-sized differences
    assert float(fit.log_prob(test).mean()) == pytest.approx(ref.score(test.numpy()), abs=1e-4)
    cost = ((fit.means.numpy()[:, None] - ref.means_[None]) ** 2).sum(-1)
    rows, cols = linear_sum_assignment(cost)
    assert np.allclose(fit.means.numpy()[rows], ref.means_[cols], atol=1e-3)
    assert np.allclose(fit.weights.numpy()[rows], ref.weights_[cols], atol=1e-4)
    ref_cov = ref.covariances_ if covariance_type == "full" else np.stack([np.diag(v) for v in ref.covariances_])
    assert np.allclose(fit.covariances.numpy()[rows], ref_cov[cols], atol=1e-3)


def test_em_is_deterministic_and_samples_have_the_fitted_moments():
    x = _blobs(seed=3)
    a, b = M.fit_gmm(x, 3, seed=4), M.fit_gmm(x, 3, seed=4)
    assert torch.equal(a.means, b.means) and a.log_likelihoods == b.log_likelihoods
    s = a.sample(40000, generator=torch.Generator().manual_seed(0))
    assert s.shape == (40000, 2) and s.dtype == torch.float64
    mean = (a.weights[:, None] * a.means).sum(0)
    second = (a.weights[:, None, None] * (a.covariances + a.means[:, :, None] * a.means[:, None, :])).sum(0)
    assert torch.allclose(s.mean(0), mean, atol=0.05)  # sd of the mean ~ 3.5 / 200 = 0.018
    assert torch.allclose(s.T @ s / len(s), second, rtol=0.03, atol=0.1)
    torch.manual_seed(0)
    assert a.sample(0).shape == (0, 2)


def test_covariance_floor_prevents_a_singular_component():
    """A component placed on a single point collapses onto it; the floor keeps its covariance >= reg_covar."""
    x = torch.cat([_blobs(n_per=60, centres=((0.0, 0.0),)), torch.tensor([[20.0, 20.0]], dtype=torch.float64)])
    init = torch.tensor([[0.0, 0.0], [20.0, 20.0]], dtype=torch.float64)
    fit = M.fit_gmm(x, 2, init_means=init, reg_covar=1e-3, max_iter=300)
    evals = torch.linalg.eigvalsh(fit.covariances)
    assert evals.min() >= 1e-3 * (1 - 1e-9)
    assert evals[1].max() == pytest.approx(1e-3, rel=1e-6)  # the lone point's component sits at the floor
    assert np.isfinite(fit.log_likelihoods).all() and (np.diff(fit.log_likelihoods) >= -1e-10).all()


def test_without_a_floor_the_likelihood_of_a_lone_point_component_is_unbounded():
    """As the floor eps shrinks 1000-fold, the lone point's component stays at eps I and the mean log-likelihood
    rises by (D/2) log(1000) / N each time (its term log w - (D/2) log(2 pi eps); the others do not change):
    it does not level off, so without a floor there is no maximum."""
    x = torch.cat([_blobs(n_per=60, centres=((0.0, 0.0), (4.0, 0.0))), torch.tensor([[20.0, 20.0]],
                                                                                   dtype=torch.float64)])
    init = torch.tensor([[0.0, 0.0], [4.0, 0.0], [20.0, 20.0]], dtype=torch.float64)
    lls = []
    for eps in (1e-3, 1e-6, 1e-9, 1e-12):
        fit = M.fit_gmm(x, 3, init_means=init, reg_covar=eps, max_iter=100)
        evals = torch.linalg.eigvalsh(fit.covariances[2])
        assert torch.allclose(evals, torch.full((2,), eps, dtype=torch.float64), rtol=1e-6), (eps, evals)
        lls.append(fit.log_likelihoods[-1])
    rise = np.diff(lls)
    assert np.allclose(rise, math.log(1e3) / x.shape[0], rtol=1e-6), rise


@pytest.mark.filterwarnings("ignore:Best performing initialization")
def test_bic_counts_parameters():
    x = _blobs()
    full, diag = M.fit_gmm(x, 3), M.fit_gmm(x, 3, covariance_type="diag")
    assert full.n_parameters() == 2 + 6 + 9 and diag.n_parameters() == 2 + 6 + 6
    ref = GaussianMixture(3, weights_init=full.weights.numpy(), means_init=full.means.numpy(),
                          precisions_init=np.linalg.inv(full.covariances.numpy()), max_iter=1).fit(x.numpy())
    ll = float(full.log_prob(x).sum())
    assert full.bic(x) == pytest.approx(-2 * ll + 17 * math.log(len(x)), rel=1e-12)
    assert full.bic(x) == pytest.approx(ref.bic(x.numpy()), rel=1e-4)


@pytest.mark.parametrize(
    "call, err, match",
    [
        (lambda: M.fit_gmm(torch.zeros(3, 2), 4), ValueError, "larger than the number of points"),
        (lambda: M.fit_gmm(torch.tensor([[0.0], [float("nan")]]), 1), ValueError, "finite"),
        (lambda: M.fit_gmm(torch.zeros(5, 2), 2, covariance_type="spherical"), ValueError, "covariance_type"),
        (lambda: M.fit_gmm(torch.zeros(5, 2), 2, reg_covar=0.0), ValueError, "reg_covar"),
        (lambda: M.fit_gmm(torch.zeros(5, 2), 2, init_means=torch.zeros(3, 2)), ValueError, "init_means"),
        (lambda: M.fit_gmm(torch.zeros(5, 2, dtype=torch.long), 2), TypeError, "floating"),
    ],
)
def test_fit_gmm_rejects_bad_input(call, err, match):
    with pytest.raises(err, match=match):
        call()


def _factor_data(n=600, seed=0, psi=(0.1, 0.2, 0.5, 1.0, 3.0, 0.3)):
    g = torch.Generator().manual_seed(seed)
    psi = torch.tensor(psi, dtype=torch.float64)
    w = torch.randn(len(psi), 2, generator=g, dtype=torch.float64)
    z = torch.randn(n, 2, generator=g, dtype=torch.float64)
    return z @ w.T + psi.sqrt() * torch.randn(n, len(psi), generator=g, dtype=torch.float64) + 1.0


def test_linear_gaussian_log_prob_matches_sklearn_pca_and_fa_scores():
    from sklearn.decomposition import FactorAnalysis

    x = _factor_data()
    sp = SkPCA(2).fit(x.numpy())
    w = torch.tensor(sp.components_.T * np.sqrt(sp.explained_variance_ - sp.noise_variance_))
    lp = M.linear_gaussian_log_prob(x, torch.tensor(sp.mean_), w, sp.noise_variance_)
    assert np.allclose(lp.numpy(), sp.score_samples(x.numpy()), atol=1e-10)
    fa = FactorAnalysis(2).fit(x.numpy())
    lp = M.linear_gaussian_log_prob(x, torch.tensor(fa.mean_), torch.tensor(fa.components_.T),
                                    torch.tensor(fa.noise_variance_))
    assert np.allclose(lp.numpy(), fa.score_samples(x.numpy()), atol=1e-10)
    with pytest.raises(ValueError, match="noise_variance must be > 0"):
        M.linear_gaussian_log_prob(x, torch.zeros(6), torch.zeros(6, 2), 0.0)


def test_fit_ppca_is_a_stationary_point_of_the_likelihood():
    """Autograd of torch.distributions' log-likelihood vanishes at the closed-form solution."""
    x = _factor_data(seed=1)
    fit = M.fit_ppca(x, 2)
    w = fit.loadings.clone().requires_grad_(True)
    log_s2 = fit.noise_variance[0].log().clone().requires_grad_(True)
    mu = fit.mean.clone().requires_grad_(True)
    cov = w @ w.T + log_s2.exp() * torch.eye(6, dtype=torch.float64)
    ll = torch.distributions.MultivariateNormal(mu, cov).log_prob(x).mean()
    assert float(ll.detach()) == pytest.approx(fit.log_likelihoods[0], abs=1e-10)
    for grad in torch.autograd.grad(ll, [w, log_s2, mu]):
        assert grad.abs().max() < 1e-8
    assert fit.log_likelihoods[0] >= SkPCA(2).fit(x.numpy()).score(x.numpy())  # sklearn's N-1 is not the ML
    with pytest.raises(ValueError, match="n_components must be <"):
        M.fit_ppca(x, 6)


def test_factor_analysis_em_is_monotone_and_reaches_sklearn_likelihood():
    from sklearn.decomposition import FactorAnalysis

    x = _factor_data(seed=2)
    fit = M.fit_factor_analysis(x, 2)
    ll = np.array(fit.log_likelihoods)
    assert (np.diff(ll) >= -1e-10).all() and ll[-1] > ll[0]
    assert ll[-1] == pytest.approx(float(fit.log_prob(x).mean()), abs=1e-10)
    ref = FactorAnalysis(2, tol=1e-10, max_iter=5000).fit(x.numpy())
    assert ll[-1] == pytest.approx(ref.score(x.numpy()), abs=1e-4)
    assert np.allclose(fit.noise_variance.numpy(), ref.noise_variance_, rtol=0.02, atol=1e-3)
    # W is identified up to a rotation: compare W W^T
    assert np.allclose((fit.loadings @ fit.loadings.T).numpy(), ref.components_.T @ ref.components_, atol=0.02)


def test_pca_and_factor_analysis_disagree_when_one_feature_is_noisy():
    """One shared factor loads equally on 5 features; feature 0 also carries large independent noise. PCA's
    first direction chases the noisy feature, factor analysis recovers the factor."""
    g = torch.Generator().manual_seed(0)
    n, d = 2000, 5
    w_true = torch.ones(d, dtype=torch.float64) / math.sqrt(d)
    psi = torch.tensor([9.0, 0.1, 0.1, 0.1, 0.1], dtype=torch.float64)
    x = torch.randn(n, 1, generator=g, dtype=torch.float64) * w_true + psi.sqrt() * torch.randn(
        n, d, generator=g, dtype=torch.float64)
    u_pca = M.pca(x, 1).components[0]
    fa = M.fit_factor_analysis(x, 1)
    u_fa = fa.loadings[:, 0] / fa.loadings[:, 0].norm()
    cos_pca, cos_fa = float((u_pca @ w_true).abs()), float((u_fa @ w_true).abs())
    assert cos_fa > 0.99 and cos_pca < 0.5, (cos_fa, cos_pca)
    assert fa.noise_variance[0] == pytest.approx(9.0, rel=0.1)
    # PPCA's one sigma^2 cannot absorb feature 0's noise: W = V_d (Lambda_d - sigma^2 I)^{1/2} is PCA's direction
    w_ppca = M.fit_ppca(x, 1).loadings[:, 0]
    u_ppca = w_ppca / w_ppca.norm()
    assert float((u_ppca @ u_pca).abs()) > 1 - 1e-9
    assert float((u_ppca @ w_true).abs()) < 0.5


# ---------------------------------------------------------------------------------------------------------------
# The chapter's identities, again: scatter decomposition, PCA's two views, the EM bound, the M-step's optimality,
# the covariance floor, k-means as the small-variance limit of EM, normalisation of the mixture density
# ---------------------------------------------------------------------------------------------------------------


def test_kmeans_objective_is_within_scatter_and_total_is_within_plus_between():
    x = _blobs(scale=1.3, seed=7)
    res = M.kmeans(x, 3, seed=0)
    n_k = torch.bincount(res.labels, minlength=3).double()
    means = torch.stack([x[res.labels == k].mean(0) for k in range(3)])
    assert torch.allclose(res.centres, means, atol=1e-12)  # at a fixed point the centres are the cluster means
    total = float(((x - x.mean(0)) ** 2).sum())
    between = float((n_k * ((means - x.mean(0)) ** 2).sum(1)).sum())
    pairwise = sum(float(torch.cdist(x[res.labels == k], x[res.labels == k]).pow(2).sum()) / (2 * float(n_k[k]))
                   for k in range(3))
    assert res.objective[-1] == pytest.approx(total - between, rel=1e-10)
    assert res.objective[-1] == pytest.approx(pairwise, rel=1e-9)


def test_pca_minimises_reconstruction_error_over_random_subspaces():
    x = _correlated(300, 6, seed=3)
    p = M.pca(x, 2)
    n = x.shape[0]
    lam, v = torch.linalg.eigh(torch.cov(x.T, correction=0))
    lam, v = lam.flip(0), v.flip(1)
    err_pca = float(((x - p.decode(p.encode(x))) ** 2).sum(1).mean())
    assert err_pca == pytest.approx(float(lam[2:].sum()), rel=1e-10)
    assert float(p.explained_variance.sum()) * (n - 1) / n == pytest.approx(float(lam[:2].sum()), rel=1e-10)
    g = torch.Generator().manual_seed(0)
    c = x - x.mean(0)
    for _ in range(100):
        u, _ = torch.linalg.qr(torch.randn(6, 2, generator=g, dtype=torch.float64))
        err = float(((c - c @ u @ u.T) ** 2).sum(1).mean())
        s = torch.cov(x.T, correction=0)
        assert err == pytest.approx(float(torch.trace(s) - torch.trace(u.T @ s @ u)), rel=1e-10)
        assert err >= err_pca - 1e-12
        # the proof's weights a_j = ||U^T v_j||^2: in [0, 1], summing to d = 2
        a = ((u.T @ v) ** 2).sum(0)
        assert float(a.min()) >= -1e-12 and float(a.max()) <= 1 + 1e-12 and float(a.sum()) == pytest.approx(2.0)
    # for PCA's U they are 1 on the top d = 2 eigenvectors and 0 on the others (the equality case)
    a_pca = ((p.components @ v) ** 2).sum(0)
    assert torch.allclose(a_pca, torch.tensor([1.0, 1, 0, 0, 0, 0], dtype=torch.float64), atol=1e-10)


def _log_joint_scipy(x, w, mu, cov):
    return np.stack([np.log(w[k]) + multivariate_normal(mu[k], cov[k]).logpdf(x) for k in range(len(w))], 1)


def test_em_bound_is_tight_at_the_posterior_and_its_gap_is_the_kl():
    x = _blobs(seed=8)
    w, mu, cov = _random_gmm(3, 2, seed=2)
    lj = _log_joint_scipy(x.numpy(), w.numpy(), mu.numpy(), cov.numpy())
    ll = float(M.gmm_log_prob(x, w, mu, cov).sum())
    r = M.gmm_responsibilities(x, w, mu, cov).numpy()
    assert float((r * (lj - np.log(r))).sum()) == pytest.approx(ll, abs=1e-8)
    q = torch.softmax(torch.randn(len(x), 3, dtype=torch.float64), 1).numpy()
    kl = float((q * (np.log(q) - np.log(r))).sum())
    assert kl > 0 and float((q * (lj - np.log(q))).sum()) + kl == pytest.approx(ll, abs=1e-8)


@pytest.mark.parametrize("covariance_type", ["full", "diag"])
def test_m_step_maximises_the_expected_complete_data_log_likelihood(covariance_type):
    x = _blobs(scale=1.5, seed=9)
    w, mu, cov = _random_gmm(3, 2, seed=4)
    r = M.gmm_responsibilities(x, w, mu, cov)
    w1, mu1, cov1 = M.gmm_m_step(x, r, covariance_type=covariance_type)
    assert torch.allclose(w1, r.mean(0)) and torch.allclose(mu1, (r.T @ x) / r.sum(0)[:, None])

    def q_value(w_, mu_, cov_):
        return float((r.numpy() * _log_joint_scipy(x.numpy(), w_.numpy(), mu_.numpy(), cov_.numpy())).sum())

    best = q_value(w1, mu1, cov1)
    g = torch.Generator().manual_seed(1)
    for _ in range(50):
        w_p = torch.softmax(w1.log() + 0.1 * torch.randn(3, generator=g, dtype=torch.float64), 0)
        mu_p = mu1 + 0.1 * torch.randn(3, 2, generator=g, dtype=torch.float64)
        if covariance_type == "full":
            a = torch.eye(2, dtype=torch.float64) + 0.1 * torch.randn(3, 2, 2, generator=g, dtype=torch.float64)
            cov_p = a @ cov1 @ a.transpose(1, 2)
        else:
            cov_p = cov1 * torch.exp(0.1 * torch.randn(3, 2, generator=g, dtype=torch.float64))[:, :, None]
        assert q_value(w_p, mu_p, cov_p) < best


def test_floored_covariance_is_the_constrained_maximiser():
    """max over Sigma >= eps I of -log|Sigma| - tr(Sigma^-1 S): S's eigenvalues raised to eps."""
    g = torch.Generator().manual_seed(5)
    eps = 0.1
    rot, _ = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))
    s = rot @ torch.diag(torch.tensor([1.0, 0.04, 0.0], dtype=torch.float64)) @ rot.T
    evals = torch.tensor([1.0, 0.04, 0.0], dtype=torch.float64)
    star = rot @ torch.diag(evals.clamp_min(eps)) @ rot.T

    def f(sig):
        return float(-torch.logdet(sig) - torch.trace(torch.linalg.solve(sig, s)))

    rivals = [s + eps * torch.eye(3, dtype=torch.float64)]
    for _ in range(500):
        b = 0.5 * torch.randn(3, 3, generator=g, dtype=torch.float64)
        rivals.append(eps * torch.eye(3, dtype=torch.float64) + b @ b.T)
    assert f(star) >= max(f(r) for r in rivals)
    # and gmm_m_step applies exactly this floor: the six points +-sqrt(3 s_i) u_i have covariance S
    u = rot * torch.sqrt(evals * 3)[None]
    x = torch.cat([u.T, -u.T])
    emp = torch.cov(x.T, correction=0)
    assert torch.allclose(emp, s, atol=1e-12)
    _, _, cov = M.gmm_m_step(x, torch.ones(len(x), 1, dtype=torch.float64), reg_covar=eps)
    ev, vec = torch.linalg.eigh(emp)
    assert torch.allclose(cov[0], vec @ torch.diag(ev.clamp_min(eps)) @ vec.T, atol=1e-12)
    assert torch.linalg.eigvalsh(cov[0]).min() >= eps * (1 - 1e-12)


def test_kmeans_is_the_small_variance_limit_of_em():
    x = _blobs(n_per=60, scale=1.2, seed=10)
    init = M.kmeans_plus_plus(x, 3, generator=torch.Generator().manual_seed(2))
    km = M.kmeans(x, 3, init=init)
    w = torch.full((3,), 1 / 3, dtype=torch.float64)
    cov = 1e-3 * torch.eye(2, dtype=torch.float64).expand(3, 2, 2)
    mu = init.clone()
    for _ in range(30):
        mu = M.gmm_m_step(x, M.gmm_responsibilities(x, w, mu, cov))[1]
    r = M.gmm_responsibilities(x, w, mu, cov)
    assert torch.allclose(mu, km.centres, atol=1e-10)
    assert torch.equal(r.argmax(1), km.labels) and float((r.max(1).values - 1).abs().max()) < 1e-10


def test_full_mixture_density_integrates_to_one():
    w, mu, cov = _random_gmm(3, 2, seed=6)
    h = 0.05
    axis = torch.arange(-18, 18, h, dtype=torch.float64)
    grid = torch.cartesian_prod(axis, axis)
    assert float(M.gmm_log_prob(grid, w, mu, cov).exp().sum()) * h**2 == pytest.approx(1.0, abs=1e-4)
