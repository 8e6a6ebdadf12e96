"""Chapter 07 (coursekit.gan section 07 and the f-divergence section of coursekit.divergences): the density-ratio
trick against the analytic ratio of two Gaussians; convex conjugates against a numerical supremum; the
variational f-divergence bound (tight at f'(p/q), below it elsewhere); the f-GAN "gan" value is Goodfellow's
value; the unbiased and biased MMD^2 against an explicit feature map and against coursekit.score; the
semi-supervised (C+1)-way loss against an explicit softmax; W1 in 1-D against scipy."""

import math

import numpy as np
import pytest
import scipy.stats
import torch

from coursekit import divergences, gan, score
from coursekit import wasserstein as W

NAMES = sorted(W.F_DIVERGENCES)


def _probs(g, *shape):
    p = torch.rand(*shape, generator=g, dtype=torch.float64) + 0.05
    return p / p.sum(-1, keepdim=True)


@pytest.mark.parametrize("name", NAMES)
def test_conjugate_is_the_supremum(name):
    fd = W.F_DIVERGENCES[name]
    u = torch.linspace(0, 200, 400_001, dtype=torch.float64)
    lo, hi = fd.domain
    ts = torch.linspace(-0.5, 0.5, 9, dtype=torch.float64) if name == "tv" else torch.linspace(
        max(lo, -3) + 0.05, min(hi, 3) - 0.15, 9, dtype=torch.float64)
    sup = torch.stack([(t * u - fd.f(u)).max() for t in ts])
    assert torch.allclose(sup, fd.conjugate(ts), atol=1e-5)
    v = torch.linspace(-6, 6, 101, dtype=torch.float64)
    a = fd.activation(v)
    assert bool(((a >= lo) & (a <= hi)).all())  # the output activation maps into the domain
    one = torch.ones((), dtype=torch.float64)
    assert fd.f(one).item() == pytest.approx(-math.log(4) if name == "gan" else 0.0, abs=1e-12)


def test_f_divergence_closed_forms():
    g = torch.Generator().manual_seed(0)
    p, q = _probs(g, 6, 7), _probs(g, 6, 7)
    m = (p + q) / 2
    kl = lambda a, b: (a * (a / b).log()).sum(-1)  # noqa: E731
    js = 0.5 * kl(p, m) + 0.5 * kl(q, m)
    want = {
        "kl": kl(p, q), "reverse_kl": kl(q, p), "pearson": ((p - q) ** 2 / q).sum(-1),
        "hellinger": ((p.sqrt() - q.sqrt()) ** 2).sum(-1), "js": js, "gan": 2 * js - math.log(4),
        "tv": 0.5 * (p - q).abs().sum(-1),
    }
    for name, w in want.items():
        assert torch.allclose(W.f_divergence(p, q, name), w, atol=1e-12), name
    # disjoint supports: JS = log 2, TV = 1, KL = inf, Hellinger = 2
    a = torch.tensor([0.5, 0.5, 0.0, 0.0], dtype=torch.float64)
    b = torch.tensor([0.0, 0.0, 0.3, 0.7], dtype=torch.float64)
    assert W.f_divergence(a, b, "js").item() == pytest.approx(math.log(2))
    assert W.f_divergence(a, b, "tv").item() == pytest.approx(1.0)
    assert W.f_divergence(a, b, "hellinger").item() == pytest.approx(2.0)
    assert math.isinf(W.f_divergence(a, b, "kl").item()) and math.isinf(W.f_divergence(a, b, "reverse_kl").item())


