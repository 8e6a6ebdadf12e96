r"""Latent-variable models, clustering and Gaussian mixtures fitted by EM (chapter 02).

* :func:`pca` -> :class:`PCA` - principal components by an SVD of the centred data (Bishop 2006, sec. 12.1).
* :func:`linear_gaussian_log_prob`, :func:`fit_ppca`, :func:`fit_factor_analysis` -> :class:`LinearGaussianFit` -
  the linear-Gaussian latent models :math:`x = Wz + \mu + \varepsilon`: probabilistic PCA (isotropic noise, closed-form
  maximum likelihood; Tipping & Bishop 1999) and factor analysis (per-feature noise, fitted by EM; Rubin & Thayer
  1982), Bishop 2006, sec. 12.2.
* :func:`kmeans_plus_plus`, :func:`kmeans` -> :class:`KMeansResult` - k-means++ seeding (Arthur &
  Vassilvitskii 2007) and Lloyd's alternating algorithm (Lloyd 1982) for
  :math:`J = \sum_n \lVert x_n - \mu_{z_n} \rVert^2`.
* :func:`gmm_log_prob`, :func:`gmm_responsibilities`, :func:`gmm_m_step`, :func:`initial_gmm`,
  :func:`fit_gmm` -> :class:`GMMFit` - the Gaussian mixture density, the E-step by log-sum-exp, the closed-form
  M-step with a covariance floor, and EM (Dempster, Laird & Rubin 1977; Bishop 2006, sec. 9.2).

The module also holds a mixture whose log-density and score are known in closed form, used by later chapters to
check estimators against exact values: an isotropic Gaussian mixture, optionally convolved with Gaussian noise
of standard deviation :math:`\sigma`,

.. math::

    q_\sigma = \Big(\sum_k w_k \mathcal{N}(\mu_k, s_k^2 I)\Big) * \mathcal{N}(0, \sigma^2 I)
             = \sum_k w_k \mathcal{N}(\mu_k, (s_k^2 + \sigma^2) I),

because the sum of independent Gaussian variables is Gaussian with the variances added.

* :func:`gaussian_mixture_log_prob` - :math:`\log q_\sigma(x)` in nats, by log-sum-exp.
* :func:`gaussian_mixture_score` - the exact score :math:`\nabla_x \log q_\sigma(x)`, a
  responsibility-weighted average of the components' scores (chapter 09's reference score).

Conventions: points ``x`` are float (N, D), one per row; results are on ``x``'s device and in its dtype. The
isotropic-mixture functions compute in ``x``'s dtype; PCA, k-means and the GMM compute in float64 (EM's
log-likelihood differences are tiny near convergence) and return ``x``'s dtype. Log-densities are in nats.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from ._validate import (
    check_all_positive,
    check_choice,
    check_finite,
    check_floating,
    check_matrix,
    check_nonnegative_float,
    check_nonnegative_int,
    check_positive_float,
    check_positive_int,
    check_probability_vectors,
    check_shape,
    check_weights,
)

__all__ = [
    "gaussian_mixture_log_prob",
    "gaussian_mixture_score",
    "PCA",
    "pca",
    "LinearGaussianFit",
    "linear_gaussian_log_prob",
    "fit_ppca",
    "fit_factor_analysis",
    "squared_distances",
    "KMeansResult",
    "kmeans_objective",
    "kmeans_plus_plus",
    "kmeans",
    "gmm_log_prob",
    "gmm_responsibilities",
    "gmm_m_step",
    "initial_gmm",
    "GMMFit",
    "fit_gmm",
]


def _floating_if_tensor(name, v):
    """A tensor argument must be floating point (an integer tensor is a mistake); numbers and lists pass."""
    if isinstance(v, torch.Tensor):
        check_floating(name, v, finite=False)
    return v


def _mixture_args(x, means, stds, weights, sigma):
    """Validate the mixture; return ``(x, means (k, D), var (k,), weights (k,) normalised)`` in x's dtype."""
    x = check_matrix("x", x)
    for name, v in (("means", means), ("stds", stds), ("weights", weights)):
        _floating_if_tensor(name, v)
    means = torch.as_tensor(means, dtype=x.dtype, device=x.device)
    check_shape("means", means, ("k", x.shape[1]))
    k = means.shape[0]
    stds = torch.as_tensor(stds, dtype=x.dtype, device=x.device)
    stds = check_shape("stds", stds.expand(k) if stds.ndim == 0 else stds, (k,))
    weights = torch.as_tensor(weights, dtype=x.dtype, device=x.device) if weights is not None else \
        torch.full((k,), 1.0 / k, dtype=x.dtype, device=x.device)
    check_finite("means", means)
    check_weights("weights", check_shape("weights", weights, (k,)))
    check_all_positive("stds", stds)
    sigma = check_nonnegative_float("sigma", sigma)
    var = stds**2 + sigma**2  # (k,) variance of each component after adding the noise
    return x, means, var, weights / weights.sum()


def _mixture_log_terms(x, means, var, weights):
    """(N, k) log of w_k N(x_n; mu_k, var_k I)."""
    d = x.shape[1]
    sq = ((x[:, None, :] - means[None]) ** 2).sum(-1)  # (N, k)
    return torch.log(weights)[None] - 0.5 * sq / var[None] - 0.5 * d * torch.log(2 * math.pi * var)[None]


