r"""Chapter 12: guidance, contrastive image-text models, latent diffusion and image-to-image translation.

The parts of today's text-to-image systems, each at digit scale:

* **guidance** of a diffusion model's noise prediction towards a class (Bayes' rule for scores,
  :math:`\nabla\log p(x \mid y) = \nabla\log p(x) + \nabla\log p(y \mid x)`): classifier guidance with a
  noise-aware classifier (Dhariwal & Nichol 2021; :func:`classifier_guided_eps`, :class:`NoiseAwareClassifier`,
  :func:`noise_aware_classifier_loss`, :func:`class_log_prob_grad`, :func:`classifier_guidance`) and
  classifier-free guidance, one network trained with condition dropout (Ho & Salimans 2022;
  :func:`conditional_diffusion_loss`, :func:`classifier_free_eps`, :func:`classifier_free_guidance`), and Imagen's
  dynamic thresholding (Saharia et al. 2022; :func:`dynamic_threshold`, :func:`thresholded`);
* a **contrastive image-text model** in the manner of CLIP (Radford et al. 2021): captions as padded word tokens
  (:func:`tokenize_captions`), a :class:`TextEncoder`, a :class:`ContrastiveModel` with a learnt temperature, the
  InfoNCE loss of van den Oord et al. (2018) in its symmetric form (:func:`contrastive_logits`, :func:`info_nce`,
  :func:`symmetric_info_nce`, :func:`contrastive_loss`), zero-shot classification with prompt ensembles
  (:func:`zero_shot_classify`) and retrieval (:func:`retrieval_accuracy`);
* **latent diffusion** (Rombach et al. 2022): diffusion in the standardised latent space of an autoencoder
  (:class:`LatentSpace`), a denoiser conditioned on caption tokens through masked :class:`CrossAttention`
  (:class:`LatentDenoiser`), and the cost of a network evaluation in FLOPs (:func:`count_flops`);
* **image-to-image translation**: two renderings of each digit (:func:`thicken_strokes`), a small U-Net translator
  and a patch discriminator (:class:`ImageTranslator`, :class:`PatchDiscriminator`), the pix2pix objective
  (Isola et al. 2017; :func:`pix2pix_generator_loss`, :func:`pix2pix_players`) and CycleGAN's cycle-consistency
  loss (Zhu et al. 2017; :func:`cycle_consistency_loss`, :func:`cyclegan_players`), scored by
  :func:`translation_scores`.

Conventions: images are float (N, 1, 8, 8); diffusion works in [-1, 1] with chapter 08's 0-based time indices
(:mod:`coursekit.diffusion`), and a noise model is called ``model(x_t, t, *condition)``. An *eps function*
``eps_fn(x_t, t) -> eps_hat`` is what :func:`coursekit.diffusion.ddim_sample` calls (pass ``device=``). The guidance
weight ``w`` multiplies the classifier's log-probability, :math:`p(x)\,p(y \mid x)^w`: ``w = 0`` is the
unconditional model, ``w = 1`` the conditional one (Ho & Salimans' weight is ``w - 1``). Losses are in nats.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from . import diffusion as dm
from . import gan, metrics
from ._validate import (
    check_alphas_cumprod,
    check_batch,
    check_class_labels,
    check_floating,
    check_matrix,
    check_nonnegative_float,
    check_positive_float,
    check_positive_int,
    check_probability,
    check_same_shape,
    check_shape,
    check_tensor,
    check_time_indices,
)
from .autoregressive import DIGIT_NAMES, WordTokenizer
from .nets import ConvEncoder8x8, SinusoidalTimeEmbedding
from .train import Player, frozen

__all__ = [
    # guidance
    "classifier_guided_eps",
    "classifier_free_eps",
    "class_log_prob_grad",
    "NoiseAwareClassifier",
    "noise_aware_classifier_loss",
    "conditional_diffusion_loss",
    "classifier_guidance",
    "classifier_free_guidance",
    "dynamic_threshold",
    "thresholded",
    # captions and the contrastive model
    "CAPTION_WORDS",
    "START",
    "PAD",
    "caption_tokenizer",
    "tokenize_captions",
    "TextEncoder",
    "ContrastiveModel",
    "contrastive_logits",
    "info_nce",
    "symmetric_info_nce",
    "contrastive_loss",
    "zero_shot_classify",
    "retrieval_accuracy",
    # latent diffusion
    "CrossAttention",
    "LatentDenoiser",
    "LatentSpace",
    "count_flops",
    # image-to-image translation
    "thicken_strokes",
    "ImageTranslator",
    "PatchDiscriminator",
    "pix2pix_generator_loss",
    "pix2pix_players",
    "cycle_consistency_loss",
    "cyclegan_players",
    "translation_scores",
]

#: The caption vocabulary: a start token (every caption begins with it, so a caption always has one token to attend
#: to, and the empty caption of classifier-free guidance is the start token alone), a padding token, and the words.
START, PAD = "<start>", "<pad>"
CAPTION_WORDS = (START, PAD, "a", "thin", "thick") + DIGIT_NAMES


# ------------------------------------------------------------------------------------------------
# Small checks
# ------------------------------------------------------------------------------------------------


def _finite_float(name: str, v) -> float:
    """A finite real number (python or 1-element tensor) as a float; bool is rejected."""
    if isinstance(v, torch.Tensor) and v.numel() == 1:
        v = v.item()
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(v).__name__}")
    v = float(v)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be a finite number, got {v}")
    return v


def _as_tuple(cond) -> tuple:
    return tuple(cond) if isinstance(cond, (tuple, list)) else (cond,)


# ------------------------------------------------------------------------------------------------
# Guidance: Bayes' rule for scores
# ------------------------------------------------------------------------------------------------


def classifier_guided_eps(eps: torch.Tensor, grad_log_prob: torch.Tensor, t, alphas_cumprod: torch.Tensor,
                          w: float) -> torch.Tensor:
    r"""The noise prediction of classifier guidance (Dhariwal & Nichol 2021, with their scale s = w):

    .. math::

        \tilde\varepsilon = \hat\varepsilon(x_t, t)
            - w\,\sqrt{1 - \bar\alpha_t}\;\nabla_{x_t}\log p_\phi(y \mid x_t, t),

    which is :math:`-\sqrt{1 - \bar\alpha_t}` times the guided score
    :math:`\nabla\log p_t(x) + w\,\nabla\log p_\phi(y \mid x_t)` (the noise and the score of a Gaussian kernel are
    related by :math:`\varepsilon = -\sqrt{1 - \bar\alpha_t}\,\nabla\log p_t`). ``w = 1`` gives the score of
    :math:`p_t(x \mid y)` by Bayes' rule when :math:`p_\phi` is the true posterior.

    Args:
        eps: the unconditional noise prediction, float (N, ...). grad_log_prob: :math:`\nabla_x \log p(y \mid x_t)`,
            same shape (e.g. :func:`class_log_prob_grad`). t: code indices, int or integer tensor () / (N,).
        alphas_cumprod: (T,) schedule. w: the guidance weight, a finite real.

    Returns:
        float tensor, ``eps``'s shape and dtype.

    Raises:
        TypeError / ValueError: non-float or non-finite tensors, different shapes, bad ``t`` or ``w``.
    """
    check_batch("eps", eps)
    check_batch("grad_log_prob", grad_log_prob)
    check_same_shape(eps=eps, grad_log_prob=grad_log_prob)
    a = check_alphas_cumprod(alphas_cumprod)
    w = _finite_float("w", w)
    tt = check_time_indices(t, a.numel(), eps.shape[0], eps.device)
    sigma = (1 - a.to(device=eps.device, dtype=torch.float64)[tt]).sqrt().reshape((-1,) + (1,) * (eps.ndim - 1))
    return (eps.to(torch.float64) - w * sigma * grad_log_prob.to(torch.float64)).to(eps.dtype)


def classifier_free_eps(eps_cond: torch.Tensor, eps_uncond: torch.Tensor, w: float) -> torch.Tensor:
    r"""The classifier-free guided noise prediction (Ho & Salimans 2022, with their weight equal to w - 1):

    .. math::

        \tilde\varepsilon = \hat\varepsilon(x_t, \varnothing) + w\,\big(\hat\varepsilon(x_t, y) - \hat\varepsilon(x_t,
        \varnothing)\big) = (1 - w)\,\hat\varepsilon(x_t, \varnothing) + w\,\hat\varepsilon(x_t, y).

    In scores this is :math:`\nabla\log p_t(x) + w\,(\nabla\log p_t(x \mid y) - \nabla\log p_t(x))`, and the
    difference is the gradient of the *implicit* classifier :math:`\log p_t(y \mid x)` (Bayes' rule), so it is
    classifier guidance with the classifier the model implies. ``w = 0``: unconditional; ``w = 1``: conditional.

    Args:
        eps_cond, eps_uncond: float (N, ...) of the same shape. w: finite real.

    Returns:
        float (N, ...), ``eps_cond``'s dtype.

    Raises:
        TypeError / ValueError: non-float or non-finite tensors, different shapes, a non-finite ``w``.
    """
    check_batch("eps_cond", eps_cond)
    check_batch("eps_uncond", eps_uncond)
    check_same_shape(eps_cond=eps_cond, eps_uncond=eps_uncond)
    w = _finite_float("w", w)
    return eps_uncond + w * (eps_cond - eps_uncond)


def class_log_prob_grad(classifier: Callable, x: torch.Tensor, t, y: torch.Tensor) -> torch.Tensor:
    r""":math:`\nabla_x \log p_\phi(y \mid x, t)` of a classifier ``classifier(x, t) -> logits (N, K)``, by autograd
    (the log-softmax of the requested class summed over the batch: image n's gradient depends on image n only).

    Args:
        classifier: noise-aware classifier. x: float (N, ...). t: whatever the classifier takes as time
            (int64 (N,) for :class:`NoiseAwareClassifier`). y: int64 (N,) requested classes.

    Returns:
        float (N, ...) detached gradient, ``x``'s shape.

    Raises:
        TypeError / ValueError: bad ``x`` or ``y``, logits that are not (N, K).
    """
    check_batch("x", x)
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        logits = classifier(xg, t)
        check_shape("logits", logits, (x.shape[0], None))
        y = check_class_labels("y", y, x.shape[0], logits.shape[1]).to(x.device)
        log_p = torch.log_softmax(logits, dim=1).gather(1, y[:, None]).sum()
        (grad,) = torch.autograd.grad(log_p, xg)
    return grad.detach()


class NoiseAwareClassifier(nn.Module):
    r"""A classifier of noisy digits :math:`p_\phi(y \mid x_t, t)` for classifier guidance (Dhariwal & Nichol 2021,
    a classifier trained on noised images, which a classifier of clean images is not).

    Layout: :class:`coursekit.nets.ConvEncoder8x8` maps :math:`x_t` to a feature vector of size ``width``; the
    time goes through :class:`coursekit.nets.SinusoidalTimeEmbedding` and a two-layer MLP to the same size and is
    added; a two-layer SiLU head gives the logits.

    Args:
        n_classes: K. width: feature size. channels: the encoder's C.

    Shapes:
        ``forward(x, t)``: x (N, 1, 8, 8) in [-1, 1] (diffusion space), t (N,) int64 code indices -> logits (N, K).
    """

    def __init__(self, n_classes: int = 10, width: int = 64, channels: int = 16):
        super().__init__()
        self.n_classes = check_positive_int("n_classes", n_classes)
        width = check_positive_int("width", width)
        if width % 2:
            raise ValueError(f"width must be even (the time embedding has sine and cosine halves), got {width}")
        self.encoder = ConvEncoder8x8(width, channels=channels)
        self.time_embed = nn.Sequential(SinusoidalTimeEmbedding(width), nn.Linear(width, width), nn.SiLU(),
                                        nn.Linear(width, width))
        self.head = nn.Sequential(nn.SiLU(), nn.Linear(width, width), nn.SiLU(), nn.Linear(width, self.n_classes))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x) + self.time_embed(t))


def noise_aware_classifier_loss(classifier: nn.Module, batch, alphas_cumprod: torch.Tensor, *, generator=None):
    r"""Cross-entropy of a noise-aware classifier on noised images, for :func:`coursekit.train.fit`: draw
    :math:`t \sim U\{0..T-1\}` and :math:`x_t \sim q(x_t \mid x_0)` (:func:`coursekit.diffusion.q_sample`), return
    :math:`-\frac1N\sum_n \log p_\phi(y_n \mid x_{t_n}, t_n)`; minimising it fits :math:`p_t(y \mid x_t)` at every
    noise level, the posterior whose gradient classifier guidance needs.

    Args:
        classifier: ``classifier(x_t, t) -> logits (N, K)``. batch: ``(x0, y)``, x0 float (N, ...) in [-1, 1], y
            int64 (N,). alphas_cumprod: (T,). generator: optional, for t and the noise.

    Returns:
        ``(loss, {"accuracy": ...})``: nats per image, and the batch accuracy at the drawn noise levels.
    """
    x0, y = batch
    check_batch("x0", x0)
    a = check_alphas_cumprod(alphas_cumprod)
    t = dm.sample_timesteps(x0.shape[0], a.numel(), generator=generator, device=x0.device)
    noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    logits = classifier(dm.q_sample(x0, t, noise, a), t)
    y = check_class_labels("y", y, x0.shape[0], logits.shape[1])
    loss = F.cross_entropy(logits, y)
    return loss, {"accuracy": (logits.argmax(1) == y).float().mean().detach()}


def _batch_of(z, n: int, device) -> torch.Tensor:
    """One example's condition repeated n times: (n, *z.shape)."""
    z = torch.as_tensor(z, device=device)
    return z.unsqueeze(0).expand((n,) + tuple(z.shape))


def _expand_null(null, like: torch.Tensor, name: str) -> torch.Tensor:
    """The null condition, one example's shape (or (1, ...)), expanded to the batch ``like``."""
    null = torch.as_tensor(null, device=like.device)
    if null.shape == like.shape[1:]:
        null = null.unsqueeze(0)
    if null.ndim != like.ndim or null.shape[0] != 1 or null.shape[1:] != like.shape[1:]:
        raise ValueError(f"{name} must have one example's shape {tuple(like.shape[1:])} (or (1, ...)), "
                         f"got {tuple(null.shape)}")
    return null.expand_as(like)


def conditional_diffusion_loss(model: Callable, x0: torch.Tensor, cond, alphas_cumprod: torch.Tensor, *, null,
                               p_uncond: float, generator=None) -> torch.Tensor:
    r""":math:`L_\text{simple}` of a conditional noise model with condition dropout, the training of classifier-free
    guidance (Ho & Salimans 2022): each example's condition is replaced by the null condition with
    probability ``p_uncond``, so that one network learns :math:`\hat\varepsilon(x_t, t, c)` and
    :math:`\hat\varepsilon(x_t, t, \varnothing)`.

    Args:
        model: ``model(x_t, t, *cond) -> eps_hat``. x0: float (N, ...) in diffusion space. cond: a tensor or a tuple
            of tensors with N rows (class labels (N,); or caption features (N, L, C) and their mask (N, L)).
        alphas_cumprod: (T,). null: the null condition, one tensor (or a tuple) of one example's shape (or (1, ...)):
            the null label K, or the empty caption's features and mask. p_uncond: dropout probability in [0, 1].
        generator: optional, for the dropout, t and the noise.

    Returns:
        0-dim loss (mean squared noise error per element).

    Raises:
        TypeError / ValueError: bad x0, p_uncond outside [0, 1], conditions without N rows, null conditions of
            another shape.
    """
    check_batch("x0", x0)
    a = check_alphas_cumprod(alphas_cumprod)
    p = float(check_probability("p_uncond", p_uncond))
    cond, null = _as_tuple(cond), _as_tuple(null)
    if len(cond) != len(null):
        raise ValueError(f"null must have one entry per condition ({len(cond)}), got {len(null)}")
    n = x0.shape[0]
    drop = torch.rand(n, generator=generator, device=x0.device) < p
    dropped = []
    for i, (c, z) in enumerate(zip(cond, null)):
        check_tensor(f"cond[{i}]", c)
        if c.ndim == 0 or c.shape[0] != n:
            raise ValueError(f"cond[{i}] must have {n} rows (one per image), got shape {tuple(c.shape)}")
        z = _expand_null(z, c, f"null[{i}]")
        dropped.append(torch.where(drop.reshape((-1,) + (1,) * (c.ndim - 1)), z, c))
    t = dm.sample_timesteps(n, a.numel(), generator=generator, device=x0.device)
    eps = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    return dm.l_simple(model(dm.q_sample(x0, t, eps, a), t, *dropped), eps).mean()


def classifier_free_guidance(model: Callable, cond, null, w: float) -> Callable:
    r"""The eps function of classifier-free guidance for :func:`coursekit.diffusion.ddim_sample`: one call of
    ``model`` on the batch doubled (conditional half, null half), combined by :func:`classifier_free_eps`. The cost
    is two network evaluations per image and step, done as one pass over 2N inputs.

    Args:
        model: ``model(x_t, t, *cond)``. cond: tensor or tuple of tensors with N rows (the requested conditions).
        null: the null condition(s), one example's shape each. w: guidance weight.

    Returns:
        ``eps_fn(x_t, t) -> eps`` (no gradients).

    Raises:
        TypeError / ValueError: a non-finite ``w``, a number of null conditions other than of conditions, a null
            condition not of one example's shape.
    """
    w = _finite_float("w", w)
    cond, null = _as_tuple(cond), _as_tuple(null)
    if len(cond) != len(null):
        raise ValueError(f"null must have one entry per condition ({len(cond)}), got {len(null)}")
    both = tuple(torch.cat([c, _expand_null(z, c, "null")]) for c, z in zip(cond, null))

    @torch.no_grad()
    def eps_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = model(torch.cat([x, x]), torch.cat([t, t]), *both)
        eps_cond, eps_uncond = out.chunk(2)
        return classifier_free_eps(eps_cond, eps_uncond, w)

    return eps_fn


def classifier_guidance(model: Callable, classifier: Callable, y: torch.Tensor, w: float,
                        alphas_cumprod: torch.Tensor, *, null=()) -> Callable:
    r"""The eps function of classifier guidance: the unconditional prediction ``model(x_t, t, *null)`` moved by
    :func:`classifier_guided_eps` along :func:`class_log_prob_grad` of the noise-aware ``classifier``. Cost per image
    and step: one network evaluation and one classifier forward and backward pass.

    Args:
        model: the noise model (a conditional one with its null condition ``null``, or an unconditional one).
        classifier: ``classifier(x_t, t) -> logits``. y: int64 (N,) requested classes. w: guidance weight.
        alphas_cumprod: (T,). null: the null condition(s) passed to ``model`` (one example's shape each).

    Returns:
        ``eps_fn(x_t, t) -> eps``.
    """
    w = _finite_float("w", w)
    a = check_alphas_cumprod(alphas_cumprod)
    null = _as_tuple(null)

    def eps_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            eps = model(x, t, *(_batch_of(z, x.shape[0], x.device) for z in null))
        grad = class_log_prob_grad(classifier, x, t, y.to(x.device)) if w != 0 else torch.zeros_like(x)
        return classifier_guided_eps(eps, grad, t, a, w)

    return eps_fn


def dynamic_threshold(x0: torch.Tensor, percentile: float = 0.995) -> torch.Tensor:
    r"""Imagen's dynamic thresholding of a predicted clean image (Saharia et al. 2022): with
    :math:`s` the ``percentile`` quantile of :math:`|\hat x_0|` over each image's pixels and :math:`s \leftarrow
    \max(s, 1)`, return :math:`\operatorname{clip}(\hat x_0, -s, s)/s`. Images already inside [-1, 1] are returned
    unchanged; an image pushed outside by a large guidance weight is scaled back into [-1, 1] instead of being
    clipped (static clipping flattens every saturated pixel to +-1).

    Args:
        x0: float (N, ...) predictions in diffusion space. percentile: in [0, 1].

    Returns:
        float (N, ...), values in [-1, 1].

    Raises:
        TypeError / ValueError: bad ``x0``, percentile outside [0, 1].
    """
    check_batch("x0", x0)
    p = float(check_probability("percentile", percentile))
    flat = x0.reshape(x0.shape[0], -1).abs()
    s = torch.quantile(flat.to(torch.float64), p, dim=1).clamp_min(1.0).to(x0.dtype)
    s = s.reshape((-1,) + (1,) * (x0.ndim - 1))
    return torch.maximum(torch.minimum(x0, s), -s) / s


def thresholded(eps_fn: Callable, alphas_cumprod: torch.Tensor, percentile: float = 0.995) -> Callable:
    r"""An eps function whose implied clean image is dynamically thresholded: :math:`\hat x_0` from the prediction
    (:func:`coursekit.diffusion.predict_x0_from_eps`), :func:`dynamic_threshold`, and the noise that maps the
    thresholded :math:`\hat x_0` back to :math:`x_t` (:func:`coursekit.diffusion.predict_eps_from_x0`). A DDIM step
    with it moves towards the thresholded image.

    Returns:
        ``eps_fn(x_t, t) -> eps``.
    """
    a = check_alphas_cumprod(alphas_cumprod)
    p = float(check_probability("percentile", percentile))

    def fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        x0 = dynamic_threshold(dm.predict_x0_from_eps(x, t, eps_fn(x, t), a), p)
        return dm.predict_eps_from_x0(x, t, x0, a)

    return fn


# ------------------------------------------------------------------------------------------------
# Captions and the contrastive image-text model
# ------------------------------------------------------------------------------------------------


def caption_tokenizer() -> WordTokenizer:
    """The word tokenizer over :data:`CAPTION_WORDS` (start and padding tokens first)."""
    return WordTokenizer(CAPTION_WORDS)


def tokenize_captions(tokenizer: WordTokenizer, captions, max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Captions of any length -> the start token, their words, padding: ``(tokens int64 (N, L), mask bool (N, L))``.

    ``mask[n, i]`` is True where position i holds a token of caption n (the start token and the words) and False at
    padding; the empty caption ``""`` is the start token alone, the null condition of classifier-free guidance.

    Args:
        tokenizer: a :class:`coursekit.autoregressive.WordTokenizer` whose vocabulary holds :data:`START` and
            :data:`PAD`. captions: a string or a list of strings. max_len: L, at least 1 + the longest caption.

    Raises:
        ValueError: a vocabulary without the start or padding token, an unknown word, a caption too long for L.
    """
    L = check_positive_int("max_len", max_len)
    if START not in tokenizer.index or PAD not in tokenizer.index:
        raise ValueError(f"the tokenizer's vocabulary must contain {START!r} and {PAD!r}; use caption_tokenizer()")
    captions = [captions] if isinstance(captions, str) else list(captions)
    tokens = torch.full((len(captions), L), tokenizer.index[PAD], dtype=torch.int64)
    mask = torch.zeros((len(captions), L), dtype=torch.bool)
    for n, caption in enumerate(captions):
        words = [START] + caption.split()
        if len(words) > L:
            raise ValueError(f"caption {caption!r} has {len(words) - 1} words; max_len={L} holds at most {L - 1}")
        tokens[n, :len(words)] = tokenizer.encode(" ".join(words))[0]
        mask[n, :len(words)] = True
    return tokens, mask


def _check_tokens_mask(tokens, mask, vocab_size: int, max_len: int):
    check_tensor("tokens", tokens)
    if tokens.dtype != torch.int64 or tokens.ndim != 2:
        raise ValueError(f"tokens must be int64 of shape (N, L), got dtype {tokens.dtype} shape {tuple(tokens.shape)}")
    if tokens.shape[1] > max_len:
        raise ValueError(f"tokens may have at most max_len = {max_len} positions, got {tokens.shape[1]}")
    if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= vocab_size):
        raise ValueError(f"tokens must lie in 0..{vocab_size - 1}")
    if mask is None:
        return torch.ones(tokens.shape, dtype=torch.bool, device=tokens.device)
    check_tensor("mask", mask)
    if mask.dtype != torch.bool or mask.shape != tokens.shape:
        raise ValueError(f"mask must be a bool tensor of the tokens' shape {tuple(tokens.shape)}, got dtype "
                         f"{mask.dtype} shape {tuple(mask.shape)}")
    if not bool(mask.any(1).all()):
        raise ValueError("every caption's mask must keep at least one token (the start token)")
    return mask


class TextEncoder(nn.Module):
    r"""A small transformer text encoder (Vaswani et al. 2017; pre-norm, no causal mask) over padded caption tokens.

    Token and learnt position embeddings, ``n_layers`` self-attention blocks whose attention ignores padding (the
    key padding mask), a final LayerNorm: the **token features** (N, L, d_model), the context that
    :class:`CrossAttention` reads. Their mean over the caption's tokens, projected to ``embed_dim``, is the caption's
    **embedding** (CLIP takes the feature at the end token instead; the mean over a caption this short does as well).

    Args:
        vocab_size: V. max_len: L. d_model, n_heads, n_layers: transformer sizes. embed_dim: E.

    Shapes:
        ``token_features(tokens, mask)``: int64 (N, L') and bool (N, L'), L' <= L -> (N, L', d_model), zero at padding.
        ``forward(tokens, mask)``: -> (N, E). ``mask=None``: every position is a token.

    Raises:
        ValueError: bad sizes, tokens out of range, a mask of another shape or one that keeps no token of a caption.
    """

    def __init__(self, vocab_size: int, max_len: int, d_model: int = 32, n_heads: int = 2, n_layers: int = 1,
                 embed_dim: int = 32):
        super().__init__()
        self.vocab_size = check_positive_int("vocab_size", vocab_size)
        self.max_len = check_positive_int("max_len", max_len)
        self.d_model = check_positive_int("d_model", d_model)
        if d_model % check_positive_int("n_heads", n_heads):
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.embed = nn.Embedding(self.vocab_size, d_model)
        self.pos = nn.Parameter(0.02 * torch.randn(self.max_len, d_model))
        layer = nn.TransformerEncoderLayer(d_model, n_heads, 4 * d_model, dropout=0.0, batch_first=True,
                                           norm_first=True, activation="gelu")
        self.blocks = nn.TransformerEncoder(layer, check_positive_int("n_layers", n_layers), enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.proj = nn.Linear(d_model, check_positive_int("embed_dim", embed_dim))

    def token_features(self, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        mask = _check_tokens_mask(tokens, mask, self.vocab_size, self.max_len)
        h = self.embed(tokens) + self.pos[: tokens.shape[1]]
        h = self.norm(self.blocks(h, src_key_padding_mask=~mask))
        return h * mask[..., None].to(h.dtype)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        mask = _check_tokens_mask(tokens, mask, self.vocab_size, self.max_len)
        h = self.token_features(tokens, mask)
        m = mask[..., None].to(h.dtype)
        return self.proj((h * m).sum(1) / m.sum(1))


def contrastive_logits(u: torch.Tensor, v: torch.Tensor, temperature) -> torch.Tensor:
    r"""The (N, M) similarity logits :math:`\ell_{ij} = \cos(u_i, v_j)/\tau` of two sets of embeddings (Radford et
    al. 2021): rows L2-normalised, inner products divided by the temperature.

    Args:
        u: float (N, E). v: float (M, E). temperature: :math:`\tau > 0`, a float or a 0-dim tensor (a learnt one
            keeps its gradient).

    Returns:
        float (N, M), each entry in :math:`[-1/\tau, 1/\tau]`.

    Raises:
        TypeError / ValueError: non-float or non-finite embeddings, different E, a temperature <= 0.
    """
    check_matrix("u", u)
    check_matrix("v", v)
    if u.shape[1] != v.shape[1]:
        raise ValueError(f"u and v must have the same embedding size E, got {u.shape[1]} and {v.shape[1]}")
    if isinstance(temperature, torch.Tensor):
        if temperature.numel() != 1 or not temperature.is_floating_point():
            raise TypeError("temperature must be a positive float or a one-element float tensor")
        value = float(temperature.detach())
        if not math.isfinite(value) or value <= 0:
            raise ValueError(f"temperature must be a finite number > 0, got {value}")
    else:
        temperature = check_positive_float("temperature", temperature)
    return F.normalize(u, dim=1) @ F.normalize(v, dim=1).T / temperature


def info_nce(logits: torch.Tensor) -> torch.Tensor:
    r"""The InfoNCE loss of a batch of N pairs (van den Oord et al. 2018): row i of the (N, N) ``logits``
    scores query i against every key, and key i is its positive,

    .. math::

        L = -\frac1N \sum_{i=1}^N \log \frac{\exp \ell_{ii}}{\sum_{j=1}^N \exp \ell_{ij}}
        \qquad\text{(nats)},\qquad I(X; Y) \ge \log N - \mathbb E[L]

    (the bound, derived in chapter 12, holds for any scores; the logits of the optimal critic are
    :math:`\log p(y_j \mid x_i)/p(y_j)` plus a constant per row). It is the cross-entropy of an N-way classifier
    that picks the positive, so :math:`L \ge 0` and the bound never exceeds :math:`\log N`.

    Args:
        logits: float (N, N), N >= 1.

    Returns:
        0-dim tensor, nats.

    Raises:
        TypeError / ValueError: non-float, non-finite or non-square logits.
    """
    check_matrix("logits", logits)
    if logits.shape[0] != logits.shape[1]:
        raise ValueError(f"logits must be square (N, N), one positive per row on the diagonal, got "
                         f"{tuple(logits.shape)}")
    return F.cross_entropy(logits, torch.arange(logits.shape[0], device=logits.device))


def symmetric_info_nce(logits: torch.Tensor) -> torch.Tensor:
    r"""CLIP's symmetric loss (Radford et al. 2021): the mean of :func:`info_nce` over the rows (image to
    text) and over the columns (text to image) of the (N, N) image-text logits. Each half bounds the mutual
    information, and so does their mean.

    Returns:
        0-dim tensor, nats.
    """
    check_matrix("logits", logits)
    return 0.5 * (info_nce(logits) + info_nce(logits.T))


class ContrastiveModel(nn.Module):
    r"""A CLIP-style model (Radford et al. 2021): an image encoder and a text encoder mapping to one embedding space,
    compared by cosine similarity divided by a learnt temperature :math:`\tau`. As in CLIP the temperature is learnt
    as :math:`\log(1/\tau)`, initialised at :math:`\tau` = ``temperature`` and clipped so that :math:`1/\tau \le`
    ``max_scale``.

    Args:
        image_encoder: ``(N, 1, 8, 8) -> (N, E)`` (e.g. :class:`coursekit.nets.ConvEncoder8x8`).
        text_encoder: ``(tokens, mask) -> (N, E)`` (:class:`TextEncoder`).
        temperature: initial (or fixed) :math:`\tau > 0`. learn_temperature: learn it (else keep it fixed).
        max_scale: largest :math:`1/\tau` (CLIP: 100).
    """

    def __init__(self, image_encoder: nn.Module, text_encoder: nn.Module, temperature: float = 0.07,
                 learn_temperature: bool = True, max_scale: float = 100.0):
        super().__init__()
        self.image_encoder, self.text_encoder = image_encoder, text_encoder
        log_scale = torch.tensor(math.log(1.0 / check_positive_float("temperature", temperature)))
        self.max_log_scale = math.log(check_positive_float("max_scale", max_scale))
        if learn_temperature:
            self.log_scale = nn.Parameter(log_scale)
        else:
            self.register_buffer("log_scale", log_scale)

    @property
    def temperature(self) -> torch.Tensor:
        """:math:`\\tau = 1/\\min(\\exp(\\text{log\\_scale}), \\text{max\\_scale})`, 0-dim (differentiable
        if learnt)."""
        return torch.exp(-self.log_scale.clamp(max=self.max_log_scale))

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        """Unit-norm image embeddings (N, E)."""
        return F.normalize(self.image_encoder(x), dim=1)

    def encode_text(self, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Unit-norm caption embeddings (N, E)."""
        return F.normalize(self.text_encoder(tokens, mask), dim=1)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """The (N, M) logits of N images against M captions (:func:`contrastive_logits`)."""
        return contrastive_logits(self.image_encoder(x), self.text_encoder(tokens, mask), self.temperature)


def contrastive_loss(model: ContrastiveModel, batch):
    """:func:`symmetric_info_nce` of a minibatch of (image, caption) pairs, for :func:`coursekit.train.fit`.

    Args:
        model: :class:`ContrastiveModel`. batch: ``(images (N, 1, 8, 8), tokens (N, L), mask (N, L))``.

    Returns:
        ``(loss, {"temperature": tau})``, loss in nats.

    Raises:
        TypeError / ValueError: non-float or non-finite images, images and captions of different N (and the text
            encoder's errors for bad tokens or masks).
    """
    x, tokens, mask = batch
    check_batch("x", x)
    check_tensor("tokens", tokens)
    if tokens.ndim < 1 or tokens.shape[0] != x.shape[0]:
        raise ValueError(f"x and tokens must hold the same number N of (image, caption) pairs, got x of shape "
                         f"{tuple(x.shape)} and tokens of shape {tuple(tokens.shape)}")
    loss = symmetric_info_nce(model(x, tokens, mask))
    return loss, {"temperature": model.temperature.detach()}


def zero_shot_classify(image_emb: torch.Tensor, prompt_emb: torch.Tensor, prompt_class: torch.Tensor,
                       n_classes: int) -> torch.Tensor:
    r"""Zero-shot classification (Radford et al. 2021): each class is the mean of its prompts' unit
    embeddings, re-normalised (a *prompt ensemble*), and an image gets the class of highest cosine
    similarity. No classifier is trained: the classes are given as text.

    Args:
        image_emb: float (N, E). prompt_emb: float (P, E), one row per prompt. prompt_class: int64 (P,), the class
            of each prompt, every class 0..K-1 present. n_classes: K.

    Returns:
        int64 (N,) predicted classes.

    Raises:
        TypeError / ValueError: bad embeddings, a class without a prompt.
    """
    check_matrix("image_emb", image_emb)
    check_matrix("prompt_emb", prompt_emb)
    k = check_positive_int("n_classes", n_classes)
    c = check_class_labels("prompt_class", prompt_class, prompt_emb.shape[0], k).to(prompt_emb.device)
    if image_emb.shape[1] != prompt_emb.shape[1]:
        raise ValueError(f"image_emb and prompt_emb must have the same E, got {image_emb.shape[1]} and "
                         f"{prompt_emb.shape[1]}")
    counts = torch.bincount(c, minlength=k)
    if bool((counts == 0).any()):
        missing = (counts == 0).nonzero().flatten().tolist()
        raise ValueError(f"every class needs a prompt; classes without one: {missing}")
    p = F.normalize(prompt_emb, dim=1)
    centres = torch.zeros(k, p.shape[1], dtype=p.dtype, device=p.device).index_add_(0, c, p)
    return (F.normalize(image_emb, dim=1) @ F.normalize(centres, dim=1).T).argmax(1)


def retrieval_accuracy(query_emb: torch.Tensor, key_emb: torch.Tensor, target: torch.Tensor) -> float:
    """Top-1 retrieval accuracy: the fraction of queries whose most similar key (cosine) is ``target``.

    Args:
        query_emb: float (N, E) (images). key_emb: float (M, E) (captions). target: int64 (N,) in 0..M-1.

    Returns:
        python float in [0, 1].

    Raises:
        TypeError / ValueError: bad embeddings, different E, targets outside 0..M-1.
    """
    check_matrix("query_emb", query_emb)
    check_matrix("key_emb", key_emb)
    if query_emb.shape[1] != key_emb.shape[1]:
        raise ValueError(f"query_emb and key_emb must have the same E, got {query_emb.shape[1]} and {key_emb.shape[1]}")
    target = check_class_labels("target", target, query_emb.shape[0], key_emb.shape[0]).to(query_emb.device)
    best = (F.normalize(query_emb, dim=1) @ F.normalize(key_emb, dim=1).T).argmax(1)
    return float((best == target).float().mean())


# ------------------------------------------------------------------------------------------------
# Cross-attention and latent diffusion
# ------------------------------------------------------------------------------------------------


class CrossAttention(nn.Module):
    r"""Multi-head cross-attention with a key padding mask, as in the latent diffusion U-Net (Rombach et al. 2022,
    after Vaswani et al. 2017): queries from the network's features x, keys and values from a context
    (caption token features),

    .. math::

        \operatorname{Attn}(x, c)_i = \sum_j a_{ij}\, W_V c_j, \qquad
        a_{ij} = \frac{\exp(q_i^\top k_j/\sqrt{d_h} + M_j)}{\sum_l \exp(q_i^\top k_l/\sqrt{d_h} + M_l)},\quad
        q_i = W_Q \operatorname{LN}(x_i),\ k_j = W_K c_j,

    per head, with :math:`M_j = -\infty` at padding (so padded positions get weight exactly 0, whatever their
    content) and 0 elsewhere; the heads are concatenated, projected (the projection starts at zero, so the block
    starts as the identity) and added to x (residual).

    Args:
        query_dim: D_q (divisible by n_heads). context_dim: D_c. n_heads: heads.

    Shapes:
        ``forward(x, context, mask=None, return_weights=False)``: x (N, L_q, D_q), context (N, L_c, D_c), mask bool
        (N, L_c) (True: a token) -> (N, L_q, D_q), and with ``return_weights`` also the weights (N, heads, L_q, L_c).

    Raises:
        ValueError: bad sizes or shapes, a mask that keeps no position of some example.
    """

    def __init__(self, query_dim: int, context_dim: int, n_heads: int = 4):
        super().__init__()
        self.query_dim = check_positive_int("query_dim", query_dim)
        self.context_dim = check_positive_int("context_dim", context_dim)
        self.n_heads = check_positive_int("n_heads", n_heads)
        if query_dim % n_heads:
            raise ValueError(f"query_dim ({query_dim}) must be divisible by n_heads ({n_heads})")
        self.norm = nn.LayerNorm(query_dim)
        self.q = nn.Linear(query_dim, query_dim, bias=False)
        self.k = nn.Linear(context_dim, query_dim, bias=False)
        self.v = nn.Linear(context_dim, query_dim, bias=False)
        self.out = nn.Linear(query_dim, query_dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor | None = None,
                return_weights: bool = False):
        check_floating("x", x)
        check_floating("context", context)
        check_shape("x", x, ("N", None, self.query_dim))
        check_shape("context", context, (x.shape[0], None, self.context_dim))
        n, lq, lc, h = x.shape[0], x.shape[1], context.shape[1], self.n_heads
        if mask is None:
            mask = torch.ones(n, lc, dtype=torch.bool, device=x.device)
        check_tensor("mask", mask)
        if mask.dtype != torch.bool or mask.shape != (n, lc):
            raise ValueError(f"mask must be a bool tensor of shape ({n}, {lc}), got dtype {mask.dtype} "
                             f"shape {tuple(mask.shape)}")
        if not bool(mask.any(1).all()):
            raise ValueError("every example's mask must keep at least one context position")
        dh = self.query_dim // h
        q = self.q(self.norm(x)).reshape(n, lq, h, dh).transpose(1, 2)  # (N, h, Lq, dh)
        k = self.k(context).reshape(n, lc, h, dh).transpose(1, 2)  # (N, h, Lc, dh)
        v = self.v(context).reshape(n, lc, h, dh).transpose(1, 2)
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(dh)
        scores = scores.masked_fill(~mask[:, None, None, :], float("-inf"))
        weights = torch.softmax(scores, dim=-1)
        out = x + self.out((weights @ v).transpose(1, 2).reshape(n, lq, self.query_dim))
        return (out, weights) if return_weights else out


class LatentDenoiser(nn.Module):
    r"""The noise model of latent diffusion at digit scale: :math:`\hat\varepsilon_\theta(z_t, t, c)` for a latent
    vector :math:`z_t` and the token features c of a caption.

    The latent is mapped to ``width`` features and the time embedding (:class:`coursekit.nets.SinusoidalTimeEmbedding`
    and a two-layer MLP) is added; then ``depth`` blocks, each a residual pre-norm MLP followed by a
    :class:`CrossAttention` in which the features (one query token) attend to the caption's tokens; a final
    LayerNorm and linear map give the noise prediction. The latent diffusion U-Net of Rombach et al. (2022) has the
    same ingredients on a spatial latent (one query per position); the latent here is a vector.

    Args:
        latent_dim: d. context_dim: size of the caption token features. width, depth: sizes. n_heads: attention heads.

    Shapes:
        ``forward(z, t, context, mask)``: z (N, d), t (N,) int64 code indices, context (N, L, C), mask bool (N, L)
        -> (N, d).
    """

    def __init__(self, latent_dim: int, context_dim: int, width: int = 128, depth: int = 2, n_heads: int = 4):
        super().__init__()
        self.latent_dim = check_positive_int("latent_dim", latent_dim)
        width = check_positive_int("width", width)
        if width % 2:
            raise ValueError(f"width must be even, got {width}")
        self.time_embed = nn.Sequential(SinusoidalTimeEmbedding(width), nn.Linear(width, width), nn.SiLU(),
                                        nn.Linear(width, width))
        self.inp = nn.Linear(self.latent_dim, width)
        self.mlps = nn.ModuleList([
            nn.Sequential(nn.LayerNorm(width), nn.Linear(width, 2 * width), nn.SiLU(), nn.Linear(2 * width, width))
            for _ in range(check_positive_int("depth", depth))])
        self.attns = nn.ModuleList([CrossAttention(width, context_dim, n_heads) for _ in range(depth)])
        self.out = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, self.latent_dim))

    def forward(self, z: torch.Tensor, t: torch.Tensor, context: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        check_shape("z", check_tensor("z", z), ("N", self.latent_dim))
        h = self.inp(z) + self.time_embed(t)
        for mlp, attn in zip(self.mlps, self.attns):
            h = h + mlp(h)
            h = attn(h[:, None], context, mask)[:, 0]
        return self.out(h)


class LatentSpace(nn.Module):
    r"""The latent space of a trained autoencoder, standardised for diffusion: :math:`z = (f(x) - m)/s` with the
    per-coordinate mean m and standard deviation s of the training codes (Rombach et al. 2022 rescale their
    latents to unit variance for the same reason: the forward process assumes data of variance about 1).

    Args:
        autoencoder: has ``encode(x (N, D)) -> (N, k)`` and ``decode(z (N, k)) -> (N, D)`` (e.g.
            :class:`coursekit.autoencoders.Autoencoder` with ``output="sigmoid"``). codes: (N, k) training codes.

    Shapes:
        ``encode``: (N, D) -> (N, k) standardised; ``decode``: (N, k) -> (N, D) images.
    """

    def __init__(self, autoencoder: nn.Module, codes: torch.Tensor):
        super().__init__()
        check_matrix("codes", codes, min_rows=2)
        self.autoencoder = autoencoder
        self.register_buffer("mean", codes.detach().mean(0))
        self.register_buffer("std", codes.detach().std(0).clamp_min(1e-6))

    @property
    def dim(self) -> int:
        return int(self.mean.numel())

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return (self.autoencoder.encode(x) - self.mean) / self.std

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        check_shape("z", check_tensor("z", z), ("N", self.dim))
        return self.autoencoder.decode(z * self.std + self.mean)


def count_flops(fn: Callable, *args, **kwargs) -> int:
    """Floating-point operations of one call ``fn(*args, **kwargs)``, counted by ``torch.utils.flop_counter``
    (matrix products, convolutions and attention, 2 per multiply-add; element-wise operations are not counted).
    A backward pass run inside the call with ``.backward()`` is counted too (the counter does not support
    ``torch.autograd.grad``); wrap the call in ``torch.no_grad()`` for a forward pass alone.

    Returns:
        int, FLOPs of the whole call (divide by the batch size for a per-example figure).

    Raises:
        TypeError: ``fn`` is not callable.
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    counter = FlopCounterMode(display=False)
    with counter:
        fn(*args, **kwargs)
    return int(counter.get_total_flops())


# ------------------------------------------------------------------------------------------------
# Image-to-image translation
# ------------------------------------------------------------------------------------------------


def thicken_strokes(x: torch.Tensor, width: int = 2) -> torch.Tensor:
    """A second rendering of digits with thicker strokes: a grey-scale dilation (``scipy.ndimage.grey_dilation``)
    with a flat 1 x ``width`` footprint along the rows, i.e. each pixel becomes the maximum of a run of ``width``
    pixels of its row around it. For ``width = 2`` (scipy's placement of an even footprint) that is
    ``max(x[..., j], x[..., j + 1])``, the last column kept; borders are reflected.

    Args:
        x: float (N, 1, H, W) images in [0, 1]. width: footprint width >= 1 (1: unchanged).

    Returns:
        float tensor of ``x``'s shape, dtype and device, >= x everywhere.

    Raises:
        TypeError / ValueError: not (N, 1, H, W), non-finite, a bad width.
    """
    check_floating("x", x)
    check_shape("x", x, ("N", 1, None, None))
    width = check_positive_int("width", width)
    out = ndimage.grey_dilation(x.detach().cpu().numpy(), size=(1, 1, 1, width))
    return torch.from_numpy(np.ascontiguousarray(out)).to(device=x.device, dtype=x.dtype)


class ImageTranslator(nn.Module):
    r"""A small U-Net generator for 8x8 image-to-image translation (the skip-connected encoder-decoder of pix2pix,
    Isola et al. 2017, scaled down): conv3x3 (C) -> conv4x4 stride 2 (2C, 4x4) -> conv3x3 (2C) ->
    transposed conv (C, 8x8) -> concatenated with the first features (the skip) -> conv3x3 (C) -> conv3x3 -> sigmoid.

    Args:
        channels: C. in_channels: channels of the input image.

    Shapes:
        (N, in_channels, 8, 8) in [0, 1] -> (N, 1, 8, 8) in (0, 1).
    """

    def __init__(self, channels: int = 16, in_channels: int = 1):
        super().__init__()
        c = check_positive_int("channels", channels)
        self.in_channels = check_positive_int("in_channels", in_channels)
        self.inp = nn.Sequential(nn.Conv2d(self.in_channels, c, 3, padding=1), nn.SiLU())
        self.down = nn.Sequential(nn.Conv2d(c, 2 * c, 4, stride=2, padding=1), nn.SiLU(),
                                  nn.Conv2d(2 * c, 2 * c, 3, padding=1), nn.SiLU())
        self.up = nn.Sequential(nn.ConvTranspose2d(2 * c, c, 4, stride=2, padding=1), nn.SiLU())
        self.out = nn.Sequential(nn.Conv2d(2 * c, c, 3, padding=1), nn.SiLU(), nn.Conv2d(c, 1, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_shape("x", x, ("N", self.in_channels, 8, 8))
        h = self.inp(x)
        return torch.sigmoid(self.out(torch.cat([self.up(self.down(h)), h], dim=1)))


class PatchDiscriminator(nn.Module):
    r"""A fully convolutional PatchGAN-style discriminator for 8x8 images (Isola et al. 2017): one logit
    per position of a 4x4 grid, each computed from a window of up to 12x12 pixels (conv4x4 stride 2, then two conv3x3,
    zero padding), so the patches overlap; pix2pix's is conditional (it sees the input image and the output together,
    channels concatenated).

    Args:
        in_channels: total channels of the images passed (1, or 2 for a conditional one). channels: C.

    Shapes:
        ``forward(*images)``: images (N, c_i, 8, 8) with sum c_i = in_channels -> logits (N, 16), one per patch.
    """

    def __init__(self, in_channels: int = 1, channels: int = 16):
        super().__init__()
        self.in_channels = check_positive_int("in_channels", in_channels)
        c = check_positive_int("channels", channels)
        self.net = nn.Sequential(
            nn.Conv2d(self.in_channels, c, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(c, 2 * c, 3, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(2 * c, 1, 3, padding=1),
        )

    def forward(self, *images: torch.Tensor) -> torch.Tensor:
        x = torch.cat(images, dim=1)
        check_shape("images", x, ("N", self.in_channels, 8, 8))
        return self.net(x).flatten(1)


def pix2pix_generator_loss(fake_logits: torch.Tensor, fake: torch.Tensor, target: torch.Tensor,
                           l1_weight: float = 100.0) -> torch.Tensor:
    r"""The pix2pix generator objective (Isola et al. 2017, with the non-saturating GAN loss):

    .. math::

        L_G = -\mathbb E \log D(x, G(x)) + \lambda\, \mathbb E \lVert y - G(x) \rVert_1,

    the first term :func:`coursekit.gan.generator_loss` over the discriminator's patch logits, the second the mean
    absolute error per pixel against the paired target y, weighted by :math:`\lambda` (100 in the paper).

    Args:
        fake_logits: float (N, P) patch logits of D on (input, G(input)) (or (N,)). fake, target: float (N, ...) of
            one shape. l1_weight: :math:`\lambda \ge 0`.

    Returns:
        0-dim tensor.
    """
    check_batch("fake_logits", fake_logits)
    check_batch("fake", fake)
    check_batch("target", target)
    check_same_shape(fake=fake, target=target)
    lam = check_nonnegative_float("l1_weight", l1_weight)
    return gan.generator_loss(fake_logits.reshape(-1)) + lam * (fake - target).abs().mean()


def pix2pix_players(generator: nn.Module, discriminator: nn.Module, opt_g, opt_d, *, l1_weight: float = 100.0):
    r"""The two :class:`coursekit.train.Player` s of pix2pix for :func:`coursekit.train.fit_players` on data
    ``(source, target)`` of paired images. One step, as in the paper's code: the generator translates the minibatch
    once; the conditional discriminator minimises :func:`coursekit.gan.discriminator_loss` of its patch logits on
    (source, target) against (source, G(source)) with the translation detached; then the generator minimises
    :func:`pix2pix_generator_loss` on the same minibatch and translation (the discriminator, just updated, frozen).
    The generator's L1 term is logged as ``l1``.

    Returns:
        ``[discriminator player, generator player]`` (History keys ``loss_d``, ``loss_g``); the generator's player
        reuses the discriminator's minibatch (``uses_batch=False``).
    """
    lam = check_nonnegative_float("l1_weight", l1_weight)
    step = {}

    def d_loss(batch):
        src, tgt = batch
        fake = generator(src)
        step["batch"] = (src, tgt, fake)
        return gan.discriminator_loss(discriminator(src, tgt).reshape(-1),
                                      discriminator(src, fake.detach()).reshape(-1))

    def g_loss(_):
        src, tgt, fake = step.pop("batch")
        with frozen(discriminator):
            loss = pix2pix_generator_loss(discriminator(src, fake), fake, tgt, lam)
        return loss, {"l1": (fake - tgt).abs().mean().detach()}

    return [Player("discriminator", discriminator, opt_d, d_loss, loss_key="loss_d"),
            Player("generator", generator, opt_g, g_loss, uses_batch=False, loss_key="loss_g")]


def cycle_consistency_loss(g_ab: Callable, g_ba: Callable, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    r"""CycleGAN's cycle-consistency loss (Zhu et al. 2017): translating to the other domain and back must give
    the image again, in both directions,

    .. math::

        L_\text{cyc} = \mathbb E_a \lVert G_{BA}(G_{AB}(a)) - a \rVert_1
            + \mathbb E_b \lVert G_{AB}(G_{BA}(b)) - b \rVert_1,

    each norm averaged over the pixels (the mean absolute error per pixel).

    Args:
        g_ab, g_ba: the translators A -> B and B -> A. a: float (N, ...) images of domain A; b: float (M, ...) of B.

    Returns:
        0-dim tensor.
    """
    check_batch("a", a)
    check_batch("b", b)
    return (g_ba(g_ab(a)) - a).abs().mean() + (g_ab(g_ba(b)) - b).abs().mean()


def cyclegan_players(g_ab: nn.Module, g_ba: nn.Module, d_a: nn.Module, d_b: nn.Module, opt_g, opt_d, *,
                     cycle_weight: float = 10.0):
    r"""The players of CycleGAN (Zhu et al. 2017, in the non-saturating form) for :func:`coursekit.train.fit_players`
    on data ``(a, b)`` of *unpaired* images (row i of a and row i of b are different digits). One step, as in the
    paper's code: the translators' player (both translators, ``opt_g`` over both) translates the minibatch once and
    minimises the two generator losses plus ``cycle_weight`` times :func:`cycle_consistency_loss` (:math:`\lambda =
    10` in the paper), logged as ``cycle``, the discriminators frozen; then the discriminators' player (``opt_d`` over
    both) minimises :func:`coursekit.gan.discriminator_loss` of :math:`D_B` on b vs :math:`G_{AB}(a)` plus that of
    :math:`D_A` on a vs :math:`G_{BA}(b)`, on the same minibatch and the same translations, detached.

    Returns:
        ``[generators player, discriminators player]`` (History keys ``loss_g``, ``loss_d``); the discriminators'
        player reuses the translators' minibatch (``uses_batch=False``).
    """
    lam = check_nonnegative_float("cycle_weight", cycle_weight)
    dis = nn.ModuleDict({"a": d_a, "b": d_b})
    gens = nn.ModuleDict({"ab": g_ab, "ba": g_ba})
    step = {}

    def g_loss(batch):
        a, b = batch
        fake_b, fake_a = g_ab(a), g_ba(b)
        step["batch"] = (a, b, fake_b.detach(), fake_a.detach())
        with frozen(d_a, d_b):
            adv = gan.generator_loss(d_b(fake_b).reshape(-1)) + gan.generator_loss(d_a(fake_a).reshape(-1))
        cyc = (g_ba(fake_b) - a).abs().mean() + (g_ab(fake_a) - b).abs().mean()
        return adv + lam * cyc, {"cycle": cyc.detach()}

    def d_loss(_):
        a, b, fake_b, fake_a = step.pop("batch")
        return (gan.discriminator_loss(d_b(b).reshape(-1), d_b(fake_b).reshape(-1))
                + gan.discriminator_loss(d_a(a).reshape(-1), d_a(fake_a).reshape(-1)))

    return [Player("generators", gens, opt_g, g_loss, loss_key="loss_g"),
            Player("discriminators", dis, opt_d, d_loss, uses_batch=False, loss_key="loss_d")]


@torch.no_grad()
def translation_scores(translated: torch.Tensor, target: torch.Tensor, labels: torch.Tensor,
                       classifier=None) -> dict:
    """How well translated digits keep their class and match their paired target.

    Args:
        translated, target: float (N, 1, 8, 8) in [0, 1]. labels: int64 (N,) the digits' classes.
        classifier: default :func:`coursekit.metrics.get_digits_classifier` ``()``.

    Returns:
        ``{"class_kept": share whose course-classifier class is the label, "mae": mean absolute error per pixel}``,
        python floats.
    """
    check_batch("translated", translated)
    check_batch("target", target)
    check_same_shape(translated=translated, target=target)
    labels = check_class_labels("labels", labels, translated.shape[0], 10).cpu()
    pred = metrics.probabilities(translated.detach().cpu(), classifier).argmax(1)
    return {"class_kept": float((pred == labels).float().mean()),
            "mae": float((translated - target).abs().mean())}
