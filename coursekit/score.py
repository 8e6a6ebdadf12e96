r"""Score matching and Langevin dynamics (chapter 09).

The *score* of a density is :math:`\nabla_x \log p(x)`. For an energy-based model
:math:`p_\theta(x) = e^{-E_\theta(x)} / Z_\theta` it is :math:`-\nabla_x E_\theta(x)`: the partition function
:math:`Z_\theta` does not depend on :math:`x` and drops out. This module holds the objectives that fit a
score model :math:`s_\theta(x) \approx \nabla_x \log p(x)` from samples of :math:`p`, and the samplers that
turn a score into samples.

Objectives (each returns the mean over the batch, a 0-d tensor, differentiable in the model's parameters)

* :func:`hyvarinen_loss` - Hyvarinen (2005), theorem 1: :math:`\mathbb{E}_p[\operatorname{tr}(\nabla_x s(x))
  + \tfrac12 \lVert s(x) \rVert^2]`, exact trace by autograd (:func:`jacobian_trace`, D backward passes).
* :func:`sliced_score_matching_loss` - Song, Garg, Shi & Ermon (2019), "Sliced score matching": the trace replaced by
  random projections :math:`v^\top \nabla_x s(x)\, v` (one backward pass per projection).
* :func:`denoising_score_matching_loss` - Vincent (2011), the DSM objective: regress :math:`s(\tilde x)` on
  :math:`\nabla_{\tilde x} \log q_\sigma(\tilde x \mid x) = -(\tilde x - x)/\sigma^2` (:func:`dsm_target`).
* :func:`ncsn_loss` - Song & Ermon (2019), eqs. 5-6: denoising score matching over a geometric set of
  noise levels with weight :math:`\lambda(\sigma) = \sigma^2`.

Samplers

* :func:`langevin_sample` - unadjusted Langevin dynamics (Roberts & Tweedie 1996; Welling & Teh 2011,
  SGLD without the minibatch noise),
  :math:`x \leftarrow x + \tfrac{\varepsilon}{2} \nabla_x \log p(x) + \sqrt{\varepsilon}\, z`.
* :func:`annealed_langevin_sample` - Song & Ermon (2019), algorithm 1, step
  :math:`\alpha_i = \varepsilon\, \sigma_i^2 / \sigma_L^2` at noise level :math:`\sigma_i`.

Noise-level and step-size rules of Song & Ermon (2020), "Improved techniques for training score-based generative
models": :func:`shell_overlap`, :func:`noise_ratio_for_overlap` and :func:`n_noise_levels` (the ratio of consecutive
levels), :func:`annealed_variance_ratio` and :func:`annealed_step_size` (the number of steps and the step size).

Models and helpers: :class:`NoiseConditionalMLP` (2-D data), :class:`NoiseConditionalConvNet8x8` (8x8 digits),
:func:`geometric_sigmas`, the exact log-density and score of an isotropic Gaussian mixture convolved with
Gaussian noise (:func:`gaussian_mixture_log_prob`, :func:`gaussian_mixture_score`, defined in chapter 02's
:mod:`coursekit.mixtures` and re-exported here), and a two-sample statistic and permutation test
(:func:`gaussian_mmd2`, :func:`mmd_permutation_test`) built on chapter 07's Gaussian-kernel MMD^2
(:func:`coursekit.wasserstein.mmd2_unbiased`) to compare 2-D samples with data.

Conventions: data ``x`` is float (N, D) (images flattened to D = 64); a *score function* maps (N, D) to
(N, D) and must treat examples independently (no batch normalisation), because the trace estimators
differentiate the sum over the batch. A *noise-conditional* score function is called as
``score_fn(x, sigma)`` with ``sigma`` a (N,) tensor on ``x``'s device.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from ._validate import (
    check_all_positive,
    check_broadcastable,
    check_matrix,
    check_nonempty,
    check_nonnegative_int,
    check_positive_float,
    check_positive_int,
    check_same_shape,
    check_shape,
    check_tensor,
)
from .mixtures import gaussian_mixture_log_prob, gaussian_mixture_score
from .nets import UNet
from .wasserstein import gaussian_kernel_matrix, median_bandwidths, mmd2_unbiased

__all__ = [
    "jacobian_trace",
    "hyvarinen_loss",
    "sliced_score_matching_loss",
    "dsm_target",
    "denoising_score_matching_loss",
    "geometric_sigmas",
    "ncsn_loss",
    "langevin_sample",
    "annealed_langevin_sample",
    "shell_overlap",
    "noise_ratio_for_overlap",
    "n_noise_levels",
    "annealed_variance_ratio",
    "annealed_step_size",
    "gaussian_mixture_log_prob",
    "gaussian_mixture_score",
    "gaussian_mmd2",
    "mmd_permutation_test",
    "NoiseConditionalMLP",
    "NoiseConditionalConvNet8x8",
    "NoiseConditionalUNet8x8",
]


# ------------------------------------------------------------------------------------------------
# calling a score function, drawing noise
# ------------------------------------------------------------------------------------------------


def _call_score(score_fn: Callable, x: torch.Tensor, *args, what: str = "score_fn") -> torch.Tensor:
    s = score_fn(x, *args)
    if not isinstance(s, torch.Tensor) or s.shape != x.shape:
        got = tuple(s.shape) if isinstance(s, torch.Tensor) else type(s).__name__
        raise ValueError(f"{what} must return a tensor of the input's shape {tuple(x.shape)}, got {got}")
    return s


def _randn(shape, like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Standard normal noise with ``like``'s dtype and device, drawn on the generator's own device
    (a CPU generator may drive a GPU computation, as on Colab)."""
    if generator is None:
        return torch.randn(shape, dtype=like.dtype, device=like.device)
    return torch.randn(shape, generator=generator, dtype=like.dtype, device=generator.device).to(like.device)


# ------------------------------------------------------------------------------------------------
# exact score matching (Hyvarinen 2005)
# ------------------------------------------------------------------------------------------------


