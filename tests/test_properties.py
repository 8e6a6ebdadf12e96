"""Property-based tests (hypothesis) of the public functions that take tensors: every loss, sampler step,
divergence and metric of coursekit, tried on random valid inputs and on systematically broken ones.

One table, CASES, lists each function with a builder of valid inputs (shapes drawn by hypothesis, values from a
torch generator seeded by hypothesis), the documented shape of its output, which tensor arguments must be
checked, which arguments must agree in size, and out-of-range values of its parameters. Five properties run
over the table:

1. valid inputs give finite outputs of the documented shape, in the inputs' floating dtype;
2. one entry of a tensor argument set to NaN, +inf or -inf raises ValueError naming that argument;
3. a tensor argument of an integer dtype raises TypeError or ValueError naming it;
4. a size that must agree with another argument's, changed by one, raises ValueError naming the argument;
5. a parameter out of its range raises ValueError naming it.

Hypothesis runs a fixed number of examples, derandomised (the same examples every run), so CI is reproducible.
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import coursekit as ck

SETTINGS = settings(max_examples=10, derandomize=True, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


@dataclass(frozen=True)
class Dims:
    """Sizes drawn by hypothesis, and the generator that fills the tensors."""

    b: int  # batch
    d: int  # feature / latent dimension, >= 2
    k: int  # categories, >= 2
    seed: int
    float64: bool

    @property
    def dtype(self):
        return torch.float64 if self.float64 else torch.float32

    def gen(self):
        return torch.Generator().manual_seed(self.seed)


DIMS = st.builds(Dims, b=st.integers(2, 6), d=st.integers(2, 5), k=st.integers(2, 6), seed=st.integers(0, 2**31 - 1),
                 float64=st.booleans())


@dataclass(frozen=True)
class Case:
    """One function of the table.

    ``build(dims)`` returns ``(args, kwargs)`` of valid inputs; ``shape(dims)`` the output's shape (``()`` for a
    0-dim tensor or a python float); ``tensors``: names of the tensor arguments to corrupt; ``sized``: names of
    arguments whose last size must agree with another argument's; ``bad``: ``{parameter: [out-of-range
    values]}``; ``out``: picks the tensor(s) to check from the result; ``float_out``: the output has the inputs'
    dtype; ``non_finite``: the values that must be rejected (log-weights may be -inf); ``integers_ok``: integer
    tensors are documented as valid (the metrics convert their inputs to float64)."""

    fn: Callable
    build: Callable
    shape: Callable | None = None
    tensors: tuple = ()
    sized: tuple = ()
    bad: dict = field(default_factory=dict)
    out: Callable = lambda r: r
    float_out: bool = True
    non_finite: tuple = (math.nan, math.inf, -math.inf)
    integers_ok: bool = False

    @property
    def id(self):
        return f"{self.fn.__module__.removeprefix('coursekit.')}.{self.fn.__name__}"


# ------------------------------------------------------------------------------------------------
# valid inputs


class Inputs:
    """A per-example source of tensors: ``Inputs(dims).randn(3, 2)``, all from one seeded generator."""

    def __init__(self, dims):
        self.dims, self.g = dims, dims.gen()
        self.dtype = dims.dtype

    def randn(self, *shape):
        return torch.randn(*shape, generator=self.g, dtype=self.dtype)

    def rand(self, *shape):
        return torch.rand(*shape, generator=self.g, dtype=self.dtype)

    def probs(self, *shape):
        return torch.softmax(self.randn(*shape), dim=-1)

    def spd(self, n):
        a = self.randn(n, n)
        return a @ a.T / n + torch.eye(n, dtype=self.dtype)

    def abar(self, T=50):
        return ck.diffusion.alphas_cumprod_from_betas(ck.diffusion.beta_schedule("linear", T, dtype=self.dtype))


def joint(i, b, k, l):
    return torch.softmax(i.randn(b, k * l), dim=-1).reshape(b, k, l)


def critic(d, dtype):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(d, 8), nn.Tanh(), nn.Linear(8, 1)).to(dtype)


def vae_model(d, dtype):
    torch.manual_seed(0)
    return ck.vae.VAE(data_dim=d, latent_dim=2, hidden=(8,)).to(dtype)


def score_fn(x):
    return -x + 0.1 * torch.tanh(x)


def linear_classifier(d, k, dtype):
    """A classifier ``(x, t) -> logits`` that ignores the time, for the guidance gradient."""
    torch.manual_seed(0)
    lin = nn.Linear(d, k).to(dtype)
    return lambda x, t: lin(x)


def label_model(x, t, y):
    """A conditional noise model ``(x_t, t, y) -> eps_hat`` that reads its label."""
    return 0.5 * x + 0.1 * y[:, None].to(x.dtype)


def half(x):
    return 0.5 * x


def B(d):
    return (d.b,)


def BD(d):
    return (d.b, d.d)


def scalar(d):
    return ()


def first(r):
    return r[0]


def values_of(r):
    return list(r.values()) if isinstance(r, dict) else list(r)


CASES = [
    # chapter 01: divergences
    Case(ck.divergences.gaussian_kl, lambda i: ((i.randn(i.dims.b, i.dims.d), i.randn(i.dims.b, i.dims.d),
                                                 i.randn(i.dims.b, i.dims.d), i.randn(i.dims.b, i.dims.d)), {}),
         B, tensors=("mu_q", "logvar_q", "mu_p", "logvar_p"), sized=("mu_q", "logvar_p")),
    *[Case(f, lambda i: ((i.probs(i.dims.b, i.dims.k), i.probs(i.dims.b, i.dims.k)), {}), B, tensors=("p", "q"),
           sized=("q",))
      for f in (ck.divergences.kl_divergence, ck.divergences.js_divergence, ck.divergences.total_variation,
                ck.divergences.cross_entropy, ck.divergences.hellinger)],
    Case(ck.divergences.entropy, lambda i: ((i.probs(i.dims.b, i.dims.k),), {}), B, tensors=("p",)),
    Case(ck.divergences.kl_from_log_probs,
         lambda i: ((torch.log_softmax(i.randn(i.dims.b, i.dims.k), -1),
                     torch.log_softmax(i.randn(i.dims.b, i.dims.k), -1)), {}), B, tensors=("log_p",), sized=("log_q",)),
    *[Case(f, lambda i: ((joint(i, i.dims.b, i.dims.k, i.dims.d),), {}), B, tensors=("joint",))
      for f in (ck.divergences.mutual_information, ck.divergences.conditional_entropy)],
    Case(ck.divergences.wasserstein1_grid,
         lambda i: ((i.probs(i.dims.b, i.dims.k), i.probs(i.dims.b, i.dims.k),
                     torch.arange(i.dims.k, dtype=i.dtype)), {}), B, tensors=("p", "q", "support"), sized=("support",)),
    Case(ck.divergences.gaussian_entropy, lambda i: ((i.randn(i.dims.b, i.dims.d),), {}), B, tensors=("logvar",)),
    Case(ck.divergences.gaussian_hellinger,
         lambda i: (tuple(i.randn(i.dims.b, i.dims.d) for _ in range(4)), {}), B,
         tensors=("mu_p", "logvar_p", "mu_q", "logvar_q"), sized=("logvar_q",)),
    Case(ck.divergences.gaussian_log_prob,
         lambda i: ((i.randn(i.dims.b, i.dims.d), i.randn(i.dims.d), i.spd(i.dims.d)), {}), B,
         tensors=("x", "mean", "cov"), sized=("mean",)),
    Case(ck.divergences.monte_carlo_mean, lambda i: ((i.randn(i.dims.b, i.dims.d),), {}), lambda d: (d.d,),
         tensors=("values",), out=first),
    # chapter 02: mixtures
    Case(ck.mixtures.gaussian_mixture_log_prob,
         lambda i: ((i.randn(i.dims.b, i.dims.d), i.randn(i.dims.k, i.dims.d), i.rand(i.dims.k) + 0.5), {}), B,
         tensors=("x", "means", "stds"), sized=("means",), bad={"sigma": [-0.1, math.nan]}),
    Case(ck.mixtures.gaussian_mixture_score,
         lambda i: ((i.randn(i.dims.b, i.dims.d), i.randn(i.dims.k, i.dims.d), i.rand(i.dims.k) + 0.5), {}), BD,
         tensors=("x", "means", "stds"), sized=("means",), bad={"sigma": [-0.1]}),
    Case(ck.mixtures.squared_distances, lambda i: ((i.randn(i.dims.b, i.dims.d), i.randn(i.dims.k, i.dims.d)), {}),
         lambda d: (d.b, d.k), tensors=("x", "centres"), sized=("centres",), float_out=False),  # documented float64
    Case(ck.mixtures.gmm_log_prob,
         lambda i: ((i.randn(i.dims.b, i.dims.d), i.probs(i.dims.k), i.randn(i.dims.k, i.dims.d),
                     torch.stack([i.spd(i.dims.d) for _ in range(i.dims.k)])), {}), B,
         tensors=("x", "weights", "means", "covariances"), sized=("means",)),
    Case(ck.mixtures.gmm_responsibilities,
         lambda i: ((i.randn(i.dims.b, i.dims.d), i.probs(i.dims.k), i.randn(i.dims.k, i.dims.d),
                     torch.stack([i.spd(i.dims.d) for _ in range(i.dims.k)])), {}), lambda d: (d.b, d.k),
         tensors=("x", "weights", "means", "covariances"), sized=("means",)),
    Case(ck.mixtures.linear_gaussian_log_prob,
         lambda i: ((i.randn(i.dims.b, i.dims.d), i.randn(i.dims.d), i.randn(i.dims.d, 1), 0.5), {}), B,
         tensors=("x", "mean", "loadings"), sized=("mean",), bad={"noise_variance": [0.0, -1.0]}),
    Case(ck.mixtures.kmeans, lambda i: ((i.randn(i.dims.b + i.dims.k, i.dims.d), i.dims.k), {"max_iter": 5}),
         lambda d: (d.k, d.d), tensors=("x",), out=lambda r: r.centres, float_out=False,
         bad={"k": [0, 1000], "max_iter": [-1]}),
    # chapter 03: autoencoders
    Case(ck.autoencoders.reconstruction_error,
         lambda i: ((i.randn(i.dims.b, i.dims.d), i.randn(i.dims.b, i.dims.d)), {}), B, tensors=("x", "x_hat"),
         sized=("x_hat",)),
    Case(ck.autoencoders.dae_score,
         lambda i: ((i.randn(i.dims.b, i.dims.d), i.randn(i.dims.b, i.dims.d), 0.3), {}), BD,
         tensors=("reconstruction", "x_noisy"), sized=("x_noisy",), bad={"sigma": [0.0, -0.3, math.nan]}),
    Case(ck.autoencoders.mixture_posterior_mean,
         lambda i: ((i.randn(i.dims.b, i.dims.d), i.randn(i.dims.k, i.dims.d), i.rand(i.dims.k) + 0.5),
                    {"sigma": 0.3}), BD, tensors=("x_noisy", "means", "stds"), sized=("means",),
         bad={"sigma": [-0.3]}),
    Case(ck.autoencoders.sigmoid_jacobian_frobenius_sq,
         lambda i: ((i.randn(i.dims.k, i.dims.d), i.randn(i.dims.k), i.randn(i.dims.b, i.dims.d)), {}), B,
         tensors=("weight", "bias", "x"), sized=("x",)),
    Case(ck.autoencoders.l1_activity_penalty, lambda i: ((i.randn(i.dims.b, i.dims.k),), {}), B, tensors=("h",)),
    Case(ck.autoencoders.kl_sparsity_penalty, lambda i: ((i.rand(i.dims.b, i.dims.k), 0.05), {}), None,
         tensors=("h",), bad={"rho": [0.0, 1.0, -0.1]}),
    Case(ck.autoencoders.nearest_code_distance,
         lambda i: ((i.randn(i.dims.b, i.dims.d), i.randn(i.dims.b + 1, i.dims.d)), {}), B, tensors=("z", "codes"),
         sized=("codes",)),
    Case(ck.autoencoders.eckart_young_floor, lambda i: ((i.randn(i.dims.b + 2, i.dims.d), 1), {}), None,
         tensors=("x",), float_out=False, bad={"k": [-1]}),
    # chapter 04: VAE
    Case(ck.vae.reparameterise, lambda i: ((i.randn(i.dims.b, i.dims.d), i.randn(i.dims.b, i.dims.d),
                                            i.randn(i.dims.b, i.dims.d)), {}), BD,
         tensors=("mu", "logvar", "eps"), sized=("logvar", "eps")),
    Case(ck.vae.bernoulli_log_likelihood,
         lambda i: ((i.randn(i.dims.b, i.dims.d), (i.rand(i.dims.b, i.dims.d) > 0.5).to(i.dtype)), {}), B,
         tensors=("logits", "x"), sized=("x",)),
    # a log-weight of -inf is a weight of 0, which is valid
    Case(ck.vae.log_mean_exp, lambda i: ((i.randn(i.dims.k, i.dims.b),), {}), B, tensors=("log_w",),
         non_finite=(math.nan, math.inf)),
    Case(ck.vae.iwae_from_log_weights, lambda i: ((i.randn(i.dims.k, i.dims.b),), {}), B, tensors=("log_w",),
         non_finite=(math.nan, math.inf)),
    Case(ck.vae.kl_per_dimension, lambda i: ((i.randn(i.dims.b, i.dims.d), i.randn(i.dims.b, i.dims.d)), {}), BD,
         tensors=("mu", "logvar"), sized=("logvar",)),
    Case(ck.vae.free_bits_kl, lambda i: ((i.rand(i.dims.b, i.dims.d), 0.1), {}), scalar, tensors=("kl_dims",),
         bad={"free_bits": [-0.5, math.nan]}),
    Case(ck.vae.independent_bernoulli_log_prob,
         lambda i: (((i.rand(i.dims.b, i.dims.d) > 0.5).to(i.dtype), 0.05 + 0.9 * i.rand(i.dims.d)), {}), B,
         tensors=("x", "probs"), sized=("probs",)),
    Case(ck.vae.elbo,
         lambda i: ((vae_model(i.dims.d, i.dtype), (i.rand(i.dims.b, i.dims.d) > 0.5).to(i.dtype)),
                    {"generator": torch.Generator().manual_seed(3)}), B, tensors=("x",),
         out=lambda r: list(r.values()), bad={"beta": [-1.0], "n_samples": [0]}),
    # chapter 05: flows
    Case(ck.flows.standard_normal_log_prob, lambda i: ((i.randn(i.dims.b, i.dims.d),), {}), B, tensors=("z",)),
    Case(ck.flows.rq_spline_knots,
         lambda i: ((i.randn(i.dims.b, i.dims.k), i.randn(i.dims.b, i.dims.k), i.randn(i.dims.b, i.dims.k - 1)),
                    {"bound": 2.0}), lambda d: (d.b, d.k + 1), tensors=("widths", "heights", "derivatives"),
         sized=("heights", "derivatives"), out=list,
         bad={"bound": [0.0, -1.0, math.nan], "min_bin_width": [-0.1, 1.0], "min_derivative": [-1.0]}),
    Case(ck.flows.rq_spline,
         lambda i: ((3 * i.randn(i.dims.b), *ck.flows.rq_spline_knots(
             i.randn(i.dims.b, i.dims.k), i.randn(i.dims.b, i.dims.k), i.randn(i.dims.b, i.dims.k - 1), 2.0)), {}),
         B, tensors=("x", "knots_x", "knots_y", "derivatives"), sized=("knots_y", "derivatives"), out=list),
    # chapter 06: GAN
    Case(ck.gan.optimal_discriminator, lambda i: ((i.rand(i.dims.b) + 0.1, i.rand(i.dims.b) + 0.1), {}), B,
         tensors=("p_data", "p_model"), sized=("p_model",)),
    Case(ck.gan.gan_value, lambda i: ((i.randn(i.dims.b), i.randn(i.dims.b)), {}), scalar,
         tensors=("real_logits", "fake_logits")),
    Case(ck.gan.discriminator_loss, lambda i: ((i.randn(i.dims.b), i.randn(i.dims.b)), {}), scalar,
         tensors=("real_logits", "fake_logits")),
    Case(ck.gan.generator_loss, lambda i: ((i.randn(i.dims.b),), {}), scalar, tensors=("fake_logits",),
         bad={"kind": ["saturating_typo"]}),
    # chapter 07: Wasserstein, f-divergences, MMD
    Case(ck.wasserstein.f_divergence, lambda i: ((i.probs(i.dims.b, i.dims.k), i.probs(i.dims.b, i.dims.k)), {}), B,
         tensors=("p", "q"), sized=("q",), bad={"name": ["kullback"]}),
    *[Case(f, lambda i: ((i.randn(i.dims.b), i.randn(i.dims.b + 1)), {}), scalar, tensors=("real_v", "fake_v"),
           bad={"divergence": ["kullback"]})
      for f in (ck.wasserstein.f_gan_value, ck.wasserstein.f_gan_discriminator_loss)],
    Case(ck.wasserstein.f_gan_generator_loss, lambda i: ((i.randn(i.dims.b),), {}), scalar, tensors=("fake_v",),
         bad={"divergence": ["kullback"]}),
    Case(ck.wasserstein.ssgan_discriminator_loss,
         lambda i: ((i.randn(i.dims.b, i.dims.k), torch.arange(i.dims.b) % i.dims.k, i.randn(i.dims.b + 1, i.dims.k),
                     i.randn(i.dims.b + 2, i.dims.k)), {}), scalar,
         tensors=("labelled_logits", "real_logits", "fake_logits"), sized=("real_logits", "fake_logits")),
    Case(ck.wasserstein.density_ratio_from_logits, lambda i: ((i.randn(i.dims.b),), {}), B, tensors=("logits",)),
    Case(ck.wasserstein.wasserstein1_1d, lambda i: ((i.randn(i.dims.b), i.randn(i.dims.b + 1)), {}), scalar,
         tensors=("x", "y")),
    Case(ck.wasserstein.wasserstein_critic_loss, lambda i: ((i.randn(i.dims.b), i.randn(i.dims.b)), {}), scalar,
         tensors=("real_scores", "fake_scores")),
    Case(ck.wasserstein.wasserstein_generator_loss, lambda i: ((i.randn(i.dims.b),), {}), scalar,
         tensors=("fake_scores",)),
    Case(ck.wasserstein.gradient_penalty,
         lambda i: ((critic(i.dims.d, i.dtype), i.randn(i.dims.b, i.dims.d), i.randn(i.dims.b, i.dims.d)),
                    {"generator": torch.Generator().manual_seed(0)}), scalar, tensors=("real", "fake"),
         sized=("fake",)),
    *[Case(f, lambda i: ((i.randn(i.dims.b, i.dims.d), i.randn(i.dims.b + 1, i.dims.d)), {"bandwidths": (1.0, 2.0)}),
           scalar, tensors=("x", "y"), sized=("y",), bad={"bandwidths": [(0.0,), (-1.0,), ()]})
      for f in (ck.wasserstein.mmd2_unbiased, ck.wasserstein.mmd2_biased)],
    Case(ck.wasserstein.gaussian_kernel_matrix,
         lambda i: ((i.randn(i.dims.b, i.dims.d), i.randn(i.dims.b + 1, i.dims.d)), {"bandwidths": (1.0,)}),
         lambda d: (d.b, d.b + 1), tensors=("x", "y"), sized=("y",), bad={"bandwidths": [(0.0,)]}),
    Case(ck.wasserstein.ssgan_real_logit, lambda i: ((i.randn(i.dims.b, i.dims.k),), {}), B,
         tensors=("class_logits",)),
    Case(ck.wasserstein.feature_matching_loss,
         lambda i: ((i.randn(i.dims.b, i.dims.d), i.randn(i.dims.b + 1, i.dims.d)), {}), scalar,
         tensors=("real_features", "fake_features"), sized=("fake_features",)),
    # chapter 08: diffusion
    Case(ck.diffusion.q_sample, lambda i: ((i.randn(i.dims.b, 1, 2, 2), 3, i.randn(i.dims.b, 1, 2, 2), i.abar()), {}),
         lambda d: (d.b, 1, 2, 2), tensors=("x0", "noise"), sized=("noise",), bad={"t": [-1, 50, 2.5]}),
    Case(ck.diffusion.q_posterior_mean_variance,
         lambda i: ((i.randn(i.dims.b, 1, 2, 2), i.randn(i.dims.b, 1, 2, 2), 3, i.abar()), {}),
         lambda d: (d.b, 1, 2, 2), tensors=("x0", "xt"), sized=("xt",), out=first, bad={"t": [50]}),
    Case(ck.diffusion.predict_x0_from_eps,
         lambda i: ((i.randn(i.dims.b, 1, 2, 2), 3, i.randn(i.dims.b, 1, 2, 2), i.abar()), {}),
         lambda d: (d.b, 1, 2, 2), tensors=("xt", "eps"), sized=("eps",), bad={"t": [-1]}),
    Case(ck.diffusion.ddpm_step,
         lambda i: ((i.randn(i.dims.b, 1, 2, 2), i.randn(i.dims.b, 1, 2, 2), 3, i.abar()),
                    {"noise": i.randn(i.dims.b, 1, 2, 2)}),
         lambda d: (d.b, 1, 2, 2), tensors=("eps", "xt"), sized=("xt",), bad={"variance": ["medium"], "t": [50]}),
    Case(ck.diffusion.ddim_step,
         lambda i: ((i.randn(i.dims.b, 1, 2, 2), i.randn(i.dims.b, 1, 2, 2), 5, 2, i.abar()), {}),
         lambda d: (d.b, 1, 2, 2), tensors=("eps", "xt"), sized=("xt",), bad={"eta": [-0.5, math.nan]}),
    Case(ck.diffusion.l_simple, lambda i: ((i.randn(i.dims.b, 1, 2, 2), i.randn(i.dims.b, 1, 2, 2)), {}), B,
         tensors=("eps_hat", "eps"), sized=("eps",)),
    Case(ck.diffusion.normal_kl, lambda i: ((i.randn(i.dims.b, i.dims.d), i.rand(i.dims.b, i.dims.d) + 0.1,
                                             i.randn(i.dims.b, i.dims.d), i.rand(i.dims.b, i.dims.d) + 0.1), {}), BD,
         tensors=("mean1", "var1", "mean2", "var2")),
    Case(ck.diffusion.discretized_gaussian_log_likelihood,
         lambda i: ((-1 + 2 * torch.randint(0, 17, (i.dims.b, 1, 2, 2), generator=i.g).to(i.dtype) / 16,
                     i.randn(i.dims.b, 1, 2, 2), -1 + 0.1 * i.randn(i.dims.b, 1, 2, 2)), {"levels": 17}),
         lambda d: (d.b, 1, 2, 2), tensors=("x", "mean", "log_scale"), float_out=False,  # documented float64
         bad={"levels": [1]}),
    Case(ck.diffusion.snr, lambda i: ((i.abar(),), {}), lambda d: (50,), tensors=("alphas_cumprod",),
         float_out=False),  # documented float64
    # chapter 09: score matching
    Case(ck.score.dsm_target, lambda i: ((i.randn(i.dims.b, i.dims.d), i.randn(i.dims.b, i.dims.d), 0.5), {}), BD,
         tensors=("x", "x_tilde"), sized=("x_tilde",), bad={"sigma": [0.0, -1.0, math.nan]}),
    Case(ck.score.denoising_score_matching_loss,
         lambda i: ((score_fn, i.randn(i.dims.b, i.dims.d), 0.5), {"noise": i.randn(i.dims.b, i.dims.d)}), scalar,
         tensors=("x",), sized=("noise",), bad={"sigma": [0.0, -1.0]}),
    Case(ck.score.hyvarinen_loss, lambda i: ((score_fn, i.randn(i.dims.b, i.dims.d)), {}), scalar, tensors=("x",)),
    Case(ck.score.sliced_score_matching_loss,
         lambda i: ((score_fn, i.randn(i.dims.b, i.dims.d)), {"generator": torch.Generator().manual_seed(1)}), scalar,
         tensors=("x",), bad={"n_projections": [0, -1], "distribution": ["cauchy"]}),
    Case(ck.score.ncsn_loss,
         lambda i: ((lambda x, s: score_fn(x) / s.reshape(-1, 1), i.randn(i.dims.b, i.dims.d),
                     torch.tensor([1.0, 0.5, 0.1], dtype=i.dtype)), {"generator": torch.Generator().manual_seed(2)}),
         scalar, tensors=("x",)),
    Case(ck.score.langevin_sample,
         lambda i: ((score_fn, i.randn(i.dims.b, i.dims.d), 0.01, 3), {"generator": torch.Generator().manual_seed(4)}),
         BD, tensors=("x0",), bad={"step_size": [0.0, -0.1], "n_steps": [0]}),
    Case(ck.score.annealed_langevin_sample,
         lambda i: ((lambda x, s: score_fn(x) / s.reshape(-1, 1), i.randn(i.dims.b, i.dims.d),
                     torch.tensor([1.0, 0.3], dtype=i.dtype), 0.01, 2),
                    {"generator": torch.Generator().manual_seed(5)}),
         BD, tensors=("x0",), bad={"step_size": [0.0], "n_steps_each": [0]}),
    # chapter 10: flow matching
    Case(ck.flow_matching.interpolate, lambda i: ((i.randn(i.dims.b, i.dims.d), i.randn(i.dims.b, i.dims.d), 0.3), {}),
         BD, tensors=("x0", "x1"), sized=("x1",), bad={"t": [1.5, -0.5, math.nan], "path": ["straight"]}),
    Case(ck.flow_matching.cfm_target, lambda i: ((i.randn(i.dims.b, i.dims.d), i.randn(i.dims.b, i.dims.d), 0.3),
                                                 {"path": "ot", "sigma_min": 0.1}),
         BD, tensors=("x0", "x1"), sized=("x1",), bad={"t": [2.0], "sigma_min": [1.0, -0.1]}),
    Case(ck.flow_matching.cfm_loss, lambda i: ((lambda x, t: score_fn(x), i.randn(i.dims.b, i.dims.d)),
                                               {"generator": torch.Generator().manual_seed(6)}),
         scalar, tensors=("x1",), bad={"path": ["straight"]}),
    Case(ck.flow_matching.euler_step, lambda i: ((lambda x, t: score_fn(x), i.randn(i.dims.b, i.dims.d), 0.2, 0.1), {}),
         BD, tensors=("x",), bad={"dt": [math.nan]}),
    Case(ck.flow_matching.heun_step, lambda i: ((lambda x, t: score_fn(x), i.randn(i.dims.b, i.dims.d), 0.2, 0.1), {}),
         BD, tensors=("x",), bad={"dt": [math.inf]}),
    Case(ck.flow_matching.ode_solve, lambda i: ((lambda x, t: score_fn(x), i.randn(i.dims.b, i.dims.d), 3), {}),
         BD, tensors=("x",), bad={"n_steps": [0], "method": ["rk4"]}),
    Case(ck.flow_matching.hutchinson_divergence,
         lambda i: ((lambda x, t: score_fn(x), i.randn(i.dims.b, i.dims.d), 0.5),
                    {"generator": torch.Generator().manual_seed(7)}),
         B, tensors=("x",), bad={"n_probes": [0], "probe": ["uniform"]}),
    Case(ck.flow_matching.convert_prediction,
         lambda i: ((i.randn(i.dims.b, i.dims.d), i.randn(i.dims.b, i.dims.d), 0.6, 0.8),
                    {"source": "eps", "target": "data"}),
         BD, tensors=("pred", "x_t"), sized=("x_t",), bad={"source": ["noise"], "target": ["x0"]}),
    # chapter 11: autoregressive models and discrete tokens
    Case(ck.autoregressive.vq_assign, lambda i: ((i.randn(i.dims.b, i.dims.d), i.randn(i.dims.k, i.dims.d)), {}),
         lambda d: (d.b,), tensors=("z", "codebook"), sized=("codebook",), float_out=False),  # int64 codes
    Case(ck.autoregressive.straight_through, lambda i: ((i.randn(i.dims.b, i.dims.d), i.randn(i.dims.b, i.dims.d)), {}),
         BD, tensors=("z_e", "z_q"), sized=("z_q",)),
    Case(ck.autoregressive.sample_next,
         lambda i: ((i.randn(i.dims.b, i.dims.k),), {"top_k": 2, "generator": torch.Generator().manual_seed(6)}),
         lambda d: (d.b,), tensors=("logits",), float_out=False, non_finite=(math.nan,),  # -inf logits are allowed
         bad={"temperature": [0.0, -1.0], "top_k": [0]}),
    # chapter 12: guidance, contrastive image-text models, image-to-image translation
    Case(ck.guidance.classifier_guided_eps,
         lambda i: ((i.randn(i.dims.b, 1, 2, 2), i.randn(i.dims.b, 1, 2, 2), 3, i.abar(), 2.0), {}),
         lambda d: (d.b, 1, 2, 2), tensors=("eps", "grad_log_prob"), sized=("grad_log_prob",),
         bad={"w": [math.nan, math.inf], "t": [-1, 50]}),
    Case(ck.guidance.classifier_free_eps,
         lambda i: ((i.randn(i.dims.b, i.dims.d), i.randn(i.dims.b, i.dims.d), 1.5), {}), BD,
         tensors=("eps_cond", "eps_uncond"), sized=("eps_uncond",), bad={"w": [math.nan]}),
    Case(ck.guidance.class_log_prob_grad,
         lambda i: ((linear_classifier(i.dims.d, i.dims.k, i.dtype), i.randn(i.dims.b, i.dims.d), None,
                     torch.arange(i.dims.b) % i.dims.k), {}), BD, tensors=("x",)),
    Case(ck.guidance.conditional_diffusion_loss,
         lambda i: ((label_model, i.randn(i.dims.b, i.dims.d), torch.arange(i.dims.b) % 3, i.abar()),
                    {"null": torch.tensor(3), "p_uncond": 0.5, "generator": torch.Generator().manual_seed(8)}),
         scalar, tensors=("x0",), bad={"p_uncond": [-0.1, 1.5]}),
    Case(ck.guidance.dynamic_threshold, lambda i: ((3 * i.randn(i.dims.b, i.dims.d), 0.9), {}), BD, tensors=("x0",),
         bad={"percentile": [-0.1, 1.5]}),
    Case(ck.guidance.contrastive_logits,
         lambda i: ((i.randn(i.dims.b, i.dims.d), i.randn(i.dims.b + 1, i.dims.d), 0.1), {}),
         lambda d: (d.b, d.b + 1), tensors=("u", "v"), sized=("v",), bad={"temperature": [0.0, -1.0, math.nan]}),
    *[Case(f, lambda i: ((i.randn(i.dims.b, i.dims.b),), {}), scalar, tensors=("logits",), sized=("logits",))
      for f in (ck.guidance.info_nce, ck.guidance.symmetric_info_nce)],
    Case(ck.guidance.zero_shot_classify,
         lambda i: ((i.randn(i.dims.b, i.dims.d), i.randn(2 * i.dims.k, i.dims.d),
                     torch.arange(2 * i.dims.k) % i.dims.k, i.dims.k), {}), B, tensors=("image_emb", "prompt_emb"),
         sized=("prompt_emb",),
         float_out=False, bad={"n_classes": [0]}),  # int64 classes
    Case(ck.guidance.retrieval_accuracy,
         lambda i: ((i.randn(i.dims.b, i.dims.d), i.randn(i.dims.k, i.dims.d), torch.arange(i.dims.b) % i.dims.k), {}),
         scalar, tensors=("query_emb", "key_emb"), sized=("key_emb",), float_out=False),  # a python float
    Case(ck.guidance.thicken_strokes, lambda i: ((i.rand(i.dims.b, 1, 3, i.dims.d),), {"width": 2}),
         lambda d: (d.b, 1, 3, d.d), tensors=("x",), bad={"width": [0]}),
    Case(ck.guidance.pix2pix_generator_loss,
         lambda i: ((i.randn(i.dims.b, 4), i.rand(i.dims.b, 1, 2, 2), i.rand(i.dims.b, 1, 2, 2)), {"l1_weight": 10.0}),
         scalar, tensors=("fake_logits", "fake", "target"), sized=("target",), bad={"l1_weight": [-1.0, math.nan]}),
    Case(ck.guidance.cycle_consistency_loss,
         lambda i: ((torch.tanh, half, i.randn(i.dims.b, i.dims.d), i.randn(i.dims.b + 1, i.dims.d)), {}), scalar,
         tensors=("a", "b")),
    # chapter 14: disentanglement
    Case(ck.disentangle.adain,
         lambda i: ((i.randn(i.dims.b, i.dims.d, 3, 3), i.randn(i.dims.b, i.dims.d), i.randn(i.dims.b, i.dims.d)), {}),
         lambda d: (d.b, d.d, 3, 3), tensors=("x", "scale", "bias"), sized=("scale", "bias"),
         bad={"eps": [0.0, -1.0]}),
    Case(ck.disentangle.fade_in, lambda i: ((i.randn(i.dims.b, i.dims.d), i.randn(i.dims.b, i.dims.d), 0.3), {}), BD,
         tensors=("old", "new"), sized=("new",), bad={"alpha": [-0.1, 1.5]}),
    Case(ck.disentangle.infogan_mi_lower_bound,
         lambda i: ((i.randn(i.dims.b, i.dims.k), torch.randint(i.dims.k, (i.dims.b,), generator=i.g)), {}), scalar,
         tensors=("q_logits",)),
    # metrics
    Case(ck.metrics.frechet_distance,
         lambda i: ((i.randn(i.dims.d), i.spd(i.dims.d), i.randn(i.dims.d), i.spd(i.dims.d)), {}), scalar,
         tensors=("mu1", "sigma1", "mu2", "sigma2"), sized=("mu2",), float_out=False, integers_ok=True),
    Case(ck.metrics.frechet_distance_from_features,
         lambda i: ((i.randn(i.dims.b + i.dims.d, i.dims.d), i.randn(i.dims.b + i.dims.d + 1, i.dims.d)), {}),
         scalar, tensors=("f1", "f2"), sized=("f2",), float_out=False, integers_ok=True),
    Case(ck.metrics.kernel_distance,
         lambda i: ((i.randn(i.dims.b + 3, i.dims.d), i.randn(i.dims.b + 4, i.dims.d)),
                    {"subsets": 3, "subset_size": i.dims.b + 2}), None, tensors=("f1", "f2"), sized=("f2",),
         out=values_of, float_out=False, bad={"subset_size": [0, 1000], "subsets": [0]}, integers_ok=True),
    Case(ck.metrics.inception_score, lambda i: ((i.probs(3 * i.dims.b, i.dims.k),), {"splits": 3}), None,
         tensors=("probs",), out=values_of, float_out=False, integers_ok=True, bad={"splits": [0, 1000]}),
    Case(ck.metrics.precision_recall,
         lambda i: ((i.randn(i.dims.b + 3, i.dims.d), i.randn(i.dims.b + 4, i.dims.d)), {"k": 2}), None,
         tensors=("real", "fake"), sized=("fake",), out=values_of, float_out=False, bad={"k": [0, 100]},
         integers_ok=True),
    Case(ck.metrics.density_coverage,
         lambda i: ((i.randn(i.dims.b + 3, i.dims.d), i.randn(i.dims.b + 4, i.dims.d)), {"k": 2}), None,
         tensors=("real", "fake"), sized=("fake",), out=values_of, float_out=False, bad={"k": [0, 100]},
         integers_ok=True),
    Case(ck.metrics.fid_infinity,
         lambda i: ((i.randn(3 * i.dims.d + i.dims.b, i.dims.d), i.randn(3 * i.dims.d + i.dims.b + 1, i.dims.d)), {}),
         scalar, tensors=("real", "fake"), sized=("fake",), out=lambda r: [r["fid_infinity"], r["slope"]],
         float_out=False, bad={"repeats": [0], "ns": [(3,), (1000, 2000)]}, integers_ok=True),
    Case(ck.metrics.expected_coverage, lambda i: ((i.dims.b + 10, i.dims.b + 5, i.dims.k), {}), scalar,
         float_out=False, bad={"k": [0, 100], "n_real": [0], "n_fake": [0, 2.5]}),
    Case(ck.metrics.nearest_neighbour_distances,
         lambda i: ((i.randn(i.dims.b, i.dims.d), i.randn(i.dims.b + 2, i.dims.d)), {}), B,
         tensors=("x", "reference"), sized=("reference",), float_out=False, integers_ok=True),
    Case(ck.metrics.memorisation_check,
         lambda i: ((i.randn(i.dims.b, i.dims.d), i.randn(i.dims.b + 2, i.dims.d), i.randn(i.dims.b + 1, i.dims.d)),
                    {}), None, tensors=("samples", "train", "held_out"), sized=("train", "held_out"), out=values_of,
         float_out=False, bad={"quantile": [0.0, 1.0, -0.5, math.nan]}, integers_ok=True),
    Case(ck.metrics.sliced_wasserstein,
         lambda i: ((i.randn(i.dims.b, i.dims.d), i.randn(i.dims.b + 3, i.dims.d)), {"n_projections": 7}), scalar,
         tensors=("x", "y"), sized=("y",), float_out=False, bad={"p": [0.5, 0.0, math.nan], "n_projections": [0]},
         integers_ok=True),
    Case(ck.metrics.ssim, lambda i: ((i.rand(i.dims.b, 1, 8, 8), i.rand(i.dims.b, 1, 8, 8)), {}), B,
         tensors=("x", "y"), sized=("y",),
         bad={"kernel_size": [0, 4, 9], "sigma": [0.0, -1.0], "data_range": [0.0, -1.0], "k1": [0.0]}),
    Case(ck.metrics.ms_ssim, lambda i: ((i.rand(i.dims.b, 1, 8, 8), i.rand(i.dims.b, 1, 8, 8)), {}), B,
         tensors=("x", "y"), sized=("y",), bad={"scales": [0, 3], "weights": [(1.0,), (0.5, -0.5)]}),
    Case(ck.metrics.pairwise_ms_ssim, lambda i: ((i.rand(i.dims.b, 1, 8, 8),), {"n_pairs": 5}), None,
         tensors=("x",), out=values_of, float_out=False, bad={"n_pairs": [0]}),
]
IDS = [c.id for c in CASES]


# ------------------------------------------------------------------------------------------------
# helpers


def bind(case, args, kwargs):
    """``{parameter name: value}`` of one call, by the function's signature."""
    return dict(inspect.signature(case.fn).bind(*args, **kwargs).arguments)


