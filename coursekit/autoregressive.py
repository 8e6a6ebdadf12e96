"""Chapter 11: autoregressive models and discrete tokens.

An autoregressive model writes the probability of a sequence of discrete tokens :math:`x = (x_1, \\dots, x_D)`
by the chain rule, :math:`p_\\theta(x) = \\prod_i p_\\theta(x_i \\mid x_{<i})`, one categorical distribution per
position (Larochelle & Murray 2011). Its likelihood is exact and cheap (one network pass for all D factors,
teacher forcing) and its sampling is sequential (D passes). This module holds

* tokens: the 17 grey levels of the digits as integers (:func:`digits_to_tokens`, :func:`tokens_to_digits`);
* masked convolutions of types A and B (:class:`MaskedConv2d`, van den Oord et al. 2016, "Pixel recurrent
  neural networks"), the plain :class:`PixelCNN` with its blind spot, and the :class:`GatedPixelCNN` whose
  vertical and horizontal stacks remove it (van den Oord et al. 2016, "Conditional image generation with
  PixelCNN decoders");
* a small decoder-only :class:`CausalTransformer` (Vaswani et al. 2017) over any token sequence;
* the exact log-likelihood (:func:`sequence_log_prob`, :func:`nll_loss`), the receptive field by autograd
  (:func:`dependency_matrix`), the independent-pixel baseline (:func:`pixel_marginals`), and sequential
  sampling with temperature and top-k (:func:`top_k_logits`, :func:`sample_next`, :func:`sample`);
* vector quantisation (van den Oord et al. 2017): nearest-codebook assignment (:func:`vq_assign`), the
  straight-through estimator (:func:`straight_through`, Bengio et al. 2013), codebook and commitment losses,
  code usage and perplexity (:func:`code_usage`), dead-code restarts (:meth:`VectorQuantizer.restart_dead_codes`)
  and a small :class:`VQVAE` for the 8x8 digits;
* the DALL-E (Ramesh et al. 2021) pipeline at digit scale: captions from the digits' labels and ink
  (:func:`digit_captions`, :class:`WordTokenizer`) followed by image codes in one sequence.

Every model maps int64 tokens ``(N, L)`` to logits ``(N, L, V)`` with ``logits[:, i]`` a function of
``tokens[:, :i]`` only; ``model.forward_onehot`` takes the one-hot float ``(N, L, V)`` so that autograd can
measure which inputs each output depends on.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ._validate import (
    check_choice,
    check_class_labels,
    check_finite_values,
    check_floating,
    check_matrix,
    check_nonnegative_float,
    check_nonnegative_int,
    check_positive_float,
    check_positive_int,
    check_shape,
    check_tensor,
)
from .flows import DIGITS_LEVELS
from .metrics import nats_to_bits_per_dim

__all__ = [
    "DIGITS_LEVELS",
    "digits_to_tokens",
    "tokens_to_digits",
    "check_tokens",
    "causal_mask",
    "MaskedConv2d",
    "PixelCNN",
    "GatedPixelCNN",
    "CausalTransformer",
    "sequence_log_prob",
    "nll_loss",
    "bits_per_dim",
    "dependency_matrix",
    "pixel_marginals",
    "marginal_nll",
    "top_k_logits",
    "sample_next",
    "sample",
    "vq_assign",
    "straight_through",
    "code_usage",
    "VectorQuantizer",
    "VQVAE",
    "vqvae_loss",
    "WordTokenizer",
    "digit_captions",
    "DIGIT_NAMES",
]

#: The class names used as text tokens.
DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


# ------------------------------------------------------------------------------------------------
# Tokens
# ------------------------------------------------------------------------------------------------


def digits_to_tokens(x: torch.Tensor) -> torch.Tensor:
    """The 8x8 digits as tokens: intensity ``k/16`` -> the integer level ``k`` in 0..16, raster order.

    Args:
        x: float (N, 64) or (N, 1, 8, 8) digits of :func:`coursekit.data.load_digits` (multiples of 1/16).

    Returns:
        int64 (N, 64), the pixel levels in raster order (row by row, left to right).

    Raises:
        TypeError: if ``x`` is not a floating-point tensor. ValueError: if it does not hold levels k/16.
    """
    check_floating("x", x)
    x = x.reshape(x.shape[0], -1) if x.ndim == 4 else x
    check_matrix("x", x, min_rows=0)
    k = x * (DIGITS_LEVELS - 1)
    if x.numel() and bool(((k - k.round()).abs() > 1e-4).any() or k.min() < -1e-4 or k.max() > 16 + 1e-4):
        raise ValueError("x must hold the digits' intensities k/16, k = 0..16 (as load_digits returns them)")
    return k.round().to(torch.int64)


def tokens_to_digits(tokens: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`digits_to_tokens`: int levels (N, D) in 0..16 -> float32 intensities ``k/16``."""
    check_tokens("tokens", tokens, DIGITS_LEVELS)
    return tokens.to(torch.float32) / (DIGITS_LEVELS - 1)


