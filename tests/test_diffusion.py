"""coursekit.diffusion against independent references: diffusers' DDPMScheduler/DDIMScheduler (schedules,
q_sample, posterior, reverse steps; built directly, no hub downloads), the Markov chain simulated step by
step (the closed-form kernel), Gaussian conditioning (the posterior), and closed forms (VLB weights)."""

import math

import pytest
import torch

from coursekit import diffusion as d
from coursekit import nets

diffusers = pytest.importorskip("diffusers", reason="diffusers is a test-only reference (pip install -e '.[dev]')")
DIFFUSERS_NAME = {"linear": "linear", "cosine": "squaredcos_cap_v2"}
TOL = 1e-6


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def make_scheduler(cls, name, T, float64=True, **kw):
    """A diffusers scheduler with our schedule; with float64=True its tables are replaced by the float64
    schedule (equal to its own float32 betas to 1e-6, tested below), so that the comparison of the step
    formulas is not limited by float32 round-off inside diffusers."""
    extra = {"beta_start": 1e-4 * 1000 / T, "beta_end": 0.02 * 1000 / T} if name == "linear" else {}
    s = cls(num_train_timesteps=T, beta_schedule=DIFFUSERS_NAME[name], **extra, **kw)
    if float64:
        s.betas = d.beta_schedule(name, T)
        s.alphas = 1.0 - s.betas
        s.alphas_cumprod = torch.cumprod(s.alphas, dim=0)
        if hasattr(s, "final_alpha_cumprod"):
            s.final_alpha_cumprod = torch.tensor(1.0, dtype=torch.float64)
        s.one = torch.tensor(1.0, dtype=torch.float64)
    return s


def rand_images(n=16, seed=0, scale=1.0, dtype=torch.float64):
    return scale * torch.randn(n, 1, 8, 8, generator=gen(seed), dtype=dtype)


# ------------------------------------------------------------------------------------------------ schedules


@pytest.mark.parametrize("name", ["linear", "cosine"])
@pytest.mark.parametrize("T", [50, 250, 1000])
def test_beta_schedule_matches_diffusers(name, T):
    ours = d.beta_schedule(name, T)
    ref = make_scheduler(diffusers.DDPMScheduler, name, T, float64=False).betas
    assert ours.shape == (T,) and ours.dtype == torch.float64
    assert torch.allclose(ours, ref.double(), atol=TOL, rtol=0)
    ours32 = d.beta_schedule(name, T, dtype=torch.float32)
    assert ours32.dtype == torch.float32 and torch.allclose(ours32, ref, atol=TOL, rtol=0)
    abar = d.alphas_cumprod_from_betas(ours)
    assert torch.allclose(abar, torch.cumprod(1 - ref.double(), 0), atol=TOL, rtol=0)


def test_schedule_properties():
    lin = d.beta_schedule("linear", 1000)
    assert lin[0].item() == pytest.approx(1e-4) and lin[-1].item() == pytest.approx(0.02)  # Ho et al.
    lin200 = d.beta_schedule("linear", 200)
    assert lin200[0].item() == pytest.approx(5e-4) and lin200[-1].item() == pytest.approx(0.1)  # scaled by 1000/T
    # scaling keeps the final signal level of the same order
    a1000, a200 = (d.alphas_cumprod_from_betas(b)[-1].item() for b in (lin, lin200))
    assert a1000 < 1e-4 and a200 < 1e-4
    cos = d.beta_schedule("cosine", 200)
    assert cos.max().item() == pytest.approx(0.999) and cos[-1].item() == pytest.approx(0.999)  # clipped
    assert bool((cos[:-1] < 0.999).all()) and bool((cos > 0).all())
    # cosine: abar follows cos^2 (Nichol & Dhariwal eq. 17) where no clipping happened
    abar = d.alphas_cumprod_from_betas(cos)
    f = lambda u: math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2
    for t in (0, 50, 100, 150):
        assert abar[t].item() == pytest.approx(f((t + 1) / 200) / f(0), rel=1e-9)
    s = d.snr(abar)
    assert bool((s[1:] < s[:-1]).all())
    assert torch.allclose(d.log_snr(abar), s.log(), rtol=1e-9)


