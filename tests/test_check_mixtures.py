"""Tests for the chapter 02 (mixtures) checkers in coursekit.check.mixtures: correct solutions pass, stubs and
plausible mistakes fail with a message that names the mistake."""

import pytest
import torch
from torch.distributions import MultivariateNormal

from coursekit import check
from coursekit.check.mixtures import e_step, kmeans_assign, m_step_covariances

from _helpers import assert_fails, assert_fresh_inputs_and_seeded, stub


def test_checkers_are_re_exported():
    assert check.kmeans_assign is kmeans_assign
    assert check.e_step is e_step
    assert check.m_step_covariances is m_step_covariances


# ----------------------------------------------------------------------------- kmeans_assign
def assign_ok(x, centres):
    return torch.cdist(x, centres).argmin(dim=1)


def assign_ok_loop_free(x, centres):
    return ((x[:, None, :] - centres[None]) ** 2).sum(-1).argmin(1)


@pytest.mark.parametrize("fn", [assign_ok, assign_ok_loop_free])
def test_kmeans_assign_correct_passes(fn, capsys):
    for _ in range(3):
        kmeans_assign(fn)
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 3 and all(line.startswith("✓ kmeans_assign passed") for line in out)


def test_kmeans_assign_fresh_inputs_and_seed():
    assert_fresh_inputs_and_seeded(kmeans_assign, assign_ok, seed=3)


@pytest.mark.parametrize(
    "fn, patterns",
    [
        (stub, ["not implemented yet"]),
        (lambda x, c: torch.cdist(x, c).argmax(1), ["farthest", "argmin"]),
        (lambda x, c: torch.cdist(x, c), ["K entries", "argmin", "dim=1"]),
        (lambda x, c: torch.cdist(x, c).argmin(0), ["dim=0"]),
        (lambda x, c: torch.cdist(x, c).argmin(1).float(), ["integer"]),
        (lambda x, c: torch.cdist(x, c[:, :1].expand_as(c)).argmin(1), ["wrong label for point", "expected label"]),
        (lambda x, c: torch.cdist(x, c).argmin(1).numpy(), ["torch.Tensor"]),
    ],
)
def test_kmeans_assign_wrong_fails_helpfully(fn, patterns):
    msg = assert_fails(kmeans_assign, fn, *patterns)
    if fn is not stub:
        assert "seed=" in msg


# ----------------------------------------------------------------------------- e_step
def log_joint(x, w, mu, cov):
    return torch.log(w) + MultivariateNormal(mu, cov).log_prob(x[:, None, :])  # (N, K)


def e_step_ok(x, w, mu, cov):
    lj = log_joint(x, w, mu, cov)
    return torch.exp(lj - torch.logsumexp(lj, dim=1, keepdim=True))


def e_step_naive(x, w, mu, cov):  # right on nearby points, 0/0 far away
    p = torch.exp(log_joint(x, w, mu, cov))
    return p / p.sum(1, keepdim=True)


def test_e_step_correct_passes(capsys):
    e_step(e_step_ok)
    e_step(lambda x, w, mu, cov: torch.softmax(log_joint(x, w, mu, cov), dim=1))
    assert capsys.readouterr().out.count("✓ e_step passed") == 2


def test_e_step_fresh_inputs_and_seed():
    assert_fresh_inputs_and_seeded(e_step, e_step_ok, seed=4)


@pytest.mark.parametrize(
    "fn, patterns",
    [
        (stub, ["not implemented yet"]),
        (e_step_naive, ["far from every component", "nan", "logsumexp"]),
        (lambda x, w, mu, cov: torch.softmax(log_joint(x, w, mu, cov), dim=0), ["dim=1", "columns"]),
        (lambda x, w, mu, cov: torch.log_softmax(log_joint(x, w, mu, cov), dim=1), ["log-responsibilities"]),
        (lambda x, w, mu, cov: torch.softmax(log_joint(x, torch.ones_like(w), mu, cov), dim=1), ["weights"]),
        (lambda x, w, mu, cov: torch.exp(log_joint(x, w, mu, cov)), ["unnormalised", "divide"]),
        (lambda x, w, mu, cov: e_step_ok(x, w, mu, cov).T, ["transpose"]),
        (lambda x, w, mu, cov: torch.softmax(-((x[:, None] - mu[None]) ** 2).sum(-1), dim=1), ["expected r_nk"]),
    ],
)
def test_e_step_wrong_fails_helpfully(fn, patterns):
    msg = assert_fails(e_step, fn, *patterns)
    if fn is not stub:
        assert "seed=" in msg


# ----------------------------------------------------------------------------- m_step_covariances
def cov_ok(x, resp, means):
    nk = resp.sum(0)
    diff = x[None] - means[:, None]
    return torch.einsum("nk,knd,kne->kde", resp, diff, diff) / nk[:, None, None]


def cov_ok_loop(x, resp, means):  # a loop over components is fine
    out = []
    for k in range(means.shape[0]):
        d = x - means[k]
        out.append((resp[:, k, None] * d).T @ d / resp[:, k].sum())
    return torch.stack(out)


@pytest.mark.parametrize("fn", [cov_ok, cov_ok_loop])
def test_m_step_covariances_correct_passes(fn, capsys):
    m_step_covariances(fn)
    assert capsys.readouterr().out.startswith("✓ m_step_covariances passed")


def test_m_step_covariances_fresh_inputs_and_seed():
    assert_fresh_inputs_and_seeded(m_step_covariances, cov_ok, seed=6)


@pytest.mark.parametrize(
    "fn, patterns",
    [
        (stub, ["not implemented yet"]),
        (lambda x, r, m: cov_ok(x, r, m) * r.sum(0)[:, None, None] / x.shape[0], ["divided by N", "N_k"]),
        (lambda x, r, m: cov_ok(x, r, m) * r.sum(0)[:, None, None], ["forgot to divide"]),
        (lambda x, r, m: cov_ok(x, torch.ones_like(r), m) * r.shape[0] / r.sum(0)[:, None, None],
         ["responsibilities are missing"]),
        (lambda x, r, m: cov_ok(x, r, 0 * m), ["centre"]),
        (lambda x, r, m: cov_ok(x, r, m).permute(1, 2, 0), ["component first"]),
        (lambda x, r, m: cov_ok(x, r, m) + 1.0, ["expected Sigma_k"]),
    ],
)
def test_m_step_covariances_wrong_fails_helpfully(fn, patterns):
    msg = assert_fails(m_step_covariances, fn, *patterns)
    if fn is not stub:
        assert "seed=" in msg
