"""Checkers for chapter 10 (flow matching and the SDE/ODE view): the conditional flow-matching target of the
optimal-transport path, one Heun step, and Hutchinson's divergence estimator with given probes."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ._harness import Ctx, close, diagnose, first_bad, fmt

__all__ = ["cfm_target", "heun_step", "hutchinson_divergence"]


def cfm_target(fn: Callable, *, seed: int | None = None) -> None:
    r"""Check ``fn(x0, x1, t, sigma_min) -> x1 - (1 - sigma_min) * x0``, the conditional flow-matching target of
    the optimal-transport path :math:`x_t = t x_1 + (1 - (1 - \sigma_\text{min})t)x_0` (Lipman et al. 2023, eq. 23),
    noise :math:`x_0` at t = 0 and data :math:`x_1` at t = 1.

    Checks the shape and the values for :math:`\sigma_\text{min} > 0` on random inputs (hints for a flipped sign,
    a forgotten :math:`\sigma_\text{min}`, the noise scaled by :math:`\sigma_\text{min}`, returning the point
    :math:`x_t` instead of its velocity), and that the target is the time derivative of the path (a central
    difference in t).

    Raises:
        AssertionError: with an explanation when a check fails or ``fn`` is a stub.
    """
    ctx = Ctx("cfm_target", fn, seed)
    n, d = 6, 3
    x0, x1 = ctx.randn(n, d), ctx.randn(n, d)
    t = ctx.uniform(0.05, 0.95, n)
    sigma_min = float(ctx.uniform(0.05, 0.3, 1))
    orig = ctx.fn
    ctx.fn = lambda a, b, c: orig(a, b, c, sigma_min)
    out = ctx.call(x0, x1, t, what=f" and sigma_min={sigma_min:.4f}")
    if out.shape != (n, d):
        ctx.fail(f"expected one velocity per example, shape ({n}, {d}), got {tuple(out.shape)}")
    a0, a1, tc = x0.double(), x1.double(), t.double()[:, None]
    ref = a1 - (1 - sigma_min) * a0
    tol = {"rtol": 1e-4, "atol": 1e-5}
    if not close(out, ref, **tol):
        xt = tc * a1 + (1 - (1 - sigma_min) * tc) * a0
        candidates = {
            "the sign is flipped: the path moves FROM the noise x0 TO the data x1, so the velocity is "
            "x1 - (1 - sigma_min) * x0.": -ref,
            "you dropped sigma_min: x1 - x0 is the target of the linear path (sigma_min = 0); for "
            "sigma_t = 1 - (1 - sigma_min) t the noise coefficient is d sigma_t / dt = -(1 - sigma_min).": a1 - a0,
            "the noise is scaled by sigma_min; its coefficient is d sigma_t / dt = -(1 - sigma_min).":
                a1 - sigma_min * a0,
            "that is the point x_t on the path; the target is its time derivative d x_t / dt.": xt,
        }
        hint = diagnose(out, candidates, **tol) or "expected x1 - (1 - sigma_min) * x0."
        i = first_bad(out, ref, **tol)
        ctx.fail(f"wrong values: {hint}\n  e.g. sigma_min = {sigma_min:.4f}, x0 = {fmt(x0[i])}, x1 = {fmt(x1[i])}, "
                 f"t = {float(t[i]):.4f}\n  expected {fmt(ref[i])}, got {fmt(out[i])}")
    ctx.passed("x1 - (1 - sigma_min) x0, the time derivative of the OT path")


def _field(gen: torch.Generator, d: int):
    """A smooth time-dependent field v(x, t) = tanh(x W1^T + t c) W2^T with random weights (float64)."""
    w1 = torch.randn(8, d, generator=gen, dtype=torch.float64)
    c = torch.randn(8, generator=gen, dtype=torch.float64)
    w2 = 0.5 * torch.randn(d, 8, generator=gen, dtype=torch.float64)

    def v(x, t):
        t = torch.as_tensor(t, dtype=x.dtype)
        t = t.expand(x.shape[0]) if t.ndim == 0 else t
        return torch.tanh(x @ w1.T.to(x.dtype) + t[:, None] * c.to(x.dtype)) @ w2.T.to(x.dtype)

    return v


def heun_step(fn: Callable, *, seed: int | None = None) -> None:
    r"""Check ``fn(v, x, t, dt) -> x + dt/2 (v(x, t) + v(x + dt v(x, t), t + dt))``, one step of Heun's method
    for :math:`\mathrm dx/\mathrm dt = v(x, t)`, where ``v(x, t)`` takes t as a float.

    Checks the values against the reference on a random smooth field, forwards and backwards in time (hints for
    an Euler step, the second evaluation at t instead of t + dt, the midpoint method, and the second slope alone),
    and that repeating the step on :math:`\mathrm dx/\mathrm dt = -x + \cos t` over [0, 1] has global error
    falling like :math:`h^2` (measured order in [1.8, 2.2]).

    Raises:
        AssertionError: with an explanation when a check fails or ``fn`` is a stub.
    """
    ctx = Ctx("heun_step", fn, seed)
    n, d = 5, 3
    v = _field(ctx.gen, d)
    orig = ctx.fn
    for sign in (1.0, -1.0):
        x = ctx.randn(n, d, dtype=torch.float64)
        t = float(ctx.uniform(0.2, 0.8, 1))
        dt = sign * float(ctx.uniform(0.1, 0.3, 1))
        ctx.fn = lambda x_, t=t, dt=dt: orig(v, x_, t, dt)
        out = ctx.call(x, what=f" and t={t:.4f}, dt={dt:.4f}")
        if out.shape != (n, d):
            ctx.fail(f"expected the new state with x's shape ({n}, {d}), got {tuple(out.shape)}")
        k1 = v(x, t)
        k2 = v(x + dt * k1, t + dt)
        ref = x + 0.5 * dt * (k1 + k2)
        tol = {"rtol": 1e-6, "atol": 1e-8}
        if not close(out, ref, **tol):
            candidates = {
                "that is an Euler step x + dt v(x, t); Heun averages it with the slope at the Euler point, "
                "x + dt/2 (v(x, t) + v(x + dt v(x, t), t + dt)).": x + dt * k1,
                "the second slope must be evaluated at the END of the step, time t + dt, not at t.":
                    x + 0.5 * dt * (k1 + v(x + dt * k1, t)),
                "that is the midpoint method (slope at x + dt/2 v, t + dt/2); Heun averages the slopes at both "
                "ends of the step.": x + dt * v(x + 0.5 * dt * k1, t + 0.5 * dt),
                "you used the second slope alone; average it with the first: dt/2 (k1 + k2).": x + dt * k2,
            }
            hint = diagnose(out, candidates, **tol) or "expected x + dt/2 (v(x, t) + v(x + dt v(x, t), t + dt))."
            i = first_bad(out, ref, **tol)
            ctx.fail(f"wrong values for dt = {dt:.4f} (t = {t:.4f}): {hint}\n  x = {fmt(x[i])}\n"
                     f"  expected {fmt(ref[i])}, got {fmt(out[i])}")

    def lin(x, t):  # t a float, or one time per example
        t = torch.as_tensor(t, dtype=x.dtype)
        return -x + torch.cos(t[:, None] if t.ndim else t)

    x0 = ctx.randn(3, 1, dtype=torch.float64)
    exact = (x0 - 0.5) * math.exp(-1) + (math.sin(1) + math.cos(1)) / 2
    errs = []
    for steps in (10, 20, 40):
        x, h = x0, 1.0 / steps
        for i in range(steps):
            ti = i * h
            ctx.fn = lambda x_, ti=ti, h=h: orig(lin, x_, ti, h)
            x = ctx.call(x, what=" (dx/dt = -x + cos t)").detach().double()
        errs.append(float((x - exact).abs().max()))
    order = math.log2(errs[1] / errs[2]) if errs[2] > 0 else float("inf")
    if not 1.8 <= order <= 2.2:
        ctx.fail(f"on dx/dt = -x + cos t over [0, 1] the errors for 10, 20, 40 steps are "
                 f"{[f'{e:.2e}' for e in errs]}, order {order:.2f}; Heun's method is second order (error ~ h^2).")
    ctx.passed(f"Heun's step forwards and backwards in time; measured order {order:.2f}")


def hutchinson_divergence(fn: Callable, *, seed: int | None = None) -> None:
    r"""Check ``fn(v, x, t, z) -> (N,)``, Hutchinson's estimate of :math:`\nabla\cdot v(x, t)` with the given
    probes ``z`` of shape (M, N, D): the average over the M probes of :math:`z^\top (\partial v/\partial x)\,z`,
    one vector-Jacobian product each (Hutchinson 1989; Grathwohl et al. 2019).

    The reference uses explicit per-example Jacobians (``torch.autograd.functional.jacobian``) of a random field,
    with hints for :math:`z^\top v` (no Jacobian), :math:`\mathbf 1^\top J z` (the gradient of ``v.sum()``), the
    sum instead of the mean over probes, and the exact trace; then 2000 Rademacher probes must average to the
    exact divergence within 5 standard errors.

    Raises:
        AssertionError: with an explanation when a check fails or ``fn`` is a stub.
    """
    ctx = Ctx("hutchinson_divergence", fn, seed)
    n, d, m = 4, 3, 3
    v = _field(ctx.gen, d)
    t = float(ctx.uniform(0.1, 0.9, 1))
    x = ctx.randn(n, d, dtype=torch.float64)
    z = torch.sign(ctx.randn(m, n, d, dtype=torch.float64))
    orig = ctx.fn
    ctx.fn = lambda x_, z_: orig(v, x_, t, z_)
    out = ctx.call(x, z, what=f" and t={t:.4f}")
    if out.shape != (n,):
        ctx.fail(f"expected one estimate per example, shape ({n},), for x ({n}, {d}) and z ({m}, {n}, {d}); "
                 f"got {tuple(out.shape)}")
    jac = torch.stack([torch.autograd.functional.jacobian(lambda xi: v(xi[None], t)[0], xi) for xi in x])  # (N,D,D)
    quad = torch.einsum("mni,nij,mnj->mn", z, jac, z)
    ref = quad.mean(0)
    tol = {"rtol": 1e-6, "atol": 1e-8}
    if not close(out, ref, **tol):
        vx = v(x, t)
        candidates = {
            "that is z . v(x), without the Jacobian: differentiate (v * z).sum() with respect to x and take "
            "the dot product of that gradient with z.": (z * vx[None]).sum(-1).mean(0),
            "that is 1^T J z (the gradient of v.sum() dotted with z); the estimator is z^T J z: differentiate "
            "(v * z).sum(), not v.sum().": torch.einsum("nij,mnj->mn", jac, z).mean(0),
            "you summed over the probes; average them (divide by M).": quad.sum(0),
            "that is the exact trace; use the probes z you were given, z^T J z averaged over them.":
                jac.diagonal(dim1=1, dim2=2).sum(-1),
        }
        hint = diagnose(out, candidates, **tol) or "expected the mean over probes of z^T (dv/dx) z."
        i = first_bad(out, ref, **tol)
        ctx.fail(f"wrong values: {hint}\n  example {i}: expected {float(ref[i]):.6f}, got {fmt(out[i:i + 1])}")
    zz = torch.sign(ctx.randn(2000, n, d, dtype=torch.float64))
    est = ctx.call(x, zz, what=" (2000 Rademacher probes)").detach().double()
    exact = jac.diagonal(dim1=1, dim2=2).sum(-1)
    se = torch.einsum("mni,nij,mnj->mn", zz, jac, zz).std(0).clamp_min(1e-6) / math.sqrt(2000)
    if not ((est - exact).abs() <= 5 * se + 1e-9).all():
        ctx.fail(f"averaged over 2000 Rademacher probes your estimate {fmt(est)} should match the exact divergence "
                 f"{fmt(exact)} within 5 standard errors {fmt(5 * se)}.")
    ctx.passed("the mean of z^T J z over the given probes; unbiased for the divergence")