def test_schedule_errors():
    with pytest.raises(ValueError, match="name must be one of"):
        d.beta_schedule("quadratic", 100)
    with pytest.raises(ValueError, match="T must be >= 2"):
        d.beta_schedule("linear", 1)
    with pytest.raises(TypeError, match="integer"):
        d.beta_schedule("linear", 100.0)
    with pytest.raises(TypeError, match="dtype"):
        d.beta_schedule("cosine", 100, dtype=torch.int64)
    with pytest.raises(ValueError, match="T >= 21"):
        d.beta_schedule("linear", 10)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        d.alphas_cumprod_from_betas(torch.tensor([0.1, 1.0]))
    with pytest.raises(ValueError, match="non-increasing"):
        d.snr(torch.tensor([0.5, 0.9]))
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        d.snr(torch.tensor([0.5, 0.0]))


# ------------------------------------------------------------------------------------------------ forward process


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_q_sample_matches_diffusers(name):
    T = 200
    s = make_scheduler(diffusers.DDPMScheduler, name, T)
    x0, noise = rand_images(32, 1), rand_images(32, 2)
    t = torch.randint(0, T, (32,), generator=gen(3))
    ours = d.q_sample(x0, t, noise, d.alphas_cumprod_from_betas(d.beta_schedule(name, T)))
    assert ours.shape == x0.shape and ours.dtype == torch.float64
    assert torch.allclose(ours, s.add_noise(x0, noise, t), atol=TOL, rtol=0)
    # float32 images with diffusers' own float32 tables
    s32 = make_scheduler(diffusers.DDPMScheduler, name, T, float64=False)
    ours32 = d.q_sample(x0.float(), t, noise.float(), s32.alphas_cumprod)
    assert ours32.dtype == torch.float32
    assert torch.allclose(ours32, s32.add_noise(x0.float(), noise.float(), t), atol=TOL, rtol=0)


def test_diffusion_kernel_by_simulating_the_chain():
    """The closed form q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I) against the Markov chain run step by
    step: means and variances at several t agree within 5 standard errors."""
    T, n = 100, 40_000
    betas = d.beta_schedule("linear", T)
    abar = d.alphas_cumprod_from_betas(betas)
    x0 = torch.tensor([-1.0, -0.3, 0.5, 1.0], dtype=torch.float64).repeat(n, 1)  # (n, 4): four starting values
    keep = (0, 9, 49, 99)
    states = d.simulate_forward_chain(x0, betas, keep, generator=gen(0))
    for t in keep:
        x = states[t]
        mean_ref = abar[t].sqrt() * x0[0]
        var_ref = 1 - abar[t]
        se_mean = (var_ref / n) ** 0.5
        se_var = var_ref * (2 / (n - 1)) ** 0.5
        assert torch.all((x.mean(0) - mean_ref).abs() < 5 * se_mean), t
        assert torch.all((x.var(0) - var_ref).abs() < 5 * se_var), t


def test_posterior_by_gaussian_conditioning():
    """q(x_{t-1} | x_t, x_0) from the joint Gaussian of (x_{t-1}, x_t) given x_0 (conditioning formula)."""
    T = 100
    abar = d.alphas_cumprod_from_betas(d.beta_schedule("cosine", T))
    x0, xt = rand_images(8, 4), rand_images(8, 5)
    for t in (1, 2, 37, 99):
        a_t, a_p = abar[t], abar[t - 1]
        alpha = a_t / a_p
        # x_{t-1} = sqrt(a_p) x0 + sqrt(1 - a_p) e1;  x_t = sqrt(alpha) x_{t-1} + sqrt(1 - alpha) e2
        s11, s12, s22 = 1 - a_p, alpha.sqrt() * (1 - a_p), 1 - a_t
        mean_ref = a_p.sqrt() * x0 + s12 / s22 * (xt - a_t.sqrt() * x0)
        var_ref = s11 - s12**2 / s22
        mean, var = d.q_posterior_mean_variance(x0, xt, t, abar)
        assert var.shape == (8, 1, 1, 1)
        assert (torch.allclose(mean, mean_ref, atol=1e-10)
                and torch.allclose(var, var_ref.expand(8, 1, 1, 1), atol=1e-12))
    mean0, var0 = d.q_posterior_mean_variance(x0, xt, 0, abar)  # the first step: point mass at x0
    assert torch.allclose(mean0, x0, atol=1e-12) and torch.all(var0 == 0)


