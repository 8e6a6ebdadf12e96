r"""Generative adversarial networks (chapter 06).

The GAN value function and its losses on raw discriminator outputs (logits), the optimal discriminator and
the Jensen-Shannon identity, the mode-coverage metric for the 2-D benchmarks, batched ensembles of small MLPs,
the objectives of the two-player game (:class:`GANLoss`) and :func:`fit_gan`, which trains the two players with
the course's one training loop (:func:`coursekit.train.fit_players`), and the small convolutional GANs
(unconditional and class-conditional) for the 8x8 digits.

Chapter 07 (:mod:`coursekit.wasserstein`) replaces the Jensen-Shannon objective with f-divergences, the
Wasserstein distance and the MMD, adds the WGAN objectives (``wgan_gp_loss``, ``wgan_clip_loss``) and holds the
tuned 2-D recipes and the mode-coverage table, which compare this chapter's losses with WGAN-GP. Names that
moved there stay importable from here.

Conventions: all losses take raw logits of shape ``(N,)`` or ``(N, 1)`` and return 0-dim tensors in nats;
``log D = -softplus(-l)`` and ``log(1 - D) = -softplus(l)`` keep them finite for any logit.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import parametrize

from . import data as data_mod
from . import metrics
from ._compat import moved_names
from ._validate import (
    check_choice,
    check_class_labels,
    check_finite,
    check_floating,
    check_nonnegative_int,
    check_positive_float,
    check_positive_int,
    check_scores,
    check_tensor,
)
from .train import History, Player, fit_players, frozen

__all__ = [
    "optimal_discriminator",
    "gan_value",
    "discriminator_loss",
    "generator_loss",
    "mode_coverage",
    "EnsembleMLP",
    "GANLoss",
    "GAN_LOSSES",
    "GAN_LOSS_DEFAULTS",
    "fit_gan",
    "generate",
    "COURSE_SEEDS",
    "BENCHMARKS_2D",
    "DigitsGenerator",
    "DigitsDiscriminator",
    "class_agreement",
    "spectral_norm_power_iteration",
    "EnsembleSpectralNorm",
    "add_spectral_norm",
    "r1_penalty",
    "non_saturating_r1_loss",
    "fgsm_perturb",
]

# Chapter 07 material that used to live here: `coursekit.gan.<name>` still finds it in its new module.
__getattr__ = moved_names(__name__, {name: "coursekit.wasserstein" for name in (
    "wasserstein_critic_loss", "wasserstein_generator_loss", "gradient_penalty", "clip_weights",
    "density_ratio_from_logits", "f_gan_value", "f_gan_discriminator_loss", "f_gan_generator_loss",
    "gaussian_kernel_matrix", "mmd2_unbiased", "mmd2_biased", "ssgan_real_logit", "ssgan_discriminator_loss",
    "feature_matching_loss", "MLPGenerator",
    "Recipe2D", "RECIPES_2D", "BEST_RECIPE_2D", "train_2d_gans", "evaluate_2d_gans", "ModeCoverageTable",
    "reference_rows", "mode_coverage_table",
)})

# Derivations (each step names its rule; chapter 06 walks through the same steps).
#
# Value function (Goodfellow et al. 2014, eq. 1), D = sigmoid(l) for a logit l:
#     V(D, G) = E_{x~p_data} log D(x) + E_{z~p_z} log(1 - D(G(z))).
# Stable logs: log sigmoid(l) = -log(1 + e^{-l}) = -softplus(-l);
#              log(1 - sigmoid(l)) = log(e^{-l} / (1 + e^{-l})) = -l - softplus(-l) = -softplus(l).
#
# Optimal discriminator (Goodfellow et al. 2014, Proposition 1). Write V as one integral over x
# (change of variables x = G(z) in the second term: E_z f(G(z)) = E_{x~p_g} f(x)):
#     V = int [ p_data(x) log D(x) + p_g(x) log(1 - D(x)) ] dx.
# Maximise the integrand pointwise: for a, b >= 0, a + b > 0, y -> a log y + b log(1 - y) on (0, 1) has
# derivative a / y - b / (1 - y), zero at y* = a / (a + b), and is concave (second derivative
# -a/y^2 - b/(1-y)^2 < 0), so y* is the maximum: D*(x) = p_data(x) / (p_data(x) + p_g(x)).
#
# Value at D* (Theorem 1): with m = (p_data + p_g) / 2,
#     V(D*, G) = E_data log(p_data / (2m)) + E_g log(p_g / (2m))
#              = KL(p_data || m) + KL(p_g || m) - 2 log 2            (log(a / 2m) = log(a / m) - log 2)
#              = 2 JSD(p_data, p_g) - log 4.
# The "half-weighted" objective 1/2 E_data log D + 1/2 E_g log(1 - D) (the mean binary cross-entropy
# over a balanced real/fake batch, with a minus sign) equals V / 2, so at D* it is JSD - log 2.
#
# Non-saturating generator loss (Goodfellow et al. 2014, Sec. 3): with D = sigmoid(l),
#     d/dl log(1 - sigmoid(l)) = -sigmoid(l)        -> ~0 when D(G(z)) ~ 0 (early training: saturates),
#     d/dl (-log sigmoid(l))   = -(1 - sigmoid(l))  -> ~-1 when D(G(z)) ~ 0 (strong gradient).
# Both have the same fixed point; the second is what "non_saturating" minimises.

def optimal_discriminator(p_data: torch.Tensor, p_model: torch.Tensor) -> torch.Tensor:
    r"""The optimal discriminator :math:`D^*(x) = p_\text{data}(x) / (p_\text{data}(x) + p_\text{model}(x))`.

    Elementwise, for density values or probability vectors evaluated at the same points. Where both are 0
    every value of D is optimal (the point does not enter the value function); this function returns 0.5
    there, the value that says "cannot tell".

    Goodfellow et al. (2014), "Generative Adversarial Nets", Proposition 1 (derivation in the comment at
    the top of this section).

    Args:
        p_data, p_model: float tensors of the same shape, finite, >= 0 (densities or probabilities).

    Returns:
        Tensor of the same shape, dtype and device, values in [0, 1].

    Raises:
        TypeError: not floating-point tensors. ValueError: shapes differ, NaN/Inf or negative entries.
    """
    for name, t in (("p_data", p_data), ("p_model", p_model)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
        check_finite(name, t)
        if bool((t < 0).any()):
            raise ValueError(f"{name} must be >= 0 (a density or probability), got minimum {float(t.min()):g}")
    if p_data.shape != p_model.shape:
        raise ValueError(f"p_data and p_model must have the same shape, got {tuple(p_data.shape)} "
                         f"and {tuple(p_model.shape)}")
    total = p_data + p_model
    safe = torch.where(total > 0, total, torch.ones_like(total))
    return torch.where(total > 0, p_data / safe, torch.full_like(total, 0.5))


def gan_value(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    r"""The GAN value :math:`V(D, G) = \mathbb E_x \log D(x) + \mathbb E_z \log(1 - D(G(z)))`, in nats.

    Goodfellow et al. (2014), eq. (1); Monte Carlo estimate with the batch means. ``D = sigmoid(logit)``;
    computed as ``-softplus(-real).mean() - softplus(fake).mean()``, finite for any finite logits.
    At the optimal discriminator its expectation is ``2 JSD(p_data, p_model) - log 4`` (Theorem 1).

    Args:
        real_logits: (N,) or (N, 1) float logits of D on data. fake_logits: (M,) or (M, 1) on samples
            of G (M may differ from N).

    Returns:
        0-dim tensor (nats), <= 0. The discriminator maximises it.

    Raises:
        TypeError / ValueError: non-tensor, non-float, wrong shape, empty, NaN/Inf.
    """
    real = check_scores("real_logits", real_logits)
    fake = check_scores("fake_logits", fake_logits)
    return -F.softplus(-real).mean() - F.softplus(fake).mean()


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    r"""Discriminator loss ``-V(D, G)``: binary cross-entropy with labels real = 1, fake = 0, in nats.

    Equals ``BCE(real_logits, 1).mean() + BCE(fake_logits, 0).mean()`` (the sum of the two means, not the
    mean over the concatenated batch, which would be half of it when N = M). Minimising it maximises
    :func:`gan_value` (Goodfellow et al. 2014, Algorithm 1).

    Args / Raises: as :func:`gan_value`. Returns a 0-dim tensor >= 0.
    """
    return -gan_value(real_logits, fake_logits)


def generator_loss(fake_logits: torch.Tensor, kind: str = "non_saturating") -> torch.Tensor:
    r"""Generator loss on the discriminator's logits for generated samples, in nats (to be minimised).

    * ``"minimax"``: :math:`\mathbb E_z \log(1 - D(G(z)))` = ``-softplus(fake).mean()`` (Goodfellow et al.
      2014, eq. 1; saturates when D rejects the samples: gradient wrt the logit is ``-sigmoid(l)``).
    * ``"non_saturating"``: :math:`-\mathbb E_z \log D(G(z))` = ``softplus(-fake).mean()`` (Goodfellow et
      al. 2014, Sec. 3; gradient wrt the logit is ``-(1 - sigmoid(l))``, large when D rejects).

    Args:
        fake_logits: (M,) or (M, 1) float logits. kind: ``"minimax"`` or ``"non_saturating"``.

    Returns:
        0-dim tensor (nats); <= 0 for "minimax", >= 0 for "non_saturating".

    Raises:
        ValueError: unknown ``kind`` (lists the valid ones); bad logits as in :func:`gan_value`.
    """
    check_choice("kind", kind, ("minimax", "non_saturating"))
    fake = check_scores("fake_logits", fake_logits)
    if kind == "minimax":
        return -F.softplus(fake).mean()
    return F.softplus(-fake).mean()


def mode_coverage(samples: torch.Tensor, modes: torch.Tensor, std: float, *, n_std: float = 3.0,
                  min_count: int = 1) -> dict:
    r"""Mode coverage and sample quality of generated samples on a mixture of isotropic Gaussians.

    Convention of VEEGAN (Srivastava et al. 2017, Sec. 5.1) and PacGAN (Lin et al. 2018, Sec. 5.1):
    each sample is assigned to its nearest mode centre; it is *high quality* if it lies within
    ``n_std`` standard deviations of that centre (Euclidean distance < n_std * std; 3 in both papers).
    A mode is *covered* (captured) if at least ``min_count`` high-quality samples are assigned to it:
    PacGAN's released evaluation code (``MetricLogger`` in fjxmlzn/PacGAN) counts a mode as soon as it has
    one high-quality sample (``min_count=1``, the default here); both papers evaluate 2,500 samples.
    Raise ``min_count`` for a stricter rule that ignores a few stray samples.

    For reference: a sample from the true 2-D mode itself is high quality with probability
    ``1 - exp(-n_std^2 / 2)`` (chi distribution with 2 degrees of freedom), 0.989 for n_std = 3.

    Args:
        samples: (N, d) float tensor of generated points (N >= 1).
        modes: (k, d) float tensor of mode centres (e.g. :func:`coursekit.data.ring_modes`, ``grid_modes``).
        std: standard deviation of each mode (the ``std`` the data was generated with), > 0.
        n_std: quality radius in standard deviations, > 0. min_count: integer >= 1.

    Returns:
        dict with ``"modes_covered"`` (int), ``"n_modes"`` (int k), ``"high_quality"`` (float, the share of
        high-quality samples in [0, 1]), ``"counts"`` (int64 tensor (k,), high-quality samples per mode),
        ``"nearest"`` (int64 tensor (N,), index of the nearest mode), ``"is_high_quality"`` (bool tensor (N,)).

    Raises:
        TypeError / ValueError: non-tensors, wrong shapes, mismatched d, NaN/Inf, bad std/n_std/min_count.
    """
    for name, t in (("samples", samples), ("modes", modes)):
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():
            raise TypeError(f"{name} must be a floating-point torch.Tensor, got "
                            f"{t.dtype if isinstance(t, torch.Tensor) else type(t).__name__}")
        if t.ndim != 2 or t.shape[0] == 0:
            raise ValueError(f"{name} must have shape (N, d) with N >= 1, got {tuple(t.shape)}")
        check_finite(name, t)
    if samples.shape[1] != modes.shape[1]:
        raise ValueError(f"samples (d={samples.shape[1]}) and modes (d={modes.shape[1]}) must have the same "
                         f"dimension")
    std = check_positive_float("std", std)
    n_std = check_positive_float("n_std", n_std)
    min_count = check_positive_int("min_count", min_count)
    modes = modes.to(device=samples.device, dtype=samples.dtype)
    dist = torch.cdist(samples, modes)  # (N, k) Euclidean distances
    d_min, nearest = dist.min(dim=1)
    good = d_min < n_std * std
    counts = torch.bincount(nearest[good], minlength=modes.shape[0])
    return {
        "modes_covered": int((counts >= min_count).sum()),
        "n_modes": int(modes.shape[0]),
        "high_quality": float(good.float().mean()),
        "counts": counts,
        "nearest": nearest,
        "is_high_quality": good,
    }


# --------------------------------------------------------------------------------- networks for 2-D ensembles
class EnsembleMLP(nn.Module):
    """E independent MLPs evaluated in one batched call (stacked weights, ``torch.baddbmm``).

    Member e is exactly ``MLP(in_dim, out_dim, hidden, activation)`` with its own weights: the members share
    no parameter, so the gradient of a *sum* of per-member losses with respect to member e's weights is the
    gradient of member e's own loss, and Adam (elementwise in every parameter entry) then makes the same
    update as a separate run (up to float rounding in the batched matrix products). This turns a handful of
    small 2-D GAN runs (several seeds) into one run whose cost is dominated by fewer, larger matrix products.

    Each member is initialised like ``nn.Linear`` (weights and biases ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)))
    from its own ``torch.Generator`` seeded with ``seeds[e]``, so a member's initial weights do not depend on
    the other members.

    Args:
        seeds: sequence of E integer seeds (one member per seed), E >= 1.
        in_dim, out_dim: sizes of each member's input and output (>= 1).
        hidden: hidden widths of each member. activation: module class (default ``nn.ReLU``).

    Shapes:
        input (N, E, in_dim) float32 -> output (N, E, out_dim) (member e sees ``x[:, e]``).

    Raises:
        TypeError / ValueError: bad sizes or seeds; in ``forward``, input not of shape (N, E, in_dim).
    """

    def __init__(self, seeds, in_dim: int, out_dim: int, hidden=(128, 128), activation=nn.ReLU):
        super().__init__()
        seeds = [int(s) for s in seeds]
        if not seeds:
            raise ValueError("seeds must hold at least one seed (one ensemble member per seed)")
        self.seeds = tuple(seeds)
        self.n_members = len(seeds)
        self.in_dim = check_positive_int("in_dim", in_dim)
        self.out_dim = check_positive_int("out_dim", out_dim)
        widths = [self.in_dim] + [check_positive_int(f"hidden[{i}]", h) for i, h in enumerate(hidden)] + [self.out_dim]
        if not callable(activation):
            raise TypeError(f"activation must be a module class such as nn.ReLU, got {activation!r}")
        self.hidden = tuple(widths[1:-1])
        self.activation_cls = activation
        gens = [torch.Generator().manual_seed(s) for s in seeds]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for fan_in, fan_out in itertools.pairwise(widths):
            bound = 1.0 / fan_in ** 0.5
            w = torch.stack([(torch.rand(fan_in, fan_out, generator=g) * 2 - 1) * bound for g in gens])
            b = torch.stack([(torch.rand(1, fan_out, generator=g) * 2 - 1) * bound for g in gens])
            self.weights.append(nn.Parameter(w))  # (E, fan_in, fan_out)
            self.biases.append(nn.Parameter(b))  # (E, 1, fan_out)
        self.act = activation()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_tensor("x", x)
        if x.ndim != 3 or x.shape[1] != self.n_members or x.shape[2] != self.in_dim:
            raise ValueError(f"EnsembleMLP expects input of shape (N, {self.n_members}, {self.in_dim}), "
                             f"got {tuple(x.shape)}")
        h = x.transpose(0, 1)  # (E, N, in)
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            h = torch.baddbmm(b, h, w)
            if i < last:
                h = self.act(h)
        return h.transpose(0, 1)  # (N, E, out)

    def member(self, e: int) -> nn.Sequential:
        """A stand-alone copy of member ``e`` as ``nn.Sequential(Linear, act, ..., Linear)`` (input (N, in_dim))."""
        if not 0 <= int(e) < self.n_members:
            raise ValueError(f"member index must be in [0, {self.n_members}), got {e}")
        layers: list[nn.Module] = []
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases)):
            lin = nn.Linear(w.shape[1], w.shape[2])
            with torch.no_grad():
                lin.weight.copy_(w[e].T)
                lin.bias.copy_(b[e, 0])
            layers.append(lin)
            if i < last:
                layers.append(self.activation_cls())
        return nn.Sequential(*layers).to(self.weights[0].device)


# ------------------------------------------------------------------------------------------- the objective
@dataclass(frozen=True)
class GANLoss:
    r"""A GAN objective for :func:`fit_gan`: the two players' losses and the training defaults that go with them.

    Attributes:
        name: a short name (the default progress-bar label is ``"GAN (<name>)"``).
        discriminator_loss: ``discriminator_loss(real_scores, fake_scores)``, the discriminator's (critic's)
            loss on its raw outputs of shape ``(N,)`` for real and generated examples; a 0-dim tensor to minimise.
        generator_loss: ``generator_loss(fake_scores)``, the generator's loss, a 0-dim tensor to minimise.
        penalty: optional ``penalty(critic, real, fake, *, generator)`` added to the discriminator's loss as
            ``penalty_weight * penalty`` (``critic`` maps a batch to scores; ``generator`` is the run's
            ``torch.Generator`` for the penalty's randomness), e.g. the gradient penalty of WGAN-GP.
        penalty_weight: its weight (lambda). penalty_key: the History key of the (unweighted) penalty.
        after_discriminator_update: optional ``f(discriminator)`` after every discriminator optimiser step
            (weight clipping).
        wasserstein: ``True`` for a critic whose negative loss estimates a distance (logged as ``w_estimate``);
            ``False`` for a classifier on logits (the mean probabilities ``d_real``, ``d_fake`` are logged).
        n_critic, lr_g, lr_d, betas, optimizer: the defaults of :func:`fit_gan` for this objective: discriminator
            updates per generator update, learning rates, Adam's betas and ``"adam"`` or ``"rmsprop"``.

    The chapter's two objectives are :data:`GAN_LOSSES` ``["minimax"]`` and ``["non_saturating"]``;
    :mod:`coursekit.wasserstein` builds the WGAN objectives (``wgan_gp_loss``, ``wgan_clip_loss``).
    """

    name: str
    discriminator_loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    generator_loss: Callable[[torch.Tensor], torch.Tensor]
    penalty: Callable | None = None
    penalty_weight: float = 0.0
    penalty_key: str = "gp"
    after_discriminator_update: Callable[[nn.Module], None] | None = None
    wasserstein: bool = False
    n_critic: int = 1
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    betas: tuple | None = (0.5, 0.999)
    optimizer: str = "adam"


#: The chapter's objectives, with the defaults of DCGAN (Radford et al. 2016, Sec. 4: Adam lr 2e-4, beta1 0.5):
#: the minimax game of Goodfellow et al. (2014), eq. (1), and its non-saturating generator loss (Sec. 3).
GAN_LOSSES = {
    "minimax": GANLoss("minimax", discriminator_loss, functools.partial(generator_loss, kind="minimax")),
    "non_saturating": GANLoss("non_saturating", discriminator_loss,
                              functools.partial(generator_loss, kind="non_saturating")),
}

#: The training defaults of each objective in :data:`GAN_LOSSES` (the WGAN objectives carry their own).
GAN_LOSS_DEFAULTS = {
    name: {"lr_g": o.lr_g, "lr_d": o.lr_d, "betas": o.betas, "n_critic": o.n_critic, "optimizer": o.optimizer}
    for name, o in GAN_LOSSES.items()
}

_WASSERSTEIN_LOSSES = {"wgan_gp": "wgan_gp_loss(gp_weight=10.0)", "wgan_clip": "wgan_clip_loss(clip=0.01)"}


def _objective(loss) -> GANLoss:
    if isinstance(loss, GANLoss):
        return loss
    if loss in _WASSERSTEIN_LOSSES:
        raise ValueError(f"loss={loss!r} is a Wasserstein objective (chapter 07): pass "
                         f"loss=coursekit.wasserstein.{_WASSERSTEIN_LOSSES[loss]} instead (its argument replaces "
                         f"fit_gan's former gp_weight / clip)")
    check_choice("loss", loss, tuple(GAN_LOSSES))
    return GAN_LOSSES[loss]


# ----------------------------------------------------------------------------------------- the training loop
def _latent(batch: int, latent_dim, ensemble, gen: torch.Generator, device) -> torch.Tensor:
    shape = (batch,) + ((ensemble,) if ensemble else ()) + tuple(latent_dim)
    return torch.randn(shape, generator=gen).to(device)


def _latent_shape(latent_dim) -> tuple:
    if isinstance(latent_dim, (tuple, list, torch.Size)):
        dims = tuple(check_positive_int(f"latent_dim[{i}]", d) for i, d in enumerate(latent_dim))
        if not dims:
            raise ValueError("latent_dim must not be empty")
        return dims
    return (check_positive_int("latent_dim", latent_dim),)


def _loss_or_nonfinite(loss_fn, *scores: torch.Tensor) -> torch.Tensor:
    """``loss_fn(*scores)``; if a score is NaN/Inf, a non-finite loss instead, which the training loop reports
    as :class:`~coursekit.train.TrainingDiverged` (a NaN score is a diverged run, not a bad argument)."""
    try:
        return loss_fn(*scores)
    except ValueError:
        if all(bool(torch.isfinite(s).all()) for s in scores):
            raise
        return sum(s.sum() for s in scores)  # NaN or +-Inf, and it depends on the parameters


class _GANPlayers:
    """The two players' losses of :func:`fit_gan`, sharing the latent stream and the real batch's labels.

    Per discriminator update: the loop's minibatch, a latent draw, (the penalty's draws); per generator update: a
    latent draw, with the labels of the last discriminator batch.
    """

    def __init__(self, generator, discriminator, objective: GANLoss, *, batch_size, latent_shape, ensemble, device,
                 seed: int):
        self.generator, self.discriminator, self.objective, self.device = generator, discriminator, objective, device
        self.batch_size, self.latent_shape, self.ensemble = batch_size, latent_shape, ensemble
        self.latents = torch.Generator(device="cpu").manual_seed(seed + 1)  # CPU: the same latents on any device
        self.penalty_rng = torch.Generator(device=device).manual_seed(seed + 2)
        self.y = None  # labels of the last real batch (conditional GAN)

    def call(self, net, x):
        return net(x) if self.y is None else net(x, self.y)

    def fake_batch(self) -> torch.Tensor:
        z = _latent(self.batch_size, self.latent_shape, self.ensemble, self.latents, self.device)
        return self.call(self.generator, z)

    def flat(self, scores, name: str) -> torch.Tensor:
        """Discriminator output -> (B * E,) (ensemble) or (B,)."""
        e = self.ensemble
        if e:
            if scores.ndim == 3 and scores.shape[2] == 1:
                scores = scores[..., 0]
            if scores.ndim != 2 or scores.shape[1] != e:
                raise ValueError(f"with ensemble={e} the discriminator must return (B, {e}) or (B, {e}, 1) scores, "
                                 f"got {tuple(scores.shape)} for {name}")
            return scores.reshape(-1)
        if not isinstance(scores, torch.Tensor) or not scores.is_floating_point():
            got = scores.dtype if isinstance(scores, torch.Tensor) else type(scores).__name__
            raise TypeError(f"the discriminator must return floating-point scores, got {got} for {name}")
        if not (scores.ndim == 1 or (scores.ndim == 2 and scores.shape[1] == 1)):
            raise ValueError(f"the discriminator must return scores of shape (N,) or (N, 1) (one score per "
                             f"example), got shape {tuple(scores.shape)} for {name}")
        return scores.reshape(-1)

    def penalty(self, x: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        penalty, rng = self.objective.penalty, self.penalty_rng
        if not self.ensemble:
            return penalty(lambda t: self.call(self.discriminator, t), x, fake, generator=rng)
        rest, shape = x.shape[2:], (self.batch_size, self.ensemble) + x.shape[2:]
        critic = lambda t: self.flat(self.call(self.discriminator, t.reshape(shape)), "interpolates")
        return penalty(critic, x.reshape((-1,) + rest), fake.reshape((-1,) + rest), generator=rng)

    def discriminator_loss(self, batch) -> tuple[torch.Tensor, dict]:
        # A parametrised discriminator (spectral normalisation) computes its weights once per step, shared by the
        # real, generated and penalty batches, instead of once per call.
        parametrised = any(parametrize.is_parametrized(m) for m in self.discriminator.modules())
        with parametrize.cached() if parametrised else contextlib.nullcontext():
            return self._discriminator_loss(batch)

    def _discriminator_loss(self, batch) -> tuple[torch.Tensor, dict]:
        x = batch[0]
        self.y = batch[1] if len(batch) > 1 else None
        with torch.no_grad():
            fake = self.fake_batch()
        if fake.shape != x.shape:
            raise ValueError(f"the generator returned a batch of shape {tuple(fake.shape)}, but data batches have "
                             f"shape {tuple(x.shape)}")
        real_out = self.flat(self.call(self.discriminator, x), "real data")
        fake_out = self.flat(self.call(self.discriminator, fake), "generated data")
        objective = self.objective
        loss = _loss_or_nonfinite(objective.discriminator_loss, real_out, fake_out)
        if objective.wasserstein or objective.penalty is not None:
            value = float(loss.detach())
            if not math.isfinite(value):  # reported by the loop, before the penalty rejects NaN scores
                return loss, {}
        if objective.wasserstein:
            metrics = {"w_estimate": -value}
        else:
            metrics = {"d_real": float(torch.sigmoid(real_out.detach()).mean()),
                       "d_fake": float(torch.sigmoid(fake_out.detach()).mean())}
        if objective.penalty is not None:
            gp = self.penalty(x, fake)
            metrics[objective.penalty_key] = float(gp.detach())
            loss = loss + objective.penalty_weight * gp
        return loss, metrics

    def generator_loss(self, batch) -> torch.Tensor:
        with frozen(self.discriminator):  # the discriminator is frozen during the generator's update
            fake_out = self.flat(self.call(self.discriminator, self.fake_batch()), "generated data")
            return _loss_or_nonfinite(self.objective.generator_loss, fake_out)


def _advice(objective: GANLoss, lr_g: float, lr_d: float) -> str:
    """The hints of fit_gan's TrainingDiverged message."""
    return (f"lower learning rates (loss={objective.name!r}, lr_g={lr_g:g}, lr_d={lr_d:g}); check that the "
            f"discriminator returns raw logits (no sigmoid: the losses apply it stably); for a clipped critic a "
            f"smaller clip value; for a gradient penalty no batch norm in the critic; check the data for NaN/Inf.")


