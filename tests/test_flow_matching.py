"""Tests for coursekit.flow_matching against independent computations: closed-form Gaussian paths and mixture
marginals, explicit Jacobians (torch.autograd.functional), Monte Carlo posterior expectations, known ODE
solutions, torch.distributions densities, and chapter 08's and 09's discretisations."""

import math

import pytest
import torch
from torch.distributions import MultivariateNormal

from coursekit import diffusion as dm
from coursekit import flow_matching as fm
from coursekit import score as S

D64 = torch.float64


def mixture(seed=0, k=3, d=2):
    g = torch.Generator().manual_seed(seed)
    means = 2 * torch.randn(k, d, generator=g, dtype=D64)
    stds = 0.2 + 0.4 * torch.rand(k, generator=g, dtype=D64)
    w = torch.rand(k, generator=g, dtype=D64) + 0.2
    return means, stds, w / w.sum()


def sample_mixture(n, means, stds, w, g):
    k = torch.multinomial(w, n, replacement=True, generator=g)
    return means[k] + stds[k, None] * torch.randn(n, means.shape[1], generator=g, dtype=D64)


def marginal_field(means, stds, w, path="linear", sigma_min=0.0):
    def u(x, t):
        a, s, da, ds = fm.path_coefficients(path, t, sigma_min=sigma_min)
        return fm.mixture_marginal(x, a, s, means, stds, w, dalpha=da, dsigma=ds)["velocity"]
    return u


def small_field(d, seed):
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(d + 1, 16), torch.nn.Tanh(), torch.nn.Linear(16, d)).double()
    return net, (lambda x, t: net(torch.cat([x, t[:, None]], 1)))


# ------------------------------------------------------------------------------------------------ paths
@pytest.mark.parametrize("path", fm.PATHS)
def test_path_derivatives_match_finite_differences_and_ends(path):
    t = torch.linspace(0.05, 0.95, 19, dtype=D64)
    _, _, da, ds = fm.path_coefficients(path, t, sigma_min=0.01)
    h = 1e-6
    ap, sp, _, _ = fm.path_coefficients(path, t + h, sigma_min=0.01)
    am, sm, _, _ = fm.path_coefficients(path, t - h, sigma_min=0.01)
    assert torch.allclose((ap - am) / (2 * h), da, atol=1e-7)
    assert torch.allclose((sp - sm) / (2 * h), ds, atol=1e-7)
    a0, s0, _, _ = fm.path_coefficients(path, torch.tensor([0.0, 1.0], dtype=D64), sigma_min=0.01)
    assert a0[0] == 0 and s0[0] == 1 and a0[1] == pytest.approx(1.0)
    assert s0[1] == pytest.approx(0.01 if path == "ot" else 0.0, abs=1e-12)


@pytest.mark.parametrize("path", fm.PATHS)
def test_cfm_target_is_time_derivative_of_interpolation_and_conditional_field(path):
    g = torch.Generator().manual_seed(1)
    x0, x1 = torch.randn(6, 3, generator=g, dtype=D64), torch.randn(6, 3, generator=g, dtype=D64)
    t = torch.rand(6, generator=g, dtype=D64) * 0.9 + 0.05
    h = 1e-6
    fd = (fm.interpolate(x0, x1, t + h, path=path, sigma_min=0.05)
          - fm.interpolate(x0, x1, t - h, path=path, sigma_min=0.05)) / (2 * h)
    target = fm.cfm_target(x0, x1, t, path=path, sigma_min=0.05)
    assert torch.allclose(fd, target, atol=1e-7)
    xt = fm.interpolate(x0, x1, t, path=path, sigma_min=0.05)
    assert torch.allclose(fm.conditional_velocity(xt, x1, t, path=path, sigma_min=0.05), target, atol=1e-10)


def test_ot_target_is_lipman_closed_form():
    x0, x1 = torch.randn(4, 2, dtype=D64), torch.randn(4, 2, dtype=D64)
    assert torch.allclose(fm.cfm_target(x0, x1, 0.3, path="ot", sigma_min=0.1), x1 - 0.9 * x0)
    assert torch.allclose(fm.cfm_target(x0, x1, 0.3), x1 - x0)


