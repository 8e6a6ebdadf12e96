r"""Generative adversarial networks (chapters 06 and 07).

The file has three sections, each owned by one author:

* **core** (this top part): the GAN value function and losses on raw
  discriminator outputs (logits / critic scores), the optimal discriminator,
  the WGAN losses, the gradient penalty, weight clipping, the mode-coverage
  metric for the 2-D benchmarks, the GAN training loop and the tuned 2-D
  recipes for chapter 06's mode-coverage table.
* ``# ---- chapter 06: image GANs ----``: conv nets for the 8x8 digits and the
  conditional GAN.
* ``# ---- chapter 07: density ratios, f-GAN, WGAN, MMD, semi-supervised ----``.

Conventions: all losses take raw logits / scores of shape ``(N,)`` or ``(N, 1)``
and return 0-dim tensors in nats; ``log D = -softplus(-l)`` and
``log(1 - D) = -softplus(l)`` keep them finite for any logit.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

# ---- core (owned by CORE; the API of /work/spec/GAN_API.md) ----


# ---- chapter 06: image GANs ----


# ---- chapter 07: density ratios, f-GAN, WGAN, MMD, semi-supervised ----
