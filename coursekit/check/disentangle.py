"""Checkers for chapter 14 (disentanglement): DCI scores from an importance matrix, the mutual information gap of
binned codes and adaptive instance normalisation."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ..disentangle import dci_from_importance, discrete_mutual_information
from ._harness import Ctx, close, diagnose, fmt

__all__ = ["dci_scores", "mutual_information_gap", "adain"]


def _dci_variant(r: torch.Tensor, *, base: str = "k", weighted: bool = True, transpose: bool = False,
                 one_minus: bool = True) -> torch.Tensor:
    """D and C with one deliberate change (a common mistake), for the hints."""
    def scores(m, weights_axis):
        p = m / m.sum(1, keepdim=True)
        h = -torch.xlogy(p, p).sum(1)
        if base == "k":
            h = h / math.log(m.shape[1])
        elif base == "bits":
            h = h / math.log(2)
        s = 1 - h if one_minus else h
        w = m.sum(1) / m.sum() if weighted else torch.full((m.shape[0],), 1.0 / m.shape[0], dtype=m.dtype)
        return (w * s).sum()

    d, c = scores(r, 1), scores(r.T, 0)
    return torch.stack([c, d]) if transpose else torch.stack([d, c])


def dci_scores(fn: Callable, *, seed: int | None = None) -> None:
    r"""Check ``fn(R) -> tensor([disentanglement, completeness])`` for an importance matrix R (D, K) >= 0.

    The reference is :func:`coursekit.disentangle.dci_from_importance` (Eastwood & Williams 2018): per-latent
    :math:`1 - H_K(P_{i\cdot})` averaged with weights :math:`\rho_i`, per-factor :math:`1 - H_D(\tilde P_{\cdot j})`
    averaged with the factors' shares of importance. Hints for natural logarithms or bits instead of base K / D,
    unweighted averages, the two scores swapped and a missing ``1 -``. Also checks a one-to-one matrix (1, 1).

    Raises:
        AssertionError: with an explanation when a check fails or ``fn`` is a stub.
    """
    ctx = Ctx("dci_scores", fn, seed)
    for d, k in ((5, 3), (4, 4), (3, 6)):
        r = ctx.uniform(0.0, 1.0, d, k).double() ** 3  # skewed, so that weights and bases matter
        ref = dci_from_importance(r)
        want = torch.tensor([ref["disentanglement"], ref["completeness"]], dtype=torch.float64)
        out = ctx.call(r.clone(), what=f" (an importance matrix of {d} latents x {k} factors)")
        if out.shape != (2,):
            ctx.fail(f"expected a tensor of shape (2,) = [disentanglement, completeness], got shape {tuple(out.shape)}")
        if not close(out, want, rtol=1e-5, atol=1e-6):
            candidates = {
                "the entropies use the natural logarithm: D_i = 1 - H(P_i) / log K (base K, the number of factors) "
                "and C_j = 1 - H / log D (base D, the number of latents), so that each score lies in [0, 1].":
                    _dci_variant(r, base="nats"),
                "the entropies are in bits; the logarithm must be to base K for D_i and base D for C_j.":
                    _dci_variant(r, base="bits"),
                "the averages are unweighted: weight latent i by its share of the total importance "
                "sum_j R_ij / sum R, and factor j by sum_i R_ij / sum R.": _dci_variant(r, weighted=False),
                "disentanglement and completeness are swapped: disentanglement normalises each ROW (a latent's "
                "importance over the factors), completeness each COLUMN.": _dci_variant(r, transpose=True),
                "you return the normalised entropies; the scores are 1 minus them.": _dci_variant(r, one_minus=False),
            }
            hint = diagnose(out, candidates, rtol=1e-5, atol=1e-6) or (
                "expected disentanglement = sum_i rho_i (1 - H_K(P_i.)) and completeness = "
                "sum_j rho~_j (1 - H_D(P~_.j)).")
            ctx.fail(f"wrong values: {hint}\n  R (shape {d}x{k}) first row {fmt(r[0])}\n  expected {fmt(want)}, "
                     f"got {fmt(out)}")
    eye = torch.eye(4, dtype=torch.float64)[torch.randperm(4, generator=ctx.gen)]
    out = ctx.call(eye, what=" (a permutation matrix)")
    if not close(out, torch.ones(2, dtype=torch.float64), rtol=1e-6, atol=1e-6):
        ctx.fail(f"a permutation matrix (each latent explains one factor alone) should score [1, 1], got {fmt(out)}")
    ctx.passed("importance-weighted 1 - H_K and 1 - H_D, in [0, 1]")


def _mig_ref(z: torch.Tensor, f: torch.Tensor, *, normalise: bool = True, gap: bool = True, bits_mi: bool = False,
             over_factors: bool = False) -> torch.Tensor:
    mi = torch.tensor([[discrete_mutual_information(z[:, j], f[:, k]) for k in range(f.shape[1])]
                       for j in range(z.shape[1])], dtype=torch.float64)
    if bits_mi:
        mi = mi / math.log(2)
    h = []
    for k in range(f.shape[1]):
        c = torch.bincount(f[:, k]).double()
        p = c[c > 0] / c.sum()
        h.append(float(-(p * p.log()).sum()))
    h = torch.tensor(h, dtype=torch.float64)
    if over_factors:  # the gap taken for each latent across the factors, over the best factor's entropy
        top = mi.topk(2, dim=1)
        return ((top.values[:, 0] - top.values[:, 1]) / h[top.indices[:, 0]]).mean()
    top = mi.topk(2, dim=0).values
    num = top[0] - top[1] if gap else top[0]
    return (num / (h if normalise else 1.0)).mean()


def mutual_information_gap(fn: Callable, *, seed: int | None = None) -> None:
    r"""Check ``fn(codes, factors) -> MIG`` (0-dim tensor) for binned codes and discrete factors, int64 (N, D) and
    (N, K): :math:`\frac1K\sum_k (\hat I(z_{j^{(k)}}; v_k) - \hat I(z_{j'}; v_k)) / \hat H(v_k)` with the best and
    second-best latent for each factor and plug-in estimates (Chen et al. 2018). Hints for a missing
    normalisation by H(v_k), the best MI without the gap, the gap taken per latent instead of per factor and a
    mutual information in bits over an entropy in nats.

    Raises:
        AssertionError: with an explanation when a check fails or ``fn`` is a stub.
    """
    ctx = Ctx("mutual_information_gap", fn, seed)
    n, d, k = 600, 4, 3
    levels = 5
    f = torch.randint(levels, (n, k), generator=ctx.gen)
    noise = torch.randint(levels, (n, d), generator=ctx.gen)
    keep = torch.rand(n, d, generator=ctx.gen) < torch.tensor([0.9, 0.6, 0.4, 0.2])
    src = torch.tensor([0, 0, 1, 2])  # latents 0 and 1 both follow factor 0, with different noise
    z = torch.where(keep, f[:, src], noise)
    want = _mig_ref(z, f)
    out = ctx.call(z.clone(), f.clone(), what=" (binned codes and discrete factors)")
    if out.ndim != 0 and out.shape != (1,):
        ctx.fail(f"expected one number (a 0-dim tensor), got shape {tuple(out.shape)}")
    if not close(out.reshape(()), want, rtol=1e-4, atol=1e-6):
        candidates = {
            "the gaps are not normalised: divide each factor's gap by its entropy H(v_k), so that MIG lies in "
            "[0, 1].": _mig_ref(z, f, normalise=False),
            "this is the best latent's normalised MI without the gap: subtract the SECOND-best latent's MI, so a "
            "factor captured by two latents scores low.": _mig_ref(z, f, gap=False),
            "the gap is taken for each latent across the factors; MIG takes, for each FACTOR, the gap between its "
            "two most informative latents.": _mig_ref(z, f, over_factors=True),
            "the mutual information is in bits but the entropy in nats (or the reverse): use the same logarithm "
            "for both.": _mig_ref(z, f, bits_mi=True),
        }
        hint = diagnose(out.reshape(()), candidates, rtol=1e-4, atol=1e-6) or (
            "expected the mean over factors of (best MI - second-best MI) / H(v_k), plug-in estimates from counts.")
        ctx.fail(f"wrong value: {hint}\n  expected {float(want):.6f}, got {float(out.reshape(())):.6f}")
    ident = ctx.call(f.clone(), f.clone(), what=" (codes = the factors)")
    want = _mig_ref(f, f)  # near 1: the second-best latent's plug-in MI is small but positive
    if not close(ident.reshape(()), want, rtol=1e-4, atol=1e-6):
        ctx.fail(f"codes equal to the factors should give MIG = {float(want):.6f} (just below 1: the plug-in MI of "
                 f"an independent latent is slightly positive), got {float(ident.reshape(())):.6f}")
    ctx.passed("gap between the two most informative latents over H(v_k), averaged over factors")


def adain(fn: Callable, *, seed: int | None = None) -> None:
    r"""Check ``fn(x, scale, bias) -> scale * (x - mu) / sqrt(var + 1e-5) + bias`` for x (N, C, H, W) and scale, bias
    (N, C), with the mean and biased variance of each example's channel over the spatial positions (Huang &
    Belongie 2017). Hints for normalising over the batch (batch norm) or over the channels (layer norm), the
    unbiased variance, scale and bias swapped and a missing normalisation.

    Raises:
        AssertionError: with an explanation when a check fails or ``fn`` is a stub.
    """
    ctx = Ctx("adain", fn, seed)
    n, c, h, w = 3, 4, 3, 3
    x = 2 * ctx.randn(n, c, h, w) + ctx.randn(n, c, 1, 1)
    scale, bias = ctx.uniform(0.5, 2.0, n, c), ctx.randn(n, c)
    out = ctx.call(x, scale, bias)
    if out.shape != (n, c, h, w):
        ctx.fail(f"expected the shape of x, ({n}, {c}, {h}, {w}), got {tuple(out.shape)}")
    x64, s64, b64 = x.double(), scale.double()[:, :, None, None], bias.double()[:, :, None, None]

    def norm(dims, unbiased=False):
        mu = x64.mean(dims, keepdim=True)
        var = x64.var(dims, keepdim=True, unbiased=unbiased)
        return (x64 - mu) / torch.sqrt(var + 1e-5)

    ref = s64 * norm((2, 3)) + b64
    tol = {"rtol": 1e-4, "atol": 1e-4}
    if not close(out, ref, **tol):
        candidates = {
            "the statistics are over the batch (batch normalisation): AdaIN normalises each example's channel over "
            "its spatial positions only, dims (2, 3).": s64 * norm((0, 2, 3)) + b64,
            "the statistics are over channels and positions (layer normalisation): use dims (2, 3), one mean and "
            "variance per example AND channel.": s64 * norm((1, 2, 3)) + b64,
            "the variance is unbiased (divides by H*W - 1); instance normalisation uses the biased variance "
            "(unbiased=False).": s64 * norm((2, 3), unbiased=True) + b64,
            "scale and bias are swapped: the style's scale multiplies the normalised x and its bias is added.":
                b64 * norm((2, 3)) + s64,
            "x is not normalised: subtract each channel's mean and divide by its standard deviation first.":
                s64 * x64 + b64,
        }
        hint = diagnose(out, candidates, **tol) or "expected scale * (x - mean) / sqrt(var + 1e-5) + bias."
        ctx.fail(f"wrong values: {hint}\n  e.g. channel 0 of example 0: expected {fmt(ref[0, 0, 0])}, "
                 f"got {fmt(out[0, 0, 0])}")
    ctx.passed("per-example, per-channel normalisation over positions, then the style's scale and bias")