def test_cfm_loss_matches_explicit_computation():
    _, v = small_field(2, 0)
    g = torch.Generator().manual_seed(2)
    x1, x0 = torch.randn(8, 2, generator=g, dtype=D64), torch.randn(8, 2, generator=g, dtype=D64)
    t = torch.rand(8, generator=g, dtype=D64)
    want = ((v(t[:, None] * x1 + (1 - t[:, None]) * x0, t) - (x1 - x0)) ** 2).mean()
    assert fm.cfm_loss(v, x1, x0=x0, t=t).item() == pytest.approx(want.item(), rel=1e-12)


# ------------------------------------------------------------------------------------------------ mixture marginal
def test_mixture_marginal_log_prob_matches_torch_distributions():
    means, stds, w = mixture(3)
    x = torch.randn(10, 2, dtype=D64)
    a, s = 0.7, 0.4
    out = fm.mixture_marginal(x, a, s, means, stds, w)
    comps = torch.stack([MultivariateNormal(a * m, (a**2 * sd**2 + s**2) * torch.eye(2, dtype=D64)).log_prob(x)
                         for m, sd in zip(means, stds)], 1)
    assert torch.allclose(out["log_prob"], torch.logsumexp(comps + w.log(), 1), atol=1e-12)


def test_mixture_marginal_score_is_gradient_of_log_prob():
    means, stds, w = mixture(4)
    x = torch.randn(10, 2, dtype=D64, requires_grad=True)
    out = fm.mixture_marginal(x, 0.6, 0.5, means, stds, w)
    (grad,) = torch.autograd.grad(out["log_prob"].sum(), x)
    assert torch.allclose(out["score"], grad, atol=1e-10)
    assert torch.allclose(out["score"], -out["eps_mean"] / 0.5, atol=1e-12)


def test_marginal_velocity_is_posterior_mean_of_conditional_targets_monte_carlo():
    """u_t(x) = E[u_t(x | x1) | x_t = x], the posterior estimated by self-normalised importance sampling."""
    means, stds, w = mixture(5)
    g = torch.Generator().manual_seed(5)
    x1 = sample_mixture(400_000, means, stds, w, g)
    t = 0.6
    a, s, da, ds = fm.path_coefficients("linear", t)
    x = torch.tensor([[0.3, -0.2], [1.0, 1.0]], dtype=D64)
    want = fm.mixture_marginal(x, a, s, means, stds, w, dalpha=da, dsigma=ds)["velocity"]
    for i in range(x.shape[0]):
        logw = -((x[i] - a * x1) ** 2).sum(1) / (2 * s**2)
        p = torch.softmax(logw, 0)
        cond = fm.conditional_velocity(x[i].expand_as(x1), x1, t)
        est = (p[:, None] * cond).sum(0)
        ess = 1 / (p**2).sum()
        se = ((p[:, None] * (cond - est) ** 2).sum(0) / ess).sqrt()
        assert ((est - want[i]).abs() < 5 * se + 1e-3).all(), (est, want[i], se)


def test_marginal_field_satisfies_continuity_equation():
    """d p_t / dt + div(p_t u_t) = 0, by autograd in x and a central difference in t."""
    means, stds, w = mixture(6)
    x = torch.randn(7, 2, dtype=D64, requires_grad=True)
    t, h = 0.4, 1e-5

    def p(x, t):
        a, s, _, _ = fm.path_coefficients("linear", t)
        return fm.mixture_marginal(x, a, s, means, stds, w)["log_prob"].exp()

    dp_dt = (p(x, t + h) - p(x, t - h)) / (2 * h)
    flux = p(x, t)[:, None] * marginal_field(means, stds, w)(x, torch.full((7,), t, dtype=D64))
    div = sum(torch.autograd.grad(flux[:, i].sum(), x, retain_graph=True)[0][:, i] for i in range(2))
    assert torch.allclose(dp_dt, -div, atol=1e-7)


