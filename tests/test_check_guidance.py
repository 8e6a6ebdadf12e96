"""Tests for the chapter 12 exercise checkers in coursekit.check.guidance: correct solutions pass, stubs say "not
implemented yet", and plausible mistakes (Ho & Salimans' weight, swapped predictions, one direction of InfoNCE,
unnormalised embeddings, the maps composed in the wrong order, a squared cycle error) fail with a message that names
the mistake, for every seed tried."""

import pytest
import torch
import torch.nn.functional as F

from coursekit import guidance as gd
from coursekit.check.guidance import classifier_free_eps, clip_loss, cycle_consistency_loss

from _helpers import assert_fails, assert_fresh_inputs_and_seeded, stub

SEEDS = [0, 1, 7, 123]


# ----------------------------------------------------------------------------- classifier_free_eps
def cfg_ok(c, u, w):
    return u + w * (c - u)


@pytest.mark.parametrize("fn", [cfg_ok, gd.classifier_free_eps, lambda c, u, w: (1 - w) * u + w * c])
def test_classifier_free_eps_correct_passes(fn, capsys):
    classifier_free_eps(fn)
    classifier_free_eps(fn, seed=3)
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 2 and all(line.startswith("✓ classifier_free_eps passed") for line in out)


def test_classifier_free_eps_draws_fresh_seeded_inputs():
    assert_fresh_inputs_and_seeded(classifier_free_eps, cfg_ok, seed=5)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(
    "fn, patterns",
    [
        (stub, ["not implemented yet"]),
        (lambda c, u, w: (1 + w) * c - w * u, ["Ho & Salimans"]),
        (lambda c, u, w: c + w * (u - c), ["swapped"]),
        (lambda c, u, w: w * (c - u), ["unconditional prediction is missing"]),
        (lambda c, u, w: w * c, ["only w eps_cond"]),
        (lambda c, u, w: u - w * (c - u), ["sign of the difference"]),
        (lambda c, u, w: cfg_ok(c, u, w).mean(0), ["shape"]),
        (lambda c, u, w: u + w * w * (c - u), ["expected eps_uncond + w"]),
        (lambda c, u, w: u + max(w, 1.5) * (c - u), ["w = 0"]),
    ],
    ids=["stub", "ho-salimans", "swapped", "no-uncond", "only-cond", "sign", "shape", "other", "w-ends"],
)
def test_classifier_free_eps_mistakes(fn, patterns, seed):
    assert_fails(classifier_free_eps, fn, *patterns, seed=seed)


# ----------------------------------------------------------------------------- clip_loss
def clip_ok(u, v, tau):
    logits = F.normalize(u, dim=1) @ F.normalize(v, dim=1).T / tau
    t = torch.arange(len(u))
    return 0.5 * (F.cross_entropy(logits, t) + F.cross_entropy(logits.T, t))


def clip_module(u, v, tau):
    return gd.symmetric_info_nce(gd.contrastive_logits(u, v, tau))


def _ce(logits, reduction="mean"):
    return F.cross_entropy(logits, torch.arange(len(logits)), reduction=reduction)


def _cos(u, v):
    return F.normalize(u, dim=1) @ F.normalize(v, dim=1).T


@pytest.mark.parametrize("fn", [clip_ok, clip_module])
def test_clip_loss_correct_passes(fn, capsys):
    clip_loss(fn)
    clip_loss(fn, seed=4)
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 2 and all(line.startswith("✓ clip_loss passed") for line in out)


