"""Tests for coursekit.score against independent computations: explicit Jacobians, closed-form scores
of Gaussians and Gaussian mixtures (coursekit.mixtures, tested in test_mixtures.py), least-squares fits and
known stationary laws."""

import math

import numpy as np
import pytest
import torch

from coursekit import mixtures as M
from coursekit import score as S
from coursekit import wasserstein as W


def small_net(d, seed, hidden=16):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(d, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, hidden),
                               torch.nn.SiLU(), torch.nn.Linear(hidden, d)).double()


def explicit_jacobians(fn, x):
    """(N, D, D) Jacobians, one torch.autograd.functional.jacobian call per example."""
    return torch.stack([torch.autograd.functional.jacobian(lambda xi: fn(xi[None])[0], xi) for xi in x])


# ------------------------------------------------------------------------------------------------ exact SM
@pytest.mark.parametrize("d", [1, 3, 5])
def test_jacobian_trace_matches_explicit_jacobian(d):
    net = small_net(d, seed=d)
    x = torch.randn(7, d, dtype=torch.float64)
    want = explicit_jacobians(net, x).diagonal(dim1=1, dim2=2).sum(-1)
    got, s = S.jacobian_trace(net, x, return_score=True)
    assert torch.allclose(got, want, atol=1e-10)
    assert torch.allclose(s, net(x))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hyvarinen_loss_matches_explicit_computation(seed):
    d = 4
    net = small_net(d, seed=10 + seed)
    x = torch.randn(9, d, dtype=torch.float64)
    jac = explicit_jacobians(net, x)
    want = (jac.diagonal(dim1=1, dim2=2).sum(-1) + 0.5 * (net(x) ** 2).sum(-1)).mean()
    got = S.hyvarinen_loss(net, x)
    assert torch.allclose(got, want, atol=1e-10)
    # differentiable in the parameters, and its gradient agrees with the explicit one
    g_got = torch.autograd.grad(got, list(net.parameters()))
    want2 = (torch.stack([torch.autograd.functional.jacobian(lambda xi: net(xi[None])[0], xi, create_graph=True)
                          .diagonal().sum() for xi in x]) + 0.5 * (net(x) ** 2).sum(-1)).mean()
    g_want = torch.autograd.grad(want2, list(net.parameters()))
    for a, b in zip(g_got, g_want):
        assert torch.allclose(a, b, atol=1e-9)


def test_hyvarinen_is_fisher_minus_a_model_free_constant_for_gaussians():
    """For p = N(0, Sigma) and linear models s(x) = A x + b (closed forms, no sampling):
    J = tr A + 1/2 tr(A Sigma A^T) + 1/2 |b|^2 and Fisher = 1/2 E|Ax + b + Sigma^-1 x|^2,
    so Fisher - J = 1/2 tr(Sigma^-1) = 1/2 E|grad log p|^2 for every (A, b)."""
    g = torch.Generator().manual_seed(0)
    d = 3
    m = torch.randn(d, d, generator=g, dtype=torch.float64)
    sigma = m @ m.T + 0.5 * torch.eye(d, dtype=torch.float64)
    prec = torch.linalg.inv(sigma)
    const = 0.5 * torch.trace(prec)
    for _ in range(5):
        a = torch.randn(d, d, generator=g, dtype=torch.float64)
        b = torch.randn(d, generator=g, dtype=torch.float64)
        j = torch.trace(a) + 0.5 * torch.trace(a @ sigma @ a.T) + 0.5 * b @ b
        e = a + prec
        fisher = 0.5 * torch.trace(e @ sigma @ e.T) + 0.5 * b @ b
        assert torch.allclose(fisher - j, const, atol=1e-10)
        # the estimator with sample moments is exactly the closed form with the sample covariance
        x = torch.randn(500, d, generator=g, dtype=torch.float64)
        s2 = x.T @ x / len(x)
        mean = x.mean(0)
        est = S.hyvarinen_loss(lambda z, a=a, b=b: z @ a.T + b, x)
        closed = torch.trace(a) + 0.5 * torch.trace(a @ s2 @ a.T) + (a @ mean) @ b + 0.5 * b @ b
        assert torch.allclose(est, closed, atol=1e-10)


def test_hyvarinen_minus_fisher_is_constant_on_a_mixture_by_quadrature():
    """1-D mixture with a known score; expectations by quadrature on a fine grid (no Monte Carlo)."""
    means, stds, w = torch.tensor([[-2.0], [1.5]], dtype=torch.float64), torch.tensor([0.6, 1.0]), [0.3, 0.7]
    x = torch.linspace(-14, 14, 40001, dtype=torch.float64)[:, None]
    p = M.gaussian_mixture_log_prob(x, means, stds, w).exp()
    dx = float(x[1] - x[0])
    true = M.gaussian_mixture_score(x, means, stds, w)
    const = 0.5 * (p * true[:, 0] ** 2).sum() * dx
    diffs = []
    for seed in range(4):
        net = small_net(1, seed=20 + seed)
        tr, s = S.jacobian_trace(net, x, return_score=True)
        j = ((tr + 0.5 * s[:, 0] ** 2) * p).sum() * dx
        fisher = 0.5 * (((s - true)[:, 0] ** 2) * p).sum() * dx
        diffs.append((fisher - j).item())
    assert np.allclose(diffs, const.item(), atol=1e-6), (diffs, const.item())