def check_tokens(name: str, t, vocab_size: int, length: int | None = None) -> torch.Tensor:
    """Check a batch of token sequences: an integer tensor (N, L) with values in 0..vocab_size-1.

    Raises:
        TypeError: not an integer tensor. ValueError: wrong number of dimensions, length or a value out of range.
    """
    check_tensor(name, t)
    if t.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise TypeError(f"{name} must be an integer tensor of token ids, got dtype {t.dtype}")
    check_shape(name, t, ("N", "L" if length is None else length))
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= vocab_size):
        raise ValueError(f"{name} must hold token ids in 0..{vocab_size - 1}, got values in "
                         f"{int(t.min())}..{int(t.max())}")
    return t.to(torch.int64)


def _check_onehot(onehot: torch.Tensor, length: int, vocab: int) -> torch.Tensor:
    check_floating("onehot", onehot)
    return check_shape("onehot", onehot, ("N", length, vocab))


# ------------------------------------------------------------------------------------------------
# Masked convolutions and PixelCNNs
# ------------------------------------------------------------------------------------------------


def causal_mask(kernel_size: int, mask_type: str) -> torch.Tensor:
    """The (k, k) 0/1 mask of a masked convolution (van den Oord et al. 2016, "Pixel recurrent neural networks").

    With the kernel centred on pixel (r, c), the kept weights see

    * ``"A"``: the rows above and the pixels left of c in row r (not the pixel itself): the first layer;
    * ``"B"``: the same and the centre: later layers, whose centre feature already only sees the past;
    * ``"V_A"`` / ``"V_B"``: vertical stack, the rows above (``V_A``) or the rows above and row r (``V_B``),
      all columns of the kernel;
    * ``"H_A"`` / ``"H_B"``: horizontal stack, row r only, left of c (``H_A``) or up to and including c (``H_B``).

    Args:
        kernel_size: odd k >= 1. mask_type: one of the six names above.

    Returns:
        float32 (k, k) of zeros and ones.
    """
    k = check_positive_int("kernel_size", kernel_size)
    if k % 2 == 0:
        raise ValueError(f"kernel_size must be odd (the kernel is centred on the pixel), got {k}")
    check_choice("mask_type", mask_type, ("A", "B", "V_A", "V_B", "H_A", "H_B"))
    c = k // 2
    m = torch.zeros(k, k)
    if mask_type in ("A", "B"):
        m[:c] = 1
        m[c, :c] = 1
        m[c, c] = float(mask_type == "B")
    elif mask_type in ("V_A", "V_B"):
        m[: c + (mask_type == "V_B")] = 1
    else:
        m[c, : c + (mask_type == "H_B")] = 1
    return m


