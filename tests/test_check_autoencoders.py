"""Tests for the chapter 03 (autoencoders) checkers in coursekit.check.autoencoders: correct solutions pass, stubs
and plausible mistakes fail with a message that names the mistake."""

import math

import pytest
import torch

import coursekit as ck
from coursekit.check.autoencoders import kl_sparsity, mixture_denoiser, sigmoid_contractive_penalty

from _helpers import assert_fails, assert_fresh_inputs_and_seeded, stub


# ----------------------------------------------------------------------------- sigmoid_contractive_penalty
def contractive_ok(w, b, x):
    h = torch.sigmoid(x @ w.T + b)
    return ((h * (1 - h)) ** 2 * (w**2).sum(1)).sum(-1)


def contractive_by_autograd(w, b, x):  # an independent correct route: explicit per-example Jacobians
    rows = [torch.autograd.functional.jacobian(lambda v: torch.sigmoid(w @ v + b), xi) for xi in x]
    return torch.stack([(j**2).sum() for j in rows])


@pytest.mark.parametrize("fn", [contractive_ok, contractive_by_autograd])
def test_contractive_correct_passes(fn, capsys):
    for _ in range(3):
        sigmoid_contractive_penalty(fn)
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 3 and all(line.startswith("✓ sigmoid_contractive_penalty passed") for line in out)


def test_contractive_fresh_inputs_and_seed():
    assert_fresh_inputs_and_seeded(sigmoid_contractive_penalty, contractive_ok, seed=3)


def _h(w, b, x):
    return torch.sigmoid(x @ w.T + b)


@pytest.mark.parametrize(
    "fn, patterns",
    [
        (stub, ["not implemented yet"]),
        (lambda w, b, x: (_h(w, b, x) * (1 - _h(w, b, x))) @ (w**2).sum(1), ["SQUARED"]),
        (lambda w, b, x: _h(w, b, x) ** 2 @ (w**2).sum(1), ["h(1 - h), not h"]),
        (lambda w, b, x: (_h(w, b, x) * (1 - _h(w, b, x))) ** 2 @ w.abs().sum(1), ["weights enter squared"]),
        (lambda w, b, x: contractive_ok(w, b, x).sqrt(), ["square root"]),
        (lambda w, b, x: contractive_ok(w, 0 * b, x), ["bias"]),
        (lambda w, b, x: contractive_ok(w, b, x).mean(), ["got ()", "one value per example"]),
        (lambda w, b, x: (_h(w, b, x) * (1 - _h(w, b, x))) ** 2 * (w**2).sum(1), ["got (6, 3)", "sum over the k"]),
        (lambda w, b, x: (_h(w, b, x) * (1 - _h(w, b, x))) ** 2 @ (w**2).sum(0), ["raised RuntimeError"]),
        (lambda w, b, x: contractive_ok(w, b, x) + 0.1, ["wrong values", "failing row", "torch.func"]),
    ],
)
def test_contractive_wrong_fails_helpfully(fn, patterns):
    msg = assert_fails(sigmoid_contractive_penalty, fn, *patterns)
    if fn is not stub:
        assert "seed=" in msg


def test_contractive_saturation_check():
    # right on moderate inputs, but a floor of 1e-3 per unit never lets saturated units switch off
    def fn(w, b, x):
        h = _h(w, b, x)
        return (((h * (1 - h)).clamp_min(1e-3)) ** 2 * (w**2).sum(1)).sum(-1)

    # either the first comparison or the saturation check must catch it
    assert_fails(sigmoid_contractive_penalty, fn, "sigmoid_contractive_penalty")


# ----------------------------------------------------------------------------- kl_sparsity
def kl_ok(h, rho):
    rh = h.mean(0)
    return (rho * torch.log(rho / rh) + (1 - rho) * torch.log((1 - rho) / (1 - rh))).sum()


def kl_with_distributions(h, rho):
    p = torch.distributions.Bernoulli(probs=torch.full_like(h[0], rho))
    q = torch.distributions.Bernoulli(probs=h.mean(0).clamp(1e-6, 1 - 1e-6))
    return torch.distributions.kl_divergence(p, q).sum()


@pytest.mark.parametrize("fn", [kl_ok, kl_with_distributions])
def test_kl_correct_passes(fn, capsys):
    kl_sparsity(fn)
    assert capsys.readouterr().out.startswith("✓ kl_sparsity passed")


def test_kl_fresh_inputs_and_seed():
    assert_fresh_inputs_and_seeded(kl_sparsity, kl_ok, seed=4)


def _rev(h, rho):
    rh = h.mean(0)
    return (rh * torch.log(rh / rho) + (1 - rh) * torch.log((1 - rh) / (1 - rho))).sum()