def test_clip_loss_draws_fresh_seeded_inputs():
    assert_fresh_inputs_and_seeded(clip_loss, clip_ok, seed=6)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(
    "fn, patterns",
    [
        (stub, ["not implemented yet"]),
        (lambda u, v, tau: 0.5 * (_ce(u @ v.T / tau) + _ce((u @ v.T / tau).T)), ["not normalised"]),
        (lambda u, v, tau: _ce(_cos(u, v) / tau), ["image-to-text half only"]),
        (lambda u, v, tau: _ce(_cos(u, v).T / tau), ["text-to-image half only"]),
        (lambda u, v, tau: 0.5 * (_ce(_cos(u, v) * tau) + _ce(_cos(u, v).T * tau)), ["multiplies"]),
        (lambda u, v, tau: _ce(_cos(u, v) / tau) + _ce(_cos(u, v).T / tau), ["summed the two directions"]),
        (lambda u, v, tau: 0.5 * (_ce(_cos(u, v) / tau, "sum") + _ce(_cos(u, v).T / tau, "sum")),
         ["summed over the batch"]),
        (lambda u, v, tau: torch.log(torch.tensor(float(len(u)), dtype=u.dtype)) - clip_ok(u, v, tau),
         ["mutual-information bound"]),
        (lambda u, v, tau: 0.5 * (_ce(_cos(u, v) / tau, "none") + _ce(_cos(u, v).T / tau, "none")), ["one number"]),
        (lambda u, v, tau: clip_ok(u, v, tau) + 0.1, ["expected the mean"]),
    ],
    ids=["stub", "unnormalised", "rows", "columns", "times-tau", "sum-directions", "sum-batch", "bound", "shape",
         "other"],
)
def test_clip_loss_mistakes(fn, patterns, seed):
    assert_fails(clip_loss, fn, *patterns, seed=seed)


# ----------------------------------------------------------------------------- cycle_consistency_loss
def cycle_ok(g_ab, g_ba, a, b):
    return (g_ba(g_ab(a)) - a).abs().mean() + (g_ab(g_ba(b)) - b).abs().mean()


@pytest.mark.parametrize("fn", [cycle_ok, gd.cycle_consistency_loss])
def test_cycle_consistency_loss_correct_passes(fn, capsys):
    cycle_consistency_loss(fn)
    cycle_consistency_loss(fn, seed=5)
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 2 and all(line.startswith("✓ cycle_consistency_loss passed") for line in out)


def test_cycle_consistency_loss_draws_fresh_seeded_inputs():
    seen = []  # the checker's batch a of domain A, each call (the maps come first, so _helpers' spy cannot be used)

    def spy(g_ab, g_ba, a, b):
        seen.append(a.detach().clone())
        return cycle_ok(g_ab, g_ba, a, b)

    for kwargs, same in (({}, False), ({"seed": 9}, True)):
        seen.clear()
        cycle_consistency_loss(spy, **kwargs)
        n = len(seen)
        cycle_consistency_loss(spy, **kwargs)
        assert torch.equal(seen[0], seen[n]) is same


def _no_grad_cycle(g_ab, g_ba, a, b):
    with torch.no_grad():
        return cycle_ok(g_ab, g_ba, a, b)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(
    "fn, patterns",
    [
        (stub, ["not implemented yet"]),
        (lambda f, g, a, b: (g(f(a)) - a).abs().mean(), ["A -> B -> A cycle only"]),
        (lambda f, g, a, b: (f(g(b)) - b).abs().mean(), ["B -> A -> B cycle only"]),
        (lambda f, g, a, b: (f(g(a)) - a).abs().mean() + (g(f(b)) - b).abs().mean(), ["wrong order"]),
        (lambda f, g, a, b: ((g(f(a)) - a) ** 2).mean() + ((f(g(b)) - b) ** 2).mean(), ["squared error"]),
        (lambda f, g, a, b: (g(f(a)) - a).abs().sum() + (f(g(b)) - b).abs().sum(), ["summed over the entries"]),
        (lambda f, g, a, b: 0.5 * cycle_ok(f, g, a, b), ["averaged the two directions"]),
        (lambda f, g, a, b: (g(f(a)) - a).abs().mean(1), ["one number"]),
        (_no_grad_cycle, ["autograd"]),
    ],
    ids=["stub", "forward-only", "backward-only", "order", "squared", "sum", "average", "shape", "no-grad"],
)
def test_cycle_consistency_loss_mistakes(fn, patterns, seed):
    assert_fails(cycle_consistency_loss, fn, *patterns, seed=seed)
