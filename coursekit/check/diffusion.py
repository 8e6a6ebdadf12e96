"""Checkers for chapter 08 (diffusion models): the forward marginal q(x_t | x_0), the forward posterior
q(x_(t-1) | x_t, x_0) and the deterministic DDIM step."""

from __future__ import annotations

from collections.abc import Callable

import torch

from .. import diffusion
from ._harness import Ctx, close, diagnose, first_bad, fmt, not_implemented

__all__ = ["q_sample", "posterior_mean_variance", "ddim_step"]


def _diffusion_inputs(ctx: Ctx, n: int = 6):
    """A random schedule (linear or cosine, random T) and random images / noise, float32."""
    T = int(torch.randint(25, 120, (), generator=ctx.gen))  # the scaled linear schedule needs T >= 21
    name = ("linear", "cosine")[int(torch.randint(0, 2, (), generator=ctx.gen))]
    abar = diffusion.alphas_cumprod_from_betas(diffusion.beta_schedule(name, T)).float()
    x0 = ctx.uniform(-1.0, 1.0, n, 1, 8, 8)
    noise = ctx.randn(n, 1, 8, 8)
    return T, name, abar, x0, noise


def q_sample(fn: Callable, *, seed: int | None = None) -> None:
    r"""Check ``fn(x0, t, noise, alphas_cumprod) -> sqrt(abar[t]) * x0 + sqrt(1 - abar[t]) * noise`` (Ho et al.
    2020, eq. 4), with ``t`` an int64 tensor (N,) of 0-based indices and the images (N, 1, 8, 8).

    Compares with :func:`coursekit.diffusion.q_sample` on a random schedule, with hints for a missing square
    root, an off-by-one index and swapped coefficients; then checks the sample moments of many draws."""
    ctx = Ctx("q_sample", fn, seed)
    T, name, abar, x0, noise = _diffusion_inputs(ctx)
    t = torch.randint(0, T, (x0.shape[0],), generator=ctx.gen)
    t[0], t[1] = 0, T - 1
    try:
        out = ctx.call(x0, t, noise, abar)
    except AssertionError as err:
        if "must match the size" not in str(err):
            raise
        raise AssertionError(f"{err}\nHint: alphas_cumprod[t] has shape (N,); reshape it to (N, 1, 1, 1), e.g. "
                             "alphas_cumprod[t].view(-1, 1, 1, 1), so that it scales each image.") from None
    if out.shape != x0.shape:
        ctx.fail(f"expected x_t with the shape of x0, {tuple(x0.shape)}, got {tuple(out.shape)}. abar[t] has shape "
                 "(N,): reshape it to (N, 1, 1, 1) (e.g. abar[t].view(-1, 1, 1, 1)) so it broadcasts per image.")
    ref = diffusion.q_sample(x0.double(), t, noise.double(), abar)
    tol = {"rtol": 1e-4, "atol": 1e-5}
    if not close(out, ref, **tol):
        a = abar.double()[t].view(-1, 1, 1, 1)
        a_next = abar.double()[(t + 1).clamp(max=T - 1)].view(-1, 1, 1, 1)
        a_prev = torch.cat([abar.double().new_ones(1), abar.double()])[t].view(-1, 1, 1, 1)
        x, e = x0.double(), noise.double()
        candidates = {
            "the coefficients need square roots: x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps "
            "(abar_t and 1 - abar_t are the VARIANCE-like factors).": a * x + (1 - a) * e,
            "x0 and the noise have swapped coefficients: the signal is scaled by sqrt(abar_t).":
                (1 - a).sqrt() * x + a.sqrt() * e,
            "off by one: index t of alphas_cumprod is already the right step (0-based), use alphas_cumprod[t].":
                a_next.sqrt() * x + (1 - a_next).sqrt() * e,
            "off by one: use alphas_cumprod[t], not alphas_cumprod[t - 1].":
                a_prev.sqrt() * x + (1 - a_prev).sqrt() * e,
            "the noise must be added (and scaled by sqrt(1 - abar_t)), not subtracted.":
                a.sqrt() * x - (1 - a).sqrt() * e,
        }
        hint = diagnose(out, candidates, **tol) or "expected sqrt(abar[t]) * x0 + sqrt(1 - abar[t]) * noise per image."
        i = first_bad(out, ref, **tol)
        ctx.fail(f"wrong values ({name} schedule, T = {T}): {hint}\n  image {i} at t = {int(t[i])}: expected first "
                 f"pixels {fmt(ref[i].reshape(-1)[:3])}, got {fmt(out[i].reshape(-1)[:3])}")
    # moments of many draws at one t: mean sqrt(abar) x0, variance 1 - abar
    big, tt = 20000, int(T // 2)
    xs = ctx.call(x0[:1].expand(big, 1, 8, 8).clone(), torch.full((big,), tt, dtype=torch.long),
                  ctx.randn(big, 1, 8, 8), abar).detach().double()
    a = float(abar[tt])
    z_mean = (xs.mean(0) - a**0.5 * x0[0].double()).abs() / ((1 - a) / big) ** 0.5
    if bool((z_mean > 5).any()):
        ctx.fail("the mean of many samples at one t is not sqrt(abar_t) * x0.")
    ctx.passed(f"matches sqrt(abar_t) x0 + sqrt(1 - abar_t) eps ({name} schedule, T = {T})")


def posterior_mean_variance(fn: Callable, *, seed: int | None = None) -> None:
    r"""Check ``fn(x0, xt, t, alphas_cumprod) -> (mean, variance)`` of :math:`q(x_{t-1} \mid x_t, x_0)` (Ho et al.
    2020, eqs. 6-7) for 0-based ``t`` (int64 tensor (N,)) with every ``t >= 1``; ``variance`` may have shape
    (N,), (N, 1, 1, 1) or the images' shape. Compares with
    :func:`coursekit.diffusion.q_posterior_mean_variance`, with hints for swapped coefficients and
    :math:`\beta_t` used as the variance."""
    ctx = Ctx("posterior_mean_variance", fn, seed)
    T, name, abar, x0, xt = _diffusion_inputs(ctx)
    t = torch.randint(1, T, (x0.shape[0],), generator=ctx.gen)
    t[0], t[1] = 1, T - 1
    # float64 inputs: in float32, 1 - abar_t / abar_{t-1} loses digits at some t, and a correct formula
    # must not fail on rounding.
    x0, xt, abar = x0.double(), xt.double(), abar.double()
    try:
        mean, var = ctx.fn(x0, xt, t, abar)
    except NotImplementedError:
        raise not_implemented("posterior_mean_variance") from None
    except (TypeError, ValueError) as err:
        ctx.fail(f"calling your function or unpacking its result as (mean, variance) failed: "
                 f"{type(err).__name__}: {err}")
    ref_mean, ref_var = diffusion.q_posterior_mean_variance(x0.double(), xt.double(), t, abar)
    if not isinstance(mean, torch.Tensor) or mean.shape != x0.shape:
        ctx.fail(f"the mean must be a tensor of the images' shape {tuple(x0.shape)}, got "
                 f"{tuple(mean.shape) if isinstance(mean, torch.Tensor) else type(mean).__name__}")
    if not isinstance(var, torch.Tensor):
        var = torch.as_tensor(var)
    try:
        var_full = torch.broadcast_to(var.reshape(-1, 1, 1, 1) if var.shape == (x0.shape[0],) else var, x0.shape)
    except RuntimeError:
        ctx.fail(f"the variance has shape {tuple(var.shape)}: use (N,), (N, 1, 1, 1) or the images' shape.")
    ab = abar.double()[t].view(-1, 1, 1, 1)
    ap = abar.double()[t - 1].view(-1, 1, 1, 1)
    beta = 1 - ab / ap
    tol = {"rtol": 1e-4, "atol": 1e-5}
    if not close(var_full, ref_var.expand_as(x0), **tol):
        cands = {"that is beta_t, the forward step's variance; the posterior's is "
                 "beta_tilde = (1 - abar_{t-1}) / (1 - abar_t) * beta_t.": beta.expand_as(x0),
                 "the ratio is inverted: beta_tilde = (1 - abar_{t-1}) / (1 - abar_t) * beta_t.":
                     ((1 - ab) / (1 - ap) * beta).expand_as(x0),
                 "beta_t is 1 - alpha_t with alpha_t = abar_t / abar_{t-1}, not 1 - abar_t.":
                     ((1 - ap) / (1 - ab) * (1 - ab)).expand_as(x0)}
        hint = diagnose(var_full, cands, **tol) or "expected (1 - abar_{t-1}) / (1 - abar_t) * beta_t."
        ctx.fail(f"wrong variance: {hint}\n  at t = {int(t[0])}: expected {float(ref_var[0]):.6g}, "
                 f"got {float(var_full[0].reshape(-1)[0]):.6g}")
    if not close(mean, ref_mean, **tol):
        alpha = ab / ap
        c0 = ap.sqrt() * beta / (1 - ab)
        ct = alpha.sqrt() * (1 - ap) / (1 - ab)
        x, y = x0.double(), xt.double()
        cands = {"the two coefficients are swapped: x0 gets sqrt(abar_{t-1}) beta_t / (1 - abar_t) and x_t gets "
                 "sqrt(alpha_t) (1 - abar_{t-1}) / (1 - abar_t).": ct * x + c0 * y,
                 "x_t's coefficient needs sqrt(alpha_t), not alpha_t.": c0 * x + alpha * (1 - ap) / (1 - ab) * y,
                 "x0's coefficient needs sqrt(abar_{t-1}), not sqrt(abar_t).": ab.sqrt() * beta / (1 - ab) * x + ct * y}
        hint = diagnose(mean, cands, **tol) or ("expected sqrt(abar_{t-1}) beta_t / (1 - abar_t) * x0 + "
                                                 "sqrt(alpha_t) (1 - abar_{t-1}) / (1 - abar_t) * x_t.")
        ctx.fail(f"wrong mean: {hint}")
    ctx.n_checks += 1
    ctx.passed(f"mean and variance of q(x_(t-1) | x_t, x_0) correct ({name} schedule, T = {T})")


def ddim_step(fn: Callable, *, seed: int | None = None) -> None:
    r"""Check the deterministic DDIM step ``fn(eps, xt, t, t_prev, alphas_cumprod) -> x_{t_prev}`` (Song et al. 2021,
    eq. 12 with :math:`\eta = 0`, no clipping): ``t`` and ``t_prev`` are python ints with ``t_prev < t`` and
    ``t_prev = -1`` meaning the data (:math:`\bar\alpha = 1`). Compares with
    :func:`coursekit.diffusion.ddim_step` ``(eta=0, clip=False)``."""
    ctx = Ctx("ddim_step", fn, seed)
    T, name, abar, eps, xt = _diffusion_inputs(ctx)
    xt = 1.5 * xt
    cases = [(T - 1, T // 2), (T // 2, T // 5), (3, -1), (T - 1, -1)]
    for t, tp in cases:
        try:
            out = ctx.fn(eps.clone(), xt.clone(), t, tp, abar)
        except NotImplementedError:
            raise not_implemented("ddim_step") from None
        except Exception as err:  # noqa: BLE001  (the student's code crashed: a failed check, not an error)
            ctx.fail(f"your function raised {type(err).__name__}: {err} for t = {t}, t_prev = {tp}"
                     + (" (t_prev = -1 means the data: use abar = 1 there)" if tp == -1 else ""))
        ctx.n_checks += 1
        if not isinstance(out, torch.Tensor) or out.shape != xt.shape:
            ctx.fail(f"return a tensor of the images' shape {tuple(xt.shape)}")
        ref = diffusion.ddim_step(eps.double(), xt.double(), t, tp, abar, eta=0.0, clip=False)
        tol = {"rtol": 1e-4, "atol": 1e-4}
        if not close(out, ref, **tol):
            a = float(abar[t])
            ap = 1.0 if tp < 0 else float(abar[tp])
            x0h = (xt.double() - (1 - a) ** 0.5 * eps.double()) / a**0.5
            cands = {"x0_hat is (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t): divide by sqrt(abar_t).":
                         ap**0.5 * (xt.double() - (1 - a) ** 0.5 * eps.double()) + (1 - ap) ** 0.5 * eps.double(),
                     "the direction term is sqrt(1 - abar_{t_prev}) * eps (the noise level of the TARGET time).":
                         ap**0.5 * x0h + (1 - a) ** 0.5 * eps.double(),
                     "the signal term is sqrt(abar_{t_prev}) * x0_hat, at the target time.":
                         a**0.5 * x0h + (1 - ap) ** 0.5 * eps.double()}
            if tp == -1:
                a_last = float(abar[-1])
                cands["with t_prev = -1, alphas_cumprod[t_prev] is python's LAST entry (the noisiest time). "
                      "t_prev = -1 means the data: use abar = 1 there, so the step returns x0_hat."] = (
                    a_last**0.5 * x0h + (1 - a_last) ** 0.5 * eps.double())
            hint = diagnose(out, cands, **tol) or ("expected sqrt(abar_prev) * x0_hat + sqrt(1 - abar_prev) * eps with "
                                                    "x0_hat = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t).")
            ctx.fail(f"wrong values for t = {t}, t_prev = {tp}: {hint}")
    ctx.passed(f"deterministic DDIM steps correct, including the last step to t_prev = -1 ({name}, T = {T})")
