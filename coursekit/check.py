"""Auto-checks for the chapter 04 (VAE) exercises.

Each checker calls the student's function on **fresh random inputs** (drawn from
a private generator, so the notebook's global random state is untouched) and

* passes by printing one short line ``✓ <exercise> passed ...``;
* fails with an ``AssertionError`` whose message says what was expected, what was
  received (shapes, values, the failing input) and, for common mistakes (sign
  flipped, log-variance used as log standard deviation, naive ``log(mean(exp))``
  ...), a hint naming the mistake;
* turns a stub that still raises ``NotImplementedError`` into an
  ``AssertionError`` saying the exercise is not done yet.

Every failure message ends with the seed that reproduces it:
``check.kl_std_normal(fn, seed=...)``.
"""

from __future__ import annotations

import math
import random
from typing import Callable

import torch

from .divergences import gaussian_kl

__all__ = ["kl_std_normal", "reparameterise", "iwae_from_log_weights"]


# --------------------------------------------------------------------------- machinery
class _Ctx:
    def __init__(self, exercise: str, fn: Callable, seed: int | None):
        if not callable(fn):
            raise TypeError(f"check.{exercise} expects your function, got {type(fn).__name__}")
        self.exercise = exercise
        self.fn = fn
        self.seed = random.SystemRandom().randrange(2**63) if seed is None else int(seed)
        self.gen = torch.Generator().manual_seed(self.seed)
        self.n_checks = 0

    def fail(self, msg: str) -> None:
        raise AssertionError(f"{self.exercise}: {msg}\n(reproduce with check.{self.exercise}(fn, seed={self.seed}))")

    def randn(self, *shape, dtype=torch.float32) -> torch.Tensor:
        return torch.randn(shape, generator=self.gen, dtype=torch.float64).to(dtype)

    def uniform(self, lo: float, hi: float, *shape) -> torch.Tensor:
        return (lo + (hi - lo) * torch.rand(shape, generator=self.gen, dtype=torch.float64)).float()

    def call(self, *args: torch.Tensor, what: str = "") -> torch.Tensor:
        """Call the student's function; translate stubs and crashes into AssertionErrors."""
        kept = [a.detach().clone() for a in args]
        try:
            out = self.fn(*args)
        except NotImplementedError:
            raise AssertionError(
                f"{self.exercise}: not implemented yet. Replace `raise NotImplementedError` in your "
                f"function with your code, run that cell, then run this check again."
            ) from None
        except Exception as err:  # the student's code crashed: show the error and the input
            shapes = ", ".join(str(tuple(a.shape)) for a in args)
            raise AssertionError(
                f"{self.exercise}: your function raised {type(err).__name__}: {err}\n"
                f"when called with tensors of shapes {shapes}{what} (see the traceback above this one)."
                f"\n(reproduce with check.{self.exercise}(fn, seed={self.seed}))"
            ) from err
        for i, (a, k) in enumerate(zip(args, kept)):
            if not torch.equal(a.detach(), k):
                self.fail(
                    f"your function modified its input argument #{i + 1} in place "
                    "(e.g. with exp_(), mul_() or +=). Use out-of-place operations."
                )
        if not isinstance(out, torch.Tensor):
            self.fail(
                f"your function should return a torch.Tensor, got {type(out).__name__}. "
                "Use torch operations (torch.exp, torch.logsumexp, ...) rather than numpy or math."
            )
        self.n_checks += 1
        return out

    def passed(self, detail: str) -> None:
        print(f"✓ {self.exercise} passed: {detail} ({self.n_checks} calls on fresh random inputs)")


def _close(got: torch.Tensor, want: torch.Tensor, rtol: float, atol: float) -> bool:
    got = got.detach().to(torch.float64)
    return bool(got.shape == want.shape and torch.isfinite(got).all() and torch.allclose(got, want, rtol=rtol, atol=atol))


