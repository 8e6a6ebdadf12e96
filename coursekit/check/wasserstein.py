"""Checkers for chapter 07 (density ratios, IPMs and Wasserstein GANs): the density ratio from a classifier's
logits, the unbiased Gaussian-kernel MMD^2 and the WGAN-GP gradient penalty."""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

from ._harness import Ctx, close, diagnose, fmt

__all__ = ["density_ratio_from_logits", "mmd2_unbiased", "gradient_penalty"]


def density_ratio_from_logits(fn: Callable, *, seed: int | None = None) -> None:
    r"""Check ``fn(logits) -> r`` with :math:`r = D/(1-D) = e^{\ell}` for :math:`D = \sigma(\ell)`, shape (N,).

    The classifier is trained with P (the data) labelled 1 and Q labelled 0 in equal numbers, so
    :math:`r(x) = p(x)/q(x)` (the density-ratio trick). Inputs: float32 logits of shape (N,) including large
    ones (|logit| up to 30) where ``sigmoid(l) / (1 - sigmoid(l))`` computed in float32 divides by a rounded
    zero. Hints for returning D, the log-ratio, the inverse ratio (labels swapped) and the overflow. The course's
    version, for unequal class sizes too, is :func:`coursekit.wasserstein.density_ratio_from_logits`.

    Raises:
        AssertionError: with an explanation when a check fails or ``fn`` is a stub.
    """
    ctx = Ctx("density_ratio_from_logits", fn, seed)
    n = 8
    logits = ctx.uniform(-4.0, 4.0, n)
    out = ctx.call(logits)
    if out.shape != (n,):
        ctx.fail(f"expected one ratio per logit, shape ({n},), got {tuple(out.shape)}")
    l64 = logits.double()
    ref = l64.exp()
    tol = {"rtol": 1e-4, "atol": 1e-6}
    if not close(out, ref, **tol):
        cands = {
            "that is D = sigmoid(logit), the classifier's probability; the ratio is D / (1 - D).": torch.sigmoid(l64),
            "that is the LOG ratio log(p/q) = logit; the ratio itself is exp(logit).": l64,
            "that is q/p = (1 - D) / D: with the data labelled 1 the ratio p/q is D / (1 - D) = exp(logit).":
                (-l64).exp(),
            "that is 1 - D; the ratio is D / (1 - D).": torch.sigmoid(-l64),
        }
        hint = diagnose(out, cands, **tol) or "expected D / (1 - D) with D = sigmoid(logit), i.e. exp(logit)."
        ctx.fail(f"wrong values: {hint}\n  logits = {fmt(logits)}\n  expected {fmt(ref)}\n  got      {fmt(out)}")
    big = torch.tensor([-30.0, -20.0, 0.0, 20.0, 30.0])
    out = ctx.call(big, what=" (large logits)")
    if out.shape != (5,) or not bool(torch.isfinite(out).all()) or not close(out, big.double().exp(), 1e-4, 0.0):
        ctx.fail("correct for moderate logits but not for large ones (|logit| = 20, 30): in float32 "
                 "sigmoid(30) rounds to exactly 1, so D / (1 - D) divides by 0. Use the identity "
                 "D / (1 - D) = exp(logit) instead.\n"
                 f"  logits = {fmt(big)}, got {fmt(out, 2)}")
    ctx.passed("r = D / (1 - D) = exp(logit), finite for large logits")