def gaussian_mixture_log_prob(x: torch.Tensor, means, stds, weights=None, sigma: float = 0.0) -> torch.Tensor:
    r"""Log-density of :math:`q_\sigma = \big(\sum_k w_k \mathcal{N}(\mu_k, s_k^2 I)\big) * \mathcal{N}(0, \sigma^2 I)
    = \sum_k w_k \mathcal{N}(\mu_k, (s_k^2 + \sigma^2) I)`.

    Args:
        x: (N, D) points. means: (k, D). stds: scalar or (k,) component standard deviations > 0.
        weights: (k,) non-negative (normalised here); default uniform. sigma: added noise std >= 0.

    Returns:
        (N,) log-densities in nats, same dtype/device as ``x``.

    Raises:
        TypeError: ``x`` not a floating-point tensor, or ``means`` / ``stds`` / ``weights`` given as an integer
            (or boolean) tensor.
        ValueError: means not of shape (k, D), non-finite values, stds <= 0, negative weights or weights
            summing to 0, or sigma < 0.
    """
    x, means, var, w = _mixture_args(x, means, stds, weights, sigma)
    return torch.logsumexp(_mixture_log_terms(x, means, var, w), dim=1)


def gaussian_mixture_score(x: torch.Tensor, means, stds, weights=None, sigma: float = 0.0) -> torch.Tensor:
    r"""Exact score :math:`\nabla_x \log q_\sigma(x)` of the mixture of :func:`gaussian_mixture_log_prob`:

    .. math::

        \nabla_x \log q_\sigma(x) = \sum_k r_k(x)\, \frac{\mu_k - x}{s_k^2 + \sigma^2}, \qquad
        r_k(x) = \frac{w_k \mathcal{N}(x; \mu_k, (s_k^2 + \sigma^2) I)}{q_\sigma(x)}

    (the responsibilities :math:`r_k` computed with log-sum-exp, so the score is finite far from every mode).

    Args:
        as :func:`gaussian_mixture_log_prob`.

    Returns:
        (N, D) tensor, same dtype/device as ``x``, units 1 / (units of x).

    Raises:
        TypeError / ValueError: as :func:`gaussian_mixture_log_prob`.
    """
    x, means, var, w = _mixture_args(x, means, stds, weights, sigma)
    r = torch.softmax(_mixture_log_terms(x, means, var, w), dim=1)  # (N, k)
    return ((r / var[None])[:, :, None] * (means[None] - x[:, None, :])).sum(1)


# ----------------------------------------------------------------------------------------------------
# PCA
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PCA:
    r"""A fitted principal component analysis (returned by :func:`pca`).

    Attributes:
        mean: (D,) the data mean :math:`\bar x`.
        components: (d, D) orthonormal rows :math:`u_1, \dots, u_d` (d, the latent dimension), sorted by
            decreasing variance; the sign of each row is fixed so that its entry of largest magnitude is positive.
        explained_variance: (d,) the variance of the data along each component, :math:`u_i^\top S u_i`, with the
            sample covariance :math:`S = \frac{1}{N-1} \sum_n (x_n - \bar x)(x_n - \bar x)^\top` (as scikit-learn).
        noise_variance: the mean of the :math:`D - d` discarded eigenvalues of :math:`S` (0.0 when d = D or
            d >= N - 1); the maximum-likelihood noise variance of probabilistic PCA (Tipping & Bishop 1999)
            up to the factor (N - 1) / N of the covariance's normalisation.
        n_samples: N, the number of points fitted.
    """

    mean: torch.Tensor
    components: torch.Tensor
    explained_variance: torch.Tensor
    noise_variance: float = 0.0
    n_samples: int = 0

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        r"""Coordinates :math:`z = U (x - \bar x)` of ``x`` (N, D) in the principal subspace: (N, d).

        Raises:
            TypeError / ValueError: if ``x`` is not a finite float (N, D) tensor with this D.
        """
        x = check_matrix("x", x, self.mean.shape[0], min_rows=0)
        return (x - self.mean.to(x)) @ self.components.to(x).T

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        r"""Reconstructions :math:`\hat x = \bar x + U^\top z` of codes ``z`` (N, d): (N, D).

        Raises:
            TypeError / ValueError: if ``z`` is not a finite float (N, d) tensor with this d.
        """
        z = check_matrix("z", z, self.components.shape[0], min_rows=0)
        return z @ self.components.to(z) + self.mean.to(z)


def pca(x: torch.Tensor, n_components: int) -> PCA:
    r"""Principal component analysis by a thin SVD of the centred data (Bishop 2006, sec. 12.1).

    With :math:`X_c = X - \mathbf{1}\bar x^\top = U \Sigma V^\top`, the sample covariance is
    :math:`S = X_c^\top X_c / (N-1) = V \frac{\Sigma^2}{N-1} V^\top`, so its eigenvectors are the right singular
    vectors and its eigenvalues :math:`\sigma_i^2 / (N-1)`. The first ``n_components`` of them span the subspace of
    maximum variance, which is also the subspace of minimum squared reconstruction error.

    Args:
        x: (N, D) float data, N >= 2.
        n_components: the latent dimension d, 1 <= d <= min(N, D).

    Returns:
        A frozen :class:`PCA` with tensors in ``x``'s dtype and on its device (computed in float64).

    Raises:
        TypeError / ValueError: for a bad ``x`` (not float (N, D), N < 2, NaN/Inf) or d out of range.
    """
    x = check_matrix("x", x, min_rows=2)
    n, d = x.shape
    k = check_positive_int("n_components", n_components)
    if k > min(n, d):
        raise ValueError(f"n_components must be <= min(N, D) = {min(n, d)}, got {k}")
    x64 = x.to(torch.float64)
    mean = x64.mean(0)
    _, s, vh = torch.linalg.svd(x64 - mean, full_matrices=False)
    eig = s**2 / (n - 1)  # (min(N, D),) eigenvalues of S, decreasing
    comps = vh[:k]
    sign = torch.sign(comps.gather(1, comps.abs().argmax(1, keepdim=True)))
    comps = comps * sign
    rest = eig[k:]
    # the eigenvalues beyond min(N, D) are zero: average over all D - k discarded directions
    noise = float(rest.sum() / (d - k)) if d > k else 0.0
    return PCA(mean=mean.to(x.dtype), components=comps.to(x.dtype), explained_variance=eig[:k].to(x.dtype),
               noise_variance=noise, n_samples=n)


