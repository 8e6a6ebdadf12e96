"""Tests for coursekit._validate: each check returns its input unchanged, accepts what its docstring accepts and
raises the documented error type with a message that names the argument and says what was expected."""

import math

import numpy as np
import pytest
import torch

from coursekit import _validate as V


def test_check_floating():
    x = torch.zeros(2, 3)
    assert V.check_floating("x", x) is x
    for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        V.check_floating("x", torch.zeros(2, dtype=dtype))
    with pytest.raises(TypeError, match="x must be a floating-point tensor.*got dtype torch.int64"):
        V.check_floating("x", torch.zeros(2, dtype=torch.long))
    with pytest.raises(TypeError, match="floating-point"):
        V.check_floating("x", torch.zeros(2, dtype=torch.bool))
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        V.check_floating("x", np.zeros(2))
    nan = torch.tensor([1.0, float("nan")])
    with pytest.raises(ValueError, match="x must be finite, but it has 1 NaN"):
        V.check_floating("x", nan)
    assert V.check_floating("x", nan, finite=False) is nan


@pytest.mark.parametrize("v, want", [(0, 0.0), (0.0, 0.0), (2.5, 2.5), (np.float32(1.5), 1.5), (torch.tensor(3.0), 3.0),
                                     (torch.tensor([0.25]), 0.25), (torch.tensor(2), 2.0)])
def test_check_nonnegative_float_accepts(v, want):
    got = V.check_nonnegative_float("noise", v)
    assert isinstance(got, float) and got == want


@pytest.mark.parametrize("v, err, match", [
    (-0.1, ValueError, r"noise must be a finite number >= 0, got -0.1"),
    (float("nan"), ValueError, ">= 0"),
    (math.inf, ValueError, "finite"),
    (True, TypeError, "noise must be a real number, got bool"),
    ("0.1", TypeError, "real number"),
    (torch.zeros(2), TypeError, "real number"),
])
def test_check_nonnegative_float_rejects(v, err, match):
    with pytest.raises(err, match=match):
        V.check_nonnegative_float("noise", v)


def test_check_positive_float_unchanged_by_the_shared_conversion():
    assert V.check_positive_float("h", torch.tensor(0.5)) == 0.5
    with pytest.raises(ValueError, match="h must be a finite number > 0, got 0.0"):
        V.check_positive_float("h", 0)
    with pytest.raises(TypeError, match="h must be a real number"):
        V.check_positive_float("h", None)


def test_check_matrix():
    x = torch.zeros(4, 3, dtype=torch.float64)
    assert V.check_matrix("x", x) is x
    assert V.check_matrix("x", x, 3) is x
    assert V.check_matrix("x", torch.zeros(0, 3), 3, min_rows=0).shape == (0, 3)
    with pytest.raises(ValueError, match=r"x must have shape \(N, D\), got shape \(4,\)"):
        V.check_matrix("x", torch.zeros(4))
    with pytest.raises(ValueError, match=r"x must have shape \(N, 2\), got shape \(4, 3\)"):
        V.check_matrix("x", x, 2)
    with pytest.raises(ValueError, match=r"N >= 1 and D >= 1, got shape \(0, 3\)"):
        V.check_matrix("x", torch.zeros(0, 3))
    with pytest.raises(ValueError, match=r"N >= 2 and D >= 1, got shape \(1, 3\)"):
        V.check_matrix("x", torch.zeros(1, 3), min_rows=2)
    with pytest.raises(ValueError, match=r"D >= 1, got shape \(3, 0\)"):
        V.check_matrix("x", torch.zeros(3, 0))
    with pytest.raises(TypeError, match="floating-point"):
        V.check_matrix("x", torch.zeros(4, 3, dtype=torch.int32))
    with pytest.raises(ValueError, match="1 Inf"):
        V.check_matrix("x", torch.tensor([[0.0, math.inf]]))


def test_check_batch():
    x = torch.zeros(2, 1, 8, 8)
    assert V.check_batch("x0", x) is x
    assert V.check_batch("x0", torch.zeros(5)).shape == (5,)
    with pytest.raises(ValueError, match=r"x0 must have a batch dimension, shape \(N, \.\.\.\)"):
        V.check_batch("x0", torch.tensor(1.0))
    with pytest.raises(TypeError, match="floating-point"):
        V.check_batch("x0", x.long())
    with pytest.raises(ValueError, match="NaN"):
        V.check_batch("x0", x * float("nan"))


def test_check_same_shape():
    a, b = torch.zeros(2, 3), torch.ones(2, 3)
    assert V.check_same_shape(a=a, b=b) == (2, 3)
    with pytest.raises(ValueError, match=r"x0 and noise must have the same shape, got x0 \(2, 3\), noise \(3, 2\)"):
        V.check_same_shape(x0=a, noise=torch.zeros(3, 2))
    with pytest.raises(ValueError, match="same shape"):  # no broadcasting
        V.check_same_shape(a=a, b=torch.zeros(1, 3))


