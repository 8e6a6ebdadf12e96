"""Network architectures shared by the chapters (architectures only: no objectives, no training).

* :class:`MLP` - a fully connected network, the workhorse for 2-D data and 8x8 digits.
* :class:`ConvEncoder8x8` / :class:`ConvDecoder8x8` - small convolutional encoder/decoder for
  1x8x8 images (scikit-learn digits), mirror images of each other.
* :class:`SinusoidalTimeEmbedding` / :class:`UNet` - a small U-Net with a time embedding, the noise
  model of the diffusion chapter; with ``n_classes`` also a class embedding (and a null class), the
  class-conditional noise model of classifier-free guidance (chapter 12).

All modules take float32 input and follow the device of their parameters (``model.to(device)``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from ._validate import check_class_labels, check_positive_int, check_shape, check_tensor

__all__ = ["MLP", "ConvEncoder8x8", "ConvDecoder8x8", "SinusoidalTimeEmbedding", "UNet"]


class MLP(nn.Module):
    """Multi-layer perceptron: Linear -> activation -> ... -> Linear (no activation on the output).

    ``MLP(2, 1, hidden=(64, 64))`` is ``Linear(2, 64), SiLU, Linear(64, 64), SiLU, Linear(64, 1)``.
    The output is left linear because it is usually a logit, a mean, a log-variance or a score,
    each of which needs the whole real line.

    Args:
        in_dim: size of the last input dimension (>= 1).
        out_dim: size of the last output dimension (>= 1).
        hidden: widths of the hidden layers (may be empty: then a single Linear layer).
        activation: a module *class* (or zero-argument factory) such as ``nn.SiLU`` (default; smooth,
            so its gradients and second derivatives behave well, which score-based models need),
            ``nn.ReLU`` or ``nn.Tanh``.

    Shapes:
        input (..., in_dim) float -> output (..., out_dim), for any leading batch dimensions.

    Raises:
        TypeError / ValueError: for non-integer or non-positive sizes; in ``forward``, if the last input
            dimension is not ``in_dim``.
    """

    def __init__(self, in_dim: int, out_dim: int, hidden: Sequence[int] = (256, 256), activation=nn.SiLU):
        super().__init__()
        self.in_dim = check_positive_int("in_dim", in_dim)
        self.out_dim = check_positive_int("out_dim", out_dim)
        widths = [check_positive_int(f"hidden[{i}]", h) for i, h in enumerate(hidden)]
        if not callable(activation):
            raise TypeError(f"activation must be a module class such as nn.SiLU, got {activation!r}")
        layers: list[nn.Module] = []
        prev = self.in_dim
        for width in widths:
            layers += [nn.Linear(prev, width), activation()]
            prev = width
        layers.append(nn.Linear(prev, self.out_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_tensor("x", x)
        if x.ndim == 0 or x.shape[-1] != self.in_dim:
            raise ValueError(f"MLP expects input of shape (..., {self.in_dim}), got {tuple(x.shape)}")
        return self.net(x)


class ConvEncoder8x8(nn.Module):
    """Convolutional encoder for 1x8x8 images, ending in a linear layer with ``out_dim`` outputs.

    Layers (C = ``channels``)::

        (N, 1, 8, 8) --conv3x3--> (N, C, 8, 8) --conv4x4 stride 2--> (N, 2C, 4, 4)
                     --flatten--> (N, 32C) --linear--> (N, out_dim)

    with the activation after each convolution. For a VAE encoder use ``out_dim = 2 * latent_dim``
    and split the output into mean and log-variance.

    Args:
        out_dim: number of outputs (>= 1).
        channels: width C of the first convolution (>= 1).
        activation: module class, default ``nn.SiLU``.

    Shapes:
        input (N, 1, 8, 8) float in [0, 1] -> output (N, out_dim).

    Raises:
        ValueError: if the input is not (N, 1, 8, 8).
    """

    def __init__(self, out_dim: int, channels: int = 32, activation=nn.SiLU):
        super().__init__()
        self.out_dim = check_positive_int("out_dim", out_dim)
        c = check_positive_int("channels", channels)
        self.net = nn.Sequential(
            nn.Conv2d(1, c, kernel_size=3, padding=1), activation(),              # 8x8, local strokes
            nn.Conv2d(c, 2 * c, kernel_size=4, stride=2, padding=1), activation(),  # 4x4, parts of digits
            nn.Flatten(),
            nn.Linear(2 * c * 4 * 4, self.out_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_shape("x", x, ("N", 1, 8, 8))
        return self.net(x)


class ConvDecoder8x8(nn.Module):
    """Convolutional decoder producing 1x8x8 images of *logits*; the mirror of :class:`ConvEncoder8x8`.

    Layers (C = ``channels``)::

        (N, in_dim) --linear--> (N, 2C, 4, 4) --transposed conv4x4 stride 2--> (N, C, 8, 8)
                    --conv3x3--> (N, 1, 8, 8) logits

    Apply ``torch.sigmoid`` to get Bernoulli means / pixel intensities in [0, 1]; pass the logits
    directly to ``F.binary_cross_entropy_with_logits`` (numerically stable).

    Args:
        in_dim: size of the input code (>= 1).
        channels: width C of the last hidden layer (>= 1).
        activation: module class, default ``nn.SiLU``.

    Shapes:
        input (N, in_dim) -> output (N, 1, 8, 8) real-valued logits.

    Raises:
        ValueError: if the input is not (N, in_dim).
    """

    def __init__(self, in_dim: int, channels: int = 32, activation=nn.SiLU):
        super().__init__()
        self.in_dim = check_positive_int("in_dim", in_dim)
        c = check_positive_int("channels", channels)
        self.net = nn.Sequential(
            nn.Linear(self.in_dim, 2 * c * 4 * 4), activation(),
            nn.Unflatten(1, (2 * c, 4, 4)),
            nn.ConvTranspose2d(2 * c, c, kernel_size=4, stride=2, padding=1), activation(),  # 4x4 -> 8x8
            nn.Conv2d(c, 1, kernel_size=3, padding=1),
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        check_shape("z", z, ("N", self.in_dim))
        return self.net(z)


class SinusoidalTimeEmbedding(nn.Module):
    r"""Sinusoidal embedding of a (time) index, as the position encoding of Vaswani et al. 2017 (sec. 3.5)
    used for the diffusion time by Ho et al. 2020:

    .. math::

        e(t)_{i} = \sin(t\,\omega_i),\quad e(t)_{d/2 + i} = \cos(t\,\omega_i),\qquad
        \omega_i = \text{max\_period}^{-i/(d/2)},\ i = 0, \dots, d/2 - 1,

    so nearby times get similar vectors and every frequency from 1 to 1/max_period is present.

    Args:
        dim: embedding size d (even, >= 2). max_period: slowest period (default 10000, as Vaswani et al.).

    Shapes:
        t: (N,) integer or float times -> (N, dim) float32.

    Raises:
        ValueError: odd or too small ``dim``; ``t`` not of shape (N,).
    """

    def __init__(self, dim: int, max_period: float = 10000.0):
        super().__init__()
        self.dim = check_positive_int("dim", dim)
        if self.dim % 2 or self.dim < 2:
            raise ValueError(f"dim must be an even integer >= 2, got {dim}")
        half = self.dim // 2
        freqs = torch.exp(-math.log(float(max_period)) * torch.arange(half, dtype=torch.float32) / half)
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        check_tensor("t", t)
        if t.ndim != 1:
            raise ValueError(f"t must have shape (N,), got {tuple(t.shape)}")
        args = t.to(torch.float32).unsqueeze(1) * self.freqs.unsqueeze(0)
        return torch.cat([torch.sin(args), torch.cos(args)], dim=1)


class _ResBlock(nn.Module):
    """GroupNorm-SiLU-conv, add the projected time embedding, GroupNorm-SiLU-conv, residual (Ho et al. 2020,
    after Wide ResNets); the second convolution starts at zero so the block starts as the identity."""

    def __init__(self, c_in: int, c_out: int, t_dim: int, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(min(groups, c_in), c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.time = nn.Linear(t_dim, c_out)
        self.norm2 = nn.GroupNorm(min(groups, c_out), c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()
        self.act = nn.SiLU()

    def forward(self, x, temb):
        h = self.conv1(self.act(self.norm1(x)))
        h = h + self.time(temb)[:, :, None, None]
        h = self.conv2(self.act(self.norm2(h)))
        return self.skip(x) + h


class _SelfAttention(nn.Module):
    """Single-head self-attention over the pixels of a feature map, residual, output projection at zero."""

    def __init__(self, c: int, groups: int):
        super().__init__()
        self.norm = nn.GroupNorm(min(groups, c), c)
        self.qkv = nn.Conv2d(c, 3 * c, 1)
        self.out = nn.Conv2d(c, c, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x):
        n, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(n, 3, c, h * w).unbind(1)
        a = torch.nn.functional.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return x + self.out(a.transpose(1, 2).reshape(n, c, h, w))


class UNet(nn.Module):
    r"""A small U-Net (Ronneberger et al. 2015) with a sinusoidal time embedding, the noise model
    :math:`\hat\varepsilon_\theta(x_t, t)` of a diffusion model (the design of Ho et al. 2020, scaled down).

    Layout (C = ``channels``, image side S, two resolutions S and S/2)::

        x (N, c_in, S, S) --conv3x3--> C
          [S]    ResBlock(C -> C)                     -> skip h1
          down   conv3x3 stride 2                      (S/2)
          [S/2]  ResBlock(C -> 2C)                    -> skip h2
          middle ResBlock(2C), then self-attention (optional)
          [S/2]  ResBlock(2C + 2C skip -> 2C)
          up     transposed conv4x4 stride 2, 2C -> C  (S)
          [S]    ResBlock(C + C skip -> C)
          GroupNorm, SiLU, conv3x3 -> c_in   (initialised at zero: the first prediction is 0)

    The time t goes through :class:`SinusoidalTimeEmbedding` (size C) and a two-layer MLP (size 4C), and is
    added, projected, inside every residual block. GroupNorm instead of BatchNorm: the output for one image
    must not depend on the others in the batch (which mixes noise levels).

    With ``n_classes = K`` the network is class-conditional as in Dhariwal & Nichol (2021, their ADM code): a
    learnt embedding of the label y (size 4C) is added to the time embedding, so that every residual block
    sees it. Label K is the *null* class, "no label": one network is then both the conditional model
    :math:`\hat\varepsilon(x_t, t, y)` and the unconditional one :math:`\hat\varepsilon(x_t, t, \varnothing)`
    of classifier-free guidance (Ho & Salimans 2022), trained with label dropout. The embedding is created
    after every other layer, so the other layers get the same initial weights from the same seed as the
    unconditional U-Net, and without ``n_classes`` the network is exactly the unconditional one.

    Args:
        in_channels: image channels (1 for digits). channels: C (>= 8). groups: GroupNorm groups (C must be
            divisible by it). attention: self-attention at S/2. image_size: S (even), checked in forward.
        n_classes: K >= 1 for a class-conditional network (labels 0..K-1 and the null label K), or ``None``.

    Shapes:
        ``forward(x, t, y=None)``: x (N, in_channels, S, S) float, t (N,) integer time indices (or float times),
        y (N,) int64 labels in 0..K (K: null; ``None``: null for every image; only with ``n_classes``) ->
        (N, in_channels, S, S).

    Raises:
        ValueError: bad sizes; in forward, a wrong input shape, a t that is not (N,), labels that are not (N,)
            or outside 0..K, or labels given to an unconditional network. TypeError: non-integer labels.
    """

    def __init__(self, in_channels: int = 1, channels: int = 32, *, groups: int = 8, attention: bool = False,
                 image_size: int = 8, n_classes: int | None = None):
        super().__init__()
        self.in_channels = check_positive_int("in_channels", in_channels)
        c = check_positive_int("channels", channels)
        self.groups = check_positive_int("groups", groups)
        if c < 8 or c % self.groups:
            raise ValueError(f"channels must be >= 8 and divisible by groups={groups}, got {channels}")
        self.image_size = check_positive_int("image_size", image_size)
        if self.image_size % 2:
            raise ValueError(f"image_size must be even (one 2x down-sampling), got {image_size}")
        t_dim = 4 * c
        self.time_embed = nn.Sequential(SinusoidalTimeEmbedding(c), nn.Linear(c, t_dim), nn.SiLU(),
                                        nn.Linear(t_dim, t_dim))
        g = self.groups
        self.inp = nn.Conv2d(self.in_channels, c, 3, padding=1)
        self.down1 = _ResBlock(c, c, t_dim, g)
        self.downsample = nn.Conv2d(c, c, 3, stride=2, padding=1)
        self.down2 = _ResBlock(c, 2 * c, t_dim, g)
        self.mid = _ResBlock(2 * c, 2 * c, t_dim, g)
        self.attn = _SelfAttention(2 * c, g) if attention else None
        self.up2 = _ResBlock(4 * c, 2 * c, t_dim, g)
        self.upsample = nn.ConvTranspose2d(2 * c, c, 4, stride=2, padding=1)
        self.up1 = _ResBlock(2 * c, c, t_dim, g)
        self.out = nn.Sequential(nn.GroupNorm(min(g, c), c), nn.SiLU(), nn.Conv2d(c, self.in_channels, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)
        self.n_classes = None if n_classes is None else check_positive_int("n_classes", n_classes)
        # created last: the layers above get the same initial weights from the same seed with or without it
        self.label_embed = None if n_classes is None else nn.Embedding(self.n_classes + 1, t_dim)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        s = self.image_size
        check_shape("x", x, ("N", self.in_channels, s, s))
        check_tensor("t", t)
        if t.shape != (x.shape[0],):
            raise ValueError(f"t must have shape ({x.shape[0]},) (one time per image), got {tuple(t.shape)}")
        temb = self.time_embed(t)
        if self.label_embed is not None:
            if y is None:
                y = torch.full((x.shape[0],), self.n_classes, dtype=torch.long, device=x.device)
            temb = temb + self.label_embed(check_class_labels("y", y, x.shape[0], self.n_classes + 1))
        elif y is not None:
            raise ValueError("labels y were given to an unconditional U-Net; build it with UNet(..., n_classes=K)")
        h0 = self.inp(x)
        h1 = self.down1(h0, temb)
        h2 = self.down2(self.downsample(h1), temb)
        m = self.mid(h2, temb)
        if self.attn is not None:
            m = self.attn(m)
        u = self.up2(torch.cat([m, h2], dim=1), temb)
        u = self.up1(torch.cat([self.upsample(u), h1], dim=1), temb)
        return self.out(u)
