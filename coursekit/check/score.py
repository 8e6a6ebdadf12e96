"""Checkers for chapter 09 (score matching): one Langevin step, the denoising score-matching target and the
exact trace of a score network's Jacobian."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ._harness import Ctx, close, diagnose, first_bad, fmt

__all__ = ["langevin_step", "dsm_target", "score_jacobian_trace"]


def langevin_step(fn: Callable, *, seed: int | None = None) -> None:
    r"""Check ``fn(x, score, step_size, z) -> x + (step_size / 2) * score + sqrt(step_size) * z``.

    One step of unadjusted Langevin dynamics with time step :math:`\varepsilon` (Welling & Teh 2011;
    Roberts & Tweedie 1996): drift :math:`\tfrac{\varepsilon}{2}\nabla\log p`, noise variance :math:`\varepsilon`.
    Checks the shape and values on random inputs (hints for a noise of :math:`\sqrt{2\varepsilon}`, a drift of
    :math:`\varepsilon` instead of :math:`\varepsilon/2`, :math:`\varepsilon z` without the square root, a flipped drift
    sign), ``step_size`` given as a python float, and that 4000 chains on N(0, 1) reach the discrete
    chain's stationary variance :math:`1 / (1 - \varepsilon/4)` within 5 standard errors.

    Raises:
        AssertionError: with an explanation when a check fails or ``fn`` is a stub.
    """
    ctx = Ctx("langevin_step", fn, seed)
    n, d = 6, 3
    x, sc, z = ctx.randn(n, d), ctx.randn(n, d), ctx.randn(n, d)
    eps = float(ctx.uniform(0.05, 0.5, 1))
    orig = ctx.fn
    ctx.fn = lambda x_, s_, z_: orig(x_, s_, eps, z_)
    out = ctx.call(x, sc, z, what=f" and step_size={eps:.4f}")
    if out.shape != (n, d):
        ctx.fail(f"expected the new state with x's shape ({n}, {d}), got {tuple(out.shape)}")
    x64, s64, z64 = x.double(), sc.double(), z.double()
    ref = x64 + 0.5 * eps * s64 + math.sqrt(eps) * z64
    tol = {"rtol": 1e-4, "atol": 1e-5}
    if not close(out, ref, **tol):
        candidates = {
            "the noise is sqrt(2 * step_size) * z: that is the convention x + tau*score + sqrt(2*tau)*z with "
            "tau = step_size; with a drift of step_size/2 the noise must be sqrt(step_size) * z "
            "(your chain would sample a density twice as wide).": x64 + 0.5 * eps * s64 + math.sqrt(2 * eps) * z64,
            "the drift is step_size * score; with noise sqrt(step_size) * z it must be (step_size / 2) * score "
            "(your chain would sample a density half as wide).": x64 + eps * s64 + math.sqrt(eps) * z64,
            "the noise must be scaled by the SQUARE ROOT of the step size: sqrt(step_size) * z.":
                x64 + 0.5 * eps * s64 + eps * z64,
            "the drift has the wrong sign: move UP the score (towards higher density), x + (step_size/2) * score.":
                x64 - 0.5 * eps * s64 + math.sqrt(eps) * z64,
            "the noise is missing: without sqrt(step_size) * z this is gradient ascent on log p, which "
            "converges to a mode instead of sampling.": x64 + 0.5 * eps * s64,
            "the noise is sqrt(step_size / 2) * z; with a drift of step_size/2 it must be sqrt(step_size) * z.":
                x64 + 0.5 * eps * s64 + math.sqrt(eps / 2) * z64,
        }
        hint = diagnose(out, candidates, **tol) or "expected x + (step_size / 2) * score + sqrt(step_size) * z."
        ctx.fail(f"wrong values: {hint}\n  e.g. step_size = {eps:.4f}, x = {fmt(x[0])}, score = {fmt(sc[0])}, "
                 f"z = {fmt(z[0])}\n  expected {fmt(ref[0])}, got {fmt(out[0])}")

    # sampling N(0, 1): score(x) = -x. The discrete chain's stationary variance is 1 / (1 - eps / 4).
    step, chains, n_steps = 0.2, 4000, 150
    xs = torch.zeros(chains, 1)
    ctx.fn = lambda x_, z_: orig(x_, -x_, step, z_)
    for _ in range(n_steps):
        xs = ctx.call(xs, ctx.randn(chains, 1)).detach().float()
    want = 1.0 / (1.0 - step / 4)
    var = float(xs.var())
    if abs(var - want) > 5 * want * math.sqrt(2.0 / chains):
        ctx.fail(f"running your step {n_steps} times with step_size={step} on the standard normal (score -x) gives "
                 f"variance {var:.3f}; the Langevin chain should give about {want:.3f}.")
    ctx.passed("x + (eps/2) score + sqrt(eps) z; 4000 chains sample N(0, 1) with the right variance")


def dsm_target(fn: Callable, *, seed: int | None = None) -> None:
    r"""Check ``fn(x, x_tilde, sigma) -> -(x_tilde - x) / sigma**2``, the denoising score-matching target
    :math:`\nabla_{\tilde x} \log \mathcal{N}(\tilde x; x, \sigma^2 I)` (Vincent 2011).

    Checks shape and values for a float ``sigma`` and for a per-example ``sigma`` of shape (N, 1), with
    hints for a flipped sign, dividing by sigma instead of sigma^2, and returning the noise itself.

    Raises:
        AssertionError: with an explanation when a check fails or ``fn`` is a stub.
    """
    ctx = Ctx("dsm_target", fn, seed)
    n, d = 5, 4
    x = ctx.randn(n, d)
    sigma = float(ctx.uniform(0.2, 0.7, 1))
    eps = ctx.randn(n, d)
    xt = x + sigma * eps
    orig = ctx.fn
    ctx.fn = lambda a, b: orig(a, b, sigma)
    out = ctx.call(x, xt, what=f" and sigma={sigma:.4f}")
    if out.shape != (n, d):
        ctx.fail(f"expected one target vector per example, shape ({n}, {d}), got {tuple(out.shape)}")
    x64, xt64, e64 = x.double(), xt.double(), (xt.double() - x.double()) / sigma
    ref = -(xt64 - x64) / sigma**2
    tol = {"rtol": 1e-4, "atol": 1e-4}
    if not close(out, ref, **tol):
        candidates = {
            "the sign is flipped: the target points from the noisy point BACK to the clean one, "
            "-(x_tilde - x) / sigma^2 = (x - x_tilde) / sigma^2.": -ref,
            "divide by sigma^2 (the variance), not sigma: "
            "grad log N(x_tilde; x, sigma^2 I) = -(x_tilde - x) / sigma^2.":
                -(xt64 - x64) / sigma,
            "that is minus the noise eps = (x_tilde - x) / sigma; the score of the Gaussian kernel is -eps / sigma.":
                -e64,
            "that is the noise eps = (x_tilde - x) / sigma itself; the target is -eps / sigma.": e64,
            "you forgot to divide by sigma^2.": -(xt64 - x64),
        }
        hint = diagnose(out, candidates, **tol) or "expected -(x_tilde - x) / sigma**2."
        ctx.fail(f"wrong values: {hint}\n  e.g. sigma = {sigma:.4f}, x = {fmt(x[0])}, x_tilde = {fmt(xt[0])}\n"
                 f"  expected {fmt(ref[0])}, got {fmt(out[0])}")
    sig_col = ctx.uniform(0.1, 1.0, n, 1)
    ctx.fn = lambda a, b, s: orig(a, b, s)
    out2 = ctx.call(x, xt, sig_col, what=" (sigma of shape (N, 1))")
    ref2 = -(xt64 - x64) / sig_col.double() ** 2
    if not close(out2, ref2, **tol):
        ctx.fail("correct for a float sigma but wrong for one sigma per example, sigma of shape (N, 1); use "
                 "broadcasting operations (** 2, /) that work for floats and tensors alike.")
    ctx.passed("-(x_tilde - x) / sigma^2 for a float and a per-example sigma")


def _trace_net(gen: torch.Generator, d: int) -> torch.nn.Module:
    net = torch.nn.Sequential(torch.nn.Linear(d, 12), torch.nn.Tanh(), torch.nn.Linear(12, d)).double()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64))
    return net


def score_jacobian_trace(fn: Callable, *, seed: int | None = None) -> None:
    r"""Check ``fn(score_fn, x) -> tr(grad_x score_fn(x))`` per example, shape (N,), by autograd.

    The reference is the diagonal of explicit per-example Jacobians
    (``torch.autograd.functional.jacobian``) of a random tanh network; the linear score
    :math:`s(x) = Wx + b` must give :math:`\operatorname{tr} W` for every example. Hints for summing the whole
    Jacobian (one backward pass of ``s.sum()``), returning a batch total, and random (Hutchinson)
    estimates. Finally the result must be differentiable in the network's parameters (``create_graph=True``),
    as training with :func:`coursekit.score.hyvarinen_loss` needs (Hyvarinen 2005, theorem 1).

    Raises:
        AssertionError: with an explanation when a check fails or ``fn`` is a stub.
    """
    ctx = Ctx("score_jacobian_trace", fn, seed)
    n, d = 6, 3
    orig = ctx.fn
    w = ctx.randn(d, d, dtype=torch.float64)
    b = ctx.randn(d, dtype=torch.float64)
    ctx.fn = lambda x_: orig(lambda z: z @ w.T + b, x_)
    x = ctx.randn(n, d, dtype=torch.float64)
    out = ctx.call(x, what=" (a linear score s(x) = W x + b)")
    if out.shape != (n,):
        hint = ("you returned a single number: return one trace per example (shape (N,))." if out.ndim == 0 else
                "return one trace per example, shape (N,).")
        ctx.fail(f"expected shape ({n},) for x of shape ({n}, {d}), got {tuple(out.shape)}: {hint}")
    tr_w = torch.trace(w).expand(n)
    if not close(out, tr_w, 1e-6, 1e-8):
        hint = None
        if close(out, w.sum().expand(n), 1e-6, 1e-8):
            hint = ("you summed every entry of the Jacobian (e.g. grad(s.sum(), x).sum(-1)); the trace keeps only "
                    "the diagonal d s_i / d x_i: differentiate s[:, i].sum() and keep column i, for each i.")
        ctx.fail(f"for the linear score s(x) = W x + b the trace is tr W = {float(torch.trace(w)):.5f} "
                 f"for every example; "
                 f"got {fmt(out)}. {hint or ''}")

    net = _trace_net(ctx.gen, d)
    x = ctx.randn(n, d, dtype=torch.float64)
    ctx.fn = lambda x_: orig(net, x_)
    out = ctx.call(x, what=" (a small tanh network)")
    jac = torch.stack([torch.autograd.functional.jacobian(lambda xi: net(xi[None])[0], xi) for xi in x])
    ref = jac.diagonal(dim1=1, dim2=2).sum(-1)
    if not close(out, ref, 1e-6, 1e-8):
        again = ctx.call(x)
        if again.shape == out.shape and not torch.allclose(again.detach(), out.detach()):
            hint = ("your function returns different values for the same input: compute the trace exactly, "
                    "not with random projections.")
        elif close(out, jac.sum((1, 2)), 1e-6, 1e-8):
            hint = "you summed every entry of the Jacobian; the trace is the sum of the diagonal d s_i / d x_i only."
        elif close(out.reshape(-1)[:1].expand(n) if out.numel() else out, ref.sum().expand(n), 1e-6, 1e-8):
            hint = "you returned the batch total; return one trace per example."
        else:
            hint = "expected sum_i d s_i(x) / d x_i for each example."
        i = first_bad(out, ref, 1e-6, 1e-8)
        ctx.fail(f"wrong values for a small tanh network: {hint}\n  example {i}: expected {float(ref[i]):.6f}, "
                 f"got {fmt(out.reshape(-1)[i:i + 1])}")
    params = list(net.parameters())
    if not out.requires_grad:
        ctx.fail("the trace is not differentiable in the network's parameters, so hyvarinen_loss could not be "
                 "trained with it: pass create_graph=True to torch.autograd.grad.")
    grads = torch.autograd.grad(out.sum(), params, allow_unused=True)
    if grads[0] is None:  # the first layer's weights shape the Jacobian (the output bias does not)
        ctx.fail("the gradient of the trace does not reach every parameter of the network: use "
                 "torch.autograd.grad(..., create_graph=True) and do not detach.")
    ctx.passed("exact per-example trace (linear score gives tr W; a tanh network matches explicit Jacobians), "
               "differentiable in the parameters")