def jacobian_trace(score_fn: Callable, x: torch.Tensor, *, create_graph: bool = False,
                   return_score: bool = False):
    r"""Exact trace of the Jacobian, :math:`\operatorname{tr} \nabla_x s(x) = \sum_i \partial s_i / \partial x_i`.

    Computed with D reverse-mode passes: pass i differentiates :math:`\sum_n s_i(x_n)` and keeps the i-th
    input coordinate, which is :math:`\partial s_i(x_n) / \partial x_{n,i}` because examples are
    independent. The cost is therefore D times a backward pass, linear in the dimension (a full
    Jacobian would be D x D per example; only its diagonal is needed).

    Args:
        score_fn: maps (N, D) to (N, D), treating examples independently.
        x: float (N, D), finite. Not modified.
        create_graph: keep the graph so that the result can be differentiated again (True for training).
        return_score: also return :math:`s(x)` (N, D), computed in the same forward pass.

    Returns:
        (N,) tensor of traces (same dtype/device as ``x``), or ``(trace, s)`` if ``return_score``.

    Raises:
        TypeError / ValueError: for a non-tensor, non-float, wrongly shaped or non-finite ``x``, or a
            ``score_fn`` whose output shape differs from its input's.
    """
    x = check_matrix("x", x)
    with torch.enable_grad():
        xr = x.detach().requires_grad_(True)
        s = _call_score(score_fn, xr)
        trace = torch.zeros(x.shape[0], dtype=s.dtype, device=s.device)
        for i in range(x.shape[1]):
            (g,) = torch.autograd.grad(s[:, i].sum(), xr, create_graph=create_graph, retain_graph=True,
                                       allow_unused=True)
            if g is not None:
                trace = trace + g[:, i]
    return (trace, s) if return_score else trace


def hyvarinen_loss(score_fn: Callable, x: torch.Tensor) -> torch.Tensor:
    r"""Hyvarinen's score-matching objective, estimated on a batch.

    .. math::

        J(\theta) = \mathbb{E}_{p(x)}\Big[\operatorname{tr}\big(\nabla_x s_\theta(x)\big)
            + \tfrac12 \lVert s_\theta(x) \rVert^2\Big]

    (Hyvarinen 2005, "Estimation of non-normalized statistical models by score matching", JMLR 6,
    theorem 1, written with :math:`s = \nabla_x \log p_\theta` rather than :math:`\psi`). It equals the
    Fisher divergence :math:`\tfrac12 \mathbb{E}_p \lVert s_\theta(x) - \nabla_x \log p(x) \rVert^2` minus
    :math:`\tfrac12 \mathbb{E}_p \lVert \nabla_x \log p(x) \rVert^2`, a constant free of :math:`\theta`,
    provided :math:`p(x)\, s_\theta(x) \to 0` as :math:`\lVert x \rVert \to \infty` (integration by parts).
    The trace is exact (:func:`jacobian_trace`), so one evaluation costs D backward passes.

    Args:
        score_fn: model score, (N, D) -> (N, D), examples independent.
        x: float (N, D) samples of the data distribution.

    Returns:
        0-d tensor: the batch mean of :math:`\operatorname{tr} \nabla_x s(x_n) + \tfrac12 \lVert s(x_n) \rVert^2`,
        differentiable with respect to the parameters of ``score_fn``. Units: those of
        :math:`\lVert s \rVert^2`, i.e. 1 / (units of x)^2. It can be negative.

    Raises:
        TypeError / ValueError: as :func:`jacobian_trace`.
    """
    trace, s = jacobian_trace(score_fn, x, create_graph=True, return_score=True)
    return (trace + 0.5 * (s**2).sum(-1)).mean()


# ------------------------------------------------------------------------------------------------
# sliced score matching (Song, Garg, Shi & Ermon 2019)
# ------------------------------------------------------------------------------------------------


def sliced_score_matching_loss(score_fn: Callable, x: torch.Tensor, *, n_projections: int = 1,
                               variance_reduced: bool = False, distribution: str = "gaussian",
                               generator: torch.Generator | None = None) -> torch.Tensor:
    r"""Sliced score matching: the trace of :func:`hyvarinen_loss` replaced by random projections.

    .. math::

        J_{\mathrm{SSM}}(\theta) = \mathbb{E}_{p(x)} \mathbb{E}_{p(v)}\Big[v^\top \nabla_x s_\theta(x)\, v
            + \tfrac12 \big(v^\top s_\theta(x)\big)^2\Big]

    (Song, Garg, Shi & Ermon 2019, "Sliced score matching"). For any projection distribution with
    :math:`\mathbb{E}[v v^\top] = I` (standard normal or Rademacher), :math:`\mathbb{E}_v[v^\top A v] =
    \operatorname{tr} A` and :math:`\mathbb{E}_v[(v^\top s)^2] = \lVert s \rVert^2`, so :math:`J_{\mathrm{SSM}} = J`.
    ``variance_reduced=True`` replaces :math:`\tfrac12 (v^\top s)^2` by its expectation
    :math:`\tfrac12 \lVert s \rVert^2` (SSM-VR, same paper). :math:`v^\top \nabla_x s\, v` is one vector-Jacobian
    product, :math:`v^\top \nabla_x (v^\top s)`: one backward pass per projection, whatever D.

    Args:
        score_fn: model score, (N, D) -> (N, D), examples independent.
        x: float (N, D) data.
        n_projections: projections per example, M >= 1 (the estimate averages over them).
        variance_reduced: use the closed-form second term (valid for both distributions).
        distribution: ``"gaussian"`` (v ~ N(0, I)) or ``"rademacher"`` (v uniform on {-1, 1}^D).
        generator: optional torch.Generator for the projections.

    Returns:
        0-d tensor, an unbiased estimate of :func:`hyvarinen_loss`'s expectation, differentiable.

    Raises:
        TypeError / ValueError: for bad ``x``, ``n_projections`` or ``distribution``.
    """
    x = check_matrix("x", x)
    m = check_positive_int("n_projections", n_projections)
    if distribution not in ("gaussian", "rademacher"):
        raise ValueError(f"distribution must be 'gaussian' or 'rademacher', got {distribution!r}")
    n, d = x.shape
    v = _randn((m, n, d), x, generator)
    if distribution == "rademacher":
        v = torch.sign(v) + (v == 0).to(v.dtype)  # sign of a Gaussian is a fair +-1
    with torch.enable_grad():
        xr = x.detach().requires_grad_(True)
        s = _call_score(score_fn, xr)
        total = torch.zeros((), dtype=s.dtype, device=s.device)
        for j in range(m):
            vs = (v[j] * s).sum(-1)  # (N,) v^T s(x_n)
            (g,) = torch.autograd.grad(vs.sum(), xr, create_graph=True)  # (N, D) v^T grad s
            vjv = (g * v[j]).sum(-1)
            second = 0.5 * (s**2).sum(-1) if variance_reduced else 0.5 * vs**2
            total = total + (vjv + second).mean()
    return total / m


