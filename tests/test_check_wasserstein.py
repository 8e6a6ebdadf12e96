"""Tests for the chapter 07 checkers in coursekit.check.wasserstein: correct solutions pass on 150 seeds, stubs and
plausible mistakes fail with a message that names the mistake."""

import pytest
import torch

from coursekit import wasserstein
from coursekit.check.wasserstein import density_ratio_from_logits, gradient_penalty, mmd2_unbiased

from _helpers import assert_fails, stub


def ratio_ok(logits):
    return torch.exp(logits)


def ratio_naive(logits):  # right maths, overflows in float32
    d = torch.sigmoid(logits)
    return d / (1 - d)


def _k(a, b, h, two=2.0):
    return torch.exp(-((a[:, None] - b[None]) ** 2).sum(-1) / (two * h * h))


def mmd_ok(x, y, h):
    m, n = len(x), len(y)
    kxx, kyy, kxy = _k(x, x, h), _k(y, y, h), _k(x, y, h)
    return ((kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1)) + (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1))
            - 2 * kxy.mean())


def mmd_biased(x, y, h):
    return _k(x, x, h).mean() + _k(y, y, h).mean() - 2 * _k(x, y, h).mean()


def mmd_m2(x, y, h):
    m, n = len(x), len(y)
    kxx, kyy = _k(x, x, h), _k(y, y, h)
    within = (kxx.sum() - kxx.diagonal().sum()) / m**2 + (kyy.sum() - kyy.diagonal().sum()) / n**2
    return within - 2 * _k(x, y, h).mean()


def mmd_no2(x, y, h):
    m, n = len(x), len(y)
    kxx, kyy = _k(x, x, h, 1.0), _k(y, y, h, 1.0)
    return ((kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1)) + (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1))
            - 2 * _k(x, y, h, 1.0).mean())


def mmd_plus(x, y, h):
    return mmd_ok(x, y, h) + 4 * _k(x, y, h).mean()


def mmd_cdist(x, y, h):  # right value, NaN gradient at zero distance (sqrt of 0)
    def k(a, b):
        dist = ((a[:, None] - b[None]) ** 2).sum(-1).sqrt()
        return torch.exp(-dist**2 / (2 * h * h))

    m, n = len(x), len(y)
    kxx, kyy = k(x, x), k(y, y)
    return ((kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1)) + (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1))
            - 2 * k(x, y).mean())


def mmd_numpy(x, y, h):
    return torch.tensor(float(mmd_ok(x, y, h).detach()))


def gp_ok(critic, real, fake, eps):
    xh = (eps * real + (1 - eps) * fake).requires_grad_(True)
    (g,) = torch.autograd.grad(critic(xh).sum(), xh, create_graph=True)
    return ((g.reshape(len(g), -1).norm(dim=1) - 1) ** 2).mean()


def gp_batch(critic, real, fake, eps):
    xh = (eps * real + (1 - eps) * fake).requires_grad_(True)
    (g,) = torch.autograd.grad(critic(xh).sum(), xh, create_graph=True)
    return (g.norm() - 1) ** 2


def gp_sq(critic, real, fake, eps):
    xh = (eps * real + (1 - eps) * fake).requires_grad_(True)
    (g,) = torch.autograd.grad(critic(xh).sum(), xh, create_graph=True)
    return ((g.reshape(len(g), -1).pow(2).sum(1) - 1) ** 2).mean()


def gp_swap(critic, real, fake, eps):
    return gp_ok(critic, fake, real, eps)


def gp_nograph(critic, real, fake, eps):
    xh = (eps * real + (1 - eps) * fake).requires_grad_(True)
    (g,) = torch.autograd.grad(critic(xh).sum(), xh)
    return ((g.reshape(len(g), -1).norm(dim=1) - 1) ** 2).mean()


def gp_axis(critic, real, fake, eps):
    xh = (eps * real + (1 - eps) * fake).requires_grad_(True)
    (g,) = torch.autograd.grad(critic(xh).sum(), xh, create_graph=True)
    return ((g.norm(dim=-1) - 1) ** 2).mean()


def test_solutions_pass_on_150_seeds(capsys):
    for seed in range(150):
        density_ratio_from_logits(ratio_ok, seed=seed)
        mmd2_unbiased(mmd_ok, seed=seed)
        gradient_penalty(gp_ok, seed=seed)
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 450 and all(line.startswith("✓ ") for line in out)


def test_fresh_inputs_by_default(capsys):
    density_ratio_from_logits(ratio_ok)
    mmd2_unbiased(mmd_ok)
    gradient_penalty(gp_ok)
    assert capsys.readouterr().out.count("✓") == 3


def test_the_chapters_module_passes_its_checkers(capsys):
    # the checkers and coursekit.wasserstein teach the same formulas
    for seed in range(5):
        density_ratio_from_logits(wasserstein.density_ratio_from_logits, seed=seed)
        mmd2_unbiased(lambda x, y, h: wasserstein.mmd2_unbiased(x, y, (h,)), seed=seed)
    assert capsys.readouterr().out.count("✓") == 10


@pytest.mark.parametrize("checker", [density_ratio_from_logits, mmd2_unbiased, gradient_penalty])
def test_stub_says_not_implemented(checker):
    assert_fails(checker, stub, "not implemented yet")


@pytest.mark.parametrize("fn, patterns", [
    (torch.sigmoid, ["D / (1 - D)"]),
    (lambda lg: lg.clone(), ["LOG ratio"]),
    (lambda lg: torch.exp(-lg), ["labelled 1"]),
    (ratio_naive, ["large", "exp(logit)"]),
    (lambda lg: torch.exp(lg)[:, None], ["shape"]),
])
def test_ratio_mistakes_are_named(fn, patterns):
    assert_fails(density_ratio_from_logits, fn, *patterns, seed=0)


@pytest.mark.parametrize("fn, patterns", [
    (mmd_biased, ["diagonal", "BIASED"]),
    (mmd_m2, ["m (m - 1)"]),
    (mmd_no2, ["factor 2"]),
    (mmd_plus, ["minus sign"]),
    (mmd_cdist, ["NaN", "squared distances"]),
    (mmd_numpy, ["differentiable"]),
])
def test_mmd_mistakes_are_named(fn, patterns):
    assert_fails(mmd2_unbiased, fn, *patterns, seed=1)


@pytest.mark.parametrize("fn, patterns", [
    (gp_batch, ["PER SAMPLE"]),
    (gp_sq, ["not the squared norm"]),
    (gp_swap, ["eps * real"]),
    (gp_nograph, ["create_graph"]),
    (gp_axis, ["ALL non-batch"]),
])
def test_gradient_penalty_mistakes_are_named(fn, patterns):
    assert_fails(gradient_penalty, fn, *patterns, seed=2)


def test_seed_reproduces_message():
    with pytest.raises(AssertionError) as info:
        mmd2_unbiased(mmd_biased, seed=7)
    assert "seed=7" in str(info.value)