def test_cfm_and_fm_gradients_agree_in_expectation():
    means, stds, w = mixture(7)
    net, v = small_field(2, 7)
    u = marginal_field(means, stds, w)
    g = torch.Generator().manual_seed(7)
    diffs = []
    for _ in range(20):
        x1 = sample_mixture(5000, means, stds, w, g)
        x0 = torch.randn(5000, 2, generator=g, dtype=D64)
        t = torch.rand(5000, generator=g, dtype=D64)
        cfm = fm.cfm_loss(v, x1, x0=x0, t=t)
        xt = fm.interpolate(x0, x1, t)
        fml = ((v(xt, t) - u(xt, t)) ** 2).mean()
        g1 = torch.autograd.grad(cfm, list(net.parameters()))
        g2 = torch.autograd.grad(fml, list(net.parameters()))
        diffs.append(torch.cat([(a - b).reshape(-1) for a, b in zip(g1, g2)]))
    diffs = torch.stack(diffs)
    z = diffs.mean(0) / (diffs.std(0) / math.sqrt(diffs.shape[0]) + 1e-12)
    assert z.abs().max() < 5, z.abs().max()


# ---------------------------------------------------------------------------------------------- divergence, likelihood
def test_divergence_matches_explicit_jacobian_and_hutchinson_is_unbiased():
    _, v = small_field(3, 1)
    x = torch.randn(5, 3, dtype=D64)
    t = torch.full((5,), 0.3, dtype=D64)
    jac = torch.stack([torch.autograd.functional.jacobian(lambda z: v(z[None], t[:1])[0], xi) for xi in x])
    exact = jac.diagonal(dim1=1, dim2=2).sum(-1)
    assert torch.allclose(fm.divergence(v, x, t), exact, atol=1e-10)
    for probe in fm.PROBES:
        g = torch.Generator().manual_seed(3)
        draws = torch.stack([fm.hutchinson_divergence(v, x, t, probe=probe, generator=g) for _ in range(4000)])
        se = draws.std(0) / math.sqrt(draws.shape[0])
        assert ((draws.mean(0) - exact).abs() < 5 * se).all()
        var = fm.hutchinson_variance(jac, probe)
        assert torch.allclose(draws.var(0), var, rtol=0.15), (draws.var(0), var)


def test_hutchinson_variance_rademacher_is_zero_for_diagonal_and_smaller_than_gaussian():
    a = torch.randn(4, 5, 5, dtype=D64)
    assert torch.all(fm.hutchinson_variance(a, "rademacher") <= fm.hutchinson_variance(a, "gaussian"))
    diag = torch.diag_embed(torch.randn(4, 5, dtype=D64))
    assert torch.allclose(fm.hutchinson_variance(diag, "rademacher"), torch.zeros(4, dtype=D64))


def test_instantaneous_change_of_variables_on_linear_field_gaussian_path():
    """One Gaussian component: the marginal field is affine in x and p_t is Gaussian in closed form."""
    means = torch.tensor([[1.0, -0.5, 0.2]], dtype=D64)
    stds, w = torch.tensor([0.3], dtype=D64), torch.ones(1, dtype=D64)
    u = marginal_field(means, stds, w)
    x = torch.randn(4, 3, dtype=D64)
    t = torch.full((4,), 0.5, dtype=D64)
    a, s, da, ds = fm.path_coefficients("linear", 0.5)
    vk = a**2 * 0.09 + s**2
    dvk = 2 * a * da * 0.09 + 2 * s * ds
    # the field is (dv/2v)(x - a m) + da m: divergence D * dv / (2 v)
    assert torch.allclose(fm.divergence(u, x, t), torch.full((4,), 3 * dvk / (2 * vk), dtype=D64), atol=1e-10)
    x1 = means + 0.3 * torch.randn(6, 3, dtype=D64)
    got = fm.ode_log_likelihood(u, x1, n_steps=200)["log_prob"]
    want = MultivariateNormal(means[0], 0.09 * torch.eye(3, dtype=D64)).log_prob(x1)
    assert torch.allclose(got, want, atol=1e-3)