# ------------------------------------------------------------------------------------------------
# denoising score matching (Vincent 2011) and noise-conditional score networks (Song & Ermon 2019)
# ------------------------------------------------------------------------------------------------


def dsm_target(x: torch.Tensor, x_tilde: torch.Tensor, sigma) -> torch.Tensor:
    r"""The denoising score-matching target :math:`\nabla_{\tilde x} \log \mathcal{N}(\tilde x; x, \sigma^2 I)
    = -(\tilde x - x) / \sigma^2`.

    With :math:`\tilde x = x + \sigma \varepsilon` it is :math:`-\varepsilon / \sigma`: it points from the noisy
    point back to the clean one, and its size grows like 1/sigma (Vincent 2011).

    Args:
        x: clean data (N, D); x_tilde: noisy data, same shape.
        sigma: noise standard deviation > 0: a float, or a tensor broadcastable to (N, D)
            (e.g. (N, 1) for one level per example).

    Returns:
        (N, D) tensor, units 1 / (units of x).

    Raises:
        TypeError / ValueError: for mismatched shapes, non-finite input or sigma <= 0.
    """
    x = check_matrix("x", x)
    x_tilde = check_matrix("x_tilde", x_tilde)
    check_same_shape(x=x, x_tilde=x_tilde)
    sigma = _sigma_like(sigma, x)
    return -(x_tilde - x) / sigma**2


def _sigma_like(sigma, x: torch.Tensor):
    """sigma > 0 as a python float, or as a tensor that broadcasts to x ((N, 1): one level per example), moved
    to x's device and dtype."""
    if isinstance(sigma, torch.Tensor):
        check_all_positive("sigma", sigma)
        check_broadcastable(sigma=sigma, x=x)
        return sigma.to(device=x.device, dtype=x.dtype)
    return check_positive_float("sigma", sigma)


def denoising_score_matching_loss(score_fn: Callable, x: torch.Tensor, sigma, *, noise: torch.Tensor | None = None,
                                  generator: torch.Generator | None = None) -> torch.Tensor:
    r"""Denoising score matching at one noise level (Vincent 2011).

    .. math::

        J_{\mathrm{DSM}}(\theta) = \mathbb{E}_{p(x)} \mathbb{E}_{\varepsilon \sim \mathcal{N}(0, I)}
            \Big[\tfrac12 \Big\lVert s_\theta(x + \sigma\varepsilon) + \frac{\varepsilon}{\sigma} \Big\rVert^2\Big]

    (Vincent 2011, "A connection between score matching and denoising autoencoders"). It
    differs from the Fisher divergence between :math:`s_\theta` and the score of the *noisy* density
    :math:`q_\sigma = p * \mathcal{N}(0, \sigma^2 I)` by a constant free of :math:`\theta`, so its minimiser is
    :math:`\nabla \log q_\sigma`, not :math:`\nabla \log p`. No derivatives of :math:`s_\theta` are needed.

    Args:
        score_fn: model score, called on the noisy batch: (N, D) -> (N, D).
        x: clean data, float (N, D).
        sigma: noise standard deviation > 0 (float).
        noise: optional standard normal noise (N, D) (default: drawn with ``generator``).
        generator: optional torch.Generator for the noise.

    Returns:
        0-d tensor, batch mean of :math:`\tfrac12 \lVert s(\tilde x) - \mathrm{dsm\_target} \rVert^2`.

    Raises:
        TypeError / ValueError: for bad ``x``, ``sigma`` or ``noise``.
    """
    x = check_matrix("x", x)
    sigma = check_positive_float("sigma", sigma)
    if noise is None:
        noise = _randn(x.shape, x, generator)
    else:
        check_same_shape(noise=check_matrix("noise", noise), x=x)
    x_tilde = x + sigma * noise
    s = _call_score(score_fn, x_tilde)
    return 0.5 * ((s - dsm_target(x, x_tilde, sigma)) ** 2).sum(-1).mean()


def geometric_sigmas(sigma_max: float, sigma_min: float, n_levels: int, *, device=None) -> torch.Tensor:
    r"""Noise levels :math:`\sigma_1 > \sigma_2 > \dots > \sigma_L` in geometric progression
    (Song & Ermon 2019, sec. 4.2): :math:`\sigma_i = \sigma_1 (\sigma_L/\sigma_1)^{(i-1)/(L-1)}`,
    a constant ratio :math:`\sigma_{i}/\sigma_{i+1}`.

    Args:
        sigma_max: :math:`\sigma_1` > 0, comparable to the largest distance between data points.
        sigma_min: :math:`\sigma_L`, 0 < sigma_min < sigma_max, small enough that
            :math:`q_{\sigma_L} \approx p`.
        n_levels: L >= 2.
        device: output device.

    Returns:
        float32 tensor (L,), decreasing, first sigma_max, last sigma_min.

    Raises:
        TypeError / ValueError: for non-positive values, sigma_min >= sigma_max or L < 2.
    """
    hi = check_positive_float("sigma_max", sigma_max)
    lo = check_positive_float("sigma_min", sigma_min)
    n = check_positive_int("n_levels", n_levels)
    if lo >= hi:
        raise ValueError(f"sigma_min must be < sigma_max, got sigma_min={lo:g}, sigma_max={hi:g}")
    if n < 2:
        raise ValueError(f"n_levels must be >= 2, got {n}")
    return torch.exp(torch.linspace(math.log(hi), math.log(lo), n, dtype=torch.float64)).to(
        device=device, dtype=torch.float32)


def _noise_levels(sigmas, x: torch.Tensor) -> torch.Tensor:
    """The L noise levels as a (L,) tensor of positive numbers on x's device and dtype."""
    sigmas = torch.as_tensor(sigmas)
    check_all_positive("sigmas", check_nonempty("sigmas", check_shape("sigmas", sigmas, ("L",))))
    return sigmas.to(device=x.device, dtype=x.dtype)


