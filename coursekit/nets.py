"""Network architectures shared by the chapters (architectures only: no objectives, no training).

* :class:`MLP` - a fully connected network, the workhorse for 2-D data and 8x8 digits.
* :class:`ConvEncoder8x8` / :class:`ConvDecoder8x8` - small convolutional encoder/decoder for
  1x8x8 images (scikit-learn digits), mirror images of each other.

All modules take float32 input and follow the device of their parameters (``model.to(device)``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ._validate import check_positive_int, check_shape, check_tensor

__all__ = ["MLP", "ConvEncoder8x8", "ConvDecoder8x8"]


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