def test_ode_log_likelihood_of_mixture_marginal_field():
    means, stds, w = mixture(8)
    x1 = sample_mixture(6, means, stds, w, torch.Generator().manual_seed(8))
    got = fm.ode_log_likelihood(marginal_field(means, stds, w), x1, n_steps=400)
    want = fm.mixture_marginal(x1, 1.0, 0.0, means, stds, w)["log_prob"]
    assert torch.allclose(got["log_prob"], want, atol=2e-3)
    hut = fm.ode_log_likelihood(marginal_field(means, stds, w), x1.repeat(200, 1), n_steps=100,
                                estimator="hutchinson", generator=torch.Generator().manual_seed(0))
    est = hut["log_prob"].reshape(200, 6)
    assert ((est.mean(0) - want).abs() < 5 * est.std(0) / math.sqrt(200) + 5e-3).all()


# ------------------------------------------------------------------------------------------------ solvers
@pytest.mark.parametrize("method,order", [("euler", 1), ("heun", 2)])
def test_solver_order_of_convergence(method, order):
    """dx/dt = -x + cos(t)... with solution known: x(t) = (x0 - 1/2) e^{-t} + (sin t + cos t)/2."""
    def v(x, t):
        return -x + torch.cos(t)[:, None]
    x0 = torch.tensor([[2.0], [-1.0]], dtype=D64)
    exact = (x0 - 0.5) * math.exp(-1) + (math.sin(1) + math.cos(1)) / 2
    errs = [(fm.ode_solve(v, x0, n, method=method) - exact).abs().max().item() for n in (20, 40, 80)]
    rates = [math.log2(errs[i] / errs[i + 1]) for i in range(2)]
    assert all(abs(r - order) < 0.1 for r in rates), rates
    assert fm.nfe(method, 10) == 10 * order


def test_ode_solve_backwards_inverts_forwards_and_keeps_states():
    means, stds, w = mixture(9)
    u = marginal_field(means, stds, w, path="ot", sigma_min=0.05)
    x0 = torch.randn(5, 2, dtype=D64)
    x1, states = fm.ode_solve(u, x0, 100, keep_all=True)
    assert len(states) == 101 and torch.equal(states[-1], x1)
    back = fm.ode_solve(u, x1, 100, t_start=1.0, t_end=0.0)
    assert torch.allclose(back, x0, atol=1e-3)


def test_straightness_zero_for_straight_lines_positive_otherwise():
    x0, x1 = torch.randn(10, 2, dtype=D64), torch.randn(10, 2, dtype=D64)
    states = [fm.interpolate(x0, x1, k / 8) for k in range(9)]
    assert fm.straightness(states).item() == pytest.approx(0.0, abs=1e-20)
    bent = [s + math.sin(math.pi * k / 8) for k, s in enumerate(states)]
    assert fm.straightness(bent).item() > 0.1


# ------------------------------------------------------------------------------------------------ SDEs
def test_vp_discretisation_is_chapter_08_linear_schedule_and_marginal_matches():
    for T in (50, 200, 1000):
        assert torch.allclose(fm.VPSDE().discretise(T), dm.beta_schedule("linear", T), rtol=1e-12)
    abar = dm.alphas_cumprod_from_betas(dm.beta_schedule("linear", 1000))
    a, s, _, _ = fm.VPSDE().marginal(torch.arange(1, 1001, dtype=D64) / 1000)
    assert torch.allclose(abar.sqrt(), a, atol=5e-3)
    assert torch.allclose(a**2 + s**2, torch.ones(1000, dtype=D64))


def test_ve_discretisation_is_chapter_09_geometric_sigmas():
    sde = fm.VESDE(0.02, 3.0)
    assert torch.allclose(sde.discretise(10).float(), S.geometric_sigmas(3.0, 0.02, 10), rtol=1e-6)


@pytest.mark.parametrize("sde", [fm.VPSDE(), fm.VESDE(0.01, 5.0)], ids=["vp", "ve"])
def test_sde_marginal_derivatives_and_fokker_planck_variance(sde):
    """d sigma_t^2/dt for the Gaussian kernel: 2 f sigma^2 + g^2 (Fokker-Planck for a linear SDE), and
    dalpha/dt = f alpha."""
    t = torch.linspace(0.1, 0.9, 9, dtype=D64)
    a, s, da, ds = sde.marginal(t)
    f = sde.drift_coef(t)
    assert torch.allclose(da, f * a, atol=1e-9)
    assert torch.allclose(2 * s * ds, 2 * f * s**2 + sde.g2(t), rtol=1e-9)