def _check_gan_data(generator, discriminator, data, labels, ensemble):
    """fit_gan's checks of the networks, data, labels and ensemble size (``ensemble`` validated and returned)."""
    for name, net in (("generator", generator), ("discriminator", discriminator)):
        if not isinstance(net, nn.Module):
            raise TypeError(f"{name} must be a torch.nn.Module, got {type(net).__name__}")
    check_tensor("data", data)
    if not data.is_floating_point():
        raise TypeError(f"data must be a floating-point tensor, got dtype {data.dtype}")
    if ensemble is not None:
        ensemble = check_positive_int("ensemble", ensemble)
        if data.ndim < 3 or data.shape[1] != ensemble:
            raise ValueError(f"with ensemble={ensemble}, data must have shape (N, {ensemble}, ...), "
                             f"got {tuple(data.shape)}")
    elif data.ndim < 2:
        raise ValueError(f"data must have shape (N, ...) with at least one feature dim, got {tuple(data.shape)}")
    check_finite("data", data)
    if labels is not None:
        check_tensor("labels", labels)
        if labels.dtype != torch.int64 or labels.ndim != 1:
            raise ValueError(f"labels must be an int64 tensor of shape (N,), got dtype {labels.dtype} "
                             f"shape {tuple(labels.shape)}")
        if labels.shape[0] != data.shape[0]:
            raise ValueError(f"data and labels must have the same number of examples (first dim), got "
                             f"{[data.shape[0], labels.shape[0]]}")
    return ensemble


