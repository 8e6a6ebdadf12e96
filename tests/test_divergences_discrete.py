"""Tests for the discrete divergences of coursekit.divergences (KL, Jensen-Shannon, total variation)
against scipy (scipy.special.rel_entr, scipy.spatial.distance.jensenshannon) and their defining properties."""

import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon
from scipy.special import rel_entr

from coursekit.divergences import js_divergence, kl_divergence, total_variation


def random_simplex(k, n=None, *, seed, zeros=False):
    g = torch.Generator().manual_seed(seed)
    shape = (k,) if n is None else (n, k)
    w = torch.rand(shape, generator=g, dtype=torch.float64) ** 3  # skewed towards small entries
    if zeros:
        w = w * (torch.rand(shape, generator=g, dtype=torch.float64) > 0.4)
        w[..., 0] += 0.1  # at least one positive entry per vector
    return w / w.sum(-1, keepdim=True)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("zeros", [False, True])
def test_js_matches_scipy_squared_distance(seed, zeros):
    """scipy's jensenshannon is the *distance* sqrt(JSD), natural log by default."""
    p, q = random_simplex(7, seed=seed, zeros=zeros), random_simplex(7, seed=100 + seed, zeros=zeros)
    want = jensenshannon(p.numpy(), q.numpy()) ** 2
    assert js_divergence(p, q).item() == pytest.approx(want, abs=1e-12)
    # and base 2 in scipy is JSD / log 2
    assert js_divergence(p, q).item() / math.log(2) == pytest.approx(
        jensenshannon(p.numpy(), q.numpy(), base=2) ** 2, abs=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_kl_matches_scipy_rel_entr_and_batches(seed):
    p, q = random_simplex(5, 4, seed=seed, zeros=True), random_simplex(5, 4, seed=50 + seed)
    want = rel_entr(p.numpy(), q.numpy()).sum(-1)
    got = kl_divergence(p, q)
    assert got.shape == (4,)
    np.testing.assert_allclose(got.numpy(), want, atol=1e-12)


def test_kl_conventions_zero_and_infinity():
    p = torch.tensor([0.5, 0.5, 0.0])
    q = torch.tensor([0.5, 0.0, 0.5])
    assert kl_divergence(p, q).item() == math.inf  # p > 0 where q = 0
    assert kl_divergence(torch.tensor([1.0, 0.0]), torch.tensor([0.5, 0.5])).item() == pytest.approx(math.log(2))
    assert kl_divergence(p, p).item() == 0.0


def test_js_bounds_symmetry_and_extremes():
    p, q = random_simplex(6, 10, seed=3), random_simplex(6, 10, seed=4)
    js = js_divergence(p, q)
    assert torch.all(js >= 0) and torch.all(js <= math.log(2))
    assert torch.allclose(js, js_divergence(q, p), atol=1e-15)
    assert torch.allclose(js_divergence(p, p), torch.zeros(10, dtype=torch.float64), atol=1e-15)
    disjoint_p, disjoint_q = torch.tensor([0.3, 0.7, 0.0, 0.0]), torch.tensor([0.0, 0.0, 0.9, 0.1])
    assert js_divergence(disjoint_p, disjoint_q).item() == pytest.approx(math.log(2), abs=1e-6)


def test_js_equals_definition_via_kl_to_mixture():
    p, q = random_simplex(9, seed=11, zeros=True), random_simplex(9, seed=12, zeros=True)
    m = 0.5 * (p + q)
    assert js_divergence(p, q).item() == pytest.approx(
        (0.5 * kl_divergence(p, m) + 0.5 * kl_divergence(q, m)).item(), abs=1e-14)


def test_total_variation():
    p, q = torch.tensor([0.2, 0.8]), torch.tensor([0.5, 0.5])
    assert total_variation(p, q).item() == pytest.approx(0.3)
    # Pinsker: TV <= sqrt(KL / 2)
    p, q = random_simplex(5, 20, seed=7), random_simplex(5, 20, seed=8)
    assert torch.all(total_variation(p, q) <= torch.sqrt(kl_divergence(p, q) / 2) + 1e-12)


def test_gradients_are_finite_with_zeros():
    p = torch.tensor([0.0, 0.25, 0.75], dtype=torch.float64, requires_grad=True)
    q = torch.tensor([0.5, 0.25, 0.25], dtype=torch.float64)
    js_divergence(p, q).backward()
    assert torch.isfinite(p.grad[1:]).all()


@pytest.mark.parametrize("fn", [js_divergence, kl_divergence, total_variation])
def test_bad_input_raises(fn):
    good = torch.tensor([0.5, 0.5])
    with pytest.raises(ValueError, match="sum to 1"):
        fn(torch.tensor([0.5, 0.6]), good)
    with pytest.raises(ValueError, match="non-negative"):
        fn(torch.tensor([1.5, -0.5]), good)
    with pytest.raises(ValueError, match="NaN"):
        fn(torch.tensor([float("nan"), 0.5]), good)
    with pytest.raises(TypeError, match="torch.Tensor"):
        fn([0.5, 0.5], good)
    with pytest.raises(TypeError, match="floating"):
        fn(torch.tensor([1, 0]), good)
    with pytest.raises(ValueError, match="shape"):
        fn(torch.tensor(1.0), good)
    with pytest.raises(ValueError, match="broadcast"):
        fn(torch.tensor([0.2, 0.3, 0.5]), good)
