"""Checkers for chapter 05 (normalizing flows): the RealNVP affine coupling in both directions and bits per
dimension of the dequantised digits."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from .. import flows
from ._harness import Ctx, close, diagnose, fmt

__all__ = ["coupling_forward", "coupling_inverse", "digits_bits_per_dim"]


def _coupling_net(gen: torch.Generator, d: int):
    """A fixed random network (x_masked (N, d) -> (s, t), each (N, d)) for the coupling checks, float64."""
    w1 = torch.randn(d, 16, generator=gen, dtype=torch.float64) / math.sqrt(d)
    w2 = torch.randn(16, 2 * d, generator=gen, dtype=torch.float64) * 0.4
    b2 = torch.randn(2 * d, generator=gen, dtype=torch.float64) * 0.3

    def net(x_masked):
        h = torch.tanh(x_masked.to(torch.float64) @ w1) @ w2 + b2
        s, t = h.chunk(2, dim=-1)
        return s.to(x_masked.dtype), t.to(x_masked.dtype)

    return net


def _pair(out, what: str):
    """Pack a student's ``(values, log_det)`` into one tensor (N, D + 1) for :meth:`Ctx.call`."""
    if not (isinstance(out, (tuple, list)) and len(out) == 2
            and all(isinstance(o, torch.Tensor) for o in out)):
        raise TypeError(f"return a tuple ({what}, log_det) of two tensors, got {type(out).__name__}")
    y, ld = out
    if y.ndim != 2 or ld.shape != (y.shape[0],):
        raise TypeError(f"expected {what} of shape (N, D) and log_det of shape (N,), got {tuple(y.shape)} and "
                        f"{tuple(ld.shape)} (sum the log-scales over the last dimension, one number per example)")
    return torch.cat([y, ld.unsqueeze(-1).to(y.dtype)], dim=-1)


def _coupling_setup(ctx, n, d):
    mask = (torch.rand(d, generator=ctx.gen) < 0.5).double()
    mask[0], mask[-1] = 1.0, 0.0  # at least one of each
    mask = mask[torch.randperm(d, generator=ctx.gen)]
    return ctx.randn(n, d, dtype=torch.float64), mask, _coupling_net(ctx.gen, d)


def _coupling_ref(x, mask, net, inverse: bool):
    s, t = net(x * mask)
    s, t = s * (1 - mask), t * (1 - mask)
    if inverse:
        return x * mask + (1 - mask) * (x - t) * torch.exp(-s), -s.sum(-1), s, t
    return x * mask + (1 - mask) * (x * torch.exp(s) + t), s.sum(-1), s, t


def coupling_forward(fn: Callable, *, seed: int | None = None) -> None:
    r"""Check ``fn(x, mask, net) -> (z, log_det)``, the RealNVP affine coupling (Dinh et al. 2017, eq. 6-9).

    ``x`` (N, D), ``mask`` (D,) of 0/1 (1 = passed through), ``net(x * mask) -> (s, t)`` each (N, D).
    Expected :math:`z = b \odot x + (1 - b) \odot (x \odot e^{s} + t)` and
    ``log_det`` :math:`= \sum_i (1 - b_i) s_i`, shape (N,). Checks values (hints: log-det not masked,
    masked half transformed, net fed the unmasked x, exp(-s) instead of exp(s)), and ``log_det`` against
    ``torch.autograd.functional.jacobian`` of ``z``.

    Raises:
        AssertionError: with an explanation when a check fails or ``fn`` is a stub.
    """
    _check_coupling(fn, seed, inverse=False)


def coupling_inverse(fn: Callable, *, seed: int | None = None) -> None:
    r"""Check ``fn(z, mask, net) -> (x, log_det)``, the inverse of the affine coupling.

    Expected :math:`x = b \odot z + (1 - b) \odot (z - t) \odot e^{-s}` with ``(s, t) = net(z * mask)`` (the
    passed-through half is the same in z and x), and ``log_det`` :math:`= \log\lvert\det \partial x/\partial z
    \rvert = -\sum_i (1 - b_i) s_i`. Checks values (hints: the sign of the log-det, shift and scale in
    the wrong order, exp(s) instead of exp(-s)), that it inverts :func:`coupling_forward`'s formula, and
    ``log_det`` against autograd.

    Raises:
        AssertionError: with an explanation when a check fails or ``fn`` is a stub.
    """
    _check_coupling(fn, seed, inverse=True)


