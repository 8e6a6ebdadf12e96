r"""Latent-variable models and Gaussian mixtures (chapter 02).

Chapter 02 (latent variables, mixtures and the EM algorithm) will grow here: the mixture likelihood, its
responsibilities and the EM updates. For now the module holds a density whose log-density and score are
known in closed form, used by later chapters to check estimators against exact values: an isotropic Gaussian
mixture, optionally convolved with Gaussian noise of standard deviation :math:`\sigma`,

.. math::

    q_\sigma = \Big(\sum_k w_k \mathcal{N}(\mu_k, s_k^2 I)\Big) * \mathcal{N}(0, \sigma^2 I)
             = \sum_k w_k \mathcal{N}(\mu_k, (s_k^2 + \sigma^2) I),

because the sum of independent Gaussian variables is Gaussian with the variances added.

* :func:`gaussian_mixture_log_prob` - :math:`\log q_\sigma(x)` in nats, by log-sum-exp.
* :func:`gaussian_mixture_score` - the exact score :math:`\nabla_x \log q_\sigma(x)`, a
  responsibility-weighted average of the components' scores (chapter 09's reference score).

Conventions: points ``x`` are float (N, D); the computations run in ``x``'s dtype and on its device.
"""

from __future__ import annotations

import math

import torch

from ._validate import (
    check_all_positive,
    check_finite,
    check_matrix,
    check_nonnegative_float,
    check_shape,
    check_weights,
)

__all__ = [
    "gaussian_mixture_log_prob",
    "gaussian_mixture_score",
]


def _mixture_args(x, means, stds, weights, sigma):
    """Validate the mixture; return ``(x, means (k, D), var (k,), weights (k,) normalised)`` in x's dtype."""
    x = check_matrix("x", x)
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
        TypeError / ValueError: for a bad ``x``, means not of shape (k, D), non-finite values, stds <= 0,
            negative weights or weights summing to 0, or sigma < 0.
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