@pytest.mark.parametrize("name", ["linear", "cosine"])
@pytest.mark.parametrize("clip", [True, False])
def test_posterior_and_ddpm_step_match_diffusers(name, clip):
    T = 200
    abar = d.alphas_cumprod_from_betas(d.beta_schedule(name, T))
    s = make_scheduler(diffusers.DDPMScheduler, name, T, clip_sample=clip, variance_type="fixed_small")
    s_x0 = make_scheduler(diffusers.DDPMScheduler, name, T, clip_sample=False, prediction_type="sample")
    xt, eps, x0 = rand_images(16, 6, 1.5), rand_images(16, 7, 1.5), rand_images(16, 8).clamp(-1, 1)
    for t in (0, 1, 2, 10, 100, T - 1):
        z = torch.randn(xt.shape, generator=gen(9 + t), dtype=torch.float64)
        ref = s.step(eps, t, xt, generator=gen(9 + t))
        # diffusers draws z with the same generator seed; check that assumption first
        ours = d.ddpm_step(eps, xt, t, abar, noise=z, clip=clip)
        assert torch.allclose(ours, ref.prev_sample, atol=TOL, rtol=0), (t, (ours - ref.prev_sample).abs().max())
        _, _, x0_hat = d.p_mean_variance(eps, xt, t, abar, clip=clip)
        assert torch.allclose(x0_hat, ref.pred_original_sample, atol=TOL, rtol=0)
        # the posterior: a scheduler that is told x0 directly returns mean + sqrt(var) z
        mean, var = d.q_posterior_mean_variance(x0, xt, t, abar)
        ref_var = s_x0._get_variance(t).double() if t > 0 else torch.zeros((), dtype=torch.float64)
        assert torch.allclose(var, ref_var.expand(16, 1, 1, 1), atol=TOL, rtol=0)
        ref_x0 = s_x0.step(x0, t, xt, generator=gen(9 + t)).prev_sample
        noise_term = var.sqrt() * z if t > 0 else 0.0
        assert torch.allclose(mean + noise_term, ref_x0, atol=TOL, rtol=0)


@pytest.mark.parametrize("name", ["linear", "cosine"])
@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("clip", [True, False])
def test_ddim_step_matches_diffusers(name, eta, clip):
    T, n_steps = 200, 20
    abar = d.alphas_cumprod_from_betas(d.beta_schedule(name, T))
    s = make_scheduler(diffusers.DDIMScheduler, name, T, clip_sample=clip, set_alpha_to_one=True,
                       timestep_spacing="trailing")
    s.set_timesteps(n_steps)
    ts = d.ddim_timesteps(T, n_steps)
    assert ts == s.timesteps.tolist() and ts[0] == T - 1
    xt, eps = rand_images(16, 10, 1.5), rand_images(16, 11, 1.5)
    for i, t in enumerate(ts):
        t_prev = ts[i + 1] if i + 1 < len(ts) else -1
        z = torch.randn(xt.shape, generator=gen(20 + i), dtype=torch.float64)
        ref = s.step(eps, t, xt, eta=eta, use_clipped_model_output=True, variance_noise=z if eta > 0 else None)
        ours = d.ddim_step(eps, xt, t, t_prev, abar, eta=eta, noise=z, clip=clip)
        assert torch.allclose(ours, ref.prev_sample, atol=TOL, rtol=0), (t, (ours - ref.prev_sample).abs().max())