class MaskedConv2d(nn.Conv2d):
    """A 'same'-padded k x k convolution whose weights are multiplied by :func:`causal_mask` on every call.

    Args:
        in_channels, out_channels: as ``nn.Conv2d``. kernel_size: odd k. mask_type: see :func:`causal_mask`.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, mask_type: str):
        mask = causal_mask(kernel_size, mask_type)
        super().__init__(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        self.mask_type = mask_type
        self.register_buffer("mask", mask.view(1, 1, kernel_size, kernel_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.mask, self.bias, padding=self.padding)


class _ImageTokenModel(nn.Module):
    """Token sequences of length H*W in raster order <-> one-hot images; subclasses define ``_logits``."""

    def __init__(self, levels: int, height: int, width: int):
        super().__init__()
        self.levels = check_positive_int("levels", levels)
        self.height = check_positive_int("height", height)
        self.width = check_positive_int("width", width)
        self.seq_len = height * width
        self.vocab_size = levels

    def forward(self, tokens: torch.Tensor, **kw) -> torch.Tensor:
        """int64 (N, H*W) -> logits (N, H*W, levels); position i sees only the tokens before i."""
        tokens = check_tokens("tokens", tokens, self.levels, self.seq_len)
        dtype = next(self.parameters()).dtype
        return self.forward_onehot(F.one_hot(tokens, self.levels).to(dtype), **kw)

    def forward_onehot(self, onehot: torch.Tensor, **kw) -> torch.Tensor:
        """float (N, H*W, levels) one-hot (or any real values, for autograd) -> logits (N, H*W, levels)."""
        _check_onehot(onehot, self.seq_len, self.levels)
        n = onehot.shape[0]
        img = onehot.transpose(1, 2).reshape(n, self.levels, self.height, self.width)
        out = self._logits(img, **kw)  # (N, levels, H, W)
        return out.reshape(n, self.levels, self.seq_len).transpose(1, 2)


class PixelCNN(_ImageTokenModel):
    """The plain PixelCNN: one type-A masked k x k convolution, then type-B 3 x 3 layers, ReLU, 1 x 1 output.

    Its receptive field has a blind spot (van den Oord et al. 2016, conditional PixelCNN): with the type-A
    half-width h = first_kernel // 2, a pixel a >= 1 rows up and b >= a + h columns right of the current one is
    never reached, however deep the stack; :func:`dependency_matrix` shows it.

    Args:
        levels: V, number of grey levels (17 for the digits). channels: hidden channels. n_layers: type-B layers.
        first_kernel: k of the type-A layer (odd). height, width: the image size (8 x 8).
    """

    def __init__(self, levels: int = DIGITS_LEVELS, channels: int = 32, n_layers: int = 4, first_kernel: int = 5,
                 height: int = 8, width: int = 8):
        super().__init__(levels, height, width)
        check_positive_int("channels", channels)
        check_positive_int("n_layers", n_layers)
        layers = [MaskedConv2d(levels, channels, first_kernel, "A"), nn.ReLU()]
        for _ in range(n_layers):
            layers += [MaskedConv2d(channels, channels, 3, "B"), nn.ReLU()]
        layers += [nn.Conv2d(channels, levels, 1)]
        self.net = nn.Sequential(*layers)

    def _logits(self, img: torch.Tensor) -> torch.Tensor:
        return self.net(img)


class _GatedLayer(nn.Module):
    """One gated layer (van den Oord et al. 2016, conditional PixelCNN): vertical and
    horizontal masked convolutions, the vertical stack fed into the horizontal one, ``tanh(a) * sigmoid(b)``,
    a residual connection on the horizontal stack, and an optional class embedding added to both gates."""

    def __init__(self, in_channels: int, channels: int, kernel: int, first: bool, n_classes: int | None):
        super().__init__()
        suffix = "A" if first else "B"
        self.first = first
        self.v = MaskedConv2d(in_channels, 2 * channels, kernel, "V_" + suffix)
        self.h = MaskedConv2d(in_channels, 2 * channels, kernel, "H_" + suffix)
        self.v_to_h = nn.Conv2d(2 * channels, 2 * channels, 1)
        self.h_out = nn.Conv2d(channels, channels, 1)
        self.cond = None if n_classes is None else nn.Embedding(n_classes, 4 * channels)

    @staticmethod
    def _gate(a: torch.Tensor) -> torch.Tensor:
        x, g = a.chunk(2, dim=1)
        return torch.tanh(x) * torch.sigmoid(g)

    def forward(self, v, h, y=None):
        v_pre = self.v(v)
        h_pre = self.h(h) + self.v_to_h(v_pre)
        if self.cond is not None:
            cv, ch = self.cond(y)[:, :, None, None].chunk(2, dim=1)
            v_pre, h_pre = v_pre + cv, h_pre + ch
        h_new = self.h_out(self._gate(h_pre))
        return self._gate(v_pre), h_new if self.first else h + h_new


class GatedPixelCNN(_ImageTokenModel):
    """Gated PixelCNN with vertical and horizontal stacks: no blind spot (van den Oord et al. 2016, conditional
    PixelCNN). The vertical stack at (r, c) sees every row above r (its first mask ``V_A`` excludes row r, the
    later ``V_B`` masks keep it: it only holds rows above), the horizontal stack sees row r left of c, and the
    vertical stack is added to the horizontal one; so output (r, c) depends on exactly the pixels before it.

    Args:
        levels: V grey levels. channels: C per stack. n_layers: gated layers (>= 1). kernel: odd k.
        n_classes: if given, ``forward(tokens, y)`` conditions on class labels y (a learnt bias per class).
    """

    def __init__(self, levels: int = DIGITS_LEVELS, channels: int = 32, n_layers: int = 4, kernel: int = 3,
                 height: int = 8, width: int = 8, n_classes: int | None = None):
        super().__init__(levels, height, width)
        check_positive_int("channels", channels)
        check_positive_int("n_layers", n_layers)
        self.n_classes = n_classes
        self.layers = nn.ModuleList(
            [_GatedLayer(levels if i == 0 else channels, channels, kernel, i == 0, n_classes) for i in range(n_layers)])
        self.out = nn.Sequential(nn.ReLU(), nn.Conv2d(channels, 4 * channels, 1), nn.ReLU(),
                                 nn.Conv2d(4 * channels, levels, 1))

    def _logits(self, img, y=None):
        if (y is None) != (self.n_classes is None):
            raise ValueError("pass class labels y exactly when the model was built with n_classes")
        if y is not None:
            y = check_class_labels("y", y, img.shape[0], self.n_classes)
        v = h = img
        for layer in self.layers:
            v, h = layer(v, h, y)
        return self.out(h)


# ------------------------------------------------------------------------------------------------
# A causal transformer
# ------------------------------------------------------------------------------------------------


class CausalTransformer(nn.Module):
    """A decoder-only transformer (Vaswani et al. 2017; pre-norm blocks) over token sequences of length L.

    The input is shifted right by one (a learnt start vector in front, the last token dropped: teacher
    forcing), token and learnt position embeddings are added, and self-attention carries the causal mask
    :math:`M_{ij} = -\\infty` for :math:`j > i`; so ``logits[:, i]`` is the distribution of token i given
    tokens 0..i-1.

    Args:
        vocab_size: V. seq_len: L. d_model, n_heads, n_layers, d_ff: the usual sizes (d_model divisible by n_heads).
    """

    def __init__(self, vocab_size: int, seq_len: int, d_model: int = 64, n_heads: int = 4, n_layers: int = 2,
                 d_ff: int | None = None):
        super().__init__()
        self.vocab_size = check_positive_int("vocab_size", vocab_size)
        self.seq_len = check_positive_int("seq_len", seq_len)
        if d_model % n_heads:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.tok = nn.Linear(vocab_size, d_model, bias=False)  # an embedding table, applied to one-hot rows
        self.start = nn.Parameter(torch.zeros(d_model))
        self.pos = nn.Parameter(0.02 * torch.randn(seq_len, d_model))
        layer = nn.TransformerEncoderLayer(d_model, n_heads, d_ff or 4 * d_model, dropout=0.0, batch_first=True,
                                           norm_first=True, activation="gelu")
        self.blocks = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab_size)
        self.register_buffer("attn_mask", nn.Transformer.generate_square_subsequent_mask(seq_len), persistent=False)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """int64 (N, L') with L' <= L -> logits (N, L', V); position i sees tokens 0..i-1."""
        check_tokens("tokens", tokens, self.vocab_size)
        if tokens.shape[1] > self.seq_len:
            raise ValueError(f"tokens may have at most seq_len = {self.seq_len} positions, got {tokens.shape[1]}")
        return self.forward_onehot(F.one_hot(tokens, self.vocab_size).to(self.head.weight.dtype))

    def forward_onehot(self, onehot: torch.Tensor) -> torch.Tensor:
        """float (N, L', V) -> logits (N, L', V), L' <= L (a prefix is enough for the next token)."""
        check_floating("onehot", onehot)
        check_shape("onehot", onehot, ("N", "L", self.vocab_size))
        n, length = onehot.shape[:2]
        emb = self.tok(onehot)
        h = torch.cat([self.start.expand(n, 1, -1), emb[:, :-1]], dim=1) + self.pos[:length]
        h = self.blocks(h, mask=self.attn_mask[:length, :length], is_causal=True)
        return self.head(self.norm(h))


# ------------------------------------------------------------------------------------------------
# Exact likelihood
# ------------------------------------------------------------------------------------------------


def sequence_log_prob(model: nn.Module, tokens: torch.Tensor, *, weights: torch.Tensor | None = None,
                      **model_kw) -> torch.Tensor:
    """Exact log-likelihood :math:`\\log p_\\theta(x) = \\sum_i \\log p_\\theta(x_i \\mid x_{<i})` of each sequence.

    One pass of the model gives all D conditionals (teacher forcing: the true tokens are the inputs).

    Args:
        model: maps int64 (N, L) to logits (N, L, V), causally. tokens: int64 (N, L).
        weights: optional float (L,) per-position weights (e.g. 0 for positions not modelled).
        **model_kw: passed to the model (e.g. class labels ``y``).

    Returns:
        float (N,), nats per sequence (<= 0).

    Raises:
        TypeError / ValueError: tokens not integer ids (N, L) in the model's vocabulary, or weights not a finite
            float tensor (L,).
    """
    tokens = check_tokens("tokens", tokens, model.vocab_size)
    if weights is not None:
        check_shape("weights", check_floating("weights", weights), (tokens.shape[1],))
    logits = model(tokens, **model_kw)
    logp = torch.log_softmax(logits, dim=-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    if weights is not None:
        logp = logp * weights
    return logp.sum(dim=1)


def nll_loss(model: nn.Module, tokens: torch.Tensor, **model_kw):
    """Mean negative log-likelihood of a minibatch of sequences, nats per sequence, for :func:`coursekit.train.fit`.

    Returns ``(loss, {"nll": loss})``; minimising it is maximum likelihood, the cross-entropy of the D
    next-token classifiers summed over positions.
    """
    nll = -sequence_log_prob(model, tokens, **model_kw).mean()
    return nll, {"nll": nll.detach()}


def bits_per_dim(nll_nats, dim: int):
    """Exact NLL of discrete data (nats per example) in bits per dimension: ``nll / (D ln 2)``.

    No dequantisation term: an autoregressive model over the levels gives a probability, not a density
    (:func:`coursekit.metrics.nats_to_bits_per_dim`).

    Raises:
        TypeError / ValueError: ``dim`` not a positive integer, or ``nll_nats`` not a number, array or tensor of
            finite values.
    """
    check_finite_values("nll_nats", nll_nats)
    return nats_to_bits_per_dim(nll_nats, dim)


def dependency_matrix(model: nn.Module, n_inputs: int = 4, *, generator: torch.Generator | None = None,
                      **model_kw) -> torch.Tensor:
    """Which inputs each output depends on, by autograd: ``G[i, j] = sum |d logits[:, i] / d onehot[:, j]|``.

    Evaluated on ``n_inputs`` random one-hot sequences (a weight that is exactly zero for every input is a
    structural zero). A causal model has ``G[i, j] = 0`` for every ``j >= i``.

    Args:
        model: a token model with ``forward_onehot``, ``seq_len`` and ``vocab_size``.
        n_inputs: random sequences to average over. generator: for the random tokens.

    Returns:
        float (L, L), non-negative.
    """
    n_inputs = check_positive_int("n_inputs", n_inputs)
    p = next(model.parameters())
    length, vocab = model.seq_len, model.vocab_size
    tokens = torch.randint(vocab, (n_inputs, length), generator=generator).to(p.device)
    onehot = F.one_hot(tokens, vocab).to(p.dtype).requires_grad_(True)
    out = model.forward_onehot(onehot, **model_kw)
    g = torch.zeros(length, length, device=p.device)
    for i in range(length):
        (grad,) = torch.autograd.grad(out[:, i].sum(), onehot, retain_graph=i < length - 1)
        g[i] = grad.abs().sum(dim=(0, 2))
    return g.detach()


def pixel_marginals(tokens: torch.Tensor, vocab_size: int, pseudocount: float = 1.0) -> torch.Tensor:
    """The independent-pixel baseline: a categorical per position fitted by counting, with add-``pseudocount``
    smoothing (the posterior mean under a symmetric Dirichlet prior), :math:`\\hat p_i(v) = (n_{iv} + a)/(N + Va)`.

    Args:
        tokens: int64 (N, L) training sequences. vocab_size: V. pseudocount: a >= 0.

    Returns:
        float32 (L, V), each row sums to one.

    Raises:
        TypeError / ValueError: vocab_size < 1, tokens not integer ids (N, L) in 0..V-1, pseudocount < 0.
    """
    vocab_size = check_positive_int("vocab_size", vocab_size)
    tokens = check_tokens("tokens", tokens, vocab_size)
    a = check_nonnegative_float("pseudocount", pseudocount)
    counts = F.one_hot(tokens, vocab_size).sum(dim=0).float()
    return (counts + a) / (tokens.shape[0] + vocab_size * a)


def marginal_nll(probs: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """NLL (nats per sequence, shape (N,)) of ``tokens`` under independent categoricals ``probs`` (L, V)."""
    check_floating("probs", probs)
    tokens = check_tokens("tokens", tokens, probs.shape[-1], probs.shape[0])
    return -torch.log(probs.gather(1, tokens.T)).sum(dim=0)


# ------------------------------------------------------------------------------------------------
# Sampling
# ------------------------------------------------------------------------------------------------


def top_k_logits(logits: torch.Tensor, k: int | None) -> torch.Tensor:
    """Keep the k largest logits of each row and set the rest to -inf (``k=None``: unchanged).

    Ties at the k-th value are all kept. Args: logits float (..., V), finite or -inf; k in 1..V.
    Raises: TypeError / ValueError: logits not floating point or with NaN, k outside 1..V.
    """
    check_floating("logits", logits, finite=False)
    if bool(torch.isnan(logits).any()):
        raise ValueError("logits contain NaN")
    if k is None:
        return logits
    k = check_positive_int("k", k)
    if k > logits.shape[-1]:
        raise ValueError(f"k must be at most the vocabulary size {logits.shape[-1]}, got {k}")
    kth = logits.topk(k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def sample_next(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw one token per row from ``softmax(top_k(logits) / temperature)``.

    Args:
        logits: float (N, V), finite or -inf. temperature: T > 0 (T < 1 sharpens, T > 1 flattens).
        top_k: keep only the k most probable tokens (None: all). generator: a ``torch.Generator``.

    Returns:
        int64 (N,).
    """
    check_floating("logits", logits, finite=False)
    check_shape("logits", logits, ("N", "V"))
    if bool(torch.isnan(logits).any()):
        raise ValueError("logits contain NaN")
    temperature = check_positive_float("temperature", temperature)
    if top_k is not None:
        check_positive_int("top_k", top_k)
    probs = torch.softmax(top_k_logits(logits.float(), top_k) / temperature, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


@torch.no_grad()
def sample(model: nn.Module, n: int, *, prefix: torch.Tensor | None = None, temperature: float = 1.0,
           top_k: int | None = None, token_range: tuple[int, int] | None = None,
           generator: torch.Generator | None = None, **model_kw) -> torch.Tensor:
    """Ancestral sampling, one position at a time: ``x_i ~ p(x_i | x_<i)`` for i = len(prefix) .. L-1.

    This costs one network pass per generated position (L - len(prefix) passes), unlike the single pass
    of the likelihood.

    Args:
        model: a causal token model. n: number of sequences.
        prefix: optional int64 (n, P) given first tokens (a prompt). temperature, top_k: see :func:`sample_next`.
        token_range: ``(lo, hi)``: generated tokens restricted to lo..hi-1 (e.g. the image codes after a caption).
        generator: ``torch.Generator`` on the model's device, for reproducible draws.
        **model_kw: passed to the model (e.g. ``y``).

    Returns:
        int64 (n, L), the prefix followed by the sampled tokens.

    Raises:
        TypeError / ValueError: n < 1, a prefix that is not int64-like token ids of shape (n, P <= L), a
            token_range other than ``0 <= lo < hi <= vocab_size``, or a bad temperature / top_k.
    """
    n = check_positive_int("n", n)
    if token_range is not None:
        lo, hi = (check_nonnegative_int("token_range", v) for v in token_range)
        if not lo < hi <= model.vocab_size:
            raise ValueError(f"token_range must be (lo, hi) with 0 <= lo < hi <= {model.vocab_size}, got {token_range}")
    device = next(model.parameters()).device
    length = model.seq_len
    tokens = torch.zeros(n, length, dtype=torch.int64, device=device)
    start = 0
    if prefix is not None:
        prefix = check_tokens("prefix", prefix, model.vocab_size)
        if prefix.shape[0] != n or prefix.shape[1] > length:
            raise ValueError(f"prefix must have shape ({n}, P) with P <= {length}, got {tuple(prefix.shape)}")
        start = prefix.shape[1]
        tokens[:, :start] = prefix.to(device)
    was_training = model.training
    model.eval()
    causal_prefix = isinstance(model, CausalTransformer)
    for i in range(start, length):
        logits = model(tokens[:, : i + 1] if causal_prefix else tokens, **model_kw)[:, i]
        if token_range is not None:
            lo, hi = token_range
            logits = logits.clone()
            logits[:, :lo] = float("-inf")
            logits[:, hi:] = float("-inf")
        tokens[:, i] = sample_next(logits, temperature, top_k, generator)
    model.train(was_training)
    return tokens


# ------------------------------------------------------------------------------------------------
# Vector quantisation
# ------------------------------------------------------------------------------------------------


def vq_assign(z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Index of the nearest code: :math:`k(z) = \\arg\\min_k \\lVert z - e_k \\rVert^2` (van den Oord et al. 2017).

    Uses :math:`\\lVert z\\rVert^2 - 2 z^\\top e_k + \\lVert e_k\\rVert^2` (one matrix product); ties go to the
    smallest index.

    Args:
        z: float (N, d) encoder outputs. codebook: float (K, d).

    Returns:
        int64 (N,) in 0..K-1.
    """
    check_matrix("z", z, min_rows=0)
    check_matrix("codebook", codebook, dim=z.shape[1])
    d2 = (z * z).sum(1, keepdim=True) - 2 * z @ codebook.T + (codebook * codebook).sum(1)
    return d2.argmin(dim=1)


def straight_through(z_e: torch.Tensor, z_q: torch.Tensor) -> torch.Tensor:
    """The straight-through estimator (Bengio et al. 2013): the value of ``z_q``, the gradient of ``z_e``.

    Computed as ``z_q.detach() + (z_e - z_e.detach())``, which equals the usual ``z_e + (z_q - z_e).detach()``
    up to rounding and is exactly z_q in the forward pass; backward, d out / d z_e = I and no gradient reaches
    z_q. Args: two float tensors of the same shape.
    """
    check_floating("z_e", z_e)
    check_floating("z_q", z_q)
    if z_e.shape != z_q.shape:
        raise ValueError(f"z_e and z_q must have the same shape, got {tuple(z_e.shape)} and {tuple(z_q.shape)}")
    return z_q.detach() + (z_e - z_e.detach())


def code_usage(indices: torch.Tensor, n_codes: int) -> dict:
    """How many codes are used, and the perplexity :math:`\\exp(H)` of the empirical code distribution.

    Perplexity is K for uniform use of all K codes and 1 when a single code is used (complete collapse).

    Args:
        indices: integer tensor of any shape, values in 0..n_codes-1. n_codes: K.

    Returns:
        dict with ``used`` (int), ``fraction`` (used / K), ``perplexity`` (float) and ``counts`` (int64 (K,)).
    """
    check_positive_int("n_codes", n_codes)
    idx = check_tokens("indices", indices.reshape(1, -1), n_codes)
    counts = torch.bincount(idx.reshape(-1), minlength=n_codes)
    p = counts.double() / max(int(counts.sum()), 1)
    h = -(p[p > 0] * p[p > 0].log()).sum().item()
    used = int((counts > 0).sum())
    return {"used": used, "fraction": used / n_codes, "perplexity": math.exp(h), "counts": counts}


class VectorQuantizer(nn.Module):
    """Nearest-codebook quantisation with the straight-through gradient and the VQ-VAE losses.

    For encoder outputs :math:`z_e` (channels = d) the forward pass returns
    :math:`z_q = e_{k(z_e)}` with the gradient of :math:`z_e` (:func:`straight_through`), the codes, and

    * the codebook loss :math:`\\lVert \\mathrm{sg}[z_e] - e_k \\rVert^2` (moves the codes to the encoder outputs),
    * the commitment loss :math:`\\beta \\lVert z_e - \\mathrm{sg}[e_k] \\rVert^2` (keeps the encoder near its code),

    each summed over the d channels and averaged over the vectors (van den Oord et al. 2017).
    Code usage is tracked for :meth:`restart_dead_codes`.

    Args:
        n_codes: K. dim: d. beta: commitment weight (0.25 in the paper; not the noise schedule beta_t of
            chapter 08).
    """

    def __init__(self, n_codes: int, dim: int, beta: float = 0.25):
        super().__init__()
        self.n_codes = check_positive_int("n_codes", n_codes)
        self.dim = check_positive_int("dim", dim)
        self.beta = check_nonnegative_float("beta", beta)
        self.codebook = nn.Parameter(torch.empty(n_codes, dim).uniform_(-1 / n_codes, 1 / n_codes))
        self.register_buffer("usage", torch.zeros(n_codes))

    def forward(self, z_e: torch.Tensor):
        """z_e float (N, d, H, W) -> (z_q straight-through (N, d, H, W), codes int64 (N, H, W), losses dict)."""
        check_floating("z_e", z_e)
        check_shape("z_e", z_e, ("N", self.dim, "H", "W"))
        n, d, h, w = z_e.shape
        flat = z_e.permute(0, 2, 3, 1).reshape(-1, d)
        codes = vq_assign(flat.detach(), self.codebook.detach())
        e = self.codebook[codes]
        codebook_loss = ((flat.detach() - e) ** 2).sum(1).mean()
        commitment = self.beta * ((flat - e.detach()) ** 2).sum(1).mean()
        if self.training:
            with torch.no_grad():
                self.usage += torch.bincount(codes, minlength=self.n_codes).float()
        z_q = straight_through(flat, e).reshape(n, h, w, d).permute(0, 3, 1, 2)
        return z_q, codes.reshape(n, h, w), {"codebook": codebook_loss, "commitment": commitment}

    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """int64 (N, H, W) -> code vectors (N, d, H, W)."""
        return self.codebook[codes].permute(0, 3, 1, 2)

    @torch.no_grad()
    def restart_dead_codes(self, z_e: torch.Tensor, generator: torch.Generator | None = None) -> int:
        """Collapse fix: move every code unused since the last call onto a randomly chosen encoder output of
        ``z_e`` (N, d, H, W) and reset the usage counts. Returns the number of codes restarted."""
        flat = z_e.detach().permute(0, 2, 3, 1).reshape(-1, self.dim)
        dead = (self.usage == 0).nonzero().squeeze(1)
        if len(dead):
            pick = torch.randint(flat.shape[0], (len(dead),), generator=generator).to(flat.device)
            self.codebook.data[dead] = flat[pick]
        self.usage.zero_()
        return len(dead)


class VQVAE(nn.Module):
    """A VQ-VAE for the 8x8 digits: a conv encoder to a (d, 4, 4) grid, :class:`VectorQuantizer`, a conv decoder.

    The decoder outputs pixel intensities in (0, 1) (sigmoid); the reconstruction term of :func:`vqvae_loss`
    is the squared error, a Gaussian decoder of fixed variance up to constants (van den Oord et al. 2017).

    Args:
        n_codes: K. dim: d. channels: hidden channels. beta: commitment weight.
    """

    def __init__(self, n_codes: int = 32, dim: int = 16, channels: int = 32, beta: float = 0.25):
        super().__init__()
        c = check_positive_int("channels", channels)
        self.encoder = nn.Sequential(nn.Conv2d(1, c, 3, padding=1), nn.ReLU(), nn.Conv2d(c, c, 4, stride=2, padding=1),
                                     nn.ReLU(), nn.Conv2d(c, c, 3, padding=1), nn.ReLU(), nn.Conv2d(c, dim, 1))
        self.vq = VectorQuantizer(n_codes, dim, beta)
        self.decoder = nn.Sequential(nn.Conv2d(dim, c, 3, padding=1), nn.ReLU(),
                                     nn.ConvTranspose2d(c, c, 4, stride=2, padding=1), nn.ReLU(),
                                     nn.Conv2d(c, c, 3, padding=1), nn.ReLU(), nn.Conv2d(c, 1, 3, padding=1))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """x float (N, 1, 8, 8) in [0, 1] -> z_e (N, d, 4, 4)."""
        check_floating("x", x)
        check_shape("x", x, ("N", 1, 8, 8))
        return self.encoder(x * 2 - 1)

    def decode(self, z_q: torch.Tensor) -> torch.Tensor:
        """(N, d, 4, 4) -> images (N, 1, 8, 8) in (0, 1)."""
        return torch.sigmoid(self.decoder(z_q))

    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """int64 codes (N, 16) or (N, 4, 4) -> images (N, 1, 8, 8)."""
        codes = check_tokens("codes", codes.reshape(codes.shape[0], -1), self.vq.n_codes, 16)
        return self.decode(self.vq.decode_codes(codes.reshape(-1, 4, 4)))

    @torch.no_grad()
    def tokenize(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, 1, 8, 8) -> codes int64 (N, 16) in raster order of the 4 x 4 grid."""
        return self.vq(self.encode(x))[1].reshape(x.shape[0], -1)

    def forward(self, x: torch.Tensor):
        """x (N, 1, 8, 8) -> (reconstruction (N, 1, 8, 8), codes (N, 4, 4), losses dict)."""
        z_q, codes, losses = self.vq(self.encode(x))
        return self.decode(z_q), codes, losses


def vqvae_loss(model: VQVAE, x: torch.Tensor):
    r"""The VQ-VAE objective for :func:`coursekit.train.fit` (van den Oord et al. 2017), per image

    .. math::

        \lVert x - \hat x \rVert^2 + \frac{1}{M} \sum_{m=1}^{M} \Big( \lVert \mathrm{sg}[z_e(x)_m] - e_{k_m}
        \rVert^2 + \beta\, \lVert z_e(x)_m - \mathrm{sg}[e_{k_m}] \rVert^2 \Big),

    averaged over the batch: the squared reconstruction error is summed over the 64 pixels, the codebook and
    commitment losses (:class:`VectorQuantizer`) are averaged over the M = 16 vectors of the grid (the paper's
    sum over the vectors would weight them M times more). ``beta`` is the commitment weight.

    Args:
        model: a :class:`VQVAE`. x: float (N, 1, 8, 8) in [0, 1].

    Returns:
        ``(loss, {"recon": ..., "codebook": ..., "commitment": ...})``, scalars (squared error per image).
    """
    recon, _, losses = model(x)
    rec = ((recon - x) ** 2).sum(dim=(1, 2, 3)).mean()
    loss = rec + losses["codebook"] + losses["commitment"]
    return loss, {"recon": rec.detach(), **{k: v.detach() for k, v in losses.items()}}


# ------------------------------------------------------------------------------------------------
# Text tokens (DALL-E at digit scale)
# ------------------------------------------------------------------------------------------------


class WordTokenizer:
    """A word-level tokenizer over a fixed vocabulary: ``encode("a thick seven") -> [0, 2, 10]``.

    Args:
        words: the vocabulary, in id order (unique, no spaces).
    """

    def __init__(self, words):
        self.words = tuple(words)
        if len(set(self.words)) != len(self.words) or any(" " in w for w in self.words):
            raise ValueError("words must be unique and contain no spaces")
        self.index = {w: i for i, w in enumerate(self.words)}

    def __len__(self) -> int:
        return len(self.words)

    def encode(self, captions) -> torch.Tensor:
        """A list of captions with the same number of words -> int64 (N, words per caption)."""
        if isinstance(captions, str):
            captions = [captions]
        rows = []
        for c in captions:
            unknown = [w for w in c.split() if w not in self.index]
            if unknown:
                raise ValueError(f"unknown word(s) {unknown} in {c!r}; the vocabulary is {list(self.words)}")
            rows.append([self.index[w] for w in c.split()])
        if len({len(r) for r in rows}) > 1:
            raise ValueError("all captions must have the same number of words")
        return torch.tensor(rows, dtype=torch.int64)

    def decode(self, tokens: torch.Tensor) -> list[str]:
        """int64 (N, P) -> list of N captions."""
        tokens = check_tokens("tokens", tokens, len(self))
        return [" ".join(self.words[i] for i in row) for row in tokens.tolist()]


def digit_captions(x: torch.Tensor, y: torch.Tensor, thick_threshold: torch.Tensor | None = None):
    """Captions ``"a thin seven"`` / ``"a thick seven"`` from the label and the ink (sum of intensities).

    A digit is *thick* if its ink is at least the median ink of its class (``thick_threshold[y]``, computed
    from ``x`` and ``y`` when not given, so pass the training set's thresholds for other splits).

    Args:
        x: float (N, 64) or (N, 1, 8, 8) digits in [0, 1]. y: int64 (N,) labels 0..9.
        thick_threshold: optional float (10,) ink thresholds per class.

    Returns:
        ``(captions, thick_threshold)``: a list of N strings and the (10,) thresholds used.
    """
    check_floating("x", x)
    ink = x.reshape(x.shape[0], -1).sum(1)
    if y.shape != (x.shape[0],):
        raise ValueError(f"y must have shape ({x.shape[0]},), got {tuple(y.shape)}")
    if thick_threshold is None:
        thick_threshold = torch.stack([ink[y == c].median() if (y == c).any() else ink.median() for c in range(10)])
    thick = ink >= thick_threshold[y]
    captions = [f"a {'thick' if t else 'thin'} {DIGIT_NAMES[c]}" for t, c in zip(thick.tolist(), y.tolist())]
    return captions, thick_threshold
