"""Tests for the chapter 04 (VAE) checkers in coursekit.check.vae: correct solutions pass, stubs and plausible
mistakes fail with a message that names the mistake."""

import math

import numpy as np
import pytest
import torch

from coursekit.check.vae import free_bits_kl, iwae_from_log_weights, kl_std_normal, reparameterise

from _helpers import assert_fails, assert_fresh_inputs_and_seeded, stub


# ----------------------------------------------------------------------------- kl_std_normal
def kl_ok(mu, logvar):
    return 0.5 * (logvar.exp() + mu**2 - 1 - logvar).sum(-1)


def kl_ok_kw(mu, logvar):  # the Kingma & Welling form
    return -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=1)


@pytest.mark.parametrize("fn", [kl_ok, kl_ok_kw])
def test_kl_correct_passes_with_one_line(fn, capsys):
    for _ in range(3):  # fresh random inputs each call
        kl_std_normal(fn)
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 3 and all(line.startswith("✓ kl_std_normal passed") for line in out)


def test_kl_uses_fresh_inputs_and_seed_reproduces():
    assert_fresh_inputs_and_seeded(kl_std_normal, kl_ok, seed=5)


def test_checker_leaves_global_rng_alone():
    torch.manual_seed(0)
    a = torch.rand(3)
    torch.manual_seed(0)
    kl_std_normal(kl_ok)
    assert torch.equal(torch.rand(3), a)


@pytest.mark.parametrize(
    "fn, patterns",
    [
        (stub, ["not implemented yet"]),
        (lambda mu, lv: -kl_ok(mu, lv), ["sign", ">= 0"]),
        (lambda mu, lv: 0.5 * (torch.exp(2 * lv) + mu**2 - 1 - 2 * lv).sum(-1), ["log(sigma)", "log-variance"]),
        (lambda mu, lv: 0.5 * (torch.exp(0.5 * lv) + mu**2 - 1 - lv).sum(-1), ["variance sigma^2 = exp(logvar)"]),
        (lambda mu, lv: 0.5 * (lv.exp() + mu**2 - 1 - 0.5 * lv).sum(-1), ["log(sigma^2) = logvar"]),
        (lambda mu, lv: (lv.exp() + mu**2 - 1 - lv).sum(-1), ["factor 1/2"]),
        (lambda mu, lv: 0.5 * (lv.exp() + mu**2 - 1 - lv).mean(-1), ["sum over the latent dimension"]),
        (lambda mu, lv: 0.5 * (lv.exp() + mu**2 - lv).sum(-1), ["-1"]),
        (lambda mu, lv: 0.5 * (lv.exp() - 1 - lv).sum(-1), ["mu^2 term"]),
        (lambda mu, lv: 0.5 * (lv.exp() + mu**2 - 1 - lv), ["expected output shape (6,)", "got (6, 3)", "dim=-1"]),
        (lambda mu, lv: 0.5 * (lv.exp() + mu**2 - 1 - lv).sum(), ["got ()", "one KL per example"]),
        (lambda mu, lv: 0.5 * (lv.exp() + mu**2 - 1 - lv).sum(-1, keepdim=True), ["keepdim"]),
        (lambda mu, lv: 0.5 * (lv.exp() + mu**2 - 1 - lv).sum(0), ["dim=0"]),
        (lambda mu, lv: kl_ok(mu, lv).numpy(), ["torch.Tensor", "ndarray"]),
        (lambda mu, lv: 0.5 * (lv.exp_() + mu**2 - 1).sum(-1), ["in place"]),
        (lambda mu, lv: mu @ lv, ["raised RuntimeError", "(6, 3)"]),
        # an unrecognised mistake: generic message with the failing input and both values
        (lambda mu, lv: 0.5 * (lv.exp() + mu.abs() - 1 - lv).sum(-1),
         ["wrong values", "failing input", "mu =", "expected"]),
    ],
)
def test_kl_wrong_implementations_fail_helpfully(fn, patterns):
    msg = assert_fails(kl_std_normal, fn, *patterns)
    if fn is not stub:
        assert "seed=" in msg


