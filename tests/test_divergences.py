"""Tests for coursekit.divergences: gaussian_kl against independent references (torch.distributions, Monte Carlo,
autograd); the discrete KL, Jensen-Shannon and total-variation divergences against scipy (scipy.special.rel_entr,
scipy.spatial.distance.jensenshannon) and their defining properties; the entropies, Hellinger, mutual information
and W1 of chapter 01 against scipy.stats, sklearn.metrics and closed forms; the Gaussian closed forms against
torch.distributions and quadrature; the maximum-likelihood fits and the generative classifier."""

import math

import numpy as np
import pytest
import scipy.stats
import torch
from scipy.integrate import quad
from scipy.spatial.distance import jensenshannon
from scipy.special import rel_entr
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.metrics import mutual_info_score
from torch.distributions import Categorical, Independent, MultivariateNormal, Normal
from torch.distributions import kl_divergence as torch_kl

from coursekit import train
from coursekit.divergences import (
    GaussianModel,
    conditional_entropy,
    cross_entropy,
    entropy,
    fit_gaussian_classifier,
    gaussian_entropy,
    gaussian_hellinger,
    gaussian_kl,
    gaussian_log_prob,
    gaussian_mle,
    hellinger,
    js_divergence,
    kl_divergence,
    kl_from_log_probs,
    monte_carlo_mean,
    mutual_information,
    total_variation,
    wasserstein1_grid,
)


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


# ------------------------------------------------------------------------------- entropies (chapter 01)
@pytest.mark.parametrize("seed", range(4))
def test_entropy_matches_scipy_and_torch(seed):
    p = random_simplex(6, 5, seed=seed, zeros=True)
    got = entropy(p)
    assert got.shape == (5,) and got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), scipy.stats.entropy(p.numpy(), axis=-1), atol=1e-12)
    torch.testing.assert_close(got, Categorical(probs=p).entropy())


def test_entropy_worked_values():
    assert entropy(torch.tensor([0.0, 1.0, 0.0])).item() == 0.0  # a point mass
    assert entropy(torch.full((4,), 0.25)).item() / math.log(2) == pytest.approx(2.0, abs=1e-6)  # 2 bits
    p = random_simplex(8, 50, seed=9)
    assert torch.all(entropy(p) <= math.log(8) + 1e-12)  # the uniform distribution is the maximum
    assert entropy(torch.full((8,), 1 / 8, dtype=torch.float64)).item() == pytest.approx(math.log(8), abs=1e-14)
    assert entropy(torch.tensor([0.2, 0.8], dtype=torch.float32)).dtype == torch.float32


