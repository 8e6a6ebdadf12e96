r"""Chapter 10: flow matching and the SDE/ODE view of diffusion.

A generative model in continuous time moves noise into data along an ODE :math:`\mathrm dx/\mathrm dt = v_t(x)`.
This module holds the pieces the chapter derives and trains:

* **likelihood by the ODE** (Chen et al. 2018; Grathwohl et al. 2019): the instantaneous change of variables
  :math:`\mathrm d\log p_t(x_t)/\mathrm dt = -\nabla\cdot v_t(x_t)`, with the divergence exact by autograd
  (:func:`divergence`, chapter 09's :func:`coursekit.score.jacobian_trace`) or by Hutchinson's estimator
  (:func:`hutchinson_divergence`, :func:`hutchinson_variance`), integrated backwards by :func:`ode_log_likelihood`;
* **ODE samplers**: :func:`euler_step`, :func:`heun_step`, :func:`ode_solve`, :func:`nfe`;
* **flow matching** (Lipman et al. 2023; Liu et al. 2023; Albergo & Vanden-Eijnden 2023): conditional
  Gaussian paths :math:`x_t = \alpha_t x_1 + \sigma_t x_0` with :math:`x_0 \sim \mathcal N(0, \mathbf I)` the noise
  and :math:`x_1` the data (:data:`PATHS`, :func:`path_coefficients`, :func:`interpolate`), the conditional target
  (:func:`cfm_target`, :func:`conditional_velocity`), the loss (:func:`cfm_loss`), and the marginal vector field,
  score and density in closed form when the data are a Gaussian mixture (:func:`mixture_marginal`);
* **reflow** (Liu et al. 2023): :func:`straightness`;
* **the SDE view** (Song et al. 2021; Anderson 1982): :class:`VPSDE`, :class:`VESDE` (data at t = 0, noise at
  t = 1), their discretisations (chapter 08's betas, chapter 09's noise levels), the reverse-time SDE sampler
  :func:`reverse_sde_sample` and the probability-flow ODE (:func:`probability_flow_velocity`,
  :func:`probability_flow_sample`);
* **conversions** between noise, score, clean-data and velocity predictions (:func:`convert_prediction`);
* **networks**: :class:`VelocityMLP` for 2-D data and :class:`TimeScaled`, which feeds chapter 08's U-Net a
  continuous time.

Time conventions differ between papers. Flow matching here runs from noise at t = 0 to data at t = 1 (as Lipman
et al. 2023 and Liu et al. 2023); the SDEs run from data at t = 0 to noise at t = 1 (as Song et al. 2021). Every
function that needs a Gaussian path takes its coefficients :math:`(\alpha_t, \sigma_t)` of
:math:`x_t = \alpha_t\,x_\text{data} + \sigma_t\,\varepsilon`, which serves both conventions.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from ._validate import (
    check_batch,
    check_choice,
    check_finite,
    check_floating,
    check_matrix,
    check_nonnegative_float,
    check_positive_float,
    check_positive_int,
    check_same_shape,
    check_tensor,
)
from .flows import standard_normal_log_prob
from .nets import MLP
from .score import jacobian_trace

__all__ = [
    "PATHS",
    "PROBES",
    "PREDICTIONS",
    "METHODS",
    "path_coefficients",
    "interpolate",
    "cfm_target",
    "conditional_velocity",
    "cfm_loss",
    "mixture_marginal",
    "divergence",
    "hutchinson_divergence",
    "hutchinson_variance",
    "euler_step",
    "heun_step",
    "nfe",
    "ode_solve",
    "ode_log_likelihood",
    "straightness",
    "VPSDE",
    "VESDE",
    "reverse_sde_sample",
    "probability_flow_velocity",
    "probability_flow_sample",
    "convert_prediction",
    "VelocityMLP",
    "TimeScaled",
]

#: Conditional paths :math:`x_t = \alpha_t x_1 + \sigma_t x_0` (noise :math:`x_0` at t = 0, data :math:`x_1` at t = 1).
PATHS = ("linear", "ot", "cosine")
#: Probe distributions of Hutchinson's estimator.
PROBES = ("rademacher", "gaussian")
#: Kinds of network output that :func:`convert_prediction` converts between.
PREDICTIONS = ("eps", "score", "data", "velocity")
#: ODE solvers of :func:`ode_solve`.
METHODS = ("euler", "heun")


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------


def _times(t, x: torch.Tensor, name: str = "t") -> torch.Tensor:
    """t as an (N,) tensor of x's dtype/device: a float, a 0-d tensor or an (N,) tensor; finite."""
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    if t.ndim == 0:
        t = t.expand(x.shape[0])
    if t.shape != (x.shape[0],):
        raise ValueError(f"{name} must be a float or a ({x.shape[0]},) tensor, got shape {tuple(t.shape)}")
    return check_finite(name, t)