def _optimizers(objective: GANLoss, generator, discriminator, lr_g, lr_d, betas, optimizer_g, optimizer_d):
    """The two optimisers: the given ones, else the objective's default (Adam(lr, betas) or RMSprop(lr))."""
    lr_g = check_positive_float("lr_g", objective.lr_g if lr_g is None else lr_g)
    lr_d = check_positive_float("lr_d", objective.lr_d if lr_d is None else lr_d)
    betas = objective.betas if betas is None else tuple(betas)
    if objective.optimizer == "adam" and (len(betas) != 2 or not all(0.0 <= b < 1.0 for b in betas)):
        raise ValueError(f"betas must be two numbers in [0, 1), got {betas}")

    def make(net, lr, given):
        if given is not None:
            return given
        if objective.optimizer == "rmsprop":
            return torch.optim.RMSprop(net.parameters(), lr=lr)
        return torch.optim.Adam(net.parameters(), lr=lr, betas=betas)

    return make(generator, lr_g, optimizer_g), make(discriminator, lr_d, optimizer_d), (lr_g, lr_d)


def fit_gan(
    generator: nn.Module,
    discriminator: nn.Module,
    data,
    *,
    loss="non_saturating",
    steps: int,
    batch_size: int,
    latent_dim,
    n_critic: int | None = None,
    lr_g: float | None = None,
    lr_d: float | None = None,
    betas=None,
    labels: torch.Tensor | None = None,
    ensemble: int | None = None,
    optimizer_g: torch.optim.Optimizer | None = None,
    optimizer_d: torch.optim.Optimizer | None = None,
    lr_schedule: str = "constant",
    seed: int = 0,
    max_seconds: float | None = None,
    progress: bool = True,
    log_every: int = 10,
    desc: str | None = None,
    callback=None,
    checkpoint_path=None,
    checkpoint_every: int | None = None,
    resume: bool = True,
) -> History:
    r"""Train a GAN (2-D MLPs, conv nets on images, conditional, or a batched ensemble) and return its History.

    Two :class:`coursekit.train.Player` s run by :func:`coursekit.train.fit_players`. One *step* is
    ``n_critic`` discriminator (critic) updates, each on a fresh real minibatch and fresh latents, then one
    generator update (Goodfellow et al. 2014, Algorithm 1 with k = n_critic):

    * discriminator: ``x`` real batch, ``z ~ N(0, I)``, ``x_fake = G(z)`` (no gradient into G), the objective's
      ``discriminator_loss`` on the two batches of scores (for the chapter's losses :func:`discriminator_loss`,
      BCE with real = 1, fake = 0), plus its weighted penalty if it has one;
    * generator: new ``z``, the objective's ``generator_loss`` (:func:`generator_loss` with ``kind=loss``); the
      discriminator's parameters are frozen during this update.

    Args:
        generator: module ``z -> x`` (or ``(z, y) -> x`` with ``labels``); its output has the shape of a data
            batch. discriminator: module ``x -> logits/scores`` of shape (B,) or (B, 1) (``(x, y) -> ...``
            with labels). Both already on the device of ``data``, float32, without a final sigmoid.
        data: float tensor (N, ...) on the training device (e.g. (N, 2) points or (N, 1, 8, 8) images); with
            ``ensemble=E``, shape (N, E, ...): column e is member e's data.
        loss: ``"non_saturating"`` (default), ``"minimax"`` or a :class:`GANLoss` (the WGAN objectives of
            chapter 07: ``coursekit.wasserstein.wgan_gp_loss(gp_weight)``, ``wgan_clip_loss(clip)``).
        steps: number of generator steps (>= 1). batch_size: examples per minibatch (<= N).
        latent_dim: int d (z has shape (B, d)) or a tuple (z has shape (B, *latent_dim), e.g. (16, 1, 1) for a
            transposed-conv generator); with ``ensemble=E``, z is (B, E, *latent_dim).
        n_critic, lr_g, lr_d, betas: ``None`` takes the objective's defaults (its :class:`GANLoss` fields of the
            same names, from the papers). ``betas`` is Adam's (beta1, beta2); ignored by an RMSProp objective.
        labels: int64 tensor (N,) of class labels for a conditional GAN: the real batch's labels ``y`` are
            passed to the discriminator, and the same ``y`` to the generator and to the discriminator for the
            fake batch (so fake classes follow the data's class frequencies). ``None``: unconditional.
        ensemble: ``None`` or E >= 1 for a batched ensemble (:class:`EnsembleMLP`): the discriminator's output
            is (B, E) or (B, E, 1) and each loss is the *sum* over members of the member's loss (the mean over
            its batch), so every member is trained as by a separate run (shared minibatch indices and latent
            stream). The logged losses are per-member means (sum / E).
        optimizer_g, optimizer_d: optional optimisers to use instead of the defaults (then lr/betas are
            ignored for that network).
        lr_schedule: ``"constant"`` (default) or ``"linear"``: both optimisers' learning rates decay linearly to
            0 at step ``steps`` (lr_t = lr_0 (1 - t / steps)), as in the CIFAR-10 experiments of Gulrajani et al.
            (2017); a small final learning rate lets the generator settle on sharp modes.
        seed: seeds the minibatch order (``seed``), the latents (a CPU generator seeded ``seed + 1``: the same
            latents on any device) and the penalty's draws (``seed + 2``, on the data's device). Network
            initialisation is the caller's. Same seed, initial weights and device -> the same run, bit for bit.
        max_seconds: wall-clock budget in seconds (``history.stop_reason == "max_seconds"``); None: no limit.
        progress: show a ``tqdm.auto`` bar and print a one-line summary at the end.
        log_every: log the window means of ``loss_d``, ``loss_g`` and the diagnostics every this many steps:
            ``d_real``/``d_fake`` (mean sigmoid outputs, classifier objectives), ``w_estimate`` (the negative
            critic loss, an estimate of W1 up to the Lipschitz constant; Wasserstein objectives) and the penalty
            (``gp``). Values are for the last discriminator update of each step.
        desc: label of the progress bar (default ``"GAN (<loss name>)"``).
        callback: optional ``callback(step, generator, discriminator, history)`` after every step.
        checkpoint_path, checkpoint_every, resume: checkpoints as in :func:`coursekit.train.fit`, holding both
            networks and optimisers and the latent and penalty streams: a resumed run ends bit-identical.

    Returns:
        :class:`coursekit.train.History` with ``stop_reason`` ``"steps"`` or ``"max_seconds"``.

    Raises:
        TrainingDiverged: a loss or gradient norm of either network is NaN/Inf (message: which, step, hints).
        ValueError / TypeError: unknown loss (for ``"wgan_gp"``/``"wgan_clip"`` the message says what to pass),
            bad sizes, data/labels/ensemble shapes that do not match, NaN/Inf in the data, discriminator outputs
            of the wrong shape.
    """
    objective = _objective(loss)
    check_choice("lr_schedule", lr_schedule, ("constant", "linear"))
    ensemble = _check_gan_data(generator, discriminator, data, labels, ensemble)
    batch_size = check_positive_int("batch_size", batch_size)
    if batch_size > data.shape[0]:
        raise ValueError(f"batch_size ({batch_size}) must be <= the number of examples ({data.shape[0]})")
    n_critic = check_positive_int("n_critic", objective.n_critic if n_critic is None else n_critic)
    opt_g, opt_d, lrs = _optimizers(objective, generator, discriminator, lr_g, lr_d, betas, optimizer_g, optimizer_d)
    seed = check_nonnegative_int("seed", seed)
    if callback is not None and not callable(callback):
        raise TypeError("callback must be callable as callback(step, generator, discriminator, history)")
    losses = _GANPlayers(generator, discriminator, objective, batch_size=batch_size, ensemble=ensemble,
                         latent_shape=_latent_shape(latent_dim), device=data.device, seed=seed)
    scale = float(ensemble) if ensemble else 1.0
    clip = objective.after_discriminator_update
    players = [
        Player("discriminator", discriminator, opt_d, losses.discriminator_loss, updates=n_critic,
               after_update=None if clip is None else (lambda: clip(discriminator)), loss_key="loss_d",
               grad_scale=scale),
        Player("generator", generator, opt_g, losses.generator_loss, uses_batch=False, loss_key="loss_g",
               grad_scale=scale),
    ]
    return fit_players(
        players, (data,) if labels is None else (data, labels), steps=steps, batch_size=batch_size, seed=seed,
        generators={"latents": losses.latents, "penalty": losses.penalty_rng}, lr_schedule=lr_schedule,
        max_seconds=max_seconds, log_every=log_every, checkpoint_path=checkpoint_path,
        checkpoint_every=checkpoint_every, resume=resume,
        progress=progress, desc=desc or f"GAN ({objective.name})", title="GAN training",
        callback=None if callback is None else (lambda step, h: callback(step, generator, discriminator, h)),
        advice=lambda player: _advice(objective, *lrs),
    )


