"""Tests for the chapter 06 (GAN) checkers in coursekit.check.gan: the notebook's solutions pass on 150 seeds, stubs
and plausible mistakes fail with a message that names the mistake."""

import math

import pytest
import torch
from torch.nn import functional as F

from coursekit.check.gan import jsd_discrete, mode_counts, non_saturating_loss, optimal_discriminator

from _helpers import assert_fails, assert_fresh_inputs_and_seeded, stub


# ----------------------------------------------------------------------------- the notebook's solutions
def od_ok(p_data, p_model):
    return p_data / (p_data + p_model)


def ns_ok(fake_logits):
    return F.softplus(-fake_logits).mean()


def ns_logsigmoid(fake_logits):  # a different but correct way to write it
    return -F.logsigmoid(fake_logits).mean()


def jsd_ok(p, q):
    m = 0.5 * (p + q)
    kl_pm = (torch.xlogy(p, p) - torch.xlogy(p, m)).sum(-1)
    kl_qm = (torch.xlogy(q, q) - torch.xlogy(q, m)).sum(-1)
    return 0.5 * kl_pm + 0.5 * kl_qm


def mc_ok(samples, modes, std):
    dist = torch.cdist(samples, modes)
    d_min, nearest = dist.min(dim=1)
    return torch.bincount(nearest[d_min < 3 * std], minlength=modes.shape[0])


def mc_float(samples, modes, std):  # float counts, a loop over modes: also correct
    nearest = torch.cdist(samples, modes).argmin(1)
    good = (samples - modes[nearest]).norm(dim=1) < 3 * std
    return torch.stack([(good & (nearest == j)).sum().float() for j in range(len(modes))])


CASES = [(optimal_discriminator, od_ok), (non_saturating_loss, ns_ok),
         (non_saturating_loss, ns_logsigmoid), (jsd_discrete, jsd_ok), (mode_counts, mc_ok),
         (mode_counts, mc_float)]


@pytest.mark.parametrize("checker, fn", CASES)
def test_solutions_pass_on_150_seeds(checker, fn, capsys):
    for seed in range(150):
        checker(fn, seed=seed)
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 150 and all(line.startswith("✓ ") for line in out)


@pytest.mark.parametrize("checker", [optimal_discriminator, non_saturating_loss, jsd_discrete,
                                     mode_counts])
def test_stub_says_not_implemented(checker):
    assert_fails(checker, stub, "not implemented yet")


def test_fresh_inputs_and_seed_reproduces():
    assert_fresh_inputs_and_seeded(optimal_discriminator, od_ok, seed=3)


@pytest.mark.parametrize(
    "fn, patterns",
    [
        (lambda p, q: q / (p + q), ["swapped"]),
        (lambda p, q: p / q, ["density ratio"]),
        (lambda p, q: torch.sigmoid(p - q), ["sigmoid"]),
        (lambda p, q: (p / (p + q)).sum(-1), ["elementwise"]),
    ],
)
def test_optimal_discriminator_mistakes(fn, patterns):
    assert_fails(optimal_discriminator, fn, *patterns, seed=0)


@pytest.mark.parametrize(
    "fn, patterns",
    [
        (lambda lg: -F.softplus(lg).mean(), ["minimax"]),
        (lambda lg: -F.softplus(-lg).mean(), ["sign"]),
        (lambda lg: F.softplus(-lg).sum(), ["mean"]),
        (lambda lg: F.softplus(lg).mean(), ["discriminator's loss"]),
        (lambda lg: -torch.log(torch.sigmoid(lg)).mean(), ["softplus", "underflow"]),
        (lambda lg: F.softplus(-lg), ["scalar"]),
        (lambda lg: torch.tensor(F.softplus(-lg).mean().item()), ["differentiable"]),
    ],
)
def test_non_saturating_mistakes(fn, patterns):
    assert_fails(non_saturating_loss, fn, *patterns, seed=0)


@pytest.mark.parametrize(
    "fn, patterns",
    [
        (lambda p, q: jsd_ok(p, q) / math.log(2), ["bits"]),
        (lambda p, q: 2 * jsd_ok(p, q), ["1/2"]),
        (lambda p, q: (torch.xlogy(p, p) - torch.xlogy(p, 0.5 * (p + q))).sum(-1), ["only KL(p || m)"]),
        (lambda p, q: (0.5 * p * torch.log(2 * p / (p + q)) + 0.5 * q * torch.log(2 * q / (p + q))).sum(-1),
         ["0 log 0"]),
        (lambda p, q: jsd_ok(p, q).sum(), ["shape"]),
    ],
)
def test_jsd_mistakes(fn, patterns):
    assert_fails(jsd_discrete, fn, *patterns, seed=0)


def test_jsd_nan_where_both_zero():
    def naive(p, q):  # correct where p > 0 or q > 0, NaN where both are 0
        m = 0.5 * (p + q)
        return 0.5 * torch.xlogy(p, p / m).sum(-1) + 0.5 * torch.xlogy(q, q / m).sum(-1)

    assert_fails(jsd_discrete, naive, "0 / 0", seed=7)


@pytest.mark.parametrize(
    "fn, patterns",
    [
        (lambda s, m, std: torch.bincount(torch.cdist(s, m).argmin(1), minlength=m.shape[0]), ["HIGH-QUALITY"]),
        (lambda s, m, std: mc_ok(s, m, std / 3), ["3 * std"]),
        (lambda s, m, std: mc_ok(s, m, std**2), ["variance"]),
        (lambda s, m, std: mc_ok(s, m, std).float() / s.shape[0], ["shares"]),
        (lambda s, m, std: mc_ok(s, m, std)[:-1], ["one count per mode"]),
    ],
)
def test_mode_counts_mistakes(fn, patterns):
    assert_fails(mode_counts, fn, *patterns, seed=0)