def test_ddim_with_eta_one_and_unit_steps_is_ddpm():
    abar = d.alphas_cumprod_from_betas(d.beta_schedule("linear", 100))
    xt, eps, z = rand_images(8, 12), rand_images(8, 13), rand_images(8, 14)
    for t in (1, 5, 50, 99):
        a = d.ddim_step(eps, xt, t, t - 1, abar, eta=1.0, noise=z)
        b = d.ddpm_step(eps, xt, t, abar, noise=z)
        assert torch.allclose(a, b, atol=1e-10)


def test_epsilon_parameterisation_mean():
    """Without clipping, the posterior mean at x0_hat(eps) is (x_t - beta_t / sqrt(1 - abar_t) eps) / sqrt(alpha_t)."""
    abar = d.alphas_cumprod_from_betas(d.beta_schedule("cosine", 100))
    xt, eps = rand_images(8, 15), rand_images(8, 16)
    for t in (1, 30, 99):
        alpha = abar[t] / abar[t - 1]
        ref = (xt - (1 - alpha) / (1 - abar[t]).sqrt() * eps) / alpha.sqrt()
        mean, _, _ = d.p_mean_variance(eps, xt, t, abar, clip=False)
        assert torch.allclose(mean, ref, atol=1e-10)
    assert torch.allclose(
        d.predict_eps_from_x0(xt, 30, d.predict_x0_from_eps(xt, 30, eps, abar), abar), eps, atol=1e-10
    )


# ------------------------------------------------------------------------------------------------ bad input


def test_bad_input_errors():
    abar = d.alphas_cumprod_from_betas(d.beta_schedule("linear", 50)).float()
    x = torch.zeros(4, 1, 8, 8)
    with pytest.raises(ValueError, match=r"t must lie in \{0, ..., 49\}"):
        d.q_sample(x, 50, x, abar)
    with pytest.raises(ValueError, match="t must lie in"):
        d.q_sample(x, torch.tensor([0, 1, 2, -1]), x, abar)
    with pytest.raises(TypeError, match="integer time indices"):
        d.q_sample(x, torch.full((4,), 3.0), x, abar)
    with pytest.raises(TypeError, match="integer"):
        d.q_sample(x, 3.0, x, abar)
    with pytest.raises(ValueError, match=r"shape \(\) or \(4,\)"):
        d.q_sample(x, torch.zeros(3, dtype=torch.long), x, abar)
    with pytest.raises(TypeError, match="floating-point"):
        d.q_sample(x.long(), 3, x, abar)
    with pytest.raises(ValueError, match="same shape"):
        d.q_sample(x, 3, torch.zeros(4, 64), abar)
    with pytest.raises(ValueError, match="NaN"):
        d.q_sample(x * float("nan"), 3, x, abar)
    with pytest.raises(TypeError, match="torch.Tensor"):
        d.q_sample(x.numpy(), 3, x, abar)
    with pytest.raises(ValueError, match=r"shape \(T,\)"):
        d.q_sample(x, 3, x, abar.reshape(5, 10))
    with pytest.raises(ValueError, match="t_prev must be smaller"):
        d.ddim_step(x, x, 5, 5, abar)
    with pytest.raises(ValueError, match="eta"):
        d.ddim_step(x, x, 5, 4, abar, eta=-1.0)
    with pytest.raises(ValueError, match="variance must be one of"):
        d.ddpm_step(x, x, 5, abar, variance="learned")
    with pytest.raises(ValueError, match="n_steps must be <="):
        d.ddim_timesteps(50, 51)
    with pytest.raises(ValueError, match="method must be one of"):
        d.sample_timesteps(8, 50, method="stratified")
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        d.to_model_space(torch.full((2, 3), 2.0))
    with pytest.raises(ValueError, match="grid"):
        d.discretized_gaussian_log_likelihood(torch.full((2, 3), 0.1), torch.zeros(2, 3), torch.zeros(2, 3), levels=17)