def test_hyvarinen_minimiser_is_the_gaussian_mle():
    """s(x) = -P (x - mu): J = -tr P + 1/2 mean |P (x - mu)|^2 is minimised by the sample mean and the
    inverse of the (1/N) sample covariance."""
    g = torch.Generator().manual_seed(1)
    d = 2
    true_cov = torch.tensor([[1.5, 0.6], [0.6, 0.8]], dtype=torch.float64)
    x = (torch.randn(400, d, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(true_cov).T
         + torch.tensor([1.0, -2.0]))
    mu = torch.zeros(d, dtype=torch.float64, requires_grad=True)
    p_raw = torch.eye(d, dtype=torch.float64).requires_grad_(True)
    opt = torch.optim.LBFGS([mu, p_raw], max_iter=100, tolerance_grad=1e-12, tolerance_change=1e-14,
                            line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = S.hyvarinen_loss(lambda z: -(z - mu) @ p_raw.T, x)
        loss.backward()
        return loss

    for _ in range(2):
        opt.step(closure)
    xc = x - x.mean(0)
    mle_prec = torch.linalg.inv(xc.T @ xc / len(x))
    assert torch.allclose(mu.detach(), x.mean(0), atol=1e-6)
    assert torch.allclose(p_raw.detach(), mle_prec, atol=1e-6)
    # ... and therefore close to the true parameters (sampling error of n = 400)
    assert torch.allclose(mu.detach(), torch.tensor([1.0, -2.0], dtype=torch.float64), atol=0.2)
    assert torch.allclose(p_raw.detach(), torch.linalg.inv(true_cov), atol=0.4)


# ------------------------------------------------------------------------------------------------ sliced SM
@pytest.mark.parametrize("vr", [False, True])
@pytest.mark.parametrize("dist", ["gaussian", "rademacher"])
def test_sliced_matches_explicit_projection_formula(vr, dist):
    d, n, m = 3, 6, 4
    net = small_net(d, seed=3)
    x = torch.randn(n, d, dtype=torch.float64)
    got = S.sliced_score_matching_loss(net, x, n_projections=m, variance_reduced=vr, distribution=dist,
                                       generator=torch.Generator().manual_seed(7))
    v = torch.randn((m, n, d), generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    if dist == "rademacher":
        v = torch.where(v >= 0, 1.0, -1.0).to(torch.float64)
        assert set(v.unique().tolist()) == {-1.0, 1.0}
    jac = explicit_jacobians(net, x)  # (n, d, d)
    s = net(x)
    vjv = torch.einsum("mni,nij,mnj->mn", v, jac, v)
    second = 0.5 * (s**2).sum(-1).expand(m, n) if vr else 0.5 * torch.einsum("mni,ni->mn", v, s) ** 2
    want = (vjv + second).mean()
    assert torch.allclose(got, want, atol=1e-10)


def test_sliced_is_unbiased_for_hyvarinen():
    d = 4
    net = small_net(d, seed=5)
    x = torch.randn(8, d, dtype=torch.float64)
    exact = S.hyvarinen_loss(net, x).item()
    g = torch.Generator().manual_seed(0)
    for vr in (False, True):
        draws = torch.tensor([S.sliced_score_matching_loss(net, x, n_projections=20, variance_reduced=vr,
                                                           generator=g).item() for _ in range(25)])
        se = draws.std().item() / math.sqrt(len(draws))
        assert abs(draws.mean().item() - exact) < 4 * se + 1e-9, (vr, draws.mean().item(), exact, se)


# ------------------------------------------------------------------------------------------------ DSM
def test_dsm_target_sign_and_scale():
    x = torch.zeros(1, 2)
    xt = torch.tensor([[0.3, -0.2]])
    assert torch.allclose(S.dsm_target(x, xt, 0.5), torch.tensor([[-1.2, 0.8]]))  # -(xt - x) / sigma^2
    # per-example sigma (N, 1)
    x2, xt2 = torch.zeros(2, 2), torch.ones(2, 2)
    assert torch.allclose(S.dsm_target(x2, xt2, torch.tensor([[1.0], [2.0]])),
                          torch.tensor([[-1.0, -1.0], [-0.25, -0.25]]))


def test_dsm_target_regresses_to_the_noisy_score():
    """E[target | x_tilde] = grad log q_sigma(x_tilde) (Vincent 2011): for 1-D N(0, s0^2) data the
    least-squares slope of the target on x_tilde is -1 / (s0^2 + sigma^2)."""
    g = torch.Generator().manual_seed(0)
    s0, sigma, n = 0.7, 0.4, 400_000
    x = s0 * torch.randn(n, 1, generator=g, dtype=torch.float64)
    xt = x + sigma * torch.randn(n, 1, generator=g, dtype=torch.float64)
    t = S.dsm_target(x, xt, sigma)
    slope = ((t * xt).sum() / (xt * xt).sum()).item()
    assert slope == pytest.approx(-1 / (s0**2 + sigma**2), rel=0.01)


def test_dsm_loss_matches_hand_computation():
    d, n, sigma = 3, 10, 0.3
    net = small_net(d, seed=8)
    x = torch.randn(n, d, dtype=torch.float64)
    noise = torch.randn(n, d, dtype=torch.float64)
    got = S.denoising_score_matching_loss(net, x, sigma, noise=noise)
    want = 0.5 * ((net(x + sigma * noise) + noise / sigma) ** 2).sum(-1).mean()
    assert torch.allclose(got, want, atol=1e-12)
    # with a generator: the same noise as torch.randn from the same seed
    got2 = S.denoising_score_matching_loss(net, x, sigma, generator=torch.Generator().manual_seed(3))
    noise2 = torch.randn((n, d), generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    assert torch.allclose(got2, S.denoising_score_matching_loss(net, x, sigma, noise=noise2))


def test_dsm_minimiser_is_the_noisy_gaussian_score():
    """Linear model s(x) = -P (x - mu) fitted by DSM on N(m, C) data recovers P = (C + sigma^2 I)^-1."""
    g = torch.Generator().manual_seed(2)
    d, sigma, n = 2, 0.5, 200_000
    cov = torch.tensor([[1.0, 0.3], [0.3, 0.5]], dtype=torch.float64)
    mean = torch.tensor([0.5, -1.0], dtype=torch.float64)
    x = torch.randn(n, d, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(cov).T + mean
    noise = torch.randn(n, d, generator=g, dtype=torch.float64)
    mu = torch.zeros(d, dtype=torch.float64, requires_grad=True)
    prec = torch.eye(d, dtype=torch.float64).requires_grad_(True)
    opt = torch.optim.LBFGS([mu, prec], max_iter=300, line_search_fn="strong_wolfe", tolerance_grad=1e-12)

    def closure():
        opt.zero_grad()
        loss = S.denoising_score_matching_loss(lambda z: -(z - mu) @ prec.T, x, sigma, noise=noise)
        loss.backward()
        return loss

    opt.step(closure)
    want = torch.linalg.inv(cov + sigma**2 * torch.eye(d, dtype=torch.float64))
    assert torch.allclose(prec.detach(), want, atol=0.02), (prec, want)
    assert torch.allclose(mu.detach(), mean, atol=0.02)


def test_ncsn_loss_matches_hand_computation_and_is_noise_prediction():
    d, n = 2, 12
    sigmas = S.geometric_sigmas(2.0, 0.1, 5).double()
    torch.manual_seed(0)
    net = S.NoiseConditionalMLP(d, (16, 16)).double()
    x = torch.randn(n, d, dtype=torch.float64)
    got, idx = S.ncsn_loss(net, x, sigmas, generator=torch.Generator().manual_seed(4), return_levels=True)
    g = torch.Generator().manual_seed(4)
    idx2 = torch.randint(len(sigmas), (n,), generator=g)
    eps = torch.randn((n, d), generator=g, dtype=torch.float64)
    assert torch.equal(idx, idx2)
    sig = sigmas[idx2]
    xt = x + sig[:, None] * eps
    s = net(xt, sig)
    # lambda(sigma) * DSM term with the Vincent target, lambda = sigma^2
    want = (sig**2 * 0.5 * ((s - S.dsm_target(x, xt, sig[:, None])) ** 2).sum(-1)).mean()
    assert torch.allclose(got, want, atol=1e-12)
    eps_hat = -sig[:, None] * s  # a noise prediction
    assert torch.allclose(got, 0.5 * ((eps_hat - eps) ** 2).sum(-1).mean(), atol=1e-12)


def test_optimal_noise_prediction_is_minus_sigma_times_the_score():
    """E[eps | x_tilde] = -sigma grad log q_sigma(x_tilde): least-squares slope for 1-D Gaussian data."""
    g = torch.Generator().manual_seed(5)
    s0, sigma, n = 1.3, 0.8, 400_000
    x = s0 * torch.randn(n, generator=g, dtype=torch.float64)
    eps = torch.randn(n, generator=g, dtype=torch.float64)
    xt = x + sigma * eps
    slope = ((eps * xt).sum() / (xt * xt).sum()).item()
    assert slope == pytest.approx(-sigma * (-1 / (s0**2 + sigma**2)), rel=0.01)


# ------------------------------------------------------------------------------------------------ samplers
def test_langevin_single_step_formula():
    x0 = torch.randn(5, 2)
    score = lambda x: -2.0 * x
    got = S.langevin_sample(score, x0, 0.3, 1, generator=torch.Generator().manual_seed(1))
    z = torch.randn((5, 2), generator=torch.Generator().manual_seed(1))
    assert torch.allclose(got, x0 + 0.15 * (-2.0 * x0) + math.sqrt(0.3) * z)
    x, traj = S.langevin_sample(score, x0, 0.3, 4, return_trajectory=True)
    assert traj.shape == (5, 5, 2) and torch.equal(traj[0], x0) and torch.equal(traj[-1], x)


@pytest.mark.parametrize("eps", [0.05, 0.4])
def test_langevin_samples_a_gaussian_with_the_discrete_chain_variance(eps):
    """Target N(m, s^2): the chain x' = x + eps/2 * (m - x)/s^2 + sqrt(eps) z is an AR(1) process with
    stationary mean m and variance s^2 / (1 - eps / (4 s^2)) (-> s^2 as eps -> 0)."""
    m, s = 1.5, 0.8
    n = 20_000
    x0 = torch.zeros(n, 1, dtype=torch.float64)
    steps = int(40 * s**2 / eps) + 50
    x = S.langevin_sample(lambda z: (m - z) / s**2, x0, eps, steps, generator=torch.Generator().manual_seed(0))
    var_chain = s**2 / (1 - eps / (4 * s**2))
    assert abs(x.mean().item() - m) < 4 * math.sqrt(var_chain / n)
    assert x.var().item() == pytest.approx(var_chain, rel=4 * math.sqrt(2 / n))


def test_annealed_langevin_schedule_and_noisy_gaussian():
    """The step at level i is eps * sigma_i^2 / sigma_L^2; with the exact noisy scores of N(m, s^2) the
    output has variance close to s^2 + sigma_L^2, and denoise=True applies x + sigma_L^2 s(x, sigma_L)."""
    seen = []

    def spy(x, sigma):
        seen.append(float(sigma[0]))
        return torch.zeros_like(x)

    sig = torch.tensor([4.0, 2.0, 1.0])
    x0 = torch.zeros(3, 2)
    out = S.annealed_langevin_sample(spy, x0, sig, 0.01, 2, generator=torch.Generator().manual_seed(0))
    assert seen == [4.0, 4.0, 2.0, 2.0, 1.0, 1.0]
    g = torch.Generator().manual_seed(0)
    want = x0.clone()
    for sigma in (4.0, 2.0, 1.0):
        alpha = 0.01 * sigma**2 / 1.0
        for _ in range(2):
            want = want + math.sqrt(alpha) * torch.randn((3, 2), generator=g)
    assert torch.allclose(out, want)

    m, s = -1.0, 0.5
    sigmas = S.geometric_sigmas(3.0, 0.1, 8).double()
    x0 = torch.rand(20_000, 1, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 6 - 3
    score = lambda x, sg: (m - x) / (s**2 + sg[:, None] ** 2)
    x, states = S.annealed_langevin_sample(score, x0, sigmas, 0.002, 100, generator=torch.Generator().manual_seed(2),
                                           return_levels=True)
    assert states.shape == (8, 20_000, 1)
    assert x.mean().item() == pytest.approx(m, abs=0.02)
    assert x.var().item() == pytest.approx(s**2 + 0.1**2, rel=0.05)
    den = S.annealed_langevin_sample(score, x0[:5], sigmas, 0.002, 1, denoise=True,
                                     generator=torch.Generator().manual_seed(3))
    raw = S.annealed_langevin_sample(score, x0[:5], sigmas, 0.002, 1, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(den, raw + 0.01 * score(raw, torch.full((5,), 0.1, dtype=torch.float64)))


def test_annealed_recovers_mixture_weights_plain_langevin_does_not():
    """Song & Ermon (2019), sec. 3.2.2: 0.8 N((5,5), I) + 0.2 N((-5,-5), I) from uniform starts on
    [-8, 8]^2 with the exact scores. Plain Langevin keeps each chain in the basin where it starts (about
    half in each mode); annealing over sigma = 20 -> 1 mixes at the large levels and recovers 0.8."""
    means = torch.tensor([[5.0, 5.0], [-5.0, -5.0]])
    w = torch.tensor([0.8, 0.2])
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(10_000, 2, generator=g) * 16 - 8
    annealed = S.annealed_langevin_sample(
        lambda x, sg: M.gaussian_mixture_score(x, means, 1.0, w, sigma=float(sg[0])), x0,
        S.geometric_sigmas(20.0, 1.0, 20), 0.2, 50, generator=g)
    plain = S.langevin_sample(lambda x: M.gaussian_mixture_score(x, means, 1.0, w), x0, 0.2, 300, generator=g)
    frac_annealed = (annealed.sum(1) > 0).float().mean().item()
    frac_plain = (plain.sum(1) > 0).float().mean().item()
    assert abs(frac_annealed - 0.8) < 0.03, frac_annealed
    assert abs(frac_plain - 0.8) > 0.15, frac_plain
    start_basin = x0.sum(1) > 0
    # almost no chain leaves the basin it started in (a few start right on the boundary)
    assert ((plain.sum(1) > 0) == start_basin).float().mean().item() > 0.97


# ------------------------------------------------------------------------------------------------ helpers
def test_gaussian_mmd2_against_numpy_and_behaviour():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, 2, generator=g)
    y = torch.randn(50, 2, generator=g) + 0.3
    hs = [0.5, 1.0]
    xn, yn = x.double().numpy(), y.double().numpy()

    def k(a, b):
        d2 = ((a[:, None] - b[None]) ** 2).sum(-1)
        return sum(np.exp(-d2 / (2 * h * h)) for h in hs) / len(hs)

    kxx, kyy = k(xn, xn), k(yn, yn)
    want = ((kxx.sum() - np.trace(kxx)) / (60 * 59) + (kyy.sum() - np.trace(kyy)) / (50 * 49)
            - 2 * k(xn, yn).mean())
    assert S.gaussian_mmd2(x, y, bandwidths=hs) == pytest.approx(want, rel=1e-10)
    # default bandwidths: the median pairwise distance of the pooled sample (all 110 points) times 0.25 ... 2;
    # of the 110^2 distances (an even count) torch.median takes the lower of the two middle ones
    pooled = np.concatenate([xn, yn])
    dists = np.sort(np.sqrt(((pooled[:, None] - pooled[None]) ** 2).sum(-1)).ravel())
    med = dists[(dists.size - 1) // 2]
    hs = [med * f for f in (0.25, 0.5, 1.0, 2.0)]
    kxx, kyy = k(xn, xn), k(yn, yn)
    want = ((kxx.sum() - np.trace(kxx)) / (60 * 59) + (kyy.sum() - np.trace(kyy)) / (50 * 49)
            - 2 * k(xn, yn).mean())
    assert S.gaussian_mmd2(x, y) == pytest.approx(want, rel=1e-10)
    # the wrapper evaluates the course's one Gaussian-kernel MMD^2 (chapter 07) in float64
    assert S.gaussian_mmd2(x, y, [0.5, 1.0]) == W.mmd2_unbiased(x.double(), y.double(), [0.5, 1.0]).item()
    same = [S.gaussian_mmd2(torch.randn(300, 2, generator=g), torch.randn(300, 2, generator=g)) for _ in range(20)]
    assert abs(np.mean(same)) < 3 * np.std(same) / math.sqrt(20) + 1e-4
    assert S.gaussian_mmd2(torch.randn(300, 2, generator=g), torch.randn(300, 2, generator=g) + 1) > 10 * np.std(same)


def test_geometric_sigmas():
    s = S.geometric_sigmas(10.0, 0.01, 7)
    assert s.dtype == torch.float32 and s.shape == (7,)
    assert s[0].item() == pytest.approx(10.0) and s[-1].item() == pytest.approx(0.01)
    ratios = s[:-1] / s[1:]
    assert torch.allclose(ratios, ratios[0].expand(6), rtol=1e-5)
    for bad in [{"sigma_max": 1.0, "sigma_min": 2.0, "n_levels": 3},
                {"sigma_max": 1.0, "sigma_min": 0.1, "n_levels": 1},
                {"sigma_max": -1.0, "sigma_min": 0.1, "n_levels": 3}]:
        with pytest.raises(ValueError):
            S.geometric_sigmas(**bad)


def test_networks_shapes_and_scaling():
    torch.manual_seed(0)
    mlp = S.NoiseConditionalMLP(2, (8, 8))
    x = torch.randn(5, 2)
    out = mlp(x, torch.full((5,), 0.5))
    assert out.shape == (5, 2)
    assert torch.allclose(mlp(x, 0.5), out)  # a float sigma is broadcast
    conv = S.NoiseConditionalConvNet8x8(channels=4, depth=2, emb_dim=8)
    xi = torch.rand(3, 64)
    assert conv(xi, torch.full((3,), 0.2)).shape == (3, 64)
    assert conv(xi.reshape(3, 1, 8, 8), 0.2).shape == (3, 1, 8, 8)
    assert torch.allclose(conv(xi.reshape(3, 1, 8, 8), 0.2).reshape(3, 64), conv(xi, 0.2), atol=1e-6)
    # output = f(x, sigma) / sigma: sigma * s stays O(1) as sigma shrinks
    assert conv(xi, 1e-3).abs().mean() > 100 * conv(xi, 1.0).abs().mean() / 10
    with pytest.raises(ValueError, match="shape"):
        mlp(torch.randn(5, 3), 0.5)
    with pytest.raises(ValueError, match="sigma"):
        mlp(x, torch.ones(4))
    with pytest.raises(ValueError, match="> 0"):
        mlp(x, -1.0)
    with pytest.raises(ValueError, match="shape"):
        conv(torch.rand(3, 63), 0.5)


def test_bad_input_raises():
    f = lambda x: x
    with pytest.raises(TypeError):
        S.hyvarinen_loss(f, np.zeros((3, 2)))
    with pytest.raises(TypeError, match="floating"):
        S.hyvarinen_loss(f, torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="shape"):
        S.hyvarinen_loss(f, torch.zeros(3))
    with pytest.raises(ValueError, match="NaN"):
        S.hyvarinen_loss(f, torch.tensor([[0.0, float("nan")]]))
    with pytest.raises(ValueError, match="must return"):
        S.hyvarinen_loss(lambda x: x[:, :1], torch.zeros(3, 2))
    with pytest.raises(ValueError, match="n_projections"):
        S.sliced_score_matching_loss(f, torch.zeros(3, 2), n_projections=0)
    with pytest.raises(ValueError, match="distribution"):
        S.sliced_score_matching_loss(f, torch.zeros(3, 2), distribution="uniform")
    with pytest.raises(ValueError, match="sigma"):
        S.denoising_score_matching_loss(f, torch.zeros(3, 2), 0.0)
    with pytest.raises(ValueError, match="noise"):
        S.denoising_score_matching_loss(f, torch.zeros(3, 2), 0.1, noise=torch.zeros(3, 3))
    with pytest.raises(ValueError, match="same shape"):
        S.dsm_target(torch.zeros(3, 2), torch.zeros(2, 2), 1.0)
    with pytest.raises(ValueError, match="step_size"):
        S.langevin_sample(f, torch.zeros(3, 2), 0.0, 10)
    with pytest.raises(ValueError, match="n_steps"):
        S.langevin_sample(f, torch.zeros(3, 2), 0.1, 0)
    with pytest.raises(ValueError, match="diverged"):
        S.langevin_sample(lambda x: 1e30 * torch.exp(x.abs()), torch.ones(3, 2), 1.0, 50)
    with pytest.raises(ValueError, match="sigmas"):
        S.annealed_langevin_sample(lambda x, s: x, torch.zeros(3, 2), torch.tensor([1.0, -1.0]), 0.1, 2)
    with pytest.raises(ValueError, match="sigmas"):
        S.ncsn_loss(lambda x, s: x, torch.zeros(3, 2), torch.ones(2, 2))
    with pytest.raises(ValueError, match="N >= 2"):
        S.gaussian_mmd2(torch.zeros(1, 2), torch.zeros(5, 2))
    with pytest.raises(ValueError, match=r"y must have shape \(N, 2\)"):
        S.gaussian_mmd2(torch.zeros(4, 2), torch.zeros(5, 3))
    with pytest.raises(ValueError, match=r"bandwidths\[1\] must be a finite number > 0"):
        S.gaussian_mmd2(torch.zeros(4, 2), torch.zeros(5, 2), bandwidths=[1.0, -1.0])
    with pytest.raises(ValueError, match="number of bandwidths"):
        S.gaussian_mmd2(torch.zeros(4, 2), torch.zeros(5, 2), bandwidths=[])


def test_float32_default_and_no_input_mutation():
    torch.manual_seed(0)
    net = S.NoiseConditionalMLP(2, (8,))
    x = torch.randn(6, 2)
    keep = x.clone()
    loss = S.ncsn_loss(net, x, S.geometric_sigmas(1.0, 0.1, 3))
    assert loss.dtype == torch.float32 and loss.ndim == 0
    out = S.annealed_langevin_sample(net, x, S.geometric_sigmas(1.0, 0.1, 3), 1e-3, 2)
    assert out.dtype == torch.float32 and torch.equal(x, keep) and not out.requires_grad
    assert S.hyvarinen_loss(lambda z: -z, x).dtype == torch.float32


# ------------------------------------------------------------------------------------------------ bench
def test_ncsn_bench_recipe_runs_under_smoke():
    from coursekit import bench

    ctx = bench.BenchContext(profile="smoke", seed=0, device=torch.device("cpu"), n_samples=40, progress=False)
    out = bench.REGISTRY["ncsn"].run(ctx)
    x = out.samples["clipped"]
    assert x.shape == (40, 64) and x.min() >= 0 and x.max() <= 1 and torch.isfinite(x).all()
    assert out.steps == bench.NCSN_RECIPE["DIGITS_STEPS"]["smoke"] and out.likelihood == {}


def test_mmd_permutation_test():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(200, 2, generator=g), torch.randn(150, 2, generator=g)
    out = S.mmd_permutation_test(x, y, n_permutations=50, seed=1)
    assert out["mmd2"] == pytest.approx(S.gaussian_mmd2(x, y), rel=1e-9, abs=1e-12)
    assert 0 < out["p_value"] <= 1 and out["n_permutations"] == 50
    pvals = [S.mmd_permutation_test(torch.randn(100, 2, generator=g), torch.randn(100, 2, generator=g),
                                    n_permutations=40, seed=s)["p_value"] for s in range(20)]
    assert 0.3 < np.mean(pvals) < 0.7  # p-values are roughly uniform under the null
    shifted = S.mmd_permutation_test(x, y + 0.5, n_permutations=50)
    assert shifted["p_value"] == pytest.approx(1 / 51) and shifted["mmd2"] > shifted["null_q95"]
    with pytest.raises(ValueError, match="n_permutations"):
        S.mmd_permutation_test(x, y, n_permutations=0)


def test_mmd_permutation_null_matches_recomputing_the_statistic_on_each_split():
    """The one-matrix-product null (block sums from u^T K u and u^T K 1) against gaussian_mmd2 evaluated on each
    re-split of the pooled sample, with the same generator draws."""
    g = torch.Generator().manual_seed(3)
    x, y = (torch.randn(40, 2, generator=g, dtype=torch.float64),
            1.3 * torch.randn(30, 2, generator=g, dtype=torch.float64))
    hs = [0.4, 1.1]
    out = S.mmd_permutation_test(x, y, n_permutations=37, bandwidths=hs, seed=5)
    pooled, gen, null = torch.cat([x, y]), torch.Generator().manual_seed(5), []
    for _ in range(37):
        first = torch.zeros(70, dtype=torch.bool)
        first[torch.randperm(70, generator=gen)[:40]] = True
        null.append(S.gaussian_mmd2(pooled[first], pooled[~first], hs))
    assert out["null_mean"] == pytest.approx(np.mean(null), rel=1e-10)
    assert out["null_q95"] == pytest.approx(
        float(torch.quantile(torch.tensor(null, dtype=torch.float64), 0.95)), rel=1e-10
    )
    assert out["p_value"] == pytest.approx((1 + sum(v >= out["mmd2"] for v in null)) / 38)


# ------------------------------------------------------------------------------------------------ noise rules
@pytest.mark.parametrize("dim, gamma", [(2, 1.5), (64, 1.36), (64, 1.2), (784, 1.05)])
def test_shell_overlap_matches_monte_carlo(dim, gamma):
    """The normal approximation of the norm against the exact norms of Gaussian draws (sigma_i = 1)."""
    g = torch.Generator().manual_seed(dim)
    r = torch.randn(200_000, dim, generator=g, dtype=torch.float64).norm(dim=1)  # level sigma_i = 1
    shell = math.sqrt(dim) * gamma  # the shell of sigma_(i-1) = gamma, half-width 3 gamma / sqrt 2
    mc = ((r - shell).abs() <= 3 * gamma / math.sqrt(2)).double().mean().item()
    tol = 0.03 if dim >= 64 else 0.08  # the normal approximation of the norm is asymptotic in D
    assert abs(S.shell_overlap(gamma, dim) - mc) < tol


def test_noise_ratio_and_number_of_levels():
    from scipy.optimize import brentq
    from scipy.stats import norm

    for dim in (5, 64, 3072):
        def f(g, dim=dim):
            c = math.sqrt(2 * dim) * (g - 1)
            return norm.cdf(c + 3 * g) - norm.cdf(c - 3 * g) - 0.5

        want = brentq(f, 1.0 + 1e-12, 50.0, xtol=1e-13)
        assert abs(S.noise_ratio_for_overlap(dim) - want) < 1e-9
    gamma = S.noise_ratio_for_overlap(64)
    n = S.n_noise_levels(4.8, 0.02, 64)
    assert (4.8 / 0.02) ** (1 / (n - 1)) <= gamma < (4.8 / 0.02) ** (1 / (n - 2))
    assert S.n_noise_levels(1.0, 0.999, 64) == 2
    with pytest.raises(ValueError, match="gamma"):
        S.shell_overlap(0.9, 4)
    with pytest.raises(ValueError, match="dim >= 5"):
        S.noise_ratio_for_overlap(4)
    with pytest.raises(ValueError, match="overlap"):
        S.noise_ratio_for_overlap(8, overlap=0.999)
    with pytest.raises(ValueError, match="sigma_min"):
        S.n_noise_levels(0.1, 0.2, 8)


@pytest.mark.parametrize("u, gamma, T", [(0.3, 1.36, 10), (1.0, 1.58, 5), (0.05, 1.2, 40)])
def test_annealed_variance_ratio_by_simulating_the_sampler(u, gamma, T):
    """Run annealed_langevin_sample itself on one data point (score -x / sigma^2) for one level, started at the
    previous level's Gaussian, and compare the variance after T steps."""
    sigma_l, sigma_i = 0.05, 0.4
    g = torch.Generator().manual_seed(1)
    n, d = 20_000, 4
    x0 = gamma * sigma_i * torch.randn(n, d, generator=g, dtype=torch.float64)
    # two levels: sigma_i, then sigma_L with zero steps is impossible, so read the state after level sigma_i
    _, states = S.annealed_langevin_sample(lambda x, s: -x / s[:, None] ** 2, x0,
                                           torch.tensor([sigma_i, sigma_l], dtype=torch.float64), u * sigma_l**2, T,
                                           generator=g, return_levels=True)
    got = states[0].var().item() / sigma_i**2
    want = S.annealed_variance_ratio(u * sigma_l**2, sigma_l, gamma, T)
    assert abs(got - want) < 5 * want * math.sqrt(2 / (n * d))


def test_annealed_step_size_minimises_the_ratio():
    sigma_l, gamma, T = 0.02, 1.36, 10
    eps = S.annealed_step_size(sigma_l, gamma, T)
    best = abs(S.annealed_variance_ratio(eps, sigma_l, gamma, T) - 1)
    for u in np.exp(np.linspace(math.log(1e-6), math.log(3.99), 3000)):
        assert best <= abs(S.annealed_variance_ratio(u * sigma_l**2, sigma_l, gamma, T) - 1) + 1e-9
    # the ratio depends on eps only through eps / sigma_L^2
    assert math.isclose(S.annealed_step_size(2 * sigma_l, gamma, T) / (2 * sigma_l) ** 2, eps / sigma_l**2,
                        rel_tol=1e-6)
    # more steps per level bring the chain closer to q_sigma
    gaps = [abs(S.annealed_variance_ratio(S.annealed_step_size(sigma_l, gamma, t), sigma_l, gamma, t) - 1)
            for t in (2, 5, 20, 100)]
    assert all(gaps[i] > gaps[i + 1] for i in range(len(gaps) - 1))
    with pytest.raises(ValueError, match="4 sigma_min"):
        S.annealed_variance_ratio(4.5 * sigma_l**2, sigma_l, gamma, T)


def test_noise_conditional_unet():
    """s(x, sigma) = UNet(x, 100 (log sigma + 5)) / sigma, computed here from the wrapped U-Net directly; zero at
    initialisation (zero output layer), so the initial NCSN loss is D / 2; it trains (the loss falls)."""
    torch.manual_seed(0)
    net = S.NoiseConditionalUNet8x8(channels=8)
    x = torch.rand(6, 64)
    sigma = torch.tensor([0.02, 0.1, 0.5, 1.0, 2.0, 4.8])
    assert torch.count_nonzero(net(x, sigma)) == 0
    torch.nn.init.normal_(net.unet.out[-1].weight, std=0.1)  # make the output non-zero
    want = net.unet(x.reshape(6, 1, 8, 8), 100 * (torch.log(sigma) + 5)).reshape(6, 64) / sigma[:, None]
    assert torch.allclose(net(x, sigma), want, atol=1e-6)
    assert torch.allclose(net(x.reshape(6, 1, 8, 8), sigma).reshape(6, 64), want, atol=1e-6)
    assert torch.allclose(net(x, 0.5), net(x, torch.full((6,), 0.5)))
    fresh = S.NoiseConditionalUNet8x8(channels=8)
    levels = S.geometric_sigmas(3.0, 0.05, 5)
    assert abs(S.ncsn_loss(fresh, x, levels).item() - 32.0) < 8.0  # 1/2 E|eps|^2 = D / 2 at s = 0
    opt = torch.optim.Adam(fresh.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    data = torch.rand(64, 64)
    first = S.ncsn_loss(fresh, data, levels, generator=torch.Generator().manual_seed(1)).item()
    for _ in range(60):
        opt.zero_grad()
        S.ncsn_loss(fresh, data, levels, generator=g).backward()
        opt.step()
    assert S.ncsn_loss(fresh, data, levels, generator=torch.Generator().manual_seed(1)).item() < 0.8 * first
    with pytest.raises(ValueError, match="shape"):
        net(torch.rand(3, 63), 0.5)
    with pytest.raises(ValueError, match="> 0"):
        net(x, -1.0)
