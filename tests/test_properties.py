"""Property-based tests (hypothesis) of the public functions that take tensors: every loss, sampler step,
divergence and metric of coursekit, tried on random valid inputs and on systematically broken ones.

One table, CASES, lists each function with a builder of valid inputs (shapes drawn by hypothesis, values from a
torch generator seeded by hypothesis; a loss that takes a model gets a tiny model), the documented shape of its
output, which tensor arguments must be finite floats, which dimensions of its tensor arguments are free, and
out-of-range values of its parameters. Five properties run over the table:

1. valid inputs give finite outputs of the documented shape, in the inputs' floating dtype;
2. one entry of a tensor argument set to NaN, +inf or -inf raises ValueError naming that argument;
3. a tensor argument of an integer dtype raises TypeError or ValueError naming it;
4. one dimension of one tensor argument changed by one raises ValueError naming an argument, for every
   dimension of every tensor argument that the table does not declare free (a batch size, a number of
   categories that no other argument fixes);
5. a parameter out of its range raises ValueError or TypeError naming it.

A sixth test guards the table itself: every public function of every concept module and of ``metrics`` is in
the table or on EXCLUDED, which says why it is not.

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
#: Examples per out-of-range parameter value: its check does not depend on the tensors, so a few suffice.
BAD_EXAMPLES = 3


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

ALL = "all"  # in Case.free: every dimension of that argument is free


@dataclass(frozen=True)
class Case:
    """One function of the table.

    ``build(inputs)`` returns ``(args, kwargs)`` of valid inputs; ``shape(dims)`` the output's shape (``()`` for a
    0-dim tensor or a python float); ``tensors``: the floating tensor arguments to corrupt (an argument inside a
    tuple is written ``"batch[0]"``); ``free``: ``{argument: dimensions}`` that may change alone (``ALL``: every
    one) -- every other dimension of every tensor argument must agree with another argument, a model or a
    documented size, and changing it must raise; ``bad``: ``{parameter: [out-of-range values]}`` (a
    :class:`Corrupt` is made from the valid value); ``out``: picks the value(s) to check from the result;
    ``float_out``: the output tensors have the inputs' dtype; ``non_finite``: the values that must be rejected
    (log-weights may be -inf); ``integers_ok``: the tensor arguments (``True``: all) for which integer tensors
    are documented as valid (the metrics convert their inputs to float64); ``aliases``: the name an error
    message may use for an argument (``batch`` is documented as ``x``); ``simplex`` / ``log_simplex``: arguments
    holding probability vectors / log-probabilities along the last dimension, renormalised after a size change
    so that only the size is wrong; ``examples``: hypothesis examples per property (fewer for the functions that
    fit a model or build Jacobians)."""

    fn: Callable
    build: Callable
    shape: Callable | None = None
    tensors: tuple = ()
    free: dict = field(default_factory=dict)
    bad: dict = field(default_factory=dict)
    out: Callable = lambda r: r
    float_out: bool = True
    non_finite: tuple = (math.nan, math.inf, -math.inf)
    integers_ok: bool | tuple = False
    aliases: dict = field(default_factory=dict)
    simplex: tuple = ()
    log_simplex: tuple = ()
    examples: int = SETTINGS.max_examples

    @property
    def id(self):
        return f"{self.fn.__module__.removeprefix('coursekit.')}.{self.fn.__name__}"

    def integer_tensors_ok(self, name):
        return self.integers_ok is True or name in (self.integers_ok or ())


@dataclass(frozen=True)
class Corrupt:
    """A bad value made from the valid one, e.g. token ids out of range: ``Corrupt("vocab", lambda t: t + 99)``."""

    label: str
    make: Callable

    def __repr__(self):
        return self.label


AS_FLOAT = Corrupt("float", lambda t: t.to(torch.float32))  # for arguments that must be integer tensors
NEGATIVE = Corrupt("negative", lambda t: t - t.max() - 1)  # integer labels or ids below 0
OUT_OF_VOCABULARY = Corrupt("vocab", lambda t: t + 99)  # token ids past the vocabulary


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

    def binary(self, *shape):
        return (self.rand(*shape) > 0.5).to(self.dtype)

    def probs(self, *shape):
        return torch.softmax(self.randn(*shape), dim=-1)

    def ints(self, high, *shape):
        return torch.randint(high, shape, generator=self.g)

    def spd(self, n):
        a = self.randn(n, n)
        return a @ a.T / n + torch.eye(n, dtype=self.dtype)

    def abar(self, T=50, schedule="linear"):
        return ck.diffusion.alphas_cumprod_from_betas(ck.diffusion.beta_schedule(schedule, T, dtype=self.dtype))

    def seeded(self, seed):
        return torch.Generator().manual_seed(seed)


def joint(i, b, k, l):
    return torch.softmax(i.randn(b, k * l), dim=-1).reshape(b, k, l)


def levels(i, *shape):
    """Integer factor levels (N, K) in 0..2, every factor taking at least two values (rows 0 and 1: all 0, all 1)."""
    f = i.ints(3, *shape)
    f[0], f[1] = 0, 1
    return f


def critic(d, dtype):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(d, 8), nn.Tanh(), nn.Linear(8, 1)).to(dtype)


def vae_model(d, dtype):
    torch.manual_seed(0)
    return ck.vae.VAE(data_dim=d, latent_dim=2, hidden=(8,)).to(dtype)


def autoencoder(d, dtype, **kw):
    torch.manual_seed(0)
    return ck.autoencoders.Autoencoder(d, 2, hidden=(8,), **kw).to(dtype)


def tied_autoencoder(d, dtype):
    torch.manual_seed(0)
    return ck.autoencoders.TiedSigmoidAutoencoder(d, 2).to(dtype)


def flow(d, dtype):
    return ck.flows.realnvp(d, n_couplings=2, hidden=(8,), seed=0).to(dtype)


class Denoiser(nn.Module):
    """A tiny noise model ``eps(x_t, t)`` of images (N, 1, 2, 2): one linear map of the four pixels."""

    def __init__(self, dtype=torch.float32):
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(4, 4).to(dtype)

    def forward(self, x, t):
        return 0.1 * self.lin(x.flatten(1)).reshape(x.shape)


def transformer(vocab, length, dtype):
    torch.manual_seed(0)
    return ck.autoregressive.CausalTransformer(vocab, length, d_model=8, n_heads=2, n_layers=1).to(dtype)


def vqvae(dtype):
    torch.manual_seed(0)
    return ck.autoregressive.VQVAE(n_codes=4, dim=2, channels=4).to(dtype)


def sprites_classifier(dtype):
    torch.manual_seed(0)
    return ck.disentangle.SpritesFactorClassifier().to(dtype)


def sprite_factors(i, b):
    """Valid factor levels (b, 5) of the procedural sprites: factor j in 0..levels_j - 1."""
    return torch.stack([i.ints(k, b) for k in ck.data.SPRITE_FACTORS.values()], 1)


def style_generator():
    torch.manual_seed(0)
    return ck.disentangle.StyleGenerator(latent_dim=2, w_dim=4, channels=2)


def digits_classifier():
    torch.manual_seed(0)
    return ck.metrics.DigitsClassifier(feature_dim=2).eval()


def linear_generator(d):
    torch.manual_seed(0)
    return nn.Linear(2, d)


def objective_terms(loss):
    """A GAN objective (:class:`coursekit.gan.GANLoss`) evaluated on a fixed small batch: the discriminator's loss
    with its weighted penalty and the generator's loss, after the discriminator's post-update hook."""
    g = torch.Generator().manual_seed(0)
    real, fake, d = torch.randn(4, 2, generator=g), torch.randn(4, 2, generator=g), critic(2, torch.float32)
    d_loss = loss.discriminator_loss(d(real).squeeze(1), d(fake).squeeze(1))
    if loss.penalty is not None:
        d_loss = d_loss + loss.penalty_weight * loss.penalty(d, real, fake, generator=g)
    if loss.after_discriminator_update is not None:
        loss.after_discriminator_update(d)
    return [d_loss, loss.generator_loss(d(fake).squeeze(1))]


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


def half_eps(x, t):
    """An eps function ``(x_t, t) -> eps_hat`` (an unconditional noise model)."""
    return 0.5 * x


def contrastive_model(vocab, length, dtype):
    """A tiny CLIP-style model: a linear image encoder of (N, 1, 8, 8) images and a one-layer text encoder."""
    torch.manual_seed(0)
    image = nn.Sequential(nn.Flatten(), nn.Linear(64, 4))
    text = ck.guidance.TextEncoder(vocab, length, d_model=4, n_heads=1, n_layers=1, embed_dim=4)
    return ck.guidance.ContrastiveModel(image, text).to(dtype)


def caption_batch(i, vocab, length):
    """A minibatch (images (b, 1, 8, 8), tokens (b, L - 1), mask (b, L - 1)) of captions shorter than the
    encoder's L (so one more position is valid), each keeping at least its first token."""
    mask = i.rand(i.dims.b, length - 1) > 0.5
    mask[:, 0] = True
    return i.rand(i.dims.b, 1, 8, 8), i.ints(vocab, i.dims.b, length - 1), mask


#: The batch on which the eps functions made by the guidance factories are evaluated: x_t (4, 2) and t (4,).
PROBE_X, PROBE_T = torch.linspace(-1, 1, 8).reshape(4, 2), torch.full((4,), 7)


def on_probe(eps_fn):
    return eps_fn(PROBE_X, PROBE_T)



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


def loss_and_metrics(r):
    """A loss for coursekit.train.fit returns ``(loss, metrics)``: the loss and every metric."""
    loss, metrics = r
    return [loss, *metrics.values()]