# ------------------------------------------------------------------------------------------------ objectives


def test_vlb_weights_three_forms():
    for name in ("linear", "cosine"):
        abar = d.alphas_cumprod_from_betas(d.beta_schedule(name, 200))
        w = d.vlb_weights(abar)
        ap = torch.cat([abar.new_ones(1), abar[:-1]])
        alpha = abar / ap
        beta = 1 - alpha
        tilde = (1 - ap) / (1 - abar) * beta
        ho = beta[1:] ** 2 / (2 * tilde[1:] * alpha[1:] * (1 - abar[1:]))
        snr = d.snr(abar)
        vdm = 0.5 * (snr[:-1] / snr[1:] - 1)
        assert torch.isinf(w[0])
        assert torch.allclose(w[1:], ho, rtol=1e-9) and torch.allclose(w[1:], vdm, rtol=1e-9)


class _PointMassDenoiser(torch.nn.Module):
    """The exact noise predictor when the data is a single image x*: eps = (x_t - sqrt(abar) x*) / sqrt(1-abar)."""

    def __init__(self, x_star, abar):
        super().__init__()
        self.x_star, self.abar = x_star, abar

    def forward(self, xt, t):
        return d.predict_eps_from_x0(xt, t, self.x_star.expand_as(xt), self.abar)


def test_vlb_terms():
    T, levels = 100, 17
    abar = d.alphas_cumprod_from_betas(d.beta_schedule("linear", T))
    x_star = (torch.randint(0, levels, (1, 1, 8, 8), generator=gen(1)).double() / (levels - 1)) * 2 - 1
    x0 = x_star.expand(6, 1, 8, 8)
    perfect = d.vlb_terms(_PointMassDenoiser(x_star, abar), x0, abar, levels=levels, generator=gen(2))
    assert perfect["terms"].shape == (T - 1, 6) and perfect["mse"].shape == (T, 6)
    assert perfect["terms"].abs().max() < 1e-8
    # the decoder puts a Gaussian of variance tilde-beta (code index 1) on x*: mass of the bin around x*
    sd = d.q_posterior_mean_variance(x0, x0, 1, abar)[1][0].sqrt()
    cdf = torch.distributions.Normal(0.0, 1.0).cdf
    half = 1 / (levels - 1)
    edge = (x_star.abs() > 1 - 1e-6)
    mass = torch.where(edge, cdf(half / sd), cdf(half / sd) - cdf(-half / sd))
    assert torch.allclose(perfect["decoder"], -mass.log().sum().expand(6), rtol=1e-9)
    assert torch.allclose(perfect["total"], perfect["prior"] + perfect["terms"].sum(0) + perfect["decoder"])
    # a model predicting zero noise: each L_{t-1} equals w_t times the summed squared error
    zero = lambda xt, t: torch.zeros_like(xt)
    out = d.vlb_terms(zero, x0, abar, levels=levels, generator=gen(3))
    w = d.vlb_weights(abar)
    assert torch.allclose(out["terms"], w[1:, None] * out["mse"][1:], rtol=1e-6)
    assert bool((out["total"] > perfect["total"]).all())
    # prior term: KL(N(sqrt(abar_T) x0, 1 - abar_T) || N(0, 1)) summed over 64 pixels
    aT = abar[-1]
    kl = 0.5 * (aT * x_star**2 + (1 - aT) - 1 - torch.log(1 - aT)).sum()
    assert torch.allclose(perfect["prior"], kl.expand(6))


def test_discretized_gaussian_is_a_distribution():
    levels = 17
    grid = torch.linspace(-1, 1, levels, dtype=torch.float64)
    for mean, log_scale in ((0.3, -2.0), (-0.9, 0.0), (1.0, -5.0)):
        lp = d.discretized_gaussian_log_likelihood(grid, torch.full_like(grid, mean), torch.full_like(grid, log_scale),
                                                   levels=levels)
        assert lp.exp().sum().item() == pytest.approx(1.0, abs=1e-9)
        assert bool((lp <= 0).all())


