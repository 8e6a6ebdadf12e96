"""Auto-checks for the exercises of every chapter: ``ck.check.<exercise>(fn)``.

A code exercise in a chapter notebook is three cells: a stub (``def kl_std_normal(mu, logvar): raise
NotImplementedError``) that students receive, the solution, and a check cell
``ck.check.kl_std_normal(kl_std_normal)``. The checker takes the student's function, named like the
function it checks, and calls it on **fresh random inputs**: drawn from a private generator with a new seed on
every call (so the notebook's global random state is untouched), or reproducibly with ``seed=...``. It

* passes silently apart from one short line ``✓ <exercise> passed ...``;
* fails with an ``AssertionError`` whose message says what was expected, what was received (shapes, values,
  the failing input) and, for common mistakes (sign flipped, log-variance used as log standard deviation,
  naive ``log(mean(exp))`` ...), a hint naming the mistake;
* turns a stub that still raises ``NotImplementedError`` into an ``AssertionError`` saying the exercise is
  not done yet.

Every failure message ends with the seed that reproduces it: ``check.kl_std_normal(fn, seed=...)``.

There is one checker module per concept module with exercises (``check.divergences`` for chapter 01,
``check.mixtures`` 02, ``check.autoencoders`` 03, ``check.vae`` 04, ``check.flows`` 05, ``check.gan`` 06,
``check.wasserstein`` 07, ``check.diffusion`` 08, ``check.score`` 09, ``check.flow_matching`` 10,
``check.autoregressive`` 11, ``check.guidance`` 12, ``check.metrics`` 13, ``check.disentangle`` 14), all built on
the shared machinery in ``check._harness``; this package re-exports every checker.
"""

from __future__ import annotations

from .autoencoders import kl_sparsity, mixture_denoiser, sigmoid_contractive_penalty
from .autoregressive import pixelcnn_mask, sampling_probs, straight_through
from .diffusion import ddim_step, posterior_mean_variance, q_sample
from .disentangle import adain, dci_scores, mutual_information_gap
from .divergences import discrete_entropy, mutual_info, sample_exponential
from .flow_matching import cfm_target, heun_step, hutchinson_divergence
from .flows import coupling_forward, coupling_inverse, digits_bits_per_dim
from .gan import jsd_discrete, mode_counts, non_saturating_loss, optimal_discriminator
from .guidance import classifier_free_eps, clip_loss, cycle_consistency_loss
from .metrics import coverage, frechet_distance, inception_score
from .mixtures import e_step, kmeans_assign, m_step_covariances
from .score import dsm_target, langevin_step, score_jacobian_trace
from .vae import free_bits_kl, iwae_from_log_weights, kl_std_normal, reparameterise
from .wasserstein import density_ratio_from_logits, gradient_penalty, mmd2_unbiased

__all__ = [
    # chapter 01: probability and information
    "discrete_entropy", "sample_exponential", "mutual_info",
    # chapter 02: clustering and mixtures
    "kmeans_assign", "e_step", "m_step_covariances",
    # chapter 03: autoencoders
    "sigmoid_contractive_penalty", "kl_sparsity", "mixture_denoiser",
    # chapter 04: variational autoencoders
    "kl_std_normal", "reparameterise", "iwae_from_log_weights", "free_bits_kl",
    # chapter 05: normalizing flows
    "coupling_forward", "coupling_inverse", "digits_bits_per_dim",
    # chapter 06: GANs
    "optimal_discriminator", "non_saturating_loss", "jsd_discrete", "mode_counts",
    # chapter 07: density ratios, MMD, WGAN-GP
    "density_ratio_from_logits", "mmd2_unbiased", "gradient_penalty",
    # chapter 08: diffusion
    "q_sample", "posterior_mean_variance", "ddim_step",
    # chapter 09: score matching
    "langevin_step", "dsm_target", "score_jacobian_trace",
    # chapter 10: flow matching and the SDE/ODE view
    "cfm_target", "heun_step", "hutchinson_divergence",
    # chapter 11: autoregressive models and discrete tokens
    "pixelcnn_mask", "straight_through", "sampling_probs",
    # chapter 12: guidance, contrastive models, image-to-image translation
    "classifier_free_eps", "clip_loss", "cycle_consistency_loss",
    # chapter 13: evaluating generative models
    "frechet_distance", "inception_score", "coverage",
    # chapter 14: disentanglement
    "dci_scores", "mutual_information_gap", "adain",
]