@pytest.mark.parametrize("name", NAMES)
def test_variational_bound_tight_at_f_prime_and_below_elsewhere(name):
    fd = W.F_DIVERGENCES[name]
    g = torch.Generator().manual_seed(1)
    p, q = _probs(g, 20, 5), _probs(g, 20, 5)
    exact = W.f_divergence(p, q, name)
    t_star = fd.f_prime(p / q)
    assert torch.allclose(W.f_variational_bound(t_star, p, q, name), exact, atol=1e-10)
    for _ in range(5):
        t = fd.activation(3 * torch.randn(20, 5, generator=g, dtype=torch.float64))
        assert bool((W.f_variational_bound(t, p, q, name) <= exact + 1e-12).all())
    # the f-GAN value on a discrete support, weighted: sample-free version of the same bound
    v = torch.randn(5, generator=g, dtype=torch.float64)
    bound = W.f_variational_bound(fd.activation(v), p[0], q[0], name)
    assert bound.item() <= exact[0].item() + 1e-12


def test_gan_f_value_is_goodfellows_value():
    g = torch.Generator().manual_seed(2)
    lr, lf = 3 * torch.randn(50, generator=g), 3 * torch.randn(40, generator=g)
    want = torch.log(torch.sigmoid(lr)).mean() + torch.log(1 - torch.sigmoid(lf)).mean()
    assert torch.allclose(W.f_gan_value(lr, lf, "gan"), want, atol=1e-5)
    assert torch.allclose(W.f_gan_discriminator_loss(lr, lf, "gan"), -want, atol=1e-5)
    assert torch.allclose(W.f_gan_generator_loss(lf, "gan"), torch.log(1 - torch.sigmoid(lf)).mean(), atol=1e-5)
    # at the optimal discriminator the value is 2 JS - log 4 (discrete P, Q, weights instead of samples)
    p, q = _probs(g, 8), _probs(g, 8)
    logit_star = torch.log(p / q)  # D* = p / (p + q)
    value = (p * torch.nn.functional.logsigmoid(logit_star)).sum() + (
        q * torch.nn.functional.logsigmoid(-logit_star)).sum()
    assert value.item() == pytest.approx(2 * W.f_divergence(p, q, "js").item() - math.log(4), abs=1e-12)