def test_normal_kl_matches_torch_and_rejects_bad_input():
    g = gen(11)
    m1, m2 = torch.randn(2, 5, 3, generator=g, dtype=torch.float64)
    v1, v2 = torch.rand(2, 5, 3, generator=g, dtype=torch.float64) + 0.1
    ref = torch.distributions.kl_divergence(torch.distributions.Normal(m1, v1.sqrt()),
                                            torch.distributions.Normal(m2, v2.sqrt()))
    assert torch.allclose(d.normal_kl(m1, v1, m2, v2), ref, atol=1e-12)
    with pytest.raises(ValueError, match="var2"):
        d.normal_kl(m1, v1, m2, -v2)
    with pytest.raises(ValueError, match="mean1"):
        d.normal_kl(m1.clone().fill_(float("nan")), v1, m2, v2)
    with pytest.raises(TypeError, match="var1"):
        d.normal_kl(m1, torch.ones(5, 3, dtype=torch.long), m2, v2)


def test_discretized_gaussian_rejects_bad_mean_and_scale():
    grid = torch.linspace(-1, 1, 17, dtype=torch.float64)
    with pytest.raises(ValueError, match="mean"):
        d.discretized_gaussian_log_likelihood(grid, torch.full_like(grid, float("nan")), torch.zeros_like(grid),
                                              levels=17)
    with pytest.raises(TypeError, match="log_scale"):
        d.discretized_gaussian_log_likelihood(grid, torch.zeros_like(grid), torch.zeros(17, dtype=torch.long),
                                              levels=17)


def test_low_discrepancy_sampler():
    T, n = 200, 64
    t = d.sample_timesteps(n, T, method="low_discrepancy", generator=gen(0))
    assert t.dtype == torch.long and t.shape == (n,) and int(t.min()) >= 0 and int(t.max()) < T
    # evenly spread: exactly one index in each of the n strata of width T / n (up to the wrap-around offset)
    counts = torch.bincount(torch.sort(t).values * n // T, minlength=n)
    assert int(counts.max()) <= 2
    # each index is uniform: the pooled histogram over many batches is flat (chi-square-like bound)
    many = torch.cat([d.sample_timesteps(n, 10, method="low_discrepancy", generator=gen(s)) for s in range(400)])
    freq = torch.bincount(many, minlength=10).double() / many.numel()
    assert torch.allclose(freq, torch.full((10,), 0.1, dtype=torch.float64), atol=0.01)
    # variance reduction of a batch mean of a smooth function of t
    f = lambda tt: torch.cos(tt.double() / T * 3)
    est = {m: torch.stack([f(d.sample_timesteps(n, T, method=m, generator=gen(s))).mean() for s in range(300)])
           for m in ("uniform", "low_discrepancy")}
    assert abs(est["uniform"].mean() - est["low_discrepancy"].mean()) < 0.02  # both unbiased
    assert est["low_discrepancy"].var() < 0.05 * est["uniform"].var()


def test_diffusion_loss_trains_and_samplers_run():
    torch.manual_seed(0)
    T = 20
    abar = d.alphas_cumprod_from_betas(d.beta_schedule("cosine", T)).float()
    net = nets.UNet(channels=8, groups=4)
    x0 = d.to_model_space(torch.rand(32, 1, 8, 8))
    loss = d.diffusion_loss(net, x0, abar, generator=gen(0))
    assert loss.ndim == 0 and loss.item() == pytest.approx(1.0, abs=0.15)  # zero-initialised output: E eps^2 = 1
    loss.backward()
    assert all(p.grad is not None for p in net.parameters())
    net.eval()
    x = d.ddpm_sample(net, (5, 1, 8, 8), abar, generator=gen(1))
    assert x.shape == (5, 1, 8, 8) and float(x.abs().max()) <= 1.0
    x2 = d.ddpm_sample(net, (5, 1, 8, 8), abar, generator=gen(1))
    assert torch.equal(x, x2)  # seeded
    x3, states = d.ddim_sample(net, (5, 1, 8, 8), abar, 5, generator=gen(1), keep_all=True)
    assert x3.shape == (5, 1, 8, 8) and len(states) == 6
    _, traj = d.ddpm_sample(net, (5, 1, 8, 8), abar, generator=gen(1), keep=(T - 1, 0))
    assert set(traj) == {T - 1, 0}
    img = d.to_image_space(x)
    assert float(img.min()) >= 0 and float(img.max()) <= 1


# ------------------------------------------------------------------------------------------------ the network


def test_unet_shapes_and_init():
    net = nets.UNet(channels=16, attention=True)
    x, t = torch.randn(3, 1, 8, 8), torch.tensor([0, 5, 199])
    out = net(x, t)
    assert out.shape == x.shape and torch.all(out == 0)  # zero-initialised output layer
    with pytest.raises(ValueError, match="x must have shape"):
        net(torch.randn(3, 64), t)
    with pytest.raises(ValueError, match="t must have shape"):
        net(x, t[:2])
    with pytest.raises(ValueError, match="divisible"):
        nets.UNet(channels=12)
    # the output depends on t and on x, and not on the other images of the batch (GroupNorm, no BatchNorm)
    torch.manual_seed(0)
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.05)
    a = net(x, t)
    assert not torch.allclose(a, net(x, t + 1))
    assert torch.allclose(net(x[:1], t[:1]), a[:1], atol=1e-6)