def test_kl_fails_only_on_wide_range():
    # right for small inputs, clamps large variances: caught by the wide-range check
    def fn(mu, lv):
        return 0.5 * (lv.clamp(max=2.0).exp() + mu**2 - 1 - lv).sum(-1)

    assert_fails(kl_std_normal, fn, "wider range", "failing input")


# ----------------------------------------------------------------------------- reparameterise
def rep_ok(mu, logvar, eps):
    return mu + torch.exp(0.5 * logvar) * eps


def test_reparameterise_correct_passes(capsys):
    reparameterise(rep_ok)
    reparameterise(lambda mu, lv, eps: mu + torch.sqrt(lv.exp()) * eps)
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 2 and all(line.startswith("✓ reparameterise passed") for line in out)


@pytest.mark.parametrize(
    "fn, patterns",
    [
        (stub, ["not implemented yet"]),
        (lambda mu, lv, eps: mu + torch.exp(lv) * eps, ["variance exp(logvar)", "standard deviation"]),
        (lambda mu, lv, eps: mu + lv * eps, ["exponentiate"]),
        (lambda mu, lv, eps: mu + 0.5 * lv * eps, ["0.5 * logvar is log(sigma)"]),
        (lambda mu, lv, eps: mu - torch.exp(0.5 * lv) * eps, ["plus sign"]),
        (lambda mu, lv, eps: torch.exp(0.5 * lv) * eps, ["add the mean"]),
        (lambda mu, lv, eps: mu + eps, ["scale the noise"]),
        (lambda mu, lv, eps: mu + torch.exp(0.5 * lv) * torch.randn_like(mu), ["draws its own noise", "eps"]),
        (lambda mu, lv, eps: (mu + torch.exp(0.5 * lv) * eps).detach(), ["not connected", "detach"]),
        (lambda mu, lv, eps: torch.from_numpy(mu.detach().numpy() + np.exp(0.5 * lv.detach().numpy()) * eps.numpy()),
         ["not connected"]),
        (lambda mu, lv, eps: mu.detach() + torch.exp(0.5 * lv) * eps, ["no gradient reaches mu"]),
        (lambda mu, lv, eps: (mu + torch.exp(0.5 * lv) * eps).sum(-1), ["expected z with the shape of mu"]),
        # right value, wrong gradient (the straight-through trick applied to the noise scale)
        (lambda mu, lv, eps: mu + (torch.exp(0.5 * lv) * eps).detach() + lv - lv.detach(),
         ["gradient with respect to logvar", "0.5 * sigma * eps"]),
        (lambda mu, lv, eps: [mu + torch.exp(0.5 * lv) * eps], ["torch.Tensor", "list"]),
    ],
)
def test_reparameterise_wrong_implementations_fail_helpfully(fn, patterns):
    assert_fails(reparameterise, fn, *patterns)


def test_reparameterise_wrong_moments_are_caught():
    # exact on the first (small) inputs but ignores eps for large batches: only the moment check sees it
    def fn(mu, lv, eps):
        if mu.shape[0] > 100:
            return mu + torch.exp(0.5 * lv) * eps * 1.2
        return mu + torch.exp(0.5 * lv) * eps

    assert_fails(reparameterise, fn, "wrong moments", "variance")


# ----------------------------------------------------------------------------- iwae_from_log_weights
def iw_ok(log_w):
    return torch.logsumexp(log_w, dim=0) - math.log(log_w.shape[0])


def iw_manual_max(log_w):
    m = log_w.max(0).values
    return m + torch.log(torch.exp(log_w - m).mean(0))


def test_iwae_correct_passes(capsys):
    iwae_from_log_weights(iw_ok)
    iwae_from_log_weights(iw_manual_max)
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 2 and all(line.startswith("✓ iwae_from_log_weights passed") for line in out)


