"""Tests for the chapter 11 exercise checkers in coursekit.check.autoregressive: correct solutions pass, stubs say
"not implemented yet", and plausible mistakes (swapped mask types, a leaking mask, a detach on the wrong term,
temperature multiplied, top-k without renormalising) fail with a message that names the mistake, for every seed."""

import pytest
import torch

from coursekit.check.autoregressive import pixelcnn_mask, sampling_probs, straight_through

from _helpers import assert_fails, stub

SEEDS = range(0, 40, 7)


# ----------------------------------------------------------------------------- pixelcnn_mask
def mask_ok(kernel_size, mask_type):
    k, c = kernel_size, kernel_size // 2
    m = torch.zeros(k, k)
    m[:c] = 1
    m[c, :c] = 1
    if mask_type == "B":
        m[c, c] = 1
    return m


def mask_ok_flat(kernel_size, mask_type):  # raster order in one line
    k = kernel_size
    idx = torch.arange(k * k).reshape(k, k)
    centre = (k * k) // 2
    return ((idx < centre) | ((idx == centre) & (mask_type == "B"))).float()


def mask_swapped(k, t):
    return mask_ok(k, "B" if t == "A" else "A")


def mask_row_leak(k, t):
    m = mask_ok(k, t)
    m[k // 2, k // 2 + 1:] = 1
    return m


def mask_below(k, t):
    m = mask_ok(k, t)
    m[k // 2 + 1:] = 1
    return m


def mask_transposed(k, t):
    return mask_ok(k, t).T.contiguous()


@pytest.mark.parametrize("fn", [mask_ok, mask_ok_flat])
def test_pixelcnn_mask_correct_passes(fn, capsys):
    for seed in SEEDS:
        pixelcnn_mask(fn, seed=seed)
    pixelcnn_mask(fn)
    out = capsys.readouterr().out.strip().splitlines()
    assert all(line.startswith("✓ pixelcnn_mask passed") for line in out)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(
    "fn, patterns",
    [
        (stub, ["not implemented yet"]),
        (mask_swapped, ["type-"]),
        (mask_row_leak, ["right of the centre", "future"]),
        (mask_below, ["below"]),
        (mask_transposed, ["transposed"]),
        (lambda k, t: torch.ones(k, k), ["expected ones on the rows above"]),
        (lambda k, t: mask_ok(k, t)[:-1] if k > 1 else mask_ok(k, t)[:0], ["shape"]),
    ],
    ids=["stub", "swapped", "row-leak", "below", "transposed", "ones", "shape"],
)
def test_pixelcnn_mask_mistakes(fn, patterns, seed):
    assert_fails(pixelcnn_mask, fn, *patterns, seed=seed)


# ----------------------------------------------------------------------------- straight_through
def st_ok(z_e, z_q):
    return z_e + (z_q - z_e).detach()


def st_ok_other(z_e, z_q):
    return z_q.detach() + z_e - z_e.detach()


@pytest.mark.parametrize("fn", [st_ok, st_ok_other])
def test_straight_through_correct_passes(fn, capsys):
    for seed in SEEDS:
        straight_through(fn, seed=seed)
    assert "✓ straight_through passed" in capsys.readouterr().out


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(
    "fn, patterns",
    [
        (stub, ["not implemented yet"]),
        (lambda z_e, z_q: z_q, ["none to z_e", "returning z_q"]),
        (lambda z_e, z_q: z_q.detach(), ["no gradient flows"]),
        (lambda z_e, z_q: z_e, ["you returned z_e"]),
        (lambda z_e, z_q: z_q + (z_e - z_q).detach(), ["wrong value"]),
        (lambda z_e, z_q: z_e + (z_q - z_e), ["must be detached"]),
        (lambda z_e, z_q: 2 * z_e + (z_q - 2 * z_e).detach(), ["identity"]),
        (lambda z_e, z_q: z_e.detach() + z_q - z_e.detach() + (z_e - z_e.detach()), ["reaches z_q"]),
        (lambda z_e, z_q: st_ok(z_e, z_q)[0], ["shape"]),
    ],
    ids=["stub", "zq", "zq-detached", "ze", "swapped", "no-detach", "scaled", "grad-to-zq", "shape"],
)
def test_straight_through_mistakes(fn, patterns, seed):
    assert_fails(straight_through, fn, *patterns, seed=seed)


# ----------------------------------------------------------------------------- sampling_probs
def probs_ok(logits, temperature, top_k):
    if top_k is not None:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.softmax(logits / temperature, dim=-1)


def probs_ok_renorm(logits, temperature, top_k):  # mask after the softmax, then renormalise
    p = torch.softmax(logits / temperature, dim=-1)
    if top_k is not None:
        keep = torch.zeros_like(p).scatter(1, p.topk(top_k, dim=-1).indices, 1.0)
        p = p * keep
        p = p / p.sum(1, keepdim=True)
    return p


@pytest.mark.parametrize("fn", [probs_ok, probs_ok_renorm])
def test_sampling_probs_correct_passes(fn, capsys):
    for seed in SEEDS:
        sampling_probs(fn, seed=seed)
    assert "✓ sampling_probs passed" in capsys.readouterr().out


def probs_times_t(logits, t, k):
    return probs_ok(logits, 1 / t, k)


def probs_no_renorm(logits, t, k):
    p = torch.softmax(logits / t, dim=-1)
    if k is None:
        return p
    kth = logits.topk(k, dim=-1).values[:, -1:]
    return p * (logits >= kth)


def probs_k_plus_one(logits, t, k):
    return probs_ok(logits, t, None if k is None else k + 1)


def probs_k_minus_one(logits, t, k):
    return probs_ok(logits, t, None if k is None else max(k - 1, 1) if k > 1 else k + 1)


def probs_temp_on_probs(logits, t, k):
    return probs_ok(logits, 1.0, k) ** (1 / t)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize(
    "fn, patterns",
    [
        (stub, ["not implemented yet"]),
        (probs_times_t, ["multiplied by the temperature"]),
        (probs_no_renorm, ["renormalised"]),
        (probs_k_plus_one, ["tokens are kept"]),
        (probs_k_minus_one, ["tokens are kept"]),
        (lambda lg, t, k: probs_ok(lg, 1.0, k), ["temperature"]),
        (probs_temp_on_probs, ["probabilities without renormalising"]),
        (lambda lg, t, k: probs_ok(lg, t, k)[:, :-1], ["shape"]),
    ],
    ids=["stub", "times-t", "no-renorm", "k+1", "k-1", "no-temperature", "temp-on-probs", "shape"],
)
def test_sampling_probs_mistakes(fn, patterns, seed):
    assert_fails(sampling_probs, fn, *patterns, seed=seed)