def _mmd_ref(x, y, h, diagonal: bool, denom_m2: bool = False, two: float = 2.0, squared: bool = True):
    def k(a, b):
        d2 = ((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)
        d = d2 if squared else d2.sqrt()
        return torch.exp(-d / (two * h * h))

    m, n = x.shape[0], y.shape[0]
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    if diagonal:
        return kxx.mean() + kyy.mean() - 2 * kxy.mean()
    sxx = kxx.sum() - kxx.diagonal().sum()
    syy = kyy.sum() - kyy.diagonal().sum()
    if denom_m2:
        return sxx / m**2 + syy / n**2 - 2 * kxy.mean()
    return sxx / (m * (m - 1)) + syy / (n * (n - 1)) - 2 * kxy.mean()


def mmd2_unbiased(fn: Callable, *, seed: int | None = None) -> None:
    r"""Check ``fn(x, y, bandwidth) -> 0-dim tensor``: the unbiased :math:`\widehat{\mathrm{MMD}}^2_u` with the
    Gaussian kernel :math:`k(a, b) = \exp(-\lVert a - b\rVert^2 / 2h^2)` (Gretton et al. 2012, eq. 3).

    Inputs: x (m, d), y (n, d) with m != n, a python float bandwidth. Checks values against the reference
    (hints for keeping the diagonal terms = biased V-statistic, dividing by m^2 after removing the diagonal,
    a kernel without the factor 2 or with unsquared distances, and the sign of the cross term), that it is
    differentiable in x, and that its average over many pairs of samples from one distribution is 0 within
    4 standard errors (unbiasedness). The course's version, :func:`coursekit.wasserstein.mmd2_unbiased`, averages
    the kernel over several bandwidths; ``mmd2_unbiased(x, y, (h,))`` is this estimate.

    Raises:
        AssertionError: with an explanation when a check fails or ``fn`` is a stub.
    """
    ctx = Ctx("mmd2_unbiased", fn, seed)
    m, n, d = 7, 5, 2
    x, y = ctx.randn(m, d), 0.5 + ctx.randn(n, d)
    h = float(ctx.uniform(0.7, 2.0, 1))
    orig = ctx.fn
    ctx.fn = lambda a, b: orig(a, b, h)
    out = ctx.call(x, y, what=f" and bandwidth={h:.3f}")
    if out.numel() != 1:
        ctx.fail(f"expected a single number (0-dim tensor), got shape {tuple(out.shape)}")
    out = out.reshape(())
    x64, y64 = x.double(), y.double()
    ref = _mmd_ref(x64, y64, h, diagonal=False)
    tol = {"rtol": 1e-4, "atol": 1e-6}
    if not close(out, ref, **tol):
        cands = {
            "you kept the diagonal terms k(x_i, x_i) = 1: that is the BIASED estimate (a V-statistic), which is "
            "too large by about (1 - E k(x, x')) (1/m + 1/n). Sum over i != j and divide by m (m - 1).":
                _mmd_ref(x64, y64, h, diagonal=True),
            "after removing the diagonal, divide the within-sample sums by m (m - 1) (the number of pairs i != j), "
            "not by m^2.": _mmd_ref(x64, y64, h, diagonal=False, denom_m2=True),
            "the Gaussian kernel is exp(-||a - b||^2 / (2 h^2)): the factor 2 is missing.":
                _mmd_ref(x64, y64, h, diagonal=False, two=1.0),
            "the Gaussian kernel uses the SQUARED distance ||a - b||^2.":
                _mmd_ref(x64, y64, h, diagonal=False, squared=False),
            "the cross term enters with a minus sign: ... - 2/(mn) sum_ij k(x_i, y_j).":
                ref + 4 * torch.exp(-((x64[:, None] - y64[None]) ** 2).sum(-1) / (2 * h * h)).mean(),
        }
        hint = diagnose(out, cands, **tol) or ("expected sum_{i != j} k(x_i, x_j) / (m (m-1)) + sum_{i != j} "
                                                "k(y_i, y_j) / (n (n-1)) - 2 mean_ij k(x_i, y_j).")
        ctx.fail(f"wrong value for m = {m}, n = {n}, bandwidth = {h:.3f}: {hint}\n"
                 f"  expected {ref.item():.6f}, got {out.item():.6f}")
    xg = x.clone().requires_grad_(True)
    try:
        g_out = orig(xg, y, h)
        (grad,) = torch.autograd.grad(g_out.reshape(()), xg)
    except Exception as err:  # noqa: BLE001
        ctx.fail(f"the result must be differentiable in x (it is a training loss), but autograd failed: {err}. "
                 "Use torch operations only, no .item(), numpy or torch.no_grad().")
    if not bool(torch.isfinite(grad).all()):
        ctx.fail("the gradient in x has NaN/Inf entries. A square root of a squared distance (a norm) has an infinite "
                 "derivative at distance 0, which k(x_i, x_i) always hits: compute squared distances directly, "
                 "((a[:, None] - b[None]) ** 2).sum(-1).")
    vals = []
    for _ in range(200):
        a, b = ctx.randn(6, 1), ctx.randn(6, 1)
        vals.append(float(ctx.call(a, b).reshape(())))
    mean = sum(vals) / len(vals)
    se = (sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) ** 0.5 / len(vals) ** 0.5
    if abs(mean) > 4 * se + 1e-3:
        ctx.fail(f"over 200 pairs of samples from the SAME distribution your estimate averages {mean:.4f} "
                 f"(standard error {se:.4f}); an unbiased estimate averages 0.")
    ctx.passed("unbiased MMD^2 with the Gaussian kernel; differentiable; averages 0 when P = Q")


class _Critic(torch.nn.Module):
    def __init__(self, gen: torch.Generator, d: int, width: int = 16):
        super().__init__()
        self.l1, self.l2 = torch.nn.Linear(d, width), torch.nn.Linear(width, 1)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64).float() * 0.7)

    def forward(self, x):
        return self.l2(torch.tanh(self.l1(x.reshape(x.shape[0], -1))))


