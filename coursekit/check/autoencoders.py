"""Checkers for chapter 03 (autoencoders): the contractive penalty of a sigmoid layer in closed form, the KL
sparsity penalty on mean activations, and the optimal denoiser of a Gaussian mixture (Tweedie's formula)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..autoencoders import jacobian_frobenius_sq, kl_sparsity_penalty, mixture_posterior_mean
from ..mixtures import gaussian_mixture_score
from ._harness import Ctx, close, first_bad, fmt, hint_for

__all__ = ["sigmoid_contractive_penalty", "kl_sparsity", "mixture_denoiser"]


# --------------------------------------------------------------------------- exercise 1: contractive penalty
def _contractive_candidates(w, b, x) -> dict[str, torch.Tensor]:
    h = torch.sigmoid(x @ w.T + b)
    d = h * (1 - h)
    row = (w**2).sum(1)
    ref = d**2 @ row
    return {
        "the factor h(1 - h) must be SQUARED: the Jacobian's row j is h_j(1 - h_j) W_j, and its squared norm is "
        "(h_j(1 - h_j))^2 ||W_j||^2.": d @ row,
        "sigmoid'(a) = h(1 - h), not h: you used the activation itself as its derivative.": h**2 @ row,
        "the weights enter squared: ||W_j||^2 = sum_i W_ji^2, not sum_i |W_ji|.": d**2 @ w.abs().sum(1),
        "that is the Frobenius norm, not its square: drop the square root.": ref.sqrt(),
        "the derivative factor must be evaluated at the pre-activation, sigmoid(Wx + b)(1 - sigmoid(Wx + b)); "
        "it looks like you left out the bias b.": (torch.sigmoid(x @ w.T) * (1 - torch.sigmoid(x @ w.T))) ** 2 @ row,
    }


def sigmoid_contractive_penalty(fn: Callable, *, seed: int | None = None) -> None:
    r"""Check ``fn(W, b, x) -> ||J(x)||_F^2`` per example for the layer ``h = sigmoid(x @ W.T + b)``.

    Expected: ``sum_j (h_j (1 - h_j))**2 * sum_i W_ji**2``, shape ``(N,)`` (the closed form of Rifai et al. 2011).
    Inputs: float32 ``W`` (k, D), ``b`` (k,), ``x`` (N, D) with k != D. The reference is the Jacobian computed by
    ``torch.func`` (:func:`coursekit.autoencoders.jacobian_frobenius_sq`); hints for a missing square, the
    wrong sigmoid derivative, unsquared weights and a square root.

    Args:
        fn: the student's function. seed: optional seed for reproducible inputs.

    Raises:
        AssertionError: with an explanation when a check fails or ``fn`` is a stub.
    """
    ctx = Ctx("sigmoid_contractive_penalty", fn, seed)
    n, d, k = 6, 5, 3
    w, b, x = ctx.randn(k, d), ctx.randn(k), ctx.randn(n, d)
    out = ctx.call(w, b, x)
    if out.shape != (n,):
        hint = ("you averaged or summed over the batch: return one value per example." if out.ndim == 0 else
                "you returned one term per unit: sum over the k units as well." if tuple(out.shape) == (n, k) else
                "return one squared Frobenius norm per row of x.")
        ctx.fail(f"expected output shape ({n},) for x of shape ({n}, {d}), got {tuple(out.shape)}: {hint}")
    w64, b64, x64 = w.double(), b.double(), x.double()
    ref = jacobian_frobenius_sq(lambda v: torch.sigmoid(v @ w64.T + b64), x64)
    tol = {"rtol": 1e-4, "atol": 1e-6}
    if not close(out, ref, **tol):
        i = first_bad(out, ref, **tol)
        hint = hint_for(out, _contractive_candidates(w64, b64, x64), **tol, not_finite="your values are not finite.",
                        default="expected sum_j (h_j (1 - h_j))^2 * sum_i W_ji^2 with h = sigmoid(x @ W.T + b).")
        ctx.fail(f"wrong values: {hint}\n  failing row {i}: x = {fmt(x[i])}\n"
                 f"  expected {float(ref[i]):.6f} (the Jacobian by torch.func), got {float(out[i].detach()):.6f}")
    # saturated units contribute nothing: a large bias drives h to 0 or 1
    big = torch.full((k,), 30.0)
    sat = ctx.call(w, big, x)
    if not close(sat, torch.zeros(n, dtype=torch.float64), 0.0, 1e-8):
        ctx.fail(f"with every unit saturated (b = 30, h ~ 1) the Jacobian is ~0, got {fmt(sat)}")
    ctx.passed("matches the torch.func Jacobian; saturated units give ~0")


# --------------------------------------------------------------------------- exercise 2: KL sparsity
def _kl_candidates(h, rho) -> dict[str, torch.Tensor]:
    rh = h.mean(0)
    per_example = (rho * torch.log(rho / h) + (1 - rho) * torch.log((1 - rho) / (1 - h))).sum(1).mean()
    ref = rho * torch.log(rho / rh) + (1 - rho) * torch.log((1 - rho) / (1 - rh))
    rev = rh * torch.log(rh / rho) + (1 - rh) * torch.log((1 - rh) / (1 - rho))
    return {
        "the KL is reversed: the penalty is KL(Bern(rho) || Bern(rho_hat_j)) = rho log(rho / rho_hat) + "
        "(1 - rho) log((1 - rho) / (1 - rho_hat)), with the target rho first.": rev.sum(),
        "you penalised each example's activation: the penalty is on each unit's MEAN activation over the batch, "
        "rho_hat_j = h[:, j].mean(), computed before the KL.": per_example,
        "sum the KL over the k units, don't average it.": ref.mean(),
        "the second term (1 - rho) log((1 - rho) / (1 - rho_hat)) is missing.": (rho * torch.log(rho / rh)).sum(),
        "use the natural log (nats), not log2.": ref.sum() / torch.log(torch.tensor(2.0, dtype=torch.float64)),
    }


def kl_sparsity(fn: Callable, *, seed: int | None = None) -> None:
    r"""Check ``fn(h, rho) -> sum_j KL(Bern(rho) || Bern(rho_hat_j))`` with ``rho_hat_j = h[:, j].mean()``.

    Expected: a 0-d tensor in nats (Ng 2011, sec. 3), compared with
    :func:`coursekit.autoencoders.kl_sparsity_penalty` on codes ``h`` in (0, 1) of shape (N, k) and a float
    ``rho``; zero when every unit's mean activation is rho. Hints for the reversed KL, a per-example penalty,
    averaging over units, a missing term and log base 2.

    Args:
        fn: the student's function. seed: optional seed for reproducible inputs.

    Raises:
        AssertionError: with an explanation when a check fails or ``fn`` is a stub.
    """
    ctx = Ctx("kl_sparsity", fn, seed)
    n, k = 20, 6
    h = ctx.uniform(0.02, 0.6, n, k)
    rho = float(ctx.uniform(0.03, 0.2, 1))
    orig = ctx.fn
    ctx.fn = lambda a: orig(a, rho)
    out = ctx.call(h, what=f" and rho={rho:.4f}")
    if out.numel() != 1:
        hint = ("you returned one value per unit: sum over the units." if tuple(out.shape) == (k,) else
                "you returned one value per example: average h over the batch FIRST (rho_hat_j = h[:, j].mean()), "
                "then sum the KL over units." if tuple(out.shape) == (n,) else "return a single number.")
        ctx.fail(f"expected a scalar (0-d tensor), got shape {tuple(out.shape)}: {hint}")
    h64 = h.double()
    ref = kl_sparsity_penalty(h64, rho)
    tol = {"rtol": 1e-4, "atol": 1e-6}
    got = out.reshape(())
    if not close(got, ref, **tol):
        hint = hint_for(got, _kl_candidates(h64, rho), **tol, not_finite="your value is not finite.",
                        default="expected sum_j [rho log(rho / rho_hat_j) + (1 - rho) log((1 - rho) / "
                                "(1 - rho_hat_j))] with rho_hat_j = h[:, j].mean().")
        ctx.fail(f"wrong value: {hint}\n  rho = {rho:.4f}, mean activations rho_hat = {fmt(h.mean(0))}\n"
                 f"  expected {float(ref):.6f}, got {float(got.detach()):.6f}")
    at_target = torch.where(torch.arange(n)[:, None] < 2, 1.0, 0.0).expand(n, k).float()  # mean 0.1 in every unit
    ctx.fn = lambda a: orig(a, 0.1)
    zero = ctx.call(at_target, what=" and rho=0.1")
    if not close(zero.reshape(()), torch.zeros((), dtype=torch.float64), 0.0, 1e-5):
        ctx.fail("codes that are 1 for 2 of 20 examples and 0 otherwise have mean activation 0.1 in every unit, so "
                 f"the penalty with rho = 0.1 must be 0; got {float(zero.detach().reshape(())):.6f}. Average over "
                 "the batch before taking logs (and clamp rho_hat away from 0 and 1 if you need to).")
    ctx.passed("matches sum_j KL(rho || rho_hat_j) and is 0 at the target rate")


# --------------------------------------------------------------------------- exercise 3: the optimal denoiser
def _denoiser_candidates(x, means, stds, w, sigma) -> dict[str, torch.Tensor]:
    var = stds**2 + sigma**2
    sq = ((x[:, None, :] - means[None]) ** 2).sum(-1)
    dim = x.shape[1]
    log_clean = torch.log(w)[None] - 0.5 * sq / stds[None] ** 2 - dim * torch.log(stds)[None]
    r_clean = torch.softmax(log_clean, 1)
    post = (stds[None, :, None] ** 2 * x[:, None] + sigma**2 * means[None]) / var[None, :, None]  # (N, K, D)
    swapped = (sigma**2 * x[:, None] + stds[None, :, None] ** 2 * means[None]) / var[None, :, None]
    score = gaussian_mixture_score(x, means, stds, w, sigma)
    ref = mixture_posterior_mean(x, means, stds, w, sigma)
    log_noisy = torch.log(w)[None] - 0.5 * sq / var[None] - dim * 0.5 * torch.log(var)[None]
    r = torch.softmax(log_noisy, 1)
    return {
        "the responsibilities must use the NOISY density: component k has variance s_k^2 + sigma^2 around mu_k "
        "for x_tilde, not s_k^2.": (r_clean[:, :, None] * post).sum(1),
        "weight the components by their posterior responsibilities r_k(x_tilde), not by the prior weights w_k.":
            (w[None, :, None] * post).sum(1),
        "within a component the posterior mean is (s_k^2 x_tilde + sigma^2 mu_k) / (s_k^2 + sigma^2): the noisy "
        "point gets the weight of the signal variance s_k^2.": (r[:, :, None] * swapped).sum(1),
        "that is the score of q_sigma; the denoiser is x_tilde + sigma^2 * score.": score,
        "Tweedie's formula has sigma^2, not sigma: E[x | x_tilde] = x_tilde + sigma^2 grad log q_sigma(x_tilde).":
            x + sigma * score,
        "the sign is flipped: the denoiser moves x_tilde UP the score, x_tilde + sigma^2 * score.": 2 * x - ref,
    }


def mixture_denoiser(fn: Callable, *, seed: int | None = None) -> None:
    r"""Check ``fn(x_noisy, means, stds, weights, sigma) -> E[x | x_noisy]`` for
    :math:`x \sim \sum_k w_k \mathcal N(\mu_k, s_k^2 I)`, :math:`\tilde x = x + \sigma\varepsilon`.

    Expected: ``sum_k r_k(x~) (s_k^2 x~ + sigma^2 mu_k) / (s_k^2 + sigma^2)`` with the responsibilities under the
    noisy mixture, shape (N, D). Inputs: float32 ``x_noisy`` (N, 2), ``means`` (K, 2), ``stds`` (K,),
    ``weights`` (K,) summing to 1, a float ``sigma``. The result must equal Tweedie's
    ``x~ + sigma^2 * grad log q_sigma(x~)`` (:func:`coursekit.mixtures.gaussian_mixture_score`); hints for
    clean-density responsibilities, prior weights, a swapped posterior mean, returning the score, sigma for
    sigma^2 and a flipped sign. Also checked: sigma -> 0 returns x~.

    Args:
        fn: the student's function. seed: optional seed for reproducible inputs.

    Raises:
        AssertionError: with an explanation when a check fails or ``fn`` is a stub.
    """
    ctx = Ctx("mixture_denoiser", fn, seed)
    n, dim, n_comp = 8, 2, 3
    means = 2.0 * ctx.randn(n_comp, dim)
    stds = ctx.uniform(0.3, 0.8, n_comp)
    w = ctx.uniform(0.2, 1.0, n_comp)
    w = w / w.sum()
    x = 1.5 * ctx.randn(n, dim)
    # three points between pairs of means, where the responsibilities are mixed: there the noisy and the clean
    # mixture's responsibilities differ whatever the draw (near a single mode both are one-hot)
    x[:3] = 0.5 * (means[[0, 1, 0]] + means[[1, 2, 2]]) + 0.1 * ctx.randn(3, dim)
    sigma = float(ctx.uniform(0.3, 0.9, 1))
    orig = ctx.fn
    ctx.fn = lambda a, m, s, wt: orig(a, m, s, wt, sigma)
    out = ctx.call(x, means, stds, w, what=f" and sigma={sigma:.4f}")
    if out.shape != (n, dim):
        ctx.fail(f"expected one denoised point per row of x_noisy, shape ({n}, {dim}), got {tuple(out.shape)}")
    x64, m64, s64, w64 = x.double(), means.double(), stds.double(), w.double()
    ref = x64 + sigma**2 * gaussian_mixture_score(x64, m64, s64, w64, sigma)
    tol = {"rtol": 1e-4, "atol": 1e-5}
    if not close(out, ref, **tol):
        i = first_bad(out, ref, **tol)
        hint = hint_for(out, _denoiser_candidates(x64, m64, s64, w64, sigma), **tol,
                        not_finite="your values are not finite: compute the responsibilities with a softmax of log "
                                   "terms (log-sum-exp), not by dividing tiny densities.",
                        default="expected sum_k r_k(x~) (s_k^2 x~ + sigma^2 mu_k) / (s_k^2 + sigma^2).")
        ctx.fail(f"wrong values: {hint}\n  sigma = {sigma:.4f}, failing row {i}: x_noisy = {fmt(x[i])}\n"
                 f"  expected {fmt(ref[i])} (= x~ + sigma^2 * score), got {fmt(out[i])}")
    far = ctx.call(x + 40.0, means, stds, w, what=f" and sigma={sigma:.4f}, far from every mean")
    ref_far = mixture_posterior_mean((x + 40.0).double(), m64, s64, w64, sigma)
    if not close(far, ref_far, rtol=1e-3, atol=1e-3):
        ctx.fail("correct near the modes but wrong (or not finite) 40 units away from them: the densities "
                 "underflow there; form the responsibilities from log-densities with torch.softmax / logsumexp.")
    ctx.fn = lambda a, m, s, wt: orig(a, m, s, wt, 1e-4)
    tiny = ctx.call(x, means, stds, w, what=" and sigma=1e-4")
    if not close(tiny, x.double(), 1e-4, 1e-4):
        ctx.fail("with almost no noise (sigma = 1e-4) the best denoiser returns x_noisy itself; got "
                 f"{fmt(tiny[0])} for x_noisy = {fmt(x[0])}")
    ctx.passed("equals Tweedie's x~ + sigma^2 * score of the noisy mixture, also far from the modes")