def ncsn_loss(score_fn: Callable, x: torch.Tensor, sigmas, *, generator: torch.Generator | None = None,
              return_levels: bool = False):
    r"""The noise-conditional score network objective of Song & Ermon (2019), eqs. 5-6.

    .. math::

        \mathcal{L}(\theta) = \frac{1}{L} \sum_{i=1}^{L} \lambda(\sigma_i)\,
            \mathbb{E}_{p(x)} \mathbb{E}_{\varepsilon}
            \Big[\tfrac12 \Big\lVert s_\theta(x + \sigma_i \varepsilon, \sigma_i)
            + \frac{\varepsilon}{\sigma_i} \Big\rVert^2\Big], \qquad \lambda(\sigma) = \sigma^2,

    estimated with one level drawn uniformly per example. With :math:`\lambda = \sigma^2` each term is
    :math:`\tfrac12 \lVert \sigma s_\theta(\tilde x, \sigma) + \varepsilon \rVert^2`: every level contributes on the
    same scale, and writing :math:`\hat\varepsilon = -\sigma s_\theta` it is the noise-prediction loss
    :math:`\tfrac12 \lVert \hat\varepsilon - \varepsilon \rVert^2` of diffusion models (Ho et al. 2020).

    Args:
        score_fn: noise-conditional score ``score_fn(x_tilde, sigma)`` with x_tilde (N, D) and sigma (N,).
        x: clean data, float (N, D).
        sigmas: the L noise levels, 1-D tensor/sequence of positive floats.
        generator: optional torch.Generator for the levels and the noise.
        return_levels: also return the (N,) level index drawn for each example.

    Returns:
        0-d tensor (dimensionless: squared units of the standard normal noise), or ``(loss, idx)``.

    Raises:
        TypeError / ValueError: for bad ``x`` or ``sigmas``.
    """
    x = check_matrix("x", x)
    sigmas = _noise_levels(sigmas, x)
    n = x.shape[0]
    if generator is None:
        idx = torch.randint(len(sigmas), (n,), device=x.device)
    else:
        idx = torch.randint(len(sigmas), (n,), generator=generator, device=generator.device).to(x.device)
    sigma = sigmas[idx]  # (N,)
    eps = _randn(x.shape, x, generator)
    x_tilde = x + sigma[:, None] * eps
    s = _call_score(score_fn, x_tilde, sigma)
    loss = 0.5 * ((sigma[:, None] * s + eps) ** 2).sum(-1).mean()
    return (loss, idx) if return_levels else loss


# ------------------------------------------------------------------------------------------------
# Langevin samplers
# ------------------------------------------------------------------------------------------------


def langevin_sample(score_fn: Callable, x0: torch.Tensor, step_size: float, n_steps: int, *,
                    generator: torch.Generator | None = None, return_trajectory: bool = False):
    r"""Unadjusted Langevin dynamics driven by a score.

    .. math::

        x_{k+1} = x_k + \frac{\varepsilon}{2} \nabla_x \log p(x_k) + \sqrt{\varepsilon}\, z_k,
        \qquad z_k \sim \mathcal{N}(0, I),

    the Euler-Maruyama discretisation, with time step :math:`\varepsilon`, of
    :math:`dX_t = \tfrac12 \nabla \log p(X_t)\, dt + dW_t`, whose stationary density is :math:`p`
    (Roberts & Tweedie 1996; Welling & Teh 2011, whose SGLD update has this form). The drift coefficient is *half* the
    noise variance; the equivalent convention :math:`x + \tau \nabla \log p + \sqrt{2\tau}\, z` has
    :math:`\tau = \varepsilon / 2`. There is no Metropolis correction, so the chain's stationary law differs
    from :math:`p` by O(:math:`\varepsilon`) (for a Gaussian target of variance :math:`s^2` the chain's variance
    is :math:`s^2 / (1 - \varepsilon / (4 s^2))`).

    Args:
        score_fn: :math:`\nabla_x \log p`, (N, D) -> (N, D), evaluated under ``torch.no_grad()`` unless it
            needs gradients itself (it may call autograd).
        x0: starting points, float (N, D). Not modified.
        step_size: :math:`\varepsilon` > 0 (units of x squared).
        n_steps: number of updates, >= 1.
        generator: optional torch.Generator for the noise.
        return_trajectory: also return all states, (n_steps + 1, N, D) on ``x0``'s device.

    Returns:
        (N, D) final states (detached), or ``(x, trajectory)``.

    Raises:
        TypeError / ValueError: for bad ``x0``, ``step_size`` or ``n_steps``, or a non-finite state
            (a diverging chain: lower the step size).
    """
    x = check_matrix("x0", x0).detach().clone()
    eps = check_positive_float("step_size", step_size)
    n_steps = check_positive_int("n_steps", n_steps)
    traj = [x.clone()] if return_trajectory else None
    for k in range(n_steps):
        s = _call_score(score_fn, x).detach()
        x = x + 0.5 * eps * s + math.sqrt(eps) * _randn(x.shape, x, generator)
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"Langevin chain diverged at step {k + 1} (non-finite state); lower step_size "
                             f"(now {eps:g})")
        if traj is not None:
            traj.append(x.clone())
    return (x, torch.stack(traj)) if return_trajectory else x


