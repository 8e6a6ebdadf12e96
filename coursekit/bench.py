"""The course benchmark: train every model the course has so far, measure it, write one JSON file.

Run it with ``make bench`` or::

    python -m coursekit.bench --profile cpu --out _build/bench

For each model in :data:`REGISTRY` it trains the model with its chapter's recipe under the chosen run
profile, then records the parameter count, training wall time and steps per second, the wall time of
sampling per image, the held-out likelihood where the model has one (nats per image and bits/dim), and the
sample-quality metrics of
:mod:`coursekit.metrics` (FID, KID, precision, recall, density, coverage, Inception Score) of
:data:`~coursekit.metrics.COURSE_SAMPLE_SIZE` = 250 generated images against the 250 held-out test
digits, in the feature space of the course's digit classifier. The real-data floor (the same metrics
between training and test digits at the same n) and FID's dependence on n are included, so every
model number can be read against what real data achieves.

Output in ``--out``:

* ``results.json``: see :func:`run_bench` for the schema;
* ``<model>_<sample set>.npy``: the generated images, float32 (n, 64) in [0, 1].

Adding a chapter's model: write a function ``recipe(ctx: BenchContext) -> TrainedModel`` that trains
with the chapter's budget (``ctx.budget(smoke=..., cpu=..., gpu=...)``) and returns samples (timing the
headline set with ``_timed``, and reporting a likelihood as ``test_nll_bits_per_dim`` with its
``likelihood_kind``), and add one line ``register(Recipe(...))`` at the bottom of this file. Chapter 13's
cross-model table (:func:`summary_rows`) lists every registered model.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from . import __version__, data, flows, gan, guidance, metrics, mixtures, nets, runtime, score, train, vae, wasserstein
from . import autoencoders as ae
from . import autoregressive as ar
from . import diffusion as dm
from . import flow_matching as fm

__all__ = [
    "SCHEMA_VERSION",
    "METRIC_KEYS",
    "BenchContext",
    "TrainedModel",
    "Recipe",
    "REGISTRY",
    "register",
    "measure_recipe",
    "find_results",
    "load_results",
    "summary_rows",
    "format_summary",
    "Comparison",
    "COMPARISONS",
    "MOONS_RECIPE",
    "register_comparison",
    "run_bench",
    "format_table",
    "main",
]

#: Version of the results.json layout; bump it when a key changes meaning or disappears.
SCHEMA_VERSION = 1

#: The sample-quality numbers stored for every sample set (see :func:`coursekit.metrics.sample_quality`).
METRIC_KEYS = ("fid", "kid_mean", "kid_std", "precision", "recall", "density", "coverage", "is_mean", "is_std")


@dataclass(frozen=True)
class BenchContext:
    """What a recipe gets: the run profile, seed, device, sample size and whether to show progress."""

    profile: str
    seed: int
    device: torch.device
    n_samples: int
    progress: bool = True

    def budget(self, *, smoke, cpu, gpu):
        """The value for this run's profile (as :func:`coursekit.runtime.budget`)."""
        return runtime.budget(smoke=smoke, cpu=cpu, gpu=gpu, profile=self.profile)

    def resolve(self, recipe: dict) -> dict:
        """``recipe`` with every per-profile entry (a ``{"smoke", "cpu", "gpu"}`` dict) replaced by this run's value."""
        return {k: self.budget(**v) if isinstance(v, dict) else v for k, v in recipe.items()}


@dataclass
class TrainedModel:
    """What a recipe returns.

    Attributes:
        model: the trained ``nn.Module`` (for the parameter count).
        steps: optimiser steps taken.
        train_seconds: wall-clock time of training (the ``fit`` call(s)), seconds.
        samples: named sample sets, each float (n, 64) in [0, 1]; the first is the model's headline set
            and should live in the space the model is trained and compared in (binary draws for a
            Bernoulli model, see :attr:`Recipe.binarize`).
        likelihood: held-out likelihood numbers (python floats), or empty for models without one.
        config: the hyper-parameters used under this profile (JSON-serialisable).
        notes: free-text remarks stored in the JSON (e.g. what the sample sets are).
        sample_seconds: wall-clock time of drawing the headline sample set (all its images, the device
            synchronised), seconds; ``None`` if the recipe does not time it.
        likelihood_kind: what ``likelihood["test_nll_bits_per_dim"]`` is: ``"exact"`` or ``"upper bound"``
            (a variational or dequantisation bound); ``""`` for a model without a likelihood.
        n_parameters: the number of free parameters when ``model`` is not (only) an ``nn.Module`` (a Gaussian
            mixture, an autoencoder with a mixture on its codes); ``None`` counts ``model.parameters()``.

    A likelihood is reported, when the model has one, as ``likelihood["test_nll_bits_per_dim"]``: the negative
    log-likelihood (or its bound) of the test digits in bits per dimension of the data space the model is trained
    in (binary pixels for a binarised model, the 17 grey levels otherwise).
    """

    model: object
    steps: int
    train_seconds: float
    samples: dict[str, torch.Tensor]
    likelihood: dict[str, float] = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    notes: str = ""
    sample_seconds: float | None = None
    likelihood_kind: str = ""
    n_parameters: int | None = None

    @classmethod
    def from_run(cls, model, history, train_seconds: float, recipe: dict, *,
                 samples: dict[str, torch.Tensor], likelihood: dict[str, float] | None = None,
                 notes: str = "", sample_seconds: float | None = None, likelihood_kind: str = "",
                 n_parameters: int | None = None) -> TrainedModel:
        """The result of a recipe that trained ``model`` for ``history`` under the resolved ``recipe``.

        ``steps`` is the last logged step of ``history`` (training logs its last step at the end of every call, so
        this is the number of steps taken, fewer than planned when a wall-clock budget stopped it), and ``config``
        is ``recipe`` as JSON: lower-case keys, tuples as lists. The other keywords are the attributes of the same
        names.
        """
        steps = int(history.steps[-1])
        config = {k.lower(): (list(v) if isinstance(v, tuple) else v) for k, v in recipe.items()}
        return cls(model=model, steps=steps, train_seconds=train_seconds, samples=samples,
                   likelihood=dict(likelihood or {}), config=config, notes=notes, sample_seconds=sample_seconds,
                   likelihood_kind=likelihood_kind, n_parameters=n_parameters)


@dataclass(frozen=True)
class Recipe:
    """One benchmark entry.

    Attributes:
        name: key in results.json and prefix of the ``.npy`` files (``[a-z0-9_]+``).
        chapter: the notebook the recipe reproduces, e.g. ``"04_vae"``.
        description: one line for the table's legend.
        binarize: True if the model is trained on binarised digits; its samples are then compared with
            binarised test digits, and read against the binarised real-data floor.
        run: ``run(ctx) -> TrainedModel``.
    """

    name: str
    chapter: str
    description: str
    binarize: bool
    run: Callable[[BenchContext], TrainedModel]


#: name -> Recipe, in the order the chapters introduce the models.
REGISTRY: dict[str, Recipe] = {}


def register(recipe: Recipe) -> Recipe:
    """Add a recipe to :data:`REGISTRY` (a name may be registered once)."""
    if not recipe.name.replace("_", "").isalnum() or recipe.name.lower() != recipe.name:
        raise ValueError(f"recipe name must be lower-case letters, digits and '_', got {recipe.name!r}")
    if recipe.name in REGISTRY:
        raise ValueError(f"a recipe named {recipe.name!r} is already registered")
    REGISTRY[recipe.name] = recipe
    return recipe


class _BestWeights:
    """A ``fit`` callback that keeps the weights with the lowest validation loss, evaluated (in eval mode, without
    gradients) every ``every`` steps and at the last step; ``restore(model)`` loads them. ``value`` is that loss."""

    def __init__(self, val_loss, every: int, steps: int):
        self.val_loss, self.every, self.steps = val_loss, every, steps
        self.value, self.state = math.inf, None

    @torch.no_grad()
    def __call__(self, step, m, history):
        if step % self.every == 0 or step == self.steps:
            m.eval()
            val = float(self.val_loss(m))
            m.train()
            if val < self.value:
                self.value, self.state = val, {k: v.detach().clone() for k, v in m.state_dict().items()}

    def restore(self, model: nn.Module) -> None:
        model.load_state_dict(self.state)


# ------------------------------------------------------------------------------------------------
# Recipes
# ------------------------------------------------------------------------------------------------


def _timed(device: torch.device, draw: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, float]:
    """``(draw(), seconds)``: the wall time of drawing a sample set, the device synchronised before and after, with
    gradients off."""
    _sync(device)
    t0 = time.perf_counter()
    with torch.no_grad():
        out = draw()
    _sync(device)
    return out, time.perf_counter() - t0


#: The chapter 04 recipe, kept identical to notebooks/04_vae.ipynb (the cells "Train a VAE with beta = 1"
#: and "Held-out evaluation"); tests/test_bench.py reads the notebook and fails if the two drift apart.
#: Each value is either a constant or a per-profile dict for :func:`coursekit.runtime.budget`.
VAE_RECIPE = {
    "LATENT_DIM": 8,
    "HIDDEN": {"smoke": (64, 64), "cpu": (128, 128), "gpu": (256, 256)},
    "STEPS": {"smoke": 40, "cpu": 2000, "gpu": 6000},
    "EVAL_EVERY": {"smoke": 20, "cpu": 100, "gpu": 250},
    "BATCH_SIZE": 128,
    "LR": {"smoke": 2e-3, "cpu": 2e-3, "gpu": 1e-3},
    "IWAE_K": {"smoke": 50, "cpu": 1000, "gpu": 5000},
    "ELBO_SAMPLES": {"smoke": 10, "cpu": 100, "gpu": 100},
}


def _vae_recipe(ctx: BenchContext) -> TrainedModel:
    """Chapter 04: the beta = 1 VAE exactly as notebooks/04_vae.ipynb trains it (same architecture,
    optimiser, budget, seed, and best-validation-ELBO checkpoint selection; :data:`VAE_RECIPE`), then its
    test ELBO and IWAE bound with the chapter's sample counts, and ``n`` samples from the prior."""
    r = ctx.resolve(VAE_RECIPE)
    latent_dim, hidden, batch_size, lr = r["LATENT_DIM"], r["HIDDEN"], r["BATCH_SIZE"], r["LR"]
    steps, eval_every, iwae_k, elbo_samples = r["STEPS"], r["EVAL_EVERY"], r["IWAE_K"], r["ELBO_SAMPLES"]
    dev = ctx.device
    x_train, _ = data.load_digits("train", binarize=True, device=dev)
    x_val, _ = data.load_digits("val", binarize=True, device=dev)
    x_test, _ = data.load_digits("test", binarize=True, device=dev)
    dim = x_train.shape[1]

    torch.manual_seed(ctx.seed)
    model = vae.VAE(data_dim=dim, latent_dim=latent_dim, hidden=hidden).to(dev)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    best = _BestWeights(lambda m: -vae.elbo(m, x_val)["elbo"].mean().item(), eval_every, steps)

    t0 = time.perf_counter()
    history = train.fit(model, optimiser, lambda m, b: vae.vae_loss(m, b, beta=1.0), x_train, steps=steps,
                        batch_size=batch_size, seed=ctx.seed, desc="bench: VAE (ch. 04)", progress=ctx.progress,
                        callback=best)
    train_seconds = time.perf_counter() - t0
    best.restore(model)
    model.eval()

    torch.manual_seed(ctx.seed)
    with torch.no_grad():
        test_elbo = vae.elbo(model, x_test, n_samples=elbo_samples)["elbo"].mean().item()
        test_iwae = vae.iwae_bound(model, x_test, k=iwae_k).mean().item()
    gen = torch.Generator(device=dev).manual_seed(ctx.seed)
    (means, draws), sample_seconds = _timed(dev, lambda: _vae_draws(model, ctx.n_samples, gen))
    return TrainedModel.from_run(
        model, history, train_seconds, r,
        samples={"binary": draws, "mean": means},
        likelihood={
            "test_elbo_nats": test_elbo,
            "test_iwae_nats": test_iwae,
            "test_nll_bits_per_dim_elbo": float(metrics.nats_to_bits_per_dim(-test_elbo, dim)),
            "test_nll_bits_per_dim_iwae": float(metrics.nats_to_bits_per_dim(-test_iwae, dim)),
            "test_nll_bits_per_dim": float(metrics.nats_to_bits_per_dim(-test_iwae, dim)),
            "elbo_samples": int(elbo_samples),
            "iwae_k": int(iwae_k),
            "best_val_elbo_nats": -best.value,
        },
        notes="'binary' (headline): x ~ Bernoulli(decoder(z)), z ~ N(0, I), the model's actual samples, in "
              "the binarised space it was trained on and is compared in; 'mean': the decoder's Bernoulli "
              "means of the same z (the images the chapter shows; grey values never occur in binarised "
              "data, which FID/KID penalise). ELBO/IWAE: nats per image on the 250 test digits; bits/dim "
              "of the NLL bound (binary pixels: no dequantisation term); test_nll_bits_per_dim is the IWAE one.",
        sample_seconds=sample_seconds, likelihood_kind="upper bound",
    )


