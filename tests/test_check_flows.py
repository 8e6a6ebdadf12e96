"""Tests for the chapter 05 checkers in coursekit.check.flows: correct solutions pass, stubs and plausible
mistakes fail with a message that names the mistake."""

import math

import pytest
import torch

from coursekit.check.flows import coupling_forward, coupling_inverse, digits_bits_per_dim

from _helpers import assert_fails, assert_fresh_inputs_and_seeded, stub


# ----------------------------------------------------------------------------- coupling forward / inverse
def fwd_ok(x, mask, net):
    s, t = net(x * mask)
    s, t = s * (1 - mask), t * (1 - mask)
    return x * mask + (1 - mask) * (x * torch.exp(s) + t), s.sum(-1)


def inv_ok(z, mask, net):
    s, t = net(z * mask)
    s, t = s * (1 - mask), t * (1 - mask)
    return z * mask + (1 - mask) * (z - t) * torch.exp(-s), -s.sum(-1)


def fwd_where(x, mask, net):  # a different but correct way to write it
    s, t = net(x * mask)
    keep = mask.bool()
    z = torch.where(keep, x, x * torch.exp(s) + t)
    return z, torch.where(keep, torch.zeros_like(s), s).sum(dim=1)


@pytest.mark.parametrize("checker, fn", [(coupling_forward, fwd_ok), (coupling_forward, fwd_where),
                                         (coupling_inverse, inv_ok)])
def test_correct_coupling_passes(checker, fn, capsys):
    for seed in range(3):
        checker(fn, seed=seed)
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 3 and all(line.startswith("✓ coupling_") for line in out)


def test_fresh_inputs_and_seed_reproduces():
    assert_fresh_inputs_and_seeded(coupling_forward, fwd_ok, seed=4)


@pytest.mark.parametrize("checker", [coupling_forward, coupling_inverse, digits_bits_per_dim])
def test_stub_says_not_implemented(checker):
    assert_fails(checker, stub, "not implemented yet")


@pytest.mark.parametrize(
    "fn, patterns",
    [
        (lambda x, m, n: (fwd_ok(x, m, n)[0], -fwd_ok(x, m, n)[1]), ["sign"]),
        (lambda x, m, n: (fwd_ok(x, m, n)[0], n(x * m)[0].sum(-1)), ["transformed half", "(1 - mask)"]),
        (lambda x, m, n: (x * m + (1 - m) * (x * torch.exp(n(x)[0]) + n(x)[1]), fwd_ok(x, m, n)[1]),
         ["net(x * mask)"]),
        (lambda x, m, n: (x * m + (1 - m) * (x * torch.exp(-n(x * m)[0]) + n(x * m)[1]), fwd_ok(x, m, n)[1]),
         ["exp(s)"]),
        (lambda x, m, n: (x * torch.exp(n(x * m)[0]) + n(x * m)[1], fwd_ok(x, m, n)[1]), ["passed-through"]),
        (lambda x, m, n: fwd_ok(x, m, n)[0], ["tuple"]),
        (lambda x, m, n: (fwd_ok(x, m, n)[0], fwd_ok(x, m, n)[1].unsqueeze(-1)), ["shape (N,)"]),
        (lambda x, m, n: (fwd_ok(x, m, n)[0], ((1 - m) * torch.exp(n(x * m)[0])).sum(-1)), ["not of the scales"]),
    ],
)
def test_forward_mistakes_are_named(fn, patterns):
    assert_fails(coupling_forward, fn, *patterns, seed=0)


@pytest.mark.parametrize(
    "fn, patterns",
    [
        (lambda z, m, n: (inv_ok(z, m, n)[0], -inv_ok(z, m, n)[1]), ["sign", "minus"]),
        (lambda z, m, n: (z * m + (1 - m) * (z * torch.exp(-n(z * m)[0] * (1 - m)) - n(z * m)[1] * (1 - m)),
                          inv_ok(z, m, n)[1]), ["shift before the scale"]),
        (lambda z, m, n: (z * m + (1 - m) * (z - n(z * m)[1]) * torch.exp(n(z * m)[0]), inv_ok(z, m, n)[1]),
         ["exp(-s)"]),
        (lambda z, m, n: (z * m + (1 - m) * (z - n(z)[1]) * torch.exp(-n(z)[0]), inv_ok(z, m, n)[1]),
         ["net(x * mask)"]),
    ],
)
def test_inverse_mistakes_are_named(fn, patterns):
    assert_fails(coupling_inverse, fn, *patterns, seed=1)


def test_non_differentiable_log_det_is_caught():
    def detached(x, mask, net):
        z, ld = fwd_ok(x, mask, net)
        return z.detach(), ld  # z computed outside autograd

    assert_fails(coupling_forward, detached, "autograd", seed=2)


# ----------------------------------------------------------------------------- bits per dimension
def bpd_ok(nll, dim):
    return (nll + dim * math.log(17)) / (dim * math.log(2))


def test_bpd_correct_passes(capsys):
    digits_bits_per_dim(bpd_ok)
    digits_bits_per_dim(lambda nll, d: nll / (d * math.log(2)) + math.log2(17))
    assert capsys.readouterr().out.count("✓ digits_bits_per_dim passed") == 2


@pytest.mark.parametrize(
    "fn, patterns",
    [
        (lambda nll, d: nll / (d * math.log(2)), ["dequantisation term is missing"]),
        (lambda nll, d: (nll + d * math.log(16)) / (d * math.log(2)), ["17 levels"]),
        (lambda nll, d: (nll + d * math.log(256)) / (d * math.log(2)), ["8-bit"]),
        (lambda nll, d: (nll - d * math.log(17)) / (d * math.log(2)), ["wrong sign"]),
        (lambda nll, d: (nll + d * math.log(17)) / d, ["nats per dimension"]),
        (lambda nll, d: (nll + d * math.log(17)) / math.log(2), ["bits per image"]),
        (lambda nll, d: bpd_ok(nll, d).sum(), ["shape"]),
        (lambda nll, d: float(bpd_ok(nll, d)[0]), ["torch.Tensor"]),
    ],
)
def test_bpd_mistakes_are_named(fn, patterns):
    assert_fails(digits_bits_per_dim, fn, *patterns, seed=0)
