"""Tests for the chapter 10 exercise checkers in coursekit.check.flow_matching: correct solutions pass, stubs say
"not implemented yet", and plausible mistakes (sign, a forgotten sigma_min, an Euler or midpoint step, z . v
instead of z^T J z, a sum over probes) fail with a message that names the mistake, for every seed tried."""

import pytest
import torch

from coursekit import flow_matching as fm
from coursekit.check.flow_matching import cfm_target, heun_step, hutchinson_divergence

from _helpers import assert_fails, stub

SEEDS = [0, 1, 7, 123]


# ----------------------------------------------------------------------------- cfm_target
def cfm_ok(x0, x1, t, sigma_min):
    return x1 - (1 - sigma_min) * x0


def cfm_ok_module(x0, x1, t, sigma_min):
    return fm.cfm_target(x0, x1, t, path="ot", sigma_min=sigma_min)


@pytest.mark.parametrize("fn", [cfm_ok, cfm_ok_module])
def test_cfm_target_correct_passes(fn, capsys):
    cfm_target(fn)
    cfm_target(fn, seed=3)
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 2 and all(line.startswith("✓ cfm_target passed") for line in out)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(
    "fn, patterns",
    [
        (stub, ["not implemented yet"]),
        (lambda x0, x1, t, s: (1 - s) * x0 - x1, ["sign is flipped"]),
        (lambda x0, x1, t, s: x1 - x0, ["dropped sigma_min"]),
        (lambda x0, x1, t, s: x1 - s * x0, ["scaled by sigma_min"]),
        (lambda x0, x1, t, s: t[:, None] * x1 + (1 - (1 - s) * t[:, None]) * x0, ["point x_t"]),
        (lambda x0, x1, t, s: (x1 - (1 - s) * x0).sum(1), ["shape"]),
        (lambda x0, x1, t, s: x1 - (1 - s) * x0 * t[:, None], ["expected x1 - (1 - sigma_min) * x0"]),
    ],
    ids=["stub", "sign", "no-sigma-min", "sigma-min-scale", "point", "shape", "other"],
)
def test_cfm_target_mistakes(fn, patterns, seed):
    assert_fails(cfm_target, fn, *patterns, seed=seed)


# ----------------------------------------------------------------------------- heun_step
def heun_ok(v, x, t, dt):
    k1 = v(x, t)
    return x + 0.5 * dt * (k1 + v(x + dt * k1, t + dt))


def heun_ok_module(v, x, t, dt):
    return fm.heun_step(lambda z, tt: v(z, tt), x, t, dt)


@pytest.mark.parametrize("fn", [heun_ok, heun_ok_module])
def test_heun_step_correct_passes(fn, capsys):
    heun_step(fn)
    heun_step(fn, seed=4)
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 2 and all(line.startswith("✓ heun_step passed") for line in out)


def heun_second_at_t(v, x, t, dt):
    k1 = v(x, t)
    return x + 0.5 * dt * (k1 + v(x + dt * k1, t))


def midpoint(v, x, t, dt):
    return x + dt * v(x + 0.5 * dt * v(x, t), t + 0.5 * dt)


def second_only(v, x, t, dt):
    return x + dt * v(x + dt * v(x, t), t + dt)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(
    "fn, patterns",
    [
        (stub, ["not implemented yet"]),
        (lambda v, x, t, dt: x + dt * v(x, t), ["Euler step"]),
        (heun_second_at_t, ["END of the step"]),
        (midpoint, ["midpoint method"]),
        (second_only, ["second slope alone"]),
        (lambda v, x, t, dt: heun_ok(v, x, t, dt)[:, :1], ["shape"]),
        (lambda v, x, t, dt: heun_ok(v, x, t, abs(dt)), ["dt = -"]),
    ],
    ids=["stub", "euler", "end-time", "midpoint", "second-only", "shape", "abs-dt"],
)
def test_heun_step_mistakes(fn, patterns, seed):
    assert_fails(heun_step, fn, *patterns, seed=seed)


# ----------------------------------------------------------------------------- hutchinson_divergence
def hutch_ok(v, x, t, z):
    x = x.detach().requires_grad_(True)
    out = v(x, t)
    est = 0
    for zj in z:
        (g,) = torch.autograd.grad((out * zj).sum(), x, retain_graph=True)
        est = est + (g * zj).sum(-1)
    return est / z.shape[0]


def hutch_ok_module(v, x, t, z):
    return fm.hutchinson_divergence(lambda a, b: v(a, b), x, t, noise=z)


@pytest.mark.parametrize("fn", [hutch_ok, hutch_ok_module])
def test_hutchinson_correct_passes(fn, capsys):
    hutchinson_divergence(fn)
    hutchinson_divergence(fn, seed=5)
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 2 and all(line.startswith("✓ hutchinson_divergence passed") for line in out)


def hutch_no_jacobian(v, x, t, z):
    return (z * v(x, t)[None]).sum(-1).mean(0)


def hutch_ones(v, x, t, z):
    x = x.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(v(x, t).sum(), x)
    return (g[None] * z).sum(-1).mean(0)


def hutch_sum(v, x, t, z):
    return hutch_ok(v, x, t, z) * z.shape[0]


def hutch_exact(v, x, t, z):
    return fm.divergence(lambda a, b: v(a, b), x, t)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(
    "fn, patterns",
    [
        (stub, ["not implemented yet"]),
        (hutch_no_jacobian, ["without the Jacobian"]),
        (hutch_ones, ["1^T J z"]),
        (hutch_sum, ["summed over the probes"]),
        (hutch_exact, ["exact trace"]),
        (lambda v, x, t, z: hutch_ok(v, x, t, z)[None], ["shape"]),
    ],
    ids=["stub", "no-jacobian", "ones", "sum", "exact", "shape"],
)
def test_hutchinson_mistakes(fn, patterns, seed):
    assert_fails(hutchinson_divergence, fn, *patterns, seed=seed)