def test_sinusoidal_time_embedding():
    emb = nets.SinusoidalTimeEmbedding(32)
    t = torch.arange(0, 200)
    e = emb(t)
    assert e.shape == (200, 32)
    assert torch.allclose(e[:, :16] ** 2 + e[:, 16:] ** 2, torch.ones(200, 16), atol=1e-5)
    assert torch.allclose(e[0], torch.cat([torch.zeros(16), torch.ones(16)]))
    assert torch.allclose(e[:, 0], torch.sin(t.float()), atol=1e-5)  # fastest frequency is 1
    # nearby times are more similar than distant ones
    sim = e @ e[100]
    assert sim[101] > sim[120] > sim[180]
    with pytest.raises(ValueError, match="even"):
        nets.SinusoidalTimeEmbedding(7)
    with pytest.raises(ValueError, match=r"\(N,\)"):
        emb(torch.zeros(2, 2))


# ------------------------------------------------------------------------------------------------ the bench




# ------------------------------------------------------------------------------------------------ DDIM family


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_ddim_family_keeps_the_marginals(eta):
    """Sample the non-Markovian forward process from its conditionals only; every state has the DDPM marginal
    N(sqrt(abar) x0, (1 - abar) I) (5 standard errors on the mean and the variance)."""
    abar = d.alphas_cumprod_from_betas(d.beta_schedule("cosine", 100))
    n = 40_000
    x0 = torch.tensor([-0.8, 0.1, 0.9], dtype=torch.float64).repeat(n, 1)
    states = d.simulate_ddim_forward(x0, abar, d.ddim_timesteps(100, 7), eta=eta, generator=gen(3))
    assert sorted(states) == sorted(d.ddim_timesteps(100, 7))
    for t, x in states.items():
        a = abar[t]
        z_mean = (x.mean(0) - a.sqrt() * x0[0]).abs() / ((1 - a) / n).sqrt()
        z_var = (x.var(0) - (1 - a)).abs() / ((1 - a) * math.sqrt(2 / n))
        assert float(z_mean.max()) < 5 and float(z_var.max()) < 5, (t, z_mean, z_var)