@pytest.mark.parametrize(
    "fn, patterns",
    [
        (stub, ["not implemented yet"]),
        (lambda lw: torch.log(torch.exp(lw).mean(0)), ["around -1000", "underflows", "logsumexp", "failing input"]),
        (lambda lw: torch.log(torch.exp(lw.double()).mean(0)).float(), ["underflows", "float64"]),
        # naive but guarded against underflow only: overflow at +1000 still caught
        (lambda lw: (torch.log(torch.exp(lw.double() + 700).mean(0)) - 700).float(), ["around +1000", "overflows"]),
        (lambda lw: torch.log(torch.exp(lw + 100).mean(0)) - 100, ["inf or nan", "overflow"]),
        (lambda lw: torch.logsumexp(lw, 0), ["forgot the 1/k", "log(k)"]),
        (lambda lw: torch.logsumexp(lw, 0) + math.log(lw.shape[0]), ["wrong sign"]),
        (lambda lw: lw.mean(0), ["averaged the log weights", "ELBO"]),
        (lambda lw: lw.max(0).values, ["largest log weight"]),
        (lambda lw: torch.logsumexp(lw, 1) - math.log(lw.shape[1]),
         ["expected output shape (4,)", "got (7,)", "dim 0"]),
        (lambda lw: torch.logsumexp(lw.reshape(-1), 0), ["got ()", "one estimate per example"]),
        (lambda lw: torch.logsumexp(lw, 0, keepdim=True) - math.log(lw.shape[0]), ["keepdim"]),
        (lambda lw: torch.logsumexp(lw, 0) - math.log(lw.shape[0] + 1), ["wrong values", "failing input", "expected"]),
        (lambda lw: (torch.logsumexp(lw, 0) - math.log(lw.shape[0])).tolist(), ["torch.Tensor", "list"]),
    ],
)
def test_iwae_wrong_implementations_fail_helpfully(fn, patterns):
    assert_fails(iwae_from_log_weights, fn, *patterns)


def test_iwae_k1_check():
    # right for k > 1 but special-cases k = 1 wrongly
    def fn(lw):
        return iw_ok(lw) if lw.shape[0] > 1 else lw[0] - 1.0

    assert_fails(iwae_from_log_weights, fn, "k = 1", "single log weight")


def test_checker_rejects_non_callable():
    with pytest.raises(TypeError, match="expects your function"):
        kl_std_normal(None)


# ----------------------------------------------------------------------------- free_bits_kl


def fb_ok(kl_dims, free_bits):
    return kl_dims.mean(0).clamp_min(free_bits).sum()


def fb_ok_maximum(kl_dims, free_bits):
    return torch.maximum(kl_dims.mean(dim=0), torch.tensor(free_bits)).sum()


def test_free_bits_correct_passes(capsys):
    free_bits_kl(fb_ok)
    free_bits_kl(fb_ok_maximum)
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 2 and all(line.startswith("✓ free_bits_kl passed") for line in out)


@pytest.mark.parametrize(
    "fn, patterns",
    [
        (stub, ["not implemented yet"]),
        (lambda k, lam: k.clamp_min(lam).mean(0).sum(), ["each example", "average"]),
        (lambda k, lam: k.sum(-1).mean().clamp_min(lam), ["per-dimension threshold", "own lambda"]),
        (lambda k, lam: k.sum(-1).mean(), ["ordinary kl term"]),
        (lambda k, lam: k.mean(0).clamp_max(lam).sum(), ["min instead of max"]),
        (lambda k, lam: k.mean(0).clamp_min(lam).mean(), ["averaged over the dimensions"]),
        (lambda k, lam: (k.mean(0) - lam).clamp_min(0).sum(), ["hinge"]),
        (lambda k, lam: k.mean(0).clamp_min(lam), ["one value per dimension"]),
        (lambda k, lam: k.clamp_min(lam).sum(-1), ["one value per example"]),
        (lambda k, lam: torch.tensor(sum(max(lam, float(v)) for v in k.detach().mean(0))), ["not differentiable"]),
        (lambda k, lam: k.mean(0).clamp_min(lam).sum() * 1.1, ["wrong value", "expected"]),
    ],
)
def test_free_bits_wrong_implementations_fail_helpfully(fn, patterns):
    assert_fails(free_bits_kl, fn, *patterns)


def test_free_bits_gradient_check():
    # right values, but the gradient leaks below the threshold (a straight-through trick)
    def leaky(k, lam):
        m = k.mean(0)
        return (m + (m.clamp_min(lam) - m).detach()).sum()

    assert_fails(free_bits_kl, leaky, "gradient 0")


def test_free_bits_fresh_inputs_and_seeded():
    assert_fresh_inputs_and_seeded(free_bits_kl, fb_ok, seed=3)