def test_cross_entropy_is_entropy_plus_kl_and_can_be_infinite():
    p, q = random_simplex(7, 6, seed=1, zeros=True), random_simplex(7, 6, seed=2)
    want = -(p.numpy() * np.log(q.numpy())).sum(-1)
    np.testing.assert_allclose(cross_entropy(p, q).numpy(), want, atol=1e-12)
    torch.testing.assert_close(cross_entropy(p, q), entropy(p) + kl_divergence(p, q))
    assert torch.all(cross_entropy(p, q) >= entropy(p))  # Gibbs
    assert cross_entropy(torch.tensor([0.5, 0.5]), torch.tensor([1.0, 0.0])).item() == math.inf
    # the classification loss is the cross-entropy from a one-hot p
    logits = torch.randn(4, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y = torch.tensor([0, 2, 1, 2])
    ours = cross_entropy(torch.nn.functional.one_hot(y, 3).double(), torch.softmax(logits, -1))
    torch.testing.assert_close(ours, torch.nn.functional.cross_entropy(logits, y, reduction="none"))


def test_kl_from_log_probs_matches_kl_divergence_and_scipy():
    p, q = random_simplex(9, 4, seed=3, zeros=True), random_simplex(9, 4, seed=4)
    got = kl_from_log_probs(p.log(), q.log())
    torch.testing.assert_close(got, kl_divergence(p, q))
    np.testing.assert_allclose(got.numpy(), scipy.stats.entropy(p.numpy(), q.numpy(), axis=-1), atol=1e-12)
    # q = 0 where p > 0: infinite; p = 0 = q: no NaN
    lp = torch.tensor([0.5, 0.5, 0.0]).log()
    assert kl_from_log_probs(lp, torch.tensor([0.5, 0.0, 0.5]).log()).item() == math.inf
    assert kl_from_log_probs(lp, torch.tensor([0.25, 0.75, 0.0]).log()).item() == pytest.approx(
        kl_divergence(torch.tensor([0.5, 0.5, 0.0]), torch.tensor([0.25, 0.75, 0.0])).item(), abs=1e-6)


def test_kl_from_log_probs_keeps_underflowing_tails_and_has_finite_gradients():
    # two unit Gaussians 40 apart on a grid: the probabilities underflow, the log-probabilities do not
    x = torch.linspace(-30, 70, 4001, dtype=torch.float64)
    mu = torch.tensor(40.0, dtype=torch.float64, requires_grad=True)
    lp = torch.log_softmax(-0.5 * x**2, -1)
    lq = torch.log_softmax(-0.5 * (x - mu) ** 2, -1)
    kl = kl_from_log_probs(lp, lq)
    assert kl.item() == pytest.approx(40.0**2 / 2, rel=1e-6)  # closed form (mu_p - mu_q)^2 / 2
    assert kl_divergence(lp.exp(), lq.exp().detach()).item() == math.inf  # the probability domain fails
    kl.backward()
    assert mu.grad.item() == pytest.approx(40.0, rel=1e-6)  # d/dmu mu^2 / 2


def test_kl_from_log_probs_bad_input():
    good = torch.tensor([0.5, 0.5]).log()
    with pytest.raises(ValueError, match="normalised"):
        kl_from_log_probs(torch.tensor([0.0, 0.0]), good)
    with pytest.raises(ValueError, match="NaN"):
        kl_from_log_probs(torch.tensor([float("nan"), 0.0]), good)
    with pytest.raises(ValueError, match="broadcast"):
        kl_from_log_probs(torch.full((3,), 1 / 3).log(), good)
    with pytest.raises(TypeError, match="floating"):
        kl_from_log_probs(torch.tensor([0, 0]), good)


# ------------------------------------------------------------------------------- Hellinger and W1
@pytest.mark.parametrize("seed", range(3))
def test_hellinger_matches_bhattacharyya_and_euclidean_forms(seed):
    p, q = random_simplex(6, 10, seed=seed, zeros=True), random_simplex(6, 10, seed=20 + seed, zeros=True)
    got = hellinger(p, q)
    bc = np.sqrt(p.numpy() * q.numpy()).sum(-1)
    np.testing.assert_allclose(got.numpy(), np.sqrt(1 - bc), atol=1e-7)
    euclid = [scipy.spatial.distance.euclidean(np.sqrt(a), np.sqrt(b)) / math.sqrt(2) for a, b in zip(p.numpy(),
                                                                                                       q.numpy())]
    np.testing.assert_allclose(got.numpy(), euclid, atol=1e-12)


def test_hellinger_bounds_and_extremes():
    p, q = random_simplex(5, 200, seed=5), random_simplex(5, 200, seed=6)
    h, tv, kl = hellinger(p, q), total_variation(p, q), kl_divergence(p, q)
    assert torch.all(h**2 <= tv + 1e-12) and torch.all(tv <= math.sqrt(2) * h + 1e-12)
    assert torch.all(kl >= -2 * torch.log1p(-(h**2)) - 1e-12)
    assert torch.all(-2 * torch.log1p(-(h**2)) >= 2 * h**2)
    assert torch.allclose(hellinger(q, p), h, atol=1e-15)
    assert hellinger(p[0], p[0]).item() == 0.0
    assert hellinger(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])).item() == 1.0


@pytest.mark.parametrize("seed", range(4))
def test_wasserstein1_grid_matches_scipy(seed):
    g = torch.Generator().manual_seed(seed)
    support = torch.sort(torch.randn(12, generator=g, dtype=torch.float64) * 3).values
    p, q = random_simplex(12, seed=seed, zeros=True), random_simplex(12, seed=40 + seed, zeros=True)
    want = scipy.stats.wasserstein_distance(support.numpy(), support.numpy(), p.numpy(), q.numpy())
    assert wasserstein1_grid(p, q, support).item() == pytest.approx(want, abs=1e-12)


def test_wasserstein1_grid_of_a_translate_is_the_shift_and_batches():
    x = torch.arange(100, dtype=torch.float64) * 0.1
    bump = torch.zeros(100, dtype=torch.float64)
    bump[10:20] = torch.linspace(1, 2, 10, dtype=torch.float64)
    bump = bump / bump.sum()
    shifts = [0, 3, 10, 50]
    q = torch.stack([torch.roll(bump, k) for k in shifts])
    got = wasserstein1_grid(bump, q, x)
    assert got.shape == (4,)
    np.testing.assert_allclose(got.numpy(), [0.1 * k for k in shifts], atol=1e-12)