# ----------------------------------------------------------------------------------------------------
# Linear-Gaussian latent models: probabilistic PCA and factor analysis
# ----------------------------------------------------------------------------------------------------


@dataclass
class LinearGaussianFit:
    r"""A linear-Gaussian latent model :math:`z \sim \mathcal{N}(0, I_d)`, :math:`x \mid z \sim \mathcal{N}(Wz + \mu,
    \Psi)` with diagonal :math:`\Psi`, so that :math:`x \sim \mathcal{N}(\mu, WW^\top + \Psi)`.

    Attributes:
        mean: (D,) :math:`\mu`. loadings: (D, d) :math:`W`. noise_variance: (D,) the diagonal of :math:`\Psi`
            (all equal for probabilistic PCA). log_likelihoods: mean log-likelihood per point in nats after each
            EM iteration (factor analysis; one value for the closed-form PPCA fit).
    """

    mean: torch.Tensor
    loadings: torch.Tensor
    noise_variance: torch.Tensor
    log_likelihoods: list = field(default_factory=list)

    def covariance(self) -> torch.Tensor:
        r"""(D, D) the marginal covariance :math:`WW^\top + \Psi`."""
        return self.loadings @ self.loadings.T + torch.diag(self.noise_variance)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """(N,) marginal log-densities of ``x`` (N, D) in nats (see :func:`linear_gaussian_log_prob`)."""
        return linear_gaussian_log_prob(x, self.mean, self.loadings, self.noise_variance)


def linear_gaussian_log_prob(x: torch.Tensor, mean, loadings, noise_variance) -> torch.Tensor:
    r"""Marginal log-density :math:`\log \mathcal{N}(x; \mu, WW^\top + \Psi)` of probabilistic PCA / factor analysis
    (Bishop 2006, sec. 12.2), in float64 by a Cholesky factor.

    Args:
        x: (N, D) float. mean: (D,). loadings: (D, d) :math:`W`. noise_variance: scalar (PPCA) or (D,) > 0.

    Returns:
        (N,) log-densities in nats, ``x``'s dtype.

    Raises:
        TypeError / ValueError: bad shapes, NaN, or a non-positive noise variance.
    """
    x = check_matrix("x", x, min_rows=0)
    d = x.shape[1]
    mean = check_floating("mean", torch.as_tensor(mean)).to(device=x.device, dtype=torch.float64)
    check_shape("mean", mean, (d,))
    w = check_floating("loadings", torch.as_tensor(loadings)).to(device=x.device, dtype=torch.float64)
    check_shape("loadings", w, (d, None))
    psi = torch.as_tensor(noise_variance).to(device=x.device, dtype=torch.float64)
    psi = check_all_positive("noise_variance", psi.expand(d) if psi.ndim == 0 else psi)
    check_shape("noise_variance", psi, (d,))
    cov = w @ w.T + torch.diag(psi)
    one = torch.ones(1, dtype=torch.float64, device=x.device)
    return gmm_log_prob(x, one, mean[None], cov[None])


def fit_ppca(x: torch.Tensor, n_components: int) -> LinearGaussianFit:
    r"""Maximum-likelihood probabilistic PCA in closed form (Tipping & Bishop 1999):
    :math:`W = U_d (\Lambda_d - \sigma^2 I)^{1/2}` and :math:`\sigma^2 = \frac{1}{D-d} \sum_{i > d} \lambda_i`, with
    :math:`\lambda_i, U` the eigenvalues and eigenvectors of the sample covariance :math:`S = \frac1N \sum_n (x_n -
    \bar x)(x_n - \bar x)^\top` (the 1/N of maximum likelihood) and the rotation ambiguity fixed to the identity.

    Args:
        x: (N, D) float data. n_components: the latent dimension d, 1 <= d < D and d < N - 1.

    Returns:
        :class:`LinearGaussianFit` in float64 with equal noise variances and ``log_likelihoods = [mean LL]``.

    Raises:
        TypeError / ValueError: a bad ``x`` or d out of range.
    """
    x = check_matrix("x", x, min_rows=2)
    n, d = x.shape
    k = check_positive_int("n_components", n_components)
    if not k < min(d, n - 1):
        raise ValueError(f"n_components must be < min(D, N - 1) = {min(d, n - 1)} for probabilistic PCA, got {k}")
    p = pca(x.to(torch.float64), k)
    scale = (n - 1) / n  # from the unbiased to the maximum-likelihood covariance
    sigma2 = p.noise_variance * scale
    lam = p.explained_variance * scale
    w = p.components.T * (lam - sigma2).clamp_min(0.0).sqrt()[None]
    fit = LinearGaussianFit(p.mean, w, torch.full((d,), sigma2, dtype=torch.float64, device=x.device))
    fit.log_likelihoods.append(float(fit.log_prob(x).mean()))
    return fit