@pytest.mark.parametrize(
    "fn, patterns",
    [
        (stub, ["not implemented yet"]),
        (_rev, ["reversed"]),
        (lambda h, rho: (rho * torch.log(rho / h) + (1 - rho) * torch.log((1 - rho) / (1 - h))).sum(1).mean(),
         ["MEAN activation"]),
        (lambda h, rho: kl_ok(h, rho) / h.shape[1], ["don't average"]),
        (lambda h, rho: (rho * torch.log(rho / h.mean(0))).sum(), ["second term"]),
        (lambda h, rho: kl_ok(h, rho) / math.log(2), ["natural log"]),
        (lambda h, rho: (rho * torch.log(rho / h) + (1 - rho) * torch.log((1 - rho) / (1 - h))).sum(1),
         ["one value per example", "average h over the batch FIRST"]),
        (lambda h, rho: rho * torch.log(rho / h.mean(0)) + (1 - rho) * torch.log((1 - rho) / (1 - h.mean(0))),
         ["one value per unit"]),
        (lambda h, rho: kl_ok(h, rho) + 0.01, ["wrong value", "expected"]),
    ],
)
def test_kl_wrong_fails_helpfully(fn, patterns):
    msg = assert_fails(kl_sparsity, fn, *patterns)
    if fn is not stub:
        assert "seed=" in msg


# ----------------------------------------------------------------------------- mixture_denoiser
def denoiser_ok(x, means, stds, weights, sigma):
    return ck.autoencoders.mixture_posterior_mean(x, means, stds, weights, sigma)


def denoiser_by_tweedie(x, means, stds, weights, sigma):
    return x + sigma**2 * ck.mixtures.gaussian_mixture_score(x, means, stds, weights, sigma)


@pytest.mark.parametrize("fn", [denoiser_ok, denoiser_by_tweedie])
def test_denoiser_correct_passes(fn, capsys):
    mixture_denoiser(fn)
    assert capsys.readouterr().out.startswith("✓ mixture_denoiser passed")


def test_denoiser_fresh_inputs_and_seed():
    assert_fresh_inputs_and_seeded(mixture_denoiser, denoiser_ok, seed=6)


def _parts(x, means, stds, weights, sigma):
    var = stds**2 + sigma**2
    sq = ((x[:, None, :] - means[None]) ** 2).sum(-1)
    log_r = torch.log(weights)[None] - 0.5 * sq / var[None] - x.shape[1] * 0.5 * torch.log(var)[None]
    post = (stds[None, :, None] ** 2 * x[:, None] + sigma**2 * means[None]) / var[None, :, None]
    return var, sq, log_r, post


def clean_responsibilities(x, means, stds, weights, sigma):
    _, sq, _, post = _parts(x, means, stds, weights, sigma)
    r = torch.softmax(torch.log(weights)[None] - 0.5 * sq / stds[None] ** 2 - x.shape[1] * torch.log(stds)[None], 1)
    return (r[:, :, None] * post).sum(1)


def prior_weights(x, means, stds, weights, sigma):
    _, _, _, post = _parts(x, means, stds, weights, sigma)
    return (weights[None, :, None] * post).sum(1)


def naive_densities(x, means, stds, weights, sigma):  # right formula, but exp() of tiny log-densities
    _, _, log_r, post = _parts(x, means, stds, weights, sigma)
    dens = torch.exp(log_r)
    return ((dens / dens.sum(1, keepdim=True))[:, :, None] * post).sum(1)


@pytest.mark.parametrize(
    "fn, patterns",
    [
        (stub, ["not implemented yet"]),
        (clean_responsibilities, ["NOISY density"]),
        (prior_weights, ["posterior responsibilities"]),
        (lambda x, m, s, w, sg: ck.mixtures.gaussian_mixture_score(x, m, s, w, sg), ["that is the score"]),
        (lambda x, m, s, w, sg: x + sg * ck.mixtures.gaussian_mixture_score(x, m, s, w, sg), ["sigma^2, not sigma"]),
        (lambda x, m, s, w, sg: x - sg**2 * ck.mixtures.gaussian_mixture_score(x, m, s, w, sg), ["sign"]),
        (naive_densities, ["40 units away", "softmax"]),
        (lambda x, m, s, w, sg: denoiser_ok(x, m, s, w, sg)[:, :1], ["shape (8, 2)"]),
    ],
)
def test_denoiser_wrong_fails_helpfully(fn, patterns):
    msg = assert_fails(mixture_denoiser, fn, *patterns)
    if fn is not stub:
        assert "seed=" in msg


def test_swapped_posterior_mean_is_named():
    def swapped(x, means, stds, weights, sigma):
        var, _, log_r, _ = _parts(x, means, stds, weights, sigma)
        post = (sigma**2 * x[:, None] + stds[None, :, None] ** 2 * means[None]) / var[None, :, None]
        return (torch.softmax(log_r, 1)[:, :, None] * post).sum(1)

    assert_fails(mixture_denoiser, swapped, "weight of the signal variance")


def test_checkers_are_re_exported():
    for name in ("sigmoid_contractive_penalty", "kl_sparsity", "mixture_denoiser"):
        assert getattr(ck.check, name) is getattr(ck.check.autoencoders, name)
        assert name in ck.check.__all__
