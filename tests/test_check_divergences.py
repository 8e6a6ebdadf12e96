"""Tests for the chapter 01 checkers in coursekit.check.divergences: correct solutions pass, stubs and plausible
mistakes fail with a message that names the mistake."""

import math

import pytest
import torch

from coursekit.check.divergences import discrete_entropy, mutual_info, sample_exponential

from _helpers import assert_fails, assert_fresh_inputs_and_seeded, stub


# ----------------------------------------------------------------------------- discrete_entropy
def entropy_ok(p):
    return -torch.xlogy(p, p).sum(-1)


def entropy_ok_where(p):
    return -torch.where(p > 0, p * torch.log(p), torch.zeros_like(p)).sum(dim=-1)


@pytest.mark.parametrize("fn", [entropy_ok, entropy_ok_where])
def test_entropy_correct_passes_with_one_line(fn, capsys):
    for _ in range(3):
        discrete_entropy(fn)
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 3 and all(line.startswith("✓ discrete_entropy passed") for line in out)


def test_entropy_fresh_inputs_and_seed():
    assert_fresh_inputs_and_seeded(discrete_entropy, entropy_ok, seed=3)


@pytest.mark.parametrize(
    "fn, patterns",
    [
        (stub, ["not implemented yet"]),
        (lambda p: -(p * torch.log(p)).sum(-1), ["not finite", "0 log 0"]),
        (lambda p: entropy_ok(p) / math.log(2), ["bits", "nats"]),
        (lambda p: -entropy_ok(p), ["sign"]),
        (lambda p: entropy_ok(p) / p.shape[-1], ["averaged", "SUM"]),
        (lambda p: -torch.xlogy(p, p), ["expected output shape (5,)", "one term per outcome"]),
        (lambda p: -torch.xlogy(p, p).sum(0), ["dim=0"]),
        (lambda p: -torch.xlogy(p, p).sum(), ["got ()"]),
        (lambda p: entropy_ok(p).numpy(), ["torch.Tensor"]),
        (lambda p: -torch.xlogy(p, p + 0.1).sum(-1), ["wrong values", "expected -sum_k p_k log p_k", "p ="]),
    ],
)
def test_entropy_wrong_implementations_fail_helpfully(fn, patterns):
    msg = assert_fails(discrete_entropy, fn, *patterns)
    if fn is not stub:
        assert "seed=" in msg


def test_entropy_right_on_random_inputs_but_wrong_worked_value():
    # correct for the random tables, but a uniform distribution is special-cased wrongly
    def fn(p):
        h = entropy_ok(p)
        return torch.where((p == p[..., :1]).all(-1), torch.zeros_like(h), h)

    assert_fails(discrete_entropy, fn, "worked values", "log 6")


# ----------------------------------------------------------------------------- sample_exponential
def exp_ok(u, rate):
    return -torch.log1p(-u) / rate


def test_exponential_correct_passes(capsys):
    sample_exponential(exp_ok)
    sample_exponential(lambda u, rate: -torch.log(1 - u) / rate)  # log(1 - u) is accurate enough here
    assert capsys.readouterr().out.count("✓ sample_exponential passed") == 2


def test_exponential_fresh_inputs_and_seed():
    assert_fresh_inputs_and_seeded(sample_exponential, exp_ok, seed=4)


@pytest.mark.parametrize(
    "fn, patterns",
    [
        (stub, ["not implemented yet"]),
        (lambda u, rate: -torch.log(u) / rate, ["F^{-1}(1 - u)", "decreasing"]),
        (lambda u, rate: -torch.log1p(-u) * rate, ["multiplied by the rate", "1 / rate"]),
        (lambda u, rate: torch.log1p(-u) / rate, ["sign"]),
        (lambda u, rate: 1 - torch.exp(-rate * u), ["CDF", "invert"]),
        (lambda u, rate: -torch.log1p(-u).sum() / rate.sum(), ["shape (8,)", "elementwise"]),
        (lambda u, rate: -torch.log1p(-u) / rate + 0.01, ["wrong values", "expected x = -log(1 - u) / rate"]),
        (lambda u, rate: -torch.log(1 - u.float()).double() / rate, ["inaccurate", "log1p"]),
    ],
)
def test_exponential_wrong_implementations_fail_helpfully(fn, patterns):
    msg = assert_fails(sample_exponential, fn, *patterns)
    if fn is not stub:
        assert "seed=" in msg


# ----------------------------------------------------------------------------- mutual_info
def mi_ok(joint):
    prod = joint.sum(-1, keepdim=True) * joint.sum(-2, keepdim=True)
    return (torch.xlogy(joint, joint) - torch.xlogy(joint, prod)).sum((-2, -1))


def _h(p, dims):
    return -torch.xlogy(p, p).sum(dims)


def test_mi_correct_passes(capsys):
    mutual_info(mi_ok)

    def via_entropies(joint):
        return _h(joint.sum(-1), -1) + _h(joint.sum(-2), -1) - _h(joint, (-2, -1))

    mutual_info(via_entropies)
    assert capsys.readouterr().out.count("✓ mutual_info passed") == 2


def test_mi_fresh_inputs_and_seed():
    assert_fresh_inputs_and_seeded(mutual_info, mi_ok, seed=6)


@pytest.mark.parametrize(
    "fn, patterns",
    [
        (stub, ["not implemented yet"]),
        (lambda j: mi_ok(j) / math.log(2), ["bits"]),
        (lambda j: -mi_ok(j), ["sign"]),
        (lambda j: _h(j.sum(-1), -1) + _h(j.sum(-2), -1), ["missing the joint term"]),
        (lambda j: _h(j, (-2, -1)) - _h(j.sum(-1), -1), ["conditional entropy"]),
        (lambda j: _h(j, (-2, -1)), ["joint entropy"]),
        (lambda j: (torch.xlogy(j.sum(-1, keepdim=True) * j.sum(-2, keepdim=True), j.sum(-1, keepdim=True)
                                * j.sum(-2, keepdim=True) / j)).sum((-2, -1)), ["reversed"]),
        (lambda j: (torch.xlogy(j, j) - torch.xlogy(j, j.sum(-1, keepdim=True) * j.sum(-2, keepdim=True))).sum(-1),
         ["shape (4,)", "dim=(-2, -1)"]),
        (lambda j: (j * torch.log(j / (j.sum(-1, keepdim=True) * j.sum(-2, keepdim=True)))).sum((-2, -1)),
         ["diagonal", "0 log 0"]),
        (lambda j: mi_ok(j) + 0.01, ["wrong values", "p(x) = joint.sum(-1)"]),
    ],
)
def test_mi_wrong_implementations_fail_helpfully(fn, patterns):
    msg = assert_fails(mutual_info, fn, *patterns)
    if fn is not stub:
        assert "seed=" in msg


def test_mi_nonzero_for_independent_tables_is_caught():
    # right on the random tables, but adds a constant when the table factorises
    def fn(j):
        prod = j.sum(-1, keepdim=True) * j.sum(-2, keepdim=True)
        base = mi_ok(j)
        return torch.where(torch.isclose(j, prod).all(-1).all(-1), base + 0.5, base)

    assert_fails(mutual_info, fn, "independent", "0")


@pytest.mark.parametrize("checker", [discrete_entropy, sample_exponential, mutual_info])
def test_checkers_leave_the_global_rng_alone(checker):
    ok = {discrete_entropy: entropy_ok, sample_exponential: exp_ok, mutual_info: mi_ok}[checker]
    torch.manual_seed(0)
    a = torch.rand(3)
    torch.manual_seed(0)
    checker(ok)
    assert torch.equal(torch.rand(3), a)
