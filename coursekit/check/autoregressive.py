"""Checkers for chapter 11 (autoregressive models and discrete tokens): the PixelCNN mask, the straight-through
estimator and the distribution of one sampling step with temperature and top-k."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..autoregressive import causal_mask
from ._harness import Ctx, close, diagnose, fmt

__all__ = ["pixelcnn_mask", "straight_through", "sampling_probs"]


def pixelcnn_mask(fn: Callable, *, seed: int | None = None) -> None:
    """Check ``fn(kernel_size, mask_type) -> (k, k) tensor`` of zeros and ones, the PixelCNN mask of type
    ``"A"`` (the rows above the centre and the pixels left of it in its row) or ``"B"`` (the same and the centre)
    (van den Oord et al. 2016).

    Checks both types for kernel sizes 1, 3, 5, 7 (in a random order), with hints for swapped types, the whole
    centre row kept (a leak from the right), the rows below kept, a transposed mask and type A and B being equal.

    Raises:
        AssertionError: with an explanation when a check fails or ``fn`` is a stub.
    """
    ctx = Ctx("pixelcnn_mask", fn, seed)
    orig = ctx.fn
    sizes = [3, 5, 7]
    order = torch.randperm(3, generator=ctx.gen).tolist()
    for k in [sizes[i] for i in order] + [1]:  # k = 1 last: its type-B mask is all ones
        for mask_type in ("A", "B"):
            ctx.fn = lambda k_=k, t_=mask_type: orig(k_, t_)
            out = ctx.call(what=f"(called as fn({k}, {mask_type!r}))")
            if tuple(out.shape) != (k, k):
                ctx.fail(f"fn({k}, {mask_type!r}) should return a ({k}, {k}) mask, got shape {tuple(out.shape)}")
            want = causal_mask(k, mask_type).double()
            other = causal_mask(k, "B" if mask_type == "A" else "A").double()
            c = k // 2
            row_leak = want.clone()
            row_leak[c, c + 1:] = 1
            below = want.clone()
            below[c + 1:] = 1
            tol = {"rtol": 0.0, "atol": 1e-6}
            if close(out, want, **tol):
                continue
            candidates = {
                f"this is the type-{'B' if mask_type == 'A' else 'A'} mask: type A hides the centre pixel "
                "(the first layer must not see the pixel it predicts), type B keeps it.": other,
                "the centre row keeps the pixels RIGHT of the centre: they come later in raster order, so the "
                "model would see the future (a leaking mask, and a training loss that is too good).": row_leak,
                "the rows BELOW the centre are kept: only rows above and the left part of the centre row "
                "come earlier in raster order.": below,
                "the mask is transposed (columns for rows): raster order goes row by row, left to right.": want.T,
            }
            hint = diagnose(out, candidates, **tol) or (
                "expected ones on the rows above the centre and on the centre row left of the centre "
                "(and at the centre for type B), zeros elsewhere.")
            ctx.fail(f"wrong mask for kernel_size={k}, mask_type={mask_type!r}: {hint}\n  expected {fmt(want)}\n"
                     f"  got      {fmt(out)}")
    ctx.passed("types A and B for kernel sizes 1, 3, 5, 7")


def straight_through(fn: Callable, *, seed: int | None = None) -> None:
    """Check ``fn(z_e, z_q) -> out``, the straight-through estimator (Bengio et al. 2013; van den Oord et al.
    2017): ``out`` has the value of ``z_q`` and the gradient of ``z_e`` (d out / d z_e = I), and no gradient
    reaches ``z_q``.

    Checks the value and, by autograd, the gradients with respect to both inputs on random tensors; hints for
    returning ``z_q`` or ``z_e``, the detach on the wrong term and a missing detach.

    Raises:
        AssertionError: with an explanation when a check fails or ``fn`` is a stub.
    """
    ctx = Ctx("straight_through", fn, seed)
    n, d = 5, 3
    z_e = ctx.randn(n, d, dtype=torch.float64).requires_grad_(True)
    z_q = ctx.randn(n, d, dtype=torch.float64).requires_grad_(True)
    w = ctx.randn(n, d, dtype=torch.float64)
    out = ctx.call(z_e, z_q)
    if out.shape != (n, d):
        ctx.fail(f"expected a tensor of z_e's shape ({n}, {d}), got {tuple(out.shape)}")
    tol = {"rtol": 1e-6, "atol": 1e-9}
    if not close(out, z_q.detach(), **tol):
        hint = ("you returned z_e: the forward value must be the quantised z_q (the decoder sees codes)."
                if close(out, z_e.detach(), **tol) else "the value must equal z_q.")
        ctx.fail(f"wrong value: {hint}\n  z_e[0] = {fmt(z_e[0])}, z_q[0] = {fmt(z_q[0])}, got {fmt(out[0])}")
    if not out.requires_grad:
        ctx.fail("no gradient flows from the output to z_e: return z_e + (z_q - z_e).detach() so that the "
                 "backward pass copies the gradient to the encoder (returning z_q alone stops it).")
    g_e, g_q = torch.autograd.grad((out * w).sum(), [z_e, z_q], allow_unused=True)
    q_gets_grad = g_q is not None and float(g_q.abs().max()) > 0
    if q_gets_grad and (g_e is None or float(g_e.abs().max()) == 0):
        ctx.fail("the gradient goes to z_q and none to z_e (as when returning z_q itself, or z_e + (z_q - z_e) "
                 "without the detach, whose two z_e terms cancel in the backward pass): the difference must be "
                 "detached, z_e + (z_q - z_e).detach().")
    if g_e is None or not close(g_e, w, **tol):
        hint = ("no gradient reaches z_e: returning z_q (or detaching everything) stops the encoder's gradient."
                if g_e is None or float(g_e.abs().max()) == 0 else "the gradient with respect to z_e must be the "
                "output gradient itself (d out / d z_e = identity).")
        ctx.fail(f"wrong gradient with respect to z_e: {hint}")
    if q_gets_grad:
        ctx.fail("a gradient reaches z_q: the straight-through output must pass no gradient to the codes "
                 "(they learn from the codebook loss). Detach the difference: z_e + (z_q - z_e).detach().")
    ctx.passed("value z_q, gradient identity to z_e, none to z_q (checked by autograd)")


def sampling_probs(fn: Callable, *, seed: int | None = None) -> None:
    """Check ``fn(logits, temperature, top_k) -> probs`` (N, V): the distribution one sampling step draws from,
    ``softmax(l / T)`` restricted to the ``top_k`` largest logits of each row and renormalised
    (``top_k=None``: all tokens).

    Checks random logits (with distinct values) for several temperatures and k, with hints for multiplying by
    the temperature, forgetting to renormalise after top-k, keeping k - 1 or k + 1 tokens and applying the
    temperature to the probabilities.

    Raises:
        AssertionError: with an explanation when a check fails or ``fn`` is a stub.
    """
    ctx = Ctx("sampling_probs", fn, seed)
    n, v = 4, 9
    orig = ctx.fn
    cases = [(1.0, None), (float(ctx.uniform(0.3, 0.8, 1)), None), (float(ctx.uniform(1.3, 2.5, 1)), 3),
             (float(ctx.uniform(0.5, 1.5, 1)), 1), (float(ctx.uniform(0.5, 1.5, 1)), 5)]
    for temp, k in cases:
        logits = 2 * ctx.randn(n, v, dtype=torch.float64)
        ctx.fn = lambda lg, t_=temp, k_=k: orig(lg, t_, k_)
        out = ctx.call(logits, what=f" and temperature={temp:.3f}, top_k={k}")
        if out.shape != (n, v):
            ctx.fail(f"expected probabilities of shape ({n}, {v}), one row per sequence, got {tuple(out.shape)}")

        def probs(lg, t, kk):
            if kk is not None:
                kth = lg.topk(kk, dim=-1).values[:, -1:]
                lg = lg.masked_fill(lg < kth, float("-inf"))
            return torch.softmax(lg / t, dim=-1)

        want = probs(logits, temp, k)
        tol = {"rtol": 1e-4, "atol": 1e-6}
        if close(out, want, **tol):
            continue
        full = torch.softmax(logits / temp, -1)
        candidates = {
            "the logits are multiplied by the temperature; divide them: softmax(logits / T).":
                probs(logits, 1 / temp, k),
        }
        if k is not None:
            kth = logits.topk(k, dim=-1).values[:, -1:]
            candidates["after top-k the kept probabilities must be renormalised to sum to one (set the other "
                       "LOGITS to -inf before the softmax, or divide by the kept mass)."] = full * (logits >= kth)
            if k + 1 <= v:
                candidates[f"k + 1 = {k + 1} tokens are kept; keep exactly the top_k = {k} largest."] = probs(
                    logits, temp, k + 1)
            if k > 1:
                candidates[f"k - 1 = {k - 1} tokens are kept; keep exactly the top_k = {k} largest."] = probs(
                    logits, temp, k - 1)
            candidates["the temperature is ignored when top_k is given."] = probs(logits, 1.0, k)
        candidates["the temperature is applied to the probabilities without renormalising; use softmax(logits / T)."] \
            = probs(logits, 1.0, k) ** (1 / temp)
        hint = diagnose(out, candidates, **tol) or "expected softmax(logits / T) over the top_k largest logits."
        ctx.fail(f"wrong probabilities for temperature={temp:.3f}, top_k={k}: {hint}\n  logits[0] = {fmt(logits[0])}"
                 f"\n  expected {fmt(want[0])}\n  got      {fmt(out[0])}")
    ctx.passed("temperature and top-k, renormalised, for several T and k")