def _column(c: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(N,) -> (N, 1, ..., 1), broadcastable against x."""
    return c.reshape((-1,) + (1,) * (x.ndim - 1))


#: Times this far outside [0, 1] are round-off of a solver's grid and are clamped; further out is an error.
_TIME_SLACK = 1e-9


def _clamp_unit(t: torch.Tensor, name: str) -> torch.Tensor:
    if ((t < -_TIME_SLACK) | (t > 1 + _TIME_SLACK)).any():
        raise ValueError(f"{name} must lie in [0, 1], got values in [{t.min().item():g}, {t.max().item():g}]")
    return t.clamp(0, 1)


def _unit_times(t, x, name="t"):
    return _clamp_unit(_times(t, x, name), name)


def _call_field(v_fn: Callable, x: torch.Tensor, t: torch.Tensor, what: str = "v_fn") -> torch.Tensor:
    v = v_fn(x, t)
    if not isinstance(v, torch.Tensor) or v.shape != x.shape:
        got = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
        raise ValueError(f"{what}(x, t) must return a tensor of x's shape {tuple(x.shape)}, got {got}")
    return v


def _coef(c, x: torch.Tensor, name: str) -> torch.Tensor:
    """A path coefficient (float, 0-d or (N,)) as an (N, 1, ...) column."""
    return _column(_times(c, x, name), x)


# ------------------------------------------------------------------------------------------------
# conditional paths and the flow-matching objective
# ------------------------------------------------------------------------------------------------


def path_coefficients(path: str, t, *, sigma_min: float = 0.0):
    r"""The coefficients of a conditional Gaussian path :math:`x_t = \alpha_t x_1 + \sigma_t x_0` and their
    time derivatives, with noise :math:`x_0 \sim \mathcal N(0, \mathbf I)` at t = 0 and data :math:`x_1` at t = 1.

    * ``"linear"`` (rectified flow, Liu et al. 2023; the linear interpolant of Albergo & Vanden-Eijnden 2023):
      :math:`\alpha_t = t,\ \sigma_t = 1 - t`.
    * ``"ot"`` (the optimal-transport path of Lipman et al. 2023, eq. 20):
      :math:`\alpha_t = t,\ \sigma_t = 1 - (1 - \sigma_\text{min})t`; at t = 1 a Gaussian of width
      :math:`\sigma_\text{min}` around the data point remains.
    * ``"cosine"`` (the trigonometric interpolant of Albergo & Vanden-Eijnden 2023):
      :math:`\alpha_t = \sin(\pi t/2),\ \sigma_t = \cos(\pi t/2)`, so :math:`\alpha_t^2 + \sigma_t^2 = 1`.

    Args:
        path: one of :data:`PATHS`. t: float or float tensor of times in [0, 1] (any shape).
        sigma_min: ``"ot"``'s final width, in [0, 1) (ignored by the others).

    Returns:
        ``(alpha, sigma, dalpha, dsigma)``, tensors of ``t``'s shape (float64 for a python float).

    Raises:
        ValueError: unknown path, t outside [0, 1] or not finite, sigma_min outside [0, 1).
    """
    check_choice("path", path, PATHS)
    t = torch.as_tensor(t, dtype=torch.float64) if not isinstance(t, torch.Tensor) else check_floating("t", t)
    t = _clamp_unit(check_finite("t", t), "t")
    sigma_min = check_nonnegative_float("sigma_min", sigma_min)
    if sigma_min >= 1:
        raise ValueError(f"sigma_min must be in [0, 1), got {sigma_min:g}")
    one = torch.ones_like(t)
    if path == "linear":
        return t, 1 - t, one, -one
    if path == "ot":
        return t, 1 - (1 - sigma_min) * t, one, -(1 - sigma_min) * one
    h = 0.5 * math.pi
    return torch.sin(h * t), torch.cos(h * t), h * torch.cos(h * t), -h * torch.sin(h * t)


def _path_columns(path, t, x, sigma_min):
    t = _unit_times(t, x)
    return [_column(c, x) for c in path_coefficients(path, t, sigma_min=sigma_min)]


def interpolate(x0: torch.Tensor, x1: torch.Tensor, t, *, path: str = "linear", sigma_min: float = 0.0) -> torch.Tensor:
    r"""A point on the conditional path, :math:`x_t = \alpha_t x_1 + \sigma_t x_0` (:func:`path_coefficients`).

    Args:
        x0: noise, float (N, ...). x1: data, same shape. t: float or (N,) times in [0, 1].

    Returns:
        (N, ...) tensor like ``x1``.

    Raises:
        ValueError / TypeError: mismatched shapes, non-finite or non-float inputs, t out of range.
    """
    x0, x1 = check_batch("x0", x0), check_batch("x1", x1)
    check_same_shape(x0=x0, x1=x1)
    a, s, _, _ = _path_columns(path, t, x1, sigma_min)
    return a * x1 + s * x0


def cfm_target(x0: torch.Tensor, x1: torch.Tensor, t, *, path: str = "linear", sigma_min: float = 0.0) -> torch.Tensor:
    r"""The conditional flow-matching target, the velocity of the conditional path at :math:`x_t`:
    :math:`u_t(x_t \mid x_1) = \dot\alpha_t x_1 + \dot\sigma_t x_0`; :math:`x_1 - x_0` for the linear path,
    :math:`x_1 - (1 - \sigma_\text{min})x_0` for Lipman et al.'s OT path (their eq. 23).

    Args / Returns / Raises: as :func:`interpolate`.
    """
    x0, x1 = check_batch("x0", x0), check_batch("x1", x1)
    check_same_shape(x0=x0, x1=x1)
    _, _, da, ds = _path_columns(path, t, x1, sigma_min)
    return da * x1 + ds * x0


def conditional_velocity(x: torch.Tensor, x1: torch.Tensor, t, *, path: str = "linear",
                         sigma_min: float = 0.0) -> torch.Tensor:
    r"""The conditional vector field at any point x (Lipman et al. 2023, theorem 3):
    :math:`u_t(x \mid x_1) = \frac{\dot\sigma_t}{\sigma_t}(x - \alpha_t x_1) + \dot\alpha_t x_1`,
    the field whose flow maps :math:`x_0` to :math:`\alpha_t x_1 + \sigma_t x_0`. At :math:`x = x_t` it equals
    :func:`cfm_target`.

    Args:
        x: float (N, ...). x1: data, same shape. t: float or (N,) times in [0, 1] with :math:`\sigma_t > 0`.

    Raises:
        ValueError: as :func:`interpolate`, and :math:`\sigma_t = 0` (the linear path at t = 1).
    """
    x, x1 = check_batch("x", x), check_batch("x1", x1)
    check_same_shape(x=x, x1=x1)
    a, s, da, ds = _path_columns(path, t, x1, sigma_min)
    if (s <= 0).any():
        raise ValueError("the conditional field needs sigma_t > 0 (the linear path at t = 1 has sigma_t = 0)")
    return ds / s * (x - a * x1) + da * x1


def cfm_loss(v_fn: Callable, x1: torch.Tensor, *, path: str = "linear", sigma_min: float = 0.0,
             x0: torch.Tensor | None = None, t=None, generator: torch.Generator | None = None) -> torch.Tensor:
    r"""The conditional flow-matching loss on a minibatch (Lipman et al. 2023, eq. 9; Liu et al. 2023, eq. 1):

    .. math::

        \mathcal L_\text{CFM}(\theta) = \mathbb E_{t \sim U[0,1],\, x_0 \sim \mathcal N(0, \mathbf I),\, x_1 \sim q}
            \tfrac1D\big\lVert v_\theta(x_t, t) - u_t(x_t \mid x_1)\big\rVert^2,\qquad
        x_t = \alpha_t x_1 + \sigma_t x_0,

    its gradient equal to that of the intractable flow-matching loss with the marginal field (the chapter's
    theorem). The squared error is averaged over the D coordinates (as chapter 08's ``l_simple``).

    Args:
        v_fn: the model ``v_fn(x, t) -> (N, ...)``, t an (N,) float tensor in [0, 1].
        x1: data, float (N, ...). path, sigma_min: see :func:`path_coefficients`.
        x0: the noise paired with each x1 (default: fresh :math:`\mathcal N(0, \mathbf I)`; a reflow passes
            the coupled noise here). t: times (default: fresh uniform on [0, 1)). generator: for the defaults.

    Returns:
        0-d tensor, differentiable in ``v_fn``'s parameters (units: squared velocity per coordinate).

    Raises:
        ValueError / TypeError: bad shapes or values, an output of ``v_fn`` of the wrong shape.
    """
    x1 = check_batch("x1", x1)
    if x0 is None:
        x0 = torch.randn(x1.shape, generator=generator, dtype=x1.dtype, device=x1.device)
    if t is None:
        t = torch.rand(x1.shape[0], generator=generator, dtype=x1.dtype, device=x1.device)
    t = _unit_times(t, x1)
    xt = interpolate(x0, x1, t, path=path, sigma_min=sigma_min)
    target = cfm_target(x0, x1, t, path=path, sigma_min=sigma_min)
    v = _call_field(v_fn, xt, t)
    return ((v - target) ** 2).reshape(x1.shape[0], -1).mean(1).mean()


def mixture_marginal(x: torch.Tensor, alpha, sigma, means: torch.Tensor, stds: torch.Tensor,
                     weights: torch.Tensor, *, dalpha=None, dsigma=None) -> dict:
    r"""The marginal of :math:`x_t = \alpha_t x_\text{data} + \sigma_t\varepsilon` in closed form when the data are
    an isotropic Gaussian mixture :math:`\sum_k \pi_k \mathcal N(m_k, s_k^2\mathbf I)` and
    :math:`\varepsilon \sim \mathcal N(0, \mathbf I)` independent:

    .. math::

        p_t(x) = \sum_k \pi_k\,\mathcal N(x;\ \alpha_t m_k,\ v_k\mathbf I),\quad
        v_k = \alpha_t^2 s_k^2 + \sigma_t^2,\qquad
        w_k(x) = \frac{\pi_k\,\mathcal N(x; \alpha_t m_k, v_k\mathbf I)}{p_t(x)},

    and, from the joint Gaussian of :math:`(x_\text{data}, \varepsilon, x_t)` within component k,
    :math:`\mathbb E[x_\text{data} \mid x, k] = m_k + \alpha_t s_k^2 (x - \alpha_t m_k)/v_k` and
    :math:`\mathbb E[\varepsilon \mid x, k] = \sigma_t (x - \alpha_t m_k)/v_k`. Then the score is
    :math:`\nabla\log p_t(x) = -\sum_k w_k (x - \alpha_t m_k)/v_k` and the marginal vector field, the posterior
    expectation of the conditional one (Lipman et al. 2023, eq. 8), is
    :math:`u_t(x) = \dot\alpha_t\,\mathbb E[x_\text{data} \mid x] + \dot\sigma_t\,\mathbb E[\varepsilon \mid x]`.

    Args:
        x: float (N, D). alpha, sigma: floats or (N,) tensors, :math:`\alpha_t \ge 0,\ \sigma_t \ge 0`, and
            every :math:`v_k > 0`. means: (K, D). stds: (K,) positive. weights: (K,) non-negative, summing to one.
        dalpha, dsigma: the time derivatives (floats or (N,)); if given, the velocity is returned as well.

    Returns:
        dict with ``"log_prob"`` (N,) in nats, ``"score"`` (N, D), ``"data_mean"`` (N, D),
        ``"eps_mean"`` (N, D), ``"posterior"`` (N, K) and, with the derivatives, ``"velocity"`` (N, D).

    Raises:
        ValueError / TypeError: bad shapes, negative or non-finite coefficients, weights not summing to one.
    """
    x = check_matrix("x", x)
    d = x.shape[1]
    means = check_matrix("means", means, d)
    k = means.shape[0]
    stds, weights = check_floating("stds", stds), check_floating("weights", weights)
    if stds.shape != (k,) or weights.shape != (k,):
        raise ValueError(f"stds and weights must have shape ({k},), got {tuple(stds.shape)}, {tuple(weights.shape)}")
    if (stds <= 0).any():
        raise ValueError("stds must be positive")
    if (weights < 0).any() or abs(weights.sum().item() - 1) > 1e-6:
        raise ValueError(f"weights must be non-negative and sum to one, got sum {weights.sum().item():g}")
    a, s = _times(alpha, x, "alpha")[:, None], _times(sigma, x, "sigma")[:, None]
    if (a < 0).any() or (s < 0).any():
        raise ValueError("alpha and sigma must be non-negative")
    v = a**2 * stds[None] ** 2 + s**2  # (N, K)
    if (v <= 0).any():
        raise ValueError("alpha_t^2 s_k^2 + sigma_t^2 must be positive for every component")
    diff = x[:, None, :] - a[:, :, None] * means[None]  # (N, K, D)
    log_comp = (torch.log(weights)[None] - 0.5 * d * torch.log(2 * math.pi * v)
                - 0.5 * (diff**2).sum(-1) / v)
    log_prob = torch.logsumexp(log_comp, 1)
    w = torch.softmax(log_comp, 1)  # (N, K)
    scaled = diff / v[:, :, None]
    data_mean = (w[:, :, None] * (means[None] + (a * stds[None] ** 2)[:, :, None] * scaled)).sum(1)
    eps_mean = s * (w[:, :, None] * scaled).sum(1)
    out = {"log_prob": log_prob, "score": -(w[:, :, None] * scaled).sum(1), "data_mean": data_mean,
           "eps_mean": eps_mean, "posterior": w}
    if (dalpha is None) != (dsigma is None):
        raise ValueError("give both dalpha and dsigma, or neither")
    if dalpha is not None:
        da, ds = _times(dalpha, x, "dalpha")[:, None], _times(dsigma, x, "dsigma")[:, None]
        out["velocity"] = da * data_mean + ds * eps_mean
    return out


# ------------------------------------------------------------------------------------------------
# divergence: exact and Hutchinson
# ------------------------------------------------------------------------------------------------


def divergence(v_fn: Callable, x: torch.Tensor, t, *, return_velocity: bool = False):
    r"""The exact divergence :math:`\nabla\cdot v_t(x) = \operatorname{tr}\partial v_t/\partial x` by autograd,
    D backward passes (chapter 09's :func:`coursekit.score.jacobian_trace` applied to :math:`x \mapsto v_t(x)`).

    Args:
        v_fn: ``v_fn(x, t)``, examples independent. x: float (N, ...), any trailing shape (flattened to D).
        t: float or (N,) times. return_velocity: also return :math:`v_t(x)` (detached).

    Returns:
        (N,) divergences (units 1/time), or ``(div, v)``.

    Raises:
        ValueError / TypeError: bad x or t, a field of the wrong output shape.
    """
    x = check_batch("x", x)
    t = _times(t, x)
    shape = x.shape
    flat = x.reshape(shape[0], -1)
    div, v = jacobian_trace(lambda z: _call_field(v_fn, z.reshape(shape), t).reshape(shape[0], -1), flat,
                            return_score=True)
    return (div.detach(), v.detach().reshape(shape)) if return_velocity else div.detach()


def _probes(shape, like, probe, generator):
    z = torch.randn(shape, generator=generator, dtype=like.dtype, device=like.device)
    if probe == "rademacher":
        z = torch.sign(z) + (z == 0).to(z.dtype)
    return z


def hutchinson_divergence(v_fn: Callable, x: torch.Tensor, t, *, n_probes: int = 1, probe: str = "rademacher",
                          noise: torch.Tensor | None = None, generator: torch.Generator | None = None,
                          return_velocity: bool = False, create_graph: bool = False):
    r"""Hutchinson's unbiased estimate of the divergence (Hutchinson 1989; used for FFJORD by Grathwohl et al.
    2019): :math:`\nabla\cdot v = \mathbb E_\varepsilon[\varepsilon^\top (\partial v/\partial x)\,\varepsilon]` for any
    probe with :math:`\mathbb E[\varepsilon\varepsilon^\top] = \mathbf I`; each probe costs one vector-Jacobian
    product, whatever D (the same trick as chapter 09's sliced score matching).

    Args:
        v_fn, x, t: as :func:`divergence`. n_probes: M >= 1 probes per example (averaged).
        probe: ``"rademacher"`` (uniform on :math:`\{-1, 1\}^D`) or ``"gaussian"``.
        noise: fixed probes (M, N, ...) (FFJORD keeps them fixed along one ODE solve); overrides the others.
        generator: for fresh probes. return_velocity: also return :math:`v_t(x)`.
        create_graph: keep the graph (to train through the estimate).

    Returns:
        (N,) estimates, or ``(estimate, v)``.

    Raises:
        ValueError / TypeError: bad x, t, n_probes, probe, or noise of the wrong shape.
    """
    x = check_batch("x", x)
    t = _times(t, x)
    check_choice("probe", probe, PROBES)
    if noise is None:
        noise = _probes((check_positive_int("n_probes", n_probes),) + tuple(x.shape), x, probe, generator)
    else:
        noise = check_floating("noise", noise)
        if noise.ndim != x.ndim + 1 or noise.shape[1:] != x.shape:
            raise ValueError(f"noise must have shape (M, {', '.join(map(str, x.shape))}), got {tuple(noise.shape)}")
    with torch.enable_grad():
        xr = x.detach().requires_grad_(True) if not x.requires_grad else x
        v = _call_field(v_fn, xr, t)
        est = torch.zeros(x.shape[0], dtype=v.dtype, device=v.device)
        for j in range(noise.shape[0]):
            (g,) = torch.autograd.grad((v * noise[j]).sum(), xr, create_graph=create_graph, retain_graph=True)
            est = est + (g * noise[j]).reshape(x.shape[0], -1).sum(1)
    est = est / noise.shape[0]
    if not create_graph:
        est, v = est.detach(), v.detach()
    return (est, v) if return_velocity else est


def hutchinson_variance(jacobian: torch.Tensor, probe: str = "rademacher") -> torch.Tensor:
    r"""The variance of one probe's estimate :math:`\varepsilon^\top A\varepsilon` of :math:`\operatorname{tr}A`, in
    closed form: with :math:`S = (A + A^\top)/2`,

    .. math::

        \operatorname{Var}_\text{Gaussian} = 2\lVert S\rVert_F^2,\qquad
        \operatorname{Var}_\text{Rademacher} = 2\Big(\lVert S\rVert_F^2 - \sum_i A_{ii}^2\Big)

    (Hutchinson 1989 used Rademacher probes; by these formulas their variance never exceeds the Gaussian one, and
    is zero for a diagonal A.)

    Args:
        jacobian: float (..., D, D). probe: one of :data:`PROBES`.

    Returns:
        tensor (...), non-negative.
    """
    a = check_floating("jacobian", jacobian)
    if a.ndim < 2 or a.shape[-1] != a.shape[-2]:
        raise ValueError(f"jacobian must have shape (..., D, D), got {tuple(a.shape)}")
    check_choice("probe", probe, PROBES)
    s = 0.5 * (a + a.transpose(-1, -2))
    fro = (s**2).sum((-1, -2))
    if probe == "gaussian":
        return 2 * fro
    return 2 * (fro - (torch.diagonal(a, dim1=-2, dim2=-1) ** 2).sum(-1))


# ------------------------------------------------------------------------------------------------
# ODE solvers
# ------------------------------------------------------------------------------------------------


def euler_step(v_fn: Callable, x: torch.Tensor, t, dt: float) -> torch.Tensor:
    r"""One explicit Euler step of :math:`\mathrm dx/\mathrm dt = v_t(x)`: :math:`x + h\,v_t(x)`; local error
    :math:`O(h^2)`, global :math:`O(h)`. One network evaluation.

    Args:
        v_fn: ``v_fn(x, t)`` with t an (N,) tensor. x: float (N, ...). t: float or (N,) current time.
        dt: step h (negative to integrate backwards in time).

    Returns:
        (N, ...) the state at t + dt.
    """
    x = check_batch("x", x)
    t = _times(t, x)
    dt = float(dt)
    if not math.isfinite(dt):
        raise ValueError(f"dt must be finite, got {dt}")
    return x + dt * _call_field(v_fn, x, t)


def heun_step(v_fn: Callable, x: torch.Tensor, t, dt: float) -> torch.Tensor:
    r"""One step of Heun's method (the explicit trapezoidal rule, a second-order Runge-Kutta method):

    .. math::

        \tilde x = x + h\,v_t(x),\qquad x_{t+h} = x + \tfrac h2\big(v_t(x) + v_{t+h}(\tilde x)\big),

    local error :math:`O(h^3)`, global :math:`O(h^2)`, two network evaluations (Karras et al. 2022 use it for
    diffusion ODEs). Arguments as :func:`euler_step`.
    """
    x = check_batch("x", x)
    t = _times(t, x)
    dt = float(dt)
    if not math.isfinite(dt):
        raise ValueError(f"dt must be finite, got {dt}")
    k1 = _call_field(v_fn, x, t)
    k2 = _call_field(v_fn, x + dt * k1, t + dt)
    return x + 0.5 * dt * (k1 + k2)


def nfe(method: str, n_steps: int) -> int:
    """Network evaluations of :func:`ode_solve`: ``n_steps`` for Euler, ``2 n_steps`` for Heun."""
    check_choice("method", method, METHODS)
    return check_positive_int("n_steps", n_steps) * (1 if method == "euler" else 2)


def ode_solve(v_fn: Callable, x: torch.Tensor, n_steps: int, *, method: str = "heun", t_start: float = 0.0,
              t_end: float = 1.0, keep_all: bool = False):
    r"""Integrate :math:`\mathrm dx/\mathrm dt = v_t(x)` from ``t_start`` to ``t_end`` with ``n_steps`` equal steps
    (:func:`euler_step` or :func:`heun_step`; :func:`nfe` network evaluations). Sampling a flow-matching
    model: ``ode_solve(model, noise, n)``. ``t_end < t_start`` integrates backwards.

    Args:
        v_fn: ``v_fn(x, t)``. x: float (N, ...), the state at ``t_start``. n_steps: >= 1.
        method: one of :data:`METHODS`. t_start, t_end: finite floats. keep_all: also return the states.

    Returns:
        (N, ...) the state at ``t_end``, or ``(x, states)`` with the ``n_steps + 1`` states including both ends.

    Raises:
        ValueError / TypeError: bad x, method, n_steps or times.
    """
    x = check_batch("x", x)
    n = check_positive_int("n_steps", n_steps)
    check_choice("method", method, METHODS)
    t_start, t_end = float(t_start), float(t_end)
    if not (math.isfinite(t_start) and math.isfinite(t_end)):
        raise ValueError(f"t_start and t_end must be finite, got {t_start}, {t_end}")
    step = euler_step if method == "euler" else heun_step
    grid = [t_start + (t_end - t_start) * i / n for i in range(n + 1)]
    states = [x]
    for i in range(n):
        x = step(v_fn, x, grid[i], grid[i + 1] - grid[i])
        if keep_all:
            states.append(x)
    return (x, states) if keep_all else x


def ode_log_likelihood(v_fn: Callable, x: torch.Tensor, *, n_steps: int = 50, method: str = "heun",
                       estimator: str = "exact", n_probes: int = 1, probe: str = "rademacher",
                       generator: torch.Generator | None = None, t_data: float = 1.0, t_noise: float = 0.0,
                       base_log_prob: Callable | None = None) -> dict:
    r"""The log-likelihood of a continuous normalizing flow (Chen et al. 2018, theorem 1; Grathwohl et al. 2019):
    along a trajectory of :math:`\mathrm dx/\mathrm dt = v_t(x)`,
    :math:`\frac{\mathrm d}{\mathrm dt}\log p_t(x_t) = -\nabla\cdot v_t(x_t)`, hence

    .. math::

        \log p_{t_\text{data}}(x) = \log p_{t_\text{noise}}(x_{t_\text{noise}})
            - \int_{t_\text{noise}}^{t_\text{data}} \nabla\cdot v_t(x_t)\,\mathrm dt,

    computed by integrating the augmented state :math:`(x_t, \ell_t)`, :math:`\dot\ell_t = \nabla\cdot v_t(x_t)`,
    backwards from :math:`(x, 0)` at ``t_data`` to ``t_noise`` (:func:`ode_solve`), where
    :math:`\log p(x) = \log p_\text{base}(x_{t_\text{noise}}) + \ell_{t_\text{noise}}`.

    Args:
        v_fn: ``v_fn(x, t)``. x: data, float (N, ...). n_steps, method: the solver (:func:`ode_solve`).
        estimator: ``"exact"`` (:func:`divergence`) or ``"hutchinson"`` (:func:`hutchinson_divergence`, the probes
            drawn once and kept along the solve, ``n_probes`` of ``probe``'s kind, from ``generator``).
        t_data, t_noise: the end times (1 and 0 for flow matching).
        base_log_prob: log-density of the base at ``t_noise``, (N, ...) -> (N,); default standard normal.

    Returns:
        dict: ``"log_prob"`` (N,) in nats, ``"base"`` (N,) the base term, ``"delta"`` (N,) the integral term
        (:math:`\ell_{t_\text{noise}}`), ``"z"`` (N, ...) the point reached at ``t_noise``.

    Raises:
        ValueError / TypeError: bad arguments (among them a t_data or t_noise that is not a finite number).
    """
    x = check_batch("x", x)
    check_choice("estimator", estimator, ("exact", "hutchinson"))
    for name, t in (("t_data", t_data), ("t_noise", t_noise)):
        if not math.isfinite(float(t)):
            raise ValueError(f"{name} must be a finite time, got {t}")
    shape = x.shape
    d = x[0].numel()
    noise = None
    if estimator == "hutchinson":
        check_choice("probe", probe, PROBES)
        noise = _probes((check_positive_int("n_probes", n_probes),) + tuple(shape), x, probe, generator)

    def augmented(y, t):
        z = y[:, :d].reshape(shape)
        if noise is None:
            div, v = divergence(v_fn, z, t, return_velocity=True)
        else:
            div, v = hutchinson_divergence(v_fn, z, t, noise=noise, return_velocity=True)
        return torch.cat([v.reshape(shape[0], d), div[:, None]], 1)

    y0 = torch.cat([x.detach().reshape(shape[0], d), torch.zeros(shape[0], 1, dtype=x.dtype, device=x.device)], 1)
    y = ode_solve(augmented, y0, n_steps, method=method, t_start=t_data, t_end=t_noise)
    z, delta = y[:, :d].reshape(shape), y[:, d]
    base = (base_log_prob or (lambda u: standard_normal_log_prob(u.reshape(shape[0], d))))(z)
    return {"log_prob": base + delta, "base": base, "delta": delta, "z": z}


def straightness(states: Sequence[torch.Tensor]) -> torch.Tensor:
    r"""Liu et al.'s (2023) straightness of a flow, :math:`S = \int_0^1 \mathbb E\lVert (x_1 - x_0) - \dot x_t\rVert^2
    \mathrm dt`, from the states of :func:`ode_solve` on a uniform grid (:math:`\dot x_t` by the finite difference
    of each step); zero exactly when every trajectory is a straight line traversed at constant speed.

    Args:
        states: the ``n + 1`` states (each (N, ...)) of one solve, ``keep_all=True``.

    Returns:
        0-d tensor (squared distance per unit time squared, summed over coordinates, averaged over examples).

    Raises:
        TypeError / ValueError: fewer than two states, a state that is not a finite float batch, or states of
            different shapes.
    """
    if not isinstance(states, (list, tuple)) or len(states) < 2:
        raise ValueError("states must be a list of at least two tensors (ode_solve(..., keep_all=True))")
    checked = [check_batch(f"states[{i}]", s) for i, s in enumerate(states)]
    for i, s in enumerate(checked):
        if s.shape != checked[0].shape:
            raise ValueError(f"states[{i}] has shape {tuple(s.shape)} but states[0] {tuple(checked[0].shape)}: the "
                             "states of one solve all have one shape")
    xs = torch.stack(checked)
    n = xs.shape[0] - 1
    steps = (xs[1:] - xs[:-1]) * n  # (n, N, ...) velocities over each step, dt = 1/n
    disp = (xs[-1] - xs[0])[None]
    return ((disp - steps) ** 2).reshape(n, xs.shape[1], -1).sum(-1).mean()


# ------------------------------------------------------------------------------------------------
# the SDE view (Song et al. 2021): data at t = 0, noise at t = 1
# ------------------------------------------------------------------------------------------------


class _SDE:
    """Common part of the linear SDEs :math:`\\mathrm dx = f(t)\\,x\\,\\mathrm dt + g(t)\\,\\mathrm dw`, t in [0, 1]."""

    def drift(self, x: torch.Tensor, t) -> torch.Tensor:
        """:math:`f(x, t) = f(t)\\,x`, (N, ...)."""
        x = check_batch("x", x)
        return _column(self.drift_coef(_unit_times(t, x)), x) * x

    def diffusion(self, t) -> torch.Tensor:
        """:math:`g(t)`, same shape as t."""
        return self.g2(t).sqrt()

    def prior_sample(self, shape, *, generator=None, device=None) -> torch.Tensor:
        """Draws of the t = 1 marginal's reference :math:`\\mathcal N(0, \\sigma_1^2\\mathbf I)` (float32)."""
        z = torch.randn(tuple(shape), generator=generator, device=device)
        return z * float(self.marginal(torch.tensor(1.0, dtype=torch.float64))[1])


class VPSDE(_SDE):
    r"""The variance-preserving SDE (Song et al. 2021, eq. 11), the continuous limit of DDPM (chapter 08):

    .. math::

        \mathrm dx = -\tfrac12\beta(t)\,x\,\mathrm dt + \sqrt{\beta(t)}\,\mathrm dw,\qquad
        \beta(t) = \beta_\text{min} + t(\beta_\text{max} - \beta_\text{min}),

    with marginal :math:`x_t = \alpha_t x_0 + \sigma_t\varepsilon`, :math:`\alpha_t = e^{-\frac12\int_0^t\beta}`,
    :math:`\sigma_t^2 = 1 - \alpha_t^2`. Its Euler-Maruyama step of size 1/T, with :math:`\beta` evaluated on the
    grid :math:`t_i = (i-1)/(T-1)`, gives chapter 08's linear betas :math:`\beta_i = \beta(t_i)/T`
    (:meth:`discretise`).

    Args:
        beta_min, beta_max: :math:`0 < \beta_\text{min} < \beta_\text{max}` (defaults 0.1 and 20: Ho et al.'s
            :math:`10^{-4}` and 0.02 at T = 1000, scaled by 1000/T for other T as in Nichol & Dhariwal 2021).
    """

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0):
        self.beta_min = check_positive_float("beta_min", beta_min)
        self.beta_max = check_positive_float("beta_max", beta_max)
        if self.beta_min >= self.beta_max:
            raise ValueError(f"beta_min must be < beta_max, got {beta_min:g}, {beta_max:g}")

    def beta(self, t):
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def drift_coef(self, t):
        return -0.5 * self.beta(t)

    def g2(self, t):
        return self.beta(torch.as_tensor(t, dtype=torch.float64) if not isinstance(t, torch.Tensor) else t)

    def marginal(self, t):
        r"""``(alpha_t, sigma_t, dalpha_t, dsigma_t)`` of :math:`x_t = \alpha_t x_0 + \sigma_t\varepsilon`."""
        t = torch.as_tensor(t, dtype=torch.float64) if not isinstance(t, torch.Tensor) else t
        a = torch.exp(-0.5 * (self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t**2))
        s = torch.sqrt(1 - a**2)
        da = -0.5 * self.beta(t) * a
        return a, s, da, -a * da / s

    def discretise(self, T: int) -> torch.Tensor:
        r"""The DDPM betas :math:`\beta_i = \beta(t_i)/T`, :math:`t_i = (i-1)/(T-1)`, float64 (T,): for
        beta_min = 0.1, beta_max = 20 exactly chapter 08's ``beta_schedule("linear", T)``."""
        T = check_positive_int("T", T)
        if T < 2:
            raise ValueError(f"T must be >= 2, got {T}")
        return self.beta(torch.linspace(0, 1, T, dtype=torch.float64)) / T


class VESDE(_SDE):
    r"""The variance-exploding SDE (Song et al. 2021, eq. 9), the continuous limit of chapter 09's noise levels:

    .. math::

        \mathrm dx = \sqrt{\tfrac{\mathrm d\,\sigma^2(t)}{\mathrm dt}}\,\mathrm dw,\qquad
        \sigma(t) = \sigma_\text{min}(\sigma_\text{max}/\sigma_\text{min})^t,

    so :math:`g(t)^2 = 2\sigma(t)^2\ln(\sigma_\text{max}/\sigma_\text{min})` and
    :math:`x_t = x_0 + \sqrt{\sigma(t)^2 - \sigma_\text{min}^2}\,\varepsilon`.

    Args:
        sigma_min, sigma_max: :math:`0 < \sigma_\text{min} < \sigma_\text{max}`.
    """

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 10.0):
        self.sigma_min = check_positive_float("sigma_min", sigma_min)
        self.sigma_max = check_positive_float("sigma_max", sigma_max)
        if self.sigma_min >= self.sigma_max:
            raise ValueError(f"sigma_min must be < sigma_max, got {sigma_min:g}, {sigma_max:g}")
        self.log_ratio = math.log(self.sigma_max / self.sigma_min)

    def sigma(self, t):
        t = torch.as_tensor(t, dtype=torch.float64) if not isinstance(t, torch.Tensor) else t
        return self.sigma_min * torch.exp(t * self.log_ratio)

    def drift_coef(self, t):
        return torch.zeros_like(t)

    def g2(self, t):
        return 2 * self.sigma(t) ** 2 * self.log_ratio

    def marginal(self, t):
        r"""``(alpha_t, sigma_t, dalpha_t, dsigma_t)``: :math:`\alpha_t = 1`,
        :math:`\sigma_t = \sqrt{\sigma(t)^2 - \sigma_\text{min}^2}`."""
        sig = self.sigma(t)
        s = torch.sqrt(sig**2 - self.sigma_min**2)
        ds = sig**2 * self.log_ratio / s.clamp_min(torch.finfo(s.dtype).tiny)
        return torch.ones_like(sig), s, torch.zeros_like(sig), ds

    def discretise(self, n_levels: int) -> torch.Tensor:
        r""":math:`\sigma(t)` at :math:`t = 1, \dots, 0` in ``n_levels`` equal steps, float64, decreasing: chapter
        09's ``geometric_sigmas(sigma_max, sigma_min, n_levels)``."""
        n = check_positive_int("n_levels", n_levels)
        if n < 2:
            raise ValueError(f"n_levels must be >= 2, got {n}")
        return self.sigma(torch.linspace(1, 0, n, dtype=torch.float64))


def _check_sde(sde):
    if not isinstance(sde, _SDE):
        raise TypeError(f"sde must be a VPSDE or a VESDE, got {type(sde).__name__}")


def _sde_times(t_end, n_steps):
    t_end = float(t_end)
    if not 0 <= t_end < 1:
        raise ValueError(f"t_end must be in [0, 1), got {t_end:g}")
    return t_end, check_positive_int("n_steps", n_steps)


def probability_flow_velocity(sde, score_fn: Callable) -> Callable:
    r"""The vector field of the probability-flow ODE (Song et al. 2021, eq. 13), whose solutions have the same
    marginals :math:`p_t` as the SDE:

    .. math::

        \frac{\mathrm dx}{\mathrm dt} = f(x, t) - \tfrac12 g(t)^2\,\nabla_x\log p_t(x).

    Args:
        sde: :class:`VPSDE` or :class:`VESDE`. score_fn: ``score_fn(x, t)`` -> (N, ...), t an (N,) tensor.

    Returns:
        ``v(x, t)``, usable by :func:`ode_solve` (from t = 1 down to a small t).
    """
    _check_sde(sde)

    def v(x, t):
        t = _unit_times(t, x)
        return sde.drift(x, t) - 0.5 * _column(sde.g2(t), x) * _call_field(score_fn, x, t, "score_fn")

    return v


def probability_flow_sample(sde, score_fn: Callable, x: torch.Tensor, n_steps: int, *, method: str = "heun",
                            t_end: float = 1e-3, keep_all: bool = False):
    """Sample by integrating the probability-flow ODE from t = 1 (``x``, e.g. :meth:`VPSDE.prior_sample`) down to
    ``t_end`` (:func:`ode_solve`, :func:`probability_flow_velocity`). Returns as :func:`ode_solve`."""
    t_end, n = _sde_times(t_end, n_steps)
    return ode_solve(probability_flow_velocity(sde, score_fn), x, n, method=method, t_start=1.0, t_end=t_end,
                     keep_all=keep_all)


@torch.no_grad()
def reverse_sde_sample(sde, score_fn: Callable, x: torch.Tensor, n_steps: int, *, t_end: float = 1e-3,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    r"""Sample by the reverse-time SDE (Anderson 1982; Song et al. 2021, eq. 6),

    .. math::

        \mathrm dx = \big[f(x, t) - g(t)^2\nabla_x\log p_t(x)\big]\mathrm dt + g(t)\,\mathrm d\bar w,

    run from t = 1 down to ``t_end`` by Euler-Maruyama with step :math:`h = (1 - t_\text{end})/n`:
    :math:`x \leftarrow x - h[f - g^2 s] + g\sqrt h\,z`, :math:`z \sim \mathcal N(0, \mathbf I)`.

    Args:
        sde, score_fn: as :func:`probability_flow_velocity`. x: float (N, ...) at t = 1. n_steps: >= 1.
        t_end: in [0, 1). generator: for the noise.

    Returns:
        (N, ...) the state at ``t_end``.
    """
    _check_sde(sde)
    x = check_batch("x", x)
    t_end, n = _sde_times(t_end, n_steps)
    h = (1.0 - t_end) / n
    for i in range(n):
        t = _times(1.0 - i * h, x)
        g2 = _column(sde.g2(t), x)
        x = x - h * (sde.drift(x, t) - g2 * _call_field(score_fn, x, t, "score_fn"))
        z = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        x = x + (g2 * h).sqrt() * z
    return x


# ------------------------------------------------------------------------------------------------
# conversions between predictions
# ------------------------------------------------------------------------------------------------


def convert_prediction(pred: torch.Tensor, x_t: torch.Tensor, alpha, sigma, *, source: str, target: str,
                       dalpha=None, dsigma=None) -> torch.Tensor:
    r"""Convert a network's output between the four equivalent parameterisations of a Gaussian path
    :math:`x_t = \alpha_t x + \sigma_t\varepsilon` (x the data): the noise :math:`\hat\varepsilon`, the score
    :math:`\hat s = -\hat\varepsilon/\sigma_t` (Tweedie / Vincent 2011), the clean data
    :math:`\hat x = (x_t - \sigma_t\hat\varepsilon)/\alpha_t` and the velocity
    :math:`\hat v = \dot\alpha_t\hat x + \dot\sigma_t\hat\varepsilon`. From a velocity the pair
    :math:`(\hat x, \hat\varepsilon)` solves the 2x2 system :math:`x_t = \alpha\hat x + \sigma\hat\varepsilon`,
    :math:`\hat v = \dot\alpha\hat x + \dot\sigma\hat\varepsilon`, whose determinant
    :math:`\alpha\dot\sigma - \sigma\dot\alpha = \alpha^2\,\mathrm d(\sigma/\alpha)/\mathrm dt` (where
    :math:`\alpha \ne 0`) is non-zero wherever :math:`\sigma_t/\alpha_t` (the inverse square root of the SNR) is
    strictly monotone with a non-zero derivative, and zero wherever the SNR is stationary.

    The conversions are identities between the optimal predictors; for any other prediction the errors scale with
    t: a noise prediction's converted velocity has the error
    :math:`\hat v - v = \frac{\alpha\dot\sigma - \sigma\dot\alpha}{\alpha}(\hat\varepsilon - \varepsilon)`
    (:math:`-(\hat\varepsilon - \varepsilon)/t` on the linear path), so a velocity loss is a noise loss weighted by
    the square of that factor.

    Args:
        pred: float (N, ...), the ``source`` prediction. x_t: the network input, same shape.
        alpha, sigma: floats or (N,) tensors. source, target: in :data:`PREDICTIONS`.
        dalpha, dsigma: time derivatives, needed when either kind is ``"velocity"``.

    Returns:
        (N, ...) the ``target`` prediction.

    Raises:
        ValueError: unknown kinds; :math:`\alpha_t = 0` where x is recovered from the noise, :math:`\sigma_t = 0`
            where the noise is recovered from x or the score is formed; missing derivatives; a zero determinant.
    """
    pred, x_t = check_batch("pred", pred), check_batch("x_t", x_t)
    check_same_shape(pred=pred, x_t=x_t)
    check_choice("source", source, PREDICTIONS)
    check_choice("target", target, PREDICTIONS)
    a, s = _coef(alpha, x_t, "alpha"), _coef(sigma, x_t, "sigma")
    need_d = "velocity" in (source, target)
    if need_d and (dalpha is None or dsigma is None):
        raise ValueError("converting from or to 'velocity' needs dalpha and dsigma")
    da = _coef(dalpha, x_t, "dalpha") if need_d else None
    ds = _coef(dsigma, x_t, "dsigma") if need_d else None

    def nonzero(c, what):
        if (c == 0).any():
            raise ValueError(f"{what} must be non-zero for converting {source!r} to {target!r}")

    if source in ("eps", "score"):
        if source == "score":
            nonzero(s, "sigma")
        eps = pred if source == "eps" else -s * pred
        nonzero(a, "alpha")
        data = (x_t - s * eps) / a
    elif source == "data":
        nonzero(s, "sigma")
        data, eps = pred, (x_t - a * pred) / s
    else:
        det = a * ds - s * da
        nonzero(det, "alpha * dsigma - sigma * dalpha")
        eps, data = (a * pred - da * x_t) / det, (ds * x_t - s * pred) / det
    if target == "eps":
        return eps
    if target == "score":
        nonzero(s, "sigma")
        return -eps / s
    if target == "data":
        return data
    return da * data + ds * eps


# ------------------------------------------------------------------------------------------------
# networks
# ------------------------------------------------------------------------------------------------


class VelocityMLP(nn.Module):
    r"""A time-conditional vector field for low-dimensional data, :math:`v_\theta(x, t)`: an MLP (SiLU) on the
    concatenation of x and the features :math:`(t, \sin(k\pi t), \cos(k\pi t))_{k=1..K}` of the time.

    Args:
        dim: data dimension D. hidden: hidden widths. n_freq: K.

    Shapes:
        ``forward(x, t)``: x float (N, D), t a float or (N,) tensor -> (N, D).
    """

    def __init__(self, dim: int = 2, hidden: Sequence[int] = (128, 128, 128), n_freq: int = 4):
        super().__init__()
        self.dim = check_positive_int("dim", dim)
        n_freq = check_positive_int("n_freq", n_freq)
        self.register_buffer("freqs", math.pi * torch.arange(1, n_freq + 1, dtype=torch.float32), persistent=False)
        self.net = MLP(self.dim + 2 * n_freq + 1, self.dim, hidden, activation=nn.SiLU)

    def forward(self, x: torch.Tensor, t) -> torch.Tensor:
        check_tensor("x", x)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape (N, {self.dim}), got {tuple(x.shape)}")
        t = _times(t, x)[:, None]
        a = t * self.freqs.to(x.dtype)[None]
        return self.net(torch.cat([x, t, torch.sin(a), torch.cos(a)], 1))


class TimeScaled(nn.Module):
    r"""Wrap a network ``net(x, time)`` trained on time indices (chapter 08's :class:`coursekit.nets.UNet`
    embeds an index 0..T-1 sinusoidally) so that it takes a continuous :math:`t \in [0, 1]`: it is called with
    ``scale * t``, the same range of embedding frequencies as a chapter 08 model with T = ``scale``.

    Shapes: ``forward(x, t)``: x (N, ...), t a float or (N,) tensor -> ``net``'s output.
    """

    def __init__(self, net: nn.Module, scale: float):
        super().__init__()
        self.net = net
        self.scale = check_positive_float("scale", scale)

    def forward(self, x: torch.Tensor, t) -> torch.Tensor:
        x = check_tensor("x", x)
        return self.net(x, self.scale * _times(t, x))
