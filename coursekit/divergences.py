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
