"""Checkers for chapter 01 (probability and information): the entropy of a discrete distribution, inverse-CDF
sampling of an exponential distribution and the mutual information of a joint table."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ..divergences import conditional_entropy, entropy, kl_divergence, mutual_information
from ._harness import Ctx, close, first_bad, fmt, hint_for

__all__ = ["discrete_entropy", "sample_exponential", "mutual_info"]

_TOL = {"rtol": 1e-6, "atol": 1e-8}


def _simplex(ctx: Ctx, *shape: int, zeros: bool) -> torch.Tensor:
    """Random probability vectors along the last dim (float64); with ``zeros``, about a quarter of the entries 0."""
    w = ctx.uniform(0.0, 1.0, *shape).double() ** 2
    if zeros:
        w[ctx.uniform(0.0, 1.0, *shape) < 0.25] = 0.0
        w[..., 0] += 0.05
    return w / w.sum(-1, keepdim=True)


def _fail_values(ctx: Ctx, out: torch.Tensor, ref: torch.Tensor, cands: dict, tol: dict, *, default: str,
                 not_finite: str, shown: Callable[[int], str]) -> None:
    """Fail with the named mistake (else ``not_finite`` or ``default``) and the first failing input, ``shown(i)``."""
    hint = hint_for(out, cands, **tol, default=default, not_finite=not_finite)
    i = first_bad(out, ref, **tol)
    ctx.fail(f"wrong values: {hint}\n  e.g. {shown(i)}:\n  expected {float(ref[i]):.6f}, got "
             f"{float(out.detach().reshape(-1)[i]):.6f}")


def discrete_entropy(fn: Callable, *, seed: int | None = None) -> None:
    r"""Check ``fn(p) -> H(p) = -sum_k p_k log p_k`` in nats for probability vectors along the last dim.

    Inputs: float64 ``(N, K)`` with some exact zeros (``0 log 0 = 0``). Checks the shape ``(N,)``, the values against
    :func:`coursekit.divergences.entropy` (Shannon 1948) with hints (bits instead of nats, the sign, a mean instead
    of a sum, NaN from ``0 log 0``), and the worked values: 0 for a point mass, ``log K`` for the uniform
    distribution.

    Raises:
        AssertionError: with an explanation when a check fails or ``fn`` is a stub.
    """
    ctx = Ctx("discrete_entropy", fn, seed)
    n, k = 5, 6
    p = _simplex(ctx, n, k, zeros=True)
    out = ctx.call(p)
    if out.shape != (n,):
        hint = ("you summed over the batch (dim=0): sum over the outcomes (dim=-1)." if tuple(out.shape) == (k,)
                else "you returned one term per outcome: sum over the last dim." if tuple(out.shape) == (n, k)
                else "return one entropy per distribution (sum over dim=-1 only).")
        ctx.fail(f"expected output shape ({n},) for p of shape ({n}, {k}), got {tuple(out.shape)}: {hint}")
    ref = entropy(p)
    if not close(out, ref, **_TOL):
        cands = {
            "these are bits (log base 2): the course works in nats, the natural log; divide by ln 2 only to "
            "convert.": ref / math.log(2),
            "the sign is flipped: H(p) = -sum p log p is >= 0 because log p <= 0.": -ref,
            f"you averaged over the {k} outcomes: the entropy is a SUM over k of -p_k log p_k.": ref / k,
        }
        _fail_values(ctx, out, ref, cands, _TOL, default="expected -sum_k p_k log p_k over the last dim, in nats.",
                     not_finite="your result is not finite: an outcome with p_k = 0 contributes 0 (0 log 0 = 0, "
                                "the limit of x log x). Use torch.xlogy(p, p) or torch.where, not p * log(p).",
                     shown=lambda i: f"p = {fmt(p[i])}")
    special = torch.zeros(2, k, dtype=torch.float64)
    special[0, 2] = 1.0
    special[1] = 1.0 / k
    got = ctx.call(special)
    want = torch.tensor([0.0, math.log(k)], dtype=torch.float64)
    if not close(got, want, 0, 1e-10):
        ctx.fail(f"worked values: a point mass has entropy 0 and the uniform distribution on {k} outcomes log {k} = "
                 f"{math.log(k):.6f} nats; got {fmt(got, 6)}.")
    ctx.passed("-sum p log p in nats with 0 log 0 = 0; 0 for a point mass, log K for the uniform distribution")


def sample_exponential(fn: Callable, *, seed: int | None = None) -> None:
    r"""Check ``fn(u, rate) -> F^{-1}(u) = -log(1 - u) / rate``, inverse-CDF samples of Exponential(rate).

    The CDF is :math:`F(x) = 1 - e^{-\lambda x}` for :math:`x \ge 0`; solving :math:`F(x) = u` gives
    :math:`x = -\log(1 - u)/\lambda`. Inputs: float64 ``u`` in (0, 1) and positive ``rate`` of shape ``(N,)``.
    Checks the shape, the values (hints: ``-log(u)/rate``, which has the right distribution but is
    :math:`F^{-1}(1 - u)`; multiplying by the rate; the sign; returning the CDF) and the
    accuracy for ``u`` near 0 (``log1p``).

    Raises:
        AssertionError: with an explanation when a check fails or ``fn`` is a stub.
    """
    ctx = Ctx("sample_exponential", fn, seed)
    n = 8
    u = ctx.uniform(0.01, 0.99, n).double()
    rate = ctx.uniform(0.2, 5.0, n).double()
    out = ctx.call(u, rate)
    if out.shape != (n,):
        ctx.fail(f"expected one sample per u, shape ({n},), got {tuple(out.shape)}: the map is elementwise.")
    ref = -torch.log1p(-u) / rate
    # Loose enough that a float32 computation (relative error up to ~1e-5 for u near 0.01) passes here and is
    # reported by the accuracy check below, which names log1p; tight enough for every wrong formula above.
    tol = {"rtol": 1e-4, "atol": 1e-9}
    if not close(out, ref, **tol):
        cands = {
            "you returned -log(u) / rate. It has the right distribution (1 - u is uniform too), but it is "
            "F^{-1}(1 - u), a decreasing function of u; the exercise asks for the inverse CDF F^{-1}(u) = "
            "-log(1 - u) / rate.": -torch.log(u) / rate,
            "you multiplied by the rate: the mean of Exponential(rate) is 1 / rate, so divide.":
                -torch.log1p(-u) * rate,
            "the sign is flipped: log(1 - u) < 0, so x = -log(1 - u) / rate is positive.": torch.log1p(-u) / rate,
            "you returned the CDF F(u) = 1 - exp(-rate * u); invert it: solve F(x) = u for x.":
                1 - torch.exp(-rate * u),
        }
        _fail_values(ctx, out, ref, cands, tol, default="expected x = -log(1 - u) / rate, the solution of "
                                                        "1 - exp(-rate x) = u.",
                     not_finite="your result is not finite for u in (0.01, 0.99); check the logarithm's argument.",
                     shown=lambda i: f"u = {float(u[i]):.4f}, rate = {float(rate[i]):.4f}")
    tiny = torch.tensor([1e-6, 1e-4, 0.5, 1 - 1e-9], dtype=torch.float64)
    ones = torch.ones(4, dtype=torch.float64)
    got = ctx.call(tiny, ones)
    if not close(got, -torch.log1p(-tiny), 1e-6, 0.0):
        ctx.fail(f"inaccurate for u near 0 or 1: for u = {fmt(tiny, 12)} and rate 1 expected "
                 f"{fmt(-torch.log1p(-tiny), 12)}, got {fmt(got, 12)}. Compute in the dtype of u (float64 here); "
                 "torch.log1p(-u) computes log(1 - u) accurately when u is tiny.")
    ctx.passed("x = -log(1 - u) / rate solves F(x) = u; accurate for u near 0 and 1")


def mutual_info(fn: Callable, *, seed: int | None = None) -> None:
    r"""Check ``fn(joint) -> I(X; Y)`` in nats for joint tables of shape ``(N, K, L)`` (rows x, columns y).

    :math:`I(X;Y) = \sum_{x,y} p(x,y) \log \frac{p(x,y)}{p(x)p(y)}` with ``0 log 0 = 0``. Checks the shape
    ``(N,)``, the values against :func:`coursekit.divergences.mutual_information` (hints: bits, the sign,
    :math:`H(X) + H(Y)` without the joint term, the conditional entropy, the joint entropy), that ``I = 0`` for
    independent variables, ``I = H(X)`` when y determines x and x determines y, and tables with zeros.

    Raises:
        AssertionError: with an explanation when a check fails or ``fn`` is a stub.
    """
    ctx = Ctx("mutual_info", fn, seed)
    n, k, l = 4, 3, 5
    joint = _simplex(ctx, n, k * l, zeros=False).reshape(n, k, l)
    out = ctx.call(joint)
    if out.shape != (n,):
        hint = ("sum over both x and y, dim=(-2, -1)." if tuple(out.shape) in ((n, k), (n, l))
                else "return one value per table (reduce over the last two dims only).")
        ctx.fail(f"expected output shape ({n},) for a joint of shape ({n}, {k}, {l}), got {tuple(out.shape)}: {hint}")
    ref = mutual_information(joint)
    flat = joint.reshape(n, -1)
    h_x, h_y, h_xy = entropy(joint.sum(-1)), entropy(joint.sum(-2)), entropy(flat)
    if not close(out, ref, **_TOL):
        product = (joint.sum(-1, keepdim=True) * joint.sum(-2, keepdim=True)).reshape(n, -1)
        cands = {
            "these are bits: use the natural log (nats).": ref / math.log(2),
            "the sign is flipped: I(X; Y) = KL(p(x, y) || p(x) p(y)) >= 0.": -ref,
            "H(X) + H(Y) is missing the joint term: I = H(X) + H(Y) - H(X, Y).": h_x + h_y,
            "this is the conditional entropy H(Y | X) = H(X, Y) - H(X); I(X; Y) = H(Y) - H(Y | X).":
                conditional_entropy(joint),
            "this is the joint entropy H(X, Y); I(X; Y) = H(X) + H(Y) - H(X, Y).": h_xy,
            "this is KL(p(x) p(y) || p(x, y)), the arguments reversed: I = KL(p(x, y) || p(x) p(y)).":
                kl_divergence(product, flat),
        }
        _fail_values(ctx, out, ref, cands, _TOL, default="expected sum_{x,y} p(x,y) log(p(x,y) / (p(x) p(y))) "
                                                         "with p(x) = joint.sum(-1), p(y) = joint.sum(-2).",
                     not_finite="your result is not finite; cells with p(x, y) = 0 contribute 0.",
                     shown=lambda i: f"joint = {fmt(joint[i])}")
    px, py = _simplex(ctx, k, zeros=False), _simplex(ctx, l, zeros=False)
    indep = (px[:, None] * py[None, :])[None]
    got = ctx.call(indep)
    if not close(got, torch.zeros(1, dtype=torch.float64), 0, 1e-10):
        ctx.fail(f"for independent X and Y (joint = p(x) p(y)) the mutual information is 0; got {fmt(got, 6)}.")
    diag = torch.diag_embed(_simplex(ctx, 1, k, zeros=True))  # (1, k, k), x = y, with zero cells
    got = ctx.call(diag)
    want = entropy(diag.sum(-1))
    if not close(got, want, **_TOL):
        extra = (" Cells with p(x, y) = 0 must contribute 0 (0 log 0 = 0): use torch.xlogy or torch.where."
                 if not bool(torch.isfinite(got.detach()).all()) else "")
        ctx.fail(f"when x = y (a diagonal table) I(X; Y) = H(X) = {float(want[0]):.6f}; got {fmt(got, 6)}.{extra}")
    ctx.passed("KL(p(x,y) || p(x)p(y)) in nats; 0 for independent variables, H(X) when y = x")