def _vae_draws(model: vae.VAE, n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The decoder's Bernoulli means of ``n`` prior draws and one binary image drawn from each."""
    means = model.sample(n, generator=gen)
    return means, torch.bernoulli(means, generator=gen)


register(Recipe("vae", "04_vae", "VAE, Bernoulli decoder, latent 8, MLP encoder/decoder", True, _vae_recipe))


#: The chapter 05 recipe, kept identical to notebooks/05_flows.ipynb (the cell "Train RealNVP on the digits");
#: tests/test_bench.py reads the notebook and fails if the two drift apart.
FLOW_RECIPE = {
    "N_COUPLINGS": 8,
    "FLOW_HIDDEN": {"smoke": (32, 32), "cpu": (64, 64), "gpu": (64, 64)},
    "FLOW_STEPS": {"smoke": 30, "cpu": 1200, "gpu": 3000},
    "FLOW_EVAL_EVERY": {"smoke": 15, "cpu": 100, "gpu": 100},
    "FLOW_BATCH_SIZE": 128,
    "FLOW_LR": 1e-3,
    "LOGIT_ALPHA": 0.05,
    "EVAL_DRAWS": {"smoke": 2, "cpu": 10, "gpu": 20},
}


def _flow_recipe(ctx: BenchContext) -> TrainedModel:
    """Chapter 05: RealNVP (checkerboard couplings, logit pre-processing) on uniformly dequantised grey-scale
    digits, exactly as notebooks/05_flows.ipynb trains it (:data:`FLOW_RECIPE`, best validation NLL kept),
    then the test bits/dim of the 17-level digits and ``n`` samples quantised back to the 17 levels."""
    r = ctx.resolve(FLOW_RECIPE)
    dev = ctx.device
    x_train, _ = data.load_digits("train", device=dev)
    x_val, _ = data.load_digits("val", device=dev)
    x_test, _ = data.load_digits("test", device=dev)
    dim = x_train.shape[1]

    torch.manual_seed(ctx.seed)
    model = flows.realnvp(dim, r["N_COUPLINGS"], r["FLOW_HIDDEN"], mask=flows.checkerboard_mask(8, 8), logit=True,
                          alpha=r["LOGIT_ALPHA"]).to(dev)
    optimiser = torch.optim.Adam(model.parameters(), lr=r["FLOW_LR"])
    y_val = flows.dequantize_digits(x_val, generator=torch.Generator(device=dev).manual_seed(ctx.seed + 1))
    steps = r["FLOW_STEPS"]
    best = _BestWeights(lambda m: -m.log_prob(y_val).mean().item(), r["FLOW_EVAL_EVERY"], steps)

    t0 = time.perf_counter()
    history = train.fit(model, optimiser, lambda m, b: flows.nll_loss(m, flows.dequantize_digits(b)), x_train,
                        steps=steps, batch_size=r["FLOW_BATCH_SIZE"], seed=ctx.seed, desc="bench: RealNVP (ch. 05)",
                        progress=ctx.progress, callback=best)
    train_seconds = time.perf_counter() - t0
    best.restore(model)
    model.eval()

    gen = torch.Generator(device=dev).manual_seed(ctx.seed + 2)
    nll = flows.dequantized_nll(model, x_test, draws=r["EVAL_DRAWS"], generator=gen).mean().item()
    bpd = float(flows.digits_bits_per_dim(nll, dim))
    gen = torch.Generator(device=dev).manual_seed(ctx.seed)
    samples, sample_seconds = _timed(dev, lambda: flows.quantize_digits(model.sample(ctx.n_samples, generator=gen)))
    return TrainedModel.from_run(
        model, history, train_seconds, r,
        samples={"levels": samples},
        likelihood={
            "test_nll_nats_dequantized": nll,
            "test_nll_bits_per_dim": bpd,
            "test_nll_nats": bpd * dim * math.log(2),
            "eval_draws": int(r["EVAL_DRAWS"]),
            "best_val_nll_nats_dequantized": best.value,
        },
        notes="'levels': y ~ flow, quantised to the bin floor(17 y) and shown as k/16, the 17-level grey-scale "
              "space the model is trained in; compared with grey-scale test digits and the grey-scale floor. "
              "Likelihood: continuous NLL of the dequantised test digits (mean over eval_draws noise draws), "
              "bits/dim of the discrete 17-level data = nll / (64 ln 2) + log2 17 (an upper bound; "
              "Theis et al. 2016); test_nll_nats is the same bound in nats per image.",
        sample_seconds=sample_seconds, likelihood_kind="upper bound",
    )


register(Recipe("flow", "05_flows", "RealNVP, 8 affine couplings, dequantised grey-scale digits", False,
                _flow_recipe))


#: The chapter 08 recipe, kept identical to notebooks/08_diffusion.ipynb (the cells "Check 1" for T and the
#: cell that trains the U-Net); tests/test_bench.py reads the notebook and fails if the two drift apart.
DIFFUSION_RECIPE = {
    "T": {"smoke": 50, "cpu": 200, "gpu": 500},
    "SCHEDULE": "linear",
    "CHANNELS": {"smoke": 16, "cpu": 16, "gpu": 32},
    "STEPS": {"smoke": 30, "cpu": 1200, "gpu": 8000},
    "BATCH_SIZE": {"smoke": 64, "cpu": 64, "gpu": 128},
    "LR": 2e-3,
    "WARMUP": 100,
    "EMA_DECAY": {"smoke": 0.9, "cpu": 0.995, "gpu": 0.999},
    "DDIM_STEPS": {"smoke": 10, "cpu": 50, "gpu": 100},
}


def _adam_warmup_ema(model: nn.Module, lr: float, warmup: int, ema_decay: float):
    """Chapter 08's optimiser set-up, shared by the recipes that train a U-Net like it: Adam at ``lr`` with a linear
    warm-up over ``warmup`` steps and an exponential moving average of the weights (decay ``ema_decay``). Returns
    ``(optimiser, ema, after_step)``; call ``after_step()`` after every optimiser step."""
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(ema_decay))
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda step: min(1.0, (step + 1) / warmup))

    def after_step(*_):
        ema.update_parameters(model)
        schedule.step()

    return optimiser, ema, after_step


def _diffusion_recipe(ctx: BenchContext) -> TrainedModel:
    """Chapter 08: a DDPM (epsilon prediction, L_simple, small U-Net, EMA of the weights) on grey-scale digits
    scaled to [-1, 1], exactly as notebooks/08_diffusion.ipynb trains it (:data:`DIFFUSION_RECIPE`); ``n``
    ancestral (DDPM, T steps) and ``n`` deterministic DDIM samples mapped back to [0, 1]; and the variational
    bound on the test digits (17 pixel levels, discretised-Gaussian decoder)."""
    r = ctx.resolve(DIFFUSION_RECIPE)
    dev = ctx.device
    x_train = dm.to_model_space(data.load_digits("train", image_shape=True, device=dev)[0])
    x_test = dm.to_model_space(data.load_digits("test", image_shape=True, device=dev)[0])
    abar = dm.alphas_cumprod_from_betas(dm.beta_schedule(r["SCHEDULE"], r["T"])).float().to(dev)

    torch.manual_seed(ctx.seed)
    model = nets.UNet(in_channels=1, channels=r["CHANNELS"]).to(dev)
    optimiser, ema, after_step = _adam_warmup_ema(model, r["LR"], r["WARMUP"], r["EMA_DECAY"])

    t0 = time.perf_counter()
    history = train.fit(model, optimiser, lambda m, b: dm.diffusion_loss(m, b, abar), x_train, steps=r["STEPS"],
                        batch_size=r["BATCH_SIZE"], seed=ctx.seed, desc="bench: DDPM (ch. 08)", progress=ctx.progress,
                        callback=after_step)
    train_seconds = time.perf_counter() - t0
    net = ema.module.eval()
    shape = (ctx.n_samples, 1, 8, 8)
    ddpm, sample_seconds = _timed(dev, lambda: dm.ddpm_sample(
        net, shape, abar, generator=torch.Generator(device=dev).manual_seed(ctx.seed)))
    ddim = dm.ddim_sample(net, shape, abar, r["DDIM_STEPS"],
                          generator=torch.Generator(device=dev).manual_seed(ctx.seed + 1))
    vlb = dm.vlb_terms(net, x_test, abar, levels=17, generator=torch.Generator(device=dev).manual_seed(ctx.seed + 2))
    nll = vlb["total"].mean().item()
    return TrainedModel.from_run(
        net, history, train_seconds, r,
        samples={"ddpm": dm.to_image_space(ddpm).reshape(ctx.n_samples, -1),
                 "ddim": dm.to_image_space(ddim).reshape(ctx.n_samples, -1)},
        likelihood={"test_nll_nats": nll, "test_nll_bits_per_dim": float(metrics.nats_to_bits_per_dim(nll, 64)),
                    "vlb_prior_nats": vlb["prior"].mean().item(), "vlb_decoder_nats": vlb["decoder"].mean().item()},
        notes="'ddpm' (headline): ancestral sampling with T steps; 'ddim': deterministic DDIM with ddim_steps steps; "
              "both from the EMA weights, mapped from [-1, 1] to [0, 1], compared with grey-scale test digits and the "
              "grey-scale floor. Likelihood: the variational bound (L_T + sum L_t-1 + L_0, one noise draw per term) on "
              "the 250 test digits as 17-level data, nats per image and bits/dim (an upper bound on the discrete NLL; "
              "the model is trained with L_simple, not with the bound).",
        sample_seconds=sample_seconds, likelihood_kind="upper bound",
    )


register(Recipe("ddpm", "08_diffusion", "DDPM, small U-Net (eps prediction, EMA), grey-scale digits", False,
                _diffusion_recipe))


#: The chapter 09 recipe, kept identical to notebooks/09_score_matching.ipynb (the cells "Check 9", "Train the digits
#: NCSN" and "Sample 250 digits"); tests/test_bench.py reads the notebook and fails if the two drift apart. sigma_1,
#: the number of levels and the step size are not in the dict: they follow from it and the training digits by
#: Song & Ermon's (2020) rules (score.n_noise_levels, score.annealed_step_size), as in the notebook.
NCSN_RECIPE = {
    "DIGITS_SIGMA_MIN": 0.02,
    "DIGITS_OVERLAP": 0.5,
    "DIGITS_T": {"smoke": 2, "cpu": 12, "gpu": 20},
    "DIGITS_CHANNELS": {"smoke": 8, "cpu": 16, "gpu": 32},
    "DIGITS_STEPS": {"smoke": 20, "cpu": 800, "gpu": 8000},
    "DIGITS_BATCH": 96,
    "DIGITS_LR": 2e-3,
    "DIGITS_WARMUP": 100,
    "DIGITS_EMA": {"smoke": 0.9, "cpu": 0.99, "gpu": 0.999},
}


def _ncsn_recipe(ctx: BenchContext) -> TrainedModel:
    """Chapter 09: the noise-conditional score network on grey-scale digits exactly as
    notebooks/09_score_matching.ipynb trains it (:data:`NCSN_RECIPE`): sigma_1 = the largest distance between two
    training digits, geometric levels whose ratio follows the shell-overlap rule, the U-Net score network
    (``score.NoiseConditionalUNet8x8``) trained on ``ncsn_loss`` with warm-up + cosine learning rate and an EMA of
    the weights; then ``n`` samples from the EMA weights by annealed Langevin dynamics from uniform noise, with
    the step size of the end-of-level variance rule and the final denoising step, clipped to [0, 1]. No
    likelihood (a score model has none)."""
    r = ctx.resolve(NCSN_RECIPE)
    dev = ctx.device
    x_train, _ = data.load_digits("train", device=dev)
    sigma_1 = torch.cdist(x_train, x_train).max().item()
    n_levels = score.n_noise_levels(sigma_1, r["DIGITS_SIGMA_MIN"], x_train.shape[1], r["DIGITS_OVERLAP"])
    sigmas = score.geometric_sigmas(sigma_1, r["DIGITS_SIGMA_MIN"], n_levels, device=dev)
    gamma = (sigma_1 / r["DIGITS_SIGMA_MIN"]) ** (1 / (n_levels - 1))
    step_size = score.annealed_step_size(r["DIGITS_SIGMA_MIN"], gamma, r["DIGITS_T"])
    torch.manual_seed(ctx.seed)
    model = score.NoiseConditionalUNet8x8(channels=r["DIGITS_CHANNELS"]).to(dev)
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(r["DIGITS_EMA"]))
    optimiser = torch.optim.Adam(model.parameters(), lr=r["DIGITS_LR"])
    steps, warm = r["DIGITS_STEPS"], r["DIGITS_WARMUP"]
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))

    def after_step(step, m, history):
        schedule.step()
        ema.update_parameters(m)

    t0 = time.perf_counter()
    history = train.fit(model, optimiser, lambda m, b: score.ncsn_loss(m, b, sigmas), x_train,
                        steps=steps, batch_size=r["DIGITS_BATCH"], seed=ctx.seed,
                        desc="bench: NCSN (ch. 09)", progress=ctx.progress, callback=after_step)
    train_seconds = time.perf_counter() - t0
    net = ema.module.eval()
    gen = torch.Generator(device=dev).manual_seed(ctx.seed)
    x0 = torch.rand(ctx.n_samples, 64, generator=gen, device=dev)
    raw, sample_seconds = _timed(dev, lambda: score.annealed_langevin_sample(
        net, x0, sigmas, step_size, r["DIGITS_T"], generator=gen, denoise=True).clamp(0, 1))
    return TrainedModel.from_run(
        net, history, train_seconds, r, sample_seconds=sample_seconds,
        samples={"clipped": raw},
        notes="'clipped': annealed Langevin samples from the EMA weights (Song & Ermon 2019, step eps * sigma_i^2 / "
              "sigma_L^2, T steps per level; levels and eps by Song & Ermon's 2020 rules; final Tweedie denoising "
              "step) from uniform noise, clipped to [0, 1]; compared with the grey-scale test digits and read "
              "against the grey-scale floor. A score model has no likelihood.",
    )