def call(case, arguments):
    return case.fn(**arguments)  # by keyword: no function in the table has positional-only parameters


def valid(case, dims):
    args, kwargs = case.build(Inputs(dims))
    return bind(case, args, kwargs)


def names_argument(message: str, name: str) -> bool:
    return re.search(rf"(?<![A-Za-z0-9_]){re.escape(name)}(?![A-Za-z0-9_])", message) is not None


def raises_naming(case, arguments, name, errors=(ValueError,)):
    with pytest.raises(errors) as info:
        call(case, arguments)
    assert names_argument(str(info.value), name), (
        f"{case.id}: the error for a bad {name!r} does not name it: {type(info.value).__name__}: {info.value}"
    )


def as_tensors(result):
    items = result if isinstance(result, list) else [result]
    return [torch.as_tensor(v) for v in items]


# ------------------------------------------------------------------------------------------------
# the five properties


@pytest.mark.parametrize("case", CASES, ids=IDS)
@SETTINGS
@given(dims=DIMS)
def test_valid_inputs_give_finite_outputs_of_the_documented_shape(case, dims):
    arguments = valid(case, dims)
    result = case.out(call(case, arguments))
    for value in as_tensors(result):
        assert torch.isfinite(value).all(), f"{case.id}: non-finite output {value}"
        if case.float_out:
            assert value.dtype == dims.dtype, f"{case.id}: output dtype {value.dtype}, inputs {dims.dtype}"
    if case.shape is not None:
        for value in as_tensors(result):
            assert tuple(value.shape) == case.shape(dims), f"{case.id}: output shape {tuple(value.shape)}"


