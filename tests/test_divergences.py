"""Tests for coursekit.divergences: gaussian_kl against independent references (torch.distributions, Monte Carlo,
autograd); the discrete KL, Jensen-Shannon and total-variation divergences against scipy (scipy.special.rel_entr,
scipy.spatial.distance.jensenshannon) and their defining properties."""

import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon
from scipy.special import rel_entr
from torch.distributions import Independent, Normal
from torch.distributions import kl_divergence as torch_kl

from coursekit.divergences import gaussian_kl, js_divergence, kl_divergence, total_variation


def _normal(mu, logvar):
    return Independent(Normal(mu, torch.exp(0.5 * logvar)), 1)


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(1234)


def test_matches_torch_distributions_general(gen):
    shape = (7, 5)
    mu_q, mu_p = (torch.randn(shape, generator=gen, dtype=torch.float64),
                  torch.randn(shape, generator=gen, dtype=torch.float64))
    lv_q = torch.randn(shape, generator=gen, dtype=torch.float64)
    lv_p = torch.randn(shape, generator=gen, dtype=torch.float64)
    got = gaussian_kl(mu_q, lv_q, mu_p, lv_p)
    want = torch_kl(_normal(mu_q, lv_q), _normal(mu_p, lv_p))
    assert got.shape == (7,)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_matches_torch_distributions_std_normal_float32(gen):
    mu = torch.randn(10, 4, generator=gen)
    lv = 2 * torch.randn(10, 4, generator=gen)
    got = gaussian_kl(mu, lv)
    want = torch_kl(_normal(mu, lv), _normal(torch.zeros_like(mu), torch.zeros_like(lv)))
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_hand_computed_value():
    # KL(N(1, 4) || N(0, 1)) = 0.5 * (4 + 1 - 1 - log 4) = 2 - log 2
    got = gaussian_kl(torch.tensor([1.0]), torch.tensor([math.log(4.0)]))
    assert got.shape == ()
    assert abs(float(got) - (2 - math.log(2))) < 1e-6
    # KL(N(0, 1) || N(2, e^2)) = 0.5 * (2 + e^-2 + 4 e^-2 - 1)
    got = gaussian_kl(torch.tensor([0.0]), torch.tensor([0.0]), torch.tensor([2.0]), torch.tensor([2.0]))
    assert abs(float(got) - 0.5 * (2 + 5 * math.exp(-2) - 1)) < 1e-6


def test_monte_carlo_within_4_standard_errors(gen):
    d, n = 3, 200_000
    mu_q = torch.tensor([0.3, -1.0, 2.0], dtype=torch.float64)
    lv_q = torch.tensor([-0.5, 0.4, 0.0], dtype=torch.float64)
    mu_p = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    lv_p = torch.tensor([0.2, -0.3, 1.0], dtype=torch.float64)
    z = mu_q + torch.exp(0.5 * lv_q) * torch.randn(n, d, generator=gen, dtype=torch.float64)
    log_ratio = _normal(mu_q, lv_q).log_prob(z) - _normal(mu_p, lv_p).log_prob(z)
    mc, se = float(log_ratio.mean()), float(log_ratio.std() / math.sqrt(n))
    exact = float(gaussian_kl(mu_q, lv_q, mu_p, lv_p))
    assert abs(mc - exact) < 4 * se, (mc, exact, se)


def test_properties_zero_and_nonnegative(gen):
    mu = torch.randn(50, 6, generator=gen)
    lv = torch.randn(50, 6, generator=gen)
    assert torch.allclose(gaussian_kl(mu, lv, mu, lv), torch.zeros(50), atol=1e-6)
    assert torch.all(gaussian_kl(mu, lv, torch.randn(6, generator=gen), torch.randn(6, generator=gen)) >= 0)
    assert torch.allclose(gaussian_kl(torch.zeros(3, 2), torch.zeros(3, 2)), torch.zeros(3))


def test_kingma_welling_appendix_b_form(gen):
    mu = torch.randn(8, 3, generator=gen, dtype=torch.float64)
    lv = torch.randn(8, 3, generator=gen, dtype=torch.float64)
    neg_kl = 0.5 * (1 + lv - mu**2 - lv.exp()).sum(-1)
    torch.testing.assert_close(gaussian_kl(mu, lv), -neg_kl)


def test_broadcasting(gen):
    mu_q = torch.randn(4, 1, 3, generator=gen, dtype=torch.float64)
    lv_q = torch.randn(3, generator=gen, dtype=torch.float64)
    mu_p = torch.randn(5, 3, generator=gen, dtype=torch.float64)
    lv_p = torch.randn(1, 3, generator=gen, dtype=torch.float64)
    got = gaussian_kl(mu_q, lv_q, mu_p, lv_p)
    assert got.shape == (4, 5)
    b = torch.broadcast_tensors(mu_q, lv_q, mu_p, lv_p)
    torch.testing.assert_close(got, torch_kl(_normal(b[0], b[1]), _normal(b[2], b[3])))


def test_stable_for_huge_log_variances():
    # exp(800) overflows float64, but only the ratio exp(lv_q - lv_p) is needed.
    lv = torch.full((1, 2), 800.0, dtype=torch.float64)
    got = gaussian_kl(torch.zeros(1, 2, dtype=torch.float64), lv,
                      torch.zeros(1, 2, dtype=torch.float64), lv + math.log(2))
    want = 2 * 0.5 * (math.log(2) + 0.5 - 1)
    assert torch.isfinite(got).all() and abs(float(got) - want) < 1e-9


def test_gradients_match_autograd_of_torch_distributions(gen):
    mu = torch.randn(3, 2, generator=gen, dtype=torch.float64, requires_grad=True)
    lv = torch.randn(3, 2, generator=gen, dtype=torch.float64, requires_grad=True)
    g1 = torch.autograd.grad(gaussian_kl(mu, lv).sum(), [mu, lv])
    ref = torch_kl(_normal(mu, lv), _normal(torch.zeros_like(mu), torch.zeros_like(lv))).sum()
    g2 = torch.autograd.grad(ref, [mu, lv])
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b)
    # hand-derived: dKL/dmu = mu, dKL/dlogvar = 0.5 (exp(logvar) - 1)
    torch.testing.assert_close(g1[0], mu.detach())
    torch.testing.assert_close(g1[1], 0.5 * (lv.detach().exp() - 1))


@pytest.mark.parametrize(
    "args, err, match",
    [
        ((torch.zeros(2, 3), torch.zeros(2, 4)), ValueError, "broadcast"),
        ((torch.zeros(2, 3), torch.zeros(2, 3), torch.zeros(4)), ValueError, "broadcast"),
        ((torch.zeros(2, 3), torch.tensor([[0.0, float("inf"), 0.0]] * 2)), ValueError, "logvar_q must be finite"),
        ((torch.tensor([[float("nan"), 0.0]]), torch.zeros(1, 2)), ValueError, "mu_q must be finite"),
        ((torch.zeros(2, 3), torch.zeros(2, 3), None, torch.full((3,), -float("inf"))), ValueError, "logvar_p"),
        ((torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 3)), TypeError, "floating"),
        ((np.zeros((2, 3)), torch.zeros(2, 3)), TypeError, "torch.Tensor"),
        ((torch.tensor(0.0), torch.tensor(0.0)), ValueError, "at least one dimension"),
    ],
)
def test_gaussian_kl_bad_input_raises(args, err, match):
    with pytest.raises(err, match=match):
        gaussian_kl(*args)


# ------------------------------------------------------------------------------- discrete distributions
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
def test_discrete_divergences_bad_input_raises(fn):
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