def annealed_langevin_sample(score_fn: Callable, x0: torch.Tensor, sigmas, step_size: float, n_steps_each: int,
                             *, generator: torch.Generator | None = None, denoise: bool = False,
                             return_levels: bool = False):
    r"""Annealed Langevin dynamics (Song & Ermon 2019, algorithm 1).

    For each noise level :math:`\sigma_1 > \dots > \sigma_L` in turn, with step
    :math:`\alpha_i = \varepsilon\, \sigma_i^2 / \sigma_L^2`, run ``n_steps_each`` = T updates

    .. math::

        x \leftarrow x + \frac{\alpha_i}{2}\, s_\theta(x, \sigma_i) + \sqrt{\alpha_i}\, z,
        \qquad z \sim \mathcal{N}(0, I),

    i.e. :func:`langevin_sample` on :math:`q_{\sigma_i}` started from the previous level's output. The
    scaling :math:`\alpha_i \propto \sigma_i^2` keeps the signal-to-noise ratio of the update the same at every
    level (Song & Ermon 2019, sec. 4.3). ``denoise=True`` adds one final step
    :math:`x + \sigma_L^2 s_\theta(x, \sigma_L)`, the posterior mean :math:`\mathbb{E}[x_0 \mid x]` of Tweedie's
    formula, which removes the noise of level :math:`\sigma_L` (Jolicoeur-Martineau et al. 2021; Song & Ermon 2020).

    Args:
        score_fn: noise-conditional score ``score_fn(x, sigma)`` with x (N, D) and sigma (N,).
        x0: starting points (N, D), e.g. uniform noise. Not modified.
        sigmas: noise levels, 1-D, in the order they are visited (normally decreasing).
        step_size: :math:`\varepsilon` > 0, the step at the last level.
        n_steps_each: T >= 1 updates per level.
        generator: optional torch.Generator for the noise.
        denoise: apply the final Tweedie denoising step.
        return_levels: also return the states at the end of each level, (L, N, D).

    Returns:
        (N, D) samples (detached), or ``(x, states_per_level)``.

    Raises:
        TypeError / ValueError: for bad arguments or a diverging chain.
    """
    x = check_matrix("x0", x0).detach().clone()
    sigmas = _noise_levels(sigmas, x)
    eps = check_positive_float("step_size", step_size)
    t_each = check_positive_int("n_steps_each", n_steps_each)
    sigma_last = sigmas[-1]
    states = []
    n = x.shape[0]
    for i, sigma in enumerate(sigmas):
        alpha = eps * float((sigma / sigma_last) ** 2)
        level = sigma.expand(n)
        for _ in range(t_each):
            s = _call_score(score_fn, x, level).detach()
            x = x + 0.5 * alpha * s + math.sqrt(alpha) * _randn(x.shape, x, generator)
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"annealed Langevin diverged at level {i + 1} (sigma={float(sigma):g}); lower "
                             f"step_size (now {eps:g})")
        if return_levels:
            states.append(x.clone())
    if denoise:
        x = x + float(sigma_last) ** 2 * _call_score(score_fn, x, sigma_last.expand(n)).detach()
    return (x, torch.stack(states)) if return_levels else x


# ------------------------------------------------------------------------------------------------
# a two-sample statistic for 2-D samples
# ------------------------------------------------------------------------------------------------


def _mmd_inputs(x, y, bandwidths):
    """The two samples as float64 CPU matrices (m, D), (n, D) with m, n >= 2, and the kernel bandwidths
    (default: :func:`coursekit.wasserstein.median_bandwidths` of the pooled sample)."""
    x = check_matrix("x", x, min_rows=2).detach().to("cpu", torch.float64)
    y = check_matrix("y", y, x.shape[1], min_rows=2).detach().to("cpu", torch.float64)
    if bandwidths is None:
        bandwidths = median_bandwidths(x, y)
    hs = [check_positive_float(f"bandwidths[{j}]", h) for j, h in enumerate(bandwidths)]
    check_positive_int("the number of bandwidths", len(hs))
    return x, y, hs


def gaussian_mmd2(x: torch.Tensor, y: torch.Tensor, bandwidths: Sequence[float] | None = None) -> float:
    r"""Unbiased squared maximum mean discrepancy with a mixture of Gaussian kernels, as a python float.

    .. math::

        \widehat{\mathrm{MMD}}^2_u = \frac{1}{m(m-1)}\sum_{i \ne j} k(x_i, x_j)
            + \frac{1}{n(n-1)}\sum_{i \ne j} k(y_i, y_j)
            - \frac{2}{mn}\sum_{i, j} k(x_i, y_j), \qquad
        k(a, b) = \frac{1}{|B|}\sum_{h \in B} \exp\Big(-\frac{\lVert a - b \rVert^2}{2 h^2}\Big)

    (Gretton et al. 2012, "A kernel two-sample test", JMLR 13, eq. 3). The estimator is the course's one
    Gaussian-kernel MMD^2, :func:`coursekit.wasserstein.mmd2_unbiased` (chapter 07); this wrapper evaluates it
    as a two-sample statistic: in float64 on the CPU, without gradients, with bandwidths fixed from the data by
    default (:func:`coursekit.wasserstein.median_bandwidths`: the median pairwise distance of the pooled sample
    times 0.25, 0.5, 1 and 2). The Gaussian kernel is characteristic, so the population MMD is zero only for
    equal distributions.

    Args:
        x: (m, D), y: (n, D) samples, m, n >= 2, finite floating point.
        bandwidths: kernel widths h > 0 in the units of the data (default: see above).

    Returns:
        python float (dimensionless; may be slightly negative when the distributions agree).

    Raises:
        TypeError / ValueError: for non-float or non-finite input, shapes other than (m, D) / (n, D), fewer than 2
            samples in a set, or a bandwidth that is not a positive number.
    """
    x, y, hs = _mmd_inputs(x, y, bandwidths)
    return float(mmd2_unbiased(x, y, hs))