def _check_coupling(fn, seed, inverse: bool):
    name = "coupling_inverse" if inverse else "coupling_forward"
    ctx = Ctx(name, fn, seed)
    n, d = 5, 6
    x, mask, net = _coupling_setup(ctx, n, d)
    orig = ctx.fn
    out_name = "x" if inverse else "z"
    ctx.fn = lambda v: _pair(orig(v, mask, net), out_name)
    out = ctx.call(x, what=" (plus mask and net)")
    y, ld = out[:, :d].double(), out[:, d].double()
    ref_y, ref_ld, s, t = _coupling_ref(x, mask, net, inverse)
    free = 1 - mask
    tol = {"rtol": 1e-5, "atol": 1e-6}
    if not close(y, ref_y, **tol):
        s_all, t_all = net(x)  # the net fed the unmasked input
        if inverse:
            cands = {
                "undo the shift before the scale: x = (z - t) * exp(-s) on the transformed half, not "
                "z * exp(-s) - t.": x * mask + free * (x * torch.exp(-s) - t),
                "the inverse divides by the scale: multiply by exp(-s), not exp(s).":
                    x * mask + free * (x - t) * torch.exp(s),
                "the passed-through half (mask = 1) must be copied unchanged: apply s and t only where mask = 0.":
                    (x - net(x * mask)[1]) * torch.exp(-net(x * mask)[0]),
            }
        else:
            cands = {
                "the scale is exp(s), not exp(-s).": x * mask + free * (x * torch.exp(-s) + t),
                "the passed-through half (mask = 1) must be copied unchanged: apply s and t only where mask = 0.":
                    x * torch.exp(net(x * mask)[0]) + net(x * mask)[1],
                "scale then shift: z = x * exp(s) + t, not (x + t) * exp(s).": x * mask + free * (x + t) * torch.exp(s),
            }
        cands["the network must see only the passed-through half: call net(x * mask), not net(x) (otherwise the "
              "layer is not invertible and its Jacobian is not triangular)."] = (
            x * mask + free * ((x - t_all) * torch.exp(-s_all) if inverse else x * torch.exp(s_all) + t_all))
        hint = diagnose(y, cands, **tol) or (
            "expected x = mask*z + (1-mask)*(z - t)*exp(-s)" if inverse
            else "expected z = mask*x + (1-mask)*(x*exp(s) + t)")
        ctx.fail(f"wrong {out_name}: {hint}\n  input row 0 = {fmt(x[0])}, mask = {fmt(mask)}\n"
                 f"  expected {fmt(ref_y[0])}, got {fmt(y[0])}")
    if not close(ld, ref_ld, **tol):
        s_full = net(x * mask)[0]
        cands = {
            ("the sign: log|det dx/dz| of the inverse is MINUS the sum of the log-scales, -sum((1-mask)*s)."
             if inverse
             else "the sign: log|det dz/dx| = +sum((1-mask)*s), the log of the product of the scales exp(s_i)."):
                -ref_ld,
            "only the transformed half contributes: sum (1 - mask) * s, not all of s (the passed-through "
            "half has Jacobian 1, log 1 = 0).": (-1 if inverse else 1) * s_full.sum(-1),
            "the log-determinant is the sum of the log-scales s_i, not of the scales exp(s_i).":
                (-1 if inverse else 1) * (free * torch.exp(s)).sum(-1),
        }
        hint = diagnose(ld, cands, **tol) or "expected the sum over the transformed coordinates of the log-scale."
        ctx.fail(f"wrong log_det: {hint}\n  expected {fmt(ref_ld)}, got {fmt(ld)}")

    # log_det against the autograd Jacobian of the student's own map
    jac_ld = []
    for row in x:
        jac = torch.autograd.functional.jacobian(lambda v: orig(v.unsqueeze(0), mask, net)[0].squeeze(0), row)
        jac_ld.append(torch.linalg.slogdet(jac.double()).logabsdet)
    if not close(ld, torch.stack(jac_ld), rtol=1e-5, atol=1e-5):
        ctx.fail(f"log_det does not match log|det J| of your map computed by autograd: {fmt(torch.stack(jac_ld))} "
                 f"vs your {fmt(ld)}. Make {out_name} a differentiable torch function of the input.")
    if inverse:  # round trip through the forward formula
        z_fwd = _coupling_ref(x, mask, net, inverse=False)[0]
        back = ctx.call(z_fwd, what=" (plus mask and net)")[:, :d].double()
        if not close(back, x, rtol=1e-5, atol=1e-6):
            ctx.fail(f"inverse(forward(x)) != x: got {fmt(back[0])} for x = {fmt(x[0])}")
    detail = ("x = mask*z + (1-mask)*(z-t)*exp(-s), log_det = -sum((1-mask)*s) = autograd's, inverts the forward map"
              if inverse else "z = mask*x + (1-mask)*(x*exp(s)+t), log_det = sum((1-mask)*s) = autograd's log|det J|")
    ctx.passed(detail)