def fit_factor_analysis(x: torch.Tensor, n_components: int, *, max_iter: int = 5000, tol: float = 1e-9,
                        noise_floor: float = 1e-6) -> LinearGaussianFit:
    r"""Factor analysis by EM (Rubin & Thayer 1982; Bishop 2006, sec. 12.2.4), vectorised, in float64.

    With centred data :math:`\tilde x_n`, the E-step gives the Gaussian posterior of each :math:`z_n`:
    :math:`G = (I + W^\top \Psi^{-1} W)^{-1}`, :math:`\mathbb{E}[z_n] = G W^\top \Psi^{-1} \tilde x_n`,
    :math:`\mathbb{E}[z_n z_n^\top] = G + \mathbb{E}[z_n]\mathbb{E}[z_n]^\top`; the M-step maximises the expected
    complete-data log-likelihood: :math:`W = \big(\sum_n \tilde x_n \mathbb{E}[z_n]^\top\big)\big(\sum_n
    \mathbb{E}[z_n z_n^\top]\big)^{-1}` and :math:`\Psi = \operatorname{diag}\big(S - \frac1N W \sum_n
    \mathbb{E}[z_n] \tilde x_n^\top\big)`, each entry at least ``noise_floor``. Started from the PPCA solution
    (:func:`fit_ppca`); stops when the mean log-likelihood rises by less than ``tol`` nats.

    Args:
        x: (N, D) float data. n_components: the latent dimension d, 1 <= d < min(D, N - 1).
        max_iter: >= 0. tol: >= 0 nats per point. noise_floor: > 0, the smallest noise variance.

    Returns:
        :class:`LinearGaussianFit` in float64; ``log_likelihoods[t]`` after t iterations, non-decreasing.

    Raises:
        TypeError / ValueError: a bad ``x``, d out of range, or bad iteration settings.
    """
    fit = fit_ppca(x, n_components)
    max_iter = check_nonnegative_int("max_iter", max_iter)
    tol = check_nonnegative_float("tol", tol)
    floor = check_positive_float("noise_floor", noise_floor)
    xc = x.to(torch.float64) - fit.mean
    n, k = xc.shape[0], n_components
    s_diag = (xc**2).mean(0)
    w, psi = fit.loadings, fit.noise_variance.clamp_min(floor)
    zero = torch.zeros(1, x.shape[1], dtype=torch.float64, device=xc.device)

    def mean_ll(w, psi):  # the validated linear_gaussian_log_prob without its checks, once per iteration
        chol = torch.linalg.cholesky(w @ w.T + torch.diag(psi))
        return float(_log_joint(xc, zero[:, 0], zero, chol[None]).mean())

    lls = [mean_ll(w, psi)]
    eye = torch.eye(k, dtype=torch.float64, device=xc.device)
    for _ in range(max_iter):
        wp = w / psi[:, None]  # Psi^{-1} W, (D, k)
        g = torch.linalg.inv(eye + w.T @ wp)
        ez = xc @ wp @ g  # (N, k), rows E[z_n]
        a = xc.T @ ez  # (D, k) sum_n x_n E[z_n]^T
        w = torch.linalg.solve(n * g + ez.T @ ez, a.T).T  # a (sum E[z z^T])^{-1}; the matrix is symmetric
        psi = (s_diag - (w * a).sum(1) / n).clamp_min(floor)
        lls.append(mean_ll(w, psi))
        if lls[-1] - lls[-2] < tol:
            break
    return LinearGaussianFit(fit.mean, w, psi, lls)


# ----------------------------------------------------------------------------------------------------
# k-means
# ----------------------------------------------------------------------------------------------------