def mmd_permutation_test(x: torch.Tensor, y: torch.Tensor, n_permutations: int = 100,
                         bandwidths: Sequence[float] | None = None, seed: int = 0) -> dict:
    r"""Permutation two-sample test with the statistic of :func:`gaussian_mmd2`.

    Under the null hypothesis that x and y come from one distribution, the pooled sample is
    exchangeable, so re-splitting it at random gives draws of the statistic's null distribution
    (Gretton et al. 2012, sec. 5). The kernel matrix of the pooled sample
    (:func:`coursekit.wasserstein.gaussian_kernel_matrix`) is computed once and each batch of permutations
    costs one matrix product with it.

    Args:
        x: (m, D), y: (n, D) samples (m, n >= 2). n_permutations: number of random splits, >= 1.
        bandwidths: as in :func:`gaussian_mmd2` (default from the pooled sample). seed: seed of the
            torch.Generator that draws the permutations.

    Returns:
        dict of python floats: ``mmd2`` (the observed statistic, equal to :func:`gaussian_mmd2` up to round-off),
        ``p_value`` ((1 + #{null >= observed}) / (1 + n_permutations)), ``null_mean``, ``null_q95``
        (95% quantile of the null draws), and the int ``n_permutations``.

    Raises:
        TypeError / ValueError: as :func:`gaussian_mmd2`, or for a bad ``n_permutations`` or a seed that is not a
            non-negative integer.
    """
    n_perm = check_positive_int("n_permutations", n_permutations)
    seed = check_nonnegative_int("seed", seed)
    x, y, hs = _mmd_inputs(x, y, bandwidths)
    m, n = x.shape[0], y.shape[0]
    pooled = torch.cat([x, y])
    kern = gaussian_kernel_matrix(pooled, pooled, hs)

    # With u the 0/1 indicator of the first set and w = 1 - u: the sums of kernel entries over the blocks are
    # u^T K u, w^T K w = 1^T K 1 - 2 u^T r + u^T K u and u^T K w = u^T r - u^T K u (r = K 1), so a batch
    # of splits costs one matrix product.
    rows, diag, total = kern.sum(1), kern.diagonal().clone(), kern.sum()

    def stats(u):  # u: (m + n, P) indicators -> (P,) statistics
        uku = (u * (kern @ u)).sum(0)
        ur, ud = u.T @ rows, u.T @ diag
        sxx = (uku - ud) / (m * (m - 1))
        syy = (total - 2 * ur + uku - (diag.sum() - ud)) / (n * (n - 1))
        return sxx + syy - 2 * (ur - uku) / (m * n)

    first = torch.zeros(m + n, 1, dtype=torch.float64)
    first[:m] = 1
    observed = float(stats(first)[0])
    g = torch.Generator().manual_seed(seed)
    null = []
    for start in range(0, n_perm, 32):
        p = min(32, n_perm - start)
        u = torch.zeros(m + n, p, dtype=torch.float64)
        for j in range(p):
            u[torch.randperm(m + n, generator=g)[:m], j] = 1
        null.append(stats(u))
    null = torch.cat(null)
    return {"mmd2": observed, "p_value": float((1 + (null >= observed).sum()) / (1 + n_perm)),
            "null_mean": float(null.mean()), "null_q95": float(torch.quantile(null, 0.95)),
            "n_permutations": n_perm}


# ------------------------------------------------------------------------------------------------
# noise-level and step-size rules (Song & Ermon 2020)
# ------------------------------------------------------------------------------------------------


def _std_normal_cdf(z: float) -> float:
    return 0.5 * math.erfc(-z / math.sqrt(2.0))


def shell_overlap(gamma: float, dim: int) -> float:
    r"""The overlap of the noise shells of two consecutive levels (Song & Ermon 2020, their rule for the
    noise levels after the first).

    For :math:`x \sim \mathcal{N}(0, \sigma^2 I_D)` the norm concentrates on a thin shell,
    :math:`\lVert x \rVert \approx \mathcal{N}(\sqrt{D}\,\sigma,\ \sigma^2/2)` for large D. With
    :math:`\gamma = \sigma_{i-1}/\sigma_i > 1`, the probability that a draw at level :math:`\sigma_i` has its norm
    within three standard deviations of the shell of level :math:`\sigma_{i-1}`, i.e.
    :math:`\lvert \lVert x \rVert - \sqrt{D}\sigma_{i-1} \rvert \le 3\sigma_{i-1}/\sqrt2`, is under that approximation

    .. math::

        \Phi\big(\sqrt{2D}(\gamma - 1) + 3\gamma\big) - \Phi\big(\sqrt{2D}(\gamma - 1) - 3\gamma\big).

    Args:
        gamma: ratio of consecutive noise levels, a float >= 1. dim: data dimension D >= 1.

    Returns:
        The overlap, a float in (0, 1) (dimensionless probability).

    Raises:
        TypeError / ValueError: gamma not a number >= 1, dim not a positive int.
    """
    g = check_positive_float("gamma", gamma)
    if g < 1:
        raise ValueError(f"gamma = sigma_(i-1) / sigma_i must be >= 1, got {g:g}")
    d = check_positive_int("dim", dim)
    centre = math.sqrt(2 * d) * (g - 1)
    return _std_normal_cdf(centre + 3 * g) - _std_normal_cdf(centre - 3 * g)


def noise_ratio_for_overlap(dim: int, overlap: float = 0.5) -> float:
    r"""The ratio :math:`\gamma > 1` of consecutive noise levels whose :func:`shell_overlap` is ``overlap``
    (Song & Ermon 2020 recommend 0.5), found by bisection. For D >= 5 the overlap starts at
    :math:`\Phi(3) - \Phi(-3)` at :math:`\gamma = 1`, rises slightly, then decreases towards 0, so every target
    below its value at 1 is crossed exactly once; for D <= 4 (:math:`\sqrt{2D} < 3`) it tends to 1 instead and the
    rule does not apply.

    Args:
        dim: data dimension D >= 5. overlap: target in (0, Phi(3) - Phi(-3)).

    Returns:
        :math:`\gamma` as a float, to a relative accuracy of 1e-12.

    Raises:
        TypeError / ValueError: dim < 5, or overlap outside the attainable range.
    """
    d = check_positive_int("dim", dim)
    if d < 5:
        raise ValueError(f"the shell-overlap rule needs dim >= 5 (sqrt(2 D) > 3), got dim={d}")
    target = check_positive_float("overlap", overlap)
    top = shell_overlap(1.0, d)
    if not target < top:
        raise ValueError(f"overlap must be in (0, {top:.6f}) (its value at gamma = 1), got {target:g}")
    lo, hi = 1.0, 2.0
    while shell_overlap(hi, d) > target:
        lo, hi = hi, 2 * hi
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if shell_overlap(mid, d) > target else (lo, mid)
        if hi - lo < 1e-12 * hi:
            break
    return 0.5 * (lo + hi)


def n_noise_levels(sigma_max: float, sigma_min: float, dim: int, overlap: float = 0.5) -> int:
    r"""The number of geometric noise levels L from ``sigma_max`` down to ``sigma_min`` whose ratio is at most
    :func:`noise_ratio_for_overlap` ``(dim, overlap)``: the smallest L with
    :math:`(\sigma_1/\sigma_L)^{1/(L-1)} \le \gamma`, i.e.
    :math:`L = \lceil 1 + \log(\sigma_1/\sigma_L)/\log\gamma \rceil` (Song & Ermon 2020).

    Args:
        sigma_max, sigma_min: :math:`\sigma_1 > \sigma_L > 0`. dim: data dimension D >= 5. overlap: see
            :func:`noise_ratio_for_overlap`.

    Returns:
        L >= 2 (an int).

    Raises:
        TypeError / ValueError: non-positive levels, sigma_min >= sigma_max, bad dim or overlap.
    """
    hi = check_positive_float("sigma_max", sigma_max)
    lo = check_positive_float("sigma_min", sigma_min)
    if lo >= hi:
        raise ValueError(f"sigma_min must be < sigma_max, got sigma_min={lo:g}, sigma_max={hi:g}")
    gamma = noise_ratio_for_overlap(dim, overlap)
    return max(2, math.ceil(1 + math.log(hi / lo) / math.log(gamma) - 1e-9))