@pytest.mark.parametrize("case", [c for c in CASES if c.tensors], ids=[c.id for c in CASES if c.tensors])
@SETTINGS
@given(dims=DIMS, which=st.integers(0, 10), where=st.floats(0, 1, exclude_max=True),
       pick=st.integers(0, 2))
def test_a_non_finite_entry_is_rejected_by_name(case, dims, which, where, pick):
    arguments = valid(case, dims)
    bad = case.non_finite[pick % len(case.non_finite)]
    name = case.tensors[which % len(case.tensors)]
    tensor = arguments[name].clone()
    tensor.view(-1)[int(where * tensor.numel())] = bad
    arguments[name] = tensor
    raises_naming(case, arguments, name)


INTEGERS = [c for c in CASES if c.tensors and not c.integers_ok]


@pytest.mark.parametrize("case", INTEGERS, ids=[c.id for c in INTEGERS])
@SETTINGS
@given(dims=DIMS, which=st.integers(0, 10))
def test_an_integer_tensor_is_rejected_by_name(case, dims, which):
    arguments = valid(case, dims)
    name = case.tensors[which % len(case.tensors)]
    arguments[name] = arguments[name].round().long()
    raises_naming(case, arguments, name, errors=(TypeError, ValueError))


@pytest.mark.parametrize("case", [c for c in CASES if c.sized], ids=[c.id for c in CASES if c.sized])
@SETTINGS
@given(dims=DIMS, which=st.integers(0, 10))
def test_a_size_that_must_agree_is_rejected_by_name(case, dims, which):
    arguments = valid(case, dims)
    name = case.sized[which % len(case.sized)]
    tensor = arguments[name]
    arguments[name] = torch.cat([tensor, tensor[..., :1]], dim=-1)  # last size + 1 (>= 3, so no broadcasting)
    with pytest.raises(ValueError) as info:
        call(case, arguments)
    # a mismatch is between two arguments: the message must name the changed one or one it must agree with
    involved = {name, *case.tensors, *case.sized}
    assert any(names_argument(str(info.value), n) for n in involved), (
        f"{case.id}: the error for a mismatched {name!r} names none of {sorted(involved)}: {info.value}"
    )


BAD = [(c, name, value) for c in CASES for name, values in c.bad.items() for value in values]


@pytest.mark.parametrize("case, name, value", BAD, ids=[f"{c.id}-{n}={v!r}" for c, n, v in BAD])
@SETTINGS
@given(dims=DIMS)
def test_a_parameter_out_of_range_is_rejected_by_name(case, name, value, dims):
    arguments = valid(case, dims)
    arguments[name] = value
    raises_naming(case, arguments, name, errors=(ValueError, TypeError))


def test_the_table_covers_the_course():
    """Every chapter module with losses, steps or divergences is in the table (a guard against a module being
    dropped from it)."""
    modules = {c.fn.__module__ for c in CASES}
    for name in ("divergences", "mixtures", "autoencoders", "vae", "flows", "gan", "wasserstein", "diffusion", "score",
                 "guidance", "metrics"):
        assert f"coursekit.{name}" in modules, name
    assert len(CASES) >= 50