def test_wasserstein1_grid_bad_support():
    p = torch.tensor([0.5, 0.5])
    with pytest.raises(ValueError, match="strictly increasing"):
        wasserstein1_grid(p, p, torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match="shape"):
        wasserstein1_grid(p, p, torch.tensor([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match="NaN"):
        wasserstein1_grid(p, p, torch.tensor([0.0, float("nan")]))


# ------------------------------------------------------------------------------- joint tables
def random_joint(k, l, n=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    counts = torch.randint(0, 6, (k, l) if n is None else (n, k, l), generator=g)
    counts[..., 0, 0] += 1
    return counts, counts.double() / counts.sum(dim=(-2, -1), keepdim=True)


@pytest.mark.parametrize("seed", range(5))
def test_mutual_information_matches_sklearn(seed):
    counts, joint = random_joint(4, 5, seed=seed)
    want = mutual_info_score(None, None, contingency=counts.numpy())
    assert mutual_information(joint).item() == pytest.approx(want, abs=1e-12)


def test_mutual_information_is_kl_to_product_and_entropy_identities():
    _, joint = random_joint(3, 6, n=7, seed=11)
    mi = mutual_information(joint)
    assert mi.shape == (7,)
    p_x, p_y = joint.sum(-1), joint.sum(-2)
    product = (p_x[:, :, None] * p_y[:, None, :]).reshape(7, -1)
    torch.testing.assert_close(mi, kl_divergence(joint.reshape(7, -1), product))
    h_y_given_x = conditional_entropy(joint)
    torch.testing.assert_close(mi, entropy(p_y) - h_y_given_x)
    torch.testing.assert_close(mi, entropy(p_x) + entropy(p_y) - entropy(joint.reshape(7, -1)))
    # swapping the roles of X and Y leaves I unchanged
    torch.testing.assert_close(mi, mutual_information(joint.transpose(-1, -2)))
    assert torch.all(mi <= torch.minimum(entropy(p_x), entropy(p_y)) + 1e-12)


def test_conditional_entropy_matches_scipy_and_extremes():
    _, joint = random_joint(4, 3, seed=2)
    h_xy = scipy.stats.entropy(joint.numpy().reshape(-1))
    h_x = scipy.stats.entropy(joint.numpy().sum(-1))
    assert conditional_entropy(joint).item() == pytest.approx(h_xy - h_x, abs=1e-12)
    # y a function of x: H(Y | X) = 0; independent: H(Y | X) = H(Y) and I = 0
    det = torch.tensor([[0.2, 0.0], [0.0, 0.5], [0.3, 0.0]], dtype=torch.float64)
    assert conditional_entropy(det).item() == pytest.approx(0.0, abs=1e-15)
    px, py = torch.tensor([0.3, 0.7], dtype=torch.float64), torch.tensor([0.1, 0.6, 0.3], dtype=torch.float64)
    indep = px[:, None] * py[None, :]
    assert conditional_entropy(indep).item() == pytest.approx(entropy(py).item(), abs=1e-12)
    assert mutual_information(indep).item() == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("fn", [mutual_information, conditional_entropy])
def test_joint_table_bad_input(fn):
    with pytest.raises(ValueError, match=r"\(\.\.\., K, L\)"):
        fn(torch.tensor([0.5, 0.5]))
    with pytest.raises(ValueError, match="sum to 1"):
        fn(torch.full((2, 2), 0.3))
    with pytest.raises(ValueError, match="non-negative"):
        fn(torch.tensor([[1.5, -0.5], [0.0, 0.0]]))
    with pytest.raises(ValueError, match="NaN"):
        fn(torch.tensor([[float("nan"), 0.5], [0.25, 0.25]]))
    with pytest.raises(TypeError, match="torch.Tensor"):
        fn([[0.5, 0.5]])
    with pytest.raises(TypeError, match="floating"):
        fn(torch.tensor([[1, 0], [0, 0]]))


@pytest.mark.parametrize("fn", [entropy, hellinger, cross_entropy])
def test_new_discrete_functions_bad_input(fn):
    args = (lambda a: (a,)) if fn is entropy else (lambda a: (a, torch.tensor([0.5, 0.5])))
    with pytest.raises(ValueError, match="sum to 1"):
        fn(*args(torch.tensor([0.5, 0.6])))
    with pytest.raises(ValueError, match="non-negative"):
        fn(*args(torch.tensor([1.5, -0.5])))
    with pytest.raises(ValueError, match="NaN"):
        fn(*args(torch.tensor([float("nan"), 0.5])))
    with pytest.raises(TypeError, match="floating"):
        fn(*args(torch.tensor([1, 0])))
    if fn is not entropy:
        with pytest.raises(ValueError, match="broadcast"):
            fn(torch.tensor([0.2, 0.3, 0.5]), torch.tensor([0.5, 0.5]))


# ------------------------------------------------------------------------------- Gaussians
def test_gaussian_entropy_matches_torch_and_worked_value(gen):
    lv = torch.randn(6, 4, generator=gen, dtype=torch.float64)
    got = gaussian_entropy(lv)
    assert got.shape == (6,)
    torch.testing.assert_close(got, Normal(torch.zeros_like(lv), (0.5 * lv).exp()).entropy().sum(-1))
    sigma = 0.1  # 0.5 log(2 pi e sigma^2) < 0
    h = gaussian_entropy(torch.tensor([2 * math.log(sigma)])).item()
    assert h == pytest.approx(0.5 * math.log(2 * math.pi * math.e * sigma**2)) and h < 0


def test_gaussian_entropy_of_a_full_covariance_via_eigenvalues(gen):
    a = torch.randn(4, 4, generator=gen, dtype=torch.float64)
    cov = a @ a.T + 0.5 * torch.eye(4, dtype=torch.float64)
    want = MultivariateNormal(torch.zeros(4, dtype=torch.float64), cov).entropy()
    torch.testing.assert_close(gaussian_entropy(torch.linalg.eigvalsh(cov).log()), want)


@pytest.mark.parametrize("mu_p, s_p, mu_q, s_q", [(0.0, 1.0, 0.0, 1.0), (0.0, 1.0, 1.5, 0.5), (-2.0, 0.3, 1.0, 2.0)])
def test_gaussian_hellinger_matches_quadrature(mu_p, s_p, mu_q, s_q):
    bc, _ = quad(lambda x: math.sqrt(scipy.stats.norm.pdf(x, mu_p, s_p) * scipy.stats.norm.pdf(x, mu_q, s_q)),
                 -30, 30, points=[mu_p, mu_q], limit=200)
    got = gaussian_hellinger(torch.tensor([mu_p]), torch.tensor([2 * math.log(s_p)]),
                             torch.tensor([mu_q]), torch.tensor([2 * math.log(s_q)]))
    assert got.item() == pytest.approx(math.sqrt(max(0.0, 1 - bc)), abs=1e-6)


def test_gaussian_hellinger_product_over_coordinates_and_bounds(gen):
    mu_p, mu_q = torch.randn(2, 5, 3, generator=gen, dtype=torch.float64)
    lv_p, lv_q = torch.randn(2, 5, 3, generator=gen, dtype=torch.float64)
    h = gaussian_hellinger(mu_p, lv_p, mu_q, lv_q)
    per_dim = gaussian_hellinger(mu_p[..., None], lv_p[..., None], mu_q[..., None], lv_q[..., None])  # (5, 3)
    torch.testing.assert_close(1 - h**2, (1 - per_dim**2).prod(-1))  # BC factorises
    assert torch.all(gaussian_kl(mu_p, lv_p, mu_q, lv_q) >= -2 * torch.log1p(-(h**2)) - 1e-10)
    torch.testing.assert_close(gaussian_hellinger(mu_q, lv_q, mu_p, lv_p), h)
    assert gaussian_hellinger(mu_p, lv_p, mu_p, lv_p).abs().max().item() < 1e-6


def test_gaussian_log_prob_matches_torch_with_broadcasting(gen):
    a = torch.randn(3, 4, 4, generator=gen, dtype=torch.float64)
    cov = a @ a.transpose(-1, -2) + 0.1 * torch.eye(4, dtype=torch.float64)
    mean = torch.randn(3, 4, generator=gen, dtype=torch.float64)
    x = torch.randn(7, 1, 4, generator=gen, dtype=torch.float64)
    got = gaussian_log_prob(x, mean, cov)
    assert got.shape == (7, 3)
    torch.testing.assert_close(got, MultivariateNormal(mean, cov).log_prob(x))


def test_gaussian_log_prob_bad_input():
    eye = torch.eye(2)
    with pytest.raises(ValueError, match="positive definite"):
        gaussian_log_prob(torch.zeros(2), torch.zeros(2), torch.tensor([[1.0, 2.0], [2.0, 1.0]]))
    with pytest.raises(ValueError, match=r"\(\.\.\., D, D\)"):
        gaussian_log_prob(torch.zeros(3), torch.zeros(3), eye)
    with pytest.raises(ValueError, match="NaN"):
        gaussian_log_prob(torch.tensor([float("nan"), 0.0]), torch.zeros(2), eye)
    with pytest.raises(TypeError, match="floating"):
        gaussian_log_prob(torch.zeros(2, dtype=torch.long), torch.zeros(2), eye)


def test_gaussian_mle_matches_numpy_and_is_a_stationary_point(gen):
    x = torch.randn(50, 3, generator=gen, dtype=torch.float64) @ torch.tensor(
        [[1.0, 0.5, 0.0], [0.0, 1.0, 0.3], [0.0, 0.0, 0.2]], dtype=torch.float64) + 2.0
    mean, cov = gaussian_mle(x)
    np.testing.assert_allclose(mean.numpy(), x.numpy().mean(0), atol=1e-12)
    np.testing.assert_allclose(cov.numpy(), np.cov(x.numpy().T, bias=True), atol=1e-12)
    m, c = mean.clone().requires_grad_(True), cov.clone().requires_grad_(True)
    nll = -MultivariateNormal(m, c).log_prob(x).sum()
    gm, gc = torch.autograd.grad(nll, (m, c))
    assert gm.abs().max() < 1e-9 and gc.abs().max() < 1e-9
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        gaussian_mle(torch.zeros(5))


def test_gaussian_model_log_prob_rsample_and_init(gen):
    a = torch.randn(3, 3, generator=gen, dtype=torch.float64)
    cov = a @ a.T + 0.2 * torch.eye(3, dtype=torch.float64)
    loc = torch.randn(3, generator=gen, dtype=torch.float64)
    model = GaussianModel(3, loc=loc, cov=cov, dtype=torch.float64)
    torch.testing.assert_close(model.covariance().detach(), cov)
    x = torch.randn(10, 3, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(model.log_prob(x), MultivariateNormal(loc, cov).log_prob(x))
    eps = torch.randn(20000, 3, generator=gen, dtype=torch.float64)
    s = model.rsample(eps)
    emp_mean, emp_cov = gaussian_mle(s.detach())
    assert (emp_mean - loc).abs().max() < 4 * cov.diagonal().max().sqrt() / math.sqrt(20000)
    assert (emp_cov - cov).abs().max() < 0.1 * cov.abs().max()
    s.sum().backward()  # differentiable in the parameters
    assert model.loc.grad is not None and torch.isfinite(model.raw_tril.grad).all()
    assert GaussianModel(2).sample(5, generator=torch.Generator().manual_seed(0)).shape == (5, 2)
    with pytest.raises(ValueError, match="shape"):
        model.log_prob(torch.zeros(4, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match="positive definite"):
        GaussianModel(2, cov=torch.tensor([[1.0, 2.0], [2.0, 1.0]]))


def test_gaussian_model_fitted_by_gradient_descent_reaches_the_mle():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(400, 2, generator=g) @ torch.tensor([[1.0, 0.8], [0.0, 0.5]]) + torch.tensor([1.0, -2.0])
    model = GaussianModel(2)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    train.fit(model, opt, lambda m, batch: -m.log_prob(batch).mean(), x, steps=600, batch_size=400, progress=False)
    mean, cov = gaussian_mle(x)
    assert (model.loc.detach() - mean).abs().max() < 1e-2
    assert (model.covariance().detach() - cov).abs().max() < 1e-2
    nll_mle = -MultivariateNormal(mean, cov).log_prob(x).mean()
    assert -model.log_prob(x).mean().item() == pytest.approx(nll_mle.item(), abs=1e-3)


# ------------------------------------------------------------------------------- the generative classifier
def _labelled(n=300, d=3, c=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % c
    x = torch.randn(n, d, generator=g, dtype=torch.float64) + 2.0 * torch.randn(c, d, generator=g,
                                                                                dtype=torch.float64)[y]
    return x, y


def test_shared_covariance_classifier_matches_sklearn_lda():
    x, y = _labelled()
    clf = fit_gaussian_classifier(x, y, 3, shared_covariance=True, reg=0.0)
    lda = LinearDiscriminantAnalysis(solver="lsqr").fit(x.numpy(), y.numpy())
    np.testing.assert_allclose(clf.predict_proba(x).numpy(), lda.predict_proba(x.numpy()), atol=1e-8)
    assert torch.equal(clf.predict(x), torch.as_tensor(lda.predict(x.numpy())))


def test_per_class_classifier_is_bayes_rule_with_scipy_densities():
    x, y = _labelled(seed=1)
    clf = fit_gaussian_classifier(x, y, 3, shared_covariance=False, reg=0.1)
    xn, yn = x.numpy(), y.numpy()
    log_joint = np.stack([np.log(np.mean(yn == c)) + scipy.stats.multivariate_normal(
        xn[yn == c].mean(0), np.cov(xn[yn == c].T, bias=True) + 0.1 * np.eye(3)).logpdf(xn) for c in range(3)], -1)
    np.testing.assert_allclose(clf.log_joint(x).numpy(), log_joint, atol=1e-10)
    np.testing.assert_allclose(clf.log_prob(x).numpy(), scipy.special.logsumexp(log_joint, -1), atol=1e-10)
    np.testing.assert_allclose(clf.predict_proba(x).sum(-1).numpy(), 1.0, atol=1e-12)


def test_classifier_sampling_matches_the_model():
    x, y = _labelled(seed=2)
    clf = fit_gaussian_classifier(x, y, 3, shared_covariance=False, reg=0.0)
    xs, cs = clf.sample(30000, generator=torch.Generator().manual_seed(0))
    assert xs.shape == (30000, 3) and cs.shape == (30000,)
    freq = torch.bincount(cs, minlength=3).double() / 30000
    assert (freq - clf.log_priors.exp()).abs().max() < 4 * math.sqrt(0.25 / 30000)
    for c in range(3):
        mean, cov = gaussian_mle(xs[cs == c])
        assert (mean - clf.means[c]).abs().max() < 0.1 and (cov - clf.covariances[c]).abs().max() < 0.15


def test_impute_matches_the_conditional_gaussian_formula():
    x, y = _labelled(n=200, d=4, c=2, seed=3)
    clf = fit_gaussian_classifier(x, y, 2, shared_covariance=False, reg=0.05)
    missing = torch.tensor([False, True, False, True])
    filled = clf.impute(x[:5], missing)
    assert torch.equal(filled[:, ~missing], x[:5, ~missing])
    o, m = [0, 2], [1, 3]
    xn = x[:5].numpy()
    for i in range(5):
        w, cond = [], []
        for c in range(2):
            mu, s = clf.means[c].numpy(), clf.covariances[c].numpy()
            w.append(clf.log_priors[c].exp().item()
                     * scipy.stats.multivariate_normal(mu[o], s[np.ix_(o, o)]).pdf(xn[i, o]))
            cond.append(mu[m] + s[np.ix_(m, o)] @ np.linalg.solve(s[np.ix_(o, o)], xn[i, o] - mu[o]))
        w = np.array(w) / sum(w)
        np.testing.assert_allclose(filled[i, m].numpy(), w @ np.array(cond), atol=1e-8)
    with pytest.raises(ValueError, match="missing"):
        clf.impute(x[:5], torch.zeros(4, dtype=torch.bool))


def test_fit_gaussian_classifier_bad_input():
    x, y = _labelled(n=30, c=3)
    with pytest.raises(ValueError, match="no"):
        fit_gaussian_classifier(x, torch.zeros(30, dtype=torch.long), 3)
    with pytest.raises(ValueError, match="0..2"):
        fit_gaussian_classifier(x, y + 1, 3)
    with pytest.raises(ValueError, match=">= 0"):
        fit_gaussian_classifier(x, y, 3, reg=-1.0)
    with pytest.raises(TypeError, match="integer"):
        fit_gaussian_classifier(x, y.double(), 3)


# ------------------------------------------------------------------------------- Monte Carlo
def test_monte_carlo_mean_and_standard_error(gen):
    v = torch.randn(1000, 3, generator=gen, dtype=torch.float64) * 2 + 1
    mean, se = monte_carlo_mean(v)
    np.testing.assert_allclose(mean.numpy(), v.numpy().mean(0), atol=1e-14)
    np.testing.assert_allclose(se.numpy(), v.numpy().std(0, ddof=1) / math.sqrt(1000), atol=1e-14)
    # E[X^2] = mu^2 + sigma^2 for X ~ N(1, 4): within 4 standard errors
    est, err = monte_carlo_mean(v[:, 0] ** 2)
    assert abs(est.item() - 5.0) < 4 * err.item()
    with pytest.raises(ValueError, match="S >= 2"):
        monte_carlo_mean(torch.zeros(1))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_discrete_functions_keep_the_dtype_and_batch_shape(dtype):
    p = random_simplex(5, 3, seed=1).to(dtype)
    q = random_simplex(5, 3, seed=2).to(dtype)
    _, joint = random_joint(2, 4, n=3, seed=3)
    joint = joint.to(dtype)
    support = torch.arange(5, dtype=dtype)
    outs = [entropy(p), cross_entropy(p, q), hellinger(p, q), js_divergence(p, q), kl_from_log_probs(p.log(), q.log()),
            wasserstein1_grid(p, q, support), mutual_information(joint), conditional_entropy(joint)]
    for out in outs:
        assert out.shape == (3,) and out.dtype == dtype
    lv = torch.zeros(3, 2, dtype=dtype)
    for out in (gaussian_entropy(lv), gaussian_hellinger(lv, lv, lv + 1, lv)):
        assert out.shape == (3,) and out.dtype == dtype


# ------------------------------------------------------------------------------- chapter 01's identities again
def test_kl_chain_rule_on_random_joint_tables():
    # KL(p(x,y) || q(x,y)) = KL(p(x) || q(x)) + E_p(x) KL(p(y|x) || q(y|x)); the left side from scipy's rel_entr
    for seed in range(5):
        p = random_simplex(20, seed=seed, zeros=True).reshape(5, 4)
        q = random_simplex(20, seed=60 + seed).reshape(5, 4)
        lhs = rel_entr(p.numpy(), q.numpy()).sum()
        px, qx = p.sum(1), q.sum(1)
        cond = kl_divergence(p / px[:, None], q / qx[:, None])  # (5,) every row of p has mass (column 0)
        rhs = kl_divergence(px, qx) + (px * cond).sum()
        assert abs(rhs.item() - lhs) < 1e-12
        assert kl_divergence(px, qx).item() <= lhs + 1e-12  # the joint KL bounds the marginal one


def test_total_variation_is_the_largest_difference_over_all_events():
    # TV = sup_A |P(A) - Q(A)| by brute force over the 2^K events, attained at A = {p > q}
    k = 6
    events = torch.tensor([[(a >> j) & 1 for j in range(k)] for a in range(2**k)], dtype=torch.float64)
    p, q = random_simplex(k, 50, seed=21, zeros=True), random_simplex(k, 50, seed=22, zeros=True)
    sup = (p @ events.T - q @ events.T).abs().max(-1).values
    tv = total_variation(p, q)
    assert torch.allclose(tv, sup, atol=1e-12, rtol=0)
    assert torch.allclose(tv, (p - q).clamp(min=0).sum(-1), atol=1e-12, rtol=0)  # P(A*) - Q(A*), A* = {p > q}


def test_tv_hellinger_middle_bound():
    # Hel^2 <= TV <= Hel sqrt(2 - Hel^2) <= sqrt(2) Hel; the middle bound is what the Cauchy-Schwarz step gives
    p, q = random_simplex(5, 500, seed=31, zeros=True), random_simplex(5, 500, seed=32)
    hel, tv = hellinger(p, q), total_variation(p, q)
    middle = hel * torch.sqrt(2 - hel**2)
    assert torch.all(hel**2 <= tv + 1e-12) and torch.all(tv <= middle + 1e-12)
    assert torch.all(middle <= math.sqrt(2) * hel + 1e-12)
    # two-point distributions p = (a, 1 - a), q = (1 - a, a) come close to the middle bound: it is not loose
    a = torch.tensor([0.45, 0.49], dtype=torch.float64)
    p2, q2 = torch.stack([a, 1 - a], -1), torch.stack([1 - a, a], -1)
    h2 = hellinger(p2, q2)
    assert torch.all(total_variation(p2, q2) / (h2 * torch.sqrt(2 - h2**2)) > 0.99)


def test_rescaling_the_data_shifts_the_gaussian_nll_by_d_log_s(gen):
    # MLE of s x is (s mu, s^2 Sigma), and its mean NLL is the old one plus D log s (scipy's density as reference)
    x = torch.randn(200, 3, generator=gen, dtype=torch.float64) @ torch.tensor(
        [[1.0, 0.4, 0.0], [0.0, 0.8, 0.2], [0.0, 0.0, 0.5]], dtype=torch.float64) - 1.0
    mu, sigma = gaussian_mle(x)
    nll = -gaussian_log_prob(x, mu, sigma).mean().item()
    for s in (0.01, 3.0, 255.0):
        mu_s, sigma_s = gaussian_mle(s * x)
        assert torch.allclose(mu_s, s * mu, atol=1e-10 * s, rtol=0)
        assert torch.allclose(sigma_s, s**2 * sigma, atol=1e-10 * s**2, rtol=0)
        nll_s = -scipy.stats.multivariate_normal(mu_s.numpy(), sigma_s.numpy()).logpdf((s * x).numpy()).mean()
        assert abs((nll_s - nll) - 3 * math.log(s)) < 1e-9
        nll_ck = -gaussian_log_prob(s * x, mu_s, sigma_s).mean().item()
        assert abs(nll_ck - nll_s) < 1e-9


def test_differential_entropy_scaling_law(gen):
    # h(sX) = h(X) + D log|s|: for the Gaussian closed form and, independently, torch's Laplace entropy
    logvar = torch.randn(4, generator=gen, dtype=torch.float64)
    for s in (0.1, 7.0):
        shift = gaussian_entropy(logvar + 2 * math.log(s)) - gaussian_entropy(logvar)
        ref = _normal(torch.zeros(4, dtype=torch.float64), logvar + 2 * math.log(s)).entropy()
        assert abs(gaussian_entropy(logvar + 2 * math.log(s)).item() - ref.item()) < 1e-12
        assert abs(shift.item() - 4 * math.log(s)) < 1e-12
        scale = torch.rand(4, generator=gen, dtype=torch.float64) + 0.5
        h_x = Independent(torch.distributions.Laplace(torch.zeros(4, dtype=torch.float64), scale), 1).entropy()
        h_sx = Independent(torch.distributions.Laplace(torch.zeros(4, dtype=torch.float64), s * scale), 1).entropy()
        assert abs((h_sx - h_x).item() - 4 * math.log(s)) < 1e-12


def test_classifier_covariances_are_the_mle_plus_the_ridge():
    # the docstring's claim: reg = 0 gives the per-class maximum-likelihood covariances (numpy, divisor N_c, as
    # the reference) and reg > 0 adds exactly reg * I to them, a ridge, not a maximum-likelihood estimate
    x, y = _labelled(seed=3)
    for reg in (0.0, 0.3):
        clf = fit_gaussian_classifier(x, y, 3, shared_covariance=False, reg=reg)
        for c in range(3):
            mle = np.cov(x[y == c].numpy().T, bias=True)
            np.testing.assert_allclose(clf.covariances[c].numpy(), mle + reg * np.eye(3), atol=1e-12)
            np.testing.assert_allclose(clf.means[c].numpy(), x[y == c].numpy().mean(0), atol=1e-12)
        np.testing.assert_allclose(clf.log_priors.exp().numpy(), np.bincount(y.numpy()) / len(y), atol=1e-15)
    # the ridge lowers the training log-likelihood: it is not the maximiser
    nll = [-fit_gaussian_classifier(x, y, 3, shared_covariance=False, reg=r).log_joint(x)[torch.arange(len(y)), y]
           .mean().item() for r in (0.0, 0.3)]
    assert nll[0] < nll[1]


def test_gaussian_has_the_largest_entropy_for_a_given_covariance(gen):
    # h(p) <= 1/2 log det(2 pi e Sigma) in D = 4: x = A u with independent unit-variance Laplace or uniform u has
    # covariance A A^T and entropy sum_i h(u_i) + log|det A| (torch's closed forms); the bound from coursekit
    a = torch.randn(4, 4, generator=gen, dtype=torch.float64) + 2 * torch.eye(4, dtype=torch.float64)
    sigma = a @ a.T
    bound = gaussian_entropy(torch.linalg.eigvalsh(sigma).log()).item()
    assert abs(bound - 0.5 * torch.logdet(2 * math.pi * math.e * sigma).item()) < 1e-10
    zero = torch.zeros(4, dtype=torch.float64)
    for u in (torch.distributions.Laplace(zero, zero + 1 / math.sqrt(2)),
              torch.distributions.Uniform(zero - math.sqrt(3), zero + math.sqrt(3))):
        assert torch.allclose(u.variance, torch.ones(4, dtype=torch.float64))
        h = u.entropy().sum().item() + torch.linalg.slogdet(a)[1].item()
        assert h < bound - 1e-3
