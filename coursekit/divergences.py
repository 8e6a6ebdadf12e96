r"""Probability and information (chapter 01): entropies, divergences, Gaussians and maximum likelihood.

* Discrete distributions along the last dimension (nats): :func:`entropy`, :func:`cross_entropy`,
  :func:`kl_divergence`, :func:`kl_from_log_probs`, :func:`js_divergence`, :func:`total_variation`,
  :func:`hellinger`, :func:`wasserstein1_grid` (on a sorted 1-D support); joint tables of shape
  ``(..., K, L)``: :func:`conditional_entropy`, :func:`mutual_information`.
* Gaussians: :func:`gaussian_kl` (diagonal, the regulariser of chapter 04's VAE), :func:`gaussian_entropy`,
  :func:`gaussian_hellinger`, :func:`gaussian_log_prob` (full covariance), the maximum-likelihood estimate
  :func:`gaussian_mle`, the trainable :class:`GaussianModel` (reparameterised sampling ``x = mu + L eps``),
  and the generative classifier :class:`GaussianClassifier` (Gaussian class-conditionals and Bayes' rule).
* Monte Carlo: :func:`monte_carlo_mean` (estimate and standard error).

The f-divergences, their variational bounds and the Wasserstein-1 distance between samples are chapter 07's
(:mod:`coursekit.wasserstein`); their old names here still work.

Derivation (one coordinate; the diagonal case sums over coordinates because both
densities factorise). With :math:`q = \mathcal N(\mu_q, v_q)`, :math:`p = \mathcal N(\mu_p, v_p)`
and :math:`\log \mathcal N(z; \mu, v) = -\tfrac12\log 2\pi - \tfrac12 \log v - (z-\mu)^2 / 2v`:

.. math::

    \mathbb E_q[\log q(z)] &= -\tfrac12 \log 2\pi - \tfrac12 \log v_q - \tfrac12
        &&(\mathbb E_q[(z-\mu_q)^2] = v_q)\\
    \mathbb E_q[\log p(z)] &= -\tfrac12 \log 2\pi - \tfrac12 \log v_p
        - \frac{v_q + (\mu_q-\mu_p)^2}{2 v_p}
        &&(\mathbb E_q[(z-\mu_p)^2] = v_q + (\mu_q-\mu_p)^2)\\
    \mathrm{KL}(q\,\|\,p) &= \tfrac12\Big[\log v_p - \log v_q
        + \frac{v_q + (\mu_q-\mu_p)^2}{v_p} - 1\Big].

With :math:`p = \mathcal N(0, 1)` this is
:math:`-\tfrac12 (1 + \log v_q - \mu_q^2 - v_q)`, i.e. Kingma & Welling (2014),
appendix B, eq. (10) (which states :math:`-\mathrm{KL}`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ._compat import moved_names
from ._validate import (
    PROBABILITY_SUM_ATOL,
    check_broadcastable,
    check_class_labels,
    check_finite,
    check_floating,
    check_log_values,
    check_matrix,
    check_nonnegative_float,
    check_positive_int,
    check_probability_vectors,
)

__all__ = [
    "gaussian_kl", "kl_divergence", "js_divergence", "total_variation", "PROBABILITY_SUM_ATOL",
    "entropy", "cross_entropy", "kl_from_log_probs", "hellinger", "wasserstein1_grid",
    "conditional_entropy", "mutual_information",
    "gaussian_entropy", "gaussian_hellinger", "gaussian_log_prob", "gaussian_mle", "GaussianModel",
    "GaussianClassifier", "fit_gaussian_classifier", "monte_carlo_mean",
]

# Chapter 07 material that used to live here; `coursekit.divergences.<name>` still finds it in its new module.
__getattr__ = moved_names(__name__, {
    "FDivergence": "coursekit.wasserstein",
    "F_DIVERGENCES": "coursekit.wasserstein",
    "f_divergence": "coursekit.wasserstein",
    "f_variational_bound": "coursekit.wasserstein",
    "wasserstein1_1d": "coursekit.wasserstein",
})


def _check_diagonal_gaussian_args(**args: torch.Tensor) -> None:
    """Means and log-variances of diagonal Gaussians: finite float tensors, >= 1-d, broadcastable."""
    for name, t in args.items():
        check_finite(name, t)
        if not t.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
        if t.ndim == 0:
            raise ValueError(
                f"{name} must have at least one dimension (the last one is summed over), got a scalar"
            )
    check_broadcastable(**args)


def gaussian_kl(
    mu_q: torch.Tensor,
    logvar_q: torch.Tensor,
    mu_p: torch.Tensor | None = None,
    logvar_p: torch.Tensor | None = None,
    *,
    validate_args: bool = True,
) -> torch.Tensor:
    r"""KL( N(mu_q, diag exp(logvar_q)) || N(mu_p, diag exp(logvar_p)) ), summed over the last dim.

    .. math::

        \mathrm{KL}(q\|p) = \tfrac12 \sum_j \Big[\ell^p_j - \ell^q_j
            + e^{\ell^q_j - \ell^p_j} + (\mu^q_j - \mu^p_j)^2 e^{-\ell^p_j} - 1\Big],
        \qquad \ell = \log \sigma^2 .

    For ``p = N(0, I)`` (the default) this reduces to
    ``-0.5 * sum(1 + logvar_q - mu_q**2 - exp(logvar_q))``: Kingma & Welling (2014),
    *Auto-Encoding Variational Bayes*, appendix B, eq. (10). The derivation is in
    the module docstring.

    Args:
        mu_q, logvar_q: mean and **log-variance** (not log standard deviation) of
            q, float tensors of shape ``(..., d)``.
        mu_p, logvar_p: mean and log-variance of p, or ``None`` for 0 (standard
            normal). Any shapes that broadcast with ``mu_q`` / ``logvar_q``.
        validate_args: check the arguments (as ``torch.distributions`` does); a caller that has already
            checked them, e.g. inside a training step, passes ``False`` to skip the reads from the device.

    Returns:
        Tensor of the broadcast batch shape ``(...)`` (last dim summed out), in
        nats, same dtype/device as the inputs. Always >= 0 up to rounding.

    Raises:
        TypeError: an argument is not a floating-point tensor.
        ValueError: an argument is 0-dimensional, contains NaN/Inf, or the shapes
            do not broadcast.
    """
    args = {"mu_q": mu_q, "logvar_q": logvar_q}
    if mu_p is not None:
        args["mu_p"] = mu_p
    if logvar_p is not None:
        args["logvar_p"] = logvar_p
    if validate_args:
        _check_diagonal_gaussian_args(**args)

    if mu_p is None:
        mu_p = torch.zeros((), dtype=mu_q.dtype, device=mu_q.device)
    if logvar_p is None:
        logvar_p = torch.zeros((), dtype=logvar_q.dtype, device=logvar_q.device)

    # exp(l_q - l_p) and exp(-l_p) rather than var_q / var_p: no overflow/underflow
    # of the individual variances when both log-variances are large.
    per_dim = (
        logvar_p
        - logvar_q
        + torch.exp(logvar_q - logvar_p)
        + (mu_q - mu_p).pow(2) * torch.exp(-logvar_p)
        - 1.0
    )
    return 0.5 * per_dim.sum(dim=-1)


# ---- discrete distributions (chapter 01; JS is the divergence of chapter 06's GAN) ----
#
# Derivations. For probability vectors p, q on K outcomes (entries >= 0, summing to 1):
#
#   KL(p || q) = sum_k p_k log(p_k / q_k)            (nats; 0 log(0/q) = 0 by continuity, x log x -> 0;
#                                                     p_k > 0 = q_k gives +inf: q cannot explain p_k)
#   JSD(p, q)  = 1/2 KL(p || m) + 1/2 KL(q || m),  m = (p + q) / 2.
#
# JSD is finite: m_k >= p_k / 2, so log(p_k / m_k) <= log 2 and JSD <= 1/2 log 2 + 1/2 log 2 = log 2,
# with equality iff p and q have disjoint supports; JSD >= 0 (Gibbs' inequality, equality iff p = q).
# Lin (1991), "Divergence measures based on the Shannon entropy", IEEE Trans. Inf. Theory 37(1)
# (there with weights 1/2); Goodfellow et al. (2014), Sec. 4.1 (Theorem 1), use the same definition.


def kl_divergence(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    r"""KL(p || q) = sum_k p_k log(p_k / q_k) of probability vectors along the last dim, in nats.

    Conventions: ``0 log(0 / q) = 0`` (including q = 0); ``p_k > 0 = q_k`` gives ``+inf``.
    Computed as ``xlogy(p, p) - xlogy(p, q)``, which implements both conventions exactly.

    Args:
        p, q: float tensors of shape ``(..., K)`` (broadcastable), entries >= 0, each vector summing to 1
            within :data:`PROBABILITY_SUM_ATOL` (1e-8 for float64).

    Returns:
        Tensor of the broadcast batch shape ``(...)``, nats, >= 0 (negative rounding is clamped to 0),
        possibly ``inf``.

    Raises:
        TypeError: not a floating-point tensor. ValueError: NaN/Inf, negative entries, sums != 1,
        0-d input, shapes that do not broadcast.

    Reference: Kullback & Leibler (1951), "On information and sufficiency".
    """
    check_probability_vectors(p=p, q=q)
    kl = (torch.xlogy(p, p) - torch.xlogy(p, q)).sum(dim=-1)
    return kl.clamp(min=0.0)


def js_divergence(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    r"""Jensen-Shannon divergence of probability vectors along the last dim, in nats.

    .. math::

        \mathrm{JSD}(p, q) = \tfrac12 \mathrm{KL}(p \,\|\, m) + \tfrac12 \mathrm{KL}(q \,\|\, m),
        \qquad m = \tfrac12 (p + q),

    with ``0 log 0 = 0``. Always finite, in ``[0, log 2]``: 0 iff ``p == q``, ``log 2`` iff the supports are
    disjoint. Note that :func:`scipy.spatial.distance.jensenshannon` returns the *square root* of this
    (the Jensen-Shannon distance, natural log by default).

    Goodfellow et al. (2014), "Generative Adversarial Nets", Theorem 1: the GAN value at the optimal
    discriminator is ``-log 4 + 2 JSD(p_data, p_model)``. Lin (1991) (definition and bounds).

    Args:
        p, q: float tensors of shape ``(..., K)`` (broadcastable), entries >= 0, each vector summing to 1
            within :data:`PROBABILITY_SUM_ATOL` (1e-8 for float64).

    Returns:
        Tensor of the broadcast batch shape ``(...)``, nats, clamped to ``[0, log 2]`` against rounding.

    Raises:
        TypeError / ValueError: as :func:`kl_divergence`.
    """
    check_probability_vectors(p=p, q=q)
    m = 0.5 * (p + q)
    # m_k > 0 wherever p_k > 0 or q_k > 0, so no term is infinite; xlogy(0, 0) = 0.
    jsd = 0.5 * (torch.xlogy(p, p) - torch.xlogy(p, m)).sum(dim=-1) \
        + 0.5 * (torch.xlogy(q, q) - torch.xlogy(q, m)).sum(dim=-1)
    return jsd.clamp(min=0.0, max=math.log(2.0))


def total_variation(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    r"""Total variation distance ``1/2 sum_k |p_k - q_k|`` of probability vectors (last dim), in [0, 1].

    Args / Raises: as :func:`kl_divergence`. Returns a tensor of the broadcast batch shape ``(...)``.
    """
    check_probability_vectors(p=p, q=q)
    return 0.5 * (p - q).abs().sum(dim=-1)


# ---- entropies and more divergences of discrete distributions (chapter 01) ----
#
# With 0 log 0 = 0 (the limit of x log x as x -> 0+), for probability vectors p, q on K outcomes:
#   H(p) = -sum_k p_k log p_k in [0, log K];  H(p, q) = -sum_k p_k log q_k = H(p) + KL(p || q)  (Shannon 1948);
#   Hellinger: Hel^2(p, q) = 1/2 sum_k (sqrt p_k - sqrt q_k)^2 = 1 - BC(p, q), BC = sum_k sqrt(p_k q_k) in [0, 1].


def entropy(p: torch.Tensor) -> torch.Tensor:
    r"""Shannon entropy :math:`H(p) = -\sum_k p_k \log p_k` of probability vectors along the last dim, in nats.

    Convention ``0 log 0 = 0`` (computed as ``-xlogy(p, p)``). ``H(p) = 0`` for a point mass and ``log K`` for the
    uniform distribution on K outcomes, its maximum. Divide by ``log 2`` for bits. Shannon (1948).

    Args:
        p: float tensor of shape ``(..., K)``, entries >= 0, each vector summing to 1 (tolerance as
            :func:`kl_divergence`).

    Returns:
        Tensor of shape ``(...)``, nats, in ``[0, log K]`` (negative rounding clamped to 0).

    Raises:
        TypeError: not a floating-point tensor. ValueError: NaN/Inf, negative entries, sums != 1, 0-d input.
    """
    check_probability_vectors(p=p)
    return (0.0 - torch.xlogy(p, p).sum(dim=-1)).clamp(min=0.0)  # 0.0 - x: a point mass gives +0.0, not -0.0


def cross_entropy(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    r"""Cross-entropy :math:`H(p, q) = -\sum_k p_k \log q_k = H(p) + \mathrm{KL}(p \,\|\, q)`, in nats.

    ``0 log q = 0`` for every q (also q = 0); ``p_k > 0 = q_k`` gives ``+inf``. ``H(p, q) >= H(p)`` with equality
    iff ``p == q`` (Gibbs' inequality). The classification loss ``F.cross_entropy(logits, y)`` is this with ``p``
    a one-hot vector and ``q = softmax(logits)``.

    Args:
        p, q: float tensors of shape ``(..., K)`` (broadcastable), probability vectors along the last dim.

    Returns:
        Tensor of the broadcast batch shape ``(...)``, nats, possibly ``inf``.

    Raises:
        TypeError / ValueError: as :func:`kl_divergence`.
    """
    check_probability_vectors(p=p, q=q)
    return -torch.xlogy(p, q).sum(dim=-1)


def kl_from_log_probs(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    r"""KL(p || q) of discrete distributions given by their **log**-probabilities along the last dim, in nats.

    :math:`\sum_{k: p_k > 0} p_k (\log p_k - \log q_k)`: entries with ``log_p = -inf`` contribute 0, a finite
    ``log_p`` where ``log_q = -inf`` gives ``+inf``. Working in the log domain keeps tails that underflow as
    probabilities (e.g. a Gaussian discretised on a wide grid, normalised with ``torch.log_softmax``) and is
    differentiable in both arguments. Same value as :func:`kl_divergence` on ``exp(log_p), exp(log_q)``.

    Args:
        log_p, log_q: float tensors of shape ``(..., K)`` (broadcastable), no NaN or ``+inf``, each vector
            normalised: ``|logsumexp - 0| <= 1e-6`` (float64) or ``1e-4`` (other dtypes).

    Returns:
        Tensor of the broadcast batch shape ``(...)``, nats, >= 0 (negative rounding clamped), possibly ``inf``.

    Raises:
        TypeError: not a floating-point tensor. ValueError: NaN or +inf, 0-d input, not normalised, shapes that
        do not broadcast.
    """
    for name, t in (("log_p", log_p), ("log_q", log_q)):
        check_log_values(name, t)
        if t.ndim == 0 or t.shape[-1] == 0:
            raise ValueError(f"{name} must have shape (..., K) with K >= 1, got shape {tuple(t.shape)}")
        atol = 1e-6 if t.dtype == torch.float64 else PROBABILITY_SUM_ATOL
        err = float(torch.logsumexp(t.detach(), dim=-1).abs().max())
        if not err <= atol:
            raise ValueError(f"{name} must be normalised log-probabilities (logsumexp over the last dim = 0 "
                             f"within {atol:g}), the largest |logsumexp| is {err:.3g}; use torch.log_softmax")
    check_broadcastable(log_p=log_p, log_q=log_q)
    p = log_p.exp()
    # where p = 0 the difference may be -inf - (-inf) = NaN: masked out (its gradient is 0 there)
    diff = torch.where(p > 0, log_p - log_q, torch.zeros((), dtype=p.dtype, device=p.device))
    return (p * diff).sum(dim=-1).clamp(min=0.0)


def hellinger(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    r"""Hellinger distance :math:`\mathrm{Hel}(p, q) = \big(\tfrac12 \sum_k (\sqrt{p_k} - \sqrt{q_k})^2\big)^{1/2}`.

    In [0, 1]. Written Hel, not H, so that it is not confused with the cross-entropy :math:`H(p, q)`. A metric on
    distributions (the Euclidean distance of the vectors ``sqrt(p)``, ``sqrt(q)`` divided by ``sqrt 2``);
    :math:`\mathrm{Hel}^2 = 1 - \mathrm{BC}(p, q)` with the Bhattacharyya coefficient
    :math:`\mathrm{BC} = \sum_k \sqrt{p_k q_k}`. 0 iff ``p == q``, 1 iff the supports are disjoint. Bounds:
    :math:`\mathrm{Hel}^2 \le \mathrm{TV} \le \mathrm{Hel}\sqrt{2 - \mathrm{Hel}^2} \le \sqrt2\, \mathrm{Hel}` and
    :math:`\mathrm{KL}(p\|q) \ge -2 \log(1 - \mathrm{Hel}^2) \ge 2 \mathrm{Hel}^2`.
    Conventions differ: some texts drop the 1/2 (then the maximum is sqrt 2) or call the square the distance.

    Args:
        p, q: float tensors of shape ``(..., K)`` (broadcastable), probability vectors along the last dim.

    Returns:
        Tensor of the broadcast batch shape ``(...)``, dimensionless, in ``[0, 1]``.

    Raises:
        TypeError / ValueError: as :func:`kl_divergence`.
    """
    check_probability_vectors(p=p, q=q)
    h2 = 0.5 * (p.sqrt() - q.sqrt()).pow(2).sum(dim=-1)
    return h2.clamp(0.0, 1.0).sqrt()


def wasserstein1_grid(p: torch.Tensor, q: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
    r"""Wasserstein-1 distance of two discrete distributions on the same sorted 1-D support points.

    .. math::

        W_1(p, q) = \int \lvert F_p(s) - F_q(s) \rvert\, ds
        = \sum_{k=1}^{K-1} \Big\lvert \sum_{j \le k} (p_j - q_j) \Big\rvert\, (x_{k+1} - x_k),

    where :math:`F` are the distribution functions, which are constant between support points (Vallender 1974;
    Villani 2009, the one-dimensional case). It equals
    ``scipy.stats.wasserstein_distance(support, support, p, q)``. For a distribution and its translate by a
    multiple of the grid step, :math:`W_1` is the length of the translation.

    Args:
        p, q: float tensors of shape ``(..., K)`` (broadcastable), probability vectors along the last dim.
        support: float tensor of shape ``(K,)``, strictly increasing, finite: the points ``x_k``.

    Returns:
        Tensor of the broadcast batch shape ``(...)``, in the units of ``support``, >= 0.

    Raises:
        TypeError / ValueError: as :func:`kl_divergence`; also if ``support`` is not a strictly increasing
        ``(K,)`` tensor matching the last dim of ``p`` and ``q``.
    """
    check_probability_vectors(p=p, q=q)
    check_floating("support", support)
    if support.ndim != 1 or support.shape[0] != p.shape[-1] or support.shape[0] != q.shape[-1]:
        raise ValueError(f"support must have shape (K,) with K = {p.shape[-1]} (the last dim of p and q), got "
                         f"{tuple(support.shape)}")
    steps = support[1:] - support[:-1]
    if bool((steps <= 0).any()):
        raise ValueError("support must be strictly increasing (sorted, no repeated points)")
    cdf_gap = torch.cumsum(p - q, dim=-1)[..., :-1]
    return (cdf_gap.abs() * steps.to(cdf_gap.dtype)).sum(dim=-1)


def _check_joint(joint: torch.Tensor) -> torch.Tensor:
    """A joint probability table of shape (..., K, L) summing to 1 over its last two dims; returns it flattened."""
    if not isinstance(joint, torch.Tensor):
        raise TypeError(f"joint must be a torch.Tensor of probabilities, got {type(joint).__name__}")
    if joint.ndim < 2 or joint.shape[-1] == 0 or joint.shape[-2] == 0:
        raise ValueError(f"joint must be a table of shape (..., K, L) with K, L >= 1 (rows index x, columns y), "
                         f"got shape {tuple(joint.shape)}")
    flat = joint.reshape(*joint.shape[:-2], -1)
    check_probability_vectors(**{"joint (flattened over its last two dims)": flat})
    return flat


def conditional_entropy(joint: torch.Tensor) -> torch.Tensor:
    r"""Conditional entropy :math:`H(Y \mid X) = -\sum_{x,y} p(x, y) \log p(y \mid x) = H(X, Y) - H(X)`, in nats.

    Rows of the table index ``x`` (dim -2), columns index ``y`` (dim -1). ``0 log 0 = 0``; rows with
    ``p(x) = 0`` contribute nothing. :math:`0 \le H(Y \mid X) \le H(Y)` (conditioning does not increase entropy),
    with :math:`H(Y \mid X) = 0` iff y is a function of x. Shannon (1948).

    Args:
        joint: float tensor of shape ``(..., K, L)``, entries >= 0 summing to 1 over the last two dims.

    Returns:
        Tensor of shape ``(...)``, nats, >= 0.

    Raises:
        TypeError: not a floating-point tensor. ValueError: fewer than 2 dims, NaN/Inf, negative entries, a table
        not summing to 1.
    """
    _check_joint(joint)
    p_x = joint.sum(dim=-1)
    h_xy = -torch.xlogy(joint, joint).sum(dim=(-2, -1))
    h_x = -torch.xlogy(p_x, p_x).sum(dim=-1)
    return (h_xy - h_x).clamp(min=0.0)


def mutual_information(joint: torch.Tensor) -> torch.Tensor:
    r"""Mutual information :math:`I(X; Y) = \mathrm{KL}\big(p(x, y) \,\|\, p(x)\,p(y)\big)` of a joint table, in nats.

    .. math::

        I(X; Y) = \sum_{x, y} p(x, y) \log \frac{p(x, y)}{p(x)\, p(y)} = H(Y) - H(Y \mid X) = H(X) + H(Y) - H(X, Y),

    with ``0 log 0 = 0``; a cell with ``p(x, y) > 0`` has ``p(x) p(y) > 0``, so the value is finite. 0 iff X and Y
    are independent; at most ``min(H(X), H(Y))``. Rows index ``x`` (dim -2), columns index ``y`` (dim -1).
    Shannon (1948); Cover & Thomas, *Elements of Information Theory* (2006), ch. 2.

    Args:
        joint: float tensor of shape ``(..., K, L)``, entries >= 0 summing to 1 over the last two dims.

    Returns:
        Tensor of shape ``(...)``, nats, >= 0 (negative rounding clamped).

    Raises:
        TypeError / ValueError: as :func:`conditional_entropy`.
    """
    _check_joint(joint)
    product = joint.sum(dim=-1, keepdim=True) * joint.sum(dim=-2, keepdim=True)
    mi = (torch.xlogy(joint, joint) - torch.xlogy(joint, product)).sum(dim=(-2, -1))
    return mi.clamp(min=0.0)


# ---- Gaussians (chapter 01) ----


def gaussian_entropy(logvar: torch.Tensor) -> torch.Tensor:
    r"""Differential entropy of a diagonal Gaussian :math:`\mathcal N(\mu, \operatorname{diag} \sigma^2)`, in nats.

    .. math::

        h = \tfrac12 \sum_j \big(\log(2\pi e) + \log\sigma_j^2\big) = \tfrac12 \log\det(2\pi e\, \Sigma).

    One coordinate: :math:`-\mathbb E[\log \mathcal N(x; \mu, \sigma^2)] = \tfrac12 \log 2\pi\sigma^2 +
    \mathbb E[(x-\mu)^2] / 2\sigma^2 = \tfrac12 \log 2\pi e \sigma^2`. Independent of the mean; negative when
    :math:`\sigma^2 < 1/(2\pi e)`. A full covariance has the entropy of the diagonal Gaussian of its
    eigenvalues (a rotation has unit Jacobian). Shannon (1948).

    Args:
        logvar: float tensor ``(..., d)`` of log-variances (not log standard deviations).

    Returns:
        Tensor of shape ``(...)``, nats (can be negative), same dtype/device.

    Raises:
        TypeError: not a floating-point tensor. ValueError: 0-d input, NaN/Inf.
    """
    _check_diagonal_gaussian_args(logvar=logvar)
    return 0.5 * (math.log(2 * math.pi * math.e) + logvar).sum(dim=-1)


def gaussian_hellinger(
    mu_p: torch.Tensor, logvar_p: torch.Tensor, mu_q: torch.Tensor, logvar_q: torch.Tensor
) -> torch.Tensor:
    r"""Hellinger distance between two diagonal Gaussians, in [0, 1], with :math:`\mathrm{Hel}^2 = 1 - \mathrm{BC}`.

    The Bhattacharyya coefficient :math:`\mathrm{BC} = \int \sqrt{p(x) q(x)}\, dx` factorises over coordinates,
    and for one coordinate (complete the square in the exponent, then use the Gaussian integral)

    .. math::

        \mathrm{BC}_j = \sqrt{\frac{2 \sigma_{p} \sigma_{q}}{\sigma_{p}^2 + \sigma_{q}^2}}
            \exp\Big(-\frac{(\mu_{p} - \mu_{q})^2}{4 (\sigma_{p}^2 + \sigma_{q}^2)}\Big).

    Computed in the log domain, ``H = sqrt(-expm1(sum_j log BC_j))``. Same convention as :func:`hellinger`.

    Args:
        mu_p, logvar_p, mu_q, logvar_q: float tensors ``(..., d)`` that broadcast; log-**variances**.

    Returns:
        Tensor of the broadcast batch shape ``(...)`` (last dim combined), in ``[0, 1]``.

    Raises:
        TypeError / ValueError: as :func:`gaussian_kl`.
    """
    _check_diagonal_gaussian_args(mu_p=mu_p, logvar_p=logvar_p, mu_q=mu_q, logvar_q=logvar_q)
    log_sum_var = torch.logaddexp(logvar_p, logvar_q)  # log(s_p^2 + s_q^2)
    log_bc = (0.5 * math.log(2.0) + 0.25 * (logvar_p + logvar_q) - 0.5 * log_sum_var
              - 0.25 * (mu_p - mu_q).pow(2) * torch.exp(-log_sum_var)).sum(dim=-1)
    return (-torch.expm1(log_bc.clamp(max=0.0))).clamp(0.0, 1.0).sqrt()


def _log_prob_tril(x: torch.Tensor, mean: torch.Tensor, scale_tril: torch.Tensor) -> torch.Tensor:
    """log N(x; mean, L L^T) for a lower-triangular L with positive diagonal (shapes as gaussian_log_prob)."""
    diff = (x - mean).unsqueeze(-1)
    z = torch.linalg.solve_triangular(scale_tril, diff, upper=False).squeeze(-1)  # L z = x - mean
    half_log_det = torch.diagonal(scale_tril, dim1=-2, dim2=-1).log().sum(-1)
    return -0.5 * x.shape[-1] * math.log(2 * math.pi) - half_log_det - 0.5 * z.pow(2).sum(-1)


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
    r"""Log-density of the multivariate Gaussian :math:`\mathcal N(\mu, \Sigma)` at ``x``, in nats.

    .. math::

        \log \mathcal N(x; \mu, \Sigma) = -\tfrac D2 \log 2\pi - \tfrac12 \log\det\Sigma
            - \tfrac12 (x - \mu)^\top \Sigma^{-1} (x - \mu),

    computed with the Cholesky factor :math:`\Sigma = L L^\top`: :math:`\log\det\Sigma = 2 \sum_i \log L_{ii}` and
    the quadratic form is :math:`\lVert L^{-1}(x - \mu) \rVert^2` (a triangular solve, no inverse).

    Args:
        x: float tensor ``(..., D)``. mean: ``(..., D)``, broadcastable with ``x``.
        cov: ``(..., D, D)`` symmetric positive-definite covariance matrices, batch dims broadcastable.

    Returns:
        Tensor of the broadcast batch shape ``(...)``, nats.

    Raises:
        TypeError: not floating point. ValueError: NaN/Inf, 0-d ``x``, a last dim that differs, ``cov`` not square
        or not positive definite.
    """
    for name, t in (("x", x), ("mean", mean), ("cov", cov)):
        check_floating(name, t)
    if x.ndim == 0 or mean.ndim == 0 or cov.ndim < 2 or cov.shape[-1] != cov.shape[-2] \
            or not (x.shape[-1] == mean.shape[-1] == cov.shape[-1]):
        raise ValueError(f"expected x (..., D), mean (..., D) and cov (..., D, D) with one D, got shapes "
                         f"{tuple(x.shape)}, {tuple(mean.shape)}, {tuple(cov.shape)}")
    check_broadcastable(x=x, mean=mean)
    scale_tril, info = torch.linalg.cholesky_ex(cov)
    if bool((info != 0).any()):
        raise ValueError("cov must be symmetric positive definite (its Cholesky factorisation failed); a sample "
                         "covariance of constant features is singular: add reg * I")
    return _log_prob_tril(x, mean, scale_tril)


def gaussian_mle(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Maximum-likelihood mean and covariance of a Gaussian for data ``x`` (one example per row).

    Setting the gradients of :math:`\sum_n \log \mathcal N(x_n; \mu, \Sigma)` to zero gives
    :math:`\hat\mu = \frac1N \sum_n x_n` and :math:`\hat\Sigma = \frac1N \sum_n (x_n - \hat\mu)(x_n - \hat\mu)^\top`
    (divided by N, not N - 1: the MLE is biased).

    Args:
        x: float tensor ``(N, D)``, N >= 1, finite.

    Returns:
        ``(mean, cov)`` of shapes ``(D,)`` and ``(D, D)``, dtype of ``x``.

    Raises:
        TypeError / ValueError: ``x`` not a finite floating-point ``(N, D)`` matrix.
    """
    check_matrix("x", x)
    mean = x.mean(dim=0)
    centred = x - mean
    return mean, centred.T @ centred / x.shape[0]


class GaussianModel(nn.Module):
    r"""A trainable full-covariance Gaussian :math:`\mathcal N(\mu, L L^\top)` in D dimensions.

    Parameters: ``loc`` (D,) and ``raw_tril`` (D, D), whose strictly lower triangle is that of :math:`L` and whose
    diagonal is :math:`\log L_{ii}` (so :math:`L` is a valid Cholesky factor for every value of the parameters and
    gradient descent needs no constraint). Sampling is the reparameterisation :math:`x = \mu + L \varepsilon`,
    :math:`\varepsilon \sim \mathcal N(0, I)`, differentiable in :math:`\mu` and :math:`L`.

    Args:
        dim: D >= 1.
        loc: optional initial mean (D,); default 0. cov: optional initial covariance (D, D), symmetric positive
            definite; default the identity.
        dtype: parameter dtype (default float32).

    Raises:
        TypeError / ValueError: bad ``dim``, or ``loc`` / ``cov`` of the wrong shape or not positive definite.
    """

    def __init__(self, dim: int, loc: torch.Tensor | None = None, cov: torch.Tensor | None = None,
                 dtype: torch.dtype = torch.float32):
        super().__init__()
        dim = check_positive_int("dim", dim)
        loc = torch.zeros(dim, dtype=dtype) if loc is None else check_floating("loc", loc).to(dtype)
        cov = torch.eye(dim, dtype=dtype) if cov is None else check_floating("cov", cov).to(dtype)
        if loc.shape != (dim,) or cov.shape != (dim, dim):
            raise ValueError(f"loc must have shape ({dim},) and cov ({dim}, {dim}), got {tuple(loc.shape)} and "
                             f"{tuple(cov.shape)}")
        tril, info = torch.linalg.cholesky_ex(cov)
        if int(info) != 0:
            raise ValueError("cov must be symmetric positive definite")
        raw = torch.tril(tril, -1) + torch.diag(torch.diagonal(tril).log())
        self.loc = nn.Parameter(loc.detach().clone())
        self.raw_tril = nn.Parameter(raw.detach().clone())

    @property
    def dim(self) -> int:
        """The dimension D."""
        return self.loc.shape[0]

    def scale_tril(self) -> torch.Tensor:
        """The Cholesky factor L (D, D): lower triangular with a positive diagonal."""
        return torch.tril(self.raw_tril, -1) + torch.diag(torch.diagonal(self.raw_tril).exp())

    def covariance(self) -> torch.Tensor:
        """The covariance L L^T (D, D)."""
        tril = self.scale_tril()
        return tril @ tril.T

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log N(x; loc, L L^T) of ``x`` (..., D), shape (...), nats (see :func:`gaussian_log_prob`)."""
        check_floating("x", x)
        if x.ndim == 0 or x.shape[-1] != self.dim:
            raise ValueError(f"x must have shape (..., {self.dim}), got {tuple(x.shape)}")
        return _log_prob_tril(x, self.loc, self.scale_tril())

    def rsample(self, eps: torch.Tensor) -> torch.Tensor:
        """The reparameterised sample ``loc + L eps`` for standard normal ``eps`` (..., D); differentiable."""
        check_floating("eps", eps)
        if eps.ndim == 0 or eps.shape[-1] != self.dim:
            raise ValueError(f"eps must have shape (..., {self.dim}), got {tuple(eps.shape)}")
        return self.loc + eps @ self.scale_tril().T

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` independent samples (n, D) without gradients, from ``generator`` (default: torch's global RNG)."""
        n = check_positive_int("n", n)
        eps = torch.randn(n, self.dim, generator=generator, dtype=self.loc.dtype, device=self.loc.device)
        with torch.no_grad():
            return self.rsample(eps)


@dataclass(frozen=True)
class GaussianClassifier:
    r"""A generative classifier: class prior :math:`\pi_c` and Gaussian class-conditionals
    :math:`p(x \mid c) = \mathcal N(x; \mu_c, \Sigma_c)`; made by :func:`fit_gaussian_classifier`.

    With one shared covariance this is linear discriminant analysis: by Bayes' rule the log-odds of two classes are
    affine in x, the same form as logistic regression, but fitted by maximising the *joint* likelihood
    :math:`p(x, c)` rather than :math:`p(c \mid x)` (Ng & Jordan 2002).

    Attributes:
        log_priors: (C,) log class probabilities. means: (C, D). covariances: (C, D, D), positive definite.
    """

    log_priors: torch.Tensor
    means: torch.Tensor
    covariances: torch.Tensor

    def log_joint(self, x: torch.Tensor) -> torch.Tensor:
        """log p(x, c) = log pi_c + log N(x; mu_c, Sigma_c) for ``x`` (N, D): shape (N, C), nats."""
        check_matrix("x", x, self.means.shape[1], min_rows=0)
        return self.log_priors + gaussian_log_prob(x[:, None, :], self.means, self.covariances)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """The model's density of the inputs, log p(x) = logsumexp_c log p(x, c): shape (N,), nats."""
        return torch.logsumexp(self.log_joint(x), dim=-1)

    def predict_proba(self, x: torch.Tensor) -> torch.Tensor:
        """The posterior p(c | x) = p(x, c) / p(x) by Bayes' rule: shape (N, C), rows summing to 1."""
        return torch.softmax(self.log_joint(x), dim=-1)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """The most probable class argmax_c p(c | x): int64 tensor (N,)."""
        return self.log_joint(x).argmax(dim=-1)

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Ancestral sampling c ~ pi, x = mu_c + L_c eps: returns ``(x, c)`` of shapes (n, D) and (n,)."""
        n = check_positive_int("n", n)
        dev, dt = self.means.device, self.means.dtype
        c = torch.multinomial(self.log_priors.exp().cpu(), n, replacement=True, generator=generator).to(dev)
        eps = torch.randn(n, self.means.shape[1], generator=generator, dtype=dt).to(dev)
        tril = torch.linalg.cholesky(self.covariances)[c]  # (n, D, D)
        return self.means[c] + (tril @ eps.unsqueeze(-1)).squeeze(-1), c

    def impute(self, x: torch.Tensor, missing: torch.Tensor) -> torch.Tensor:
        r"""Fill in the ``missing`` features of ``x`` with their conditional mean under the model.

        With o the observed and m the missing features:
        :math:`\mathbb E[x_m \mid x_o] = \sum_c p(c \mid x_o)\,\big(\mu_{c,m} + \Sigma_{c,mo}\Sigma_{c,oo}^{-1}
        (x_o - \mu_{c,o})\big)`, where :math:`p(c \mid x_o) \propto \pi_c\, \mathcal N(x_o; \mu_{c,o}, \Sigma_{c,oo})`
        (a marginal of a Gaussian is Gaussian; the conditional mean is the Schur-complement formula).

        Args:
            x: (N, D); the values at missing positions are ignored. missing: bool tensor (D,), at least one
                observed and one missing feature.

        Returns:
            (N, D): ``x`` with the missing features replaced.
        """
        d = self.means.shape[1]
        check_matrix("x", x, d)
        if not isinstance(missing, torch.Tensor) or missing.dtype != torch.bool or missing.shape != (d,):
            raise ValueError(f"missing must be a bool tensor of shape ({d},)")
        m, o = missing.nonzero()[:, 0], (~missing).nonzero()[:, 0]
        if len(m) == 0 or len(o) == 0:
            raise ValueError("missing must mark at least one missing and one observed feature")
        cov_oo = self.covariances[:, o][:, :, o]
        cov_mo = self.covariances[:, m][:, :, o]
        x_o = x[:, o]
        post = torch.softmax(self.log_priors + gaussian_log_prob(x_o[:, None, :], self.means[:, o], cov_oo), -1)
        gain = torch.linalg.solve(cov_oo, cov_mo.transpose(-1, -2)).transpose(-1, -2)  # (C, |m|, |o|)
        cond = self.means[:, m] + ((x_o[:, None, :] - self.means[:, o]).unsqueeze(-2) @ gain.transpose(-1, -2)
                                   ).squeeze(-2)  # (N, C, |m|)
        out = x.clone()
        out[:, m] = (post.unsqueeze(-1) * cond).sum(dim=1)
        return out


def fit_gaussian_classifier(x: torch.Tensor, y: torch.Tensor, n_classes: int, *, shared_covariance: bool = True,
                            reg: float = 1e-2) -> GaussianClassifier:
    r"""Closed-form fit of a :class:`GaussianClassifier`: maximum likelihood plus a ridge on the covariances.

    Maximising :math:`\sum_n \log \pi_{y_n} + \log \mathcal N(x_n; \mu_{y_n}, \Sigma_{y_n})` gives class
    frequencies for :math:`\pi`, class means for :math:`\mu_c`, and the class covariances (divided by the class
    count) or, with ``shared_covariance``, the pooled within-class covariance (divided by N). The returned
    covariances are these maximum-likelihood covariances plus ``reg * I``: a regularised (shrinkage) estimate,
    not the maximum-likelihood one, which makes them invertible; with fewer examples than dimensions, or constant
    features (the border pixels of the digits), the maximum-likelihood covariance is singular. ``reg = 0`` gives
    the maximum-likelihood fit.

    Args:
        x: float (N, D). y: integer (N,) labels in 0..n_classes-1, every class present.
        n_classes: C. shared_covariance: one covariance for all classes (linear decision boundaries) or one per
            class (quadratic). reg: >= 0, added to the diagonal.

    Returns:
        A :class:`GaussianClassifier` with tensors on ``x``'s device and dtype.

    Raises:
        TypeError / ValueError: bad shapes or labels, a class without examples, a negative ``reg``.
    """
    check_matrix("x", x)
    n_classes = check_positive_int("n_classes", n_classes)
    y = check_class_labels("y", y, x.shape[0], n_classes)
    reg = check_nonnegative_float("reg", reg)
    counts = torch.bincount(y, minlength=n_classes)
    if bool((counts == 0).any()):
        raise ValueError(f"every class needs at least one example; classes {(counts == 0).nonzero()[:, 0].tolist()} "
                         "have none")
    one_hot = torch.nn.functional.one_hot(y, n_classes).to(x.dtype)  # (N, C)
    means = (one_hot.T @ x) / counts[:, None].to(x.dtype)
    centred = x - means[y]
    eye = torch.eye(x.shape[1], dtype=x.dtype, device=x.device)
    if shared_covariance:
        covs = (centred.T @ centred / x.shape[0]).expand(n_classes, -1, -1)
    else:
        covs = torch.einsum("nc,ni,nj->cij", one_hot, centred, centred) / counts[:, None, None].to(x.dtype)
    log_priors = (counts.to(x.dtype) / x.shape[0]).log()
    return GaussianClassifier(log_priors, means, covs + reg * eye)


def monte_carlo_mean(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Monte Carlo estimate of :math:`\mathbb E[f(X)]` from ``S`` i.i.d. values :math:`f(x_s)` and its standard error.

    The estimate :math:`\frac1S \sum_s f(x_s)` is unbiased; its standard deviation is
    :math:`\sqrt{\operatorname{Var} f(X) / S}`, estimated with the unbiased sample variance. By the central limit
    theorem, the interval estimate +- 4 standard errors holds with probability about 0.99994 for large S.

    Args:
        values: float tensor ``(S, ...)``, S >= 2 draws along dim 0, finite.

    Returns:
        ``(mean, standard_error)``, each of shape ``values.shape[1:]``.

    Raises:
        TypeError / ValueError: not floating point, NaN/Inf, fewer than 2 draws.
    """
    check_floating("values", values)
    if values.ndim == 0 or values.shape[0] < 2:
        raise ValueError(f"values must have shape (S, ...) with S >= 2 draws, got {tuple(values.shape)}")
    return values.mean(dim=0), values.std(dim=0) / math.sqrt(values.shape[0])
