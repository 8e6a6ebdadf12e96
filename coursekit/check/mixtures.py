"""Checkers for chapter 02 (latent variables, clustering and mixtures): the k-means assignment step, the E-step
of a Gaussian mixture (responsibilities by log-sum-exp) and the M-step for the covariances."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..mixtures import gmm_log_prob, gmm_responsibilities, squared_distances
from ._harness import Ctx, close, fmt, hint_for

__all__ = ["kmeans_assign", "e_step", "m_step_covariances"]


# --------------------------------------------------------------------------- exercise 1: k-means assignment
def kmeans_assign(fn: Callable, *, seed: int | None = None) -> None:
    r"""Check ``fn(x, centres) -> labels``: the index of the nearest centre of each point (Lloyd 1982).

    Inputs: float32 ``x`` (N, D) and ``centres`` (K, D). Expected: an integer tensor (N,) with
    ``labels[n] = argmin_k ||x_n - centres_k||^2``, compared with :func:`coursekit.mixtures.squared_distances`
    (points are drawn so that no two centres are nearly tied). Hints for argmax instead of argmin, the wrong
    dimension, returning distances or one-hot rows.

    Raises:
        AssertionError: with an explanation when a check fails or ``fn`` is a stub.
    """
    ctx = Ctx("kmeans_assign", fn, seed)
    for n, d, k in ((40, 2, 3), (200, 5, 7)):
        centres = 3 * ctx.randn(k, d)
        x = centres[torch.randint(k, (n,), generator=ctx.gen)] + ctx.randn(n, d)
        d2 = squared_distances(x, centres)
        top2 = d2.topk(2, dim=1, largest=False).values
        keep = (top2[:, 1] - top2[:, 0]) > 1e-3  # drop near-ties, where either answer is right
        x = x[keep]
        want = d2[keep].argmin(1)
        out = ctx.call(x, centres)
        m = x.shape[0]
        if out.shape != (m,):
            if tuple(out.shape) == (m, k):
                hint = ("you returned one row per point with K entries (distances or one-hot): take the argmin over "
                        "the centres, dim=1.")
            elif tuple(out.shape) == (k,):
                hint = "you reduced over the points (dim=0): take the argmin over the centres for each point (dim=1)."
            else:
                hint = "return one label per point."
            ctx.fail(f"expected labels of shape ({m},) for x of shape ({m}, {d}) and {k} centres, got "
                     f"{tuple(out.shape)}: {hint}")
        if out.is_floating_point() or out.dtype == torch.bool:
            ctx.fail(f"labels must be an integer tensor (e.g. from argmin, int64), got dtype {out.dtype}")
        if not torch.equal(out.to(torch.int64), want):
            if torch.equal(out.to(torch.int64), d2[keep].argmax(1)):
                ctx.fail("you assigned each point to its FARTHEST centre: use argmin of the distances, not argmax.")
            i = int((out.to(torch.int64) != want).nonzero()[0, 0])
            ctx.fail(f"wrong label for point {i}: x = {fmt(x[i])}, squared distances to the centres "
                     f"{fmt(d2[keep][i])}, expected label {int(want[i])}, got {int(out[i])}.")
    ctx.passed("every point goes to its nearest centre")


# --------------------------------------------------------------------------- exercise 2: the E-step
def _random_mixture(ctx: Ctx, k: int, d: int):
    a = ctx.randn(k, d, d, dtype=torch.float64)
    cov = a @ a.transpose(1, 2) / d + 0.2 * torch.eye(d, dtype=torch.float64)
    w = torch.rand(k, generator=ctx.gen, dtype=torch.float64) + 0.3
    return w / w.sum(), 3 * ctx.randn(k, d, dtype=torch.float64), cov


def _e_step_candidates(x, w, mu, cov, ref):
    log_joint = torch.log(ref) + gmm_log_prob(x, w, mu, cov)[:, None]  # log w_k N(x_n; mu_k, Sigma_k)
    flat = torch.full_like(w, 1.0 / len(w))
    return {
        "your columns sum to 1 instead of your rows: normalise over the components (dim=1), not over the points.":
            torch.softmax(log_joint, dim=0),
        "you returned log-responsibilities: exponentiate them (torch.softmax over dim=1 does it stably).":
            torch.log(ref),
        "the mixture weights are missing: r_nk is proportional to w_k N(x_n; mu_k, Sigma_k).":
            gmm_responsibilities(x, flat, mu, cov),
        "you returned the unnormalised joint w_k N(x_n; mu_k, Sigma_k): divide by its sum over the components.":
            torch.exp(log_joint),
    }


def e_step(fn: Callable, *, seed: int | None = None) -> None:
    r"""Check ``fn(x, weights, means, covariances) -> resp``, the E-step of a Gaussian mixture:
    :math:`r_{nk} = w_k \mathcal{N}(x_n; \mu_k, \Sigma_k) / \sum_j w_j \mathcal{N}(x_n; \mu_j, \Sigma_j)`
    (Bishop 2006, sec. 9.2).

    Inputs: float64 ``x`` (N, D), ``weights`` (K,), ``means`` (K, D), ``covariances`` (K, D, D). Expected (N, K)
    rows summing to 1, compared with :func:`coursekit.mixtures.gmm_responsibilities` (tolerance 1e-6), first on
    points near the components, then on points far from all of them, where computing the densities with ``exp``
    underflows to 0/0 and only log-sum-exp stays finite. Hints for a wrong normalisation axis, log values,
    missing weights and NaN.

    Raises:
        AssertionError: with an explanation when a check fails or ``fn`` is a stub.
    """
    ctx = Ctx("e_step", fn, seed)
    tol = {"rtol": 1e-6, "atol": 1e-6}
    k, d = 3, 2
    w, mu, cov = _random_mixture(ctx, k, d)
    for far, what in ((False, "points near the components"), (True, "points far from every component")):
        n = 30
        x = mu[torch.randint(k, (n,), generator=ctx.gen)] + 1.5 * ctx.randn(n, d, dtype=torch.float64)
        if far:
            x = x * 40.0  # log densities of order -1e4: exp underflows to 0 for every component
        ref = gmm_responsibilities(x, w, mu, cov)
        out = ctx.call(x, w, mu, cov)
        if out.shape != (n, k):
            hint = "did you transpose it? rows = points, columns = components." if tuple(out.shape) == (k, n) else \
                "one row per point, one column per component."
            ctx.fail(f"expected responsibilities of shape ({n}, {k}) for {n} points and {k} components, got "
                     f"{tuple(out.shape)}: {hint}")
        if not close(out, ref, **tol):
            hint = hint_for(out, _e_step_candidates(x, w, mu, cov, ref), **tol,
                            not_finite="your result has NaN or inf: exp of very negative log-densities underflows to "
                            "0 and 0/0 = NaN. Work with log w_k + log N(x_n; ...) and normalise with torch.logsumexp "
                            "(or torch.softmax) over the components.",
                            default="expected r_nk = w_k N(x_n; mu_k, Sigma_k) / sum_j w_j N(x_n; mu_j, Sigma_j).")
            i = 0 if out.shape != ref.shape else int((~torch.isclose(out.detach().double(), ref, **tol)).any(1)
                                                      .nonzero()[0, 0])
            ctx.fail(f"wrong values on {what}: {hint}\n  point {i}: x = {fmt(x[i])}\n"
                     f"  expected {fmt(ref[i])}, got {fmt(out[i])}")
    ctx.passed("matches Bayes' rule for the component, also far from every component")


# --------------------------------------------------------------------------- exercise 3: M-step covariances
def m_step_covariances(fn: Callable, *, seed: int | None = None) -> None:
    r"""Check ``fn(x, resp, means) -> covariances``: the M-step
    :math:`\Sigma_k = \frac{1}{N_k} \sum_n r_{nk} (x_n - \mu_k)(x_n - \mu_k)^\top` with :math:`N_k = \sum_n r_{nk}`
    (Bishop 2006, sec. 9.2; no floor).

    Inputs: float64 ``x`` (N, D), ``resp`` (N, K) rows summing to 1, ``means`` (K, D) (the new means
    :math:`\sum_n r_{nk} x_n / N_k`). Expected (K, D, D), tolerance 1e-8. Hints for dividing by N, forgetting the
    weights, forgetting to centre, and (D, D, K) layouts.

    Raises:
        AssertionError: with an explanation when a check fails or ``fn`` is a stub.
    """
    ctx = Ctx("m_step_covariances", fn, seed)
    tol = {"rtol": 1e-8, "atol": 1e-8}
    n, d, k = 50, 3, 4
    x = 2 * ctx.randn(n, d, dtype=torch.float64)
    resp = torch.softmax(2 * ctx.randn(n, k, dtype=torch.float64), dim=1)
    nk = resp.sum(0)
    means = resp.T @ x / nk[:, None]
    diff = x[None] - means[:, None]  # (K, N, D)
    ref = torch.einsum("nk,knd,kne->kde", resp, diff, diff) / nk[:, None, None]
    out = ctx.call(x, resp, means)
    if out.shape != (k, d, d):
        hint = "put the component first: (K, D, D)." if tuple(out.shape) == (d, d, k) else \
            "one D x D matrix per component."
        ctx.fail(f"expected covariances of shape ({k}, {d}, {d}), got {tuple(out.shape)}: {hint}")
    if not close(out, ref, **tol):
        raw = x[None] - 0 * means[:, None]
        candidates = {
            "you divided by N, the number of points; divide by N_k = sum_n r_nk, the effective number of points of "
            "component k.": ref * nk[:, None, None] / n,
            "you forgot to divide by N_k = sum_n r_nk.": ref * nk[:, None, None],
            "the responsibilities are missing: weight each outer product by r_nk.":
                torch.einsum("knd,kne->kde", diff, diff) / nk[:, None, None],
            "you forgot to centre: use (x_n - mu_k)(x_n - mu_k)^T, not x_n x_n^T.":
                torch.einsum("nk,knd,kne->kde", resp, raw, raw) / nk[:, None, None],
        }
        hint = hint_for(out, candidates, **tol, not_finite="your result has NaN or inf.",
                        default="expected Sigma_k = sum_n r_nk (x_n - mu_k)(x_n - mu_k)^T / N_k.")
        ctx.fail(f"wrong values: {hint}\n  component 0: expected {fmt(ref[0])},\n  got {fmt(out[0])}")
    ctx.passed("matches sum_n r_nk (x_n - mu_k)(x_n - mu_k)^T / N_k")
