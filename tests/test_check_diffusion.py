"""The chapter 08 exercise checkers: correct answers pass, stubs say "not implemented yet" (without chaining
the NotImplementedError), and plausible mistakes get a hint that names them."""

import pytest
import torch

from coursekit import check
from coursekit import diffusion as d


def stub(*args):
    raise NotImplementedError


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
    check.q_sample(q_good, seed=seed)
    check.q_sample(lambda *a: d.q_sample(*a), seed=seed)
    check.posterior_mean_variance(post_good, seed=seed)
    check.posterior_mean_variance(lambda *a: d.q_posterior_mean_variance(*a), seed=seed)
    check.ddim_step(ddim_good, seed=seed)
    out = capsys.readouterr().out
    assert out.count("✓") == 5


@pytest.mark.parametrize("checker", [check.q_sample, check.posterior_mean_variance, check.ddim_step])
def test_stub_says_not_implemented(checker):
    with pytest.raises(AssertionError, match="not implemented yet") as info:
        checker(stub, seed=0)
    assert info.value.__cause__ is None and info.value.__suppress_context__


@pytest.mark.parametrize(
    "checker, fn, hint",
    [
        (check.q_sample, q_no_sqrt, "square roots"),
        (check.q_sample, q_swapped, "swapped"),
        (check.q_sample, q_no_view, r"view\(-1, 1, 1, 1\)"),
        (check.posterior_mean_variance, post_beta, "beta_t, the forward step's variance"),
        (check.posterior_mean_variance, post_swapped, "swapped"),
        (check.ddim_step, ddim_negative_index, "LAST entry"),
        (check.ddim_step, ddim_wrong_direction, "TARGET time"),
    ],
)
def test_mistakes_get_hints(checker, fn, hint):
    with pytest.raises(AssertionError, match=hint):
        checker(fn, seed=3)


def test_failure_message_has_reproducer():
    with pytest.raises(AssertionError, match=r"reproduce with check.q_sample\(fn, seed=5\)"):
        check.q_sample(q_no_sqrt, seed=5)
