r"""Divergences between distributions, in closed form (chapter 01).

The KL divergence between two diagonal Gaussians (the regulariser of chapter 04's VAE objective) and the KL,
Jensen-Shannon and total-variation divergences of discrete distributions (chapter 06's GAN identity). The
f-divergences, their variational bounds and the Wasserstein-1 distance are chapter 07's
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

import torch

from ._compat import moved_names
from ._validate import PROBABILITY_SUM_ATOL, check_broadcastable, check_finite, check_probability_vectors

__all__ = ["gaussian_kl", "kl_divergence", "js_divergence", "total_variation", "PROBABILITY_SUM_ATOL"]

# Chapter 07 material that used to live here; `coursekit.divergences.<name>` still finds it in its new module.
__getattr__ = moved_names(__name__, {
    "FDivergence": "coursekit.wasserstein",
    "F_DIVERGENCES": "coursekit.wasserstein",
    "f_divergence": "coursekit.wasserstein",
    "f_variational_bound": "coursekit.wasserstein",
    "wasserstein1_1d": "coursekit.wasserstein",
})


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


# ---- discrete distributions (chapter 06) ----
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