def digits_bits_per_dim(fn: Callable, *, seed: int | None = None) -> None:
    r"""Check ``fn(nll_nats, dim) -> bits/dim`` of the 17-level digits from a continuous NLL on dequantised
    data in [0, 1): ``(nll + dim * log 17) / (dim * ln 2)`` (Theis et al. 2016 sec. 3.1;
    :func:`coursekit.flows.digits_bits_per_dim`).

    ``nll_nats`` has shape (N,); the result has shape (N,). Hints: the dequantisation term missing, 16 or
    256 levels instead of 17, nats instead of bits, per image instead of per dimension, the sign.

    Raises:
        AssertionError: with an explanation when a check fails or ``fn`` is a stub.
    """
    ctx = Ctx("digits_bits_per_dim", fn, seed)
    n = 6
    d = int(ctx.uniform(16, 80, 1).round())
    nll = ctx.uniform(-150.0, 40.0, n)
    orig = ctx.fn
    ctx.fn = lambda v: orig(v, d)
    out = ctx.call(nll, what=f" and dim={d}")
    if out.shape != (n,):
        ctx.fail(f"expected one value per example, shape ({n},), got {tuple(out.shape)}")
    nl = nll.double()
    ref = flows.digits_bits_per_dim(nl, d)
    ln2 = math.log(2)
    tol = {"rtol": 1e-5, "atol": 1e-5}
    if not close(out, ref, **tol):
        cands = {
            "the dequantisation term is missing: add dim * log(17) nats (the volume 17^-dim of one bin) before "
            "converting, i.e. + log2(17) bits/dim.": nl / (d * ln2),
            "the digits have 17 levels (0..16), not 16: the bin width is 1/17.": (nl + d * math.log(16)) / (d * ln2),
            "256 levels is for 8-bit images; the digits have 17 (0..16).": (nl + d * math.log(256)) / (d * ln2),
            "the correction has the wrong sign: the discrete NLL is the continuous NLL PLUS dim * log(17).":
                (nl - d * math.log(17)) / (d * ln2),
            "these are nats per dimension: divide by ln 2 as well to get bits.": (nl + d * math.log(17)) / d,
            "these are bits per image: divide by dim as well.": (nl + d * math.log(17)) / ln2,
        }
        hint = diagnose(out, cands, **tol) or "expected (nll + dim * log 17) / (dim * ln 2)."
        ctx.fail(f"wrong values: {hint}\n  e.g. nll = {float(nl[0]):.4f} nats, dim = {d}: expected "
                 f"{float(ref[0]):.6f} bits/dim, got {float(out[0].detach()):.6f}")
    zero = ctx.call(torch.zeros(2))
    if not close(zero, torch.full((2,), math.log2(17), dtype=torch.float64), **tol):
        ctx.fail(f"a density uniform on [0, 1)^dim (NLL 0) must cost log2(17) = {math.log2(17):.4f} bits/dim, the "
                 f"code length of 17 equally likely levels; got {fmt(zero)}")
    ctx.passed("(nll + dim log 17) / (dim ln 2); the uniform density gives log2(17) bits/dim")
