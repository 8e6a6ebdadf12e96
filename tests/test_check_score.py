"""Tests for the chapter 09 exercise checkers in coursekit.check.score: correct solutions pass, stubs say
"not implemented yet", and plausible mistakes (Langevin noise scale, DSM target sign/scale, Jacobian
sum instead of trace) fail with a message that names the mistake."""

import math

import pytest
import torch

from coursekit.check.score import dsm_target, langevin_step, score_jacobian_trace

from _helpers import assert_fails, stub


# ----------------------------------------------------------------------------- langevin_step
def step_ok(x, score, step_size, z):
    return x + 0.5 * step_size * score + math.sqrt(step_size) * z


def step_ok_torch(x, score, step_size, z):  # the same with torch ops and the tau = eps/2 convention
    tau = step_size / 2
    return x + tau * score + torch.sqrt(torch.tensor(2 * tau)) * z


@pytest.mark.parametrize("fn", [step_ok, step_ok_torch])
def test_langevin_step_correct_passes(fn, capsys):
    langevin_step(fn)
    langevin_step(fn, seed=3)
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 2 and all(line.startswith("✓ langevin_step passed") for line in out)


@pytest.mark.parametrize(
    "fn, patterns",
    [
        (stub, ["not implemented yet"]),
        (lambda x, s, e, z: x + 0.5 * e * s + math.sqrt(2 * e) * z, ["sqrt(2 * step_size)", "twice as wide"]),
        (lambda x, s, e, z: x + e * s + math.sqrt(e) * z, ["(step_size / 2) * score", "half as wide"]),
        (lambda x, s, e, z: x + 0.5 * e * s + e * z, ["square root"]),
        (lambda x, s, e, z: x - 0.5 * e * s + math.sqrt(e) * z, ["sign"]),
        (lambda x, s, e, z: x + 0.5 * e * s, ["noise is missing"]),
        (lambda x, s, e, z: x + 0.5 * e * s + math.sqrt(e) * torch.randn_like(z), ["expected x + (step_size / 2)"]),
        (lambda x, s, e, z: (x + 0.5 * e * s + math.sqrt(e) * z).sum(0), ["shape"]),
    ],
    ids=["stub", "sqrt-2eps", "drift-eps", "no-sqrt", "sign", "no-noise", "own-noise", "shape"],
)
def test_langevin_step_mistakes(fn, patterns):
    assert_fails(langevin_step, fn, *patterns, seed=1)


def test_langevin_step_in_place_is_caught():
    def inplace(x, s, e, z):
        x += 0.5 * e * s + math.sqrt(e) * z
        return x

    assert_fails(langevin_step, inplace, "in place", seed=2)


# ----------------------------------------------------------------------------- dsm_target
def dsm_ok(x, x_tilde, sigma):
    return (x - x_tilde) / sigma**2


def test_dsm_target_correct_passes(capsys):
    dsm_target(dsm_ok)
    dsm_target(lambda x, xt, s: -(xt - x) / (s * s), seed=4)
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 2 and all(line.startswith("✓ dsm_target passed") for line in out)


@pytest.mark.parametrize(
    "fn, patterns",
    [
        (stub, ["not implemented yet"]),
        (lambda x, xt, s: (xt - x) / s**2, ["sign is flipped"]),
        (lambda x, xt, s: -(xt - x) / s, ["sigma^2", "not sigma"]),
        (lambda x, xt, s: -(xt - x) / s**2 if isinstance(s, float) else -(xt - x) / s.mean() ** 2, ["per example"]),
        (lambda x, xt, s: (xt - x) / s, ["noise eps", "itself"]),
        (lambda x, xt, s: -(xt - x), ["forgot to divide"]),
        (lambda x, xt, s: (-(xt - x) / s**2).sum(-1), ["shape"]),
    ],
    ids=["stub", "sign", "sigma-not-squared", "float-only", "noise", "no-division", "shape"],
)
def test_dsm_target_mistakes(fn, patterns):
    assert_fails(dsm_target, fn, *patterns, seed=5)


# ----------------------------------------------------------------------------- score_jacobian_trace
def trace_ok(score_fn, x):
    x = x.detach().requires_grad_(True)
    s = score_fn(x)
    total = torch.zeros(x.shape[0], dtype=x.dtype)
    for i in range(x.shape[1]):
        (g,) = torch.autograd.grad(s[:, i].sum(), x, create_graph=True)
        total = total + g[:, i]
    return total


def trace_func(score_fn, x):  # torch.func route: per-example Jacobians
    jac = torch.func.vmap(torch.func.jacrev(lambda xi: score_fn(xi[None])[0]))(x)
    return jac.diagonal(dim1=1, dim2=2).sum(-1)


@pytest.mark.parametrize("fn", [trace_ok, trace_func])
def test_trace_correct_passes(fn, capsys):
    score_jacobian_trace(fn, seed=0)
    score_jacobian_trace(fn)
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 2 and all(line.startswith("✓ score_jacobian_trace passed") for line in out)


def trace_whole_jacobian(score_fn, x):
    x = x.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(score_fn(x).sum(), x, create_graph=True)
    return g.sum(-1)


def trace_detached(score_fn, x):
    x = x.detach().requires_grad_(True)
    s = score_fn(x)
    return sum(torch.autograd.grad(s[:, i].sum(), x, retain_graph=True)[0][:, i] for i in range(x.shape[1]))


def trace_hutchinson(score_fn, x):
    x = x.detach().requires_grad_(True)
    v = torch.randn_like(x)
    (g,) = torch.autograd.grad((score_fn(x) * v).sum(), x, create_graph=True)
    return (g * v).sum(-1)


@pytest.mark.parametrize(
    "fn, patterns",
    [
        (stub, ["not implemented yet"]),
        (trace_whole_jacobian, ["every entry of the jacobian", "diagonal"]),
        (lambda f, x: trace_ok(f, x).sum(), ["single number", "one trace per example"]),
        (trace_detached, ["create_graph=True"]),
        (trace_hutchinson, ["tr w"]),
    ],
    ids=["stub", "whole-jacobian", "batch-total", "no-create-graph", "hutchinson"],
)
def test_trace_mistakes(fn, patterns):
    assert_fails(score_jacobian_trace, fn, *patterns, seed=6)


def test_checkers_reject_non_callables():
    for checker in (langevin_step, dsm_target, score_jacobian_trace):
        with pytest.raises(TypeError, match="expects your function"):
            checker(3)