def squared_distances(x: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    r"""All squared Euclidean distances :math:`\lVert x_n - \mu_k \rVert^2`, (N, K), computed in float64.

    Uses :math:`\lVert x \rVert^2 - 2 x^\top \mu + \lVert \mu \rVert^2` (one matrix product, no (N, K, D)
    tensor) clamped at 0 against round-off.

    Args:
        x: (N, D) float points. centres: (K, D) float.

    Returns:
        (N, K) float64 tensor on ``x``'s device.

    Raises:
        TypeError / ValueError: for non-float, non-finite or mismatched shapes.
    """
    x = check_matrix("x", x, min_rows=0).to(torch.float64)
    c = check_matrix("centres", centres, x.shape[1]).to(device=x.device, dtype=torch.float64)
    return ((x**2).sum(1, keepdim=True) - 2 * x @ c.T + (c**2).sum(1)[None]).clamp_min(0.0)


@dataclass(frozen=True)
class KMeansResult:
    """What :func:`kmeans` returns; unpacks as ``centres, labels, objective = kmeans(x, k)``.

    Attributes:
        centres: (k, D) final centres, ``x``'s dtype. labels: (N,) int64, the nearest centre of each point.
        objective: list of floats, :math:`J` after 0, 1, 2, ... iterations (``objective[0]``: the initial centres
            with their nearest-centre assignment); non-increasing. ``objective[-1]`` is J of the result.
        converged: True when the last iteration changed no assignment (a fixed point of Lloyd's algorithm).
    """

    centres: torch.Tensor
    labels: torch.Tensor
    objective: list
    converged: bool = False

    def __iter__(self):
        return iter((self.centres, self.labels, self.objective))


def kmeans_objective(x: torch.Tensor, centres: torch.Tensor, labels: torch.Tensor) -> float:
    r"""The k-means objective :math:`J = \sum_n \lVert x_n - \mu_{z_n} \rVert^2` (a sum, as sklearn's inertia).

    Args:
        x: (N, D) float. centres: (K, D) float. labels: (N,) integer in 0..K-1.

    Returns:
        J as a python float (computed in float64).

    Raises:
        TypeError / ValueError: for bad shapes, NaN, or labels out of range.
    """
    x = check_matrix("x", x).to(torch.float64)
    c = check_matrix("centres", centres, x.shape[1]).to(device=x.device, dtype=torch.float64)
    if not isinstance(labels, torch.Tensor) or labels.is_floating_point():
        raise TypeError(f"labels must be an integer tensor of shape ({x.shape[0]},), got {labels!r:.60}")
    if labels.shape != (x.shape[0],):
        raise ValueError(f"labels must have shape ({x.shape[0]},), one per row of x, got {tuple(labels.shape)}")
    if int(labels.min()) < 0 or int(labels.max()) >= c.shape[0]:
        raise ValueError(f"labels must lie in 0..{c.shape[0] - 1}")
    return float(((x - c[labels.to(x.device)]) ** 2).sum())


def _check_k(name: str, k, n: int) -> int:
    k = check_positive_int(name, k)
    if k > n:
        raise ValueError(f"{name} = {k} is larger than the number of points N = {n}; choose {name} <= N")
    return k


def kmeans_plus_plus(x: torch.Tensor, k: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
    r"""k-means++ seeding (Arthur & Vassilvitskii 2007): the first centre is a uniformly chosen point;
    each next centre is a point drawn with probability proportional to :math:`D(x)^2`, its squared distance to
    the nearest centre chosen so far. The expected J of the seeding alone is within :math:`8(\ln k + 2)` of the
    optimum (their main theorem).

    Args:
        x: (N, D) float points. k: number of centres, 1 <= k <= N. generator: a CPU ``torch.Generator``
            (``None``: the global RNG).

    Returns:
        (k, D) centres (rows of ``x``), ``x``'s dtype and device.

    Raises:
        TypeError / ValueError: for a bad ``x`` or k out of range.
    """
    x = check_matrix("x", x)
    k = _check_k("k", k, x.shape[0])
    idx = [int(torch.randint(x.shape[0], (1,), generator=generator))]
    d2 = squared_distances(x, x[idx]).squeeze(1).cpu()
    for _ in range(1, k):
        if float(d2.sum()) <= 0:  # every point already is a centre: pick any remaining point
            probs = torch.ones_like(d2)
            probs[idx] = 0
        else:
            probs = d2
        j = int(torch.multinomial(probs, 1, generator=generator))
        idx.append(j)
        d2 = torch.minimum(d2, squared_distances(x, x[j:j + 1]).squeeze(1).cpu())
    return x[idx].clone()


def _init_centres(x, k, init, seed):
    if init is None or (isinstance(init, str) and init == "k-means++"):
        return kmeans_plus_plus(x, k, generator=torch.Generator().manual_seed(seed))
    if isinstance(init, str):
        check_choice("init", init, ("k-means++", "random"))
        perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))[:k]
        return x[perm.to(x.device)].clone()
    init = check_matrix("init", init, x.shape[1])
    check_shape("init", init, (k, x.shape[1]))
    return init.to(x)


def kmeans(x: torch.Tensor, k: int, *, init=None, seed: int = 0, max_iter: int = 100) -> KMeansResult:
    r"""Lloyd's algorithm (Lloyd 1982) for :math:`J(z, \mu) = \sum_n \lVert x_n - \mu_{z_n} \rVert^2`.

    Alternates the two exact coordinate minimisations: assign each point to its nearest centre (minimises J over
    z for fixed :math:`\mu`), then move each centre to the mean of its points (minimises J over :math:`\mu` for
    fixed z). Each step cannot increase J, so ``objective`` is non-increasing; the loop stops when no assignment
    changes (a fixed point) or after ``max_iter`` iterations. A centre that loses all its points stays where it
    is (J still cannot increase). Vectorised over points; computed in float64.

    Args:
        x: (N, D) float points.
        k: number of clusters, 1 <= k <= N.
        init: ``None`` or ``"k-means++"`` (:func:`kmeans_plus_plus` seeded with ``seed``), ``"random"`` (k distinct
            points), or a (k, D) tensor of initial centres.
        seed: seed of the initialisation (deterministic: the same seed gives the same result).
        max_iter: the largest number of iterations, >= 0.

    Returns:
        :class:`KMeansResult` ``(centres (k, D), labels (N,) int64, objective list)``.

    Raises:
        TypeError / ValueError: for a bad ``x`` (NaN, wrong shape), k > N, a bad ``init`` or ``max_iter``.
    """
    x = check_matrix("x", x)
    k = _check_k("k", k, x.shape[0])
    max_iter = check_nonnegative_int("max_iter", max_iter)
    x64 = x.to(torch.float64)
    c = _init_centres(x, k, init, check_nonnegative_int("seed", seed)).to(torch.float64)
    d2 = squared_distances(x64, c)
    labels = d2.argmin(1)
    objective, converged = [float(d2.gather(1, labels[:, None]).sum())], False
    for _ in range(max_iter):
        onehot = torch.nn.functional.one_hot(labels, k).to(torch.float64)  # (N, k)
        counts = onehot.sum(0)
        sums = onehot.T @ x64
        c = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1)[:, None], c)
        d2 = squared_distances(x64, c)
        new = d2.argmin(1)
        # keep the old label on ties so a fixed point is recognised
        keep = d2.gather(1, labels[:, None]).squeeze(1) <= d2.gather(1, new[:, None]).squeeze(1)
        new = torch.where(keep, labels, new)
        objective.append(float(d2.gather(1, new[:, None]).sum()))
        converged = not bool((new != labels).any())
        labels = new
        if converged:
            break
    return KMeansResult(c.to(x.dtype), labels, objective, converged)