def annealed_variance_ratio(step_size: float, sigma_min: float, gamma: float, n_steps_each: int) -> float:
    r"""The variance, in units of :math:`\sigma_i^2`, that :func:`annealed_langevin_sample` reaches after
    ``n_steps_each`` = T steps at level :math:`\sigma_i` when the data are one point (Song & Ermon 2020's
    analysis, rewritten for this module's convention :math:`x + \tfrac{\alpha}{2} s + \sqrt{\alpha}\, z`).

    Then :math:`q_{\sigma_i} = \mathcal{N}(0, \sigma_i^2 I)`, the score is :math:`-x/\sigma_i^2`, and with
    :math:`\alpha_i = \varepsilon\sigma_i^2/\sigma_L^2` a step is :math:`x \leftarrow a x + \sqrt{\alpha_i} z`,
    :math:`a = 1 - \varepsilon/(2\sigma_L^2)`. Started at the previous level's variance
    :math:`\sigma_{i-1}^2 = \gamma^2\sigma_i^2`, the variance after T steps divided by :math:`\sigma_i^2` is

    .. math::

        \frac{s_T^2}{\sigma_i^2} = a^{2T}(\gamma^2 - c) + c, \qquad c = \frac{1}{1 - \varepsilon/(4\sigma_L^2)},

    the same at every level; c is the chain's stationary variance ratio (the O(:math:`\varepsilon`) bias of
    unadjusted Langevin dynamics). 1 means the chain ends exactly on :math:`q_{\sigma_i}`.

    Args:
        step_size: :math:`\varepsilon`, 0 < step_size < 4 sigma_min^2 (else the chain diverges).
        sigma_min: :math:`\sigma_L` > 0. gamma: :math:`\sigma_{i-1}/\sigma_i` >= 1. n_steps_each: T >= 1.

    Returns:
        The ratio, a float > 0 (dimensionless).

    Raises:
        TypeError / ValueError: out-of-range arguments.
    """
    eps = check_positive_float("step_size", step_size)
    s_l = check_positive_float("sigma_min", sigma_min)
    g = check_positive_float("gamma", gamma)
    t_each = check_positive_int("n_steps_each", n_steps_each)
    if g < 1:
        raise ValueError(f"gamma must be >= 1, got {g:g}")
    u = eps / s_l**2
    if not u < 4:
        raise ValueError(f"step_size must be < 4 sigma_min^2 = {4 * s_l**2:g} for a stable chain, got {eps:g}")
    a = 1 - u / 2
    c = 1 / (1 - u / 4)
    return a ** (2 * t_each) * (g**2 - c) + c


def annealed_step_size(sigma_min: float, gamma: float, n_steps_each: int, *, n_grid: int = 4000) -> float:
    r"""The step size :math:`\varepsilon` that brings :func:`annealed_variance_ratio` closest to 1 for a given
    number of steps per level (Song & Ermon 2020: choose T as large as the budget allows, then
    :math:`\varepsilon` to make the ratio maximally close to 1).

    The ratio depends on :math:`\varepsilon` only through :math:`u = \varepsilon/\sigma_L^2 \in (0, 4)`; this searches a
    log-spaced grid of ``n_grid`` values of u and refines around the best one with a second grid.

    Args:
        sigma_min: :math:`\sigma_L` > 0. gamma: ratio of consecutive levels >= 1. n_steps_each: T >= 1.
        n_grid: grid size (>= 10).

    Returns:
        :math:`\varepsilon` as a float (units of x squared), in (0, 4 sigma_min^2).

    Raises:
        TypeError / ValueError: out-of-range arguments.
    """
    s_l = check_positive_float("sigma_min", sigma_min)
    n_grid = check_positive_int("n_grid", n_grid)
    if n_grid < 10:
        raise ValueError(f"n_grid must be >= 10, got {n_grid}")
    lo, hi = math.log(1e-8), math.log(4 * (1 - 1e-9))
    best = lo
    for _ in range(2):
        grid = [lo + (hi - lo) * k / (n_grid - 1) for k in range(n_grid)]
        errs = [abs(annealed_variance_ratio(math.exp(v) * s_l**2, s_l, gamma, n_steps_each) - 1) for v in grid]
        k = min(range(n_grid), key=errs.__getitem__)
        best = grid[k]
        width = (hi - lo) / (n_grid - 1)
        lo, hi = best - width, min(best + width, math.log(4 * (1 - 1e-9)))
    return math.exp(best) * s_l**2


# ------------------------------------------------------------------------------------------------
# noise-conditional score networks
# ------------------------------------------------------------------------------------------------


def _sigma_column(sigma, x: torch.Tensor) -> torch.Tensor:
    """sigma as an (N,) tensor on x's device/dtype (a float or 0-d tensor is broadcast)."""
    sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    if sigma.ndim == 0:
        sigma = sigma.expand(x.shape[0])
    if sigma.shape != (x.shape[0],):
        raise ValueError(f"sigma must be a float or a ({x.shape[0]},) tensor, got shape {tuple(sigma.shape)}")
    return check_all_positive("sigma", sigma)


class _SigmaEmbedding(nn.Module):
    """Features of log sigma: sin/cos at ``n_freq`` frequencies, then a Linear + SiLU."""

    def __init__(self, dim: int, n_freq: int = 8):
        super().__init__()
        self.register_buffer("freqs", torch.arange(1, n_freq + 1, dtype=torch.float32) * 0.5, persistent=False)
        self.proj = nn.Sequential(nn.Linear(2 * n_freq + 1, dim), nn.SiLU())

    def forward(self, log_sigma: torch.Tensor) -> torch.Tensor:
        a = log_sigma[:, None] * self.freqs[None]
        return self.proj(torch.cat([log_sigma[:, None], torch.sin(a), torch.cos(a)], dim=1))