def _fmt(t: torch.Tensor, digits: int = 4) -> str:
    t = t.detach().to(torch.float64)
    return str([round(v, digits) for v in t.reshape(-1).tolist()]) if t.ndim <= 1 else str(
        [[round(v, digits) for v in row] for row in t.tolist()]
    )


def _first_bad(got: torch.Tensor, want: torch.Tensor, rtol: float, atol: float) -> int:
    """Index (along dim 0 of ``want``) of the first entry that does not match; 0 if shapes differ."""
    got = got.detach().to(torch.float64)
    if got.shape != want.shape:
        return 0
    bad = ~torch.isclose(got, want, rtol=rtol, atol=atol)
    bad = bad.reshape(bad.shape[0], -1).any(-1) if bad.ndim > 1 else bad
    return int(bad.nonzero()[0, 0]) if bool(bad.any()) else 0


def _diagnose(got: torch.Tensor, candidates: dict[str, torch.Tensor], rtol: float, atol: float) -> str | None:
    for hint, cand in candidates.items():
        if _close(got, cand, rtol, atol):
            return hint
    return None


# --------------------------------------------------------------------------- exercise 1: KL to N(0, I)
_KL_RTOL, _KL_ATOL = 1e-4, 1e-5


def _kl_candidates(mu: torch.Tensor, lv: torch.Tensor) -> dict[str, torch.Tensor]:
    ref = gaussian_kl(mu, lv)
    d = mu.shape[-1]
    s = lambda t: t.sum(-1)  # noqa: E731
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
    ctx = _Ctx("kl_std_normal", fn, seed)
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
    if not _close(out, ref, _KL_RTOL, _KL_ATOL):
        hint = _diagnose(out, _kl_candidates(mu64, lv64), _KL_RTOL, _KL_ATOL)
        if hint is None:
            i = _first_bad(out, ref, _KL_RTOL, _KL_ATOL)
            ctx.fail(
                "wrong values. Expected KL = 0.5 * sum(exp(logvar) + mu^2 - 1 - logvar) over the last dim.\n"
                f"  failing input (row {i}): mu = {_fmt(mu[i])}, logvar = {_fmt(lv[i])}\n"
                f"  expected {float(ref[i]):.6f}, got {float(out[i].detach()):.6f}"
            )
        ctx.fail(
            f"wrong values: {hint}\n  e.g. mu = {_fmt(mu[0])}, logvar = {_fmt(lv[0])}: "
            f"expected {float(ref[0]):.6f}, got {float(out[0].detach()):.6f}"
        )

    zero = ctx.call(torch.zeros(2, d), torch.zeros(2, d))
    if not _close(zero, torch.zeros(2, dtype=torch.float64), 0, 1e-6):
        ctx.fail(f"KL(N(0, I) || N(0, I)) must be 0 for mu = 0, logvar = 0; got {_fmt(zero)}")

    # a wider range of inputs: large |mu| and very small / large variances
    mu2 = 3 * ctx.randn(200, 5)
    lv2 = ctx.uniform(-8.0, 4.0, 200, 5)
    out2 = ctx.call(mu2, lv2)
    ref2 = gaussian_kl(mu2.double(), lv2.double())
    if not _close(out2, ref2, _KL_RTOL, 1e-4):
        i = _first_bad(out2, ref2, _KL_RTOL, 1e-4)
        ctx.fail(
            "correct on small inputs but wrong on a wider range (|mu| up to ~10, logvar in [-8, 4]).\n"
            f"  failing input: mu = {_fmt(mu2[i])}, logvar = {_fmt(lv2[i])}\n"
            f"  expected {float(ref2[i]):.6f}, got {_fmt(out2.reshape(-1)[i:i + 1])}"
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
    ctx = _Ctx("reparameterise", fn, seed)
    n, d = 5, 3
    mu = ctx.randn(n, d).requires_grad_(True)
    lv = ctx.uniform(-2.0, 1.5, n, d).requires_grad_(True)
    eps = ctx.randn(n, d)
    z = ctx.call(mu, lv, eps)
    if z.shape != (n, d):
        ctx.fail(f"expected z with the shape of mu, ({n}, {d}), got {tuple(z.shape)}: z = mu + exp(0.5*logvar) * eps is elementwise.")

    m, l, e = mu.detach().double(), lv.detach().double(), eps.double()
    sd = torch.exp(0.5 * l)
    ref = m + sd * e
    tol = dict(rtol=1e-4, atol=1e-5)
    if not _close(z, ref, **tol):
        candidates = {
            "you multiplied eps by the variance exp(logvar); use the standard deviation sigma = exp(0.5 * logvar).": m + torch.exp(l) * e,
            "logvar is a logarithm: exponentiate it, sigma = exp(0.5 * logvar).": m + l * e,
            "0.5 * logvar is log(sigma): exponentiate it, sigma = exp(0.5 * logvar).": m + 0.5 * l * e,
            "the noise enters with a plus sign: z = mu + sigma * eps.": m - sd * e,
            "you forgot to add the mean mu.": sd * e,
            "you forgot to scale the noise by sigma = exp(0.5 * logvar).": m + e,
            "mu and sigma are swapped: z = mu + sigma * eps.": sd + m * e,
        }
        hint = _diagnose(z, candidates, **tol)
        if hint is None:
            z2 = ctx.call(mu, lv, eps)
            if z2.shape == z.shape and not torch.equal(z2.detach(), z.detach()):
                hint = ("your function returns different values for the same inputs: it draws its own noise. "
                        "Use the `eps` argument instead of torch.randn_like(...).")
            else:
                hint = "expected z = mu + exp(0.5 * logvar) * eps, using the eps passed in."
        ctx.fail(
            f"wrong values: {hint}\n  e.g. mu = {_fmt(m[0])}, logvar = {_fmt(l[0])}, eps = {_fmt(e[0])}\n"
            f"  expected z = {_fmt(ref[0])}, got {_fmt(z[0])}"
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
            ctx.fail(f"no gradient reaches {name}: z must be computed from {name} with differentiable torch operations.")
        if not _close(g, want, rtol=1e-4, atol=1e-5):
            ctx.fail(f"the gradient with respect to {name} is wrong (expected {rule}); got {_fmt(g[0])} instead of {_fmt(want[0])} for the first row.")

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
            f"samples have the wrong moments: mean {_fmt(zs.mean(0))} vs mu {_fmt(mu1)}, "
            f"variance {_fmt(zs.var(0))} vs exp(logvar) {_fmt(var)} (20000 samples)."
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
    ctx = _Ctx("iwae_from_log_weights", fn, seed)
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
    tol = dict(rtol=1e-5, atol=1e-4)
    if not _close(out, ref, **tol):
        candidates = {
            "you forgot the 1/k: log((1/k) * sum(w)) = logsumexp(log_w, 0) - log(k).": torch.logsumexp(lw, 0),
            "the log k term has the wrong sign: subtract log(k).": torch.logsumexp(lw, 0) + math.log(k),
            "you averaged the log weights (that is the ELBO estimate); IWAE is the log of the AVERAGE WEIGHT, "
            "log((1/k) sum_i exp(log_w_i)).": lw.mean(0),
            "you took the largest log weight; IWAE averages all k weights: logsumexp(log_w, 0) - log(k).": lw.max(0).values,
        }
        hint = _diagnose(out, candidates, **tol)
        if hint is None and not bool(torch.isfinite(out.detach()).all()):
            hint = ("your result contains inf or NaN: exp(log_w) overflowed or underflowed. "
                    "Subtract the maximum log weight before exponentiating, or use torch.logsumexp.")
        hint = hint or "expected log((1/k) * sum_i exp(log_w[i])) for each column."
        j = _first_bad(out, ref, **tol)
        ctx.fail(
            f"wrong values: {hint}\n  failing input: log_w[:, {j}] = {_fmt(lw[:, j])}\n"
            f"  expected {float(ref[j]):.6f}, got {float(out[j].detach()):.6f}"
        )

    one = 3 * ctx.randn(1, n)
    out1 = ctx.call(one)
    if not _close(out1, one[0].double(), **tol):
        ctx.fail(
            f"with k = 1 the estimate must equal the single log weight (the one-sample ELBO), "
            f"log_w[0] = {_fmt(one[0])}; got {_fmt(out1)}"
        )

    for offset in (-1000.0, 1000.0):
        big = ctx.randn(k, n) * 5 + offset
        out_big = ctx.call(big)
        ref_big = torch.logsumexp(big.double(), 0) - math.log(k)
        if not _close(out_big, ref_big, rtol=1e-5, atol=1e-3):
            flow = "underflows to 0 (log 0 = -inf)" if offset < 0 else "overflows to inf"
            j = _first_bad(out_big, ref_big, 1e-5, 1e-3)
            ctx.fail(
                f"wrong for log weights around {offset:+.0f} (they are that large for real data): exp(log_w) {flow}, "
                f"even in float64.\n  Subtract the maximum before exponentiating, "
                f"log((1/k) sum exp(a_i)) = m + log((1/k) sum exp(a_i - m)) with m = max_i a_i, or use torch.logsumexp.\n"
                f"  failing input: log_w[:, {j}] = {_fmt(big[:, j], 2)}\n"
                f"  expected {float(ref_big[j]):.4f}, got {_fmt(out_big.reshape(-1)[j:j + 1])}"
            )
    ctx.passed("matches logsumexp(log_w, 0) - log k, k = 1 gives the log weight, stable for |log_w| ~ 1000")


# =========================================================================== chapter 09: score matching
__all__ += ["langevin_step", "dsm_target", "score_jacobian_trace"]


def langevin_step(fn: Callable, *, seed: int | None = None) -> None:
    r"""Check ``fn(x, score, step_size, z) -> x + (step_size / 2) * score + sqrt(step_size) * z``.

    One step of unadjusted Langevin dynamics with time step :math:`\varepsilon` (Welling & Teh 2011, eq. 4;
    Roberts & Tweedie 1996): drift :math:`\tfrac{\varepsilon}{2}\nabla\log p`, noise variance :math:`\varepsilon`.
    Checks the shape and values on random inputs (hints for a noise of :math:`\sqrt{2\varepsilon}`, a drift of
    :math:`\varepsilon` instead of :math:`\varepsilon/2`, :math:`\varepsilon z` without the square root, a flipped drift
    sign), ``step_size`` given as a python float, and that 4000 chains on N(0, 1) reach the discrete
    chain's stationary variance :math:`1 / (1 - \varepsilon/4)` within 5 standard errors.

    Raises:
        AssertionError: with an explanation when a check fails or ``fn`` is a stub.
    """
    ctx = _Ctx("langevin_step", fn, seed)
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
    tol = dict(rtol=1e-4, atol=1e-5)
    if not _close(out, ref, **tol):
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
        hint = _diagnose(out, candidates, **tol) or "expected x + (step_size / 2) * score + sqrt(step_size) * z."
        ctx.fail(f"wrong values: {hint}\n  e.g. step_size = {eps:.4f}, x = {_fmt(x[0])}, score = {_fmt(sc[0])}, "
                 f"z = {_fmt(z[0])}\n  expected {_fmt(ref[0])}, got {_fmt(out[0])}")

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
    :math:`\nabla_{\tilde x} \log \mathcal{N}(\tilde x; x, \sigma^2 I)` (Vincent 2011, eq. 11).

    Checks shape and values for a float ``sigma`` and for a per-example ``sigma`` of shape (N, 1), with
    hints for a flipped sign, dividing by sigma instead of sigma^2, and returning the noise itself.

    Raises:
        AssertionError: with an explanation when a check fails or ``fn`` is a stub.
    """
    ctx = _Ctx("dsm_target", fn, seed)
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
    tol = dict(rtol=1e-4, atol=1e-4)
    if not _close(out, ref, **tol):
        candidates = {
            "the sign is flipped: the target points from the noisy point BACK to the clean one, "
            "-(x_tilde - x) / sigma^2 = (x - x_tilde) / sigma^2.": -ref,
            "divide by sigma^2 (the variance), not sigma: grad log N(x_tilde; x, sigma^2 I) = -(x_tilde - x) / sigma^2.":
                -(xt64 - x64) / sigma,
            "that is minus the noise eps = (x_tilde - x) / sigma; the score of the Gaussian kernel is -eps / sigma.":
                -e64,
            "that is the noise eps = (x_tilde - x) / sigma itself; the target is -eps / sigma.": e64,
            "you forgot to divide by sigma^2.": -(xt64 - x64),
        }
        hint = _diagnose(out, candidates, **tol) or "expected -(x_tilde - x) / sigma**2."
        ctx.fail(f"wrong values: {hint}\n  e.g. sigma = {sigma:.4f}, x = {_fmt(x[0])}, x_tilde = {_fmt(xt[0])}\n"
                 f"  expected {_fmt(ref[0])}, got {_fmt(out[0])}")
    sig_col = ctx.uniform(0.1, 1.0, n, 1)
    ctx.fn = lambda a, b, s: orig(a, b, s)
    out2 = ctx.call(x, xt, sig_col, what=" (sigma of shape (N, 1))")
    ref2 = -(xt64 - x64) / sig_col.double() ** 2
    if not _close(out2, ref2, **tol):
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
    as training with :func:`coursekit.score.hyvarinen_loss` needs (Hyvarinen 2005, eq. 4).

    Raises:
        AssertionError: with an explanation when a check fails or ``fn`` is a stub.
    """
    ctx = _Ctx("score_jacobian_trace", fn, seed)
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
    if not _close(out, tr_w, 1e-6, 1e-8):
        hint = None
        if _close(out, w.sum().expand(n), 1e-6, 1e-8):
            hint = ("you summed every entry of the Jacobian (e.g. grad(s.sum(), x).sum(-1)); the trace keeps only "
                    "the diagonal d s_i / d x_i: differentiate s[:, i].sum() and keep column i, for each i.")
        ctx.fail(f"for the linear score s(x) = W x + b the trace is tr W = {float(torch.trace(w)):.5f} for every example; "
                 f"got {_fmt(out)}. {hint or ''}")

    net = _trace_net(ctx.gen, d)
    x = ctx.randn(n, d, dtype=torch.float64)
    ctx.fn = lambda x_: orig(net, x_)
    out = ctx.call(x, what=" (a small tanh network)")
    jac = torch.stack([torch.autograd.functional.jacobian(lambda xi: net(xi[None])[0], xi) for xi in x])
    ref = jac.diagonal(dim1=1, dim2=2).sum(-1)
    if not _close(out, ref, 1e-6, 1e-8):
        again = ctx.call(x)
        if again.shape == out.shape and not torch.allclose(again.detach(), out.detach()):
            hint = "your function returns different values for the same input: compute the trace exactly, not with random projections."
        elif _close(out, jac.sum((1, 2)), 1e-6, 1e-8):
            hint = "you summed every entry of the Jacobian; the trace is the sum of the diagonal d s_i / d x_i only."
        elif _close(out.reshape(-1)[:1].expand(n) if out.numel() else out, ref.sum().expand(n), 1e-6, 1e-8):
            hint = "you returned the batch total; return one trace per example."
        else:
            hint = "expected sum_i d s_i(x) / d x_i for each example."
        i = _first_bad(out, ref, 1e-6, 1e-8)
        ctx.fail(f"wrong values for a small tanh network: {hint}\n  example {i}: expected {float(ref[i]):.6f}, "
                 f"got {_fmt(out.reshape(-1)[i:i + 1])}")
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