def test_ddim_family_joint_differs_from_the_markov_chain():
    """Same marginals, different joint: at eta = 0 consecutive DDIM states are perfectly correlated given x0,
    the Markov chain's are not (its correlation is sqrt(abar_t / abar_s) sqrt((1 - abar_s) / (1 - abar_t)))."""
    abar = d.alphas_cumprod_from_betas(d.beta_schedule("linear", 100))
    x0 = torch.zeros(20_000, 1, dtype=torch.float64)
    st = d.simulate_ddim_forward(x0, abar, [80, 40], eta=0.0, generator=gen(4))
    corr = torch.corrcoef(torch.stack([st[80][:, 0], st[40][:, 0]]))[0, 1].item()
    markov = (abar[80] / abar[40]).sqrt() * ((1 - abar[40]) / (1 - abar[80])).sqrt()
    assert corr > 1 - 1e-9 and float(markov) < 0.95


def test_ddim_posterior_at_eta_one_is_the_ddpm_posterior():
    abar = d.alphas_cumprod_from_betas(d.beta_schedule("linear", 60))
    x0, xt = rand_images(6, 30), rand_images(6, 31)
    for t in (1, 10, 59):
        m, v = d.ddim_posterior_mean_variance(x0, xt, t, t - 1, abar, eta=1.0)
        m_ref, v_ref = d.q_posterior_mean_variance(x0, xt, t, abar)
        assert torch.allclose(m, m_ref, atol=1e-12) and torch.allclose(v, v_ref, atol=1e-15)
        assert torch.allclose(d.ddim_sigma(abar, t, t - 1, 1.0) ** 2, v_ref.flatten()[:1], atol=1e-15)
    # at eta = 0 the step from the true noise is the DDIM update with the true eps (no noise)
    eps = d.predict_eps_from_x0(xt, 40, x0, abar)
    m0, v0 = d.ddim_posterior_mean_variance(x0, xt, 40, 20, abar, eta=0.0)
    assert torch.allclose(m0, d.ddim_step(eps, xt, 40, 20, abar, clip=False), atol=1e-12)
    assert float(v0.abs().max()) == 0.0


@pytest.mark.parametrize("eta", [0.2, 0.7, 1.0])
def test_ddim_loss_weights_are_the_kl_per_squared_noise_error(eta):
    """KL(q_sigma(. | x_t, x0) || q_sigma(. | x_t, x0_hat)) by the Gaussian formula = gamma_t ||eps - eps_hat||^2."""
    abar = d.alphas_cumprod_from_betas(d.beta_schedule("cosine", 80))
    w = d.ddim_loss_weights(abar, eta)
    assert math.isinf(w[0].item())
    x0, eps, eps_hat = rand_images(5, 40), rand_images(5, 41), rand_images(5, 42)
    for t in (1, 20, 79):
        xt = d.q_sample(x0, t, eps, abar)
        x0_hat = d.predict_x0_from_eps(xt, t, eps_hat, abar)
        m1, v = d.ddim_posterior_mean_variance(x0, xt, t, t - 1, abar, eta=eta)
        m2, _ = d.ddim_posterior_mean_variance(x0_hat, xt, t, t - 1, abar, eta=eta)
        kl = (0.5 * (m1 - m2) ** 2 / v).sum((1, 2, 3))  # equal variances: only the mean term remains
        assert torch.allclose(kl, w[t] * ((eps - eps_hat) ** 2).sum((1, 2, 3)), rtol=1e-9)
    assert torch.allclose(d.ddim_loss_weights(abar, 1.0)[1:], d.vlb_weights(abar)[1:], rtol=1e-9)


def test_ddim_family_errors():
    abar = d.alphas_cumprod_from_betas(d.beta_schedule("linear", 50))
    x = torch.zeros(3, 1, 8, 8, dtype=torch.float64)
    with pytest.raises(ValueError, match="strictly decreasing"):
        d.simulate_ddim_forward(x, abar, [5, 5, 2], eta=0.0)
    with pytest.raises(ValueError, match="t_prev must be smaller"):
        d.ddim_posterior_mean_variance(x, x, 4, 4, abar, eta=0.0)
    with pytest.raises(ValueError, match="sigma"):
        d.ddim_posterior_mean_variance(x, x, 49, 0, abar, eta=3.0)
    with pytest.raises(ValueError):
        d.ddim_loss_weights(abar, 0.0)