@pytest.mark.parametrize("sde", [fm.VPSDE(0.1, 12.0), fm.VESDE(0.01, 6.0)], ids=["vp", "ve"])
def test_probability_flow_and_reverse_sde_reach_the_same_marginals(sde):
    means, stds, w = mixture(10)

    def score(x, t):
        a, s, _, _ = sde.marginal(t)
        return fm.mixture_marginal(x, a, s, means, stds, w)["score"]

    g = torch.Generator().manual_seed(10)
    n = 4000
    a1, s1, _, _ = sde.marginal(torch.tensor(1.0, dtype=D64))  # start from the exact t = 1 marginal
    x1 = a1 * sample_mixture(n, means, stds, w, g) + s1 * torch.randn(n, 2, generator=g, dtype=D64)
    t_end = 1e-3
    ode = fm.probability_flow_sample(sde, score, x1, 200, t_end=t_end)
    sdes = fm.reverse_sde_sample(sde, score, x1, 400, t_end=t_end, generator=g)
    a, s, _, _ = sde.marginal(torch.tensor(t_end, dtype=D64))
    data = sample_mixture(n, means, stds, w, g) * a + s * torch.randn(n, 2, generator=g, dtype=D64)
    for samples in (ode, sdes):
        se = data.std(0) / math.sqrt(n) * math.sqrt(2)
        assert ((samples.mean(0) - data.mean(0)).abs() < 5 * se + 0.02).all()
        assert ((samples.std(0) - data.std(0)).abs() < 0.08 * data.std(0)).all()
        # mean log-density under the true marginal, against that of true draws
        lp = fm.mixture_marginal(samples, a, s, means, stds, w)["log_prob"].mean()
        lp_true = fm.mixture_marginal(data, a, s, means, stds, w)["log_prob"].mean()
        assert abs((lp - lp_true).item()) < 0.1


def test_ddim_step_is_euler_step_of_probability_flow_in_rescaled_variables():
    """DDIM (eta = 0) moves x/alpha by d(sigma/alpha) times eps: exact for eps constant, so with the
    true eps of a Gaussian its many-step limit is the probability-flow ODE."""
    means, stds, w = mixture(11)
    T = 1000
    abar = dm.alphas_cumprod_from_betas(dm.beta_schedule("linear", T))
    sde = fm.VPSDE()
    x = torch.randn(200, 2, dtype=D64, generator=torch.Generator().manual_seed(11))

    def eps_fn(x, idx):
        a, s = abar[idx].sqrt(), (1 - abar[idx]).sqrt()
        return fm.mixture_marginal(x, a, s, means, stds, w)["eps_mean"]

    xd = x.clone()
    start = 900  # a code index whose continuous time is inside [0, 1]
    for i in range(start, 0, -1):
        idx = torch.full((xd.shape[0],), i, dtype=torch.long)
        xd = dm.ddim_step(eps_fn(xd, idx), xd, idx, i - 1, abar, clip=False)

    def score(x, t):
        a, s, _, _ = sde.marginal(t)
        return fm.mixture_marginal(x, a, s, means, stds, w)["score"]

    def t_of(ab):  # the time whose VP alpha(t)^2 is ab: 9.95 t^2 + 0.1 t + log ab = 0
        return (-0.1 + math.sqrt(0.01 - 4 * 9.95 * math.log(ab))) / (2 * 9.95)

    xo = fm.ode_solve(fm.probability_flow_velocity(sde, score), x, 400, t_start=t_of(abar[start].item()),
                      t_end=t_of(abar[0].item()))
    err = (xd - xo).abs()
    # the 900 Euler steps in sigma/alpha leave O(step) errors, largest for the few points near a boundary
    # between modes, where the flow map is steep
    assert err.mean() < 5e-3 and err.max() < 0.15, (err.mean(), err.max())