@torch.no_grad()
def generate(generator: nn.Module, n: int, latent_dim, *, labels: torch.Tensor | None = None,
             ensemble: int | None = None, seed: int = 0, device=None) -> torch.Tensor:
    """Draw ``n`` samples ``G(z)``, ``z ~ N(0, I)``, in eval mode without gradients.

    Args:
        generator: the trained generator. n: number of samples (>= 1). latent_dim: int or tuple, as in
            :func:`fit_gan`. labels: int64 (n,) class labels for a conditional generator (``G(z, y)``).
        ensemble: E for an :class:`EnsembleMLP` generator (z has shape (n, E, *latent_dim)).
        seed: seed of the latents (a private CPU generator). device: default: the generator's device.

    Returns:
        The generator's output for the n latents, e.g. (n, 2), (n, E, 2) or (n, 1, 8, 8).

    Raises:
        TypeError / ValueError: bad n, latent_dim, labels (shape must be (n,), dtype int64).
    """
    if not isinstance(generator, nn.Module):
        raise TypeError(f"generator must be a torch.nn.Module, got {type(generator).__name__}")
    n = check_positive_int("n", n)
    latent_shape = _latent_shape(latent_dim)
    if ensemble is not None:
        ensemble = check_positive_int("ensemble", ensemble)
    if device is None:
        params = list(generator.parameters())
        device = params[0].device if params else torch.device("cpu")
    if labels is not None:
        check_tensor("labels", labels)
        if labels.dtype != torch.int64 or labels.shape != (n,):
            raise ValueError(f"labels must be int64 of shape ({n},), got {labels.dtype} {tuple(labels.shape)}")
    z = _latent(n, latent_shape, ensemble, torch.Generator().manual_seed(check_nonnegative_int("seed", seed)), device)
    was = generator.training
    generator.eval()
    try:
        return generator(z) if labels is None else generator(z, labels.to(device))
    finally:
        generator.train(was)


