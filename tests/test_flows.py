"""Tests for coursekit.flows: every layer type is invertible (1e-5) and its log-determinant matches
torch.autograd.functional.jacobian; MADE is autoregressive; MAF/IAF pass counts; the densities
integrate to one; dequantisation and bits/dim; the course's RealNVP against zuko's on two moons; the
rational-quadratic spline (knots, monotonicity, tails, the stable inverse) against its formulas, autograd and
zuko's spline, and the course's NSF against zuko's on two moons."""

import math

import pytest
import torch
from torch.distributions import MultivariateNormal, Normal

from coursekit import data, flows, metrics


def _perturb(module, scale=0.3, seed=0):
    """Move every parameter away from its (often identity) initialisation so the checks bite."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return module


D = 5


def _layers():
    torch.manual_seed(0)
    return {
        "elementwise_affine": flows.ElementwiseAffine(D),
        "permute": flows.Permute(torch.randperm(D)),
        "logit": flows.LogitTransform(D, alpha=0.05),
        "affine_coupling": flows.AffineCoupling(flows._alternating_mask(D, 0), hidden=(16, 16)),
        "nice_coupling": flows.AffineCoupling(flows._alternating_mask(D, 1), hidden=(16, 16), scale=False),
        "maf_layer": flows.MAFLayer(D, hidden=(16, 16), order=torch.randperm(D) + 1),
        "iaf_layer": flows.IAFLayer(D, hidden=(16, 16)),
        "realnvp": flows.realnvp(D, 4, (16, 16)),
        "maf": flows.maf(D, 3, (16, 16)),
        "iaf": flows.iaf(D, 2, (16, 16)),
        "realnvp_logit": flows.realnvp(D, 2, (16, 16), logit=True),
    }


LAYER_NAMES = list(_layers())


def _inputs(name, dtype, n=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    if "logit" in name:
        return torch.rand(n, D, generator=g, dtype=dtype) * 0.98 + 0.01
    return torch.randn(n, D, generator=g, dtype=dtype)


@pytest.mark.parametrize("name", LAYER_NAMES)
def test_invertible_and_log_det_matches_autograd_float64(name):
    layer = _perturb(_layers()[name]).double()
    x = _inputs(name, torch.float64)
    r = flows.check_layer(layer, x)
    assert r["inverse_error"] < 1e-10 and r["forward_error"] < 1e-10, r
    assert r["log_det_error"] < 1e-8 and r["inverse_log_det_error"] < 1e-8, r
    assert r["log_det_sum"] < 1e-10, r


@pytest.mark.parametrize("name", LAYER_NAMES)
def test_invertible_float32_to_1e_5(name):
    layer = _perturb(_layers()[name], scale=0.1)
    x = _inputs(name, torch.float32)
    z, ld = layer(x)
    assert z.dtype == torch.float32 and z.shape == x.shape and ld.shape == (x.shape[0],)
    x_back, ld_inv = layer.inverse(z)
    assert (x_back - x).abs().max() < 1e-5
    assert (ld + ld_inv).abs().max() < 1e-4
    ad = flows.autograd_log_det(lambda v: layer(v)[0], x)
    assert (ld - ad).abs().max() < 1e-4


def test_made_is_autoregressive_in_its_order():
    order = torch.tensor([3, 1, 5, 2, 4])
    made = _perturb(flows.MADE(D, hidden=(12, 12), n_params=2, order=order)).double()
    x = torch.randn(D, dtype=torch.float64)
    for k in range(2):
        jac = torch.autograd.functional.jacobian(lambda v, k=k: made(v.unsqueeze(0))[0, k], x)
        allowed = order[:, None] > order[None, :]  # output i may depend on input j iff m(j) < m(i)
        assert bool((jac[~allowed] == 0).all())
        assert bool((jac[allowed] != 0).any())
    # a one-dimensional MADE outputs constants
    one = _perturb(flows.MADE(1, hidden=(4,)))
    assert torch.equal(one(torch.zeros(1, 1)), one(torch.ones(1, 1)))


def _count_calls(module):
    calls = {"n": 0}
    module.register_forward_hook(lambda *a: calls.__setitem__("n", calls["n"] + 1))
    return calls


@pytest.mark.parametrize("cls", [flows.MAFLayer, flows.IAFLayer])
def test_pass_counts_maf_vs_iaf(cls):
    dim = 7
    layer = _perturb(cls(dim, hidden=(16,)))
    calls = _count_calls(layer.made)
    x = torch.randn(4, dim)
    z, _ = layer(x)
    n_forward = calls["n"]
    calls["n"] = 0
    layer.inverse(z)
    n_inverse = calls["n"]
    if cls is flows.MAFLayer:  # density (data -> noise) in one pass, sampling in D
        assert (n_forward, n_inverse) == (1, dim)
    else:  # IAF: sampling (noise -> data) in one pass, density of data in D
        assert (n_forward, n_inverse) == (dim, 1)


def test_affine_change_of_variables_1d_and_nd():
    # z ~ N(0, 1), x = 3 z + 5 -> N(5, 9): an ElementwiseAffine used in the generative direction
    layer = flows.ElementwiseAffine(1).double()
    with torch.no_grad():
        layer.log_scale.fill_(-math.log(3.0))  # forward (x -> z): z = x / 3 - 5 / 3
        layer.shift.fill_(-5.0 / 3.0)
    flow = flows.Flow([layer])
    x = torch.linspace(-5, 15, 41, dtype=torch.float64).unsqueeze(1)
    assert torch.allclose(flow.log_prob(x), Normal(5.0, 3.0).log_prob(x[:, 0]), atol=1e-12)
    # x = A z + b -> N(b, A A^T): log p(x) = log N(A^{-1}(x - b)) - log|det A|
    g = torch.Generator().manual_seed(0)
    a = torch.randn(3, 3, generator=g, dtype=torch.float64) + 2 * torch.eye(3, dtype=torch.float64)
    b = torch.randn(3, generator=g, dtype=torch.float64)
    x = torch.randn(10, 3, generator=g, dtype=torch.float64)
    z = torch.linalg.solve(a, (x - b).T).T
    ours = flows.standard_normal_log_prob(z) - torch.linalg.slogdet(a).logabsdet
    ref = MultivariateNormal(b, covariance_matrix=a @ a.T).log_prob(x)
    assert torch.allclose(ours, ref, atol=1e-10)


@pytest.mark.parametrize("build", [lambda: flows.realnvp(2, 4, (16, 16)), lambda: flows.maf(2, 3, (16, 16))])
def test_density_integrates_to_one_2d(build):
    torch.manual_seed(0)
    flow = _perturb(build(), scale=0.05).double()
    n = 401
    grid = torch.linspace(-12, 12, n, dtype=torch.float64)
    xx, yy = torch.meshgrid(grid, grid, indexing="xy")
    pts = torch.stack([xx.reshape(-1), yy.reshape(-1)], 1)
    with torch.no_grad():
        mass = flow.log_prob(pts).exp().sum().item() * (grid[1] - grid[0]).item() ** 2
    assert abs(mass - 1) < 1e-2, mass


def test_sample_shapes_generator_and_temperature():
    flow = _perturb(flows.realnvp(4, 2, (8,)))
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    a, b = flow.sample(5, generator=g1), flow.sample(5, generator=g2)
    assert a.shape == (5, 4) and torch.equal(a, b)
    with pytest.raises(ValueError, match="temperature"):
        flow.sample(3, temperature=0.0)
    # the model's own samples have log p that a Monte Carlo estimate of -entropy can use: finite
    assert torch.isfinite(flow.log_prob(a)).all()


def test_seeded_construction_is_deterministic_and_leaves_global_rng():
    torch.manual_seed(0)
    before = torch.rand(1)
    torch.manual_seed(0)
    f1 = flows.maf(3, 2, (8,), seed=5)
    after = torch.rand(1)
    f2 = flows.maf(3, 2, (8,), seed=5)
    assert torch.equal(before, after)
    for p1, p2 in zip(f1.parameters(), f2.parameters()):
        assert torch.equal(p1, p2)


def test_bad_input_is_rejected():
    flow = flows.realnvp(2, 2, (8,))
    with pytest.raises(ValueError, match="shape"):
        flow.log_prob(torch.zeros(3, 3))
    with pytest.raises(ValueError, match="NaN"):
        flow.log_prob(torch.tensor([[0.0, float("nan")]]))
    with pytest.raises(TypeError):
        flow.log_prob([[0.0, 1.0]])
    with pytest.raises(TypeError, match="floating"):
        flow.log_prob(torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        flows.LogitTransform(2)(torch.tensor([[0.5, 1.5]]))
    with pytest.raises(ValueError, match="alpha"):
        flows.LogitTransform(2, alpha=0.5)
    with pytest.raises(ValueError, match="mask"):
        flows.AffineCoupling([1, 1, 1])
    with pytest.raises(ValueError, match="mask"):
        flows.realnvp(4, 2, mask=[1, 0])
    with pytest.raises(ValueError, match="permutation"):
        flows.Permute([0, 0, 1])
    with pytest.raises(ValueError, match="order"):
        flows.MADE(3, order=[1, 2, 2])
    with pytest.raises(ValueError, match="dim"):
        flows.Flow([flows.ElementwiseAffine(2), flows.ElementwiseAffine(3)])
    with pytest.raises(ValueError, match="dim >= 2"):
        flows.realnvp(1)


def test_checkerboard_mask():
    m = flows.checkerboard_mask(8, 8).reshape(8, 8)
    assert m.sum() == 32 and m[0, 0] == 1 and m[0, 1] == 0 and m[1, 0] == 0 and m[1, 1] == 1


def test_dequantisation_and_bits_per_dim():
    x, _ = data.load_digits("test")
    g = torch.Generator().manual_seed(0)
    y = flows.dequantize_digits(x, generator=g)
    assert y.shape == x.shape and y.dtype == torch.float32
    assert float(y.min()) >= 0 and float(y.max()) < 1
    # y lies in the bin of its level: 16 x <= 17 y < 16 x + 1 (up to float32 rounding)
    offset = y.double() * 17 - torch.round(x.double() * 16)
    assert bool((offset > -1e-4).all()) and bool((offset < 1 + 1e-4).all())
    with pytest.raises(ValueError, match="k/16"):
        flows.dequantize_digits(torch.full((1, 64), 0.3))
    # the uniform density on [0, 1)^64 (NLL 0) costs log2(17) bits/dim, the code length of 17 levels
    assert flows.digits_bits_per_dim(0.0) == pytest.approx(math.log2(17), abs=1e-12)
    nll = torch.tensor([10.0, -50.0])
    ref = metrics.discrete_nll_to_bits_per_dim(nll, 64, 17)
    assert torch.allclose(flows.digits_bits_per_dim(nll), ref)
    assert torch.allclose(flows.digits_bits_per_dim(nll), nll / (64 * math.log(2)) + math.log2(17))


def test_dequantised_bound_is_the_discrete_likelihood_for_a_piecewise_constant_density():
    """Theis et al. (2016): the bound is tight for a density constant inside each bin. A 17-level
    categorical spread uniformly over its bins has NLL (after + D log 17) equal to the discrete NLL."""
    probs = torch.softmax(torch.randn(17, generator=torch.Generator().manual_seed(1), dtype=torch.float64), 0)
    k = torch.arange(17, dtype=torch.float64).repeat(4).reshape(-1, 1)  # (68, 1)
    y = (k + torch.rand(k.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)) / 17
    density = probs[torch.floor(y * 17).long()] * 17  # constant within each bin, integrates to 1
    continuous_nll = -torch.log(density).squeeze(1)
    discrete_nll = -torch.log(probs[k.long()]).squeeze(1)
    bits = metrics.discrete_nll_to_bits_per_dim(continuous_nll, 1, 17)
    assert torch.allclose(bits, discrete_nll / math.log(2), atol=1e-10)


def test_nll_loss_and_training_reduces_it():
    torch.manual_seed(0)
    flow = flows.realnvp(2, 4, (32, 32))
    x = data.two_moons(512, 0.1, seed=0)
    loss0, m = flows.nll_loss(flow, x)
    assert loss0.item() == pytest.approx(-flow.log_prob(x).mean().item()) and "nll" in m
    opt = torch.optim.Adam(flow.parameters(), lr=3e-3)
    for _ in range(100):
        loss, _ = flows.nll_loss(flow, x)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < loss0.item() - 0.5


# ------------------------------------------------------------------------------------------------
# The course's RealNVP against zuko's (a third-party implementation) on two moons
# ------------------------------------------------------------------------------------------------

#: Shared by both models: data, number of couplings, hidden widths, optimiser, steps, batches, seed.
MOONS = {"n_train": 2000, "n_test": 2000, "noise": 0.1, "couplings": 6, "hidden": (64, 64),
         "steps": 1000, "batch": 256, "lr": 1e-3, "seed": 0}


def _train_moons(model, log_prob, c):
    x_train = data.two_moons(c["n_train"], c["noise"], seed=c["seed"])
    x_test = data.two_moons(c["n_test"], c["noise"], seed=c["seed"] + 1)
    opt = torch.optim.Adam(model.parameters(), lr=c["lr"])
    g = torch.Generator().manual_seed(c["seed"])
    for _ in range(c["steps"]):
        idx = torch.randint(0, c["n_train"], (c["batch"],), generator=g)
        loss = -log_prob(x_train[idx]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return -log_prob(x_test).mean().item()


def test_realnvp_matches_zuko_on_two_moons():
    zuko = pytest.importorskip("zuko")
    c = MOONS
    torch.manual_seed(c["seed"])
    ours = flows.realnvp(2, c["couplings"], c["hidden"])
    nll_ours = _train_moons(ours, ours.log_prob, c)
    torch.manual_seed(c["seed"])
    theirs = zuko.flows.RealNVP(2, transforms=c["couplings"], hidden_features=c["hidden"])
    nll_zuko = _train_moons(theirs, lambda x: theirs().log_prob(x), c)
    print(f"two moons held-out NLL: course RealNVP {nll_ours:.4f} nats, zuko RealNVP {nll_zuko:.4f} nats")
    assert math.isfinite(nll_ours) and nll_ours < 1.6  # far below a Gaussian fit (about 2.0 nats)
    assert nll_ours <= nll_zuko + 0.05


# ------------------------------------------------------------------------------------------------
# The bench recipe and the chapter train the same model
# ------------------------------------------------------------------------------------------------




def test_an_empty_batch_has_an_empty_log_density():
    """Scoring zero examples is not an error: the log-density of a (0, D) batch is a (0,) tensor."""
    flow = flows.realnvp(2, n_couplings=2, hidden=(8,))
    assert flows.standard_normal_log_prob(torch.zeros(0, 2)).shape == (0,)
    assert flow.log_prob(torch.zeros(0, 2)).shape == (0,)


# ------------------------------------------------------------------------------------------------
# Rational-quadratic spline couplings (neural spline flows, Durkan et al. 2019)
# ------------------------------------------------------------------------------------------------


def _spline_layers():
    torch.manual_seed(0)
    return {
        "spline_coupling": flows.SplineCoupling(flows._alternating_mask(D, 0), hidden=(16, 16), bins=5, bound=2.0),
        "spline_coupling_one_bin": flows.SplineCoupling(flows._alternating_mask(D, 1), hidden=(8,), bins=1),
        "nsf": flows.nsf(D, 3, (16, 16), bins=6, bound=2.5),
    }


def _random_knots(shape, bins, bound=3.0, scale=2.0, seed=0, dtype=torch.float64, **minima):
    g = torch.Generator().manual_seed(seed)
    w, h = (scale * torch.randn(*shape, bins, generator=g, dtype=dtype) for _ in range(2))
    d = scale * torch.randn(*shape, bins - 1, generator=g, dtype=dtype)
    return flows.rq_spline_knots(w, h, d, bound, **minima)


@pytest.mark.parametrize("name", list(_spline_layers()))
def test_spline_layers_invertible_and_log_det_matches_autograd_float64(name):
    layer = _perturb(_spline_layers()[name]).double()
    x = 1.5 * _inputs(name, torch.float64, n=8)  # some coordinates fall in the identity tails
    assert bool((x.abs() > 2.5).any()) and bool((x.abs() < 2.0).any())
    r = flows.check_layer(layer, x)
    assert r["inverse_error"] < 1e-10 and r["forward_error"] < 1e-10, r
    assert r["log_det_error"] < 1e-8 and r["inverse_log_det_error"] < 1e-8, r
    assert r["log_det_sum"] < 1e-10, r


@pytest.mark.parametrize("name", list(_spline_layers()))
def test_spline_layers_invertible_float32_to_1e_5(name):
    layer = _perturb(_spline_layers()[name], scale=0.1)
    x = _inputs(name, torch.float32, n=64)
    z, ld = layer(x)
    assert z.dtype == torch.float32 and z.shape == x.shape and ld.shape == (x.shape[0],)
    x_back, ld_inv = layer.inverse(z)
    assert (x_back - x).abs().max() < 1e-5
    assert (ld + ld_inv).abs().max() < 1e-4
    ad = flows.autograd_log_det(lambda v: layer(v)[0], x[:8])
    assert (ld[:8] - ad).abs().max() < 1e-4


def test_rq_spline_knots_widths_minima_ends_and_identity_at_zero():
    kx, ky, kd = _random_knots((7,), 6, bound=2.0, scale=8.0, min_bin_width=0.05, min_bin_height=0.02,
                               min_derivative=0.1)
    assert kx.shape == ky.shape == kd.shape == (7, 7)
    assert torch.equal(kx[:, 0], torch.full((7,), -2.0, dtype=torch.float64)) and bool((kx[:, -1] == 2.0).all())
    assert bool((ky[:, 0] == -2.0).all()) and bool((ky[:, -1] == 2.0).all())
    assert float(kx.diff(dim=-1).min()) >= 0.05 * 4.0 - 1e-12 and float(ky.diff(dim=-1).min()) >= 0.02 * 4.0 - 1e-12
    assert float(kd.min()) >= 0.1 and bool((kd[:, 0] == 1).all()) and bool((kd[:, -1] == 1).all())
    # zero network outputs: equal bins, unit derivatives, slopes rho_k = 1 and beta_k = 0, the identity map
    kx0, ky0, kd0 = flows.rq_spline_knots(torch.zeros(3, 4), torch.zeros(3, 4), torch.zeros(3, 3), 1.5)
    assert torch.allclose(kd0, torch.ones(3, 5), atol=1e-6)
    rho0 = ky0.diff(dim=-1) / kx0.diff(dim=-1)
    assert torch.allclose(kx0.diff(dim=-1), torch.full((3, 4), 0.75), atol=1e-6)
    assert torch.allclose(rho0, torch.ones(3, 4), atol=1e-6)
    assert torch.allclose(kd0[:, 1:] + kd0[:, :-1] - 2 * rho0, torch.zeros(3, 4), atol=1e-6)
    x = torch.tensor([-2.0, 0.3, 1.2])
    y, ld = flows.rq_spline(x, kx0, ky0, kd0)
    assert torch.allclose(y, x, atol=1e-6) and torch.allclose(ld, torch.zeros(3), atol=1e-6)


def test_rq_spline_passes_through_its_knots_with_their_derivatives():
    kx, ky, kd = _random_knots((5,), 7)
    x = kx.T.contiguous()  # (K + 1, 5): row j holds the j-th knot of each of the 5 splines
    rep = [t.unsqueeze(0).expand(8, 5, 8) for t in (kx, ky, kd)]
    y, ld = flows.rq_spline(x, *rep)
    assert torch.allclose(y, ky.T, atol=1e-12)
    assert torch.allclose(ld.exp(), kd.T, rtol=1e-10)
    x_back, ld_inv = flows.rq_spline(ky.T.contiguous(), *rep, inverse=True)
    assert torch.allclose(x_back, kx.T, atol=1e-12) and torch.allclose(ld_inv, -torch.log(kd.T), atol=1e-10)


def test_rq_spline_is_monotone_and_its_log_det_matches_autograd():
    kx, ky, kd = _random_knots((), 10, scale=4.0, seed=3)
    x = torch.linspace(-3.5, 3.5, 20001, dtype=torch.float64, requires_grad=True)
    rep = [t.expand(20001, 11) for t in (kx, ky, kd)]
    y, ld = flows.rq_spline(x, *rep)
    assert float(y.detach().diff().min()) > 0  # strictly increasing, tails included
    (grad,) = torch.autograd.grad(y.sum(), x)
    assert float(grad.min()) > 0 and torch.allclose(ld, grad.log(), atol=1e-9)
    # the condition matters: a negative derivative at an interior knot makes the spline decrease near it
    bad = kd.clone()
    bad[4] = -0.5
    y_bad, _ = flows.rq_spline(x.detach(), rep[0], rep[1], bad.expand(20001, 11))
    assert float(y_bad.diff().min()) < 0


def test_rq_spline_autograd_derivative_at_its_knots_and_ends():
    """At a knot and at +-b_max (where the bin coordinate is exactly 0 or 1) autograd gives the spline's
    one-sided derivative, delta^(k), in both directions: no clamp subgradient leaks into it (torch 2.13 and 2.14
    differ there)."""
    kx, ky, kd = _random_knots((), 6, bound=3.0, seed=5)
    for inverse, (points, slope) in ((False, (kx, kd)), (True, (ky, 1 / kd))):
        x = points.clone().requires_grad_(True)
        rep = [t.expand(len(x), -1) for t in (kx, ky, kd)]
        y, ld = flows.rq_spline(x, *rep, inverse=inverse)
        (grad,) = torch.autograd.grad(y.sum(), x)
        assert torch.allclose(grad, slope, rtol=1e-10) and torch.allclose(ld.exp(), slope, rtol=1e-10)


def test_rq_spline_identity_tails():
    kx, ky, kd = _random_knots((6,), 5, bound=2.0, seed=4)
    x = torch.tensor([-7.0, -2.0001, 2.0001, 3.0, 50.0, -2.5], dtype=torch.float64)
    for inverse in (False, True):
        y, ld = flows.rq_spline(x, kx, ky, kd, inverse=inverse)
        assert torch.equal(y, x) and torch.equal(ld, torch.zeros_like(x))
    # the spline meets the tails continuously, with slope 1 at +-B
    edge = torch.tensor([-2.0, 2.0], dtype=torch.float64)
    y, ld = flows.rq_spline(edge, kx[:2], ky[:2], kd[:2])
    assert torch.allclose(y, edge) and torch.allclose(ld, torch.zeros(2, dtype=torch.float64), atol=1e-12)


def test_rq_spline_matches_zuko():
    zuko = pytest.importorskip("zuko")
    kx, ky, kd = _random_knots((200,), 8, bound=3.0, seed=5)
    t = zuko.transforms.MonotonicRQSTransform(torch.zeros(200, 8), torch.zeros(200, 8), torch.zeros(200, 7),
                                               bound=3.0)
    t.horizontal, t.vertical, t.derivatives = kx, ky, kd  # zuko's own formulas on our knots
    x = 4 * torch.rand(200, generator=torch.Generator().manual_seed(6), dtype=torch.float64) - 2
    y, ld = flows.rq_spline(x, kx, ky, kd)
    y_ref, ld_ref = t.call_and_ladj(x)
    assert torch.allclose(y, y_ref, atol=1e-12) and torch.allclose(ld, ld_ref, atol=1e-10)
    assert torch.allclose(flows.rq_spline(y, kx, ky, kd, inverse=True)[0], t.inv(y), atol=1e-10)


def _conjugate_only_inverse(y, kx, ky, kd):
    """The root 2c / (-b - sqrt(b^2 - 4ac)) used for every b, in one bin [kx0, kx1]."""
    w, h = kx[..., 1] - kx[..., 0], ky[..., 1] - ky[..., 0]
    s, d0, d1 = h / w, kd[..., 0], kd[..., 1]
    delta, beta = y - ky[..., 0], d0 + d1 - 2 * s
    a, b, c = h * (s - d0) + delta * beta, h * d0 - delta * beta, -s * delta
    return kx[..., 0] + w * 2 * c / (-b - torch.sqrt(b * b - 4 * a * c))


def test_rq_spline_inverse_uses_the_stable_root_in_float32():
    """With a flat start and a steep end of a bin (delta0 = 1e-3, delta1 = 1e3) b < 0 for most y, and the
    conjugate form alone cancels catastrophically in float32; the branch on the sign of b does not."""
    n = 400
    kx = torch.tensor([0.0, 1.0]).expand(n, 2)
    kd = torch.tensor([1e-3, 1e3]).expand(n, 2)
    x = torch.linspace(0, 1, n, dtype=torch.float64)
    y32 = flows.rq_spline(x, kx.double(), kx.double(), kd.double())[0].float()
    truth = flows.rq_spline(y32.double(), kx.double(), kx.double(), kd.double(), inverse=True)[0]
    ours = flows.rq_spline(y32, kx, kx, kd, inverse=True)[0]
    naive = _conjugate_only_inverse(y32, kx, kx, kd)
    err_ours, err_naive = (ours.double() - truth).abs().max().item(), (naive.double() - truth).abs().max().item()
    assert err_ours < 1e-6 and err_naive > 1e-5, (err_ours, err_naive)
    # and the float64 inverse is the root of the quadratic to 1e-12 on random splines
    kx, ky, kd = _random_knots((1000,), 8, scale=3.0, seed=7)
    y = 6 * torch.rand(1000, generator=torch.Generator().manual_seed(8), dtype=torch.float64) - 3
    x_inv, _ = flows.rq_spline(y, kx, ky, kd, inverse=True)
    assert torch.allclose(flows.rq_spline(x_inv, kx, ky, kd)[0], y, atol=1e-12)


def test_spline_gradients_are_finite_both_ways():
    layer = _perturb(flows.SplineCoupling([1, 0, 0], hidden=(16,), bins=4, bound=2.0), scale=1.0)
    x = 2 * torch.randn(256, 3, generator=torch.Generator().manual_seed(9))
    for direction in (layer, layer.inverse):
        layer.zero_grad()
        out, ld = direction(x)
        (out.sum() + ld.sum()).backward()
        assert all(bool(torch.isfinite(p.grad).all()) for p in layer.parameters())


def test_nsf_density_integrates_to_one_2d():
    flow = _perturb(flows.nsf(2, 3, (16, 16), bins=5, bound=3.0, seed=0), scale=0.05).double()
    grid = torch.linspace(-12, 12, 401, dtype=torch.float64)
    xx, yy = torch.meshgrid(grid, grid, indexing="xy")
    with torch.no_grad():
        mass = flow.log_prob(torch.stack([xx.reshape(-1), yy.reshape(-1)], 1)).exp().sum().item()
    assert abs(mass * (grid[1] - grid[0]).item() ** 2 - 1) < 1e-2


def test_spline_bad_input_is_rejected():
    w, h, d = torch.zeros(3, 4), torch.zeros(3, 4), torch.zeros(3, 3)
    with pytest.raises(ValueError, match="K - 1"):
        flows.rq_spline_knots(w, h, torch.zeros(3, 4))
    with pytest.raises(ValueError, match="K - 1"):
        flows.rq_spline_knots(w, torch.zeros(3, 5), d)
    with pytest.raises(ValueError, match="bound"):
        flows.rq_spline_knots(w, h, d, bound=0.0)
    with pytest.raises(ValueError, match=r"min_bin_width \* K must be < 1"):
        flows.rq_spline_knots(w, h, d, min_bin_width=0.25)
    with pytest.raises(ValueError, match="min_derivative"):
        flows.rq_spline_knots(w, h, d, min_derivative=-1.0)
    with pytest.raises(ValueError, match="NaN"):
        flows.rq_spline_knots(torch.full((3, 4), float("nan")), h, d)
    with pytest.raises(TypeError, match="floating"):
        flows.rq_spline_knots(w.long(), h, d)
    kx, ky, kd = flows.rq_spline_knots(w, h, d)
    with pytest.raises(ValueError, match=r"x.shape \+ \(K \+ 1,\)"):
        flows.rq_spline(torch.zeros(4), kx, ky, kd)
    with pytest.raises(ValueError, match="knots_y"):
        flows.rq_spline(torch.zeros(3), kx, ky[:, :3], kd)
    with pytest.raises(ValueError, match="NaN"):
        flows.rq_spline(torch.tensor([0.0, float("nan"), 1.0]), kx, ky, kd)
    with pytest.raises(ValueError, match="mask"):
        flows.SplineCoupling([0, 0, 0])
    with pytest.raises(ValueError, match="bins"):
        flows.SplineCoupling([1, 0], bins=0)
    with pytest.raises(ValueError, match="bound"):
        flows.SplineCoupling([1, 0], bound=-1.0)
    with pytest.raises(ValueError, match="min_bin_height"):
        flows.SplineCoupling([1, 0], bins=8, min_bin_height=0.2)
    with pytest.raises(ValueError, match="dim >= 2"):
        flows.nsf(1)
    with pytest.raises(ValueError, match="mask"):
        flows.nsf(3, mask=[1, 0])
    with pytest.raises(ValueError, match="shape"):
        flows.nsf(2, 2, (8,))(torch.zeros(4, 3))


def test_nsf_matches_zuko_nsf_on_two_moons():
    zuko = pytest.importorskip("zuko")
    c = {**MOONS, "couplings": 4}
    torch.manual_seed(c["seed"])
    ours = flows.nsf(2, c["couplings"], c["hidden"], bins=8, bound=4.0)
    nll_ours = _train_moons(ours, ours.log_prob, c)
    torch.manual_seed(c["seed"])
    theirs = zuko.flows.NSF(2, bins=8, transforms=c["couplings"], hidden_features=c["hidden"], passes=2)
    nll_zuko = _train_moons(theirs, lambda x: theirs().log_prob(x), c)
    print(f"two moons held-out NLL: course NSF {nll_ours:.4f} nats, zuko NSF (coupling) {nll_zuko:.4f} nats")
    assert math.isfinite(nll_ours) and nll_ours < 1.6
    assert nll_ours <= nll_zuko + 0.05