# ------------------------------------------------------------------------------------------------ conversions
@pytest.mark.parametrize("source", fm.PREDICTIONS)
@pytest.mark.parametrize("target", fm.PREDICTIONS)
def test_conversions_are_consistent_with_the_path(source, target):
    g = torch.Generator().manual_seed(12)
    x, eps = torch.randn(5, 1, 2, 2, generator=g, dtype=D64), torch.randn(5, 1, 2, 2, generator=g, dtype=D64)
    t = torch.rand(5, generator=g, dtype=D64) * 0.8 + 0.1
    a, s, da, ds = fm.VPSDE().marginal(t)
    xt = a.view(-1, 1, 1, 1) * x + s.view(-1, 1, 1, 1) * eps

    def col(c):
        return c.view(-1, 1, 1, 1)

    truth = {"eps": eps, "score": -eps / col(s), "data": x, "velocity": col(da) * x + col(ds) * eps}
    got = fm.convert_prediction(truth[source], xt, a, s, source=source, target=target, dalpha=da, dsigma=ds)
    assert torch.allclose(got, truth[target], atol=1e-10)


def test_flow_matching_velocity_to_eps_on_linear_path():
    x0, x1 = torch.randn(4, 2, dtype=D64), torch.randn(4, 2, dtype=D64)
    t = torch.tensor([0.2, 0.4, 0.6, 0.8], dtype=D64)
    a, s, da, ds = fm.path_coefficients("linear", t)
    xt = fm.interpolate(x0, x1, t)
    v = fm.cfm_target(x0, x1, t)
    assert torch.allclose(fm.convert_prediction(v, xt, a, s, source="velocity", target="eps", dalpha=da, dsigma=ds),
                          x0)
    assert torch.allclose(xt - t[:, None] * v, x0)



@pytest.mark.parametrize("path", fm.PATHS + ("vp",))
def test_velocity_error_is_noise_error_times_the_path_factor(path):
    # For a wrong noise prediction the converted velocity's error is ((a ds - s da) / a) times the noise error,
    # compared with the true target da x + ds eps built independently of convert_prediction.
    g = torch.Generator().manual_seed(13)
    x, eps = torch.randn(6, 1, 2, 2, generator=g, dtype=D64), torch.randn(6, 1, 2, 2, generator=g, dtype=D64)
    eps_hat = eps + torch.randn(6, 1, 2, 2, generator=g, dtype=D64)
    t = torch.rand(6, generator=g, dtype=D64) * 0.8 + 0.1
    a, s, da, ds = fm.VPSDE().marginal(t) if path == "vp" else fm.path_coefficients(path, t, sigma_min=0.01)

    def col(c):
        return c.view(-1, 1, 1, 1)

    xt = col(a) * x + col(s) * eps
    v_hat = fm.convert_prediction(eps_hat, xt, a, s, source="eps", target="velocity", dalpha=da, dsigma=ds)
    factor = (a * ds - s * da) / a
    assert torch.allclose(v_hat - (col(da) * x + col(ds) * eps), col(factor) * (eps_hat - eps), atol=1e-12)
    if path == "linear":
        assert torch.allclose(factor, -1 / t, rtol=1e-12)


@pytest.mark.parametrize("path", fm.PATHS + ("vp",))
def test_conversion_determinant_is_alpha_squared_times_derivative_of_sigma_over_alpha(path):
    t = torch.linspace(0.1, 0.9, 9, dtype=D64).requires_grad_(True)
    a, s, da, ds = fm.VPSDE().marginal(t) if path == "vp" else fm.path_coefficients(path, t, sigma_min=0.01)
    (d_ratio,) = torch.autograd.grad((s / a).sum(), t)  # autograd, independent of the closed-form derivatives
    assert torch.allclose((a * ds - s * da).detach(), (a**2 * d_ratio).detach(), rtol=1e-10)


# ------------------------------------------------------------------------------------------------ networks
def test_velocity_mlp_and_time_scaled_unet_shapes():
    net = fm.VelocityMLP(2, (16, 16))
    assert net(torch.randn(5, 2), torch.rand(5)).shape == (5, 2)
    assert net(torch.randn(5, 2), 0.3).shape == (5, 2)
    from coursekit.nets import UNet
    unet = UNet(1, 8)
    wrapped = fm.TimeScaled(unet, 200)
    x, t = torch.randn(3, 1, 8, 8), torch.rand(3)
    assert torch.equal(wrapped(x, t), unet(x, 200 * t))


