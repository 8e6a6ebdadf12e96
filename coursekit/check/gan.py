"""Checkers for chapter 06 (GANs): the optimal discriminator, the non-saturating generator loss, the
Jensen-Shannon divergence of discrete distributions and per-mode sample counts."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch.nn import functional as F

from ..divergences import js_divergence, kl_divergence
from ..gan import mode_coverage
from ._harness import Ctx, close, diagnose, first_bad, fmt, hint_for

__all__ = ["optimal_discriminator", "non_saturating_loss", "jsd_discrete", "mode_counts"]


def optimal_discriminator(fn: Callable, *, seed: int | None = None) -> None:
    r"""Check ``fn(p_data, p_model) -> D*`` elementwise, :math:`D^* = p_\text{data} / (p_\text{data} + p_\text{model})`
    (Goodfellow et al. 2014, Proposition 1).

    Inputs: float32 tensors of the same shape (N, k), probability vectors along the last dim or unnormalised
    density values, strictly positive sums. Checks shape, values (hints: the two arguments swapped, the density
    ratio p/q, a sigmoid of the difference), that the output maximises :math:`a \log y + b \log(1 - y)` on a grid,
    and D* = 1/2 where the two distributions agree.

    Raises:
        AssertionError: with an explanation when a check fails or ``fn`` is a stub.
    """
    ctx = Ctx("optimal_discriminator", fn, seed)
    n, k = 4, 5
    p = ctx.uniform(0.05, 1.0, n, k)
    q = ctx.uniform(0.05, 1.0, n, k)
    p, q = p / p.sum(-1, keepdim=True), q / q.sum(-1, keepdim=True)
    out = ctx.call(p, q)
    if out.shape != (n, k):
        ctx.fail(f"expected one value per point, the inputs' shape ({n}, {k}), got {tuple(out.shape)}: D* is "
                 "computed elementwise, do not sum or average over the points.")
    p64, q64 = p.double(), q.double()
    ref = p64 / (p64 + q64)
    tol = {"rtol": 1e-4, "atol": 1e-6}
    if not close(out, ref, **tol):
        cands = {
            "the arguments are swapped: D is the probability that x is REAL, so the data density goes in the "
            "numerator, D*(x) = p_data(x) / (p_data(x) + p_model(x)).": q64 / (p64 + q64),
            "p_data / p_model is the density ratio r(x), not a probability; D* = r / (1 + r) = "
            "p_data / (p_data + p_model).": p64 / q64,
            "sigmoid(p_data - p_model) is not the maximiser; set the derivative of "
            "p_data log D + p_model log(1 - D) to zero.": torch.sigmoid(p64 - q64),
            "the ratio is taken in log space: D* = p_data / (p_data + p_model) uses the densities themselves.":
                torch.log(p64) / (torch.log(p64) + torch.log(q64)),
        }
        hint = diagnose(out, cands, **tol) or "expected p_data / (p_data + p_model), elementwise."
        i = first_bad(out, ref, **tol)
        ctx.fail(f"wrong values: {hint}\n  e.g. p_data = {fmt(p[i])}, p_model = {fmt(q[i])}:\n  expected "
                 f"{fmt(ref[i])}, got {fmt(out[i])}")
    # the output maximises a log y + b log(1 - y) pointwise (compare with a fine grid), for unnormalised values
    a = ctx.uniform(0.01, 5.0, 32)
    b = ctx.uniform(0.01, 5.0, 32)
    y = ctx.call(a, b).detach().double()
    a64, b64 = a.double(), b.double()
    grid = torch.linspace(1e-4, 1 - 1e-4, 2001, dtype=torch.float64)[:, None]
    best = (a64 * torch.log(grid) + b64 * torch.log1p(-grid)).max(0).values
    y = y.clamp(1e-12, 1 - 1e-12)
    got = a64 * torch.log(y) + b64 * torch.log1p(-y)
    if not bool((got >= best - 1e-5).all()):
        i = int((got < best - 1e-5).nonzero()[0, 0])
        ctx.fail(f"for density values a = {float(a[i]):.4f}, b = {float(b[i]):.4f} (not normalised: D* works for "
                 f"any non-negative densities) your D = {float(y[i]):.6f} gives a log D + b log(1 - D) = "
                 f"{float(got[i]):.6f}, but D = {float(a[i] / (a[i] + b[i])):.6f} gives {float(best[i]):.6f}.")
    half = ctx.call(p, p.clone())
    if not close(half, torch.full((n, k), 0.5, dtype=torch.float64), 0, 1e-6):
        ctx.fail(f"where p_data = p_model the best discriminator cannot tell: D* must be 1/2; got {fmt(half[0])}")
    ctx.passed("D* = p_data / (p_data + p_model) maximises a log D + b log(1 - D); D* = 1/2 when p_data = p_model")


def non_saturating_loss(fn: Callable, *, seed: int | None = None) -> None:
    r"""Check ``fn(fake_logits) -> -mean(log D(G(z)))`` with ``D = sigmoid(logit)``, the non-saturating
    generator loss (Goodfellow et al. 2014, sec. 3), computed stably from logits (``softplus(-l).mean()``).

    Input: float32 logits of shape (N,). Checks: a 0-dim result, the value (hints: the minimax loss
    log(1 - D), the sign, a sum instead of a mean, the discriminator's term -log(1 - D)), a finite value and
    gradient for logits down to -200 (where log(sigmoid(l)) underflows), and the gradient with respect to the
    logits, -(1 - sigmoid(l)) / N, by autograd.

    Raises:
        AssertionError: with an explanation when a check fails or ``fn`` is a stub.
    """
    ctx = Ctx("non_saturating_loss", fn, seed)
    n = int(ctx.uniform(8, 40, 1).round())
    logits = 3 * ctx.randn(n)
    out = ctx.call(logits)
    if out.ndim != 0:
        ctx.fail(f"expected a scalar (0-dim tensor): the MEAN over the {n} generated samples; got shape "
                 f"{tuple(out.shape)}")
    l64 = logits.double()
    ref = F.softplus(-l64).mean()
    tol = {"rtol": 1e-4, "atol": 1e-5}
    if not close(out, ref, **tol):
        cands = {
            "this is the minimax loss E log(1 - D(G(z))) (it saturates when D rejects the samples); the "
            "non-saturating loss is -E log D(G(z)).": -F.softplus(l64).mean(),
            "the sign is flipped: the generator MINIMISES -E log D(G(z)), which is >= 0.": -ref,
            "use the mean over the samples, not the sum.": F.softplus(-l64).sum(),
            "-log(1 - D) is the discriminator's loss on fakes; the generator's non-saturating loss is -log D.":
                F.softplus(l64).mean(),
            "the loss must be a log-probability: -log D(G(z)) = softplus(-logit), not -D itself.":
                -torch.sigmoid(l64).mean(),
            "the logits are raw discriminator outputs: D = sigmoid(logit), so -log D = softplus(-logit) "
            "(you used the logit as if it were log D).": -l64.mean(),
        }
        hint = diagnose(out, cands, **tol) or "expected -mean(log sigmoid(logits)) = softplus(-logits).mean()."
        ctx.fail(f"wrong value: {hint}\n  logits = {fmt(logits[:5])}...: expected {float(ref):.6f}, "
                 f"got {float(out.detach()):.6f}")
    # stability and the gradient wrt the logits, including rejected samples (very negative logits)
    extreme = torch.tensor([-200.0, -50.0, -5.0, 0.0, 5.0, 50.0])
    x = extreme.clone().requires_grad_(True)
    val = ctx.call(x)
    want = F.softplus(-extreme.double()).mean()
    if not bool(torch.isfinite(val.detach())) or not close(val.reshape(()), want, rtol=1e-4, atol=1e-4):
        ctx.fail(f"for logits {extreme.tolist()} the loss should be {float(want):.4f}, got {float(val.detach())}. "
                 "log(sigmoid(l)) underflows to log(0) = -inf for very negative l in float32; compute "
                 "-log D = softplus(-logit) (torch.nn.functional.softplus or logsigmoid).")
    if not val.requires_grad:
        ctx.fail("the result is not differentiable with respect to the logits (no .item(), numpy or detach).")
    (grad,) = torch.autograd.grad(val, x)
    want_g = -(1 - torch.sigmoid(extreme.double())) / len(extreme)
    if not close(grad, want_g, rtol=1e-4, atol=1e-7):
        ctx.fail(f"the gradient with respect to the logits should be -(1 - sigmoid(l)) / N = {fmt(want_g)}, "
                 f"got {fmt(grad)}; it must not vanish for rejected samples (very negative logits).")
    ctx.passed("softplus(-l).mean(): finite for rejected samples, gradient -(1 - D) / N")


def jsd_discrete(fn: Callable, *, seed: int | None = None) -> None:
    r"""Check ``fn(p, q) -> JSD(p, q)`` in nats for probability vectors along the last dim:
    :math:`\tfrac12 \mathrm{KL}(p \,\|\, m) + \tfrac12 \mathrm{KL}(q \,\|\, m)` with :math:`m = (p + q)/2` and
    :math:`0 \log 0 = 0` (Lin 1991; :func:`coursekit.divergences.js_divergence`).

    Inputs: float64 (N, k) with some exact zeros. Checks shape (N,), values (hints: bits instead of nats,
    a missing 1/2, KL(p || q), only one of the two KL terms, NaN from 0 log 0), symmetry, JSD(p, p) = 0 and
    JSD = log 2 for disjoint supports.

    Raises:
        AssertionError: with an explanation when a check fails or ``fn`` is a stub.
    """
    ctx = Ctx("jsd_discrete", fn, seed)
    n, k = 5, 6
    p = ctx.uniform(0.0, 1.0, n, k).double()
    q = ctx.uniform(0.0, 1.0, n, k).double()
    p[ctx.uniform(0, 1, n, k) < 0.25] = 0.0  # some zeros: 0 log 0 = 0
    q[:, 0] = 0.0
    p[:, 0] = p[:, 0] + 0.1
    p, q = p / p.sum(-1, keepdim=True), q / q.sum(-1, keepdim=True)
    out = ctx.call(p, q)
    if out.shape != (n,):
        ctx.fail(f"expected one JSD per pair of distributions, shape ({n},) for inputs ({n}, {k}); got "
                 f"{tuple(out.shape)}: sum over the last dim only.")
    ref = js_divergence(p, q)
    tol = {"rtol": 1e-6, "atol": 1e-8}
    if not close(out, ref, **tol):
        m = 0.5 * (p + q)
        kl_pm, kl_qm = kl_divergence(p, m), kl_divergence(q, m)
        cands = {
            "these are bits: the course works in nats (natural log); divide by ln 2 only to convert.":
                ref / math.log(2),
            "the factor 1/2 is missing: JSD = (KL(p||m) + KL(q||m)) / 2.": 2 * ref,
            "only KL(p || m) is there: add KL(q || m) and halve the sum.": kl_pm,
            "only half of KL(p || m): add the second term 1/2 KL(q || m).": 0.5 * kl_pm,
            "only KL(q || m) is there: add KL(p || m) and halve the sum.": kl_qm,
        }
        hint = hint_for(out, cands, **tol, default="expected 1/2 KL(p || m) + 1/2 KL(q || m) with m = (p + q) / 2, "
                                                   "in nats.",
                        not_finite="your result is not finite. Entries with p_i = 0 contribute 0 (0 log 0 = 0): use "
                                   "torch.xlogy(p, p / m) or torch.where, not p * torch.log(p / m).")
        i = first_bad(out, ref, **tol)
        ctx.fail(f"wrong values: {hint}\n  e.g. p = {fmt(p[i])}, q = {fmt(q[i])}:\n  expected "
                 f"{float(ref[i]):.6f}, got {float(out.detach().reshape(-1)[i]):.6f}")
    swapped = ctx.call(q, p)
    if not close(swapped, ref, **tol):
        ctx.fail("JSD must be symmetric, JSD(p, q) = JSD(q, p); your function gives different values when the "
                 "arguments are swapped.")
    same = ctx.call(p, p.clone())
    if not close(same, torch.zeros(n, dtype=torch.float64), 0, 1e-10):
        extra = (" Where p_i = q_i = 0, also m_i = 0 and p_i / m_i = 0 / 0 = NaN: use "
                 "torch.xlogy(p, p) - torch.xlogy(p, m), which is 0 there.") if not bool(
            torch.isfinite(same.detach()).all()) else ""
        ctx.fail(f"JSD(p, p) must be 0; got {fmt(same)}.{extra}")
    disjoint_p = torch.tensor([[0.5, 0.5, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    disjoint_q = torch.tensor([[0.0, 0.0, 0.3, 0.7], [0.0, 0.0, 0.0, 1.0]], dtype=torch.float64)
    dis = ctx.call(disjoint_p, disjoint_q)
    if not close(dis, torch.full((2,), math.log(2), dtype=torch.float64), 0, 1e-10):
        ctx.fail(f"for distributions with disjoint supports JSD = log 2 = {math.log(2):.6f} nats (its maximum); "
                 f"got {fmt(dis)}. Zero entries must contribute 0 (0 log 0 = 0).")
    ctx.passed("1/2 KL(p||m) + 1/2 KL(q||m) in nats; symmetric, 0 for p = q, log 2 for disjoint supports")


def mode_counts(fn: Callable, *, seed: int | None = None) -> None:
    r"""Check ``fn(samples, modes, std) -> counts`` (k,): for each mode, the number of *high-quality* samples
    assigned to it, a sample being assigned to its nearest mode centre and high quality when its distance to
    that centre is below 3 ``std`` (VEEGAN, Srivastava et al. 2017, sec. 5.1; PacGAN, Lin et al. 2018;
    :func:`coursekit.gan.mode_coverage` ``["counts"]``).

    Inputs: samples (N, 2), modes (k, 2) float32, a python float std. Checks the shape (k,), the counts
    (hints: no quality threshold, radius std or 3 std^2 or squared distances, shares instead of counts),
    and that integer or float counts are accepted.

    Raises:
        AssertionError: with an explanation when a check fails or ``fn`` is a stub.
    """
    ctx = Ctx("mode_counts", fn, seed)
    k = int(ctx.uniform(4, 10, 1).round())
    angle = torch.arange(k, dtype=torch.float64) * 2 * math.pi / k
    radius = float(ctx.uniform(1.5, 3.0, 1))
    modes = (radius * torch.stack([angle.cos(), angle.sin()], 1)).float()
    std = float(ctx.uniform(0.05, 0.25, 1))
    n = 400
    which = torch.randint(0, k, (n,), generator=ctx.gen)
    which[which == 0] = 1  # mode 0 is dropped (collapsed)
    spread = ctx.uniform(0.5, 5.0, n, 1)  # some samples far from every mode
    samples = modes[which] + std * spread * ctx.randn(n, 2)
    orig = ctx.fn
    ctx.fn = lambda s, m: orig(s, m, std)
    out = ctx.call(samples, modes, what=f" and std={std:.4f}")
    if out.shape != (k,):
        ctx.fail(f"expected one count per mode, shape ({k},) for {k} modes; got {tuple(out.shape)}")
    ref = mode_coverage(samples, modes, std)["counts"].double()
    got = out.detach().double()
    if not torch.equal(got, ref):
        d = torch.cdist(samples.double(), modes.double())
        dmin, nearest = d.min(1)

        def counts(mask):
            return torch.bincount(nearest[mask], minlength=k).double()

        cands = {
            "every sample is counted: only HIGH-QUALITY samples (within 3 std of their nearest mode) count.":
                counts(torch.ones(n, dtype=torch.bool)),
            "the radius is 3 standard deviations, 3 * std (you used std).": counts(dmin < std),
            "the radius is 3 * std, not 3 * std**2 (std is a standard deviation, not a variance).":
                counts(dmin < 3 * std**2),
            "you compared the SQUARED distance with 3 * std; compare the distance (or the squared distance "
            "with (3 * std)**2).": counts(dmin**2 < 3 * std),
            "return counts, not shares of the samples.": counts(dmin < 3 * std) / n,
        }
        hint = next((h for h, c in cands.items() if torch.allclose(got, c, rtol=1e-5, atol=1e-6)), None)
        hint = hint or ("expected, per mode, the number of samples whose nearest mode it is and whose distance "
                        "to it is below 3 * std.")
        ctx.fail(f"wrong counts: {hint}\n  {k} modes on a circle of radius {radius:.3f}, std = {std:.4f}: "
                 f"expected {ref.long().tolist()}, got {got.tolist()}")
    ctx.passed("high-quality samples per nearest mode (distance < 3 std)")