# ------------------------------------------------------------------------------------- the 2-D benchmarks
#: The course's seeds for the multi-seed 2-D experiments (chapter 06's table, the best-recipe test).
COURSE_SEEDS = (0, 1, 2)

#: The two mode-collapse benchmarks of chapter 06. Ring: 8 modes on a circle of radius 2, std 0.02 (coursekit.data
#: defaults; Metz et al. 2017, VEEGAN; PacGAN's released ring configuration (Lin et al. 2018) uses radius 1 and std
#: 0.01, the same problem scaled by 1/2). Grid: 25 modes at {-4, -2, 0, 2, 4}^2 with std 0.05, as in PacGAN's released
#: grid configuration (coursekit.data's default std is 0.02). ``std`` is the one
#: the data are drawn with and the one :func:`mode_coverage` scores with.
BENCHMARKS_2D = {
    "ring": {"sample": functools.partial(data_mod.ring_of_gaussians, std=0.02), "modes": data_mod.ring_modes,
             "std": 0.02},
    "grid": {"sample": functools.partial(data_mod.grid_of_gaussians, std=0.05), "modes": data_mod.grid_modes,
             "std": 0.05},
}


# ------------------------------------------------------------------------------------ image GANs (digits)

# Small convolutional GANs for the 8x8 digits: a DCGAN in miniature (Radford et al. 2016) and its
# class-conditional version (Mirza & Osindero 2014; projection discriminator of Miyato & Koyama 2018).
# No batch normalisation: with minibatches of only real or only fake images, a batch-normalised
# discriminator sees different batch statistics for the two and can tell them apart by the statistics
# alone, and in eval mode a batch-normalised generator uses running averages that differ from the batch
# statistics it was trained with. These nets are small enough to train stably without it.


