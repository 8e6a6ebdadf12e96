"""Checkers for chapter 04 (variational autoencoders): the Gaussian KL term, the reparameterisation trick,
the importance-weighted bound from log weights and the free-bits KL term."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ..divergences import gaussian_kl
from ._harness import Ctx, close, diagnose, first_bad, fmt, hint_for

__all__ = ["kl_std_normal", "reparameterise", "iwae_from_log_weights", "free_bits_kl"]


# --------------------------------------------------------------------------- exercise 1: KL to N(0, I)
_KL_RTOL, _KL_ATOL = 1e-4, 1e-5


def _kl_candidates(mu: torch.Tensor, lv: torch.Tensor) -> dict[str, torch.Tensor]:
    ref = gaussian_kl(mu, lv)
    d = mu.shape[-1]

    def s(t):
        return t.sum(-1)

    return {
        "the sign is flipped. A KL divergence is >= 0; Kingma & Welling's "
        "0.5 * sum(1 + logvar - mu^2 - exp(logvar)) is MINUS the KL.": -ref,
        "it looks like you used `logvar` as log(sigma). `logvar` is the log-VARIANCE log(sigma^2): "
        "sigma^2 = exp(logvar) and the log term is logvar itself (not 2*logvar).":
            0.5 * s(torch.exp(2 * lv) + mu**2 - 1 - 2 * lv),
        "the log term should be log(sigma^2) = logvar, not log(sigma) = 0.5*logvar.":
            0.5 * s(torch.exp(lv) + mu**2 - 1 - 0.5 * lv),
        "you used sigma = exp(0.5*logvar) where the formula needs the variance sigma^2 = exp(logvar).":
            0.5 * s(torch.exp(0.5 * lv) + mu**2 - 1 - lv),
        "your values are twice the expected ones: the factor 1/2 is missing.": 2 * ref,
        "your values are 1/d of the expected ones: SUM over the latent dimension, don't average.": ref / d,
        "the constant -1 (one per latent dimension) is missing.": ref + 0.5 * d,
        "the mu^2 term is missing (or has the wrong sign).": ref - 0.5 * s(mu**2),
        "the mu^2 term has the wrong sign.": ref - s(mu**2),
    }


def kl_std_normal(fn: Callable, *, seed: int | None = None) -> None:
    r"""Check ``fn(mu, logvar) -> KL(N(mu, diag exp(logvar)) || N(0, I))`` per example.

    Expected: ``0.5 * sum(exp(logvar) + mu**2 - 1 - logvar, dim=-1)``, shape ``(N,)``, nats
    (Kingma & Welling 2014, appendix B). Inputs: float32 ``mu, logvar`` of shape ``(N, d)``.
    Checks the shape, the value against :func:`coursekit.divergences.gaussian_kl` on random
    inputs (with hints for common mistakes), KL = 0 at q = N(0, I), and non-negativity.

    Args:
        fn: the student's function. seed: optional seed for reproducible inputs.

    Raises:
        AssertionError: with an explanation when a check fails or ``fn`` is a stub.
    """
    ctx = Ctx("kl_std_normal", fn, seed)
    n, d = 6, 3
    mu = ctx.randn(n, d)
    lv = ctx.uniform(-2.5, 1.5, n, d)
    out = ctx.call(mu, lv)
    if out.shape != (n,):
        if tuple(out.shape) == (n, d):
            hint = "you returned one term per latent dimension: sum over the last dimension (dim=-1)."
        elif out.ndim == 0:
            hint = "you reduced over the batch as well: return one KL per example (sum over dim=-1 only)."
        elif tuple(out.shape) == (n, 1):
            hint = "drop keepdim=True: return a 1-D tensor with one KL per example."
        elif tuple(out.shape) == (d,):
            hint = "you summed over the batch (dim=0): sum over the latent dimension (dim=-1) instead."
        else:
            hint = "return one KL per example, i.e. sum over the last dimension."
        ctx.fail(f"expected output shape ({n},) for mu and logvar of shape ({n}, {d}), got {tuple(out.shape)}: {hint}")

    mu64, lv64 = mu.double(), lv.double()
    ref = gaussian_kl(mu64, lv64)
    if not close(out, ref, _KL_RTOL, _KL_ATOL):
        hint = diagnose(out, _kl_candidates(mu64, lv64), _KL_RTOL, _KL_ATOL)
        if hint is None:
            i = first_bad(out, ref, _KL_RTOL, _KL_ATOL)
            ctx.fail(
                "wrong values. Expected KL = 0.5 * sum(exp(logvar) + mu^2 - 1 - logvar) over the last dim.\n"
                f"  failing input (row {i}): mu = {fmt(mu[i])}, logvar = {fmt(lv[i])}\n"
                f"  expected {float(ref[i]):.6f}, got {float(out[i].detach()):.6f}"
            )
        ctx.fail(
            f"wrong values: {hint}\n  e.g. mu = {fmt(mu[0])}, logvar = {fmt(lv[0])}: "
            f"expected {float(ref[0]):.6f}, got {float(out[0].detach()):.6f}"
        )

    zero = ctx.call(torch.zeros(2, d), torch.zeros(2, d))
    if not close(zero, torch.zeros(2, dtype=torch.float64), 0, 1e-6):
        ctx.fail(f"KL(N(0, I) || N(0, I)) must be 0 for mu = 0, logvar = 0; got {fmt(zero)}")

    # a wider range of inputs: large |mu| and very small / large variances
    mu2 = 3 * ctx.randn(200, 5)
    lv2 = ctx.uniform(-8.0, 4.0, 200, 5)
    out2 = ctx.call(mu2, lv2)
    ref2 = gaussian_kl(mu2.double(), lv2.double())
    if not close(out2, ref2, _KL_RTOL, 1e-4):
        i = first_bad(out2, ref2, _KL_RTOL, 1e-4)
        ctx.fail(
            "correct on small inputs but wrong on a wider range (|mu| up to ~10, logvar in [-8, 4]).\n"
            f"  failing input: mu = {fmt(mu2[i])}, logvar = {fmt(lv2[i])}\n"
            f"  expected {float(ref2[i]):.6f}, got {fmt(out2.reshape(-1)[i:i + 1])}"
        )
    ctx.passed("matches 0.5*sum(exp(logvar) + mu^2 - 1 - logvar), KL(N(0,I)||N(0,I)) = 0")


# --------------------------------------------------------------------------- exercise 2: reparameterisation
def reparameterise(fn: Callable, *, seed: int | None = None) -> None:
    r"""Check ``fn(mu, logvar, eps) -> z = mu + exp(0.5 * logvar) * eps``.

    Checks (Kingma & Welling 2014, sec. 2.4): the shape and value for the given
    ``eps`` (hints for variance-vs-standard-deviation and sign mistakes); that
    gradients reach ``mu`` and ``logvar`` with the right values
    (:math:`\partial z/\partial\mu = 1`, :math:`\partial z/\partial\log\sigma^2 = \tfrac12\sigma\epsilon`);
    and that 20 000 samples have mean ``mu`` and variance ``exp(logvar)`` within 5 standard errors.

    Args:
        fn: the student's function. seed: optional seed for reproducible inputs.

    Raises:
        AssertionError: with an explanation when a check fails or ``fn`` is a stub.
    """
    ctx = Ctx("reparameterise", fn, seed)
    n, d = 5, 3
    mu = ctx.randn(n, d).requires_grad_(True)
    lv = ctx.uniform(-2.0, 1.5, n, d).requires_grad_(True)
    eps = ctx.randn(n, d)
    z = ctx.call(mu, lv, eps)
    if z.shape != (n, d):
        ctx.fail(f"expected z with the shape of mu, ({n}, {d}), got {tuple(z.shape)}: "
                 "z = mu + exp(0.5*logvar) * eps is elementwise.")

    m, lvar, e = mu.detach().double(), lv.detach().double(), eps.double()
    sd = torch.exp(0.5 * lvar)
    ref = m + sd * e
    tol = {"rtol": 1e-4, "atol": 1e-5}
    if not close(z, ref, **tol):
        candidates = {
            "you multiplied eps by the variance exp(logvar); use the standard deviation sigma = exp(0.5 * logvar).":
                m + torch.exp(lvar) * e,
            "logvar is a logarithm: exponentiate it, sigma = exp(0.5 * logvar).": m + lvar * e,
            "0.5 * logvar is log(sigma): exponentiate it, sigma = exp(0.5 * logvar).": m + 0.5 * lvar * e,
            "the noise enters with a plus sign: z = mu + sigma * eps.": m - sd * e,
            "you forgot to add the mean mu.": sd * e,
            "you forgot to scale the noise by sigma = exp(0.5 * logvar).": m + e,
            "mu and sigma are swapped: z = mu + sigma * eps.": sd + m * e,
        }
        hint = diagnose(z, candidates, **tol)
        if hint is None:
            z2 = ctx.call(mu, lv, eps)
            if z2.shape == z.shape and not torch.equal(z2.detach(), z.detach()):
                hint = ("your function returns different values for the same inputs: it draws its own noise. "
                        "Use the `eps` argument instead of torch.randn_like(...).")
            else:
                hint = "expected z = mu + exp(0.5 * logvar) * eps, using the eps passed in."
        ctx.fail(
            f"wrong values: {hint}\n  e.g. mu = {fmt(m[0])}, logvar = {fmt(lvar[0])}, eps = {fmt(e[0])}\n"
            f"  expected z = {fmt(ref[0])}, got {fmt(z[0])}"
        )

    # gradients: L = sum(c * z) => dL/dmu = c, dL/dlogvar = c * 0.5 * sigma * eps
    if not z.requires_grad:
        ctx.fail(
            "z is not connected to the autograd graph of mu and logvar, so no gradient can reach the encoder. "
            "Avoid .detach(), .data, .item(), numpy and torch.no_grad() inside the function."
        )
    c = ctx.randn(n, d)
    g_mu, g_lv = torch.autograd.grad((z * c).sum(), [mu, lv], allow_unused=True)
    for name, g, want, rule in (
        ("mu", g_mu, c.double(), "dz/dmu = 1"),
        ("logvar", g_lv, c.double() * 0.5 * sd * e, "dz/dlogvar = 0.5 * sigma * eps"),
    ):
        if g is None:
            ctx.fail(f"no gradient reaches {name}: z must be computed from {name} with differentiable torch "
                     "operations.")
        if not close(g, want, rtol=1e-4, atol=1e-5):
            ctx.fail(f"the gradient with respect to {name} is wrong (expected {rule}); got {fmt(g[0])} instead of "
                     f"{fmt(want[0])} for the first row.")

    # sample moments: many samples from one Gaussian
    big = 20000
    mu1 = 2 * ctx.randn(d)
    lv1 = ctx.uniform(-1.5, 1.5, d)
    zs = ctx.call(mu1.expand(big, d).clone(), lv1.expand(big, d).clone(), ctx.randn(big, d)).detach().double()
    var = torch.exp(lv1.double())
    if zs.shape != (big, d):
        ctx.fail(f"expected shape ({big}, {d}) for inputs of that shape, got {tuple(zs.shape)}")
    mean_err = (zs.mean(0) - mu1.double()).abs() / (var / big).sqrt()
    var_err = (zs.var(0) - var).abs() / (var * math.sqrt(2.0 / big))
    if bool((mean_err > 5).any()) or bool((var_err > 5).any()):
        ctx.fail(
            f"samples have the wrong moments: mean {fmt(zs.mean(0))} vs mu {fmt(mu1)}, "
            f"variance {fmt(zs.var(0))} vs exp(logvar) {fmt(var)} (20000 samples)."
        )
    ctx.passed("z = mu + exp(0.5*logvar)*eps, gradients reach mu and logvar, sample mean/variance correct")


# --------------------------------------------------------------------------- exercise 3: IWAE from log weights
def iwae_from_log_weights(fn: Callable, *, seed: int | None = None) -> None:
    r"""Check ``fn(log_w) -> log (1/k) sum_i exp(log_w[i])`` with ``log_w`` of shape ``(k, N)``.

    Reference: ``torch.logsumexp(log_w, 0) - log k`` (Burda et al. 2016, eq. 8). Checks
    the output shape ``(N,)``, values on moderate log weights (hints for a missing
    ``- log k`` and for averaging log weights instead of weights), ``k = 1`` (the
    estimate is the log weight itself), and log weights of magnitude ~1000 where
    a naive ``log(mean(exp(log_w)))`` under- or overflows, even in float64.

    Args:
        fn: the student's function. seed: optional seed for reproducible inputs.

    Raises:
        AssertionError: with an explanation when a check fails or ``fn`` is a stub.
    """
    ctx = Ctx("iwae_from_log_weights", fn, seed)
    k, n = 7, 4
    log_w = 2 * ctx.randn(k, n) - 3
    out = ctx.call(log_w)
    if out.shape != (n,):
        if tuple(out.shape) == (k,):
            hint = "you reduced over dim 1 (the examples): reduce over dim 0, the k importance samples."
        elif out.ndim == 0:
            hint = "you reduced over everything: return one estimate per example (reduce over dim 0 only)."
        elif tuple(out.shape) in ((1, n), (n, 1)):
            hint = "drop keepdim=True: return a 1-D tensor."
        else:
            hint = "reduce over dim 0 (the k samples) and return one value per example."
        ctx.fail(f"expected output shape ({n},) for log_w of shape (k, N) = ({k}, {n}), got {tuple(out.shape)}: {hint}")

    lw = log_w.double()
    ref = torch.logsumexp(lw, 0) - math.log(k)
    tol = {"rtol": 1e-5, "atol": 1e-4}
    if not close(out, ref, **tol):
        candidates = {
            "you forgot the 1/k: log((1/k) * sum(w)) = logsumexp(log_w, 0) - log(k).": torch.logsumexp(lw, 0),
            "the log k term has the wrong sign: subtract log(k).": torch.logsumexp(lw, 0) + math.log(k),
            "you averaged the log weights (that is the ELBO estimate); IWAE is the log of the AVERAGE WEIGHT, "
            "log((1/k) sum_i exp(log_w_i)).": lw.mean(0),
            "you took the largest log weight; IWAE averages all k weights: logsumexp(log_w, 0) - log(k).":
                lw.max(0).values,
        }
        hint = hint_for(out, candidates, **tol, default="expected log((1/k) * sum_i exp(log_w[i])) for each column.",
                        not_finite="your result contains inf or NaN: exp(log_w) overflowed or underflowed. Subtract "
                                   "the maximum log weight before exponentiating, or use torch.logsumexp.")
        j = first_bad(out, ref, **tol)
        ctx.fail(
            f"wrong values: {hint}\n  failing input: log_w[:, {j}] = {fmt(lw[:, j])}\n"
            f"  expected {float(ref[j]):.6f}, got {float(out[j].detach()):.6f}"
        )

    one = 3 * ctx.randn(1, n)
    out1 = ctx.call(one)
    if not close(out1, one[0].double(), **tol):
        ctx.fail(
            f"with k = 1 the estimate must equal the single log weight (the one-sample ELBO), "
            f"log_w[0] = {fmt(one[0])}; got {fmt(out1)}"
        )

    for offset in (-1000.0, 1000.0):
        big = ctx.randn(k, n) * 5 + offset
        out_big = ctx.call(big)
        ref_big = torch.logsumexp(big.double(), 0) - math.log(k)
        if not close(out_big, ref_big, rtol=1e-5, atol=1e-3):
            flow = "underflows to 0 (log 0 = -inf)" if offset < 0 else "overflows to inf"
            j = first_bad(out_big, ref_big, 1e-5, 1e-3)
            ctx.fail(
                f"wrong for log weights around {offset:+.0f} (they are that large for real data): exp(log_w) {flow}, "
                f"even in float64.\n  Subtract the maximum before exponentiating, "
                f"log((1/k) sum exp(a_i)) = m + log((1/k) sum exp(a_i - m)) with m = max_i a_i, "
                f"or use torch.logsumexp.\n"
                f"  failing input: log_w[:, {j}] = {fmt(big[:, j], 2)}\n"
                f"  expected {float(ref_big[j]):.4f}, got {fmt(out_big.reshape(-1)[j:j + 1])}"
            )
    ctx.passed("matches logsumexp(log_w, 0) - log k, k = 1 gives the log weight, stable for |log_w| ~ 1000")


# --------------------------------------------------------------------------- exercise 4: the free-bits KL term
def free_bits_kl(fn: Callable, *, seed: int | None = None) -> None:
    r"""Check ``fn(kl_dims, free_bits) -> sum_j max(free_bits, mean_n kl_dims[n, j])`` (a 0-dim tensor, nats).

    Reference: :func:`coursekit.vae.free_bits_kl` (Kingma et al. 2016, "free bits", one group per latent
    dimension). Inputs: float32 ``kl_dims`` of shape ``(N, d)`` with entries >= 0, and a python float
    ``free_bits``. Checks the shape, the values (with hints for thresholding each example, thresholding the total,
    a missing threshold, min instead of max, averaging over dimensions), ``free_bits = 0`` (the ordinary KL term
    averaged over the batch), and that a dimension whose batch mean is below the threshold gets zero gradient.

    Args:
        fn: the student's function. seed: optional seed for reproducible inputs.

    Raises:
        AssertionError: with an explanation when a check fails or ``fn`` is a stub.
    """
    lam = {"value": 0.3}
    ctx = Ctx("free_bits_kl", lambda k: fn(k, lam["value"]), seed)
    n, d = 8, 5
    scale = torch.tensor([0.05, 0.2, 0.6, 1.5, 0.01])
    kl = ctx.uniform(0.0, 2.0, n, d) * scale
    out = ctx.call(kl, what=f" and free_bits={lam['value']}")
    if out.ndim != 0:
        hint = ("you returned one value per dimension: sum over the dimensions." if tuple(out.shape) == (d,) else
                "you returned one value per example: average each dimension over the batch first, then threshold "
                "and sum." if tuple(out.shape) == (n,) else "return a single number (a 0-dim tensor).")
        ctx.fail(f"expected a 0-dim tensor for kl_dims of shape ({n}, {d}), got shape {tuple(out.shape)}: {hint}")
    k64, lv = kl.double(), lam["value"]
    ref = k64.mean(0).clamp_min(lv).sum()
    tol = {"rtol": 1e-5, "atol": 1e-5}
    if not close(out, ref, **tol):
        candidates = {
            "you applied the threshold to each example's KL before averaging; free bits threshold the minibatch "
            "AVERAGE of each dimension: sum_j max(lambda, mean_n KL[n, j]).": k64.clamp_min(lv).mean(0).sum(),
            "there is no per-dimension threshold: that is the ordinary KL term (one threshold on the total KL "
            "changes nothing once the total exceeds lambda). Free bits give every latent dimension its own lambda: "
            "sum_j max(lambda, mean_n KL[n, j]).": k64.sum(-1).mean(),
            "you used min instead of max: a dimension below lambda must still be charged lambda, "
            "max(lambda, mean KL).": k64.mean(0).clamp_max(lv).sum(),
            "you averaged over the dimensions: SUM the thresholded terms over the latent dimensions.":
                k64.mean(0).clamp_min(lv).mean(),
            "you subtracted lambda (that is a hinge max(0, KL - lambda), which changes the value by d * lambda "
            "where the KL is above it): use max(lambda, KL).": (k64.mean(0) - lv).clamp_min(0).sum(),
        }
        hint = hint_for(out, candidates, **tol, default="expected sum_j max(free_bits, mean_n kl_dims[n, j]).",
                        not_finite="your result contains inf or NaN.")
        ctx.fail(f"wrong value: {hint}\n  failing input: kl_dims with per-dimension means {fmt(k64.mean(0))}, "
                 f"free_bits = {lv}\n  expected {float(ref):.6f}, got {float(out.detach()):.6f}")

    lam["value"] = 0.0
    out0 = ctx.call(kl, what=" and free_bits=0.0")
    if not close(out0, k64.sum(-1).mean(), **tol):
        ctx.fail(f"with free_bits = 0 the result must be the ordinary KL term averaged over the batch, "
                 f"{float(k64.sum(-1).mean()):.6f}; got {float(out0.detach()):.6f}")

    lam["value"] = 0.3
    kl_req = kl.clone().requires_grad_(True)
    out_g = ctx.call(kl_req, what=" and free_bits=0.3")
    if not out_g.requires_grad:
        ctx.fail("your result is not differentiable in kl_dims (did you use .item(), python max() or numpy?). "
                 "Use torch operations such as clamp_min or torch.maximum.")
    (grad,) = torch.autograd.grad(out_g, kl_req)
    below = kl.mean(0) < lam["value"]
    if grad[:, below].abs().max() > 1e-6 or not torch.allclose(grad[:, ~below], torch.full_like(grad[:, ~below], 1 / n),
                                                               atol=1e-5):
        ctx.fail(f"wrong gradient: a dimension whose batch mean is below free_bits must get gradient 0 (it is not "
                 f"charged at the margin), the others 1/N = {1 / n:.4f} per entry; got per-dimension gradients "
                 f"{fmt(grad.sum(0))} for means {fmt(kl.mean(0))}")
    ctx.passed("matches sum_j max(free_bits, mean_n KL[n, j]); free_bits = 0 gives the mean KL; zero gradient below "
               "the threshold")
