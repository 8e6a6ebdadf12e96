r"""Divergences between distributions, in closed form.

Chapter 04 uses the KL divergence between two diagonal Gaussians, which is the
regulariser of the VAE objective.

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

import torch

from ._validate import check_broadcastable, check_finite

__all__ = ["gaussian_kl"]


def gaussian_kl(
    mu_q: torch.Tensor,
    logvar_q: torch.Tensor,
    mu_p: torch.Tensor | None = None,
    logvar_p: torch.Tensor | None = None,
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
    for name, t in args.items():
        check_finite(name, t)
        if not t.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
        if t.ndim == 0:
            raise ValueError(
                f"{name} must have at least one dimension (the last one is summed over), got a scalar"
            )
    check_broadcastable(**args)

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


# ---- discrete distributions (chapter 06; owned by CORE) ----
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

__all__ += ["kl_divergence", "js_divergence", "total_variation"]

#: Tolerance on |sum(p) - 1| accepted by the discrete divergences (per vector; float64 inputs get 1e-8).
PROBABILITY_SUM_ATOL = 1e-4


def _check_probability_vectors(**tensors: torch.Tensor) -> None:
    """Validate probability vectors along the last dim: float, finite, >= 0, sums 1 (+- tolerance)."""
    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor of probabilities, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
        if t.ndim == 0 or t.shape[-1] == 0:
            raise ValueError(f"{name} must have shape (..., K) with K >= 1 outcomes along the last dim, "
                             f"got shape {tuple(t.shape)}")
        t = t.detach()
        check_finite(name, t)
        if bool((t < 0).any()):
            raise ValueError(f"{name} must be non-negative (probabilities), got minimum {float(t.min()):g}")
        atol = 1e-8 if t.dtype == torch.float64 else PROBABILITY_SUM_ATOL
        err = float((t.sum(dim=-1) - 1.0).abs().max())
        if err > atol:
            raise ValueError(f"{name} must sum to 1 along the last dim (tolerance {atol:g}); the largest "
                             f"deviation is {err:.3g}. Normalise it: {name} / {name}.sum(-1, keepdim=True)")
    check_broadcastable(**tensors)


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
    _check_probability_vectors(p=p, q=q)
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
    _check_probability_vectors(p=p, q=q)
    m = 0.5 * (p + q)
    # m_k > 0 wherever p_k > 0 or q_k > 0, so no term is infinite; xlogy(0, 0) = 0.
    jsd = 0.5 * (torch.xlogy(p, p) - torch.xlogy(p, m)).sum(dim=-1) \
        + 0.5 * (torch.xlogy(q, q) - torch.xlogy(q, m)).sum(dim=-1)
    return jsd.clamp(min=0.0, max=math.log(2.0))


def total_variation(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    r"""Total variation distance ``1/2 sum_k |p_k - q_k|`` of probability vectors (last dim), in [0, 1].

    Args / Raises: as :func:`kl_divergence`. Returns a tensor of the broadcast batch shape ``(...)``.
    """
    _check_probability_vectors(p=p, q=q)
    return 0.5 * (p - q).abs().sum(dim=-1)


# ---- chapter 07: f-divergences, their convex conjugates, Wasserstein-1 in 1-D (owned by CH07) ----
#
# An f-divergence (Csiszar 1967; Ali & Silvey 1966) is D_f(P || Q) = E_Q[f(p/q)] for a convex f with f(1) = 0.
# Each entry of F_DIVERGENCES carries f, its derivative f', its convex conjugate f*(t) = sup_u (t u - f(u)),
# the domain of f* and the "output activation" g that maps a real number v onto that domain (Nowozin, Cseke &
# Tomioka 2016, "f-GAN", Table 2, here re-derived; the derivations are in the docstring of FDivergence and
# checked numerically in tests/test_gan_ch07.py). "js" is the Jensen-Shannon divergence itself (f halved
# relative to Nowozin's table, so D_f = JS in [0, log 2]); "gan" is Goodfellow's f, D_f = 2 JS - log 4.

import math as _math
from dataclasses import dataclass as _dataclass
from typing import Callable as _Callable

__all__ += ["FDivergence", "F_DIVERGENCES", "f_divergence", "f_variational_bound", "wasserstein1_1d"]


@_dataclass(frozen=True)
class FDivergence:
    r"""One f-divergence :math:`D_f(P\|Q) = \mathbb E_Q[f(p/q)]` with everything the variational bound needs.

    Attributes:
        name: key in :data:`F_DIVERGENCES`.
        f: the generator, convex on ``[0, inf)`` with ``f(1) = 0`` (tensor -> tensor; ``f(0)`` by continuity).
        f_prime: its derivative (a subgradient for "tv"); ``T*(x) = f'(p(x)/q(x))`` attains the bound.
        conjugate: :math:`f^*(t) = \sup_{u \ge 0} (tu - f(u))`, finite on ``domain``.
        domain: ``(lo, hi)``, the open interval where the conjugate is finite ("tv": the closed one).
        activation: ``g(v)``, a map from the reals onto ``domain`` (Nowozin et al. 2016, Table 2).
        slope_at_infinity: :math:`\lim_{u\to\infty} f(u)/u`, the contribution per unit of P mass where q = 0.

    Conjugates (set the derivative of :math:`tu - f(u)` to zero, :math:`t = f'(u)`, solve for u, substitute):

    * KL, :math:`f = u\log u`: :math:`u = e^{t-1}`, :math:`f^* = e^{t-1}`.
    * reverse KL, :math:`f = -\log u`: :math:`u = -1/t` (t < 0), :math:`f^* = -1 - \log(-t)`.
    * Pearson :math:`\chi^2`, :math:`f = (u-1)^2`: :math:`u = 1 + t/2`, :math:`f^* = t + t^2/4`
      (for :math:`t \ge -2`; the sup over :math:`u \ge 0` is :math:`-1` below, which the tests check).
    * squared Hellinger, :math:`f = (\sqrt u - 1)^2`: :math:`u = (1-t)^{-2}` (t < 1), :math:`f^* = t/(1-t)`.
    * JS, :math:`f = \tfrac12[u\log u - (u+1)\log\tfrac{u+1}2]`: :math:`e^{2t} = 2u/(u+1)`,
      :math:`f^* = -\tfrac12\log(2 - e^{2t})` (t < log(2)/2).
    * GAN, :math:`f = u\log u - (u+1)\log(u+1)`: :math:`e^t = u/(u+1)`, :math:`f^* = -\log(1 - e^t)` (t < 0).
    * TV, :math:`f = \tfrac12|u-1|`: :math:`f^* = t` on :math:`|t| \le \tfrac12` (over :math:`u \ge 0` the
      supremum is :math:`-\tfrac12` for :math:`t < -\tfrac12` and :math:`+\infty` for :math:`t > \tfrac12`; critics are
      kept in :math:`[-\tfrac12, \tfrac12]`).
    """

    name: str
    f: _Callable
    f_prime: _Callable
    conjugate: _Callable
    domain: tuple
    activation: _Callable
    slope_at_infinity: float


def _softplus(v):
    return torch.nn.functional.softplus(v)


F_DIVERGENCES: dict[str, FDivergence] = {
    d.name: d
    for d in [
        FDivergence("kl", lambda u: torch.xlogy(u, u), lambda u: torch.log(u) + 1,
                    lambda t: torch.exp(t - 1), (-_math.inf, _math.inf), lambda v: v, _math.inf),
        FDivergence("reverse_kl", lambda u: -torch.log(u), lambda u: -1 / u,
                    lambda t: -1 - torch.log(-t), (-_math.inf, 0.0), lambda v: -torch.exp(v), 0.0),
        FDivergence("pearson", lambda u: (u - 1) ** 2, lambda u: 2 * (u - 1),
                    lambda t: torch.where(t >= -2, t + t * t / 4, -torch.ones_like(t)),
                    (-_math.inf, _math.inf), lambda v: v, _math.inf),
        FDivergence("hellinger", lambda u: (torch.sqrt(u) - 1) ** 2, lambda u: 1 - 1 / torch.sqrt(u),
                    lambda t: t / (1 - t), (-_math.inf, 1.0), lambda v: 1 - torch.exp(v), 1.0),
        FDivergence("js", lambda u: 0.5 * (torch.xlogy(u, u) - torch.xlogy(u + 1, (u + 1) / 2)),
                    lambda u: 0.5 * torch.log(2 * u / (u + 1)),
                    lambda t: -0.5 * torch.log(2 - torch.exp(2 * t)), (-_math.inf, 0.5 * _math.log(2)),
                    lambda v: 0.5 * (_math.log(2) - _softplus(-v)), 0.5 * _math.log(2)),
        FDivergence("gan", lambda u: torch.xlogy(u, u) - torch.xlogy(u + 1, u + 1),
                    lambda u: torch.log(u / (u + 1)),
                    lambda t: -torch.log(-torch.expm1(t)), (-_math.inf, 0.0), lambda v: -_softplus(-v), 0.0),
        FDivergence("tv", lambda u: 0.5 * (u - 1).abs(), lambda u: 0.5 * torch.sign(u - 1),
                    lambda t: t, (-0.5, 0.5), lambda v: 0.5 * torch.tanh(v), 0.5),
    ]
}


def _get_f(name) -> FDivergence:
    if isinstance(name, FDivergence):
        return name
    if name not in F_DIVERGENCES:
        raise ValueError(f"unknown f-divergence {name!r}; expected one of {sorted(F_DIVERGENCES)}")
    return F_DIVERGENCES[name]


def f_divergence(p: torch.Tensor, q: torch.Tensor, name: str = "kl") -> torch.Tensor:
    r"""f-divergence :math:`D_f(P\|Q) = \sum_k q_k f(p_k / q_k)` of probability vectors, nats.

    Conventions at the boundary (limits of the summand): where ``q_k = 0 < p_k`` the term is
    ``p_k * slope_at_infinity`` (``inf`` for "kl" and "pearson"); where ``p_k = 0 < q_k`` it is ``q_k f(0)``
    ("reverse_kl": ``inf``); where both are 0 it is 0. Csiszar (1967); Nowozin et al. (2016), eq. (1).

    Args:
        p, q: non-negative tensors (..., K) summing to 1 over the last dim (tolerance
            :data:`PROBABILITY_SUM_ATOL`, 1e-8 for float64), broadcastable.
        name: a key of :data:`F_DIVERGENCES`.

    Returns:
        tensor (...), nats (``inf`` where the divergence is infinite).

    Raises:
        TypeError, ValueError: not floating point, negative, not normalised, NaN, unknown name.
    """
    fd = _get_f(name)
    _check_probability_vectors(p=p, q=q)
    p, q = torch.broadcast_tensors(p, q)
    both = (p > 0) & (q > 0)
    safe_q = torch.where(both, q, torch.ones_like(q))
    safe_u = torch.where(both, p / safe_q, torch.ones_like(p))
    term = torch.where(both, q * fd.f(safe_u), torch.zeros_like(p))
    only_p = (p > 0) & (q == 0)
    only_q = (p == 0) & (q > 0)
    if bool(only_p.any()):
        term = torch.where(only_p, p * fd.slope_at_infinity, term)
    if bool(only_q.any()):
        f0 = fd.f(torch.zeros((), dtype=p.dtype)).item() if fd.name != "reverse_kl" else _math.inf
        term = torch.where(only_q, q * f0, term)
    return term.sum(-1)


def f_variational_bound(t: torch.Tensor, p: torch.Tensor, q: torch.Tensor, name: str = "kl") -> torch.Tensor:
    r"""The variational lower bound :math:`\sum_k p_k t_k - \sum_k q_k f^*(t_k) \le D_f(P\|Q)` for discrete P, Q.

    For every function (vector) ``t`` with values in the domain of :math:`f^*`, Fenchel's inequality
    :math:`f(u) \ge tu - f^*(t)` gives the bound (Nguyen, Wainwright & Jordan 2010, eq. (4); Nowozin et al.
    2016, eq. (4)); it is an equality at :math:`t_k = f'(p_k/q_k)`.

    Args:
        t: critic values (..., K) in the domain of the conjugate. p, q: probability vectors (..., K).
        name: a key of :data:`F_DIVERGENCES`.

    Returns:
        tensor (...), nats.

    Raises:
        ValueError: bad p, q (see :func:`f_divergence`), NaN in t, or t outside the conjugate's domain.
    """
    fd = _get_f(name)
    _check_probability_vectors(p=p, q=q)
    check_finite("t", t)
    lo, hi = fd.domain
    closed = fd.name == "tv"
    outside = (t < lo) | (t > hi) if closed else (t <= lo) | (t >= hi)
    if bool(outside.any()):
        raise ValueError(f"t must lie in the domain {fd.domain} of the conjugate of {fd.name!r}; "
                         f"map a real critic output v with F_DIVERGENCES[{fd.name!r}].activation(v)")
    return (p * t).sum(-1) - (q * fd.conjugate(t)).sum(-1)


def wasserstein1_1d(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    r"""Wasserstein-1 distance between two 1-D empirical distributions, by the CDF formula.

    .. math::

        W_1(P, Q) = \int_{-\infty}^{\infty} \lvert F_P(s) - F_Q(s) \rvert \, ds

    (Vallender 1974; in 1-D the optimal coupling is monotone, so :math:`W_1` is the area between the two
    distribution functions). Computed exactly on the merged sorted sample; it equals
    ``scipy.stats.wasserstein_distance`` and, for equal sizes, ``mean(|sort(x) - sort(y)|)``. Differentiable
    with respect to the sample values (a.e.), so autograd gives the gradient used in chapter 07.

    Args:
        x: (m,) or (m, 1) samples; y: (n,) or (n, 1) samples; finite, floating point, m, n >= 1.

    Returns:
        0-dim tensor, in the units of the data.

    Raises:
        TypeError, ValueError: not floating point, wrong shape, empty, NaN/Inf.
    """
    vals = []
    for name, t in (("x", x), ("y", y)):
        check_finite(name, t)
        if not t.is_floating_point():
            raise TypeError(f"{name} must be floating point, got {t.dtype}")
        if t.ndim == 2 and t.shape[1] == 1:
            t = t[:, 0]
        if t.ndim != 1 or t.shape[0] < 1:
            raise ValueError(f"{name} must have shape (n,) or (n, 1) with n >= 1, got {tuple(t.shape)}")
        vals.append(t)
    x, y = vals
    xs, _ = torch.sort(x)
    ys, _ = torch.sort(y)
    allv, _ = torch.sort(torch.cat([xs, ys]))
    deltas = allv[1:] - allv[:-1]
    grid = allv[:-1].detach()
    cdf_x = torch.searchsorted(xs.detach().contiguous(), grid.contiguous(), right=True).to(x.dtype) / xs.shape[0]
    cdf_y = torch.searchsorted(ys.detach().contiguous(), grid.contiguous(), right=True).to(x.dtype) / ys.shape[0]
    return ((cdf_x - cdf_y).abs() * deltas).sum()