# ----------------------------------------------------------------------------------------------------
# Gaussian mixtures and EM
# ----------------------------------------------------------------------------------------------------


def _gmm_params(x, weights, means, covariances):
    """Validate a full-covariance mixture; return float64 ``(x, weights, means, cholesky factors)``."""
    x = check_matrix("x", x, min_rows=0).to(torch.float64)
    d = x.shape[1]
    means = check_floating("means", torch.as_tensor(means))
    check_shape("means", means, ("K", d))
    k = means.shape[0]
    weights = check_floating("weights", torch.as_tensor(weights))
    check_shape("weights", weights, (k,))
    check_probability_vectors(weights=weights)  # in the weights' own dtype: its tolerance, before any upcast
    covariances = check_floating("covariances", torch.as_tensor(covariances))
    check_shape("covariances", covariances, (k, d, d))
    cov = covariances.to(device=x.device, dtype=torch.float64)
    asym = float((cov - cov.transpose(1, 2)).abs().max()) if cov.numel() else 0.0
    if asym > 1e-6 * max(1.0, float(cov.abs().max())):
        raise ValueError(f"covariances must be symmetric; max |S - S^T| = {asym:.3g}")
    chol, info = torch.linalg.cholesky_ex(0.5 * (cov + cov.transpose(1, 2)))
    if bool((info > 0).any()):
        bad = torch.nonzero(info > 0).flatten().tolist()
        raise ValueError(f"covariances must be positive definite; components {bad} are not (a singular component:"
                         " raise reg_covar or drop it)")
    return x, weights.to(x), means.to(x), chol


def _log_joint(x, log_w, means, chol):
    r"""(N, K) float64 :math:`\log w_k + \log \mathcal{N}(x_n; \mu_k, L_k L_k^\top)`."""
    d = x.shape[1]
    diff = (x[None] - means[:, None]).transpose(1, 2)  # (K, D, N)
    sol = torch.linalg.solve_triangular(chol, diff, upper=False)  # L^{-1} (x - mu)
    maha = (sol**2).sum(1)  # (K, N)
    logdet = 2 * torch.log(torch.diagonal(chol, dim1=1, dim2=2)).sum(1)  # (K,)
    return (log_w[:, None] - 0.5 * (d * math.log(2 * math.pi) + logdet[:, None] + maha)).T


def gmm_log_prob(x: torch.Tensor, weights, means, covariances) -> torch.Tensor:
    r"""Log-density of a Gaussian mixture :math:`\log p(x) = \log \sum_k w_k \mathcal{N}(x; \mu_k, \Sigma_k)`,
    by log-sum-exp over the components (Bishop 2006, sec. 9.2), computed in float64 with Cholesky factors.

    Args:
        x: (N, D) float points. weights: (K,) probabilities summing to 1 within the tolerance of their own
            dtype (:data:`coursekit._validate.PROBABILITY_SUM_ATOL`, 1e-8 for float64). means: (K, D).
        covariances: (K, D, D) symmetric positive definite.

    Returns:
        (N,) log-densities in nats, ``x``'s dtype and device.

    Raises:
        TypeError / ValueError: wrong shapes, NaN/Inf, weights not a probability vector, or a covariance that is
            not symmetric positive definite.
    """
    x0 = x
    x, w, mu, chol = _gmm_params(x, weights, means, covariances)
    return torch.logsumexp(_log_joint(x, torch.log(w), mu, chol), dim=1).to(x0.dtype)


def gmm_responsibilities(x: torch.Tensor, weights, means, covariances) -> torch.Tensor:
    r"""The E-step: posterior probabilities :math:`r_{nk} = p(z_n = k \mid x_n)
    = \frac{w_k \mathcal{N}(x_n; \mu_k, \Sigma_k)}{\sum_j w_j \mathcal{N}(x_n; \mu_j, \Sigma_j)}` (Bayes' rule;
    Bishop 2006, sec. 9.2), computed as :math:`\exp(\ell_{nk} - \operatorname{logsumexp}_j \ell_{nj})`.

    Args:
        as :func:`gmm_log_prob`.

    Returns:
        (N, K) rows summing to 1, ``x``'s dtype and device.

    Raises:
        as :func:`gmm_log_prob`.
    """
    x0 = x
    x, w, mu, chol = _gmm_params(x, weights, means, covariances)
    return torch.softmax(_log_joint(x, torch.log(w), mu, chol), dim=1).to(x0.dtype)


