"""Tests for coursekit.runtime: profiles and budgets, seeding, device choice, Colab detection, setup()."""

import dataclasses
import random
import re

import numpy as np
import pytest
import torch

from coursekit import runtime


@pytest.fixture
def no_profile_env(monkeypatch):
    monkeypatch.delenv("COURSEKIT_PROFILE", raising=False)


def test_profiles_constant():
    assert runtime.PROFILES == ("smoke", "cpu", "gpu")


@pytest.mark.parametrize("name", ["smoke", "cpu", "gpu"])
def test_profile_from_env(monkeypatch, name):
    monkeypatch.setenv("COURSEKIT_PROFILE", name)
    assert runtime.get_profile() == name


def test_profile_env_is_case_and_space_insensitive(monkeypatch):
    monkeypatch.setenv("COURSEKIT_PROFILE", "  SMOKE ")
    assert runtime.get_profile() == "smoke"


def test_unknown_profile_lists_valid_names(monkeypatch):
    monkeypatch.setenv("COURSEKIT_PROFILE", "fast")
    with pytest.raises(ValueError, match="fast") as err:
        runtime.get_profile()
    for name in runtime.PROFILES:
        assert name in str(err.value)


def test_default_profile_follows_cuda(monkeypatch, no_profile_env):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert runtime.get_profile() == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert runtime.get_profile() == "gpu"


def test_empty_env_means_automatic(monkeypatch):
    monkeypatch.setenv("COURSEKIT_PROFILE", "")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert runtime.get_profile() == "cpu"


@pytest.mark.parametrize("name, expected", [("smoke", 10), ("cpu", 1_000), ("gpu", 50_000)])
def test_budget_follows_env(monkeypatch, name, expected):
    monkeypatch.setenv("COURSEKIT_PROFILE", name)
    assert runtime.budget(smoke=10, cpu=1_000, gpu=50_000) == expected


def test_budget_explicit_profile_wins_and_returns_value_unchanged(monkeypatch):
    monkeypatch.setenv("COURSEKIT_PROFILE", "gpu")
    cfg = {"hidden": (64, 64)}
    assert runtime.budget(smoke=cfg, cpu=None, gpu=0, profile="smoke") is cfg


def test_budget_rejects_bad_profile_and_positional_use(monkeypatch):
    with pytest.raises(ValueError, match="smoke"):
        runtime.budget(smoke=1, cpu=2, gpu=3, profile="tiny")
    monkeypatch.setenv("COURSEKIT_PROFILE", "nope")
    with pytest.raises(ValueError, match="COURSEKIT_PROFILE"):
        runtime.budget(smoke=1, cpu=2, gpu=3)
    with pytest.raises(TypeError):
        runtime.budget(1, 2, 3)  # keyword-only, so the budgets cannot be swapped by accident


def test_validate_profile_canonicalises_and_names_the_source():
    assert runtime.validate_profile(" CPU ") == "cpu"
    assert [runtime.validate_profile(p) for p in runtime.PROFILES] == list(runtime.PROFILES)
    with pytest.raises(
        ValueError, match=r"'tiny' \(passed to run_bench\(\)\); valid profiles are 'smoke', 'cpu', 'gpu'"
    ):
        runtime.validate_profile("tiny", "passed to run_bench()")
    with pytest.raises(TypeError, match="profile must be a string"):
        runtime.validate_profile(None)


def _draw():
    return random.random(), float(np.random.rand()), torch.rand(3)


def test_seed_everything_is_deterministic():
    runtime.seed_everything(123)
    a = _draw()
    runtime.seed_everything(123)
    b = _draw()
    runtime.seed_everything(124)
    c = _draw()
    assert a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2])
    assert a[0] != c[0] and a[1] != c[1] and not torch.equal(a[2], c[2])


@pytest.mark.parametrize("seed, exc", [(-1, ValueError), (2**32, ValueError), (1.5, TypeError), ("0", TypeError)])
def test_seed_everything_rejects_bad_seeds(seed, exc):
    with pytest.raises(exc):
        runtime.seed_everything(seed)


def test_get_device_order(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert runtime.get_device() == torch.device("cpu")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert runtime.get_device() == torch.device("mps")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert runtime.get_device() == torch.device("cuda")


def test_in_colab(monkeypatch):
    monkeypatch.delenv("COLAB_RELEASE_TAG", raising=False)
    assert runtime.in_colab() is False
    monkeypatch.setenv("COLAB_RELEASE_TAG", "release-colab_20250101")
    assert runtime.in_colab() is True


def test_setup_prints_one_line_and_seeds(monkeypatch, capsys):
    monkeypatch.setenv("COURSEKIT_PROFILE", "smoke")
    monkeypatch.delenv("COLAB_RELEASE_TAG", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # same answer on a GPU machine
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    rt = runtime.setup(seed=7)
    first = torch.rand(2)
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    assert re.fullmatch(r"coursekit \S+ \| profile=smoke \| device=cpu \| torch [\w.]+ \| seed=7\n", out), out
    assert rt == runtime.Runtime(device=torch.device("cpu"), profile="smoke", seed=7, in_colab=False)
    with pytest.raises(dataclasses.FrozenInstanceError):
        rt.seed = 8
    runtime.setup(seed=7, verbose=False)
    assert torch.equal(torch.rand(2), first)
    assert capsys.readouterr().out == ""


def test_setup_rejects_bad_profile(monkeypatch):
    monkeypatch.setenv("COURSEKIT_PROFILE", "laptop")
    with pytest.raises(ValueError, match="valid profiles"):
        runtime.setup()