def test_density_ratio_trick_on_gaussians():
    """Logistic regression on samples of N(0, 1) (label 1) vs N(1, 1.5^2) (label 0) with features (1, x, x^2)
    (the exact family of Gaussian log-ratios): r = exp(logit) matches p/q on the bulk of both distributions."""
    g = torch.Generator().manual_seed(3)
    for n_p, n_q in ((20_000, 20_000), (10_000, 30_000)):
        xp = torch.randn(n_p, generator=g, dtype=torch.float64)
        xq = 1 + 1.5 * torch.randn(n_q, generator=g, dtype=torch.float64)
        x = torch.cat([xp, xq])
        y = torch.cat([torch.ones(n_p), torch.zeros(n_q)]).double()
        feats = torch.stack([torch.ones_like(x), x, x * x], -1)
        w = torch.zeros(3, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([w], max_iter=200, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = torch.nn.functional.binary_cross_entropy_with_logits(feats @ w, y)
            loss.backward()
            return loss

        opt.step(closure)
        grid = torch.linspace(-2, 3, 101, dtype=torch.float64)
        logits = torch.stack([torch.ones_like(grid), grid, grid**2], -1) @ w.detach()
        kw = {} if n_p == n_q else {"n_p": n_p, "n_q": n_q}
        r = W.density_ratio_from_logits(logits, **kw)
        p = torch.distributions.Normal(0.0, 1.0).log_prob(grid).exp()
        q = torch.distributions.Normal(1.0, 1.5).log_prob(grid).exp()
        assert (r.log() - (p / q).log()).abs().max().item() < 0.1, (n_p, n_q)
    with pytest.raises(ValueError):
        W.density_ratio_from_logits(torch.zeros(3), n_p=3)
    with pytest.raises(ValueError):
        W.density_ratio_from_logits(torch.tensor([0.0, float("nan")]))


def _taylor_features(x, h, order=60):
    """Explicit features of the 1-D Gaussian kernel: exp(-(x-y)^2/2h^2) = sum_n phi_n(x) phi_n(y),
    phi_n(x) = exp(-x^2/2h^2) (x/h)^n / sqrt(n!)."""
    n = torch.arange(order, dtype=torch.float64)
    log_fact = torch.lgamma(n + 1)
    return torch.exp(-x[:, None] ** 2 / (2 * h * h)) * (x[:, None] / h) ** n * torch.exp(-0.5 * log_fact)


def test_mmd_against_explicit_features_and_score_module():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(30, generator=g, dtype=torch.float64).clamp(-3, 3)
    y = (0.5 + 0.8 * torch.randn(25, generator=g, dtype=torch.float64)).clamp(-3, 3)
    h = 1.0
    fx, fy = _taylor_features(x, h), _taylor_features(y, h)
    assert torch.allclose(fx @ fy.T, W.gaussian_kernel_matrix(x, y, (h,)), atol=1e-10)
    biased = (fx.mean(0) - fy.mean(0)).pow(2).sum()
    assert W.mmd2_biased(x, y, (h,)).item() == pytest.approx(biased.item(), abs=1e-10)
    m, n = len(x), len(y)
    sx, sy = fx.sum(0), fy.sum(0)
    unbiased = ((sx @ sx - (fx * fx).sum()) / (m * (m - 1)) + (sy @ sy - (fy * fy).sum()) / (n * (n - 1))
                - 2 * (sx @ sy) / (m * n))
    assert W.mmd2_unbiased(x, y, (h,)).item() == pytest.approx(unbiased.item(), abs=1e-10)
    xs, ys = torch.randn(40, 2, generator=g, dtype=torch.float64), torch.randn(30, 2, generator=g, dtype=torch.float64)
    assert W.mmd2_unbiased(xs, ys, (0.5, 2.0)).item() == pytest.approx(score.gaussian_mmd2(xs, ys, (0.5, 2.0)), abs=1e-12)
    # differentiable, and the gradient is finite at zero distance (identical points)
    z = xs.clone().requires_grad_(True)
    W.mmd2_unbiased(z, torch.cat([xs[:5], ys]), (1.0,)).backward()
    assert torch.isfinite(z.grad).all()
    # unbiasedness: average over many small samples of one distribution is ~0; the biased one is > 0
    vals_u, vals_b = [], []
    for _ in range(300):
        a, b = torch.randn(2, 8, 1, generator=g, dtype=torch.float64)
        vals_u.append(W.mmd2_unbiased(a, b).item())
        vals_b.append(W.mmd2_biased(a, b).item())
    se = np.std(vals_u) / math.sqrt(len(vals_u))
    assert abs(np.mean(vals_u)) < 4 * se and np.mean(vals_b) > 10 * se
    with pytest.raises(ValueError):
        W.mmd2_unbiased(torch.zeros(1, 2), torch.zeros(3, 2))
    with pytest.raises(ValueError):
        W.gaussian_kernel_matrix(torch.zeros(3, 2), torch.zeros(3, 3))


def test_ssgan_losses_against_explicit_softmax():
    g = torch.Generator().manual_seed(5)
    c = 10
    lab, unl, fake = (torch.randn(k, c, generator=g, dtype=torch.float64) * 2 for k in (7, 9, 11))
    labels = torch.randint(0, c, (7,), generator=g)
    pad = lambda t: torch.cat([t, torch.zeros(len(t), 1, dtype=t.dtype)], 1)  # noqa: E731  fake logit 0
    logp = lambda t: torch.log_softmax(pad(t), -1)  # noqa: E731
    sup = -(torch.log_softmax(lab, -1)[torch.arange(7), labels]).mean()
    unsup = -torch.log(1 - logp(unl)[:, c].exp()).mean() - logp(fake)[:, c].mean()
    got = W.ssgan_discriminator_loss(lab, labels, unl, fake)
    assert got.ndim == 0 and got.item() == pytest.approx((sup + unsup).item(), abs=1e-10)
    d = torch.sigmoid(W.ssgan_real_logit(unl))
    assert torch.allclose(d, 1 - logp(unl)[:, c].exp(), atol=1e-12)
    big = torch.full((3, c), 200.0, dtype=torch.float64)  # stable for extreme logits
    assert torch.isfinite(W.ssgan_discriminator_loss(big, labels[:3], big, -big))
    fm = W.feature_matching_loss(lab[:, :4], unl[:, :4])
    assert fm.item() == pytest.approx((lab[:, :4].mean(0) - unl[:, :4].mean(0)).pow(2).sum().item())
    with pytest.raises(ValueError):
        W.ssgan_discriminator_loss(lab, labels[:3], unl, fake)
    with pytest.raises(ValueError):
        W.ssgan_discriminator_loss(lab, labels, unl[:, :3], fake)


def test_wasserstein1_1d_against_scipy_and_gradient():
    g = torch.Generator().manual_seed(6)
    for m, n in ((50, 50), (40, 73)):
        x = torch.randn(m, generator=g, dtype=torch.float64)
        y = 1 + 2 * torch.randn(n, generator=g, dtype=torch.float64)
        assert W.wasserstein1_1d(x, y).item() == pytest.approx(scipy.stats.wasserstein_distance(x, y), abs=1e-12)
        if m == n:
            assert W.wasserstein1_1d(x, y).item() == pytest.approx((x.sort()[0] - y.sort()[0]).abs().mean().item())
    theta = torch.tensor(5.0, dtype=torch.float64, requires_grad=True)
    x = torch.rand(100, generator=g, dtype=torch.float64)
    w = W.wasserstein1_1d(x, torch.rand(100, generator=g, dtype=torch.float64) + theta)
    w.backward()
    assert theta.grad.item() == pytest.approx(1.0)  # disjoint supports: d W1 / d theta = 1
    with pytest.raises(ValueError):
        W.wasserstein1_1d(torch.zeros(0), torch.zeros(3))
    with pytest.raises(TypeError):
        W.wasserstein1_1d(torch.zeros(3, dtype=torch.int64), torch.zeros(3))


def test_bad_inputs():
    p = torch.tensor([0.5, 0.5])
    with pytest.raises(ValueError):
        W.f_divergence(p, torch.tensor([0.7, 0.7]), "kl")
    with pytest.raises(ValueError):
        W.f_divergence(p, p, "nope")
    with pytest.raises(ValueError):
        W.f_variational_bound(torch.tensor([0.0, 1.0]), p, p, "gan")  # outside t < 0
    with pytest.raises(ValueError):
        W.f_gan_value(torch.zeros(3, 2), torch.zeros(3), "kl")


MOVED_FROM = {
    gan: ["wasserstein_critic_loss", "wasserstein_generator_loss", "gradient_penalty", "clip_weights",
          "density_ratio_from_logits", "f_gan_value", "f_gan_discriminator_loss", "f_gan_generator_loss",
          "gaussian_kernel_matrix", "mmd2_unbiased", "mmd2_biased", "ssgan_real_logit", "ssgan_discriminator_loss",
          "feature_matching_loss", "MLPGenerator"],
    divergences: ["FDivergence", "F_DIVERGENCES", "f_divergence", "f_variational_bound", "wasserstein1_1d"],
}


@pytest.mark.parametrize("old", list(MOVED_FROM), ids=lambda m: m.__name__)
def test_moved_names_stay_importable_from_their_old_module(old):
    for name in MOVED_FROM[old]:
        assert name in W.__all__
        assert getattr(old, name) is getattr(W, name), name
    with pytest.raises(AttributeError):
        old.no_such_name  # noqa: B018


def test_median_bandwidths_are_multiples_of_the_median_pairwise_distance():
    # pooled sample 0, 1, 3: the nine pairwise distances are 0 0 0 1 1 2 2 3 3, median 1
    assert W.median_bandwidths(torch.tensor([[0.0], [1.0]]), torch.tensor([[3.0]])) == [0.25, 0.5, 1.0, 2.0]
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(700, 3, generator=g), torch.randn(600, 3, generator=g)
    hs = W.median_bandwidths(a, b)  # 1,300 points: an evenly spaced subsample of 1,000
    assert len(hs) == 4 and hs[2] == pytest.approx(2.0 * hs[1]) and hs[2] > 0