def _floor_covariances(cov, reg, covariance_type):
    if covariance_type == "diag":
        return torch.diag_embed(torch.diagonal(cov, dim1=1, dim2=2).clamp_min(reg))
    evals, evecs = torch.linalg.eigh(0.5 * (cov + cov.transpose(1, 2)))
    return (evecs * evals.clamp_min(reg)[:, None, :]) @ evecs.transpose(1, 2)


def gmm_m_step(x: torch.Tensor, resp: torch.Tensor, *, covariance_type: str = "full", reg_covar: float = 1e-6):
    r"""The closed-form M-step (Bishop 2006, sec. 9.2.2), with a covariance floor.

    With :math:`N_k = \sum_n r_{nk}`: :math:`w_k = N_k / N`, :math:`\mu_k = \frac{1}{N_k} \sum_n r_{nk} x_n`,
    :math:`S_k = \frac{1}{N_k} \sum_n r_{nk} (x_n - \mu_k)(x_n - \mu_k)^\top`. The covariance returned is the
    maximiser of the expected complete-data log-likelihood over :math:`\{\Sigma : \Sigma \succeq \epsilon I\}`
    (:math:`\epsilon` = ``reg_covar``): :math:`S_k` with its eigenvalues below :math:`\epsilon` raised to
    :math:`\epsilon` (``"diag"``: the diagonal of :math:`S_k`, each entry at least :math:`\epsilon`). So EM stays
    an exact coordinate ascent and the likelihood stays bounded (no singular components).

    Args:
        x: (N, D) float points. resp: (N, K) non-negative rows summing to 1.
        covariance_type: ``"full"`` or ``"diag"``. reg_covar: the floor :math:`\epsilon > 0`.

    Returns:
        ``(weights (K,), means (K, D), covariances (K, D, D))`` in float64 on ``x``'s device. A component with
        :math:`N_k = 0` keeps a zero weight, a zero mean and the covariance :math:`\epsilon I`.

    Raises:
        TypeError / ValueError: bad shapes, NaN, rows of ``resp`` not summing to 1, bad covariance_type or floor.
    """
    x = check_matrix("x", x).to(torch.float64)
    resp = check_floating("resp", resp)
    check_shape("resp", resp, (x.shape[0], "K"))
    check_probability_vectors(resp=resp)  # in resp's own dtype, whose round-off sets the tolerance
    resp = resp.to(x)
    check_choice("covariance_type", covariance_type, ("full", "diag"))
    reg = check_positive_float("reg_covar", reg_covar)
    nk = resp.sum(0)  # (K,)
    safe = nk.clamp_min(torch.finfo(torch.float64).tiny)
    means = (resp.T @ x) / safe[:, None]
    diff = x[None] - means[:, None]  # (K, N, D)
    if covariance_type == "diag":
        cov = torch.diag_embed(torch.einsum("nk,knd->kd", resp, diff**2) / safe[:, None])
    else:
        cov = torch.einsum("nk,knd,kne->kde", resp, diff, diff) / safe[:, None, None]
    return nk / x.shape[0], means, _floor_covariances(cov, reg, covariance_type)


def initial_gmm(x: torch.Tensor, n_components: int, *, init_means=None, seed: int = 0,
                covariance_type: str = "full", reg_covar: float = 1e-6):
    r"""The starting point of :func:`fit_gmm`: equal weights :math:`1/K`, the means ``init_means`` (default: the
    centres of :func:`kmeans` from k-means++ with ``seed``), and every covariance the data's covariance (its
    diagonal for ``"diag"``), floored at ``reg_covar``. Hand the same values to another EM implementation to
    start both from the same place.

    Returns:
        ``(weights (K,), means (K, D), covariances (K, D, D))`` float64 on ``x``'s device.

    Raises:
        TypeError / ValueError: bad ``x``, K > N, ``init_means`` not (K, D), bad covariance_type or floor.
    """
    x = check_matrix("x", x, min_rows=2)
    k = _check_k("n_components", n_components, x.shape[0])
    check_choice("covariance_type", covariance_type, ("full", "diag"))
    reg = check_positive_float("reg_covar", reg_covar)
    if init_means is None:
        means = kmeans(x, k, seed=check_nonnegative_int("seed", seed)).centres
    else:
        means = check_matrix("init_means", init_means, x.shape[1])
        check_shape("init_means", means, (k, x.shape[1]))
    x64 = x.to(torch.float64)
    cov = torch.cov(x64.T, correction=0).reshape(x.shape[1], x.shape[1])
    cov = _floor_covariances(cov.expand(k, -1, -1).clone(), reg, covariance_type)
    weights = torch.full((k,), 1.0 / k, dtype=torch.float64, device=x.device)
    return weights, means.to(x64), cov