# ------------------------------------------------------------------------------------------------ errors
def test_errors_on_bad_input():
    x = torch.randn(4, 2)
    with pytest.raises(ValueError, match="path"):
        fm.path_coefficients("straight", 0.5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fm.interpolate(x, x, 1.5)
    with pytest.raises(ValueError, match="sigma_min"):
        fm.path_coefficients("ot", 0.5, sigma_min=1.0)
    with pytest.raises(ValueError, match="NaN"):
        fm.cfm_target(x, torch.full((4, 2), float("nan")), 0.5)
    with pytest.raises(TypeError, match="floating"):
        fm.cfm_target(x, torch.zeros(4, 2, dtype=torch.long), 0.5)
    with pytest.raises(ValueError, match="shape"):
        fm.cfm_target(x, torch.randn(4, 3), 0.5)
    with pytest.raises(ValueError, match="shape"):
        fm.cfm_loss(lambda z, t: z[:, :1], x)
    with pytest.raises(ValueError, match="sigma_t > 0"):
        fm.conditional_velocity(x, x, 1.0)
    with pytest.raises(ValueError, match="method"):
        fm.ode_solve(lambda z, t: z, x, 4, method="rk45")
    with pytest.raises(ValueError, match="n_steps"):
        fm.ode_solve(lambda z, t: z, x, 0)
    with pytest.raises(ValueError, match="probe"):
        fm.hutchinson_divergence(lambda z, t: z, x, 0.5, probe="uniform")
    with pytest.raises(ValueError, match="noise"):
        fm.hutchinson_divergence(lambda z, t: z, x, 0.5, noise=torch.randn(2, 4, 3))
    with pytest.raises(ValueError, match="estimator"):
        fm.ode_log_likelihood(lambda z, t: z, x, estimator="approx")
    with pytest.raises(ValueError, match="weights"):
        fm.mixture_marginal(x, 1.0, 0.1, torch.zeros(2, 2), torch.ones(2), torch.tensor([0.7, 0.7]))
    with pytest.raises(ValueError, match="stds"):
        fm.mixture_marginal(x, 1.0, 0.1, torch.zeros(2, 2), torch.tensor([1.0, 0.0]), torch.tensor([0.5, 0.5]))
    with pytest.raises(ValueError, match="dalpha and dsigma"):
        fm.convert_prediction(x, x, 0.5, 0.5, source="eps", target="velocity")
    with pytest.raises(ValueError, match="sigma"):
        fm.convert_prediction(x, x, 1.0, 0.0, source="data", target="eps")
    with pytest.raises(ValueError, match="source"):
        fm.convert_prediction(x, x, 0.5, 0.5, source="noise", target="eps")
    with pytest.raises(ValueError, match="beta_min"):
        fm.VPSDE(1.0, 0.5)
    with pytest.raises(ValueError, match="sigma_min"):
        fm.VESDE(2.0, 1.0)
    with pytest.raises(TypeError, match="VPSDE"):
        fm.probability_flow_velocity("vp", lambda z, t: z)
    with pytest.raises(ValueError, match="t_end"):
        fm.reverse_sde_sample(fm.VPSDE(), lambda z, t: z, x, 5, t_end=1.0)
    with pytest.raises(ValueError, match="jacobian"):
        fm.hutchinson_variance(torch.randn(3, 2))
    with pytest.raises(ValueError, match="states"):
        fm.straightness([x])
    with pytest.raises(ValueError, match="x must have shape"):
        fm.VelocityMLP(2)(torch.randn(3, 3), 0.5)


def test_mixture_marginal_agrees_with_chapter_02_mixture_density_and_score():
    from coursekit import mixtures as M
    means, stds, w = mixture(13)
    x = torch.randn(9, 2, dtype=D64)
    a, s = 0.8, 0.3
    out = fm.mixture_marginal(x, a, s, means, stds, w)
    assert torch.allclose(out["log_prob"], M.gaussian_mixture_log_prob(x, a * means, a * stds, w, sigma=s))
    assert torch.allclose(out["score"], M.gaussian_mixture_score(x, a * means, a * stds, w, sigma=s))
