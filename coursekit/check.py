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

__all__ = ["kl_std_normal", "reparameterise", "iwae_from_log_weights", "q_sample", "posterior_mean_variance",
           "ddim_step"]


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

    One step of unadjusted Langevin dynamics with time step :math:`\varepsilon` (Welling & Teh 2011;
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
    :math:`\nabla_{\tilde x} \log \mathcal{N}(\tilde x; x, \sigma^2 I)` (Vincent 2011).

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
    as training with :func:`coursekit.score.hyvarinen_loss` needs (Hyvarinen 2005, theorem 1).

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


# =========================================================================== chapter 05: normalizing flows
__all__ += ["coupling_forward", "coupling_inverse", "digits_bits_per_dim"]


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
    """Pack a student's ``(values, log_det)`` into one tensor (N, D + 1) for :meth:`_Ctx.call`."""
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
    ctx = _Ctx(name, fn, seed)
    n, d = 5, 6
    x, mask, net = _coupling_setup(ctx, n, d)
    orig = ctx.fn
    out_name = "x" if inverse else "z"
    ctx.fn = lambda v: _pair(orig(v, mask, net), out_name)
    out = ctx.call(x, what=" (plus mask and net)")
    y, ld = out[:, :d].double(), out[:, d].double()
    ref_y, ref_ld, s, t = _coupling_ref(x, mask, net, inverse)
    free = 1 - mask
    tol = dict(rtol=1e-5, atol=1e-6)
    if not _close(y, ref_y, **tol):
        s_all, t_all = net(x)  # the net fed the unmasked input
        if inverse:
            cands = {
                "undo the shift before the scale: x = (z - t) * exp(-s) on the transformed half, not "
                "z * exp(-s) - t.": x * mask + free * (x * torch.exp(-s) - t),
                "the inverse divides by the scale: multiply by exp(-s), not exp(s).": x * mask + free * (x - t) * torch.exp(s),
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
        hint = _diagnose(y, cands, **tol) or (
            "expected x = mask*z + (1-mask)*(z - t)*exp(-s)" if inverse else "expected z = mask*x + (1-mask)*(x*exp(s) + t)")
        ctx.fail(f"wrong {out_name}: {hint}\n  input row 0 = {_fmt(x[0])}, mask = {_fmt(mask)}\n"
                 f"  expected {_fmt(ref_y[0])}, got {_fmt(y[0])}")
    if not _close(ld, ref_ld, **tol):
        s_full = net(x * mask)[0]
        cands = {
            ("the sign: log|det dx/dz| of the inverse is MINUS the sum of the log-scales, -sum((1-mask)*s)."
             if inverse else "the sign: log|det dz/dx| = +sum((1-mask)*s), the log of the product of the scales exp(s_i)."):
                -ref_ld,
            "only the transformed half contributes: sum (1 - mask) * s, not all of s (the passed-through "
            "half has Jacobian 1, log 1 = 0).": (-1 if inverse else 1) * s_full.sum(-1),
            "the log-determinant is the sum of the log-scales s_i, not of the scales exp(s_i).":
                (-1 if inverse else 1) * (free * torch.exp(s)).sum(-1),
        }
        hint = _diagnose(ld, cands, **tol) or "expected the sum over the transformed coordinates of the log-scale."
        ctx.fail(f"wrong log_det: {hint}\n  expected {_fmt(ref_ld)}, got {_fmt(ld)}")

    # log_det against the autograd Jacobian of the student's own map
    jac_ld = []
    for row in x:
        jac = torch.autograd.functional.jacobian(lambda v: orig(v.unsqueeze(0), mask, net)[0].squeeze(0), row)
        jac_ld.append(torch.linalg.slogdet(jac.double()).logabsdet)
    if not _close(ld, torch.stack(jac_ld), rtol=1e-5, atol=1e-5):
        ctx.fail(f"log_det does not match log|det J| of your map computed by autograd: {_fmt(torch.stack(jac_ld))} "
                 f"vs your {_fmt(ld)}. Make {out_name} a differentiable torch function of the input.")
    if inverse:  # round trip through the forward formula
        z_fwd = _coupling_ref(x, mask, net, inverse=False)[0]
        back = ctx.call(z_fwd, what=" (plus mask and net)")[:, :d].double()
        if not _close(back, x, rtol=1e-5, atol=1e-6):
            ctx.fail(f"inverse(forward(x)) != x: got {_fmt(back[0])} for x = {_fmt(x[0])}")
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
    from .flows import digits_bits_per_dim as ref_fn

    ctx = _Ctx("digits_bits_per_dim", fn, seed)
    n = 6
    d = int(ctx.uniform(16, 80, 1).round())
    nll = ctx.uniform(-150.0, 40.0, n)
    orig = ctx.fn
    ctx.fn = lambda v: orig(v, d)
    out = ctx.call(nll, what=f" and dim={d}")
    if out.shape != (n,):
        ctx.fail(f"expected one value per example, shape ({n},), got {tuple(out.shape)}")
    nl = nll.double()
    ref = ref_fn(nl, d)
    ln2 = math.log(2)
    tol = dict(rtol=1e-5, atol=1e-5)
    if not _close(out, ref, **tol):
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
        hint = _diagnose(out, cands, **tol) or "expected (nll + dim * log 17) / (dim * ln 2)."
        ctx.fail(f"wrong values: {hint}\n  e.g. nll = {float(nl[0]):.4f} nats, dim = {d}: expected "
                 f"{float(ref[0]):.6f} bits/dim, got {float(out[0].detach()):.6f}")
    zero = ctx.call(torch.zeros(2))
    if not _close(zero, torch.full((2,), math.log2(17), dtype=torch.float64), **tol):
        ctx.fail(f"a density uniform on [0, 1)^dim (NLL 0) must cost log2(17) = {math.log2(17):.4f} bits/dim, the "
                 f"code length of 17 equally likely levels; got {_fmt(zero)}")
    ctx.passed("(nll + dim log 17) / (dim ln 2); the uniform density gives log2(17) bits/dim")


# =========================================================================== chapter 08: diffusion
def _diffusion_inputs(ctx: _Ctx, n: int = 6):
    """A random schedule (linear or cosine, random T) and random images / noise, float32."""
    from . import diffusion as _d

    T = int(torch.randint(25, 120, (), generator=ctx.gen))  # the scaled linear schedule needs T >= 21
    name = ("linear", "cosine")[int(torch.randint(0, 2, (), generator=ctx.gen))]
    abar = _d.alphas_cumprod_from_betas(_d.beta_schedule(name, T)).float()
    x0 = ctx.uniform(-1.0, 1.0, n, 1, 8, 8)
    noise = ctx.randn(n, 1, 8, 8)
    return _d, T, name, abar, x0, noise


def q_sample(fn: Callable, *, seed: int | None = None) -> None:
    r"""Check ``fn(x0, t, noise, alphas_cumprod) -> sqrt(abar[t]) * x0 + sqrt(1 - abar[t]) * noise`` (Ho et al.
    2020, eq. 4), with ``t`` an int64 tensor (N,) of 0-based indices and the images (N, 1, 8, 8).

    Compares with :func:`coursekit.diffusion.q_sample` on a random schedule, with hints for a missing square
    root, an off-by-one index and swapped coefficients; then checks the sample moments of many draws."""
    ctx = _Ctx("q_sample", fn, seed)
    _d, T, name, abar, x0, noise = _diffusion_inputs(ctx)
    t = torch.randint(0, T, (x0.shape[0],), generator=ctx.gen)
    t[0], t[1] = 0, T - 1
    try:
        out = ctx.call(x0, t, noise, abar)
    except AssertionError as err:
        if "must match the size" not in str(err):
            raise
        raise AssertionError(f"{err}\nHint: alphas_cumprod[t] has shape (N,); reshape it to (N, 1, 1, 1), e.g. "
                             "alphas_cumprod[t].view(-1, 1, 1, 1), so that it scales each image.") from None
    if out.shape != x0.shape:
        ctx.fail(f"expected x_t with the shape of x0, {tuple(x0.shape)}, got {tuple(out.shape)}. abar[t] has shape "
                 "(N,): reshape it to (N, 1, 1, 1) (e.g. abar[t].view(-1, 1, 1, 1)) so it broadcasts per image.")
    ref = _d.q_sample(x0.double(), t, noise.double(), abar)
    tol = dict(rtol=1e-4, atol=1e-5)
    if not _close(out, ref, **tol):
        a = abar.double()[t].view(-1, 1, 1, 1)
        a_next = abar.double()[(t + 1).clamp(max=T - 1)].view(-1, 1, 1, 1)
        a_prev = torch.cat([abar.double().new_ones(1), abar.double()])[t].view(-1, 1, 1, 1)
        x, e = x0.double(), noise.double()
        candidates = {
            "the coefficients need square roots: x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps "
            "(abar_t and 1 - abar_t are the VARIANCE-like factors).": a * x + (1 - a) * e,
            "x0 and the noise have swapped coefficients: the signal is scaled by sqrt(abar_t).":
                (1 - a).sqrt() * x + a.sqrt() * e,
            "off by one: index t of alphas_cumprod is already the right step (0-based), use alphas_cumprod[t].":
                a_next.sqrt() * x + (1 - a_next).sqrt() * e,
            "off by one: use alphas_cumprod[t], not alphas_cumprod[t - 1].": a_prev.sqrt() * x + (1 - a_prev).sqrt() * e,
            "the noise must be added (and scaled by sqrt(1 - abar_t)), not subtracted.": a.sqrt() * x - (1 - a).sqrt() * e,
        }
        hint = _diagnose(out, candidates, **tol) or "expected sqrt(abar[t]) * x0 + sqrt(1 - abar[t]) * noise per image."
        i = _first_bad(out, ref, **tol)
        ctx.fail(f"wrong values ({name} schedule, T = {T}): {hint}\n  image {i} at t = {int(t[i])}: expected first "
                 f"pixels {_fmt(ref[i].reshape(-1)[:3])}, got {_fmt(out[i].reshape(-1)[:3])}")
    # moments of many draws at one t: mean sqrt(abar) x0, variance 1 - abar
    big, tt = 20000, int(T // 2)
    xs = ctx.call(x0[:1].expand(big, 1, 8, 8).clone(), torch.full((big,), tt, dtype=torch.long),
                  ctx.randn(big, 1, 8, 8), abar).detach().double()
    a = float(abar[tt])
    z_mean = (xs.mean(0) - a**0.5 * x0[0].double()).abs() / ((1 - a) / big) ** 0.5
    if bool((z_mean > 5).any()):
        ctx.fail("the mean of many samples at one t is not sqrt(abar_t) * x0.")
    ctx.passed(f"matches sqrt(abar_t) x0 + sqrt(1 - abar_t) eps ({name} schedule, T = {T})")


def posterior_mean_variance(fn: Callable, *, seed: int | None = None) -> None:
    r"""Check ``fn(x0, xt, t, alphas_cumprod) -> (mean, variance)`` of :math:`q(x_{t-1} \mid x_t, x_0)` (Ho et al.
    2020, eqs. 6-7) for 0-based ``t`` (int64 tensor (N,)) with every ``t >= 1``; ``variance`` may have shape
    (N,), (N, 1, 1, 1) or the images' shape. Compares with
    :func:`coursekit.diffusion.q_posterior_mean_variance`, with hints for swapped coefficients and
    :math:`\beta_t` used as the variance."""
    ctx = _Ctx("posterior_mean_variance", fn, seed)
    _d, T, name, abar, x0, xt = _diffusion_inputs(ctx)
    t = torch.randint(1, T, (x0.shape[0],), generator=ctx.gen)
    t[0], t[1] = 1, T - 1
    # float64 inputs: in float32, 1 - abar_t / abar_{t-1} loses digits at some t, and a correct formula
    # must not fail on rounding.
    x0, xt, abar = x0.double(), xt.double(), abar.double()
    try:
        mean, var = ctx.fn(x0, xt, t, abar)
    except NotImplementedError:
        raise AssertionError("posterior_mean_variance: not implemented yet. Replace `raise NotImplementedError` in "
                             "your function with your code, run that cell, then run this check again.") from None
    except (TypeError, ValueError) as err:
        ctx.fail(f"calling your function or unpacking its result as (mean, variance) failed: {type(err).__name__}: {err}")
    ref_mean, ref_var = _d.q_posterior_mean_variance(x0.double(), xt.double(), t, abar)
    if not isinstance(mean, torch.Tensor) or mean.shape != x0.shape:
        ctx.fail(f"the mean must be a tensor of the images' shape {tuple(x0.shape)}, got "
                 f"{tuple(mean.shape) if isinstance(mean, torch.Tensor) else type(mean).__name__}")
    if not isinstance(var, torch.Tensor):
        var = torch.as_tensor(var)
    try:
        var_full = torch.broadcast_to(var.reshape(-1, 1, 1, 1) if var.shape == (x0.shape[0],) else var, x0.shape)
    except RuntimeError:
        ctx.fail(f"the variance has shape {tuple(var.shape)}: use (N,), (N, 1, 1, 1) or the images' shape.")
    ab = abar.double()[t].view(-1, 1, 1, 1)
    ap = abar.double()[t - 1].view(-1, 1, 1, 1)
    beta = 1 - ab / ap
    tol = dict(rtol=1e-4, atol=1e-5)
    if not _close(var_full, ref_var.expand_as(x0), **tol):
        cands = {"that is beta_t, the forward step's variance; the posterior's is "
                 "beta_tilde = (1 - abar_{t-1}) / (1 - abar_t) * beta_t.": beta.expand_as(x0),
                 "the ratio is inverted: beta_tilde = (1 - abar_{t-1}) / (1 - abar_t) * beta_t.":
                     ((1 - ab) / (1 - ap) * beta).expand_as(x0),
                 "beta_t is 1 - alpha_t with alpha_t = abar_t / abar_{t-1}, not 1 - abar_t.":
                     ((1 - ap) / (1 - ab) * (1 - ab)).expand_as(x0)}
        hint = _diagnose(var_full, cands, **tol) or "expected (1 - abar_{t-1}) / (1 - abar_t) * beta_t."
        ctx.fail(f"wrong variance: {hint}\n  at t = {int(t[0])}: expected {float(ref_var[0]):.6g}, "
                 f"got {float(var_full[0].reshape(-1)[0]):.6g}")
    if not _close(mean, ref_mean, **tol):
        alpha = ab / ap
        c0 = ap.sqrt() * beta / (1 - ab)
        ct = alpha.sqrt() * (1 - ap) / (1 - ab)
        x, y = x0.double(), xt.double()
        cands = {"the two coefficients are swapped: x0 gets sqrt(abar_{t-1}) beta_t / (1 - abar_t) and x_t gets "
                 "sqrt(alpha_t) (1 - abar_{t-1}) / (1 - abar_t).": ct * x + c0 * y,
                 "x_t's coefficient needs sqrt(alpha_t), not alpha_t.": c0 * x + alpha * (1 - ap) / (1 - ab) * y,
                 "x0's coefficient needs sqrt(abar_{t-1}), not sqrt(abar_t).": ab.sqrt() * beta / (1 - ab) * x + ct * y}
        hint = _diagnose(mean, cands, **tol) or ("expected sqrt(abar_{t-1}) beta_t / (1 - abar_t) * x0 + "
                                                 "sqrt(alpha_t) (1 - abar_{t-1}) / (1 - abar_t) * x_t.")
        ctx.fail(f"wrong mean: {hint}")
    ctx.n_checks += 1
    ctx.passed(f"mean and variance of q(x_(t-1) | x_t, x_0) correct ({name} schedule, T = {T})")


def ddim_step(fn: Callable, *, seed: int | None = None) -> None:
    r"""Check the deterministic DDIM step ``fn(eps, xt, t, t_prev, alphas_cumprod) -> x_{t_prev}`` (Song et al. 2021,
    eq. 12 with :math:`\eta = 0`, no clipping): ``t`` and ``t_prev`` are python ints with ``t_prev < t`` and
    ``t_prev = -1`` meaning the data (:math:`\bar\alpha = 1`). Compares with
    :func:`coursekit.diffusion.ddim_step` ``(eta=0, clip=False)``."""
    ctx = _Ctx("ddim_step", fn, seed)
    _d, T, name, abar, eps, xt = _diffusion_inputs(ctx)
    xt = 1.5 * xt
    cases = [(T - 1, T // 2), (T // 2, T // 5), (3, -1), (T - 1, -1)]
    for t, tp in cases:
        try:
            out = ctx.fn(eps.clone(), xt.clone(), t, tp, abar)
        except NotImplementedError:
            raise AssertionError("ddim_step: not implemented yet. Replace `raise NotImplementedError` in your "
                                 "function with your code, run that cell, then run this check again.") from None
        except Exception as err:
            ctx.fail(f"your function raised {type(err).__name__}: {err} for t = {t}, t_prev = {tp}"
                     + (" (t_prev = -1 means the data: use abar = 1 there)" if tp == -1 else ""))
        ctx.n_checks += 1
        if not isinstance(out, torch.Tensor) or out.shape != xt.shape:
            ctx.fail(f"return a tensor of the images' shape {tuple(xt.shape)}")
        ref = _d.ddim_step(eps.double(), xt.double(), t, tp, abar, eta=0.0, clip=False)
        tol = dict(rtol=1e-4, atol=1e-4)
        if not _close(out, ref, **tol):
            a = float(abar[t])
            ap = 1.0 if tp < 0 else float(abar[tp])
            x0h = (xt.double() - (1 - a) ** 0.5 * eps.double()) / a**0.5
            cands = {"x0_hat is (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t): divide by sqrt(abar_t).":
                         ap**0.5 * (xt.double() - (1 - a) ** 0.5 * eps.double()) + (1 - ap) ** 0.5 * eps.double(),
                     "the direction term is sqrt(1 - abar_{t_prev}) * eps (the noise level of the TARGET time).":
                         ap**0.5 * x0h + (1 - a) ** 0.5 * eps.double(),
                     "the signal term is sqrt(abar_{t_prev}) * x0_hat, at the target time.":
                         a**0.5 * x0h + (1 - ap) ** 0.5 * eps.double()}
            if tp == -1:
                a_last = float(abar[-1])
                cands["with t_prev = -1, alphas_cumprod[t_prev] is python's LAST entry (the noisiest time). "
                      "t_prev = -1 means the data: use abar = 1 there, so the step returns x0_hat."] = (
                    a_last**0.5 * x0h + (1 - a_last) ** 0.5 * eps.double())
            hint = _diagnose(out, cands, **tol) or ("expected sqrt(abar_prev) * x0_hat + sqrt(1 - abar_prev) * eps with "
                                                    "x0_hat = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t).")
            ctx.fail(f"wrong values for t = {t}, t_prev = {tp}: {hint}")
    ctx.passed(f"deterministic DDIM steps correct, including the last step to t_prev = -1 ({name}, T = {T})")


# chapter 07
# =========================================================================== chapter 07: density ratios, MMD, WGAN-GP
__all__ += ["density_ratio_from_logits", "mmd2_unbiased", "gradient_penalty"]


def density_ratio_from_logits(fn: Callable, *, seed: int | None = None) -> None:
    r"""Check ``fn(logits) -> r`` with :math:`r = D/(1-D) = e^{\ell}` for :math:`D = \sigma(\ell)`, shape (N,).

    The classifier is trained with P (the data) labelled 1 and Q labelled 0 in equal numbers, so
    :math:`r(x) = p(x)/q(x)` (the density-ratio trick). Inputs: float32 logits of shape (N,) including large
    ones (|logit| up to 30) where ``sigmoid(l) / (1 - sigmoid(l))`` computed in float32 divides by a rounded
    zero. Hints for returning D, the log-ratio, the inverse ratio (labels swapped) and the overflow.

    Raises:
        AssertionError: with an explanation when a check fails or ``fn`` is a stub.
    """
    ctx = _Ctx("density_ratio_from_logits", fn, seed)
    n = 8
    logits = ctx.uniform(-4.0, 4.0, n)
    out = ctx.call(logits)
    if out.shape != (n,):
        ctx.fail(f"expected one ratio per logit, shape ({n},), got {tuple(out.shape)}")
    l64 = logits.double()
    ref = l64.exp()
    tol = dict(rtol=1e-4, atol=1e-6)
    if not _close(out, ref, **tol):
        cands = {
            "that is D = sigmoid(logit), the classifier's probability; the ratio is D / (1 - D).": torch.sigmoid(l64),
            "that is the LOG ratio log(p/q) = logit; the ratio itself is exp(logit).": l64,
            "that is q/p = (1 - D) / D: with the data labelled 1 the ratio p/q is D / (1 - D) = exp(logit).":
                (-l64).exp(),
            "that is 1 - D; the ratio is D / (1 - D).": torch.sigmoid(-l64),
        }
        hint = _diagnose(out, cands, **tol) or "expected D / (1 - D) with D = sigmoid(logit), i.e. exp(logit)."
        ctx.fail(f"wrong values: {hint}\n  logits = {_fmt(logits)}\n  expected {_fmt(ref)}\n  got      {_fmt(out)}")
    big = torch.tensor([-30.0, -20.0, 0.0, 20.0, 30.0])
    out = ctx.call(big, what=" (large logits)")
    if out.shape != (5,) or not bool(torch.isfinite(out).all()) or not _close(out, big.double().exp(), 1e-4, 0.0):
        ctx.fail("correct for moderate logits but not for large ones (|logit| = 20, 30): in float32 "
                 "sigmoid(30) rounds to exactly 1, so D / (1 - D) divides by 0. Use the identity "
                 "D / (1 - D) = exp(logit) instead.\n"
                 f"  logits = {_fmt(big)}, got {_fmt(out, 2)}")
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
    4 standard errors (unbiasedness).

    Raises:
        AssertionError: with an explanation when a check fails or ``fn`` is a stub.
    """
    ctx = _Ctx("mmd2_unbiased", fn, seed)
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
    tol = dict(rtol=1e-4, atol=1e-6)
    if not _close(out, ref, **tol):
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
        hint = _diagnose(out, cands, **tol) or ("expected sum_{i != j} k(x_i, x_j) / (m (m-1)) + sum_{i != j} "
                                                "k(y_i, y_j) / (n (n-1)) - 2 mean_ij k(x_i, y_j).")
        ctx.fail(f"wrong value for m = {m}, n = {n}, bandwidth = {h:.3f}: {hint}\n"
                 f"  expected {ref.item():.6f}, got {out.item():.6f}")
    xg = x.clone().requires_grad_(True)
    ctx.fn = lambda a, b: orig(a, b, h)
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
    (``create_graph=True``) so that it trains the critic.

    Raises:
        AssertionError: with an explanation when a check fails or ``fn`` is a stub.
    """
    ctx = _Ctx("gradient_penalty", fn, seed)

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
        ctx.fn = lambda r, f, e: orig(critic, r, f, e)
        out = ctx.call(real, fake, eps, what=" (real, fake, eps) and a small tanh critic")
        ctx.fn = orig
        if out.numel() != 1:
            ctx.fail(f"expected a single number (the batch mean of the penalty), got shape {tuple(out.shape)}")
        ref = reference(critic, real, fake, eps).double()
        tol = dict(rtol=1e-3, atol=1e-5)
        if not _close(out.reshape(()), ref, **tol):
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
            hint = _diagnose(out.reshape(()), {k: v.double() for k, v in cands.items()}, **tol) or (
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


# =========================================================================== chapter 06: GANs
from torch.nn import functional as F  # noqa: E402  (used by the chapter 06 checkers)

__all__ += ["optimal_discriminator", "non_saturating_loss", "jsd_discrete", "mode_counts"]


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
    ctx = _Ctx("optimal_discriminator", fn, seed)
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
    tol = dict(rtol=1e-4, atol=1e-6)
    if not _close(out, ref, **tol):
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
        hint = _diagnose(out, cands, **tol) or "expected p_data / (p_data + p_model), elementwise."
        i = _first_bad(out, ref, **tol)
        ctx.fail(f"wrong values: {hint}\n  e.g. p_data = {_fmt(p[i])}, p_model = {_fmt(q[i])}:\n  expected "
                 f"{_fmt(ref[i])}, got {_fmt(out[i])}")
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
    if not _close(half, torch.full((n, k), 0.5, dtype=torch.float64), 0, 1e-6):
        ctx.fail(f"where p_data = p_model the best discriminator cannot tell: D* must be 1/2; got {_fmt(half[0])}")
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
    ctx = _Ctx("non_saturating_loss", fn, seed)
    n = int(ctx.uniform(8, 40, 1).round())
    logits = 3 * ctx.randn(n)
    out = ctx.call(logits)
    if out.ndim != 0:
        ctx.fail(f"expected a scalar (0-dim tensor): the MEAN over the {n} generated samples; got shape "
                 f"{tuple(out.shape)}")
    l64 = logits.double()
    ref = F.softplus(-l64).mean()
    tol = dict(rtol=1e-4, atol=1e-5)
    if not _close(out, ref, **tol):
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
        hint = _diagnose(out, cands, **tol) or "expected -mean(log sigmoid(logits)) = softplus(-logits).mean()."
        ctx.fail(f"wrong value: {hint}\n  logits = {_fmt(logits[:5])}...: expected {float(ref):.6f}, "
                 f"got {float(out.detach()):.6f}")
    # stability and the gradient wrt the logits, including rejected samples (very negative logits)
    extreme = torch.tensor([-200.0, -50.0, -5.0, 0.0, 5.0, 50.0])
    x = extreme.clone().requires_grad_(True)
    val = ctx.call(x)
    want = F.softplus(-extreme.double()).mean()
    if not bool(torch.isfinite(val.detach())) or not _close(val.reshape(()), want, rtol=1e-4, atol=1e-4):
        ctx.fail(f"for logits {extreme.tolist()} the loss should be {float(want):.4f}, got {float(val.detach())}. "
                 "log(sigmoid(l)) underflows to log(0) = -inf for very negative l in float32; compute "
                 "-log D = softplus(-logit) (torch.nn.functional.softplus or logsigmoid).")
    if not val.requires_grad:
        ctx.fail("the result is not differentiable with respect to the logits (no .item(), numpy or detach).")
    (grad,) = torch.autograd.grad(val, x)
    want_g = -(1 - torch.sigmoid(extreme.double())) / len(extreme)
    if not _close(grad, want_g, rtol=1e-4, atol=1e-7):
        ctx.fail(f"the gradient with respect to the logits should be -(1 - sigmoid(l)) / N = {_fmt(want_g)}, "
                 f"got {_fmt(grad)}; it must not vanish for rejected samples (very negative logits).")
    ctx.passed("softplus(-l).mean(): finite for rejected samples, gradient -(1 - D) / N")


def _jsd_ref(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    m = 0.5 * (p + q)
    return 0.5 * (torch.xlogy(p, p) - torch.xlogy(p, m)).sum(-1) + 0.5 * (torch.xlogy(q, q) - torch.xlogy(q, m)).sum(-1)


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
    ctx = _Ctx("jsd_discrete", fn, seed)
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
    ref = _jsd_ref(p, q)
    tol = dict(rtol=1e-6, atol=1e-8)
    if not _close(out, ref, **tol):
        m = 0.5 * (p + q)
        kl_pm = (torch.xlogy(p, p) - torch.xlogy(p, m)).sum(-1)
        kl_qm = (torch.xlogy(q, q) - torch.xlogy(q, m)).sum(-1)
        cands = {
            "these are bits: the course works in nats (natural log); divide by ln 2 only to convert.":
                ref / math.log(2),
            "the factor 1/2 is missing: JSD = (KL(p||m) + KL(q||m)) / 2.": 2 * ref,
            "only KL(p || m) is there: add KL(q || m) and halve the sum.": kl_pm,
            "only half of KL(p || m): add the second term 1/2 KL(q || m).": 0.5 * kl_pm,
            "only KL(q || m) is there: add KL(p || m) and halve the sum.": kl_qm,
        }
        hint = _diagnose(out, cands, **tol)
        if hint is None and not bool(torch.isfinite(out.detach()).all()):
            hint = ("your result is not finite. Entries with p_i = 0 contribute 0 (0 log 0 = 0): use "
                    "torch.xlogy(p, p / m) or torch.where, not p * torch.log(p / m).")
        hint = hint or "expected 1/2 KL(p || m) + 1/2 KL(q || m) with m = (p + q) / 2, in nats."
        i = _first_bad(out, ref, **tol)
        ctx.fail(f"wrong values: {hint}\n  e.g. p = {_fmt(p[i])}, q = {_fmt(q[i])}:\n  expected "
                 f"{float(ref[i]):.6f}, got {float(out.detach().reshape(-1)[i]):.6f}")
    swapped = ctx.call(q, p)
    if not _close(swapped, ref, **tol):
        ctx.fail("JSD must be symmetric, JSD(p, q) = JSD(q, p); your function gives different values when the "
                 "arguments are swapped.")
    same = ctx.call(p, p.clone())
    if not _close(same, torch.zeros(n, dtype=torch.float64), 0, 1e-10):
        extra = (" Where p_i = q_i = 0, also m_i = 0 and p_i / m_i = 0 / 0 = NaN: use "
                 "torch.xlogy(p, p) - torch.xlogy(p, m), which is 0 there.") if not bool(
            torch.isfinite(same.detach()).all()) else ""
        ctx.fail(f"JSD(p, p) must be 0; got {_fmt(same)}.{extra}")
    disjoint_p = torch.tensor([[0.5, 0.5, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    disjoint_q = torch.tensor([[0.0, 0.0, 0.3, 0.7], [0.0, 0.0, 0.0, 1.0]], dtype=torch.float64)
    dis = ctx.call(disjoint_p, disjoint_q)
    if not _close(dis, torch.full((2,), math.log(2), dtype=torch.float64), 0, 1e-10):
        ctx.fail(f"for distributions with disjoint supports JSD = log 2 = {math.log(2):.6f} nats (its maximum); "
                 f"got {_fmt(dis)}. Zero entries must contribute 0 (0 log 0 = 0).")
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
    from .gan import mode_coverage

    ctx = _Ctx("mode_counts", fn, seed)
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
