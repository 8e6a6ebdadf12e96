"""Checkers for chapter 12 (guidance, contrastive image-text models and image-to-image translation): the
classifier-free guidance combination, CLIP's symmetric InfoNCE loss from embeddings, and CycleGAN's
cycle-consistency loss."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from ._harness import Ctx, close, diagnose, first_bad, fmt

__all__ = ["classifier_free_eps", "clip_loss", "cycle_consistency_loss"]


def classifier_free_eps(fn: Callable, *, seed: int | None = None) -> None:
    r"""Check ``fn(eps_cond, eps_uncond, w) -> eps_uncond + w * (eps_cond - eps_uncond)``, the noise prediction of
    classifier-free guidance with the convention of chapter 12 (``w = 0`` unconditional, ``w = 1`` conditional).

    Checks the shape and the values for a random w in [1.5, 4] on random (N, 1, 8, 8) predictions, with hints for Ho
    & Salimans' convention used with the chapter's w, the roles of the two predictions swapped, a missing
    unconditional term and the difference's sign flipped; then that w = 0 and w = 1 give the unconditional and the
    conditional prediction (to rounding).

    Raises:
        AssertionError: with an explanation when a check fails or ``fn`` is a stub.
    """
    ctx = Ctx("classifier_free_eps", fn, seed)
    n = 4
    cond, uncond = ctx.randn(n, 1, 8, 8), ctx.randn(n, 1, 8, 8)
    w = float(ctx.uniform(1.5, 4.0, 1))
    orig = ctx.fn
    ctx.fn = lambda c, u: orig(c, u, w)
    out = ctx.call(cond, uncond, what=f" and w={w:.4f}")
    if out.shape != cond.shape:
        ctx.fail(f"expected one guided prediction per image, shape {tuple(cond.shape)}, got {tuple(out.shape)}")
    c, u = cond.double(), uncond.double()
    ref = u + w * (c - u)
    tol = {"rtol": 1e-5, "atol": 1e-5}
    if not close(out, ref, **tol):
        candidates = {
            "that is Ho & Salimans' form (1 + w) eps_cond - w eps_uncond, whose weight is the chapter's w - 1: with "
            "the chapter's w, eps_uncond + w (eps_cond - eps_uncond).": (1 + w) * c - w * u,
            "the two predictions are swapped: start from the UNconditional one and move along "
            "eps_cond - eps_uncond.": c + w * (u - c),
            "the unconditional prediction is missing: eps_uncond + w (eps_cond - eps_uncond), not "
            "w (eps_cond - eps_uncond).": w * (c - u),
            "that is only w eps_cond: the guided prediction is (1 - w) eps_uncond + w eps_cond.": w * c,
            "the sign of the difference is flipped: guidance moves TOWARDS the conditional prediction.":
                u - w * (c - u),
        }
        hint = diagnose(out, candidates, **tol) or "expected eps_uncond + w * (eps_cond - eps_uncond)."
        i = first_bad(out, ref, **tol)
        ctx.fail(f"wrong values for w = {w:.4f}: {hint}\n  image {i}, first pixels: eps_cond "
                 f"{fmt(c[i].flatten()[:3])}, eps_uncond {fmt(u[i].flatten()[:3])}\n  expected "
                 f"{fmt(ref[i].flatten()[:3])}, got {fmt(out[i].flatten()[:3])}")
    for w_end, want, what in ((0.0, u, "the unconditional prediction"), (1.0, c, "the conditional prediction")):
        ctx.fn = lambda c_, u_, w_=w_end: orig(c_, u_, w_)
        got = ctx.call(cond, uncond, what=f" and w={w_end}")
        if not close(got, want, **tol):
            ctx.fail(f"with w = {w_end:g} the guided prediction must be {what} (to rounding); got a different tensor.")
    ctx.passed("eps_uncond + w (eps_cond - eps_uncond); w = 0 unconditional, w = 1 conditional")


def _clip_reference(u: torch.Tensor, v: torch.Tensor, tau: float) -> torch.Tensor:
    logits = F.normalize(u, dim=1) @ F.normalize(v, dim=1).T / tau
    labels = torch.arange(u.shape[0])
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


def clip_loss(fn: Callable, *, seed: int | None = None) -> None:
    r"""Check ``fn(image_emb, text_emb, temperature) -> 0-dim loss``, CLIP's symmetric InfoNCE (Radford et al. 2021):
    normalise the rows, logits :math:`\cos(u_i, v_j)/\tau`, the mean of the cross-entropies over rows and
    over columns with the diagonal as the positives.

    Checks a scalar output and its value on random unnormalised (N, E) embeddings (float64), with hints for
    forgotten normalisation, one direction only, the temperature multiplied instead of divided, a sum instead of a
    mean, and the mutual-information bound log N - L returned instead of L; then that rescaling the embeddings leaves
    it unchanged and that perfectly aligned embeddings give a loss below log N.

    Raises:
        AssertionError: with an explanation when a check fails or ``fn`` is a stub.
    """
    ctx = Ctx("clip_loss", fn, seed)
    n, e = 6, 5
    u = ctx.randn(n, e, dtype=torch.float64) * 3
    v = ctx.randn(n, e, dtype=torch.float64) * 0.5 + 0.5 * u
    tau = float(ctx.uniform(0.1, 0.5, 1))
    orig = ctx.fn
    ctx.fn = lambda a, b: orig(a, b, tau)
    out = ctx.call(u, v, what=f" and temperature={tau:.4f}")
    if out.numel() != 1:
        ctx.fail(f"expected one number (a 0-dim tensor), the loss averaged over the batch, got shape "
                 f"{tuple(out.shape)}")
    out = out.reshape(())
    ref = _clip_reference(u, v, tau)
    tol = {"rtol": 1e-6, "atol": 1e-8}
    if not close(out, ref, **tol):
        labels = torch.arange(n)
        cos = F.normalize(u, dim=1) @ F.normalize(v, dim=1).T
        raw = u @ v.T / tau
        rows, cols = F.cross_entropy(cos / tau, labels), F.cross_entropy(cos.T / tau, labels)
        candidates = {
            "the embeddings are not normalised: CLIP's logits are COSINE similarities, "
            "F.normalize(u, dim=1) @ F.normalize(v, dim=1).T / temperature.":
                0.5 * (F.cross_entropy(raw, labels) + F.cross_entropy(raw.T, labels)),
            "that is the image-to-text half only (rows); average it with the text-to-image half (the columns, "
            "logits.T).": rows,
            "that is the text-to-image half only (columns); average it with the image-to-text half (rows).": cols,
            "the temperature multiplies the similarities; it divides them: logits = cos / temperature.":
                0.5 * (F.cross_entropy(cos * tau, labels) + F.cross_entropy(cos.T * tau, labels)),
            "you summed the two directions; CLIP averages them (divide by 2).": rows + cols,
            "you summed over the batch; average over the N pairs (cross_entropy's default reduction).":
                n * ref,
            "that is the mutual-information bound log N - L; return the loss L itself.": math.log(n) - ref,
        }
        hint = diagnose(out, {k: torch.as_tensor(c, dtype=torch.float64) for k, c in candidates.items()}, **tol)
        ctx.fail(f"wrong value for N = {n} pairs, temperature {tau:.4f}: "
                 f"{hint or 'expected the mean of the row and column cross-entropies of cos(u_i, v_j) / temperature.'}"
                 f"\n  expected {float(ref):.6f}, got {float(out):.6f}")
    scaled = ctx.call(u * 7.0, v * 0.2, what=" (embeddings rescaled)").reshape(())
    if not close(scaled, ref, **tol):
        ctx.fail(f"rescaling the embeddings (u * 7, v * 0.2) changed the loss from {float(ref):.6f} to "
                 f"{float(scaled):.6f}: cosine similarity does not depend on the norms; normalise the rows.")
    aligned = ctx.call(u, u.clone(), what=" (text_emb = image_emb)").reshape(())
    if not float(aligned) < math.log(n):
        ctx.fail(f"with text_emb equal to image_emb every positive has the largest similarity of its row, so the "
                 f"loss must be below log N = {math.log(n):.4f}; got {float(aligned):.4f}.")
    ctx.passed("symmetric InfoNCE of cosine similarities over the temperature")


def _random_maps(gen: torch.Generator, d: int):
    """Two smooth random maps R^d -> R^d (float64) that are not inverses of each other."""
    w1 = torch.randn(d, d, generator=gen, dtype=torch.float64) / math.sqrt(d)
    w2 = torch.randn(d, d, generator=gen, dtype=torch.float64) / math.sqrt(d)
    b1, b2 = (0.3 * torch.randn(d, generator=gen, dtype=torch.float64) for _ in range(2))

    def g_ab(x):
        return torch.tanh(x @ w1.T.to(x.dtype) + b1.to(x.dtype)) + 0.5 * x

    def g_ba(x):
        return x @ w2.T.to(x.dtype) + b2.to(x.dtype)

    return g_ab, g_ba


def cycle_consistency_loss(fn: Callable, *, seed: int | None = None) -> None:
    r"""Check ``fn(g_ab, g_ba, a, b) -> 0-dim loss``, CycleGAN's cycle-consistency loss (Zhu et al. 2017):
    :math:`\mathrm{mean}|g_{BA}(g_{AB}(a)) - a| + \mathrm{mean}|g_{AB}(g_{BA}(b)) - b|`, each mean over every entry.

    Checks the value with two random smooth maps on batches of different sizes (hints for one direction only, the
    maps composed in the wrong order, a squared instead of an absolute error, sums instead of means, comparing the
    round trip with the other domain's batch), that a pair of exact inverse maps gives 0, and that the loss
    propagates gradients to the maps' inputs.

    Raises:
        AssertionError: with an explanation when a check fails or ``fn`` is a stub.
    """
    ctx = Ctx("cycle_consistency_loss", fn, seed)
    d = 4
    g_ab, g_ba = _random_maps(ctx.gen, d)
    a, b = ctx.randn(5, d, dtype=torch.float64), ctx.randn(7, d, dtype=torch.float64)
    orig = ctx.fn
    ctx.fn = lambda a_, b_: orig(g_ab, g_ba, a_, b_)
    out = ctx.call(a, b, what=" (a: 5 images of domain A, b: 7 of domain B)")
    if out.numel() != 1:
        ctx.fail(f"expected one number (a 0-dim tensor), got shape {tuple(out.shape)}")
    out = out.reshape(())
    fwd, bwd = (g_ba(g_ab(a)) - a).abs().mean(), (g_ab(g_ba(b)) - b).abs().mean()
    ref = fwd + bwd
    tol = {"rtol": 1e-6, "atol": 1e-9}
    if not close(out, ref, **tol):
        candidates = {
            "that is the A -> B -> A cycle only; add the B -> A -> B cycle mean|g_ab(g_ba(b)) - b|.": fwd,
            "that is the B -> A -> B cycle only; add the A -> B -> A cycle mean|g_ba(g_ab(a)) - a|.": bwd,
            "the maps are composed in the wrong order: an image a of domain A goes to B with g_ab and comes back "
            "with g_ba, i.e. g_ba(g_ab(a)).": (g_ab(g_ba(a)) - a).abs().mean() + (g_ba(g_ab(b)) - b).abs().mean(),
            "that is a squared error; the cycle loss is an L1 (absolute) error.":
                ((g_ba(g_ab(a)) - a) ** 2).mean() + ((g_ab(g_ba(b)) - b) ** 2).mean(),
            "you summed over the entries; average them (mean absolute error per entry, for each direction).":
                (g_ba(g_ab(a)) - a).abs().sum() + (g_ab(g_ba(b)) - b).abs().sum(),
            "you averaged the two directions; the loss is their SUM.": 0.5 * ref,
            "each round trip must be compared with the image it started from (a with a, b with b).":
                (g_ba(g_ab(a)) - b[:5]).abs().mean() + (g_ab(g_ba(b))[:5] - a).abs().mean(),
        }
        hint = diagnose(out, {k: torch.as_tensor(c, dtype=torch.float64) for k, c in candidates.items()}, **tol)
        ctx.fail(f"wrong value: {hint or 'expected mean|g_ba(g_ab(a)) - a| + mean|g_ab(g_ba(b)) - b|.'}\n"
                 f"  expected {float(ref):.6f}, got {float(out):.6f}")

    def double(x):
        return 2 * x + 1

    def halve(x):
        return (x - 1) / 2

    ctx.fn = lambda a_, b_: orig(double, halve, a_, b_)
    zero = ctx.call(a, b, what=" (g_ab(x) = 2x + 1 and its inverse g_ba)").reshape(())
    if not abs(float(zero)) < 1e-9:
        ctx.fail(f"with g_ba the exact inverse of g_ab (2x + 1 and (x - 1) / 2) every round trip is exact, so the "
                 f"loss must be 0; got {float(zero):.3e}.")
    a_req = a.clone().requires_grad_(True)
    ctx.fn = lambda a_, b_: orig(g_ab, g_ba, a_, b_)
    loss = ctx.call(a_req, b, what=" (a requires grad)").reshape(())
    if not loss.requires_grad:
        ctx.fail("the loss does not depend on the inputs through autograd (was it computed under torch.no_grad(), "
                 "with .item() or numpy?); the translators are trained by backpropagating it.")
    ctx.passed("the L1 cycle loss in both directions; exact inverses give 0")