register(Recipe("ncsn", "09_score_matching", "NCSN, conv score net, annealed Langevin (grey-scale digits)", False,
                _ncsn_recipe))


#: The chapter 06 recipes, kept identical to notebooks/06_gan.ipynb (the cells "Train a small DCGAN" and "Train a
#: class-conditional GAN"); tests/test_bench.py reads the notebook and fails if the two drift apart.
DCGAN_RECIPE = {
    "GAN_LATENT": 16,
    "GAN_CHANNELS": {"smoke": 8, "cpu": 16, "gpu": 32},
    "GAN_STEPS": {"smoke": 30, "cpu": 2500, "gpu": 8000},
    "GAN_BATCH": 64,
    "GAN_LR_G": 8e-4,
    "GAN_LR_D": 4e-4,
    "GAN_BETAS": (0.5, 0.999),
}
CGAN_RECIPE = {**DCGAN_RECIPE, "CGAN_STEPS": {"smoke": 30, "cpu": 2000, "gpu": 8000}}


def _gan_recipe(ctx: BenchContext, conditional: bool) -> TrainedModel:
    """Chapter 06: the small DCGAN (non-saturating loss, no batch norm) on grey-scale digits, or its
    class-conditional version (one-hot label into the generator, projection discriminator), exactly as
    notebooks/06_gan.ipynb trains them (:data:`DCGAN_RECIPE`, :data:`CGAN_RECIPE`); then ``n`` samples (for the
    conditional GAN: n / 10 per requested class, and the share the digit classifier assigns to that class). No
    likelihood (a GAN has none)."""
    spec = CGAN_RECIPE if conditional else DCGAN_RECIPE
    r = ctx.resolve(spec)
    steps = r["CGAN_STEPS"] if conditional else r["GAN_STEPS"]
    dev = ctx.device
    x_train, y_train = data.load_digits("train", image_shape=True, device=dev)
    n_classes = 10 if conditional else None
    torch.manual_seed(ctx.seed)
    generator = gan.DigitsGenerator(latent_dim=r["GAN_LATENT"], channels=r["GAN_CHANNELS"], n_classes=n_classes).to(dev)
    discriminator = gan.DigitsDiscriminator(channels=r["GAN_CHANNELS"], n_classes=n_classes).to(dev)
    t0 = time.perf_counter()
    history = gan.fit_gan(generator, discriminator, x_train, labels=y_train if conditional else None,
                          loss="non_saturating", steps=steps, batch_size=r["GAN_BATCH"], latent_dim=r["GAN_LATENT"],
                          lr_g=r["GAN_LR_G"], lr_d=r["GAN_LR_D"], betas=r["GAN_BETAS"], seed=ctx.seed,
                          progress=ctx.progress,
                          desc=f"bench: {'conditional GAN' if conditional else 'DCGAN'} (ch. 06)")
    train_seconds = time.perf_counter() - t0
    labels = torch.arange(ctx.n_samples, device=dev) % 10 if conditional else None
    samples, sample_seconds = _timed(dev, lambda: gan.generate(generator, ctx.n_samples, r["GAN_LATENT"],
                                                                labels=labels, seed=ctx.seed))
    notes = ("'samples': G(z), z ~ N(0, I), pixels in (0, 1), compared with the grey-scale test digits and read "
             "against the grey-scale floor. A GAN has no likelihood.")
    if conditional:
        agree = gan.class_agreement(samples, labels)
        notes += (f" Conditional: n / 10 samples per requested class; the digit classifier assigns "
                  f"{agree['accuracy']:.3f} of them to the requested class.")
    return TrainedModel.from_run(
        generator, history, train_seconds, r,
        samples={"samples": samples.reshape(ctx.n_samples, -1)},
        notes=notes, sample_seconds=sample_seconds,
    )


register(Recipe("dcgan", "06_gan", "DCGAN-style GAN, non-saturating loss (grey-scale digits)", False,
                lambda ctx: _gan_recipe(ctx, conditional=False)))
register(Recipe("cgan", "06_gan", "conditional GAN, projection discriminator (grey-scale digits)", False,
                lambda ctx: _gan_recipe(ctx, conditional=True)))


#: The chapter 07 recipe, kept identical to notebooks/07_wasserstein.ipynb (the cell "Train a WGAN-GP on the
#: grey-scale digits"); tests/test_bench.py reads the notebook and fails if the two drift apart.
WGAN_GP_RECIPE = {
    "WGAN_LATENT": 16,
    "WGAN_HIDDEN": {"smoke": (64, 64), "cpu": (256, 256), "gpu": (512, 512)},
    "WGAN_STEPS": {"smoke": 10, "cpu": 1000, "gpu": 4000},
    "WGAN_BATCH": 64,
    "WGAN_LR": 2e-4,
    "WGAN_BETAS": (0.5, 0.9),
    "WGAN_N_CRITIC": 5,
    "WGAN_GP_WEIGHT": 10.0,
}


def _wgan_gp_recipe(ctx: BenchContext) -> TrainedModel:
    """Chapter 07: WGAN-GP (Gulrajani et al. 2017) on grey-scale digits exactly as notebooks/07_wasserstein.ipynb
    trains it (:data:`WGAN_GP_RECIPE`): MLP generator with a sigmoid output (``wasserstein.MLPGenerator``), MLP
    critic with LeakyReLU(0.2) and no normalisation, n_critic critic steps with the per-sample gradient penalty
    per generator step (``wasserstein.wgan_gp_loss``); then ``n`` samples. No likelihood."""
    r = ctx.resolve(WGAN_GP_RECIPE)
    dev = ctx.device
    x_train, _ = data.load_digits("train", device=dev)
    torch.manual_seed(ctx.seed)
    generator = wasserstein.MLPGenerator(r["WGAN_LATENT"], 64, r["WGAN_HIDDEN"]).to(dev)
    critic = nets.MLP(64, 1, r["WGAN_HIDDEN"], activation=lambda: nn.LeakyReLU(0.2)).to(dev)
    t0 = time.perf_counter()
    history = gan.fit_gan(generator, critic, x_train, loss=wasserstein.wgan_gp_loss(r["WGAN_GP_WEIGHT"]),
                          steps=r["WGAN_STEPS"], batch_size=r["WGAN_BATCH"], latent_dim=r["WGAN_LATENT"],
                          n_critic=r["WGAN_N_CRITIC"], lr_g=r["WGAN_LR"], lr_d=r["WGAN_LR"], betas=r["WGAN_BETAS"],
                          seed=ctx.seed, progress=ctx.progress, desc="bench: WGAN-GP (ch. 07)")
    train_seconds = time.perf_counter() - t0
    samples, sample_seconds = _timed(dev, lambda: gan.generate(generator, ctx.n_samples, r["WGAN_LATENT"],
                                                                seed=ctx.seed))
    return TrainedModel.from_run(
        generator, history, train_seconds, r, sample_seconds=sample_seconds,
        samples={"samples": samples.reshape(ctx.n_samples, -1)},
        notes="'samples': G(z), z ~ N(0, I), pixels in (0, 1), compared with the grey-scale test digits and read "
              "against the grey-scale floor. A GAN has no likelihood; the critic's estimate is W1 only up to its "
              "Lipschitz constant and is not reported.",
    )


register(Recipe("wgan_gp", "07_wasserstein", "WGAN-GP, MLP generator and critic (grey-scale digits)", False,
                _wgan_gp_recipe))


#: The chapter 10 recipe, kept identical to notebooks/10_flow_matching.ipynb (the cells "Train the flow-matching
#: U-Net" and "Sample quality against network evaluations"); tests/test_bench.py reads the notebook and fails if the
#: two drift apart. The training budgets are chapter 08's (:data:`DIFFUSION_RECIPE`); the notebook asserts that.
FLOW_MATCHING_RECIPE = {
    "FM_CHANNELS": {"smoke": 16, "cpu": 16, "gpu": 32},
    "FM_STEPS": {"smoke": 30, "cpu": 1200, "gpu": 8000},
    "FM_BATCH_SIZE": {"smoke": 64, "cpu": 64, "gpu": 128},
    "FM_LR": 2e-3,
    "FM_WARMUP": 100,
    "FM_EMA_DECAY": {"smoke": 0.9, "cpu": 0.995, "gpu": 0.999},
    "FM_TIME_SCALE": 1000.0,
    "FM_HEUN_NFE": 20,
}


