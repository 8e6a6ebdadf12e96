"""Tests for coursekit.mixtures against independent references: torch.distributions' mixture, autograd of the
log-density, and quadrature (a density integrates to one)."""

import pytest
import torch
from torch.distributions import Categorical, Independent, MixtureSameFamily, Normal

from coursekit import mixtures as M
from coursekit import score


def test_gaussian_mixture_density_and_score_against_torch_distributions():
    means = torch.tensor([[0.0, 1.0], [2.0, -1.0], [-1.0, -2.0]], dtype=torch.float64)
    stds = torch.tensor([0.5, 1.0, 0.3], dtype=torch.float64)
    w = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    sigma = 0.4
    ref = MixtureSameFamily(Categorical(w),
                            Independent(Normal(means, (stds**2 + sigma**2).sqrt()[:, None].expand(3, 2)), 1))
    x = (3 * torch.randn(50, 2, dtype=torch.float64)).requires_grad_(True)
    lp = M.gaussian_mixture_log_prob(x, means, stds, w, sigma=sigma)
    assert torch.allclose(lp, ref.log_prob(x), atol=1e-10)
    (grad,) = torch.autograd.grad(ref.log_prob(x).sum(), x)
    assert torch.allclose(M.gaussian_mixture_score(x.detach(), means, stds, w, sigma=sigma), grad, atol=1e-10)
    far = torch.tensor([[80.0, -60.0]], dtype=torch.float64)
    assert torch.isfinite(M.gaussian_mixture_score(far, means, stds, w)).all()


def test_defaults_uniform_weights_scalar_std_and_unnormalised_weights():
    means = torch.tensor([[-1.0], [3.0]], dtype=torch.float64)
    x = torch.linspace(-5, 7, 9, dtype=torch.float64)[:, None]
    ref = MixtureSameFamily(Categorical(torch.tensor([0.5, 0.5], dtype=torch.float64)),
                            Independent(Normal(means, torch.full((2, 1), 0.7, dtype=torch.float64)), 1))
    assert torch.allclose(M.gaussian_mixture_log_prob(x, means, 0.7), ref.log_prob(x), atol=1e-12)
    # weights are normalised: (2, 2) is the same mixture as (0.5, 0.5)
    assert torch.allclose(M.gaussian_mixture_score(x, means, 0.7, [2.0, 2.0]), M.gaussian_mixture_score(x, means, 0.7))


def test_density_integrates_to_one_and_noise_adds_variance():
    """Quadrature on a fine 1-D grid: mass 1, and the variance of q_sigma is that of p plus sigma^2."""
    means, stds, w = torch.tensor([[-2.0], [1.5]], dtype=torch.float64), torch.tensor([0.6, 1.0]), [0.3, 0.7]
    x = torch.linspace(-20, 20, 80001, dtype=torch.float64)[:, None]
    dx = float(x[1] - x[0])
    var = {}
    for sigma in (0.0, 0.8):
        p = M.gaussian_mixture_log_prob(x, means, stds, w, sigma=sigma).exp()
        assert float(p.sum() * dx) == pytest.approx(1.0, abs=1e-9)
        mean = float((p * x[:, 0]).sum() * dx)
        var[sigma] = float((p * (x[:, 0] - mean) ** 2).sum() * dx)
    assert var[0.8] == pytest.approx(var[0.0] + 0.8**2, rel=1e-8)


def test_score_re_exports_the_mixture_functions():
    assert score.gaussian_mixture_log_prob is M.gaussian_mixture_log_prob
    assert score.gaussian_mixture_score is M.gaussian_mixture_score


@pytest.mark.parametrize(
    "call, err, match",
    [
        (lambda: M.gaussian_mixture_log_prob(torch.zeros(3), [[0.0]], 1.0), ValueError, r"x must have shape \(N, D\)"),
        (lambda: M.gaussian_mixture_log_prob(torch.zeros(3, 2, dtype=torch.long), [[0.0, 0.0]], 1.0), TypeError,
         "floating"),
        (lambda: M.gaussian_mixture_log_prob(torch.zeros(3, 2), [[0.0, 0.0, 0.0]], 1.0), ValueError,
         r"means must have shape \(k, 2\)"),
        (lambda: M.gaussian_mixture_score(torch.zeros(3, 1), [[0.0], [1.0]], [1.0, 0.0]), ValueError,
         "stds must be > 0"),
        (lambda: M.gaussian_mixture_score(torch.zeros(3, 1), [[0.0], [1.0]], 1.0, [1.0, -1.0]), ValueError,
         "weights must be >= 0"),
        (lambda: M.gaussian_mixture_score(torch.zeros(3, 1), [[0.0], [1.0]], 1.0, [0.0, 0.0]), ValueError,
         "positive sum"),
        (lambda: M.gaussian_mixture_score(torch.zeros(3, 1), [[0.0], [1.0]], 1.0, [1.0]), ValueError,
         r"weights must have shape \(2,\)"),
        (lambda: M.gaussian_mixture_score(torch.zeros(3, 1), [[float("nan")]], 1.0), ValueError,
         "means must be finite"),
        (lambda: M.gaussian_mixture_score(torch.zeros(3, 1), [[0.0]], 1.0, sigma=-0.1), ValueError, "sigma"),
        (lambda: M.gaussian_mixture_score(torch.zeros(3, 1), [[0.0], [1.0]], [1.0, 1.0, 1.0]), ValueError,
         r"stds must have shape \(2,\)"),
    ],
)
def test_bad_input(call, err, match):
    with pytest.raises(err, match=match):
        call()