@dataclass
class GMMFit:
    r"""A Gaussian mixture fitted by :func:`fit_gmm`.

    Attributes:
        weights: (K,) mixture weights. means: (K, D). covariances: (K, D, D) (diagonal for ``"diag"``), each with
            eigenvalues >= ``reg_covar``. All in the fitted data's dtype.
        log_likelihoods: list of floats, the mean log-likelihood per point in nats,
            :math:`\frac1N \sum_n \log p_\theta(x_n)`, after 0, 1, 2, ... EM iterations (``[0]``: the initial
            parameters); non-decreasing up to round-off.
        converged: True if the last increase was below ``tol``.
        covariance_type: ``"full"`` or ``"diag"``.
    """

    weights: torch.Tensor
    means: torch.Tensor
    covariances: torch.Tensor
    log_likelihoods: list = field(default_factory=list)
    converged: bool = False
    covariance_type: str = "full"

    @property
    def n_iter(self) -> int:
        """The number of EM iterations run."""
        return len(self.log_likelihoods) - 1

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """(N,) log-densities of ``x`` (N, D) in nats, ``x``'s dtype (see :func:`gmm_log_prob`)."""
        return gmm_log_prob(x, self.weights, self.means, self.covariances)

    def responsibilities(self, x: torch.Tensor) -> torch.Tensor:
        """(N, K) posterior component probabilities of ``x`` (see :func:`gmm_responsibilities`)."""
        return gmm_responsibilities(x, self.weights, self.means, self.covariances)

    def n_parameters(self) -> int:
        """Free parameters: K - 1 weights, K D means, K D (diag) or K D (D + 1) / 2 (full) covariance entries."""
        k, d = self.means.shape
        cov = k * d if self.covariance_type == "diag" else k * d * (d + 1) // 2
        return (k - 1) + k * d + cov

    def bic(self, x: torch.Tensor) -> float:
        r"""Bayesian information criterion :math:`-2 \sum_n \log p(x_n) + P \ln N` (lower is better; Schwarz 1978)."""
        x = check_matrix("x", x)
        return float(-2 * self.log_prob(x).to(torch.float64).sum() + self.n_parameters() * math.log(x.shape[0]))

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        r"""Ancestral sampling: :math:`z \sim \mathrm{Cat}(w)`, then :math:`x = \mu_z + L_z \varepsilon` with
        :math:`\Sigma_z = L_z L_z^\top` and :math:`\varepsilon \sim \mathcal{N}(0, I)`.

        Args:
            n: number of samples >= 0. generator: a CPU ``torch.Generator`` (``None``: the global RNG).

        Returns:
            (n, D) samples, the parameters' dtype and device.
        """
        n = check_nonnegative_int("n", n)
        d = self.means.shape[1]
        w = self.weights.to("cpu", torch.float64)
        z = torch.multinomial(w, n, replacement=True, generator=generator) if n else torch.zeros(0, dtype=torch.long)
        eps = torch.randn(n, d, generator=generator, dtype=torch.float64)
        chol = torch.linalg.cholesky(self.covariances.to("cpu", torch.float64))
        x = self.means.to("cpu", torch.float64)[z] + (chol[z] @ eps[:, :, None]).squeeze(-1)
        return x.to(device=self.means.device, dtype=self.means.dtype)


def fit_gmm(x: torch.Tensor, n_components: int, *, init_means=None, seed: int = 0, max_iter: int = 200,
            tol: float = 1e-6, covariance_type: str = "full", reg_covar: float = 1e-6) -> GMMFit:
    r"""Fit a Gaussian mixture by EM (Dempster, Laird & Rubin 1977; Bishop 2006, sec. 9.2.2), vectorised over
    points, in float64.

    Starting from :func:`initial_gmm`, each iteration runs the M-step (:func:`gmm_m_step`, with the covariance
    floor ``reg_covar``) on the responsibilities of the current parameters, then the E-step by log-sum-exp
    (:func:`gmm_responsibilities`), which also gives the new mean log-likelihood. EM is coordinate ascent on a
    lower bound that the E-step makes tight, so the log-likelihood never decreases. It stops when an iteration
    raises the mean log-likelihood by less than ``tol`` nats, or after ``max_iter`` iterations.

    Args:
        x: (N, D) float data, N >= 2.
        n_components: K, 1 <= K <= N.
        init_means: optional (K, D) initial means (default: k-means++ then k-means, seeded with ``seed``).
        seed: seed of the default initialisation (the fit is deterministic given it).
        max_iter: the largest number of EM iterations, >= 0. tol: stopping threshold in nats per point, >= 0.
        covariance_type: ``"full"`` or ``"diag"``. reg_covar: the covariance floor :math:`\epsilon > 0`.

    Returns:
        :class:`GMMFit` (parameters in ``x``'s dtype and on its device).

    Raises:
        TypeError / ValueError: a bad ``x`` (NaN, wrong shape), K > N, bad ``init_means``, iteration counts,
            tolerances or ``covariance_type``.
    """
    x = check_matrix("x", x, min_rows=2)
    max_iter = check_nonnegative_int("max_iter", max_iter)
    tol = check_nonnegative_float("tol", tol)
    w, mu, cov = initial_gmm(x, n_components, init_means=init_means, seed=seed, covariance_type=covariance_type,
                             reg_covar=reg_covar)
    x64 = x.to(torch.float64)

    def e_step(w, mu, cov):
        log_joint = _log_joint(x64, torch.log(w), mu, torch.linalg.cholesky(cov))
        log_px = torch.logsumexp(log_joint, dim=1, keepdim=True)
        return torch.exp(log_joint - log_px), float(log_px.mean())

    resp, ll = e_step(w, mu, cov)
    lls, converged = [ll], False
    for _ in range(max_iter):
        w, mu, cov = gmm_m_step(x64, resp, covariance_type=covariance_type, reg_covar=reg_covar)
        resp, ll = e_step(w, mu, cov)
        lls.append(ll)
        if lls[-1] - lls[-2] < tol:
            converged = True
            break
    return GMMFit(weights=w.to(x.dtype), means=mu.to(x.dtype), covariances=cov.to(x.dtype), log_likelihoods=lls,
                  converged=converged, covariance_type=covariance_type)