def _flow_matching_recipe(ctx: BenchContext) -> TrainedModel:
    """Chapter 10: conditional flow matching with the linear (rectified-flow) path on grey-scale digits scaled to
    [-1, 1], chapter 08's U-Net fed 1000 t (``flow_matching.TimeScaled``), chapter 08's optimiser, warm-up, EMA and
    budget, exactly as notebooks/10_flow_matching.ipynb trains it (:data:`FLOW_MATCHING_RECIPE`); ``n`` samples by
    Heun's method with ``FM_HEUN_NFE`` network evaluations (headline) and by Euler with the same NFE, from the EMA
    weights, mapped back to [0, 1]. No likelihood is computed (the ODE likelihood of 64-D images needs 64 backward
    passes per evaluation)."""
    r = ctx.resolve(FLOW_MATCHING_RECIPE)
    dev = ctx.device
    x_train = dm.to_model_space(data.load_digits("train", image_shape=True, device=dev)[0])
    torch.manual_seed(ctx.seed)
    model = fm.TimeScaled(nets.UNet(in_channels=1, channels=r["FM_CHANNELS"]), r["FM_TIME_SCALE"]).to(dev)
    optimiser, ema, after_step = _adam_warmup_ema(model, r["FM_LR"], r["FM_WARMUP"], r["FM_EMA_DECAY"])

    t0 = time.perf_counter()
    history = train.fit(model, optimiser, lambda m, b: fm.cfm_loss(m, b), x_train, steps=r["FM_STEPS"],
                        batch_size=r["FM_BATCH_SIZE"], seed=ctx.seed, desc="bench: flow matching (ch. 10)",
                        progress=ctx.progress, callback=after_step)
    train_seconds = time.perf_counter() - t0
    net = ema.module.eval()
    noise = torch.randn((ctx.n_samples, 1, 8, 8), generator=torch.Generator(device=dev).manual_seed(ctx.seed),
                        device=dev)
    nfe = r["FM_HEUN_NFE"]
    heun, sample_seconds = _timed(dev, lambda: fm.ode_solve(net, noise, nfe // 2, method="heun"))
    with torch.no_grad():
        euler = fm.ode_solve(net, noise, nfe, method="euler")
    return TrainedModel.from_run(
        net, history, train_seconds, r, sample_seconds=sample_seconds,
        samples={"heun": dm.to_image_space(heun).reshape(ctx.n_samples, -1),
                 "euler": dm.to_image_space(euler).reshape(ctx.n_samples, -1)},
        notes="'heun' (headline): Heun's method with fm_heun_nfe network evaluations from t = 0 (noise) to t = 1; "
              "'euler': Euler with the same number of evaluations from the same noise; both from the EMA weights, "
              "mapped from [-1, 1] to [0, 1] (clipped), compared with grey-scale test digits and the grey-scale "
              "floor. No likelihood.",
    )


register(Recipe("flow_matching", "10_flow_matching", "flow matching (linear path), chapter 08's U-Net, Heun sampler",
                False, _flow_matching_recipe))


# ------------------------------------------------------------------------------------------------
# The library reference implementations, side by side with the course's models
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Comparison:
    """One pair in the side-by-side table: a course model and the implementation people would pick instead.

    Attributes:
        name: key in results.json's ``comparisons``.
        course_model: the :data:`REGISTRY` entry whose numbers are the course side, or ``None`` when ``run``
            trains both sides itself.
        description: one line for the table.
        run: ``run(ctx, course_entry) -> dict`` with keys ``metric`` (what is compared, with its unit),
            ``lower_is_better``, ``course`` and ``reference`` (each ``{"value", "steps", "steps_per_second",
            "parameters", "what"}``).
    """

    name: str
    course_model: str | None
    description: str
    run: Callable[[BenchContext, dict | None], dict]


#: name -> Comparison, run after the models by :func:`run_bench` (``references=True``).
COMPARISONS: dict[str, Comparison] = {}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _clock(device: torch.device) -> Callable[[], float]:
    """The clock that times the two loops: on the CPU the thread's CPU time, which other programs on a shared
    machine do not inflate (a training step here is computation on this thread only); on an accelerator wall time,
    with the device synchronised before each reading."""
    return time.thread_time if device.type == "cpu" else time.perf_counter


def _plain_loop(loss_of_batch, optimiser, x: torch.Tensor, steps: int, batch_size: int, seed: int,
                after_step=None, clock: Callable[[], float] = time.perf_counter) -> float:
    """The loop a PyTorch user writes (as in pytorch/examples): per epoch a permutation, then per minibatch
    ``zero_grad``, ``loss.backward()``, ``step()``; no checks and no logging. Returns its time in seconds by
    ``clock`` (wall time by default, as the recipes' training times)."""
    g = torch.Generator().manual_seed(seed)
    done = 0
    _sync(x.device)
    t0 = clock()
    while done < steps:
        perm = torch.randperm(x.shape[0], generator=g).to(x.device)
        for i in range(0, x.shape[0] - batch_size + 1, batch_size):
            loss = loss_of_batch(x[perm[i:i + batch_size]])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            if after_step is not None:
                after_step()
            done += 1
            if done == steps:
                break
    _sync(x.device)
    return clock() - t0


def _entry(value, steps, seconds, model, what) -> dict:
    return {"value": _json_float(value), "steps": int(steps), "steps_per_second": float(steps / seconds),
            "parameters": int(sum(p.numel() for p in model.parameters())), "what": what}


def _loop_pair(ctx: BenchContext, build, x: torch.Tensor, loss_fn, batch_size: int, what: str) -> dict:
    """``train.fit`` against the plain loop around the same model, loss, optimiser (Adam at torch's defaults) and
    minibatch size: the median over interleaved repeats of each loop's steps per second of CPU time on the CPU
    (:func:`_clock`)."""
    steps = ctx.budget(smoke=10, cpu=400, gpu=400)
    repeats = ctx.budget(smoke=1, cpu=5, gpu=5)
    times = {"fit": [], "plain": []}
    for r in range(repeats):
        for loop in ("plain", "fit") if r % 2 == 0 else ("fit", "plain"):
            torch.manual_seed(ctx.seed)
            model = build().to(ctx.device)
            optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
            if loop == "plain":
                seconds = _plain_loop(lambda b, m=model: loss_fn(m, b)[0], optimiser, x, steps, batch_size, ctx.seed,
                                      clock=_clock(ctx.device))
            else:
                clock = _clock(ctx.device)
                _sync(ctx.device)
                t0 = clock()
                train.fit(model, optimiser, loss_fn, x, steps=steps, batch_size=batch_size, seed=ctx.seed,
                          progress=False)
                _sync(ctx.device)
                seconds = clock() - t0
            times[loop].append(seconds)
    med = {k: float(np.median(v)) for k, v in times.items()}
    unit = "CPU time" if ctx.device.type == "cpu" else "wall time"
    return {"metric": f"steps per second of {unit} (the same model, loss and optimiser)", "lower_is_better": False,
            "course": _entry(steps / med["fit"], steps, med["fit"], model, f"coursekit.train.fit: {what}"),
            "reference": _entry(steps / med["plain"], steps, med["plain"], model, f"plain PyTorch loop: {what}"),
            "repeats": repeats}


def _loop_vae(ctx: BenchContext, _course) -> dict:
    r = ctx.resolve(VAE_RECIPE)
    x, _ = data.load_digits("train", binarize=True, device=ctx.device)
    return _loop_pair(ctx, lambda: vae.VAE(data_dim=x.shape[1], latent_dim=r["LATENT_DIM"], hidden=r["HIDDEN"]),
                      x, lambda m, b: vae.vae_loss(m, b, beta=1.0), r["BATCH_SIZE"], "the chapter 04 VAE")


#: The chapter 05 two-moons recipe (notebooks/05_flows.ipynb, "Train RealNVP and MAF on two moons").
MOONS_RECIPE = {
    "MOONS_STEPS": {"smoke": 40, "cpu": 2000, "gpu": 4000},
    "MOONS_N": {"smoke": 500, "cpu": 4000, "gpu": 4000},
}
_MOONS_BATCH, _MOONS_LR, _MOONS_TEST_N = 256, 1e-3, 2000


def _moons(ctx: BenchContext):
    r = ctx.resolve(MOONS_RECIPE)
    return (r, data.two_moons(r["MOONS_N"], noise=0.1, seed=0, device=ctx.device),
            data.two_moons(_MOONS_TEST_N, noise=0.1, seed=1, device=ctx.device))


def _loop_moons(ctx: BenchContext, _course) -> dict:
    _, x, _ = _moons(ctx)
    return _loop_pair(ctx, lambda: flows.realnvp(2, n_couplings=6, hidden=(64, 64)), x, flows.nll_loss,
                      _MOONS_BATCH, "the chapter 05 two-moons RealNVP")


def _zuko_flow(ctx: BenchContext, kind: str, seed: int):
    """zuko's ``RealNVP`` or ``NSF`` on two moons with the chapter's steps, batch size, learning rate and data,
    trained by the plain loop from ``seed``: ``(held-out NLL in nats per point, seconds, flow)``."""
    import zuko  # the `bench` extra

    r, x, x_test = _moons(ctx)
    torch.manual_seed(seed)
    if kind == "RealNVP":
        flow = zuko.flows.RealNVP(2, transforms=6, hidden_features=(64, 64)).to(ctx.device)
    else:
        flow = zuko.flows.NSF(2, transforms=4, hidden_features=(64, 64)).to(ctx.device)
    optimiser = torch.optim.Adam(flow.parameters(), lr=_MOONS_LR)
    seconds = _plain_loop(lambda b: -flow().log_prob(b).mean(), optimiser, x, r["MOONS_STEPS"], _MOONS_BATCH, seed)
    with torch.no_grad():
        nll = -flow().log_prob(x_test).mean().item()
    return nll, seconds, flow


def _course_moons_flow(ctx: BenchContext, build, what: str, seed: int):
    """The course's flow ``build()`` trained by ``train.fit`` like :func:`_zuko_flow`: ``(NLL, seconds, flow)``."""
    r, x, x_test = _moons(ctx)
    torch.manual_seed(seed)
    flow = build().to(ctx.device)
    optimiser = torch.optim.Adam(flow.parameters(), lr=_MOONS_LR)
    t0 = time.perf_counter()
    train.fit(flow, optimiser, flows.nll_loss, x, steps=r["MOONS_STEPS"], batch_size=_MOONS_BATCH, seed=seed,
              desc=f"bench: {what} on two moons (seed {seed})", progress=ctx.progress)
    seconds = time.perf_counter() - t0
    flow.eval()
    with torch.no_grad():
        nll = -flow.log_prob(x_test).mean().item()
    return nll, seconds, flow


def _flow_pair(ctx: BenchContext, build, what: str, kind: str) -> dict:
    """The course flow and zuko's ``kind`` on two moons from the same seeds (smoke 1, cpu and gpu 5): each side's
    value is its mean held-out NLL over the seeds, with the per-seed values and their standard error. One seed's
    NLL varies by about as much as the two implementations differ, so a single run cannot compare them."""
    seeds = [ctx.seed + k for k in range(ctx.budget(smoke=1, cpu=5, gpu=5))]
    r, _, _ = _moons(ctx)
    runs = {"course": [_course_moons_flow(ctx, build, what, s) for s in seeds],
            "reference": [_zuko_flow(ctx, kind, s) for s in seeds]}
    hidden = "6 affine couplings" if kind == "RealNVP" else "4 autoregressive spline transforms, 8 bins"
    whats = {"course": what, "reference": f"zuko.flows.{kind} ({hidden}, hidden (64, 64))"}
    out = {"metric": f"two-moons test NLL (nats per point), mean over {len(seeds)} seeds", "lower_is_better": True,
           "seeds": seeds}
    for side, rs in runs.items():
        nll = np.array([v for v, _, _ in rs])
        entry = _entry(float(nll.mean()), r["MOONS_STEPS"] * len(rs), sum(sec for _, sec, _ in rs), rs[0][2],
                       whats[side])
        entry["steps"] = r["MOONS_STEPS"]
        entry["seed_values"] = [float(v) for v in nll]
        entry["standard_error"] = float(nll.std(ddof=1) / math.sqrt(len(nll))) if len(nll) > 1 else None
        out[side] = entry
    diffs = np.array(out["course"]["seed_values"]) - np.array(out["reference"]["seed_values"])
    out["difference_standard_error"] = float(diffs.std(ddof=1) / math.sqrt(len(diffs))) if len(diffs) > 1 else None
    return out


def _nsf_vs_zuko(ctx: BenchContext, _course) -> dict:
    return _flow_pair(ctx, lambda: flows.nsf(2, n_couplings=4, hidden=(64, 64), bins=8, bound=4.0),
                      "coursekit.flows.nsf (4 spline couplings, 8 bins, hidden (64, 64))", "NSF")


def _realnvp_vs_zuko(ctx: BenchContext, _course) -> dict:
    return _flow_pair(ctx, lambda: flows.realnvp(2, n_couplings=6, hidden=(64, 64)),
                      "coursekit.flows.realnvp (6 affine couplings, hidden (64, 64))", "RealNVP")


class _ExamplesVAE(nn.Module):
    """The VAE of pytorch/examples (``vae/main.py``: fc1, fc21/fc22, fc3, fc4 with ReLU; Bernoulli decoder, loss
    BCE + KLD), one more hidden layer on each side and sized for 8x8 digits: 64-256-256-(16, 16) and
    16-256-256-64. ``encode``/``decode`` follow coursekit.vae's interface so the same bounds evaluate it."""

    def __init__(self, data_dim: int = 64, hidden: int = 256, latent_dim: int = 16):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(data_dim, hidden), nn.Linear(hidden, hidden)
        self.fc21, self.fc22 = nn.Linear(hidden, latent_dim), nn.Linear(hidden, latent_dim)
        self.fc3, self.fc4 = nn.Linear(latent_dim, hidden), nn.Linear(hidden, hidden)
        self.fc5 = nn.Linear(hidden, data_dim)

    def encode(self, x):
        h = torch.relu(self.fc2(torch.relu(self.fc1(x))))
        return self.fc21(h), self.fc22(h)

    def decode(self, z):
        return self.fc5(torch.relu(self.fc4(torch.relu(self.fc3(z)))))

    def loss(self, x):
        mu, logvar = self.encode(x)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        bce = nn.functional.binary_cross_entropy_with_logits(self.decode(z), x, reduction="sum")
        kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
        return (bce + kld) / x.shape[0]


def _vae_vs_examples(ctx: BenchContext, course: dict) -> dict:
    """The chapter 04 VAE (its bench entry) against the pytorch/examples-style VAE trained by the plain loop with
    the same steps, batch size and binarised training digits (Adam, lr 1e-3 as in pytorch/examples); both
    evaluated by the same IWAE bound with the chapter's k on the same test digits."""
    r = ctx.resolve(VAE_RECIPE)
    x, _ = data.load_digits("train", binarize=True, device=ctx.device)
    x_test, _ = data.load_digits("test", binarize=True, device=ctx.device)
    torch.manual_seed(ctx.seed)
    ref = _ExamplesVAE(x.shape[1]).to(ctx.device)
    optimiser = torch.optim.Adam(ref.parameters(), lr=1e-3)
    seconds = _plain_loop(ref.loss, optimiser, x, r["STEPS"], r["BATCH_SIZE"], ctx.seed)
    ref.eval()
    torch.manual_seed(ctx.seed)
    with torch.no_grad():
        iwae = vae.iwae_bound(ref, x_test, k=r["IWAE_K"]).mean().item()
    lik = course["likelihood"]
    return {"metric": f"test NLL bound -IWAE (k = {r['IWAE_K']}, nats per image)", "lower_is_better": True,
            "course": {"value": _json_float(-lik["test_iwae_nats"]), "steps": course["steps"],
                       "steps_per_second": course["steps_per_second"], "parameters": course["parameters"],
                       "what": f"coursekit.vae.VAE, hidden {r['HIDDEN']}, latent {r['LATENT_DIM']}"},
            "reference": _entry(-iwae, r["STEPS"], seconds, ref, "pytorch/examples-style VAE, 64-256-256-16")}


#: Channels of the diffusers U-Net: its smallest configuration with the course U-Net's two resolutions and
#: self-attention at the lower one (about 1.8 times the course U-Net's parameters under cpu).
_DIFFUSERS_CHANNELS = (16, 32)


def _ddpm_vs_diffusers(ctx: BenchContext, course: dict) -> dict:
    """The chapter 08 DDPM (its bench entry) against diffusers' ``UNet2DModel`` with its ``DDPMScheduler`` (the same
    linear schedule and T), trained with the same steps, batch, optimiser, warm-up and EMA by the plain loop and
    sampled with the scheduler's full ancestral chain; FID in the course classifier's features at the same n."""
    import diffusers  # the `bench` extra

    r = ctx.resolve(DIFFUSION_RECIPE)
    dev = ctx.device
    x = dm.to_model_space(data.load_digits("train", image_shape=True, device=dev)[0])
    T = r["T"]
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=T, beta_schedule="linear", beta_start=1e-4 * 1000 / T,
                                        beta_end=0.02 * 1000 / T)
    torch.manual_seed(ctx.seed)
    unet = diffusers.UNet2DModel(sample_size=8, in_channels=1, out_channels=1, layers_per_block=1,
                                 block_out_channels=_DIFFUSERS_CHANNELS, norm_num_groups=8,
                                 down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                                 up_block_types=("AttnUpBlock2D", "UpBlock2D")).to(dev)
    optimiser, ema, after_step = _adam_warmup_ema(unet, r["LR"], r["WARMUP"], r["EMA_DECAY"])

    def loss_of_batch(x0):
        noise = torch.randn_like(x0)
        t = torch.randint(0, T, (x0.shape[0],), device=dev)
        return nn.functional.mse_loss(unet(scheduler.add_noise(x0, noise, t), t).sample, noise)

    seconds = _plain_loop(loss_of_batch, optimiser, x, r["STEPS"], r["BATCH_SIZE"], ctx.seed, after_step)
    net = ema.module.eval()
    gen = torch.Generator(device=dev).manual_seed(ctx.seed)
    sample = torch.randn(ctx.n_samples, 1, 8, 8, generator=gen, device=dev)
    scheduler.set_timesteps(T)
    with torch.no_grad():
        for t in scheduler.timesteps:
            sample = scheduler.step(net(sample, t).sample, t, sample, generator=gen).prev_sample
    images = dm.to_image_space(sample.clamp(-1, 1)).reshape(ctx.n_samples, -1).cpu()
    x_real = data.load_digits("test")[0][:ctx.n_samples]
    fid = metrics.sample_quality(x_real, images, seed=ctx.seed)["fid"]
    return {"metric": f"FID of {ctx.n_samples} ancestral samples (T = {T}), course classifier features",
            "lower_is_better": True,
            "course": {"value": course["fid"], "steps": course["steps"], "steps_per_second": course["steps_per_second"],
                       "parameters": course["parameters"], "what": f"coursekit.nets.UNet, {r['CHANNELS']} channels"},
            "reference": _entry(fid, r["STEPS"], seconds, unet,
                                f"diffusers UNet2DModel {_DIFFUSERS_CHANNELS} + DDPMScheduler")}


def register_comparison(comparison: Comparison) -> Comparison:
    """Add a comparison to :data:`COMPARISONS` (a name may be registered once)."""
    if comparison.name in COMPARISONS:
        raise ValueError(f"a comparison named {comparison.name!r} is already registered")
    COMPARISONS[comparison.name] = comparison
    return comparison


register_comparison(Comparison("loop_vae", None, "training loop overhead, chapter 04 VAE", _loop_vae))
register_comparison(Comparison("loop_moons", None, "training loop overhead, chapter 05 two-moons RealNVP",
                               _loop_moons))
register_comparison(Comparison("vae_examples", "vae", "chapter 04 VAE vs pytorch/examples-style VAE",
                               _vae_vs_examples))
register_comparison(Comparison("realnvp_zuko", None, "chapter 05 RealNVP vs zuko RealNVP (two moons)",
                               _realnvp_vs_zuko))
register_comparison(Comparison("nsf_zuko", None, "chapter 05 spline flow vs zuko NSF (two moons)", _nsf_vs_zuko))
register_comparison(Comparison("ddpm_diffusers", "ddpm", "chapter 08 DDPM vs diffusers UNet2DModel + DDPMScheduler",
                               _ddpm_vs_diffusers))


def _run_comparisons(results: dict, profile: str, seed: int, n: int, device, progress: bool) -> dict:
    """Every comparison whose course model was run (or that trains both sides): the two entries, the quality
    difference (course - reference, in the metric's unit) and the steps-per-second ratio (course / reference)."""
    out = {}
    for name, comp in COMPARISONS.items():
        course = results["models"].get(comp.course_model) if comp.course_model else None
        if comp.course_model and course is None:
            continue
        runtime.seed_everything(seed)
        ctx = BenchContext(profile=profile, seed=seed, device=device, n_samples=n, progress=progress)
        res = comp.run(ctx, course)
        c, ref = res["course"], res["reference"]
        diff = None if c["value"] is None or ref["value"] is None else c["value"] - ref["value"]
        ratio = c["steps_per_second"] / ref["steps_per_second"] if c["steps_per_second"] else None
        out[name] = {"description": comp.description, **res, "difference": diff, "speed_ratio": ratio}
    return out
#: The chapter 11 recipes, kept identical to notebooks/11_autoregressive.ipynb (the cells "Train the gated PixelCNN
#: and the causal transformer", "Two VQ-VAEs", "The prior" and "The DALL-E pipeline"); tests/test_bench.py reads the
#: notebook and fails if they drift apart.
PIXELCNN_RECIPE = {
    "PIXEL_STEPS": {"smoke": 20, "cpu": 500, "gpu": 3000},
    "PIXEL_BATCH": 64,
    "PIXEL_LR": 2e-3,
    "GATED_CHANNELS": {"smoke": 16, "cpu": 32, "gpu": 64},
    "GATED_LAYERS": 4,
    "GATED_KERNEL": 5,
    "EVAL_EVERY": {"smoke": 10, "cpu": 50, "gpu": 100},
}
VQVAE_RECIPE = {
    "VQ_CODES": 32,
    "VQ_DIM": 16,
    "VQ_CHANNELS": 32,
    "VQ_STEPS": {"smoke": 20, "cpu": 1000, "gpu": 3000},
    "VQ_BATCH": 64,
    "VQ_LR": 2e-3,
    "RESTART_EVERY": {"smoke": 5, "cpu": 50, "gpu": 50},
}
VQ_PRIOR_RECIPE = {**VQVAE_RECIPE, "PRIOR_STEPS": {"smoke": 20, "cpu": 600, "gpu": 2000},
                   "PRIOR_D_MODEL": {"smoke": 16, "cpu": 48, "gpu": 128}, "PRIOR_LR": 2e-3}
DALLE_RECIPE = {**VQVAE_RECIPE, "DALLE_STEPS": {"smoke": 20, "cpu": 800, "gpu": 3000},
                "DALLE_D_MODEL": {"smoke": 16, "cpu": 64, "gpu": 128}, "DALLE_LR": 2e-3}


def _pixelcnn_recipe(ctx: BenchContext) -> TrainedModel:
    """Chapter 11: the gated PixelCNN (vertical and horizontal stacks) on the 17-level digits as tokens, exactly as
    notebooks/11_autoregressive.ipynb trains it (:data:`PIXELCNN_RECIPE`, best validation NLL kept); its exact
    test NLL and ``n`` ancestral samples at temperature 1."""
    r = ctx.resolve(PIXELCNN_RECIPE)
    dev = ctx.device
    tok = {s: ar.digits_to_tokens(data.load_digits(s, device=dev)[0]) for s in ("train", "val", "test")}
    torch.manual_seed(ctx.seed)
    model = ar.GatedPixelCNN(ar.DIGITS_LEVELS, r["GATED_CHANNELS"], r["GATED_LAYERS"], r["GATED_KERNEL"]).to(dev)
    steps = r["PIXEL_STEPS"]
    best = _BestWeights(lambda m: -ar.sequence_log_prob(m, tok["val"]).mean().item(), r["EVAL_EVERY"], steps)

    t0 = time.perf_counter()
    history = train.fit(model, torch.optim.Adam(model.parameters(), lr=r["PIXEL_LR"]), ar.nll_loss, tok["train"],
                        steps=steps, batch_size=r["PIXEL_BATCH"], seed=ctx.seed, desc="bench: gated PixelCNN (ch. 11)",
                        progress=ctx.progress, lr_schedule="linear", callback=best)
    train_seconds = time.perf_counter() - t0
    best.restore(model)
    model.eval()
    with torch.no_grad():
        nll = -ar.sequence_log_prob(model, tok["test"]).mean().item()
    s, sample_seconds = _timed(dev, lambda: ar.tokens_to_digits(
        ar.sample(model, ctx.n_samples, generator=torch.Generator(device=dev).manual_seed(ctx.seed))))
    return TrainedModel.from_run(
        model, history, train_seconds, r, samples={"levels": s}, sample_seconds=sample_seconds,
        likelihood_kind="exact",
        likelihood={"test_nll_nats": nll, "test_nll_bits_per_dim": float(ar.bits_per_dim(nll, 64)),
                    "best_val_nll_nats": best.value},
        notes="'levels': ancestral samples (temperature 1) of the 17 grey levels, shown as k/16; compared with the "
              "grey-scale test digits and floor. Likelihood: the exact NLL of the 250 test digits as 17-level data "
              "(no dequantisation term), nats per image and bits/dim.",
    )


def _train_vqvae(r: dict, ctx: BenchContext, images: torch.Tensor) -> ar.VQVAE:
    """The chapter 11 VQ-VAE with dead-code restarts every RESTART_EVERY steps in the first half of training."""
    torch.manual_seed(ctx.seed)
    model = ar.VQVAE(r["VQ_CODES"], r["VQ_DIM"], r["VQ_CHANNELS"]).to(ctx.device)
    g = torch.Generator().manual_seed(ctx.seed)

    def callback(step, m, history):
        if step % r["RESTART_EVERY"] == 0 and step <= r["VQ_STEPS"] // 2:
            with torch.no_grad():
                m.vq.restart_dead_codes(m.encode(images[torch.randint(len(images), (256,), generator=g)]), g)

    train.fit(model, torch.optim.Adam(model.parameters(), lr=r["VQ_LR"]), ar.vqvae_loss, images, steps=r["VQ_STEPS"],
              batch_size=r["VQ_BATCH"], seed=ctx.seed, callback=callback, desc="bench: VQ-VAE (ch. 11)",
              progress=ctx.progress)
    return model.eval()


def _vq_prior_recipe(ctx: BenchContext) -> TrainedModel:
    """Chapter 11: a VQ-VAE (32 codes on a 4x4 grid, dead-code restarts) and a causal transformer prior over the 16
    codes, as notebooks/11_autoregressive.ipynb trains them (:data:`VQ_PRIOR_RECIPE`); ``n`` decoded prior samples.
    ``train_seconds`` covers both stages."""
    r = ctx.resolve(VQ_PRIOR_RECIPE)
    dev = ctx.device
    images = data.load_digits("train", image_shape=True, device=dev)[0]
    t0 = time.perf_counter()
    vqvae = _train_vqvae(r, ctx, images)
    codes = vqvae.tokenize(images)
    torch.manual_seed(ctx.seed)
    prior = ar.CausalTransformer(r["VQ_CODES"], 16, r["PRIOR_D_MODEL"], 4, 2).to(dev)
    history = train.fit(prior, torch.optim.Adam(prior.parameters(), lr=r["PRIOR_LR"]), ar.nll_loss, codes,
                        steps=r["PRIOR_STEPS"], batch_size=64, seed=ctx.seed, desc="bench: code prior (ch. 11)",
                        progress=ctx.progress, lr_schedule="linear")
    train_seconds = time.perf_counter() - t0
    usage = ar.code_usage(codes, r["VQ_CODES"])
    images_out, sample_seconds = _timed(dev, lambda: vqvae.decode_codes(ar.sample(
        prior.eval(), ctx.n_samples, generator=torch.Generator(device=dev).manual_seed(ctx.seed))).reshape(
        ctx.n_samples, -1))
    return TrainedModel.from_run(
        prior, history, train_seconds, r, samples={"decoded": images_out}, sample_seconds=sample_seconds,
        notes="'decoded': codes sampled from the transformer prior (temperature 1) and decoded by the VQ-VAE "
              "(sigmoid intensities in (0, 1)); compared with the grey-scale test digits and floor. No likelihood "
              "reported (the VQ-VAE's decoder has no discrete likelihood). Code usage on the training digits: "
              f"{usage['used']}/{r['VQ_CODES']} codes, perplexity {usage['perplexity']:.2f}.",
    )


def _dalle_recipe(ctx: BenchContext) -> TrainedModel:
    """Chapter 11: the DALL-E pipeline at digit scale as notebooks/11_autoregressive.ipynb trains it
    (:data:`DALLE_RECIPE`): captions "a thin/thick <digit>" as 3 word tokens followed by the 16 VQ codes, one causal
    transformer; ``n`` images from the prompts "a thick <digit>" for the ten classes in turn, and the course
    classifier's agreement with the prompted class."""
    r = ctx.resolve(DALLE_RECIPE)
    dev = ctx.device
    x, y = data.load_digits("train", device=dev)
    images = x.reshape(-1, 1, 8, 8)
    tokenizer = ar.WordTokenizer(("a", "thin", "thick") + ar.DIGIT_NAMES)
    n_text = len(tokenizer)
    t0 = time.perf_counter()
    vqvae = _train_vqvae(r, ctx, images)
    captions, _ = ar.digit_captions(x, y)
    seq = torch.cat([tokenizer.encode(captions).to(dev), vqvae.tokenize(images) + n_text], dim=1)
    torch.manual_seed(ctx.seed)
    model = ar.CausalTransformer(n_text + r["VQ_CODES"], seq.shape[1], r["DALLE_D_MODEL"], 4, 2).to(dev)
    history = train.fit(model, torch.optim.Adam(model.parameters(), lr=r["DALLE_LR"]), ar.nll_loss, seq,
                        steps=r["DALLE_STEPS"], batch_size=64, seed=ctx.seed, desc="bench: text + image (ch. 11)",
                        progress=ctx.progress, lr_schedule="linear")
    train_seconds = time.perf_counter() - t0
    asked = torch.arange(ctx.n_samples) % 10
    prefix = tokenizer.encode([f"a thick {ar.DIGIT_NAMES[c]}" for c in asked.tolist()]).to(dev)
    def draw():
        s = ar.sample(model.eval(), ctx.n_samples, prefix=prefix, token_range=(n_text, n_text + r["VQ_CODES"]),
                      generator=torch.Generator(device=dev).manual_seed(ctx.seed))
        return vqvae.decode_codes(s[:, prefix.shape[1]:] - n_text).reshape(ctx.n_samples, -1)

    out, sample_seconds = _timed(dev, draw)
    pred = metrics.probabilities(out.cpu(), metrics.get_digits_classifier()).argmax(1)
    agreement = float((pred == asked.to(pred.device)).float().mean())
    return TrainedModel.from_run(
        model, history, train_seconds, r, samples={"prompted": out}, sample_seconds=sample_seconds,
        notes="'prompted': images generated from 'a thick <digit>' for the classes 0..9 in turn (temperature 1), "
              "decoded by the VQ-VAE; compared with the grey-scale test digits and floor. The course classifier "
              f"assigns {100 * agreement:.1f} % of them to the prompted class.",
    )


register(Recipe("pixelcnn", "11_autoregressive", "gated PixelCNN over 17 grey levels (exact likelihood)", False,
                _pixelcnn_recipe))
register(Recipe("vq_prior", "11_autoregressive", "VQ-VAE (32 codes, 4x4 grid) + causal transformer prior", False,
                _vq_prior_recipe))
register(Recipe("dalle", "11_autoregressive", "caption tokens + VQ codes in one causal transformer (prompted)",
                False, _dalle_recipe))


#: The chapter 02 recipe, kept identical to notebooks/02_mixtures.ipynb (the cell "Digits: dequantised 17-level
#: images"); tests/test_bench.py reads the notebook and fails if the two drift apart. The covariance floors per
#: covariance type are :data:`GMM_FLOOR` (the notebook's ``FLOOR``).
GMM_RECIPE = {
    "DIGITS_CANDIDATES": {
        "smoke": [("diag", 1), ("diag", 4)],
        "cpu": [("diag", 1), ("diag", 5), ("diag", 10), ("diag", 20), ("diag", 40), ("diag", 80), ("diag", 160),
                ("full", 1), ("full", 2), ("full", 5), ("full", 10)],
        "gpu": [("diag", 1), ("diag", 5), ("diag", 10), ("diag", 20), ("diag", 40), ("diag", 80), ("diag", 160),
                ("full", 1), ("full", 2), ("full", 5), ("full", 10), ("full", 20)],
    },
    "EM_ITER": {"smoke": 10, "cpu": 100, "gpu": 300},
    "EM_TOL": 1e-4,
}
GMM_FLOOR = {"diag": 1e-4, "full": 1e-3}


def _dequantised_digits(split: str, seed: int, device) -> torch.Tensor:
    """A split's 17-level digits uniformly dequantised to [0, 1)^64 with a fixed seed, float64 (chapter 02)."""
    levels = (data.load_digits(split, device=device)[0] * 16).round()
    gen = torch.Generator(device=levels.device).manual_seed(seed)
    return metrics.uniform_dequantize(levels, flows.DIGITS_LEVELS, generator=gen).double()


def _gmm_recipe(ctx: BenchContext) -> TrainedModel:
    """Chapter 02: Gaussian mixtures fitted by EM to the dequantised 17-level digits, the candidate (covariance type,
    K) with the best validation likelihood kept, exactly as notebooks/02_mixtures.ipynb does (:data:`GMM_RECIPE`,
    :data:`GMM_FLOOR`); its test bits/dim (dequantisation bound) and ``n`` ancestral samples quantised back to the 17
    levels. ``steps`` counts the EM iterations of all candidates, ``train_seconds`` their fits."""
    r = ctx.resolve(GMM_RECIPE)
    dev = ctx.device
    y_train, y_val, y_test = (_dequantised_digits(s, ctx.seed + i, dev) for i, s in
                              enumerate(("train", "val", "test"), start=1))
    dim = y_train.shape[1]
    best, iterations = None, 0
    t0 = time.perf_counter()
    for cov_type, k in r["DIGITS_CANDIDATES"]:
        fit = mixtures.fit_gmm(y_train, k, covariance_type=cov_type, reg_covar=GMM_FLOOR[cov_type],
                               max_iter=r["EM_ITER"], tol=r["EM_TOL"], seed=ctx.seed)
        iterations += fit.n_iter
        val = -fit.log_prob(y_val).mean().item()
        if best is None or val < best[0]:
            best = (val, cov_type, k, fit)
    train_seconds = time.perf_counter() - t0
    _, cov_type, k, gmm = best
    nll = -gmm.log_prob(y_test).mean().item()
    bpd = float(metrics.discrete_nll_to_bits_per_dim(nll, dim, flows.DIGITS_LEVELS))
    gen = torch.Generator().manual_seed(ctx.seed)
    samples, sample_seconds = _timed(dev, lambda: flows.quantize_digits(gmm.sample(ctx.n_samples, generator=gen)))
    return TrainedModel(
        model=gmm, steps=max(iterations, 1), train_seconds=train_seconds, samples={"levels": samples.float()},
        likelihood={"test_nll_nats_dequantized": nll, "test_nll_bits_per_dim": bpd,
                    "test_nll_nats": bpd * dim * math.log(2), "best_val_nll_nats_dequantized": float(best[0])},
        config={"candidates": [list(c) for c in r["DIGITS_CANDIDATES"]], "em_iter": r["EM_ITER"],
                "em_tol": r["EM_TOL"], "chosen": [cov_type, k]},
        notes=f"the candidate with the best validation likelihood: {cov_type} covariances, K = {k}. 'levels': "
              "ancestral samples quantised to the bin floor(17 y) and shown as k/16, the 17-level grey-scale space; "
              "compared with grey-scale test digits and the grey-scale floor. Likelihood: the density's NLL of the "
              "dequantised test digits plus 64 log 17 nats (an upper bound on the discrete NLL, Theis et al. 2016). "
              "steps: EM iterations over all candidates.",
        sample_seconds=sample_seconds, likelihood_kind="upper bound", n_parameters=gmm.n_parameters())


#: The chapter 03 recipe, kept identical to notebooks/03_autoencoders.ipynb (the budgets cell and the cells "Nonlinear
#: AE vs PCA" and "Codes of the k = 8 autoencoder"); tests/test_bench.py reads the notebook and fails if the two
#: drift apart. The code size (8) and the learning rate (2e-3) are the notebook's literals.
AE_GMM_RECIPE = {
    "AE_STEPS": {"smoke": 150, "cpu": 1500, "gpu": 8000},
    "AE_HIDDEN": {"smoke": (64,), "cpu": (128,), "gpu": (256, 128)},
    "GMM_COMPONENTS": {"smoke": 4, "cpu": 10, "gpu": 10},
    "BATCH": 128,
}
_AE_CODE_SIZE, _AE_LR = 8, 2e-3


def _ae_gmm_recipe(ctx: BenchContext) -> TrainedModel:
    """Chapter 03: an autoencoder with an 8-dimensional code (MLP encoder and decoder, sigmoid output, squared error)
    on the grey-scale digits, then a full-covariance Gaussian mixture fitted by EM to the training codes, as
    notebooks/03_autoencoders.ipynb does (:data:`AE_GMM_RECIPE`); ``n`` decoded mixture samples. No likelihood (the
    decoder is deterministic). ``train_seconds`` covers both stages; the parameters count both."""
    r = ctx.resolve(AE_GMM_RECIPE)
    dev = ctx.device
    x_train, _ = data.load_digits("train", device=dev)
    torch.manual_seed(ctx.seed)
    model = ae.Autoencoder(x_train.shape[1], _AE_CODE_SIZE, hidden=r["AE_HIDDEN"], output="sigmoid").to(dev)
    t0 = time.perf_counter()
    history = train.fit(model, torch.optim.Adam(model.parameters(), lr=_AE_LR), ae.autoencoder_loss, x_train,
                        steps=r["AE_STEPS"], batch_size=r["BATCH"], seed=ctx.seed, desc="bench: autoencoder (ch. 03)",
                        progress=ctx.progress)
    model.eval()
    with torch.no_grad():
        codes = model.encode(x_train)
    gmm = mixtures.fit_gmm(codes.double().cpu(), r["GMM_COMPONENTS"], seed=ctx.seed)
    train_seconds = time.perf_counter() - t0
    gen = torch.Generator().manual_seed(ctx.seed)
    samples, sample_seconds = _timed(dev, lambda: model.decode(gmm.sample(ctx.n_samples, generator=gen).float()
                                                                .to(dev)))
    n_params = sum(p.numel() for p in model.parameters()) + gmm.n_parameters()
    return TrainedModel.from_run(
        model, history, train_seconds, r, samples={"decoded": samples}, sample_seconds=sample_seconds,
        n_parameters=n_params,
        notes=f"'decoded': codes drawn from a {r['GMM_COMPONENTS']}-component Gaussian mixture fitted to the training "
              "codes, decoded (sigmoid intensities in (0, 1)); compared with the grey-scale test digits and floor. "
              "No likelihood. Parameters: the autoencoder's and the mixture's.",
    )


register(Recipe("gmm", "02_mixtures", "Gaussian mixture by EM, dequantised grey-scale digits", False, _gmm_recipe))
register(Recipe("ae_gmm", "03_autoencoders", "autoencoder (code 8) + Gaussian mixture on its codes", False,
                _ae_gmm_recipe))


#: The chapter 12 recipes, kept identical to notebooks/12_guidance.ipynb (the cells "The class-conditional U-Net",
#: "The sweep", "Captions, tokens and two contrastive models", "The autoencoder" and "Latent diffusion");
#: tests/test_bench.py reads the notebook and fails if they drift apart. The U-Net's architecture and budgets are
#: chapter 08's (:data:`DIFFUSION_RECIPE`), and the latent model trains for the same steps with the same optimiser.
GUIDED_RECIPE = {
    **{k: v for k, v in DIFFUSION_RECIPE.items() if k != "DDIM_STEPS"},
    "P_UNCOND": 0.2,
    "GUIDANCE_WEIGHTS": (0.0, 1.0, 1.5, 2.0, 3.0, 5.0),
    "GUIDED_DDIM_STEPS": {"smoke": 10, "cpu": 25, "gpu": 50},
}
LATENT_DIFFUSION_RECIPE = {
    **{k: v for k, v in GUIDED_RECIPE.items() if k != "CHANNELS"},
    "CAPTION_LEN": 4,
    "SHORT_SHARE": 0.25,
    "CLIP_EMBED": 32,
    "CLIP_STEPS": {"smoke": 20, "cpu": 500, "gpu": 2000},
    "CLIP_BATCH": 128,
    "CLIP_LR": 2e-3,
    "CLIP_TEMPERATURE": 0.07,
    "AE_CODE": 8,
    "AE_HIDDEN": (256, 128),
    "AE_STEPS": {"smoke": 20, "cpu": 1500, "gpu": 4000},
    "AE_LR": 2e-3,
    "LDM_WIDTH": 128,
    "LDM_DEPTH": 2,
}
_NULL_LABEL = 10


def _weight_name(w: float) -> str:
    return f"w{w:g}".replace(".", "p")


def _guided_sets(ctx: BenchContext, r: dict, sample_at, labels: torch.Tensor):
    """Sample sets at every guidance weight (the unguided w = 1 first, the headline), their class agreement and the
    wall time of drawing the headline set."""
    weights = [1.0] + [w for w in r["GUIDANCE_WEIGHTS"] if w != 1.0]
    clf = metrics.get_digits_classifier()
    samples, agreement, seconds = {}, {}, {}
    for w in weights:
        images, seconds[w] = _timed(ctx.device, lambda w=w: sample_at(w).reshape(ctx.n_samples, -1).clamp(0.0, 1.0))
        samples[_weight_name(w)] = images
        agreement[w] = gan.class_agreement(images.cpu(), labels.cpu(), clf)["accuracy"]
    return samples, ", ".join(f"w = {w:g}: {100 * a:.1f} %" for w, a in agreement.items()), seconds[1.0]


def _guided_recipe(ctx: BenchContext) -> TrainedModel:
    """Chapter 12: chapter 08's U-Net with a label embedding, trained on L_simple with label dropout (P_UNCOND) by
    chapter 08's recipe, exactly as notebooks/12_guidance.ipynb trains it (:data:`GUIDED_RECIPE`); ``n`` samples per
    guidance weight, the requested classes 0..9 in turn, classifier-free guided DDIM from the same noise."""
    r = ctx.resolve(GUIDED_RECIPE)
    dev = ctx.device
    x01, y = data.load_digits("train", image_shape=True, device=dev)
    x_train = dm.to_model_space(x01)
    abar = dm.alphas_cumprod_from_betas(dm.beta_schedule(r["SCHEDULE"], r["T"])).float().to(dev)
    null = torch.tensor(_NULL_LABEL, device=dev)
    torch.manual_seed(ctx.seed)
    model = nets.UNet(in_channels=1, channels=r["CHANNELS"], n_classes=10).to(dev)
    optimiser, ema, after_step = _adam_warmup_ema(model, r["LR"], r["WARMUP"], r["EMA_DECAY"])
    t0 = time.perf_counter()
    history = train.fit(
        model, optimiser,
        lambda m, b: guidance.conditional_diffusion_loss(m, b[0], b[1], abar, null=null, p_uncond=r["P_UNCOND"]),
        (x_train, y), steps=r["STEPS"], batch_size=r["BATCH_SIZE"], seed=ctx.seed, desc="bench: guided U-Net (ch. 12)",
        progress=ctx.progress, callback=after_step)
    train_seconds = time.perf_counter() - t0
    net = ema.module.eval()
    asked = (torch.arange(ctx.n_samples) % 10).to(dev)
    x_T = torch.randn((ctx.n_samples, 1, 8, 8), generator=torch.Generator(device=dev).manual_seed(ctx.seed), device=dev)

    def sample_at(w):
        eps_fn = guidance.classifier_free_guidance(net, asked, null, w)
        return dm.to_image_space(dm.ddim_sample(eps_fn, tuple(x_T.shape), abar, r["GUIDED_DDIM_STEPS"], x_T=x_T,
                                                device=dev))

    samples, agreement, sample_seconds = _guided_sets(ctx, r, sample_at, asked)
    return TrainedModel.from_run(
        net, history, train_seconds, r, samples=samples, sample_seconds=sample_seconds,
        notes="one sample set per classifier-free guidance weight w (w1: the unguided conditional model, the headline; "
              "w0: unconditional; wXpY: w = X.Y), classes 0..9 in turn, deterministic DDIM with guided_ddim_steps "
              "steps from the same noise, EMA weights, mapped to [0, 1]; compared with the grey-scale test digits and "
              "floor. "
              f"Class agreement (course classifier): {agreement}.",
    )


def _latent_diffusion_recipe(ctx: BenchContext) -> TrainedModel:
    """Chapter 12: latent diffusion as notebooks/12_guidance.ipynb trains it (:data:`LATENT_DIFFUSION_RECIPE`): the
    contrastive image-text model (learnt temperature), whose frozen text encoder gives the caption token features;
    chapter 03's autoencoder and its standardised latent space; the latent denoiser with masked cross-attention,
    trained like the guided U-Net (same steps, optimiser, EMA, caption dropout). ``n`` samples per guidance weight for
    the prompts 'a thin/thick <digit>', classes in turn. ``train_seconds`` covers the three trainings."""
    r = ctx.resolve(LATENT_DIFFUSION_RECIPE)
    dev = ctx.device
    x01, y = data.load_digits("train", image_shape=True, device=dev)
    flat = x01.reshape(-1, 64)
    abar = dm.alphas_cumprod_from_betas(dm.beta_schedule(r["SCHEDULE"], r["T"])).float().to(dev)
    tokenizer = guidance.caption_tokenizer()
    long_captions, _ = ar.digit_captions(flat, y)
    short = torch.rand(len(long_captions), generator=torch.Generator().manual_seed(4)) < r["SHORT_SHARE"]
    captions = [ar.DIGIT_NAMES[c] if s else cap for cap, c, s in zip(long_captions, y.tolist(), short.tolist())]
    tokens, mask = (t.to(dev) for t in guidance.tokenize_captions(tokenizer, captions, r["CAPTION_LEN"]))
    t0 = time.perf_counter()
    torch.manual_seed(ctx.seed)
    clip = guidance.ContrastiveModel(
        nets.ConvEncoder8x8(r["CLIP_EMBED"], channels=16),
        guidance.TextEncoder(len(tokenizer), r["CAPTION_LEN"], d_model=32, n_heads=2, n_layers=1,
                             embed_dim=r["CLIP_EMBED"]),
        temperature=r["CLIP_TEMPERATURE"]).to(dev)
    train.fit(clip, torch.optim.Adam(clip.parameters(), lr=r["CLIP_LR"]), guidance.contrastive_loss,
              (x01, tokens, mask), steps=r["CLIP_STEPS"], batch_size=r["CLIP_BATCH"], seed=ctx.seed,
              desc="bench: contrastive (ch. 12)", progress=ctx.progress)
    text_encoder = clip.eval().text_encoder.requires_grad_(False)
    torch.manual_seed(ctx.seed)
    autoencoder = ae.Autoencoder(64, r["AE_CODE"], hidden=r["AE_HIDDEN"], output="sigmoid").to(dev)
    train.fit(autoencoder, torch.optim.Adam(autoencoder.parameters(), lr=r["AE_LR"]), ae.autoencoder_loss, flat,
              steps=r["AE_STEPS"], batch_size=64, seed=ctx.seed, lr_schedule="linear",
              desc="bench: autoencoder (ch. 12)", progress=ctx.progress)
    autoencoder.eval().requires_grad_(False)
    with torch.no_grad():
        latent = guidance.LatentSpace(autoencoder, autoencoder.encode(flat))
        z_train = latent.encode(flat)
        ctx_train = text_encoder.token_features(tokens, mask)
        null_tokens, null_mask = (t.to(dev) for t in guidance.tokenize_captions(tokenizer, [""], r["CAPTION_LEN"]))
        null_ctx = text_encoder.token_features(null_tokens, null_mask)
    null = (null_ctx[0], null_mask[0])
    torch.manual_seed(ctx.seed)
    denoiser = guidance.LatentDenoiser(r["AE_CODE"], context_dim=text_encoder.d_model, width=r["LDM_WIDTH"],
                                       depth=r["LDM_DEPTH"]).to(dev)
    optimiser, ema, after_step = _adam_warmup_ema(denoiser, r["LR"], r["WARMUP"], r["EMA_DECAY"])
    history = train.fit(
        denoiser, optimiser,
        lambda m, b: guidance.conditional_diffusion_loss(m, b[0], (b[1], b[2]), abar, null=null,
                                                         p_uncond=r["P_UNCOND"]),
        (z_train, ctx_train, mask), steps=r["STEPS"], batch_size=r["BATCH_SIZE"], seed=ctx.seed,
        desc="bench: latent diffusion (ch. 12)", progress=ctx.progress, callback=after_step)
    train_seconds = time.perf_counter() - t0
    net = ema.module.eval()
    asked = (torch.arange(ctx.n_samples) % 10).to(dev)
    prompts = [f"a {'thin' if (i // 10) % 2 == 0 else 'thick'} {ar.DIGIT_NAMES[i % 10]}" for i in range(ctx.n_samples)]
    p_tokens, p_mask = (t.to(dev) for t in guidance.tokenize_captions(tokenizer, prompts, r["CAPTION_LEN"]))
    with torch.no_grad():
        p_ctx = text_encoder.token_features(p_tokens, p_mask)
    z_T = torch.randn((ctx.n_samples, r["AE_CODE"]), generator=torch.Generator(device=dev).manual_seed(ctx.seed),
                      device=dev)

    def sample_at(w):
        eps_fn = guidance.classifier_free_guidance(net, (p_ctx, p_mask), null, w)
        z0 = dm.ddim_sample(eps_fn, tuple(z_T.shape), abar, r["GUIDED_DDIM_STEPS"], x_T=z_T, device=dev, clip=False)
        with torch.no_grad():
            return latent.decode(z0)

    samples, agreement, sample_seconds = _guided_sets(ctx, r, sample_at, asked)
    return TrainedModel.from_run(
        net, history, train_seconds, r, samples=samples, sample_seconds=sample_seconds,
        notes="one sample set per classifier-free guidance weight w (w1: unguided, the headline), prompts 'a thin "
              "<digit>' / 'a thick <digit>' with the classes 0..9 in turn, DDIM in the standardised latent space of "
              "chapter 03's autoencoder, decoded (sigmoid intensities); compared with the grey-scale test digits and "
              f"floor. Class agreement with the prompt (course classifier): {agreement}. train_seconds covers the "
              "contrastive model, the autoencoder and the denoiser; parameters counts the denoiser.",
    )


register(Recipe("guided", "12_guidance", "class-conditional U-Net, label dropout, classifier-free guided DDIM", False,
                _guided_recipe))
register(Recipe("latent_diffusion", "12_guidance", "latent diffusion, cross-attention on frozen caption features",
                False, _latent_diffusion_recipe))


# ------------------------------------------------------------------------------------------------
# Driver
# ------------------------------------------------------------------------------------------------


def _json_float(v):
    v = float(v)
    return v if math.isfinite(v) else None


def _metrics_only(d: dict) -> dict:
    return {k: _json_float(d[k]) for k in METRIC_KEYS}


def run_bench(profile: str = "cpu", out="_build/bench", *, models=None, seed: int = 0,
              n: int = metrics.COURSE_SAMPLE_SIZE, device=None, threads: int | None = 1, progress: bool = True,
              verbose: bool = True, references: bool = True) -> dict:
    """Train and measure the registered models; write ``results.json`` and the samples to ``out``.

    Args:
        profile: ``"smoke"``, ``"cpu"`` or ``"gpu"`` (the budgets of the chapters' notebooks).
        out: output directory (created).
        models: names from :data:`REGISTRY` (default: all, in order).
        seed: seed of training, sampling, the classifier and the metric subsets.
        n: sample size of every metric (default 250, the size of the test split).
        device: training device (default :func:`coursekit.runtime.get_device`).
        threads: torch intra-op CPU threads during the run (restored after); ``None`` keeps torch's
            default. The default 1 is as fast for the course's small models and, on a machine whose
            cores are busy with other work, avoids the many-fold slow-down of threads waiting on each
            other; it also fixes the reduction order, so CPU numbers do not depend on the core count.
        progress: show training progress bars. verbose: print the table at the end.
        references: also run :data:`COMPARISONS`, the library reference implementations (zuko, diffusers, a
            pytorch/examples-style VAE and a plain training loop) beside the course's models; those whose course
            model is not among ``models`` are left out. Needs the ``bench`` extra.

    Returns:
        The results dict, also written to ``out/results.json``::

            schema_version, coursekit_version, torch_version, python_version, platform, device,
            threads, profile, seed, n, k, kid_subsets, kid_subset_size, started_at (UTC ISO 8601),
            total_seconds,
            classifier: {version, feature_dim, accuracy: {val, test, val_binarized, test_binarized},
                         seconds},
            floor: {grayscale: {metric: float, ...}, binarized: {...}}   # train vs test digits at n
            fid_vs_n: {grayscale: [{n, fid_mean, fid_std, kid_mean, kid_std}, ...], binarized: [...]},
            models: {name: {chapter, description, profile, binarize, floor ("binarized"|"grayscale"),
                            parameters, steps, train_seconds, steps_per_second,
                            sample_seconds_per_image (wall time of the headline set / its size, or null),
                            config: {...},
                            likelihood: {...} (may be empty; test_nll_bits_per_dim when the model has one),
                            likelihood_kind ("exact" | "upper bound" | ""),
                            fid, kid_mean, kid_std, precision, recall, density, coverage, is_mean, is_std
                              (of the headline sample set),
                            headline_samples, samples_file,
                            sample_sets: {set: {metrics..., file}}, notes}},
            comparisons: {name: {description, metric, lower_is_better,
                                 course: {value, steps, steps_per_second, parameters, what},
                                 reference: {...the same...}, difference (course - reference),
                                 speed_ratio (course / reference steps per second)}}

        Metric floats that are not finite are stored as ``null``.

    Raises:
        ValueError: for an unknown profile or model name, or n outside (FEATURE_DIM, 250].
    """
    threads_before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(int(threads))
    try:
        return _run_bench(profile, out, models, seed, n, device, progress, verbose, references)
    finally:
        torch.set_num_threads(threads_before)


def measure_recipe(name: str, ctx: BenchContext, classifier: metrics.DigitsClassifier | None = None, *, out=None,
                   k: int = 3, kid_subsets: int = metrics.KID_SUBSETS,
                   kid_subset_size: int = metrics.KID_SUBSET_SIZE) -> dict:
    """Train the recipe ``name`` of :data:`REGISTRY` under ``ctx`` and measure it: one entry of results.json.

    Every sample set of the recipe is compared with the first ``ctx.n_samples`` test digits (binarised for a
    binarised model) by :func:`coursekit.metrics.sample_quality` with ``classifier`` (default
    :func:`~coursekit.metrics.get_digits_classifier` ``(ctx.seed)``), ``k``, ``kid_subsets``, ``kid_subset_size``
    (at most ``ctx.n_samples``) and ``seed=ctx.seed``.

    Args:
        name: a key of :data:`REGISTRY`. ctx: profile, seed, device and sample size.
        classifier: the feature extractor. out: a directory to save each sample set to as
            ``<name>_<set>.npy`` (float32 (n, 64)); ``None`` saves nothing.
        k, kid_subsets, kid_subset_size: as :func:`coursekit.metrics.sample_quality`.

    Returns:
        the dict stored under ``results["models"][name]`` (see :func:`run_bench`).

    Raises:
        ValueError: for an unknown name.
    """
    if name not in REGISTRY:
        raise ValueError(f"unknown model {name!r}; registered: {list(REGISTRY)}")
    recipe = REGISTRY[name]
    clf = classifier or metrics.get_digits_classifier(seed=ctx.seed)
    qkw = {"k": k, "kid_subsets": kid_subsets, "kid_subset_size": min(kid_subset_size, ctx.n_samples)}
    trained = recipe.run(ctx)
    x_real = data.load_digits("test", binarize=recipe.binarize)[0][:ctx.n_samples]
    sets = {}
    for set_name, samples in trained.samples.items():
        samples = samples.detach().to("cpu", torch.float32).reshape(samples.shape[0], -1)
        fname = f"{name}_{set_name}.npy"
        if out is not None:
            np.save(Path(out) / fname, samples.numpy())
        q = metrics.sample_quality(x_real, samples, classifier=clf, seed=ctx.seed, **qkw)
        sets[set_name] = {**_metrics_only(q), "file": fname}
    headline = next(iter(sets))
    n_params = trained.n_parameters
    if n_params is None:
        n_params = sum(p.numel() for p in trained.model.parameters())
    n_headline = trained.samples[headline].shape[0]
    return {
        "chapter": recipe.chapter,
        "description": recipe.description,
        "profile": ctx.profile,
        "binarize": recipe.binarize,
        "floor": "binarized" if recipe.binarize else "grayscale",
        "parameters": int(n_params),
        "steps": int(trained.steps),
        "train_seconds": float(trained.train_seconds),
        "steps_per_second": float(trained.steps / trained.train_seconds) if trained.train_seconds > 0 else None,
        "sample_seconds_per_image": (None if trained.sample_seconds is None
                                     else float(trained.sample_seconds / n_headline)),
        "config": trained.config,
        "likelihood": {k: (v if isinstance(v, int) else _json_float(v)) for k, v in trained.likelihood.items()},
        "likelihood_kind": trained.likelihood_kind,
        **{k: sets[headline][k] for k in METRIC_KEYS},
        "headline_samples": headline,
        "samples_file": sets[headline]["file"],
        "sample_sets": sets,
        "notes": trained.notes,
    }


def _run_bench(profile, out, models, seed, n, device, progress, verbose, references) -> dict:
    t_start = time.perf_counter()
    started_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    profile = runtime.validate_profile(profile, "passed to run_bench()")
    names = list(REGISTRY) if models is None else list(models)
    unknown = [m for m in names if m not in REGISTRY]
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; registered: {list(REGISTRY)}")
    n = int(n)
    n_test = data.DIGITS_SPLIT_SIZES["test"]
    if not (2 * metrics.FEATURE_DIM < n <= n_test):
        raise ValueError(f"n must be in ({2 * metrics.FEATURE_DIM}, {n_test}] (the test split size), got {n}")
    device = torch.device(device) if device is not None else runtime.get_device()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    kid_subset_size = min(metrics.KID_SUBSET_SIZE, n)
    qkw = {"k": 3, "kid_subsets": metrics.KID_SUBSETS, "kid_subset_size": kid_subset_size}

    t0 = time.perf_counter()
    clf = metrics.get_digits_classifier(seed=seed)
    classifier_info = {"version": metrics.CLASSIFIER_VERSION, "feature_dim": metrics.FEATURE_DIM,
                       "accuracy": dict(clf.accuracy), "seconds": time.perf_counter() - t0}

    floors, fid_curves = {}, {}
    for space, binarize in (("grayscale", False), ("binarized", True)):
        floors[space] = _metrics_only(metrics.real_data_floor(n=n, seed=seed, binarize=binarize,
                                                              classifier=clf, **qkw))
        fid_curves[space] = metrics.fid_vs_sample_size(ns=sorted({50, 100, n, 500}), seed=seed,
                                                       binarize=binarize, classifier=clf)

    results = {
        "schema_version": SCHEMA_VERSION,
        "coursekit_version": __version__,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
        "threads": torch.get_num_threads(),
        "profile": profile,
        "seed": int(seed),
        "n": n,
        "k": qkw["k"],
        "kid_subsets": qkw["kid_subsets"],
        "kid_subset_size": kid_subset_size,
        "started_at": started_at,
        "classifier": classifier_info,
        "floor": floors,
        "fid_vs_n": fid_curves,
        "models": {},
    }

    for name in names:
        runtime.seed_everything(seed)
        ctx = BenchContext(profile=profile, seed=seed, device=device, n_samples=n, progress=progress)
        results["models"][name] = measure_recipe(name, ctx, clf, out=out, **qkw)

    results["comparisons"] = _run_comparisons(results, profile, seed, n, device, progress) if references else {}
    results["total_seconds"] = time.perf_counter() - t_start
    with open(out / "results.json", "w") as fh:
        json.dump(results, fh, indent=2)
    if verbose:
        print(format_table(results))
        print(f"\nwrote {out / 'results.json'} in {results['total_seconds']:.1f} s")
    return results


def _fmt(v, spec):
    return "-" if v is None else format(v, spec)


def format_table(results: dict) -> str:
    """A plain-text table of ``results`` (as returned by :func:`run_bench`): one row per model sample set
    and one per real-data floor, then the training numbers and FID against n."""
    n = results["n"]
    head = (f"{'':34s} {'FID':>7s} {'KIDx1e3':>13s} {'prec':>5s} {'rec':>5s} {'dens':>5s} {'cov':>5s} "
            f"{'IS':>5s}")
    title = (f"coursekit bench | profile={results['profile']} | device={results['device']} | n={n} | "
             f"k={results['k']} | classifier test acc {results['classifier']['accuracy']['test']:.3f} "
             f"(binarised {results['classifier']['accuracy']['test_binarized']:.3f})")
    lines = [title, "", head, "-" * len(head)]

    def row(label, m):
        kid = "-" if m["kid_mean"] is None else f"{1e3 * m['kid_mean']:6.1f}+-{1e3 * m['kid_std']:<5.1f}"
        return (f"{label:34s} {_fmt(m['fid'], '7.3f')} {kid:>13s} {_fmt(m['precision'], '5.2f')} "
                f"{_fmt(m['recall'], '5.2f')} {_fmt(m['density'], '5.2f')} {_fmt(m['coverage'], '5.2f')} "
                f"{_fmt(m['is_mean'], '5.2f')}")

    for space in ("grayscale", "binarized"):
        lines.append(row(f"real-data floor ({space})", results["floor"][space]))
    for name, m in results["models"].items():
        for set_name, s in m["sample_sets"].items():
            lines.append(row(f"{name} [{set_name}] vs {m['floor']} test", s))
    lines += ["", (f"{'model':10s} {'params':>9s} {'steps':>6s} {'train s':>8s} {'steps/s':>8s} "
                   f"{'test NLL nats':>28s} {'bits/dim':>16s}")]
    for name, m in results["models"].items():
        lik = m["likelihood"]
        nll = (f"{-lik['test_elbo_nats']:.2f} / {-lik['test_iwae_nats']:.2f}"
               if "test_elbo_nats" in lik else _fmt(lik.get("test_nll_nats"), ".2f"))
        bpd = _fmt(lik.get("test_nll_bits_per_dim_iwae", lik.get("test_nll_bits_per_dim")), ".4f")
        lines.append(f"{name:10s} {m['parameters']:9,d} {m['steps']:6d} {m['train_seconds']:8.1f} "
                     f"{_fmt(m['steps_per_second'], '8.1f')} {nll:>28s} {bpd:>16s}")
    lines += ["(NLL of the VAE: -ELBO / -IWAE, bits/dim from IWAE; data spaces differ: binarised for the VAE,",
              " 17 grey levels for the flow and diffusion models, so bits/dim compare only within one space)"]
    lines += ["", "FID between real train and held-out digits vs sample size n (mean over repeats):"]
    for space, rows in results["fid_vs_n"].items():
        lines.append(f"  {space:10s} " + "  ".join(f"n={r['n']}: {r['fid_mean']:.3f}" for r in rows))
    return "\n".join(lines + _comparison_lines(results.get("comparisons", {})))


#: Where ``make bench`` writes its results, relative to the repository root.
RESULTS_FILE = Path("_build") / "bench" / "results.json"
#: An environment variable naming a results.json to use instead (read by :func:`find_results`).
RESULTS_ENV_VAR = "COURSEKIT_BENCH_RESULTS"


def find_results(start=None) -> Path | None:
    """The results.json of the last ``make bench``, if there is one.

    ``$COURSEKIT_BENCH_RESULTS`` when it names a file; otherwise ``_build/bench/results.json`` under ``start``
    (default the working directory) or under the nearest of its parent directories that has one (a notebook runs
    in ``notebooks/``, the file lives at the repository root).

    Returns:
        the path, or ``None`` when no file exists.
    """
    env = os.environ.get(RESULTS_ENV_VAR)
    if env:
        return Path(env) if Path(env).is_file() else None
    here = Path.cwd() if start is None else Path(start)
    for folder in (here, *here.resolve().parents):
        if (folder / RESULTS_FILE).is_file():
            return folder / RESULTS_FILE
    return None


def load_results(path) -> dict:
    """Read a results.json written by :func:`run_bench`.

    Raises:
        ValueError: if its ``schema_version`` is not :data:`SCHEMA_VERSION` (a file from an older layout).
    """
    with open(path) as fh:
        results = json.load(fh)
    if results.get("schema_version") != SCHEMA_VERSION:
        raise ValueError(f"{path} has schema_version {results.get('schema_version')!r}, expected {SCHEMA_VERSION}: "
                         "run `make bench` again")
    return results


#: The columns of :func:`summary_rows` that hold sample-quality numbers of the headline sample set.
SUMMARY_METRICS = ("fid", "kid_mean", "precision", "recall", "density", "coverage")


def summary_rows(results: dict) -> list[dict]:
    """One row per model of ``results`` (the dict of :func:`run_bench`, or any dict with its ``models`` and
    ``floor``) in chapter order, then one per real-data floor: the cross-model table of chapter 13.

    Each model row: ``name``, ``chapter``, ``description``, ``space`` (``"binarized"`` or ``"grayscale"``: the data
    it is trained on and compared with), ``bits_per_dim`` (``likelihood["test_nll_bits_per_dim"]``, or ``None``),
    ``likelihood_kind``, the metrics of :data:`SUMMARY_METRICS`, ``parameters``, ``train_seconds``,
    ``sample_ms_per_image`` (``None`` when not measured) and ``floor`` (the name of the floor row to read it
    against). Floor rows have ``name`` ``"floor (<space>)"`` and ``None`` in the columns that do not apply.
    """
    models = sorted(results["models"].items(), key=lambda kv: kv[1]["chapter"][:2])  # stable: registry order
    rows = []
    for name, m in models:
        per_image = m.get("sample_seconds_per_image")
        rows.append({
            "name": name, "chapter": m["chapter"], "description": m["description"], "space": m["floor"],
            "bits_per_dim": m["likelihood"].get("test_nll_bits_per_dim"),
            "likelihood_kind": m.get("likelihood_kind", ""),
            **{k: m[k] for k in SUMMARY_METRICS}, "parameters": m["parameters"], "train_seconds": m["train_seconds"],
            "sample_ms_per_image": None if per_image is None else 1e3 * per_image, "floor": f"floor ({m['floor']})",
        })
    for space, f in results["floor"].items():
        rows.append({"name": f"floor ({space})", "chapter": "", "description": "training digits vs test digits",
                     "space": space, "bits_per_dim": None, "likelihood_kind": "", **{k: f[k] for k in SUMMARY_METRICS},
                     "parameters": None, "train_seconds": None, "sample_ms_per_image": None, "floor": None})
    return rows


def format_summary(rows: list[dict]) -> str:
    """The rows of :func:`summary_rows` as a plain-text table (KID x 1000; bits/dim marked ``*`` for an upper
    bound; ``-`` where a column does not apply or was not measured)."""
    def cell(v, spec, width):
        return f"{'-' if v is None else format(v, spec):>{width}s}"

    head = (f"{'model':17s} {'ch.':>3s} {'data':5s} {'bits/dim':>9s} {'FID':>7s} {'KIDx1e3':>8s} {'prec':>5s} "
            f"{'rec':>5s} {'dens':>5s} {'cov':>5s} {'params':>9s} {'train s':>8s} {'ms/img':>7s}")
    lines = [head, "-" * len(head)]
    for r in rows:
        bpd = None if r["bits_per_dim"] is None else (
            f"{r['bits_per_dim']:.3f}" + ("*" if r["likelihood_kind"] == "upper bound" else " "))
        kid = None if r["kid_mean"] is None else 1e3 * r["kid_mean"]
        lines.append(
            f"{r['name'][:17]:17s} {r['chapter'][:2]:>3s} {r['space'][:5]:5s} {cell(bpd, 's', 9)} "
            f"{cell(r['fid'], '.2f', 7)} {cell(kid, '.1f', 8)} {cell(r['precision'], '.2f', 5)} "
            f"{cell(r['recall'], '.2f', 5)} {cell(r['density'], '.2f', 5)} {cell(r['coverage'], '.2f', 5)} "
            f"{cell(r['parameters'], ',d', 9)} {cell(r['train_seconds'], '.1f', 8)} "
            f"{cell(r['sample_ms_per_image'], '.3f', 7)}")
    lines.append("bits/dim: * an upper bound, otherwise exact; each in its model's data space (grays: 17 grey levels, "
                 "binar: binary pixels), comparable only within one space")
    return "\n".join(lines)


def _comparison_lines(comparisons: dict) -> list[str]:
    """The side-by-side table of the comparisons: each pair on two lines, then the quality difference and the
    speed ratio."""
    if not comparisons:
        return []
    lines = ["", "The course's models beside the library reference implementations (same data, steps, metric):",
             f"      {'':54s} {'value':>9s} {'params':>9s} {'steps':>6s} {'steps/s':>8s}"]
    for name, c in comparisons.items():
        lines.append(f"{name}: {c['metric']} ({'lower' if c['lower_is_better'] else 'higher'} is better)")
        for side in ("course", "reference"):
            e = c[side]
            lines.append(f"  {side[:3]} {e['what'][:54]:54s} {_fmt(e['value'], '9.3f')} {e['parameters']:9,d} "
                         f"{e['steps']:6d} {_fmt(e['steps_per_second'], '8.1f')}")
        se = c.get("difference_standard_error")
        lines.append(f"  difference (course - reference) {_fmt(c['difference'], '+.3f')}"
                     + (f" +- {se:.3f} (standard error over the seeds)" if se is not None else "")
                     + f", speed ratio (course / reference) {_fmt(c['speed_ratio'], '.2f')}")
    return lines


def main(argv=None) -> dict:
    """Command line: ``python -m coursekit.bench [--profile cpu] [--out _build/bench] [--models vae ...]``."""
    parser = argparse.ArgumentParser(prog="python -m coursekit.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="cpu", choices=runtime.PROFILES, help="run profile (default cpu)")
    parser.add_argument("--out", default="_build/bench", help="output directory (default _build/bench)")
    parser.add_argument("--models", nargs="+", default=None, choices=list(REGISTRY),
                        help="models to run (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n", type=int, default=metrics.COURSE_SAMPLE_SIZE,
                        help="sample size of every metric (default %(default)s, the test split)")
    parser.add_argument("--device", default=None, help="training device (default: CUDA, MPS, else CPU)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1; 0 keeps torch's default)")
    parser.add_argument("--no-progress", action="store_true", help="hide the training progress bars")
    parser.add_argument("--no-references", action="store_true",
                        help="skip the library reference implementations (zuko, diffusers, ...)")
    args = parser.parse_args(argv)
    return run_bench(args.profile, args.out, models=args.models, seed=args.seed, n=args.n, device=args.device,
                     threads=args.threads or None, progress=not args.no_progress, references=not args.no_references)


if __name__ == "__main__":  # pragma: no cover - exercised by `make bench`
    main(sys.argv[1:])