class NoiseConditionalMLP(nn.Module):
    r"""A noise-conditional score network for low-dimensional data:
    :math:`s_\theta(x, \sigma) = f_\theta(x, \sigma) / \sigma`.

    :math:`f_\theta` is an MLP on the concatenation of :math:`x` and an embedding of :math:`\log \sigma`. Dividing by
    :math:`\sigma` (Song & Ermon 2020, "Improved techniques for training score-based generative models",
    sec. 3.3) makes :math:`f_\theta = \sigma s_\theta` of order one at every level: it is minus a
    noise prediction, :math:`f_\theta = -\hat\varepsilon`.

    Args:
        dim: data dimension D. hidden: widths of the hidden layers. emb_dim: size of the sigma embedding.

    Shapes:
        ``forward(x, sigma)``: x float (N, D), sigma a float or (N,) tensor of positive levels -> (N, D).
    """

    def __init__(self, dim: int = 2, hidden: Sequence[int] = (128, 128, 128), emb_dim: int = 32):
        super().__init__()
        self.dim = check_positive_int("dim", dim)
        emb_dim = check_positive_int("emb_dim", emb_dim)
        self.embed = _SigmaEmbedding(emb_dim)
        layers: list[nn.Module] = []
        prev = self.dim + emb_dim
        for i, h in enumerate(hidden):
            h = check_positive_int(f"hidden[{i}]", h)
            layers += [nn.Linear(prev, h), nn.SiLU()]
            prev = h
        layers.append(nn.Linear(prev, self.dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, sigma) -> torch.Tensor:
        check_shape("x", x, ("N", self.dim))
        sigma = _sigma_column(sigma, x)
        h = torch.cat([x, self.embed(torch.log(sigma))], dim=1)
        return self.net(h) / sigma[:, None]


def _digits_and_sigma(x, sigma):
    """The shape of a batch of 8x8 digits, (N, 64) or (N, 1, 8, 8), and its noise levels, one per example (N,)."""
    check_tensor("x", x)
    if not ((x.ndim == 2 and x.shape[1] == 64) or (x.ndim == 4 and tuple(x.shape[1:]) == (1, 8, 8))):
        raise ValueError(f"x must have shape (N, 64) or (N, 1, 8, 8), got {tuple(x.shape)}")
    return x.shape, _sigma_column(sigma, x)


class NoiseConditionalConvNet8x8(nn.Module):
    r"""A small noise-conditional convolutional score network for 8x8 images,
    :math:`s_\theta(x, \sigma) = f_\theta(x, \sigma) / \sigma`.

    ``depth`` 3x3 convolutions with ``channels`` channels at full 8x8 resolution (the receptive field,
    2 * depth + 1 pixels, covers the image for depth >= 4), each followed by adding a per-channel shift
    computed from the :math:`\log\sigma` embedding (FiLM-style conditioning without scale) and SiLU, with
    residual connections; a final 3x3 convolution maps back to one channel. Images are passed flattened,
    as the rest of the course's digits code does.

    Args:
        channels: feature channels. depth: number of hidden convolutions (>= 1). emb_dim: embedding size.

    Shapes:
        ``forward(x, sigma)``: x float (N, 64) (or (N, 1, 8, 8)), sigma a float or (N,) tensor -> the same shape as x.
    """

    def __init__(self, channels: int = 64, depth: int = 4, emb_dim: int = 64):
        super().__init__()
        channels = check_positive_int("channels", channels)
        depth = check_positive_int("depth", depth)
        emb_dim = check_positive_int("emb_dim", emb_dim)
        self.embed = _SigmaEmbedding(emb_dim)
        self.inp = nn.Conv2d(1, channels, 3, padding=1)
        self.convs = nn.ModuleList([nn.Conv2d(channels, channels, 3, padding=1) for _ in range(depth)])
        self.shifts = nn.ModuleList([nn.Linear(emb_dim, channels) for _ in range(depth)])
        self.out = nn.Conv2d(channels, 1, 3, padding=1)
        self.act = nn.SiLU()

    def forward(self, x: torch.Tensor, sigma) -> torch.Tensor:
        shape, sigma = _digits_and_sigma(x, sigma)
        emb = self.embed(torch.log(sigma))
        h = self.act(self.inp(x.reshape(-1, 1, 8, 8)))
        for conv, shift in zip(self.convs, self.shifts):
            h = h + self.act(conv(h) + shift(emb)[:, :, None, None])
        out = self.out(h).reshape(shape)
        return out / sigma.reshape(-1, *([1] * (len(shape) - 1)))


class NoiseConditionalUNet8x8(nn.Module):
    r"""A noise-conditional score network for 8x8 images built on chapter 08's U-Net (:class:`coursekit.nets.UNet`):
    :math:`s_\theta(x, \sigma) = f_\theta(x, \tau(\sigma)) / \sigma`.

    The noise level enters through the U-Net's sinusoidal time embedding at the "time"
    :math:`\tau(\sigma) = 100\,(\log\sigma + 5)`, a fixed affine map of :math:`\log\sigma` that sends
    :math:`\sigma \in [e^{-5}, e^{5}]` to :math:`[0, 1000]`, the range of times the embedding's frequencies were
    designed for. As in :class:`NoiseConditionalMLP`, dividing by :math:`\sigma` (Song & Ermon 2020) makes
    :math:`f_\theta = \sigma s_\theta = -\hat\varepsilon` of order one; the U-Net's output layer starts at zero, so the
    initial score is 0 and the initial :func:`ncsn_loss` is :math:`D/2`.

    Args:
        channels: the U-Net's width C (>= 8, divisible by 8).

    Shapes:
        ``forward(x, sigma)``: x float (N, 64) or (N, 1, 8, 8), sigma a float or (N,) tensor of positive levels ->
        the same shape as x.

    Raises:
        ValueError: bad ``channels``, a wrong image shape, or non-positive sigma.
    """

    def __init__(self, channels: int = 16):
        super().__init__()
        self.unet = UNet(in_channels=1, channels=check_positive_int("channels", channels))

    def forward(self, x: torch.Tensor, sigma) -> torch.Tensor:
        shape, sigma = _digits_and_sigma(x, sigma)
        out = self.unet(x.reshape(-1, 1, 8, 8), 100.0 * (torch.log(sigma) + 5.0)).reshape(shape)
        return out / sigma.reshape(-1, *([1] * (len(shape) - 1)))