def gradient_penalty(fn: Callable, *, seed: int | None = None) -> None:
    r"""Check ``fn(critic, real, fake, eps) -> 0-dim tensor``, the WGAN-GP penalty (Gulrajani et al. 2017, eq. 3)
    for given interpolation weights ``eps`` of shape (N, 1, ...):

    :math:`\hat x_i = \epsilon_i x_i + (1 - \epsilon_i) \tilde x_i`, per-sample gradient
    :math:`\nabla_{\hat x} f(\hat x_i)` over all non-batch dims, mean of :math:`(\lVert\cdot\rVert_2 - 1)^2`.

    Checks vectors (N, d) and images (N, 1, 4, 4); hints for the norm of the whole batch's gradient, a missing
    square, penalising the squared norm, swapping real and fake, the gradient with respect to the parameters,
    and a norm over one axis of an image only. The result must carry a graph into the critic's parameters
    (``create_graph=True``) so that it trains the critic. The course's version,
    :func:`coursekit.wasserstein.gradient_penalty`, draws ``eps`` itself.

    Raises:
        AssertionError: with an explanation when a check fails or ``fn`` is a stub.
    """
    ctx = Ctx("gradient_penalty", fn, seed)

    def reference(critic, real, fake, eps, variant="ok"):
        e = eps
        xh = (e * real + (1 - e) * fake) if variant != "swap" else (e * fake + (1 - e) * real)
        xh = xh.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(critic(xh).sum(), xh)
        n = g.shape[0]
        per = g.reshape(n, -1).norm(dim=1)
        if variant == "batch":
            return (g.norm() - 1) ** 2
        if variant == "nosquare":
            return (per - 1).abs().mean()
        if variant == "sqnorm":
            return ((per**2 - 1) ** 2).mean()
        if variant == "axis" and g.ndim == 4:
            return ((g.norm(dim=-1) - 1) ** 2).mean()
        return ((per - 1) ** 2).mean()

    for shape in ((6, 3), (5, 1, 4, 4)):
        n = shape[0]
        d = int(torch.tensor(shape[1:]).prod())
        critic = _Critic(ctx.gen, d)
        real, fake = ctx.randn(*shape), 1.5 + ctx.randn(*shape)
        eps = ctx.uniform(0.0, 1.0, n).reshape((n,) + (1,) * (len(shape) - 1))
        orig = ctx.fn
        ctx.fn = functools.partial(orig, critic)  # (real, fake, eps) -> orig(critic, real, fake, eps)
        out = ctx.call(real, fake, eps, what=" (real, fake, eps) and a small tanh critic")
        ctx.fn = orig
        if out.numel() != 1:
            ctx.fail(f"expected a single number (the batch mean of the penalty), got shape {tuple(out.shape)}")
        ref = reference(critic, real, fake, eps).double()
        tol = {"rtol": 1e-3, "atol": 1e-5}
        if not close(out.reshape(()), ref, **tol):
            cands = {
                "you took the norm of the gradient of the whole batch (one number for all examples). The penalty "
                "needs one gradient norm PER SAMPLE: reshape the gradient to (N, -1), take the norm over dim 1, "
                "then average (norm - 1)^2 over the batch.": reference(critic, real, fake, eps, "batch"),
                "square the deviation: mean((norm - 1) ** 2).": reference(critic, real, fake, eps, "nosquare"),
                "penalise the norm, not the squared norm: (||grad|| - 1)^2, with ||grad|| = sqrt(sum grad^2).":
                    reference(critic, real, fake, eps, "sqnorm"),
                "the interpolate is eps * real + (1 - eps) * fake (eps weights the REAL example).":
                    reference(critic, real, fake, eps, "swap"),
                "for images the norm runs over ALL non-batch dimensions (channels, height, width): "
                "grad.reshape(N, -1).norm(dim=1), not over the last axis only.":
                    reference(critic, real, fake, eps, "axis"),
            }
            hint = diagnose(out.reshape(()), {k: v.double() for k, v in cands.items()}, **tol) or (
                "expected mean_i (||grad_x f(x_hat_i)||_2 - 1)^2 with x_hat_i = eps_i real_i + (1 - eps_i) fake_i; "
                "differentiate with respect to x_hat (requires_grad_ on x_hat), not the critic's parameters.")
            ctx.fail(f"wrong value for inputs of shape {shape}: {hint}\n"
                     f"  expected {ref.item():.6f}, got {out.reshape(()).item():.6f}")
        if not out.requires_grad:
            ctx.fail("the penalty carries no graph into the critic's parameters, so it would not train the critic: "
                     "call torch.autograd.grad(..., create_graph=True).")
        critic.zero_grad()
        out.reshape(()).backward()
        if critic.l1.weight.grad is None or not bool(critic.l1.weight.grad.abs().sum() > 0):
            ctx.fail("backpropagating the penalty gives no gradient for the critic's weights: use "
                     "torch.autograd.grad(scores.sum(), x_hat, create_graph=True).")
    ctx.passed("per-sample gradient norms at eps real + (1 - eps) fake, for vectors and images; trains the critic")