def test_check_all_positive_and_weights():
    s = torch.tensor([0.5, 2.0])
    assert V.check_all_positive("stds", s) is s
    with pytest.raises(ValueError, match="stds must be > 0, got minimum -1"):
        V.check_all_positive("stds", torch.tensor([1.0, -1.0]))
    with pytest.raises(ValueError, match="stds must be > 0, got minimum 0"):
        V.check_all_positive("stds", torch.tensor([0.0]))
    with pytest.raises(ValueError, match="finite"):
        V.check_all_positive("stds", torch.tensor([math.inf]))
    w = torch.tensor([0.0, 3.0])
    assert V.check_weights("w", w) is w
    with pytest.raises(ValueError, match=r"w must be >= 0 with a positive sum \(mixture weights\)"):
        V.check_weights("w", torch.tensor([1.0, -0.5]))
    with pytest.raises(ValueError, match="positive sum"):
        V.check_weights("w", torch.zeros(3))
    with pytest.raises(ValueError, match="finite"):
        V.check_weights("w", torch.tensor([float("nan"), 1.0]))


def test_check_nonempty():
    t = torch.zeros(3)
    assert V.check_nonempty("sigmas", t) is t
    with pytest.raises(ValueError, match=r"sigmas must have at least one entry, got shape \(0,\)"):
        V.check_nonempty("sigmas", torch.zeros(0))
    with pytest.raises(TypeError, match="torch.Tensor"):
        V.check_nonempty("sigmas", [1.0])


def test_check_log_values():
    lw = torch.tensor([[0.0, -math.inf], [-1e4, 3.0]])
    assert V.check_log_values("log_w", lw) is lw  # -inf is a zero weight
    with pytest.raises(ValueError, match=r"log_w must not contain NaN or \+inf.*1 NaN and 0 \+inf"):
        V.check_log_values("log_w", torch.tensor([float("nan"), 0.0]))
    with pytest.raises(ValueError, match=r"0 NaN and 2 \+inf"):
        V.check_log_values("log_w", torch.tensor([math.inf, math.inf, 0.0]))
    with pytest.raises(TypeError, match="floating-point"):
        V.check_log_values("log_w", torch.zeros(2, dtype=torch.long))


def test_check_covariance():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(5, 3))
    cov = a @ a.T  # rank 3: PSD with two zero eigenvalues (round-off may make them slightly negative)
    assert V.check_covariance("sigma1", cov) is cov
    assert V.check_covariance("sigma1", cov, 5) is cov
    t = torch.as_tensor(cov)
    assert V.check_covariance("sigma1", t) is t
    with pytest.raises(ValueError, match=r"sigma1 must be a \(3, 3\) covariance matrix, got shape \(5, 5\)"):
        V.check_covariance("sigma1", cov, 3)
    with pytest.raises(ValueError, match=r"\(D, D\)"):
        V.check_covariance("sigma1", np.zeros((2, 3)))
    with pytest.raises(ValueError, match="symmetric"):
        V.check_covariance("sigma1", np.array([[1.0, 0.5], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="positive semi-definite.*smallest eigenvalue is -1"):
        V.check_covariance("sigma1", np.diag([2.0, -1.0]))
    with pytest.raises(ValueError, match="finite"):
        V.check_covariance("sigma1", np.array([[np.nan]]))
    # asymmetry and negative eigenvalues within the round-off tolerance (1e-6 of the largest entry) pass
    V.check_covariance("sigma1", np.array([[1e3, 1e-4], [0.0, 1e-5]]))


def test_check_finite_values():
    for v in (1.5, 3, np.float32(2.0), np.arange(3), np.ones((2, 2)), torch.ones(3), torch.arange(3)):
        assert V.check_finite_values("nats", v) is v
    with pytest.raises(ValueError, match=r"nats must be finite, but it has 1 NaN and 0 Inf entries \(shape \(\)\)"):
        V.check_finite_values("nats", math.nan)
    with pytest.raises(ValueError, match="nats must be finite, but it has 0 NaN and 2 Inf"):
        V.check_finite_values("nats", np.array([1.0, np.inf, -np.inf]))
    with pytest.raises(ValueError, match="nll must be finite, but it has 1 NaN"):
        V.check_finite_values("nll", torch.tensor([0.0, math.nan]))
    for bad in (True, "1.0", [1.0, 2.0], None, np.array(["a"]), np.array([True])):
        with pytest.raises(TypeError, match="nats must be a real number, a numpy array or a tensor"):
            V.check_finite_values("nats", bad)


def test_every_public_check_is_documented():
    for name in V.__all__:
        obj = getattr(V, name)
        if callable(obj):
            assert obj.__doc__ and "Raises" in obj.__doc__, name


def test_time_indices_and_alphas_cumprod():
    t = V.check_time_indices(3, 10, 4, "cpu")
    assert t.dtype == torch.long and t.tolist() == [3, 3, 3, 3]
    assert V.check_time_indices(torch.tensor([0, 9]), 10, 2, "cpu").tolist() == [0, 9]
    assert V.check_time_indices(-1, 10, 1, "cpu", allow_minus_one=True).tolist() == [-1]
    with pytest.raises(ValueError, match=r"t_prev must lie"):
        V.check_time_indices(10, 10, 1, "cpu", name="t_prev")
    with pytest.raises(TypeError, match="integer time"):
        V.check_time_indices(torch.tensor([0.5]), 10, 1, "cpu")
    with pytest.raises(ValueError, match=r"shape \(\) or \(2,\)"):
        V.check_time_indices(torch.tensor([0, 1, 2]), 10, 2, "cpu")
    a = torch.tensor([0.9, 0.5, 0.1])
    assert V.check_alphas_cumprod(a) is a
    for bad in (torch.tensor([0.5, 0.9]), torch.tensor([1.5]), torch.tensor([0.0])):
        with pytest.raises(ValueError, match="alphas_cumprod"):
            V.check_alphas_cumprod(bad)