CASES = [
    # chapter 01: divergences
    Case(ck.divergences.gaussian_kl, lambda i: ((i.randn(i.dims.b, i.dims.d), i.randn(i.dims.b, i.dims.d),
                                                 i.randn(i.dims.b, i.dims.d), i.randn(i.dims.b, i.dims.d)), {}),
         B, tensors=("mu_q", "logvar_q", "mu_p", "logvar_p")),
    *[Case(f, lambda i: ((i.probs(i.dims.b, i.dims.k), i.probs(i.dims.b, i.dims.k)), {}), B, tensors=("p", "q"),
           simplex=("p", "q"))
      for f in (ck.divergences.kl_divergence, ck.divergences.js_divergence, ck.divergences.total_variation,
                ck.divergences.cross_entropy, ck.divergences.hellinger)],
    Case(ck.divergences.entropy, lambda i: ((i.probs(i.dims.b, i.dims.k),), {}), B, free={"p": ALL}, simplex=("p",),
         tensors=("p",)),
    Case(ck.divergences.kl_from_log_probs,
         lambda i: ((torch.log_softmax(i.randn(i.dims.b, i.dims.k), -1),
                     torch.log_softmax(i.randn(i.dims.b, i.dims.k), -1)), {}), B, tensors=("log_p",),
         log_simplex=("log_p", "log_q")),
    *[Case(f, lambda i: ((joint(i, i.dims.b, i.dims.k, i.dims.d),), {}), B, free={"joint": ALL}, tensors=("joint",))
      for f in (ck.divergences.mutual_information, ck.divergences.conditional_entropy)],
    Case(ck.divergences.wasserstein1_grid,
         lambda i: ((i.probs(i.dims.b, i.dims.k), i.probs(i.dims.b, i.dims.k),
                     torch.arange(i.dims.k, dtype=i.dtype)), {}), B, simplex=("p", "q"), tensors=("p", "q", "support")),
    Case(ck.divergences.gaussian_entropy, lambda i: ((i.randn(i.dims.b, i.dims.d),), {}), B, free={"logvar": ALL},
         tensors=("logvar",)),
    Case(ck.divergences.gaussian_hellinger,
         lambda i: (tuple(i.randn(i.dims.b, i.dims.d) for _ in range(4)), {}), B,
         tensors=("mu_p", "logvar_p", "mu_q", "logvar_q")),
    Case(ck.divergences.gaussian_log_prob,
         lambda i: ((i.randn(i.dims.b, i.dims.d), i.randn(i.dims.d), i.spd(i.dims.d)), {}), B,
         free={"x": (0,)}, tensors=("x", "mean", "cov")),
    Case(ck.divergences.monte_carlo_mean, lambda i: ((i.randn(i.dims.b, i.dims.d),), {}), lambda d: (d.d,),
         free={"values": ALL}, tensors=("values",), out=first),
    # chapter 02: mixtures
    Case(ck.mixtures.gaussian_mixture_log_prob,
         lambda i: ((i.randn(i.dims.b, i.dims.d), i.randn(i.dims.k, i.dims.d), i.rand(i.dims.k) + 0.5), {}), B,
         free={"x": (0,)}, tensors=("x", "means", "stds"), bad={"sigma": [-0.1, math.nan]}),
    Case(ck.mixtures.gaussian_mixture_score,
         lambda i: ((i.randn(i.dims.b, i.dims.d), i.randn(i.dims.k, i.dims.d), i.rand(i.dims.k) + 0.5), {}), BD,
         free={"x": (0,)}, tensors=("x", "means", "stds"), bad={"sigma": [-0.1]}),
    Case(ck.mixtures.squared_distances, lambda i: ((i.randn(i.dims.b, i.dims.d), i.randn(i.dims.k, i.dims.d)), {}),
         lambda d: (d.b, d.k), free={"x": (0,), "centres": (0,)}, tensors=("x", "centres"),
         float_out=False),  # documented float64
    Case(ck.mixtures.gmm_log_prob,
         lambda i: ((i.randn(i.dims.b, i.dims.d), i.probs(i.dims.k), i.randn(i.dims.k, i.dims.d),
                     torch.stack([i.spd(i.dims.d) for _ in range(i.dims.k)])), {}), B,
         free={"x": (0,)}, simplex=("weights",), tensors=("x", "weights", "means", "covariances")),
    Case(ck.mixtures.gmm_responsibilities,
         lambda i: ((i.randn(i.dims.b, i.dims.d), i.probs(i.dims.k), i.randn(i.dims.k, i.dims.d),
                     torch.stack([i.spd(i.dims.d) for _ in range(i.dims.k)])), {}), lambda d: (d.b, d.k),
         free={"x": (0,)}, simplex=("weights",), tensors=("x", "weights", "means", "covariances")),
    Case(ck.mixtures.linear_gaussian_log_prob,
         lambda i: ((i.randn(i.dims.b, i.dims.d), i.randn(i.dims.d), i.randn(i.dims.d, 1), 0.5), {}), B,
         free={"x": (0,), "loadings": (1,)}, tensors=("x", "mean", "loadings"), bad={"noise_variance": [0.0, -1.0]}),
    Case(ck.mixtures.kmeans, lambda i: ((i.randn(i.dims.b + i.dims.k, i.dims.d), i.dims.k), {"max_iter": 5}),
         lambda d: (d.k, d.d), free={"x": ALL}, tensors=("x",), out=lambda r: r.centres, float_out=False,
         bad={"k": [0, 1000], "max_iter": [-1]}),
    Case(ck.mixtures.kmeans_objective,
         lambda i: ((i.randn(i.dims.b, i.dims.d), i.randn(i.dims.k, i.dims.d), i.ints(i.dims.k, i.dims.b)), {}),
         scalar, tensors=("x", "centres"), free={"centres": (0,)}, float_out=False,  # a python float
         bad={"labels": [AS_FLOAT, NEGATIVE, Corrupt("k", lambda y: y + 99)]}),
    Case(ck.mixtures.gmm_m_step, lambda i: ((i.randn(i.dims.b + 2, i.dims.d), i.probs(i.dims.b + 2, i.dims.k)), {}),
         None, tensors=("x", "resp"), free={"x": (1,), "resp": (1,)}, simplex=("resp",), out=list,
         float_out=False, bad={"covariance_type": ["spherical"], "reg_covar": [0.0, -1.0]}),  # float64
    Case(ck.mixtures.kmeans_plus_plus,
         lambda i: ((i.randn(i.dims.b + i.dims.k, i.dims.d), i.dims.k), {"generator": i.seeded(14)}),
         lambda d: (d.k, d.d), tensors=("x",), free={"x": ALL}, bad={"k": [0, 1000]}),
    # chapter 03: autoencoders
    Case(ck.autoencoders.reconstruction_error,
         lambda i: ((i.randn(i.dims.b, i.dims.d), i.randn(i.dims.b, i.dims.d)), {}), B, tensors=("x", "x_hat")),
    Case(ck.autoencoders.dae_score,
         lambda i: ((i.randn(i.dims.b, i.dims.d), i.randn(i.dims.b, i.dims.d), 0.3), {}), BD,
         tensors=("reconstruction", "x_noisy"), bad={"sigma": [0.0, -0.3, math.nan]}),
    Case(ck.autoencoders.mixture_posterior_mean,
         lambda i: ((i.randn(i.dims.b, i.dims.d), i.randn(i.dims.k, i.dims.d), i.rand(i.dims.k) + 0.5),
                    {"sigma": 0.3}), BD, free={"x_noisy": (0,)}, tensors=("x_noisy", "means", "stds"),
         bad={"sigma": [-0.3]}),
    Case(ck.autoencoders.sigmoid_jacobian_frobenius_sq,
         lambda i: ((i.randn(i.dims.k, i.dims.d), i.randn(i.dims.k), i.randn(i.dims.b, i.dims.d)), {}), B,
         free={"x": (0,)}, tensors=("weight", "bias", "x")),
    Case(ck.autoencoders.l1_activity_penalty, lambda i: ((i.randn(i.dims.b, i.dims.k),), {}), B, free={"h": ALL},
         tensors=("h",)),
    Case(ck.autoencoders.kl_sparsity_penalty, lambda i: ((i.rand(i.dims.b, i.dims.k), 0.05), {}), None,
         free={"h": ALL}, tensors=("h",), bad={"rho": [0.0, 1.0, -0.1]}),
    Case(ck.autoencoders.nearest_code_distance,
         lambda i: ((i.randn(i.dims.b, i.dims.d), i.randn(i.dims.b + 1, i.dims.d)), {}), B,
         free={"z": (0,), "codes": (0,)}, tensors=("z", "codes")),
    Case(ck.autoencoders.eckart_young_floor, lambda i: ((i.randn(i.dims.b + 2, i.dims.d), 1), {}), None,
         free={"x": ALL}, tensors=("x",), float_out=False, bad={"k": [-1]}),
    # the encoder is any callable: the size of an example is its business
    Case(ck.autoencoders.jacobian_frobenius_sq,
         lambda i: ((autoencoder(i.dims.d, i.dtype).encode, i.randn(i.dims.b, i.dims.d)), {}), B, tensors=("x",),
         free={"x": ALL}, examples=4),  # torch.func's Jacobians: slow to set up
    Case(ck.autoencoders.far_from_codes_fraction,
         lambda i: ((i.randn(i.dims.b, i.dims.d), i.randn(i.dims.b + 2, i.dims.d)), {"quantile": 0.9}), scalar,
         tensors=("z", "codes"), free={"z": (0,), "codes": (0,)}, out=list, float_out=False,
         bad={"quantile": [0.0, 1.5, math.nan]}),
    # the losses for coursekit.train.fit take a model and a batch (documented as x); N is free, D is the model's
    Case(ck.autoencoders.autoencoder_loss,
         lambda i: ((autoencoder(i.dims.d, i.dtype), i.randn(i.dims.b, i.dims.d)), {}), scalar, tensors=("batch",),
         free={"batch": (0,)}, aliases={"batch": "x"}, out=loss_and_metrics),
    Case(ck.autoencoders.denoising_loss,
         lambda i: ((autoencoder(i.dims.d, i.dtype), i.randn(i.dims.b, i.dims.d), 0.3), {"generator": i.seeded(1)}),
         scalar, tensors=("batch",), free={"batch": (0,)}, aliases={"batch": "x"}, out=loss_and_metrics,
         bad={"sigma": [0.0, -0.3, math.nan]}),
    Case(ck.autoencoders.contractive_loss,
         lambda i: ((tied_autoencoder(i.dims.d, i.dtype), i.randn(i.dims.b, i.dims.d), 0.1), {}), scalar,
         tensors=("batch",), free={"batch": (0,)}, aliases={"batch": "x"}, out=loss_and_metrics,
         bad={"weight": [-1.0, math.nan]}),
    Case(ck.autoencoders.sparse_loss,
         lambda i: ((autoencoder(i.dims.d, i.dtype, code_activation="sigmoid"), i.randn(i.dims.b, i.dims.d), "kl", 0.1),
                    {"rho": 0.05}), scalar, tensors=("batch",), free={"batch": (0,)}, aliases={"batch": "x"},
         out=loss_and_metrics, bad={"penalty": ["l2"], "weight": [-1.0], "rho": [0.0, 1.5]}),
    # chapter 04: VAE
    Case(ck.vae.reparameterise, lambda i: ((i.randn(i.dims.b, i.dims.d), i.randn(i.dims.b, i.dims.d),
                                            i.randn(i.dims.b, i.dims.d)), {}), BD,
         tensors=("mu", "logvar", "eps")),
    Case(ck.vae.bernoulli_log_likelihood,
         lambda i: ((i.randn(i.dims.b, i.dims.d), (i.rand(i.dims.b, i.dims.d) > 0.5).to(i.dtype)), {}), B,
         tensors=("logits", "x")),
    # a log-weight of -inf is a weight of 0, which is valid
    Case(ck.vae.log_mean_exp, lambda i: ((i.randn(i.dims.k, i.dims.b),), {}), B, free={"log_w": ALL},
         tensors=("log_w",), non_finite=(math.nan, math.inf)),
    Case(ck.vae.iwae_from_log_weights, lambda i: ((i.randn(i.dims.k, i.dims.b),), {}), B, free={"log_w": ALL},
         tensors=("log_w",), non_finite=(math.nan, math.inf)),
    Case(ck.vae.kl_per_dimension, lambda i: ((i.randn(i.dims.b, i.dims.d), i.randn(i.dims.b, i.dims.d)), {}), BD,
         tensors=("mu", "logvar")),
    Case(ck.vae.free_bits_kl, lambda i: ((i.rand(i.dims.b, i.dims.d), 0.1), {}), scalar, free={"kl_dims": ALL},
         tensors=("kl_dims",), bad={"free_bits": [-0.5, math.nan]}),
    Case(ck.vae.independent_bernoulli_log_prob,
         lambda i: (((i.rand(i.dims.b, i.dims.d) > 0.5).to(i.dtype), 0.05 + 0.9 * i.rand(i.dims.d)), {}), B,
         free={"x": (0,)}, tensors=("x", "probs")),
    Case(ck.vae.elbo,
         lambda i: ((vae_model(i.dims.d, i.dtype), (i.rand(i.dims.b, i.dims.d) > 0.5).to(i.dtype)),
                    {"generator": torch.Generator().manual_seed(3)}), B, free={"x": (0,)}, tensors=("x",),
         out=lambda r: list(r.values()), bad={"beta": [-1.0], "n_samples": [0]}),
    Case(ck.vae.latent_activity, lambda i: ((i.randn(i.dims.b, i.dims.d),), {}), lambda d: (d.d,), tensors=("mu",),
         free={"mu": ALL}),
    # Monte Carlo gradient estimators: mu and sigma are real numbers (0-dim tensors here; an integer one is valid)
    Case(ck.vae.reparam_gradient_samples,
         lambda i: ((torch.sin, torch.tensor(0.3, dtype=i.dtype), torch.tensor(0.8, dtype=i.dtype), i.dims.b),
                    {"generator": i.seeded(15)}), B, tensors=("mu", "sigma"), integers_ok=True,
         bad={"sigma": [0.0, -1.0], "n": [0]}),
    Case(ck.vae.score_function_gradient_samples,
         lambda i: ((torch.sin, torch.tensor(0.3, dtype=i.dtype), torch.tensor(0.8, dtype=i.dtype), i.dims.b),
                    {"baseline": 0.5, "generator": i.seeded(16)}), B, tensors=("mu", "sigma"),
         integers_ok=True, bad={"sigma": [0.0, -1.0], "n": [0], "baseline": [math.nan]}),
    Case(ck.vae.vae_loss, lambda i: ((vae_model(i.dims.d, i.dtype), i.binary(i.dims.b, i.dims.d)), {"beta": 0.5}),
         scalar, tensors=("batch",), free={"batch": (0,)}, aliases={"batch": "x"}, out=loss_and_metrics,
         bad={"beta": [-1.0, math.nan]}),
    Case(ck.vae.iwae_bound,
         lambda i: ((vae_model(i.dims.d, i.dtype), i.binary(i.dims.b, i.dims.d), 3), {"generator": i.seeded(2)}), B,
         tensors=("x",), free={"x": (0,)}, bad={"k": [0, 2.5], "batch_size": [0]}),
    Case(ck.vae.free_bits_loss, lambda i: ((vae_model(i.dims.d, i.dtype), i.binary(i.dims.b, i.dims.d), 0.1), {}),
         scalar, tensors=("batch",), free={"batch": (0,)}, aliases={"batch": "x"}, out=loss_and_metrics,
         bad={"free_bits": [-0.1, math.nan]}),
    # chapter 05: flows
    Case(ck.flows.standard_normal_log_prob, lambda i: ((i.randn(i.dims.b, i.dims.d),), {}), B, free={"z": ALL},
         tensors=("z",)),
    Case(ck.flows.rq_spline_knots,
         lambda i: ((i.randn(i.dims.b, i.dims.k), i.randn(i.dims.b, i.dims.k), i.randn(i.dims.b, i.dims.k - 1)),
                    {"bound": 2.0}), lambda d: (d.b, d.k + 1), tensors=("widths", "heights", "derivatives"), out=list,
         bad={"bound": [0.0, -1.0, math.nan], "min_bin_width": [-0.1, 1.0], "min_derivative": [-1.0]}),
    Case(ck.flows.rq_spline,
         lambda i: ((3 * i.randn(i.dims.b), *ck.flows.rq_spline_knots(
             i.randn(i.dims.b, i.dims.k), i.randn(i.dims.b, i.dims.k), i.randn(i.dims.b, i.dims.k - 1), 2.0)), {}),
         B, tensors=("x", "knots_x", "knots_y", "derivatives"), out=list),
    Case(ck.flows.nll_loss, lambda i: ((flow(i.dims.d, i.dtype), i.randn(i.dims.b, i.dims.d)), {}), scalar,
         tensors=("batch",), free={"batch": (0,)}, aliases={"batch": "x"}, out=loss_and_metrics),
    Case(ck.flows.digits_bits_per_dim, lambda i: ((100 * i.rand(i.dims.b), 64), {}), B, tensors=("nll_nats",),
         free={"nll_nats": ALL}, integers_ok=True, bad={"dim": [0, 2.5]}),
    # float32: the dequantisation noise is float32, documented
    Case(ck.flows.dequantized_nll,
         lambda i: ((ck.flows.realnvp(64, n_couplings=2, hidden=(8,), logit=True, seed=0),
                     i.ints(17, i.dims.b, 64).float() / 16, 2), {"generator": i.seeded(13)}), B,
         tensors=("x",), free={"x": (0,)}, float_out=False, bad={"draws": [0]}),
    # fn is any callable (1, D) -> (1, D): the size of an example is its business
    Case(ck.flows.autograd_log_det, lambda i: ((lambda v: v + 0.5 * torch.tanh(v), i.randn(i.dims.b, i.dims.d)), {}),
         B, tensors=("x",), free={"x": ALL}),
    # chapter 06: GAN
    Case(ck.gan.optimal_discriminator, lambda i: ((i.rand(i.dims.b) + 0.1, i.rand(i.dims.b) + 0.1), {}), B,
         tensors=("p_data", "p_model")),
    Case(ck.gan.gan_value, lambda i: ((i.randn(i.dims.b), i.randn(i.dims.b)), {}), scalar,
         free={"real_logits": (0,), "fake_logits": (0,)}, tensors=("real_logits", "fake_logits")),
    Case(ck.gan.discriminator_loss, lambda i: ((i.randn(i.dims.b), i.randn(i.dims.b)), {}), scalar,
         free={"real_logits": (0,), "fake_logits": (0,)}, tensors=("real_logits", "fake_logits")),
    Case(ck.gan.generator_loss, lambda i: ((i.randn(i.dims.b),), {}), scalar, free={"fake_logits": (0,)},
         tensors=("fake_logits",), bad={"kind": ["saturating_typo"]}),
    Case(ck.gan.mode_coverage, lambda i: ((i.randn(i.dims.b, i.dims.d), i.randn(i.dims.k, i.dims.d), 0.5), {}), None,
         tensors=("samples", "modes"), free={"samples": (0,), "modes": (0,)},
         out=lambda r: [r["modes_covered"], r["high_quality"], r["counts"]], float_out=False,
         bad={"std": [0.0, -1.0, math.nan], "n_std": [0.0], "min_count": [0]}),
    Case(ck.gan.spectral_norm_power_iteration,
         lambda i: ((i.randn(i.dims.k, i.dims.b, i.dims.d), 3, i.randn(i.dims.k, i.dims.b)), {}), None,
         tensors=("weight", "u"), free={"weight": (2,)}, out=list, bad={"n_iter": [0]}),  # n, the row size: free
    Case(ck.gan.generate, lambda i: ((linear_generator(i.dims.d), i.dims.b, 2), {"seed": 3}), BD,
         float_out=False, bad={"n": [0], "latent_dim": [0], "seed": [-1]}),  # the generator's float32
    # the classifier's image shape is its business; N must agree with the labels
    Case(ck.gan.fgsm_perturb,
         lambda i: ((digits_classifier().to(i.dtype), i.rand(i.dims.b, 1, 8, 8), i.ints(10, i.dims.b), 0.1), {}),
         lambda d: (d.b, 1, 8, 8), tensors=("images",), free={"images": (1, 2, 3)},
         bad={"labels": [AS_FLOAT, NEGATIVE], "epsilon": [-0.1, math.nan]}),
    Case(ck.gan.class_agreement,
         lambda i: ((i.rand(i.dims.b, 64), i.ints(10, i.dims.b)), {"classifier": digits_classifier()}), None,
         tensors=("images",), out=lambda r: [r["accuracy"], r["confidence"], r["predicted"]], float_out=False,
         integers_ok=True,  # images are converted to float32 for the classifier, as the metrics' inputs
         bad={"labels": [AS_FLOAT, NEGATIVE, Corrupt("class 10", lambda y: y + 10)]}),
    # the critic is any callable: the size of an example is its business, not the penalty's
    Case(ck.gan.r1_penalty, lambda i: ((critic(i.dims.d, i.dtype), i.randn(i.dims.b, i.dims.d)), {}), scalar,
         tensors=("real",), free={"real": ALL}),
    # an objective factory: its losses evaluated on a fixed batch
    Case(ck.gan.non_saturating_r1_loss, lambda i: ((1.0,), {}), scalar, out=objective_terms, float_out=False,
         bad={"gamma": [0.0, -1.0, math.nan, math.inf]}),
    # chapter 07: Wasserstein, f-divergences, MMD
    Case(ck.wasserstein.f_divergence, lambda i: ((i.probs(i.dims.b, i.dims.k), i.probs(i.dims.b, i.dims.k)), {}), B,
         simplex=("p", "q"), tensors=("p", "q"), bad={"name": ["kullback"]}),
    *[Case(f, lambda i: ((i.randn(i.dims.b), i.randn(i.dims.b + 1)), {}), scalar, free={"real_v": (0,), "fake_v": (0,)},
           tensors=("real_v", "fake_v"), bad={"divergence": ["kullback"]})
      for f in (ck.wasserstein.f_gan_value, ck.wasserstein.f_gan_discriminator_loss)],
    Case(ck.wasserstein.f_gan_generator_loss, lambda i: ((i.randn(i.dims.b),), {}), scalar, free={"fake_v": (0,)},
         tensors=("fake_v",), bad={"divergence": ["kullback"]}),
    Case(ck.wasserstein.ssgan_discriminator_loss,
         lambda i: ((i.randn(i.dims.b, i.dims.k), torch.arange(i.dims.b) % i.dims.k, i.randn(i.dims.b + 1, i.dims.k),
                     i.randn(i.dims.b + 2, i.dims.k)), {}), scalar,
         free={"real_logits": (0,), "fake_logits": (0,)}, tensors=("labelled_logits", "real_logits", "fake_logits")),
    Case(ck.wasserstein.density_ratio_from_logits, lambda i: ((i.randn(i.dims.b),), {}), B, free={"logits": (0,)},
         tensors=("logits",)),
    Case(ck.wasserstein.wasserstein1_1d, lambda i: ((i.randn(i.dims.b), i.randn(i.dims.b + 1)), {}), scalar,
         free={"x": (0,), "y": (0,)}, tensors=("x", "y")),
    Case(ck.wasserstein.wasserstein_critic_loss, lambda i: ((i.randn(i.dims.b), i.randn(i.dims.b)), {}), scalar,
         free={"real_scores": (0,), "fake_scores": (0,)}, tensors=("real_scores", "fake_scores")),
    Case(ck.wasserstein.wasserstein_generator_loss, lambda i: ((i.randn(i.dims.b),), {}), scalar,
         free={"fake_scores": (0,)}, tensors=("fake_scores",)),
    Case(ck.wasserstein.gradient_penalty,
         lambda i: ((critic(i.dims.d, i.dtype), i.randn(i.dims.b, i.dims.d), i.randn(i.dims.b, i.dims.d)),
                    {"generator": torch.Generator().manual_seed(0)}), scalar, tensors=("real", "fake")),
    *[Case(f, lambda i: ((i.randn(i.dims.b, i.dims.d), i.randn(i.dims.b + 1, i.dims.d)), {"bandwidths": (1.0, 2.0)}),
           scalar, free={"x": (0,), "y": (0,)}, tensors=("x", "y"), bad={"bandwidths": [(0.0,), (-1.0,), ()]})
      for f in (ck.wasserstein.mmd2_unbiased, ck.wasserstein.mmd2_biased)],
    Case(ck.wasserstein.gaussian_kernel_matrix,
         lambda i: ((i.randn(i.dims.b, i.dims.d), i.randn(i.dims.b + 1, i.dims.d)), {"bandwidths": (1.0,)}),
         lambda d: (d.b, d.b + 1), free={"x": (0,), "y": (0,)}, tensors=("x", "y"), bad={"bandwidths": [(0.0,)]}),
    Case(ck.wasserstein.ssgan_real_logit, lambda i: ((i.randn(i.dims.b, i.dims.k),), {}), B,
         free={"class_logits": ALL}, tensors=("class_logits",)),
    Case(ck.wasserstein.feature_matching_loss,
         lambda i: ((i.randn(i.dims.b, i.dims.d), i.randn(i.dims.b + 1, i.dims.d)), {}), scalar,
         free={"real_features": (0,), "fake_features": (0,)}, tensors=("real_features", "fake_features")),
    Case(ck.wasserstein.median_bandwidths,
         lambda i: ((i.randn(i.dims.b, i.dims.d), i.randn(i.dims.b + 1, i.dims.d)), {}),
         scalar, tensors=("x", "y"), free={"x": (0,), "y": (0,)}, float_out=False),  # python floats
    Case(ck.wasserstein.wgan_gp_loss, lambda i: ((10.0,), {}), scalar, out=objective_terms, float_out=False,
         bad={"gp_weight": [0.0, -1.0, math.nan]}),
    Case(ck.wasserstein.wgan_clip_loss, lambda i: ((0.01,), {}), scalar, out=objective_terms, float_out=False,
         bad={"clip": [0.0, -0.01, math.inf]}),
    Case(ck.wasserstein.f_variational_bound,
         lambda i: ((i.randn(i.dims.b, i.dims.k), i.probs(i.dims.b, i.dims.k), i.probs(i.dims.b, i.dims.k)),
                    {"name": "kl"}), B, tensors=("t", "p", "q"), simplex=("p", "q"), bad={"name": ["kullback"]}),
    # chapter 08: diffusion
    Case(ck.diffusion.q_sample, lambda i: ((i.randn(i.dims.b, 1, 2, 2), 3, i.randn(i.dims.b, 1, 2, 2), i.abar()), {}),
         lambda d: (d.b, 1, 2, 2), free={"alphas_cumprod": (0,)}, tensors=("x0", "noise"), bad={"t": [-1, 50, 2.5]}),
    Case(ck.diffusion.q_posterior_mean_variance,
         lambda i: ((i.randn(i.dims.b, 1, 2, 2), i.randn(i.dims.b, 1, 2, 2), 3, i.abar()), {}),
         lambda d: (d.b, 1, 2, 2), free={"alphas_cumprod": (0,)}, tensors=("x0", "xt"), out=first, bad={"t": [50]}),
    Case(ck.diffusion.predict_x0_from_eps,
         lambda i: ((i.randn(i.dims.b, 1, 2, 2), 3, i.randn(i.dims.b, 1, 2, 2), i.abar()), {}),
         lambda d: (d.b, 1, 2, 2), free={"alphas_cumprod": (0,)}, tensors=("xt", "eps"), bad={"t": [-1]}),
    Case(ck.diffusion.ddpm_step,
         lambda i: ((i.randn(i.dims.b, 1, 2, 2), i.randn(i.dims.b, 1, 2, 2), 3, i.abar()),
                    {"noise": i.randn(i.dims.b, 1, 2, 2)}),
         lambda d: (d.b, 1, 2, 2), free={"alphas_cumprod": (0,)}, tensors=("eps", "xt"),
         bad={"variance": ["medium"], "t": [50]}),
    Case(ck.diffusion.ddim_step,
         lambda i: ((i.randn(i.dims.b, 1, 2, 2), i.randn(i.dims.b, 1, 2, 2), 5, 2, i.abar()), {}),
         lambda d: (d.b, 1, 2, 2), free={"alphas_cumprod": (0,)}, tensors=("eps", "xt"), bad={"eta": [-0.5, math.nan]}),
    Case(ck.diffusion.l_simple, lambda i: ((i.randn(i.dims.b, 1, 2, 2), i.randn(i.dims.b, 1, 2, 2)), {}), B,
         tensors=("eps_hat", "eps")),
    Case(ck.diffusion.normal_kl, lambda i: ((i.randn(i.dims.b, i.dims.d), i.rand(i.dims.b, i.dims.d) + 0.1,
                                             i.randn(i.dims.b, i.dims.d), i.rand(i.dims.b, i.dims.d) + 0.1), {}), BD,
         tensors=("mean1", "var1", "mean2", "var2")),
    Case(ck.diffusion.discretized_gaussian_log_likelihood,
         lambda i: ((-1 + 2 * torch.randint(0, 17, (i.dims.b, 1, 2, 2), generator=i.g).to(i.dtype) / 16,
                     i.randn(i.dims.b, 1, 2, 2), -1 + 0.1 * i.randn(i.dims.b, 1, 2, 2)), {"levels": 17}),
         # float64, documented; mean and log_scale broadcast to x, so x's size-1 channel may grow
         lambda d: (d.b, 1, 2, 2), free={"x": (1,)}, tensors=("x", "mean", "log_scale"), float_out=False,
         bad={"levels": [1]}),
    Case(ck.diffusion.snr, lambda i: ((i.abar(),), {}), lambda d: (50,), free={"alphas_cumprod": ALL},
         tensors=("alphas_cumprod",), float_out=False),  # documented float64
    Case(ck.diffusion.q_step,
         lambda i: ((i.randn(i.dims.b, 1, 2, 2), 3, i.randn(i.dims.b, 1, 2, 2),
                     ck.diffusion.beta_schedule("linear", 50, dtype=i.dtype)), {}),
         lambda d: (d.b, 1, 2, 2), tensors=("x_prev", "noise", "betas"), free={"betas": (0,)},
         bad={"t": [-1, 50, 2.5]}),
    # the noise model is any callable model(x_t, t): the image shape is its business; T is free
    Case(ck.diffusion.diffusion_loss,
         lambda i: ((Denoiser(i.dtype), 2 * i.rand(i.dims.b, 1, 2, 2) - 1, i.abar()), {"generator": i.seeded(3)}),
         scalar, tensors=("x0", "alphas_cumprod"), free={"x0": ALL, "alphas_cumprod": (0,)},
         bad={"time_sampler": ["sobol"]}),
    Case(ck.diffusion.vlb_terms,
         lambda i: ((Denoiser(i.dtype), -1 + 2 * i.ints(17, i.dims.b, 1, 2, 2).to(i.dtype) / 16, i.abar(10, "cosine")),
                    {"levels": 17, "generator": i.seeded(6)}),
         B, tensors=("x0", "alphas_cumprod"), free={"x0": ALL, "alphas_cumprod": (0,)},
         out=lambda r: [r["prior"], r["decoder"], r["total"]], float_out=False, bad={"levels": [1]}),  # float64
    # the samplers draw float32 noise: a float32 model, the schedule in the drawn dtype
    Case(ck.diffusion.ddpm_sample,
         lambda i: ((Denoiser(), (i.dims.b, 1, 2, 2), i.abar(10, "cosine")), {"generator": i.seeded(4)}),
         lambda d: (d.b, 1, 2, 2), tensors=("alphas_cumprod",), free={"alphas_cumprod": (0,)},
         float_out=False, bad={"variance": ["medium"], "keep": [(10,), (-1,)]}),  # documented float32
    Case(ck.diffusion.ddim_sample,
         lambda i: ((Denoiser(), (i.dims.b, 1, 2, 2), i.abar(10, "cosine"), 4),
                    {"eta": 0.5, "generator": i.seeded(5), "x_T": i.randn(i.dims.b, 1, 2, 2).float()}),
         lambda d: (d.b, 1, 2, 2), tensors=("alphas_cumprod", "x_T"), free={"alphas_cumprod": (0,)},
         float_out=False, bad={"n_steps": [0, 11], "eta": [-0.5, math.nan]}),  # documented float32
    # schedules: any T; float64, documented (a weight of index 0 is inf by definition, so it is left out)
    Case(ck.diffusion.alphas_cumprod_from_betas,
         lambda i: ((ck.diffusion.beta_schedule("linear", 50, dtype=i.dtype),), {}), lambda d: (50,),
         tensors=("betas",), free={"betas": ALL}, float_out=False),
    Case(ck.diffusion.log_snr, lambda i: ((i.abar(),), {}), lambda d: (50,), tensors=("alphas_cumprod",),
         free={"alphas_cumprod": ALL}, float_out=False),
    Case(ck.diffusion.vlb_weights, lambda i: ((i.abar(),), {}), lambda d: (49,), out=lambda r: r[1:],
         tensors=("alphas_cumprod",), free={"alphas_cumprod": ALL}, float_out=False),
    Case(ck.diffusion.ddim_loss_weights, lambda i: ((i.abar(), 0.5), {}), lambda d: (49,), out=lambda r: r[1:],
         tensors=("alphas_cumprod",), free={"alphas_cumprod": ALL}, float_out=False, bad={"eta": [0.0, -1.0]}),
    Case(ck.diffusion.ddim_sigma, lambda i: ((i.abar(), 5, 2, 0.5), {}), lambda d: (1,), tensors=("alphas_cumprod",),
         free={"alphas_cumprod": ALL}, float_out=False, bad={"eta": [-0.1, math.nan], "t_prev": [5, -2], "t": [50]}),
    Case(ck.diffusion.predict_eps_from_x0,
         lambda i: ((i.randn(i.dims.b, 1, 2, 2), 3, i.randn(i.dims.b, 1, 2, 2), i.abar()), {}),
         lambda d: (d.b, 1, 2, 2), tensors=("xt", "x0"), free={"alphas_cumprod": (0,)}, bad={"t": [-1, 50]}),
    Case(ck.diffusion.p_mean_variance,
         lambda i: ((i.randn(i.dims.b, 1, 2, 2), i.randn(i.dims.b, 1, 2, 2), 3, i.abar()), {"variance": "large"}),
         lambda d: (d.b, 1, 2, 2), tensors=("eps", "xt"), free={"alphas_cumprod": (0,)}, out=lambda r: [r[0], r[2]],
         bad={"variance": ["medium"], "t": [50]}),
    Case(ck.diffusion.ddim_posterior_mean_variance,
         lambda i: ((i.randn(i.dims.b, 1, 2, 2), i.randn(i.dims.b, 1, 2, 2), 5, 2, i.abar()), {"eta": 0.5}),
         lambda d: (d.b, 1, 2, 2), tensors=("x0", "xt"), free={"alphas_cumprod": (0,)}, out=first,
         bad={"eta": [-0.5, 5.0], "t_prev": [5]}),
    Case(ck.diffusion.simulate_forward_chain,
         lambda i: ((i.randn(i.dims.b, 1, 2, 2), ck.diffusion.beta_schedule("linear", 50, dtype=i.dtype), (0, 10, 49)),
                    {"generator": i.seeded(11)}), lambda d: (d.b, 1, 2, 2), tensors=("x0", "betas"),
         free={"x0": ALL, "betas": (0,)}, out=values_of, bad={"keep": [(50,), (-1,)]}),
    Case(ck.diffusion.simulate_ddim_forward,
         lambda i: ((i.randn(i.dims.b, 1, 2, 2), i.abar(), [40, 20, 5]), {"eta": 0.5, "generator": i.seeded(12)}),
         lambda d: (d.b, 1, 2, 2), tensors=("x0", "alphas_cumprod"), free={"x0": ALL, "alphas_cumprod": (0,)},
         out=values_of, bad={"timesteps": [[5, 20], [50, 3]], "eta": [-1.0]}),
    # chapter 09: score matching
    Case(ck.score.dsm_target, lambda i: ((i.randn(i.dims.b, i.dims.d), i.randn(i.dims.b, i.dims.d), 0.5), {}), BD,
         tensors=("x", "x_tilde"), bad={"sigma": [0.0, -1.0, math.nan]}),
    Case(ck.score.denoising_score_matching_loss,
         lambda i: ((score_fn, i.randn(i.dims.b, i.dims.d), 0.5), {"noise": i.randn(i.dims.b, i.dims.d)}), scalar,
         tensors=("x",), bad={"sigma": [0.0, -1.0]}),
    Case(ck.score.hyvarinen_loss, lambda i: ((score_fn, i.randn(i.dims.b, i.dims.d)), {}), scalar, free={"x": ALL},
         tensors=("x",)),
    Case(ck.score.sliced_score_matching_loss,
         lambda i: ((score_fn, i.randn(i.dims.b, i.dims.d)), {"generator": torch.Generator().manual_seed(1)}), scalar,
         free={"x": ALL}, tensors=("x",), bad={"n_projections": [0, -1], "distribution": ["cauchy"]}),
    Case(ck.score.ncsn_loss,
         lambda i: ((lambda x, s: score_fn(x) / s.reshape(-1, 1), i.randn(i.dims.b, i.dims.d),
                     torch.tensor([1.0, 0.5, 0.1], dtype=i.dtype)), {"generator": torch.Generator().manual_seed(2)}),
         scalar, free={"x": ALL, "sigmas": ALL}, tensors=("x",)),
    Case(ck.score.langevin_sample,
         lambda i: ((score_fn, i.randn(i.dims.b, i.dims.d), 0.01, 3), {"generator": torch.Generator().manual_seed(4)}),
         BD, free={"x0": ALL}, tensors=("x0",), bad={"step_size": [0.0, -0.1], "n_steps": [0]}),
    Case(ck.score.annealed_langevin_sample,
         lambda i: ((lambda x, s: score_fn(x) / s.reshape(-1, 1), i.randn(i.dims.b, i.dims.d),
                     torch.tensor([1.0, 0.3], dtype=i.dtype), 0.01, 2),
                    {"generator": torch.Generator().manual_seed(5)}),
         BD, free={"x0": ALL, "sigmas": ALL}, tensors=("x0",), bad={"step_size": [0.0], "n_steps_each": [0]}),
    Case(ck.score.gaussian_mmd2,
         lambda i: ((i.randn(i.dims.b, i.dims.d), i.randn(i.dims.b + 1, i.dims.d)), {"bandwidths": (0.5, 1.0)}),
         scalar, tensors=("x", "y"), free={"x": (0,), "y": (0,)}, float_out=False,
         bad={"bandwidths": [(0.0,), (-1.0,), ()]}),
    Case(ck.score.jacobian_trace, lambda i: ((score_fn, i.randn(i.dims.b, i.dims.d)), {}), B, tensors=("x",),
         free={"x": ALL}),
    Case(ck.score.mmd_permutation_test,
         lambda i: ((i.randn(i.dims.b, i.dims.d), i.randn(i.dims.b + 1, i.dims.d), 20), {"bandwidths": (0.5, 1.0)}),
         scalar, tensors=("x", "y"), free={"x": (0,), "y": (0,)}, out=values_of, float_out=False,
         bad={"n_permutations": [0], "bandwidths": [(0.0,)], "seed": [-1]}),
    # chapter 10: flow matching
    Case(ck.flow_matching.interpolate, lambda i: ((i.randn(i.dims.b, i.dims.d), i.randn(i.dims.b, i.dims.d), 0.3), {}),
         BD, tensors=("x0", "x1"), bad={"t": [1.5, -0.5, math.nan], "path": ["straight"]}),
    Case(ck.flow_matching.cfm_target, lambda i: ((i.randn(i.dims.b, i.dims.d), i.randn(i.dims.b, i.dims.d), 0.3),
                                                 {"path": "ot", "sigma_min": 0.1}),
         BD, tensors=("x0", "x1"), bad={"t": [2.0], "sigma_min": [1.0, -0.1]}),
    Case(ck.flow_matching.cfm_loss, lambda i: ((lambda x, t: score_fn(x), i.randn(i.dims.b, i.dims.d)),
                                               {"generator": torch.Generator().manual_seed(6)}),
         scalar, free={"x1": ALL}, tensors=("x1",), bad={"path": ["straight"]}),
    Case(ck.flow_matching.euler_step, lambda i: ((lambda x, t: score_fn(x), i.randn(i.dims.b, i.dims.d), 0.2, 0.1), {}),
         BD, free={"x": ALL}, tensors=("x",), bad={"dt": [math.nan]}),
    Case(ck.flow_matching.heun_step, lambda i: ((lambda x, t: score_fn(x), i.randn(i.dims.b, i.dims.d), 0.2, 0.1), {}),
         BD, free={"x": ALL}, tensors=("x",), bad={"dt": [math.inf]}),
    Case(ck.flow_matching.ode_solve, lambda i: ((lambda x, t: score_fn(x), i.randn(i.dims.b, i.dims.d), 3), {}),
         BD, free={"x": ALL}, tensors=("x",), bad={"n_steps": [0], "method": ["rk4"]}),
    Case(ck.flow_matching.hutchinson_divergence,
         lambda i: ((lambda x, t: score_fn(x), i.randn(i.dims.b, i.dims.d), 0.5),
                    {"generator": torch.Generator().manual_seed(7)}),
         B, free={"x": ALL}, tensors=("x",), bad={"n_probes": [0], "probe": ["uniform"]}),
    Case(ck.flow_matching.convert_prediction,
         lambda i: ((i.randn(i.dims.b, i.dims.d), i.randn(i.dims.b, i.dims.d), 0.6, 0.8),
                    {"source": "eps", "target": "data"}),
         BD, tensors=("pred", "x_t"), bad={"source": ["noise"], "target": ["x0"]}),
    Case(ck.flow_matching.reverse_sde_sample,
         lambda i: ((ck.flow_matching.VPSDE(), lambda x, t: -x, i.randn(i.dims.b, i.dims.d), 3),
                    {"generator": i.seeded(7)}), BD, tensors=("x",), free={"x": ALL},
         bad={"n_steps": [0], "t_end": [1.0, -0.1], "sde": ["vp"]}),
    Case(ck.flow_matching.probability_flow_sample,
         lambda i: ((ck.flow_matching.VPSDE(), lambda x, t: -x, i.randn(i.dims.b, i.dims.d), 3), {}), BD,
         tensors=("x",), free={"x": ALL}, bad={"n_steps": [0], "t_end": [1.0], "method": ["rk4"], "sde": ["vp"]}),
    Case(ck.flow_matching.ode_log_likelihood,
         lambda i: ((lambda x, t: score_fn(x), i.randn(i.dims.b, i.dims.d)),
                    {"n_steps": 3, "estimator": "hutchinson", "n_probes": 2, "generator": i.seeded(8)}), B,
         tensors=("x",), free={"x": ALL}, out=lambda r: [r["log_prob"], r["base"], r["delta"]],
         bad={"n_steps": [0], "method": ["rk4"], "estimator": ["trace"], "n_probes": [0], "probe": ["uniform"],
              "t_data": [math.nan]}),
    Case(ck.flow_matching.conditional_velocity,
         lambda i: ((i.randn(i.dims.b, i.dims.d), i.randn(i.dims.b, i.dims.d), 0.3), {}), BD, tensors=("x", "x1"),
         bad={"t": [1.0, 1.5, math.nan], "path": ["straight"]}),  # sigma_1 = 0 on the linear path
    Case(ck.flow_matching.divergence, lambda i: ((lambda x, t: score_fn(x), i.randn(i.dims.b, i.dims.d), 0.5), {}), B,
         tensors=("x",), free={"x": ALL}, bad={"t": [math.nan]}),
    Case(ck.flow_matching.hutchinson_variance,
         lambda i: ((i.randn(i.dims.b, i.dims.d, i.dims.d),), {"probe": "gaussian"}),
         B, tensors=("jacobian",), free={"jacobian": (0,)}, bad={"probe": ["uniform"]}),
    Case(ck.flow_matching.mixture_marginal,
         lambda i: ((i.randn(i.dims.b, i.dims.d), 0.6, 0.8, i.randn(i.dims.k, i.dims.d), i.rand(i.dims.k) + 0.5,
                     i.probs(i.dims.k)), {"dalpha": 1.0, "dsigma": -1.0}), None,
         tensors=("x", "means", "stds", "weights"), free={"x": (0,)}, simplex=("weights",), out=values_of,
         bad={"alpha": [-0.1, math.nan], "sigma": [-0.1]}),
    Case(ck.flow_matching.straightness, lambda i: (([i.randn(i.dims.b, i.dims.d) for _ in range(4)],), {}), scalar,
         tensors=("states[0]", "states[3]")),
    Case(ck.flow_matching.path_coefficients, lambda i: (("ot", i.rand(i.dims.b)), {"sigma_min": 0.1}), B,
         tensors=("t",), free={"t": ALL}, out=list,
         bad={"path": ["straight"], "sigma_min": [1.0, -0.1], "t": [Corrupt("t > 1", lambda t: t + 1.5)]}),
    # chapter 11: autoregressive models and discrete tokens
    Case(ck.autoregressive.vq_assign, lambda i: ((i.randn(i.dims.b, i.dims.d), i.randn(i.dims.k, i.dims.d)), {}),
         lambda d: (d.b,), free={"z": (0,), "codebook": (0,)}, tensors=("z", "codebook"),
         float_out=False),  # int64 codes
    Case(ck.autoregressive.straight_through, lambda i: ((i.randn(i.dims.b, i.dims.d), i.randn(i.dims.b, i.dims.d)), {}),
         BD, tensors=("z_e", "z_q")),
    Case(ck.autoregressive.sample_next,
         lambda i: ((i.randn(i.dims.b, i.dims.k),), {"top_k": 2, "generator": torch.Generator().manual_seed(6)}),
         lambda d: (d.b,), free={"logits": ALL}, tensors=("logits",), float_out=False,
         non_finite=(math.nan,), bad={"temperature": [0.0, -1.0], "top_k": [0]}),  # -inf logits: allowed
    # token ids are integer tensors: a float or out-of-range one is a bad value; L is the model's seq_len
    Case(ck.autoregressive.nll_loss,
         lambda i: ((transformer(i.dims.k, i.dims.d, i.dtype), i.ints(i.dims.k, i.dims.b, i.dims.d)), {}), scalar,
         free={"tokens": (0,)}, out=loss_and_metrics, bad={"tokens": [AS_FLOAT, NEGATIVE, OUT_OF_VOCABULARY]}),
    Case(ck.autoregressive.sample,
         lambda i: ((transformer(i.dims.k, i.dims.d, i.dtype), i.dims.b),
                    {"prefix": i.ints(i.dims.k, i.dims.b, 1), "top_k": 2, "generator": i.seeded(9)}),
         BD, free={"prefix": (1,)}, float_out=False,  # int64 tokens; a prefix of any length P <= L
         bad={"n": [0], "temperature": [0.0], "top_k": [0], "prefix": [AS_FLOAT, OUT_OF_VOCABULARY],
              "token_range": [(3, 2), (-1, 2), (0, 99)]}),
    Case(ck.autoregressive.bits_per_dim, lambda i: ((100 * i.rand(i.dims.b), 64), {}), B, tensors=("nll_nats",),
         free={"nll_nats": ALL}, integers_ok=True, bad={"dim": [0, 2.5]}),
    Case(ck.autoregressive.vqvae_loss, lambda i: ((vqvae(i.dtype), i.rand(i.dims.b, 1, 8, 8)), {}), scalar,
         tensors=("x",), free={"x": (0,)}, out=loss_and_metrics),
    Case(ck.autoregressive.sequence_log_prob,
         lambda i: ((transformer(i.dims.k, i.dims.d, i.dtype), i.ints(i.dims.k, i.dims.b, i.dims.d)),
                    {"weights": i.rand(i.dims.d)}), B, tensors=("weights",), free={"tokens": (0,)},
         bad={"tokens": [AS_FLOAT, NEGATIVE, OUT_OF_VOCABULARY]}),
    Case(ck.autoregressive.marginal_nll,
         lambda i: ((i.probs(i.dims.d, i.dims.k), i.ints(i.dims.k, i.dims.b, i.dims.d)), {}),
         B, tensors=("probs",), simplex=("probs",), free={"probs": (1,), "tokens": (0,)},  # V above the ids: valid
         bad={"tokens": [AS_FLOAT, NEGATIVE, OUT_OF_VOCABULARY]}),
    # the k kept logits (the rest is -inf by definition)
    Case(ck.autoregressive.top_k_logits, lambda i: ((i.randn(i.dims.b, i.dims.k), 2), {}), lambda d: (d.b, 2),
         tensors=("logits",), free={"logits": ALL}, out=lambda r: r.topk(2).values, non_finite=(math.nan,),
         bad={"k": [0, 99]}),
    Case(ck.autoregressive.code_usage, lambda i: ((i.ints(i.dims.k, i.dims.b, i.dims.d), i.dims.k), {}), None,
         free={"indices": ALL}, out=lambda r: [r["used"], r["fraction"], r["perplexity"], r["counts"]],
         float_out=False, bad={"indices": [AS_FLOAT, NEGATIVE, OUT_OF_VOCABULARY], "n_codes": [0]}),
    Case(ck.autoregressive.pixel_marginals,
         lambda i: ((i.ints(i.dims.k, i.dims.b, i.dims.d), i.dims.k), {"pseudocount": 0.5}), lambda d: (d.d, d.k),
         free={"tokens": ALL}, float_out=False,  # float32, documented
         bad={"tokens": [AS_FLOAT, NEGATIVE, OUT_OF_VOCABULARY], "vocab_size": [0], "pseudocount": [-1.0, math.nan]}),
    # chapter 12: guidance, contrastive image-text models, image-to-image translation
    Case(ck.guidance.classifier_guided_eps,
         lambda i: ((i.randn(i.dims.b, 1, 2, 2), i.randn(i.dims.b, 1, 2, 2), 3, i.abar(), 2.0), {}),
         lambda d: (d.b, 1, 2, 2), tensors=("eps", "grad_log_prob"), free={"alphas_cumprod": (0,)},  # any T
         bad={"w": [math.nan, math.inf], "t": [-1, 50]}),
    Case(ck.guidance.classifier_free_eps,
         lambda i: ((i.randn(i.dims.b, i.dims.d), i.randn(i.dims.b, i.dims.d), 1.5), {}), BD,
         tensors=("eps_cond", "eps_uncond"), bad={"w": [math.nan]}),
    # the classifier is any callable (x, t) -> logits: the size of an example is its business; N must agree with y
    Case(ck.guidance.class_log_prob_grad,
         lambda i: ((linear_classifier(i.dims.d, i.dims.k, i.dtype), i.randn(i.dims.b, i.dims.d), None,
                     torch.arange(i.dims.b) % i.dims.k), {}), BD, tensors=("x",), free={"x": (1,)}),
    Case(ck.guidance.conditional_diffusion_loss,
         lambda i: ((label_model, i.randn(i.dims.b, i.dims.d), torch.arange(i.dims.b) % 3, i.abar()),
                    {"null": torch.tensor(3), "p_uncond": 0.5, "generator": torch.Generator().manual_seed(8)}),
         scalar, tensors=("x0",), free={"x0": (1,), "alphas_cumprod": (0,)}, bad={"p_uncond": [-0.1, 1.5]}),
    Case(ck.guidance.noise_aware_classifier_loss,
         lambda i: ((linear_classifier(i.dims.d, i.dims.k, i.dtype),
                     (i.randn(i.dims.b, i.dims.d), torch.arange(i.dims.b) % i.dims.k), i.abar()),
                    {"generator": i.seeded(17)}), scalar, tensors=("batch[0]", "alphas_cumprod"),
         free={"batch[0]": (1,), "alphas_cumprod": (0,)},  # the classifier's example size; any T
         aliases={"batch[0]": "x0", "batch[1]": "y"}, out=loss_and_metrics,
         float_out=False,  # the accuracy is a float32 share
         bad={"batch[1]": [AS_FLOAT, NEGATIVE, Corrupt("class k", lambda y: y + 99)]}),
    # factories of eps functions: their tensors are checked when made; the eps function runs on a probe batch
    Case(ck.guidance.classifier_free_guidance,
         lambda i: ((label_model, torch.arange(4) % 3, torch.tensor(3), 1.5), {}), lambda d: (4, 2),
         free={"cond": ALL}, out=on_probe, float_out=False,  # the probe is float32; cond sets N
         bad={"w": [math.nan, math.inf], "null": [Corrupt("(1, 1)", lambda z: z.reshape(1, 1)),
                                                   Corrupt("two", lambda z: (z, z))]}),
    Case(ck.guidance.classifier_guidance,
         lambda i: ((half_eps, linear_classifier(2, 3, torch.float32), torch.arange(4) % 3, 2.0, i.abar()), {}),
         lambda d: (4, 2), tensors=("alphas_cumprod",), free={"y": ALL, "alphas_cumprod": (0,)}, out=on_probe,
         float_out=False, bad={"w": [math.nan, math.inf]}),  # the probe is float32; y is checked against x_t
    Case(ck.guidance.thresholded, lambda i: ((half_eps, i.abar(), 0.9), {}), lambda d: (4, 2),
         tensors=("alphas_cumprod",), free={"alphas_cumprod": (0,)}, out=on_probe, float_out=False,
         bad={"percentile": [-0.1, 1.5, math.nan]}),
    Case(ck.guidance.dynamic_threshold, lambda i: ((3 * i.randn(i.dims.b, i.dims.d), 0.9), {}), BD, tensors=("x0",),
         free={"x0": ALL},
         bad={"percentile": [-0.1, 1.5]}),
    Case(ck.guidance.contrastive_logits,
         lambda i: ((i.randn(i.dims.b, i.dims.d), i.randn(i.dims.b + 1, i.dims.d), 0.1), {}),
         lambda d: (d.b, d.b + 1), tensors=("u", "v"), free={"u": (0,), "v": (0,)},
         bad={"temperature": [0.0, -1.0, math.nan]}),
    *[Case(f, lambda i: ((i.randn(i.dims.b, i.dims.b),), {}), scalar, tensors=("logits",))
      for f in (ck.guidance.info_nce, ck.guidance.symmetric_info_nce)],
    # the image encoder is any module: the image shape is its business; N must agree with the captions
    Case(ck.guidance.contrastive_loss,
         lambda i: ((contrastive_model(i.dims.k + 2, 4, i.dtype), caption_batch(i, i.dims.k + 2, 4)), {}), scalar,
         tensors=("batch[0]",), free={"batch[0]": (1, 2, 3), "batch[1]": (1,), "batch[2]": (1,)},
         aliases={"batch[0]": "x", "batch[1]": "tokens", "batch[2]": "mask"}, out=loss_and_metrics,
         bad={"batch[1]": [AS_FLOAT, NEGATIVE, OUT_OF_VOCABULARY],
              "batch[2]": [Corrupt("no token", lambda m: m & False), Corrupt("float", lambda m: m.float())]}),
    Case(ck.guidance.zero_shot_classify,
         lambda i: ((i.randn(i.dims.b, i.dims.d), i.randn(2 * i.dims.k, i.dims.d),
                     torch.arange(2 * i.dims.k) % i.dims.k, i.dims.k), {}), B, tensors=("image_emb", "prompt_emb"),
         free={"image_emb": (0,)}, float_out=False, bad={"n_classes": [0]}),  # int64 classes
    Case(ck.guidance.retrieval_accuracy,
         lambda i: ((i.randn(i.dims.b, i.dims.d), i.randn(i.dims.k, i.dims.d), torch.arange(i.dims.b) % i.dims.k), {}),
         scalar, tensors=("query_emb", "key_emb"), float_out=False,  # a python float
         free={"key_emb": (0,)}),  # M keys: the targets index them, more keys are valid
    Case(ck.guidance.thicken_strokes, lambda i: ((i.rand(i.dims.b, 1, 3, i.dims.d),), {"width": 2}),
         lambda d: (d.b, 1, 3, d.d), tensors=("x",), free={"x": (0, 2, 3)}, bad={"width": [0]}),
    Case(ck.guidance.translation_scores,
         lambda i: ((i.rand(i.dims.b, 1, 8, 8), i.rand(i.dims.b, 1, 8, 8), i.ints(10, i.dims.b)),
                    {"classifier": digits_classifier()}), None, tensors=("translated", "target"), out=values_of,
         float_out=False,  # python floats
         bad={"labels": [AS_FLOAT, NEGATIVE, Corrupt("class 10", lambda y: y + 10)]}),
    Case(ck.guidance.pix2pix_generator_loss,
         lambda i: ((i.randn(i.dims.b, 4), i.rand(i.dims.b, 1, 2, 2), i.rand(i.dims.b, 1, 2, 2)), {"l1_weight": 10.0}),
         scalar, tensors=("fake_logits", "fake", "target"), free={"fake_logits": ALL},
         bad={"l1_weight": [-1.0, math.nan]}),
    Case(ck.guidance.cycle_consistency_loss,
         lambda i: ((torch.tanh, half, i.randn(i.dims.b, i.dims.d), i.randn(i.dims.b + 1, i.dims.d)), {}), scalar,
         tensors=("a", "b"), free={"a": ALL, "b": ALL}),
    # chapter 14: disentanglement
    Case(ck.disentangle.adain,
         lambda i: ((i.randn(i.dims.b, i.dims.d, 3, 3), i.randn(i.dims.b, i.dims.d), i.randn(i.dims.b, i.dims.d)), {}),
         lambda d: (d.b, d.d, 3, 3), free={"x": (2, 3)}, tensors=("x", "scale", "bias"),
         bad={"eps": [0.0, -1.0]}),
    Case(ck.disentangle.fade_in, lambda i: ((i.randn(i.dims.b, i.dims.d), i.randn(i.dims.b, i.dims.d), 0.3), {}), BD,
         tensors=("old", "new"), bad={"alpha": [-0.1, 1.5]}),
    Case(ck.disentangle.infogan_mi_lower_bound,
         lambda i: ((i.randn(i.dims.b, i.dims.k), torch.randint(i.dims.k, (i.dims.b,), generator=i.g)), {}), scalar,
         free={"q_logits": (1,)}, tensors=("q_logits",)),
    Case(ck.disentangle.beta_vae_loss,
         lambda i: ((vae_model(i.dims.d, i.dtype), i.binary(i.dims.b, i.dims.d), 4.0), {"reconstruction": "mean"}),
         scalar, tensors=("batch",), free={"batch": (0,)}, aliases={"batch": "x"}, out=loss_and_metrics,
         bad={"beta": [-1.0], "reconstruction": ["median"]}),
    Case(ck.disentangle.factor_classifier_loss,
         lambda i: ((sprites_classifier(i.dtype), (i.rand(i.dims.b, 1, 16, 16), sprite_factors(i, i.dims.b))), {}),
         scalar, tensors=("batch[0]",), aliases={"batch[0]": "x", "batch[1]": "factors"}, out=loss_and_metrics,
         bad={"batch[1]": [AS_FLOAT, NEGATIVE, Corrupt("level", lambda f: f + 8)]}),
    # the metrics of a representation: any number of latents D and of factors K
    Case(ck.disentangle.dci, lambda i: ((i.randn(i.dims.b + 8, i.dims.d), levels(i, i.dims.b + 8, i.dims.k)), {}),
         None, tensors=("codes",), free={"codes": (1,), "factors": (1,)},
         out=lambda r: [r["disentanglement"], r["completeness"], r["informativeness"], r["importance"]],
         float_out=False, integers_ok=True,  # codes are converted to float64, as the metrics' inputs
         bad={"regressor": ["svm"], "alpha": [0.0], "test_fraction": [0.0, 1.0]}, examples=4),
    Case(ck.disentangle.mig,
         lambda i: ((i.randn(i.dims.b + 4, i.dims.d), levels(i, i.dims.b + 4, i.dims.k)), {"n_bins": 5}), None,
         tensors=("codes",), free={"codes": (1,), "factors": (1,)},
         out=lambda r: [r["mig"], r["per_factor"], r["mi"], r["entropy"]], float_out=False,
         bad={"n_bins": [1, 0], "factors": [AS_FLOAT, NEGATIVE, Corrupt("constant", lambda f: 0 * f)]}),
    Case(ck.disentangle.discrete_mutual_information,
         lambda i: ((i.ints(i.dims.k, i.dims.b), i.ints(3, i.dims.b)), {}), scalar, float_out=False,
         bad={"a": [AS_FLOAT, NEGATIVE], "b": [AS_FLOAT]}),
    Case(ck.disentangle.perceptual_path_length,
         lambda i: ((style_generator(), lambda x: x.flatten(1)[:, :8]), {"n": i.dims.b, "seed": 3}), scalar,
         out=values_of, float_out=False,
         bad={"space": ["x"], "n": [0, 1], "epsilon": [0.0, -0.1, 1.5, math.nan], "seed": [-1]}),
    Case(ck.disentangle.dci_from_importance, lambda i: ((i.rand(i.dims.d, i.dims.k) + 0.01,), {}), None,
         tensors=("importance",), free={"importance": ALL}, out=values_of, float_out=False),
    Case(ck.disentangle.matched_agreement,
         lambda i: ((i.ints(i.dims.k, i.dims.b), i.ints(3, i.dims.b), i.dims.k, 3), {}),
         None, out=values_of, float_out=False,
         bad={"codes": [AS_FLOAT, OUT_OF_VOCABULARY], "labels": [AS_FLOAT, NEGATIVE], "n_codes": [0]}),
    Case(ck.disentangle.linear_separability,
         lambda i: ((i.randn(i.dims.b + 8, i.dims.d), torch.arange(i.dims.b + 8) % 2), {}), None,
         tensors=("latents",), free={"latents": (1,)}, out=values_of, float_out=False,
         integers_ok=True,  # latents are converted to float64, as the metrics' inputs
         bad={"labels": [AS_FLOAT, Corrupt("one class", lambda y: 0 * y)], "test_fraction": [0.0, 1.0]}, examples=4),
    Case(ck.disentangle.discretise, lambda i: ((i.randn(i.dims.b, i.dims.d), 5), {}), BD, tensors=("codes",),
         free={"codes": ALL}, float_out=False, bad={"n_bins": [1, 0]}),  # int64 bins
    Case(ck.disentangle.slerp, lambda i: ((i.randn(i.dims.b, i.dims.d), i.randn(i.dims.b, i.dims.d), 0.3), {}), BD,
         tensors=("a", "b"), bad={"t": [math.nan]}),
    # metrics
    Case(ck.metrics.frechet_distance,
         lambda i: ((i.randn(i.dims.d), i.spd(i.dims.d), i.randn(i.dims.d), i.spd(i.dims.d)), {}), scalar,
         tensors=("mu1", "sigma1", "mu2", "sigma2"), float_out=False, integers_ok=True),
    Case(ck.metrics.frechet_distance_from_features,
         lambda i: ((i.randn(i.dims.b + i.dims.d, i.dims.d), i.randn(i.dims.b + i.dims.d + 1, i.dims.d)), {}),
         scalar, free={"f1": (0,), "f2": (0,)}, tensors=("f1", "f2"), float_out=False, integers_ok=True),
    Case(ck.metrics.kernel_distance,
         lambda i: ((i.randn(i.dims.b + 3, i.dims.d), i.randn(i.dims.b + 4, i.dims.d)),
                    {"subsets": 3, "subset_size": i.dims.b + 2}), None, free={"f1": (0,), "f2": (0,)},
         tensors=("f1", "f2"), out=values_of, float_out=False, bad={"subset_size": [0, 1000], "subsets": [0]},
         integers_ok=True),
    Case(ck.metrics.inception_score, lambda i: ((i.probs(3 * i.dims.b, i.dims.k),), {"splits": 3}), None,
         free={"probs": ALL}, simplex=("probs",), tensors=("probs",), out=values_of, float_out=False,
         integers_ok=True, bad={"splits": [0, 1000]}),
    Case(ck.metrics.precision_recall,
         lambda i: ((i.randn(i.dims.b + 3, i.dims.d), i.randn(i.dims.b + 4, i.dims.d)), {"k": 2}), None,
         free={"real": (0,), "fake": (0,)}, tensors=("real", "fake"), out=values_of, float_out=False,
         bad={"k": [0, 100]}, integers_ok=True),
    Case(ck.metrics.density_coverage,
         lambda i: ((i.randn(i.dims.b + 3, i.dims.d), i.randn(i.dims.b + 4, i.dims.d)), {"k": 2}), None,
         free={"real": (0,), "fake": (0,)}, tensors=("real", "fake"), out=values_of, float_out=False,
         bad={"k": [0, 100]}, integers_ok=True),
    Case(ck.metrics.prdc, lambda i: ((i.randn(i.dims.b + 3, i.dims.d), i.randn(i.dims.b + 4, i.dims.d)), {"k": 2}),
         None, tensors=("real", "fake"), free={"real": (0,), "fake": (0,)}, out=values_of, float_out=False,
         bad={"k": [0, 100]}, integers_ok=True),
    Case(ck.metrics.sample_quality,
         lambda i: ((i.rand(i.dims.b + 6, 64), i.rand(i.dims.b + 7, 64)),
                    {"classifier": digits_classifier(), "k": 2, "kid_subsets": 2, "kid_subset_size": 4,
                     "is_splits": 2}),
         None, tensors=("real", "fake"), free={"real": (0,), "fake": (0,)}, out=values_of, float_out=False,
         integers_ok=True, examples=4,
         bad={"k": [0], "kid_subsets": [0], "kid_subset_size": [1, 1000], "is_splits": [0, 1000]}),
    Case(ck.metrics.nats_to_bits_per_dim, lambda i: ((50 * i.randn(i.dims.b), 64), {}), B, tensors=("nats",),
         free={"nats": ALL}, integers_ok=True, bad={"dim": [0, -1, 2.5]}),
    Case(ck.metrics.discrete_nll_to_bits_per_dim,
         lambda i: ((50 * i.randn(i.dims.b), 64, 17), {"data_range": 1.0}), B, tensors=("nll",), free={"nll": ALL},
         integers_ok=True, bad={"dim": [0], "levels": [0], "data_range": [0.0, -1.0, math.nan]}),
    Case(ck.metrics.fid_infinity,
         lambda i: ((i.randn(3 * i.dims.d + i.dims.b, i.dims.d), i.randn(3 * i.dims.d + i.dims.b + 1, i.dims.d)), {}),
         scalar, tensors=("real", "fake"), free={"real": (0,), "fake": (0,)},
         out=lambda r: [r["fid_infinity"], r["slope"]], float_out=False,
         bad={"repeats": [0], "ns": [(3,), (1000, 2000)]}, integers_ok=True),
    Case(ck.metrics.expected_coverage, lambda i: ((i.dims.b + 10, i.dims.b + 5, i.dims.k), {}), scalar,
         float_out=False, bad={"k": [0, 100], "n_real": [0], "n_fake": [0, 2.5]}),
    Case(ck.metrics.nearest_neighbour_distances,
         lambda i: ((i.randn(i.dims.b, i.dims.d), i.randn(i.dims.b + 2, i.dims.d)), {}), B,
         tensors=("x", "reference"), free={"x": (0,), "reference": (0,)}, float_out=False, integers_ok=True),
    Case(ck.metrics.memorisation_check,
         lambda i: ((i.randn(i.dims.b, i.dims.d), i.randn(i.dims.b + 2, i.dims.d), i.randn(i.dims.b + 1, i.dims.d)),
                    {}), None, tensors=("samples", "train", "held_out"),
         free={"samples": (0,), "train": (0,), "held_out": (0,)}, out=values_of,
         float_out=False, bad={"quantile": [0.0, 1.0, -0.5, math.nan]}, integers_ok=True),
    Case(ck.metrics.sliced_wasserstein,
         lambda i: ((i.randn(i.dims.b, i.dims.d), i.randn(i.dims.b + 3, i.dims.d)), {"n_projections": 7}), scalar,
         tensors=("x", "y"), free={"x": (0,), "y": (0,)}, float_out=False,
         bad={"p": [0.5, 0.0, math.nan], "n_projections": [0]},
         integers_ok=True),
    Case(ck.metrics.ssim, lambda i: ((i.rand(i.dims.b, 1, 8, 8), i.rand(i.dims.b, 1, 8, 8)), {}), B,
         tensors=("x", "y"),
         bad={"kernel_size": [0, 4, 9], "sigma": [0.0, -1.0], "data_range": [0.0, -1.0], "k1": [0.0]}),
    Case(ck.metrics.ms_ssim, lambda i: ((i.rand(i.dims.b, 1, 8, 8), i.rand(i.dims.b, 1, 8, 8)), {}), B,
         tensors=("x", "y"), bad={"scales": [0, 3], "weights": [(1.0,), (0.5, -0.5)]}),
    Case(ck.metrics.pairwise_ms_ssim, lambda i: ((i.rand(i.dims.b, 1, 8, 8),), {"n_pairs": 5}), None,
         tensors=("x",), free={"x": ALL}, out=values_of, float_out=False, bad={"n_pairs": [0]}),
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


_PATH = re.compile(r"(\w+)(?:\[(\d+)\])?$")


def get(arguments, path):
    """The value at ``path``: an argument's name, or ``"name[i]"`` for entry i of a tuple argument."""
    name, index = _PATH.match(path).groups()
    return arguments[name] if index is None else arguments[name][int(index)]


def put(arguments, path, value):
    name, index = _PATH.match(path).groups()
    if index is None:
        arguments[name] = value
    else:
        entries = list(arguments[name])
        entries[int(index)] = value
        arguments[name] = type(arguments[name])(entries)


def tensor_arguments(arguments):
    """``(path, tensor)`` of every tensor argument, also inside a tuple or list argument (``"batch[0]"``)."""
    for name, value in arguments.items():
        if isinstance(value, torch.Tensor):
            yield name, value
        elif isinstance(value, (tuple, list)):
            yield from ((f"{name}[{j}]", v) for j, v in enumerate(value) if isinstance(v, torch.Tensor))


def names_of(case, path):
    """The names an error message may use for the argument at ``path``."""
    return {_PATH.match(path).group(1), path, *([case.aliases[path]] if path in case.aliases else [])}


def names_argument(message: str, name: str) -> bool:
    return re.search(rf"(?<![A-Za-z0-9_]){re.escape(name)}(?![A-Za-z0-9_])", message) is not None


def raises_naming(case, arguments, path, errors=(ValueError,)):
    with pytest.raises(errors) as info:
        call(case, arguments)
    assert any(names_argument(str(info.value), n) for n in names_of(case, path)), (
        f"{case.id}: the error for a bad {path!r} does not name it: {type(info.value).__name__}: {info.value}"
    )


def changed_size(case, path, tensor, dim):
    """``tensor`` with dimension ``dim`` one longer: its last slice repeated (so a non-increasing schedule stays
    one), a probability vector renormalised."""
    out = torch.cat([tensor, tensor.narrow(dim, tensor.shape[dim] - 1, 1)], dim=dim)
    if dim == tensor.ndim - 1 and path in case.simplex:
        out = out / out.sum(-1, keepdim=True)
    if dim == tensor.ndim - 1 and path in case.log_simplex:
        out = torch.log_softmax(out, dim=-1)
    return out


def constrained_dims(case, arguments):
    """``(path, dim)`` of every dimension of every tensor argument that the table does not declare free."""
    for path, tensor in tensor_arguments(arguments):
        free = case.free.get(path, ())
        if free != ALL:
            yield from ((path, dim) for dim in range(tensor.ndim) if dim not in free)


def as_outputs(result):
    return result if isinstance(result, list) else [result]


# ------------------------------------------------------------------------------------------------
# the five properties


def run(body, examples, **strategies):
    """``body(**drawn)`` on a fixed number of derandomised hypothesis examples."""
    settings(SETTINGS, max_examples=examples)(given(**strategies)(body))()


@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_valid_inputs_give_finite_outputs_of_the_documented_shape(case):
    def check(dims):
        for value in as_outputs(case.out(call(case, valid(case, dims)))):
            tensor = torch.as_tensor(value)
            assert torch.isfinite(tensor).all(), f"{case.id}: non-finite output {value}"
            if case.float_out and isinstance(value, torch.Tensor):
                assert value.dtype == dims.dtype, f"{case.id}: output dtype {value.dtype}, inputs {dims.dtype}"
            if case.shape is not None:
                assert tuple(tensor.shape) == case.shape(dims), f"{case.id}: output shape {tuple(tensor.shape)}"

    run(check, case.examples, dims=DIMS)


FLOATS = [c for c in CASES if c.tensors]


@pytest.mark.parametrize("case", FLOATS, ids=[c.id for c in FLOATS])
def test_a_non_finite_entry_is_rejected_by_name(case):
    def check(dims, which, where, pick):
        arguments = valid(case, dims)
        path = case.tensors[which % len(case.tensors)]
        tensor = get(arguments, path).clone()
        tensor.view(-1)[int(where * tensor.numel())] = case.non_finite[pick % len(case.non_finite)]
        put(arguments, path, tensor)
        raises_naming(case, arguments, path)

    run(check, case.examples, dims=DIMS, which=st.integers(0, 10), where=st.floats(0, 1, exclude_max=True),
        pick=st.integers(0, 2))


INTEGERS = [c for c in CASES if any(not c.integer_tensors_ok(t) for t in c.tensors)]


@pytest.mark.parametrize("case", INTEGERS, ids=[c.id for c in INTEGERS])
def test_an_integer_tensor_is_rejected_by_name(case):
    def check(dims, which):
        arguments = valid(case, dims)
        paths = [t for t in case.tensors if not case.integer_tensors_ok(t)]
        path = paths[which % len(paths)]
        put(arguments, path, get(arguments, path).round().long())
        raises_naming(case, arguments, path, errors=(TypeError, ValueError))

    run(check, case.examples, dims=DIMS, which=st.integers(0, 10))


#: The cases with a dimension that must agree (judged on one example: the tensor arguments do not depend on dims).
SIZED = [c for c in CASES if any(constrained_dims(c, valid(c, Dims(b=3, d=4, k=5, seed=0, float64=False))))]


@pytest.mark.parametrize("case", SIZED, ids=[c.id for c in SIZED])
def test_a_changed_size_is_rejected_by_name(case):
    def check(dims):
        arguments = valid(case, dims)
        # a mismatch is between two arguments (or an argument and a model): the message must name one of them
        involved = set().union(*(names_of(case, p) for p, _ in tensor_arguments(arguments)))
        for path, dim in constrained_dims(case, arguments):
            changed = dict(arguments)
            put(changed, path, changed_size(case, path, get(arguments, path), dim))
            with pytest.raises(ValueError) as info:
                call(case, changed)
            assert any(names_argument(str(info.value), n) for n in involved), (
                f"{case.id}: the error for {path!r} one longer in dim {dim} names none of {sorted(involved)}: "
                f"{info.value}"
            )

    run(check, case.examples, dims=DIMS)


BAD = [(c, name, value) for c in CASES for name, values in c.bad.items() for value in values]


@pytest.mark.parametrize("case, name, value", BAD, ids=[f"{c.id}-{n}={v!r}" for c, n, v in BAD])
def test_a_parameter_out_of_range_is_rejected_by_name(case, name, value):
    def check(dims):
        arguments = valid(case, dims)
        put(arguments, name, value.make(get(arguments, name)) if isinstance(value, Corrupt) else value)
        raises_naming(case, arguments, name, errors=(ValueError, TypeError))

    run(check, min(case.examples, BAD_EXAMPLES), dims=DIMS)


# ------------------------------------------------------------------------------------------------
# the table covers the course

#: The submodules with no tensor functions of a concept: the infrastructure (metrics excepted), the checkers, the
#: bench. Every other submodule of coursekit (each concept module, and metrics) is guarded.
NOT_GUARDED = ("runtime", "data", "nets", "train", "plotting", "student", "check", "bench")

_FIT = "fits a model to data (closed form, EM, SVD or counting): an estimator, not a loss, step, divergence or metric"
_NO_TENSOR = "takes no tensor: python numbers or names in, a schedule, grid, mask, model or callable out"
_EXPERIMENT = "trains networks or runs a whole experiment (seconds to minutes): too slow for a property test"
_DATA = "converts data between representations (pixel levels, tokens, value ranges, captions)"
_MODULE = "acts on a module in place (no tensor input)"

#: The public functions of the guarded modules that are not in CASES, each with the reason. A new public function
#: goes into CASES or here, or test_the_table_covers_the_course fails.
EXCLUDED = {
    "divergences.gaussian_mle": _FIT,
    "divergences.fit_gaussian_classifier": _FIT,
    "mixtures.pca": _FIT,
    "mixtures.fit_ppca": _FIT,
    "mixtures.fit_factor_analysis": _FIT,
    "mixtures.initial_gmm": _FIT,
    "mixtures.fit_gmm": _FIT,
    "vae.fit_independent_bernoulli": _FIT,
    "vae.kl_warmup_beta": _NO_TENSOR,
    "flows.checkerboard_mask": _NO_TENSOR,
    "flows.realnvp": _NO_TENSOR,
    "flows.maf": _NO_TENSOR,
    "flows.iaf": _NO_TENSOR,
    "flows.nsf": _NO_TENSOR,
    "flows.check_layer": "a diagnostic of a flow layer (inverse and log-det errors against autograd) for the tests",
    "flows.dequantize_digits": _DATA,
    "flows.quantize_digits": _DATA,
    "gan.fit_gan": _EXPERIMENT,
    "gan.add_spectral_norm": _MODULE,
    "wasserstein.clip_weights": _MODULE,
    "wasserstein.recipe_objective": _NO_TENSOR,
    "wasserstein.train_2d_gans": _EXPERIMENT,
    "wasserstein.evaluate_2d_gans": _EXPERIMENT,
    "wasserstein.reference_rows": _EXPERIMENT,
    "wasserstein.mode_coverage_table": _EXPERIMENT,
    "diffusion.beta_schedule": _NO_TENSOR,
    "diffusion.ddim_timesteps": _NO_TENSOR,
    "diffusion.sample_timesteps": _NO_TENSOR,
    "diffusion.to_model_space": _DATA,
    "diffusion.to_image_space": _DATA,
    "score.geometric_sigmas": _NO_TENSOR,
    "score.shell_overlap": _NO_TENSOR,
    "score.noise_ratio_for_overlap": _NO_TENSOR,
    "score.n_noise_levels": _NO_TENSOR,
    "score.annealed_variance_ratio": _NO_TENSOR,
    "score.annealed_step_size": _NO_TENSOR,
    "flow_matching.nfe": _NO_TENSOR,
    "flow_matching.probability_flow_velocity": _NO_TENSOR + " (its field runs in probability_flow_sample's row)",
    "autoregressive.digits_to_tokens": _DATA,
    "autoregressive.tokens_to_digits": _DATA,
    "autoregressive.digit_captions": _DATA,
    "autoregressive.check_tokens": "an argument check (it exists to raise); the token functions' rows try it",
    "autoregressive.causal_mask": _NO_TENSOR,
    "autoregressive.dependency_matrix": "a diagnostic of a model's causal structure by autograd, on inputs it draws",
    "disentangle.summed_beta": _NO_TENSOR,
    "disentangle.latent_traversal": "decodes a grid of latents for a figure, not a loss, step, divergence or metric",
    "disentangle.importance_matrix": "the first half of dci, whose row tries its inputs and keyword arguments",
    "disentangle.infogan_players": _NO_TENSOR,
    "disentangle.linear_probe_direction": _FIT,
    "guidance.caption_tokenizer": _NO_TENSOR,
    "guidance.tokenize_captions": _DATA,
    "guidance.count_flops": "counts the FLOPs of any call, its arguments passed through untouched",
    "guidance.pix2pix_players": _NO_TENSOR + " (players of coursekit.train.fit_players; their loss has a row)",
    "guidance.cyclegan_players": _NO_TENSOR + " (players of coursekit.train.fit_players; cycle_consistency_loss has "
                                 "a row)",
    "metrics.dequantize_nll_correction": _NO_TENSOR,
    "metrics.uniform_dequantize": _DATA,
    "metrics.get_digits_classifier": _EXPERIMENT,
    "metrics.random_digits_network": _NO_TENSOR + " (it loads the digits to standardise the features)",
    "metrics.features": "the course classifier's features, tried through sample_quality's row",
    "metrics.probabilities": "the course classifier's class probabilities, tried through sample_quality's row",
    "metrics.real_data_floor": _EXPERIMENT,
    "metrics.fid_vs_sample_size": _EXPERIMENT,
}


def guarded_modules():
    return [getattr(ck, name) for name in ck.__all__ if name != "__version__" and name not in NOT_GUARDED]


def public_functions(module):
    """``"module.name"`` of every function in ``module.__all__`` (named by the module that defines it)."""
    functions = (getattr(module, name) for name in module.__all__)
    return {f"{f.__module__.removeprefix('coursekit.')}.{f.__name__}" for f in functions if inspect.isfunction(f)}


def test_the_table_covers_the_course():
    """Every public function of every concept module and of metrics is in CASES or on EXCLUDED with its reason
    (a guard against a function, or a whole module, left out of the table); no function is on both, every
    guarded module has rows, and EXCLUDED names only public functions."""
    public = set().union(*(public_functions(m) for m in guarded_modules()))
    covered, excluded = set(IDS), set(EXCLUDED)
    assert len(IDS) == len(covered), "a function has two rows"
    missing = sorted(public - covered - excluded)
    assert not missing, f"public functions neither in CASES nor in EXCLUDED (add a row, or a reason): {missing}"
    assert not covered & excluded, f"in CASES and in EXCLUDED: {sorted(covered & excluded)}"
    assert not excluded - public, f"EXCLUDED names functions that are not public: {sorted(excluded - public)}"
    assert not covered - public, f"CASES has functions that are not public: {sorted(covered - public)}"
    rows = {c.fn.__module__ for c in CASES}
    assert not [m.__name__ for m in guarded_modules() if m.__name__ not in rows], "a guarded module has no row"
