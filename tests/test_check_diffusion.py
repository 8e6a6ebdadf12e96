"""The chapter 08 exercise checkers in coursekit.check.diffusion: correct answers pass, stubs say "not implemented
yet" (without chaining the NotImplementedError), and plausible mistakes get a hint that names them."""

import pytest
import torch

from coursekit import diffusion as d
from coursekit.check.diffusion import ddim_step, posterior_mean_variance, q_sample

from _helpers import stub


def q_good(x0, t, noise, a):
    ab = a[t].view(-1, 1, 1, 1)
    return ab.sqrt() * x0 + (1 - ab).sqrt() * noise


def q_no_sqrt(x0, t, noise, a):
    ab = a[t].view(-1, 1, 1, 1)
    return ab * x0 + (1 - ab) * noise


def q_swapped(x0, t, noise, a):
    ab = a[t].view(-1, 1, 1, 1)
    return (1 - ab).sqrt() * x0 + ab.sqrt() * noise


def q_no_view(x0, t, noise, a):
    return a[t].sqrt() * x0 + (1 - a[t]).sqrt() * noise  # (N,) broadcasts against the last axis


def post_good(x0, xt, t, a):
    ab, ap = a[t].view(-1, 1, 1, 1), a[t - 1].view(-1, 1, 1, 1)
    beta = 1 - ab / ap
    mean = ap.sqrt() * beta / (1 - ab) * x0 + (ab / ap).sqrt() * (1 - ap) / (1 - ab) * xt
    return mean, (1 - ap) / (1 - ab) * beta


def post_beta(x0, xt, t, a):
    mean, _ = post_good(x0, xt, t, a)
    return mean, 1 - a[t] / a[t - 1]


def post_swapped(x0, xt, t, a):
    ab, ap = a[t].view(-1, 1, 1, 1), a[t - 1].view(-1, 1, 1, 1)
    beta = 1 - ab / ap
    mean = ap.sqrt() * beta / (1 - ab) * xt + (ab / ap).sqrt() * (1 - ap) / (1 - ab) * x0
    return mean, (1 - ap) / (1 - ab) * beta


def ddim_good(eps, xt, t, t_prev, a):
    ab = a[t]
    ap = a[t_prev] if t_prev >= 0 else torch.tensor(1.0)
    x0 = (xt - (1 - ab).sqrt() * eps) / ab.sqrt()
    return ap.sqrt() * x0 + (1 - ap).sqrt() * eps


def ddim_negative_index(eps, xt, t, t_prev, a):
    ab, ap = a[t], a[t_prev]
    x0 = (xt - (1 - ab).sqrt() * eps) / ab.sqrt()
    return ap.sqrt() * x0 + (1 - ap).sqrt() * eps


def ddim_wrong_direction(eps, xt, t, t_prev, a):
    ab = a[t]
    ap = a[t_prev] if t_prev >= 0 else torch.tensor(1.0)
    x0 = (xt - (1 - ab).sqrt() * eps) / ab.sqrt()
    return ap.sqrt() * x0 + (1 - ab).sqrt() * eps


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_correct_answers_pass(seed, capsys):
    q_sample(q_good, seed=seed)
    q_sample(lambda *a: d.q_sample(*a), seed=seed)
    posterior_mean_variance(post_good, seed=seed)
    posterior_mean_variance(lambda *a: d.q_posterior_mean_variance(*a), seed=seed)
    ddim_step(ddim_good, seed=seed)
    out = capsys.readouterr().out
    assert out.count("✓") == 5


@pytest.mark.parametrize("checker", [q_sample, posterior_mean_variance, ddim_step])
def test_stub_says_not_implemented(checker):
    with pytest.raises(AssertionError, match="not implemented yet") as info:
        checker(stub, seed=0)
    assert info.value.__cause__ is None and info.value.__suppress_context__


@pytest.mark.parametrize(
    "checker, fn, hint",
    [
        (q_sample, q_no_sqrt, "square roots"),
        (q_sample, q_swapped, "swapped"),
        (q_sample, q_no_view, r"view\(-1, 1, 1, 1\)"),
        (posterior_mean_variance, post_beta, "beta_t, the forward step's variance"),
        (posterior_mean_variance, post_swapped, "swapped"),
        (ddim_step, ddim_negative_index, "LAST entry"),
        (ddim_step, ddim_wrong_direction, "TARGET time"),
    ],
)
def test_mistakes_get_hints(checker, fn, hint):
    with pytest.raises(AssertionError, match=hint):
        checker(fn, seed=3)


def test_failure_message_has_reproducer():
    with pytest.raises(AssertionError, match=r"reproduce with check.q_sample\(fn, seed=5\)"):
        q_sample(q_no_sqrt, seed=5)