def _labels_for(y, n: int, n_classes: int | None, device) -> torch.Tensor | None:
    """The labels a (conditional) net is called with: None for an unconditional one, else int64 (n,)."""
    if n_classes is None:
        if y is not None:
            raise ValueError("this network is unconditional (n_classes=None): call it without labels")
        return None
    if y is None:
        raise ValueError(f"this network is conditional on {n_classes} classes: pass labels y of shape ({n},)")
    return check_class_labels("labels y", y, n, n_classes).to(device)


class DigitsGenerator(nn.Module):
    r"""Convolutional generator of 8x8 images, optionally conditional on a class label.

    Layers (C = ``channels``)::

        [z, onehot(y)] (N, latent_dim [+ n_classes]) --linear--> (N, 2C, 4, 4) --LeakyReLU-->
        --transposed conv 4x4 stride 2--> (N, C, 8, 8) --LeakyReLU--> --conv 3x3--> (N, 1, 8, 8) --sigmoid-->

    The conditional version concatenates a one-hot code of the label to the noise, as in the conditional GAN of
    Mirza & Osindero (2014, sec. 3.2). The sigmoid puts the pixels in (0, 1), the range of
    ``coursekit.data.load_digits``. No batch normalisation (see the module comment above).

    Args:
        latent_dim: size of the noise z (>= 1). channels: width C (>= 1).
        n_classes: number of classes for a conditional generator, or None (unconditional).

    Shapes:
        ``forward(z, y=None)``: z (N, latent_dim) float, y (N,) int64 (conditional only) -> (N, 1, 8, 8) in (0, 1).

    Raises:
        ValueError / TypeError: wrong shapes, labels missing for a conditional net (or given to an
        unconditional one), labels out of range, NaN/Inf in z.
    """

    def __init__(self, latent_dim: int = 16, channels: int = 32, n_classes: int | None = None):
        super().__init__()
        self.latent_dim = check_positive_int("latent_dim", latent_dim)
        c = check_positive_int("channels", channels)
        self.n_classes = None if n_classes is None else check_positive_int("n_classes", n_classes)
        in_dim = self.latent_dim + (self.n_classes or 0)
        self.net = nn.Sequential(
            nn.Linear(in_dim, 2 * c * 4 * 4), nn.LeakyReLU(0.2),
            nn.Unflatten(1, (2 * c, 4, 4)),
            nn.ConvTranspose2d(2 * c, c, kernel_size=4, stride=2, padding=1), nn.LeakyReLU(0.2),  # 4x4 -> 8x8
            nn.Conv2d(c, 1, kernel_size=3, padding=1),
        )

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if not isinstance(z, torch.Tensor) or z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"z must have shape (N, {self.latent_dim}), got {tuple(getattr(z, 'shape', ()))}")
        check_finite("z", z)
        y = _labels_for(y, z.shape[0], self.n_classes, z.device)
        if y is not None:
            z = torch.cat([z, F.one_hot(y, self.n_classes).to(z.dtype)], dim=1)
        return torch.sigmoid(self.net(z))

    @torch.no_grad()
    def sample(self, n: int, y: torch.Tensor | None = None, *,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` images (n, 1, 8, 8) in (0, 1) from z ~ N(0, I) (drawn with ``generator`` if given), on the
        parameters' device; ``y`` (n,) int64 labels for a conditional generator."""
        dev = next(self.parameters()).device
        z = torch.randn(int(n), self.latent_dim, generator=generator, device=dev)
        return self(z, y)


class DigitsDiscriminator(nn.Module):
    r"""Convolutional discriminator (or critic) of 8x8 images returning one raw logit / score per image.

    Layers (C = ``channels``)::

        x (N, 1, 8, 8) in [0, 1] --(2x - 1)--> --conv 3x3--> (N, C, 8, 8) --LeakyReLU(0.2)-->
        --conv 4x4 stride 2--> (N, 2C, 4, 4) --LeakyReLU(0.2)--> --flatten--> phi(x) (N, 32C)
        --linear--> logit (N,)

    The conditional version is the *projection discriminator* of Miyato & Koyama (2018):
    ``logit(x, y) = w^T phi(x) + b + embed(y)^T phi(x)``, the inner product of a learnt class embedding with
    the image features. LeakyReLU and no batch normalisation, as recommended for discriminators and required for
    critics trained with a gradient penalty (Gulrajani et al. 2017, sec. 4).

    Args:
        channels: width C (>= 1). n_classes: number of classes (conditional) or None.

    Shapes:
        ``forward(x, y=None)``: x (N, 1, 8, 8) (or (N, 64)) float, y (N,) int64 -> logits (N,).

    Raises:
        ValueError / TypeError: as :class:`DigitsGenerator`.
    """

    def __init__(self, channels: int = 32, n_classes: int | None = None):
        super().__init__()
        c = check_positive_int("channels", channels)
        self.n_classes = None if n_classes is None else check_positive_int("n_classes", n_classes)
        self.features = nn.Sequential(
            nn.Conv2d(1, c, kernel_size=3, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(c, 2 * c, kernel_size=4, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Flatten(),
        )
        self.head = nn.Linear(2 * c * 4 * 4, 1)
        self.embed = None if self.n_classes is None else nn.Embedding(self.n_classes, 2 * c * 4 * 4)
        if self.embed is not None:
            nn.init.normal_(self.embed.weight, std=0.02)

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if isinstance(x, torch.Tensor) and x.ndim == 2 and x.shape[1] == 64:
            x = x.reshape(-1, 1, 8, 8)
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or tuple(x.shape[1:]) != (1, 8, 8):
            raise ValueError(f"x must have shape (N, 1, 8, 8) or (N, 64), got {tuple(getattr(x, 'shape', ()))}")
        check_finite("x", x)
        y = _labels_for(y, x.shape[0], self.n_classes, x.device)
        phi = self.features(2 * x - 1)
        out = self.head(phi).squeeze(1)
        if y is not None:
            out = out + (self.embed(y) * phi).sum(1)
        return out


@torch.no_grad()
def class_agreement(images: torch.Tensor, labels: torch.Tensor, classifier=None) -> dict:
    """How often the course's digit classifier assigns generated images to the class they were asked for.

    Args:
        images: (N, 1, 8, 8) or (N, 64) in [0, 1], e.g. a conditional generator's samples for ``labels``.
        labels: (N,) int64 requested classes in 0..9.
        classifier: default :func:`coursekit.metrics.get_digits_classifier` ``()``.

    Returns:
        dict: ``accuracy`` (float, share of images whose arg-max class is the requested one),
        ``per_class`` (list of 10 floats, NaN for a class never requested), ``confidence`` (float, mean
        probability of the requested class), ``predicted`` (int64 (N,) arg-max classes).

    Raises:
        TypeError: labels not an integer tensor. ValueError: not one label per image, or labels outside 0..9.
    """
    labels = check_class_labels("labels", labels, images.shape[0], 10).cpu()
    probs = metrics.probabilities(images.detach().cpu(), classifier)
    pred = probs.argmax(1).cpu()
    hit = (pred == labels).float()
    per_class = [float(hit[labels == c].mean()) if bool((labels == c).any()) else float("nan") for c in range(10)]
    return {"accuracy": float(hit.mean()), "per_class": per_class,
            "confidence": float(probs.cpu().gather(1, labels[:, None]).mean()), "predicted": pred}


# ------------------------------------------------------------------------ regularising the discriminator
def spectral_norm_power_iteration(weight: torch.Tensor, n_iter: int = 1, u: torch.Tensor | None = None, *,
                                  generator: torch.Generator | None = None, eps: float = 1e-12):
    r"""Largest singular value of each matrix in a batch by power iteration (Miyato et al. 2018, Algorithm 1).

    For :math:`W \in \mathbb R^{m \times n}` repeat :math:`v \leftarrow W^\top u / \lVert W^\top u \rVert`,
    :math:`u \leftarrow W v / \lVert W v \rVert`; then :math:`\sigma = u^\top W v`. The iteration is the power method
    on :math:`W W^\top`: writing :math:`u_0 = \sum_i c_i a_i` in the left singular vectors :math:`a_i`, after t steps
    :math:`u_t \propto \sum_i c_i \sigma_i^{2t} a_i`, so the component along the top singular vector dominates at the
    rate :math:`(\sigma_2 / \sigma_1)^{2t}` whenever :math:`c_1 \neq 0` and :math:`\sigma_1 > \sigma_2`, and
    :math:`u^\top W v \to \sigma_1`. Spectral normalisation divides W by this estimate, reusing u between training
    steps so that one iteration per step suffices.

    Args:
        weight: float ``(..., m, n)``, a batch of matrices (no NaN).
        n_iter: iterations >= 1. u: optional start vectors ``(..., m)`` (default: standard normal, from
            ``generator``). eps: added to norms to avoid division by 0.

    Returns:
        ``(sigma, u, v)``: ``sigma`` of shape ``(...)`` (<= the largest singular value, equal in the limit), and
        the unit vectors ``u`` ``(..., m)`` and ``v`` ``(..., n)``. Computed without gradient tracking for u, v;
        ``sigma`` is differentiable in ``weight``.

    Raises:
        TypeError / ValueError: non-float weight, fewer than 2 dimensions, NaN/Inf, n_iter < 1, a u of the wrong
        shape, not floating point or with NaN/Inf.
    """
    check_tensor("weight", weight)
    if not weight.is_floating_point() or weight.ndim < 2:
        raise ValueError(f"weight must be a floating-point batch of matrices (..., m, n), got dtype {weight.dtype} "
                         f"and shape {tuple(weight.shape)}")
    check_finite("weight", weight)
    n_iter = check_positive_int("n_iter", n_iter)
    if u is None:
        u = torch.randn(weight.shape[:-1], generator=generator, dtype=weight.dtype).to(weight.device)
    elif tuple(check_floating("u", u).shape) != tuple(weight.shape[:-1]):
        raise ValueError(f"u must have shape {tuple(weight.shape[:-1])} (one vector per matrix), got {tuple(u.shape)}")
    return _power_iteration(weight, n_iter, u, eps)


def _power_iteration(weight: torch.Tensor, n_iter: int, u: torch.Tensor, eps: float = 1e-12):
    """The unchecked loop of :func:`spectral_norm_power_iteration` (batched matrix products; runs at every step)."""
    with torch.no_grad():
        w = weight.detach()
        u = (u / (u.norm(dim=-1, keepdim=True) + eps)).unsqueeze(-2)  # (..., 1, m)
        for _ in range(n_iter):
            v = u @ w  # (..., 1, n) = (W^T u)^T
            v = v / (v.norm(dim=-1, keepdim=True) + eps)
            u = v @ w.transpose(-1, -2)  # (..., 1, m) = (W v)^T
            u = u / (u.norm(dim=-1, keepdim=True) + eps)
    sigma = ((u @ weight) * v).sum(-1).squeeze(-1)
    return sigma, u.squeeze(-2), v.squeeze(-2)


class EnsembleSpectralNorm(nn.Module):
    """Spectral normalisation as a ``torch.nn.utils.parametrize`` parametrisation of a batch of weight matrices.

    ``forward(W)`` returns ``W / sigma(W)`` for each matrix of ``W`` ``(..., m, n)``, with
    :math:`\\sigma = u^\\top W v` differentiable in W and the vectors u, v from :func:`spectral_norm_power_iteration`.
    As in Miyato et al. (2018), Algorithm 1, u and v are kept in buffers and refined by ``n_iter`` power
    iterations whenever the weights are computed to train the discriminator (training mode and weights that require
    gradients; :func:`fit_gan` computes them once per discriminator step, shared by its real, generated and penalty
    batches). Otherwise (eval mode, or the generator's step, when the discriminator is frozen) the stored vectors
    are used as they are. Every normalised matrix then has spectral norm about 1, and a network of such
    layers with 1-Lipschitz activations is about 1-Lipschitz. Works for the stacked ``(E, fan_in, fan_out)`` weights
    of :class:`EnsembleMLP` (see :func:`add_spectral_norm`); a matrix and its transpose have the same sigma.

    Args:
        shape: the weight's shape ``(..., m, n)``. n_iter: power iterations per update (>= 1). seed: seeds u.
    """

    def __init__(self, shape, n_iter: int = 1, seed: int = 0):
        super().__init__()
        shape = tuple(int(s) for s in shape)
        if len(shape) < 2:
            raise ValueError(f"EnsembleSpectralNorm needs a weight shape (..., m, n), got {shape}")
        self.n_iter = check_positive_int("n_iter", n_iter)
        u = torch.randn(shape[:-1], generator=torch.Generator().manual_seed(int(seed)))
        self.register_buffer("u", u / u.norm(dim=-1, keepdim=True))
        self.register_buffer("v", torch.zeros(shape[:-2] + shape[-1:]))
        self.register_buffer("started", torch.zeros((), dtype=torch.bool))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if (self.training and weight.requires_grad) or not self.started:
            _, u, v = _power_iteration(weight, self.n_iter, self.u.to(weight.dtype))
            self.u.copy_(u)
            self.v.copy_(v)
            self.started.fill_(True)
        else:  # copies: the graph of sigma must not see later in-place updates of the buffers
            u, v = self.u.to(weight.dtype, copy=True), self.v.to(weight.dtype, copy=True)
        sigma = ((u.unsqueeze(-2) @ weight).squeeze(-2) * v).sum(-1)
        return weight / sigma[..., None, None]


def add_spectral_norm(model: EnsembleMLP, n_iter: int = 1, seed: int = 0) -> EnsembleMLP:
    """Spectrally normalise every weight matrix of an :class:`EnsembleMLP` in place (Miyato et al. 2018).

    Registers an :class:`EnsembleSpectralNorm` parametrisation on each stacked weight, so each member's every
    layer is divided by its own largest singular value (estimated by power iteration) at every forward pass.
    Returns ``model``. Raises TypeError if ``model`` is not an :class:`EnsembleMLP`.
    """
    if not isinstance(model, EnsembleMLP):
        raise TypeError(f"add_spectral_norm expects an EnsembleMLP, got {type(model).__name__}")
    for i, w in enumerate(model.weights):
        parametrize.register_parametrization(model.weights, str(i), EnsembleSpectralNorm(w.shape, n_iter, seed + i))
    return model


def r1_penalty(critic, real: torch.Tensor, fake: torch.Tensor | None = None, *,
               generator: torch.Generator | None = None) -> torch.Tensor:
    r"""The R1 penalty :math:`\mathbb E_{x \sim p^*}\lVert \nabla_x \ell(x) \rVert^2` (Mescheder et al. 2018).

    The discriminator is penalised for a non-zero gradient at the data: at the game's equilibrium
    (:math:`q = p^*`, :math:`D = 1/2` on the support) this is zero, and penalising it makes the equilibrium locally
    stable for the (simultaneous or alternating) gradient dynamics where the unregularised game oscillates. The
    full regulariser is :math:`\tfrac{\gamma}{2}` times this value. One gradient per example (the squared norm over
    all non-batch dimensions), built with ``create_graph=True`` so that it trains the discriminator.

    Args:
        critic: callable mapping a batch ``(N, ...)`` to scores ``(N,)`` or ``(N, 1)`` (the logits).
        real: float ``(N, ...)`` real examples. fake, generator: ignored (the signature of
            :attr:`GANLoss.penalty`).

    Returns:
        0-dim tensor, the batch mean of the squared gradient norms.

    Raises:
        TypeError / ValueError: non-float, 0-d or non-finite ``real``; scores of the wrong shape.
    """
    check_tensor("real", real)
    if not real.is_floating_point() or real.ndim < 1:
        raise ValueError(f"real must be a floating-point batch (N, ...), got dtype {real.dtype}, shape "
                         f"{tuple(real.shape)}")
    check_finite("real", real)
    x = real.detach().requires_grad_(True)
    scores = critic(x)
    if scores.numel() != x.shape[0]:
        raise ValueError(f"the critic must return one score per example, got shape {tuple(scores.shape)} for a "
                         f"batch of {x.shape[0]}")
    (grad,) = torch.autograd.grad(scores.sum(), x, create_graph=True)
    return grad.pow(2).flatten(1).sum(1).mean()


def non_saturating_r1_loss(gamma: float = 1.0) -> GANLoss:
    """The non-saturating GAN with the R1 penalty as an objective for :func:`fit_gan` (Mescheder et al. 2018).

    The discriminator minimises :func:`discriminator_loss` + (gamma / 2) * :func:`r1_penalty`, the generator the
    non-saturating :func:`generator_loss`. The penalty is logged as ``"r1"``.

    Args: gamma: finite > 0. Returns: a :class:`GANLoss` named ``"non_saturating_r1"``.
    Raises: ValueError / TypeError for a gamma that is not a finite number > 0.
    """
    gamma = check_positive_float("gamma", gamma)
    return GANLoss("non_saturating_r1", discriminator_loss, functools.partial(generator_loss, kind="non_saturating"),
                   penalty=r1_penalty, penalty_weight=gamma / 2, penalty_key="r1")


def fgsm_perturb(classifier, images: torch.Tensor, labels: torch.Tensor, epsilon: float) -> torch.Tensor:
    r"""A fast-gradient-sign adversarial perturbation (Goodfellow, Shlens & Szegedy 2015), clipped to [0, 1].

    :math:`\tilde x = \operatorname{clip}_{[0,1]}(x + \epsilon\, \operatorname{sign}(\nabla_x \mathcal L(x, y)))`
    with :math:`\mathcal L` the cross-entropy of the classifier's logits: the steepest ascent step of the loss under
    the max-norm constraint :math:`\lVert \tilde x - x \rVert_\infty \le \epsilon` for the linearised loss (the
    maximiser of :math:`g^\top \delta` over :math:`\lVert \delta \rVert_\infty \le \epsilon` is
    :math:`\epsilon\,\operatorname{sign}(g)`).

    Args:
        classifier: a module mapping images to logits ``(N, n_classes)`` (e.g.
            :func:`coursekit.metrics.get_digits_classifier`).
        images: float images in [0, 1], ``(N, ...)`` as the classifier accepts them. labels: int64 ``(N,)``.
        epsilon: the max-norm budget >= 0, in pixel units (the pixel range is [0, 1]).

    Returns:
        The perturbed images, same shape and dtype, detached, every entry within ``epsilon`` of the input.

    Raises:
        TypeError / ValueError: images not in [0, 1], labels of the wrong shape or type or outside the classifier's
            classes, epsilon < 0.
    """
    check_tensor("images", images)
    if not images.is_floating_point() or images.ndim < 1:
        raise ValueError(f"images must be a floating-point batch (N, ...), got dtype {images.dtype}")
    check_finite("images", images)
    if images.min() < 0 or images.max() > 1:
        raise ValueError("images must have values in [0, 1] (the classifier's pixel range)")
    check_tensor("labels", labels)
    if labels.dtype != torch.long or labels.shape != images.shape[:1]:
        raise ValueError(f"labels must be int64 of shape ({images.shape[0]},), got {labels.dtype} "
                         f"{tuple(labels.shape)}")
    if not (isinstance(epsilon, (int, float)) and math.isfinite(epsilon) and epsilon >= 0):
        raise ValueError(f"epsilon must be a finite number >= 0, got {epsilon!r}")
    x = images.detach().clone().requires_grad_(True)
    logits = classifier(x)
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= logits.shape[-1]):
        raise ValueError(f"labels must be classes in 0..{logits.shape[-1] - 1} (the classifier's logits), got "
                         f"values in {int(labels.min())}..{int(labels.max())}")
    loss = F.cross_entropy(logits, labels, reduction="sum")
    (grad,) = torch.autograd.grad(loss, x)
    return (images.detach() + epsilon * grad.sign()).clamp(0.0, 1.0)
