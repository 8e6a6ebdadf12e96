"""Checkers for chapter 13 (evaluating generative models): the Frechet distance between two Gaussians, the Inception
Score from class probabilities and the coverage of a set of real samples by a set of fake ones."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..metrics import density_coverage
from ..metrics import frechet_distance as reference_frechet_distance
from ._harness import Ctx, close, diagnose, fmt

__all__ = ["frechet_distance", "inception_score", "coverage"]


def _scalar(ctx: Ctx, out: torch.Tensor, what: str) -> torch.Tensor:
    if out.numel() != 1:
        ctx.fail(f"expected one number ({what}) as a 0-dim tensor, got a tensor of shape {tuple(out.shape)}; "
                 "reduce over the samples (and classes / dimensions) completely.")
    return out.reshape(())


# --------------------------------------------------------------------------- exercise 1: the Frechet distance
def _spd(ctx: Ctx, d: int) -> torch.Tensor:
    a = ctx.randn(d, d, dtype=torch.float64)
    return a @ a.T / d + 0.2 * torch.eye(d, dtype=torch.float64)


def _sqrtm(s: torch.Tensor) -> torch.Tensor:
    w, v = torch.linalg.eigh(s)
    return (v * w.clamp_min(0).sqrt()) @ v.T


def _frechet_candidates(mu1, s1, mu2, s2) -> dict[str, torch.Tensor]:
    diff2 = ((mu1 - mu2) ** 2).sum()
    tr = torch.trace(s1) + torch.trace(s2)
    r1 = _sqrtm(s1)
    cross = torch.linalg.eigvalsh(r1 @ s2 @ r1).clamp_min(0).sqrt().sum()
    return {
        "the factor 2 in front of Tr((Sigma1 Sigma2)^(1/2)) is missing.": diff2 + tr - cross,
        "the mean term ||mu1 - mu2||^2 is missing.": tr - 2 * cross,
        "the mean term must be the SQUARED distance ||mu1 - mu2||^2, not the distance.":
            (mu1 - mu2).norm() + tr - 2 * cross,
        "Tr(Sigma1^(1/2) Sigma2^(1/2)) equals Tr((Sigma1 Sigma2)^(1/2)) only when the covariances commute; use the "
        "square root of the matrix Sigma1^(1/2) Sigma2 Sigma1^(1/2) (its eigenvalues are those of Sigma1 Sigma2).":
            diff2 + tr - 2 * torch.trace(r1 @ _sqrtm(s2)),
        "the square root must be taken of the MATRIX Sigma1 Sigma2 (then the trace), not of its diagonal entries.":
            diff2 + tr - 2 * torch.diagonal(s1 @ s2).clamp_min(0).sqrt().sum(),
        "Tr((Sigma1 Sigma2)^(1/2)) is not sqrt(Tr(Sigma1 Sigma2)): the square root is a matrix function.":
            diff2 + tr - 2 * torch.trace(s1 @ s2).sqrt(),
    }


def frechet_distance(fn: Callable, *, seed: int | None = None) -> None:
    r"""Check ``fn(mu1, sigma1, mu2, sigma2) -> d^2``, the squared Frechet (2-Wasserstein) distance between
    :math:`\mathcal{N}(\mu_1, \Sigma_1)` and :math:`\mathcal{N}(\mu_2, \Sigma_2)`,
    :math:`\lVert\mu_1 - \mu_2\rVert^2 + \operatorname{Tr}(\Sigma_1 + \Sigma_2 - 2(\Sigma_1 \Sigma_2)^{1/2})`
    (Dowson & Landau 1982; FID, Heusel et al. 2017), as a 0-dim tensor.

    Checks equal Gaussians (0), diagonal covariances (where the square roots commute) and general non-commuting
    covariances in 1 to 5 dimensions against :func:`coursekit.metrics.frechet_distance`, with hints for a missing
    factor 2 or mean term, an unsquared mean distance, the product of separate square roots, a square root of the
    diagonal and the square root of the trace.

    Raises:
        AssertionError: with an explanation when a check fails or ``fn`` is a stub.
    """
    ctx = Ctx("frechet_distance", fn, seed)
    cases = []
    mu, s = ctx.randn(3, dtype=torch.float64), _spd(ctx, 3)
    cases.append(("equal Gaussians", mu, s, mu.clone(), s.clone()))
    diag = [torch.diag(ctx.uniform(0.2, 2.0, 4).double()) for _ in range(2)]
    cases.append(("diagonal covariances", ctx.randn(4, dtype=torch.float64), diag[0], ctx.randn(4, dtype=torch.float64),
                  diag[1]))
    for d in (1, 5, 3):
        cases.append((f"general covariances in {d}-D", ctx.randn(d, dtype=torch.float64), _spd(ctx, d),
                      ctx.randn(d, dtype=torch.float64), _spd(ctx, d)))
    tol = {"rtol": 1e-5, "atol": 1e-7}
    for what, mu1, s1, mu2, s2 in cases:
        out = _scalar(ctx, ctx.call(mu1, s1, mu2, s2), "d^2")
        want = torch.tensor(reference_frechet_distance(mu1, s1, mu2, s2), dtype=torch.float64)
        if close(out, want, **tol):
            continue
        hint = diagnose(out, _frechet_candidates(mu1, s1, mu2, s2), **tol) or (
            "expected ||mu1 - mu2||^2 + Tr(Sigma1) + Tr(Sigma2) - 2 Tr((Sigma1^(1/2) Sigma2 Sigma1^(1/2))^(1/2)).")
        ctx.fail(f"wrong value for {what}: {hint}\n  mu1 = {fmt(mu1)}, mu2 = {fmt(mu2)}\n  Sigma1 = {fmt(s1)}\n"
                 f"  Sigma2 = {fmt(s2)}\n  expected {float(want):.6f}, got {float(out):.6f}")
    ctx.passed("equal, diagonal and non-commuting covariances in 1 to 5 dimensions")


# --------------------------------------------------------------------------- exercise 2: the Inception Score
def _is_reference(p: torch.Tensor) -> torch.Tensor:
    py = p.mean(0, keepdim=True)
    return torch.exp((torch.xlogy(p, p) - torch.xlogy(p, py.expand_as(p))).sum(1).mean())


def _is_candidates(p: torch.Tensor) -> dict[str, torch.Tensor]:
    py = p.mean(0, keepdim=True).expand_as(p)
    c = p.shape[1]
    kl = (torch.xlogy(p, p) - torch.xlogy(p, py)).sum(1)
    h_marginal = -torch.xlogy(py[0], py[0]).sum()
    return {
        "you returned the mean KL itself: the Inception Score is exp of it.": kl.mean(),
        "the KL is reversed: use KL(p(y|x) || p(y)), the conditional first (the score is exp of the mutual "
        "information I(y; x)).": torch.exp((torch.xlogy(py, py) - torch.xlogy(py, p)).sum(1).mean()),
        "sum the KL over the classes (it is a sum over y), then average over the samples x.": torch.exp(kl.mean() / c),
        "p(y) is the MARGINAL of the classifier's outputs, the mean of p(y|x) over the samples, not uniform.":
            torch.exp((torch.xlogy(p, p) - p * torch.log(torch.tensor(1.0 / c, dtype=p.dtype))).sum(1).mean()),
        "the conditional entropy term is missing: exp(H(y)) counts the classes used but not how confidently each "
        "sample is classified; IS = exp(H(y) - H(y|x)).": torch.exp(h_marginal),
        "use the natural logarithm (nats) inside the exponential: with log2, exp() no longer inverts it.":
            torch.exp(kl.mean() / torch.log(torch.tensor(2.0, dtype=p.dtype))),
    }


def inception_score(fn: Callable, *, seed: int | None = None) -> None:
    r"""Check ``fn(probs) -> IS``: the Inception Score of one set of samples from their class probabilities
    ``probs`` (N, C), :math:`\exp\big(\frac1N \sum_n \mathrm{KL}(p(y \mid x_n) \,\|\, p(y))\big)` with
    :math:`p(y) = \frac1N \sum_n p(y \mid x_n)` (Salimans et al. 2016; no splits), a 0-dim tensor.

    Checks confident balanced predictions (IS = C), identical rows (IS = 1) and random probabilities of several
    sizes, some with exact zeros; hints for a missing exp, a reversed KL, a mean over classes, a uniform p(y), the
    marginal entropy alone and base-2 logarithms.

    Raises:
        AssertionError: with an explanation when a check fails or ``fn`` is a stub.
    """
    ctx = Ctx("inception_score", fn, seed)
    c = 6
    one_hot = torch.eye(c, dtype=torch.float64)[torch.randperm(4 * c, generator=ctx.gen) % c]
    same = torch.softmax(ctx.randn(1, c, dtype=torch.float64), 1).expand(12, c).clone()
    peaked = torch.softmax(3 * ctx.randn(40, c, dtype=torch.float64), 1)
    sparse = torch.softmax(2 * ctx.randn(25, 4, dtype=torch.float64), 1)
    sparse[sparse < 0.1] = 0.0
    sparse = sparse / sparse.sum(1, keepdim=True)
    cases = [("random probabilities", peaked), ("identical rows (IS = 1)", same),
             ("one confident prediction per class, balanced (IS = C)", one_hot),
             ("probabilities with exact zeros (0 log 0 = 0)", sparse)]
    tol = {"rtol": 1e-5, "atol": 1e-8}
    for what, p in cases:
        out = _scalar(ctx, ctx.call(p), "the score")
        want = _is_reference(p)
        if close(out, want, **tol):
            continue
        hint = ("the result is not finite: 0 log 0 must count as 0 (torch.xlogy does that)."
                if not bool(torch.isfinite(out)) else diagnose(out, _is_candidates(p), **tol)
                or "expected exp(mean over samples of sum over classes p(y|x) log(p(y|x) / p(y))).")
        ctx.fail(f"wrong value for {what}: {hint}\n  probs[0] = {fmt(p[0])}\n  expected {float(want):.6f}, got "
                 f"{float(out):.6f}")
    ctx.passed("IS = C and IS = 1 at the extremes, random and sparse probabilities")


# --------------------------------------------------------------------------- exercise 3: coverage
def _kth_radius(a: torch.Tensor, k: int) -> torch.Tensor:
    """Distance of each row of ``a`` to its k-th nearest other row (k >= 0; k = 0 gives 0)."""
    return torch.cdist(a, a).sort(dim=1).values[:, k]


def _coverage_candidates(real, fake, k) -> dict[str, torch.Tensor]:
    d = torch.cdist(real, fake)
    out = {}
    if k > 1:
        out["the radius is the distance to the (k-1)-th other real sample: the smallest distance of a point to "
            "the set is 0, to itself, so take the (k+1)-th smallest value in its row (index k)."] = \
            (d.min(1).values <= _kth_radius(real, k - 1)).double().mean()
    out["the radius is one neighbour too far: the k-th nearest OTHER real sample is at index k of the sorted "
        "distances (index 0 is the point itself)."] = (d.min(1).values <= _kth_radius(real, k + 1)).double().mean()
    out["the balls must be centred on the REAL samples with real-to-real radii; balls around the fake samples "
        "give recall."] = (d <= _kth_radius(fake, k)[None, :]).any(1).double().mean()
    out["this is precision (the fraction of FAKE samples inside some real ball); coverage is the fraction of REAL "
        "balls that contain at least one fake sample."] = (d <= _kth_radius(real, k)[:, None]).any(0).double().mean()
    out["this is density (how many real balls contain each fake sample, / k); coverage asks, for each real ball, "
        "whether it contains any fake sample."] = (d <= _kth_radius(real, k)[:, None]).sum(0).double().mean() / k
    return out


def coverage(fn: Callable, *, seed: int | None = None) -> None:
    r"""Check ``fn(real, fake, k) -> coverage``: the fraction of real samples whose ball, of radius the distance to
    the k-th nearest *other* real sample, contains at least one fake sample (Naeem et al. 2020), a 0-dim tensor.

    Checks k = 2, 3, 5 on random real and fake point sets of different sizes (fake shifted so that coverage is
    neither 0 nor 1) against :func:`coursekit.metrics.density_coverage`, and k = 1 with a fake set identical to
    the real one (coverage 1). A hint is given when one mistake explains every case: the radius off by one in
    either direction, balls around the fake samples (recall), precision and density.

    Raises:
        AssertionError: with an explanation when a check fails or ``fn`` is a stub.
    """
    ctx = Ctx("coverage", fn, seed)
    orig = ctx.fn
    n, m, d = 60, 45, 3
    tol = {"rtol": 1e-9, "atol": 1e-9}
    cases = []
    for k in (3, 2, 5):
        real = ctx.randn(n, d, dtype=torch.float64)
        fake = 0.8 * ctx.randn(m, d, dtype=torch.float64) + 0.7
        cases.append((k, real, fake))
    cases.append((1, cases[0][1], cases[0][1].clone()))
    results = []
    for k, real, fake in cases:
        ctx.fn = lambda r, f, k_=k: orig(r, f, k_)
        out = _scalar(ctx, ctx.call(real, fake, what=f" and k={k}"), "the coverage")
        want = torch.tensor(density_coverage(real, fake, k=k)[1], dtype=torch.float64)
        results.append((k, real, fake, out, want))
    wrong = [r for r in results if not close(r[3], r[4], **tol)]
    if wrong:
        # a hint must explain every case in which it is defined (single fractions can coincide by chance)
        hints = {}
        for k, real, fake, out, _ in results:
            for hint, value in _coverage_candidates(real, fake, k).items():
                hints[hint] = hints.get(hint, True) and close(out, value, **tol)
        hint = next((h for h, ok in hints.items() if ok), None) or (
            "expected the fraction of real samples x_i with min_j ||x_i - y_j|| <= r_i, r_i the distance from x_i "
            "to its k-th nearest other real sample.")
        k, real, fake, out, want = wrong[0]
        ctx.fail(f"wrong coverage for k={k}, {real.shape[0]} real and {fake.shape[0]} fake samples in {d}-D: {hint}\n"
                 f"  expected {float(want):.4f}, got {float(out):.4f}")
    ctx.passed("k = 2, 3, 5 on random point sets, and a fake set equal to the real one")
