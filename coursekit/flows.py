r"""Normalizing flows and autoregressive density models (chapter 05).

A *flow* is an invertible, differentiable map :math:`f` from data :math:`x \in \mathbb{R}^D` to a latent
:math:`z = f(x)` with a simple base density :math:`p_Z = \mathcal{N}(0, \mathbf{I})`. The change-of-variables
formula gives the exact log-density (Rezende & Mohamed 2015, eq. 1-2; Papamakarios et al. 2021, eq. 2-3)

.. math::

    \log p_X(x) = \log p_Z(f(x)) + \log \lvert \det J_f(x) \rvert ,

and a composition :math:`f = f_K \circ \dots \circ f_1` adds the log-determinants of its layers (chain rule).

Conventions used by every layer (a :class:`FlowLayer`):

* ``forward(x) -> (z, log_det)``: the *normalizing* direction, data to latent, with
  ``log_det`` = :math:`\log\lvert\det \partial z / \partial x\rvert`, shape (N,), nats;
* ``inverse(z) -> (x, log_det)``: the *generative* direction, latent to data, with
  ``log_det`` = :math:`\log\lvert\det \partial x / \partial z\rvert` = minus the forward one at the
  corresponding point.

Inputs are float tensors of shape (N, D); outputs live on the input's device and dtype.

Layers
    :class:`ElementwiseAffine` (learnable per-dimension scale and shift),
    :class:`Permute` (a fixed permutation, :math:`\lvert\det\rvert = 1`),
    :class:`LogitTransform` (maps (0, 1) data to the real line, Dinh et al. 2017 sec. 4.1),
    :class:`AffineCoupling` (RealNVP, Dinh et al. 2017 eq. 4-9; additive NICE coupling,
    Dinh et al. 2015, when ``scale=False``),
    :class:`MADE` (masked autoencoder for distribution estimation, Germain et al. 2015),
    :class:`MAFLayer` (masked autoregressive flow, Papamakarios et al. 2017, eq. 2-5: density in one
    pass, sampling in D sequential passes),
    :class:`IAFLayer` (inverse autoregressive flow, Kingma et al. 2016, eq. 10: sampling in one pass,
    density of an arbitrary x in D sequential passes),
    :class:`SplineCoupling` (neural spline flow coupling, Durkan et al. 2019: a monotonic rational-quadratic
    spline per transformed coordinate, :func:`rq_spline_knots` and :func:`rq_spline`).

Models
    :class:`Flow` (a stack of layers with a standard normal base), built by :func:`realnvp`,
    :func:`maf`, :func:`iaf`, :func:`nsf`.

Checks and data helpers
    :func:`autograd_log_det`, :func:`check_layer` (invertibility and log-determinant vs
    ``torch.autograd.functional.jacobian``), :func:`nll_loss`, :func:`dequantize_digits`,
    :func:`digits_bits_per_dim` (uniform dequantisation of the 17-level digits, Theis et al. 2016).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import pairwise

import torch
from torch import nn

from ._validate import (
    check_finite_values,
    check_floating,
    check_matrix,
    check_nonnegative_float,
    check_positive_float,
    check_positive_int,
)
from .metrics import discrete_nll_to_bits_per_dim, uniform_dequantize
from .nets import MLP

__all__ = [
    "DIGITS_LEVELS",
    "standard_normal_log_prob",
    "FlowLayer",
    "ElementwiseAffine",
    "Permute",
    "LogitTransform",
    "AffineCoupling",
    "MaskedLinear",
    "MADE",
    "MAFLayer",
    "IAFLayer",
    "rq_spline_knots",
    "rq_spline",
    "SplineCoupling",
    "Flow",
    "checkerboard_mask",
    "realnvp",
    "maf",
    "iaf",
    "nsf",
    "autograd_log_det",
    "check_layer",
    "nll_loss",
    "dequantize_digits",
    "digits_bits_per_dim",
    "dequantized_nll",
    "quantize_digits",
]

LOG_2PI = math.log(2.0 * math.pi)

#: scikit-learn's digits store each pixel as an integer count 0..16: B = 17 levels.
DIGITS_LEVELS = 17


def standard_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    r"""Log-density of :math:`\mathcal{N}(0, \mathbf{I}_D)` at each row of ``z``.

    :math:`\log \mathcal{N}(z; 0, \mathbf{I}) = -\tfrac12 \lVert z \rVert^2 - \tfrac{D}{2}\log 2\pi`.

    Args:
        z: float tensor (N, D).

    Returns:
        (N,) tensor, nats.

    Raises:
        TypeError / ValueError: for a non-tensor, a wrong rank or NaN/Inf.
    """
    check_matrix("z", z, min_rows=0)
    return _standard_normal_log_prob(z)


def _standard_normal_log_prob(z):
    return -0.5 * (z**2).sum(-1) - 0.5 * z.shape[-1] * LOG_2PI


class FlowLayer(nn.Module):
    """Base class: an invertible map with a tractable log-determinant (see the module docstring).

    Subclasses implement ``_forward(x)`` and ``_inverse(z)``, each returning ``(output, log_det)``;
    the public ``forward``/``inverse`` validate the input (shape (N, ``dim``), finite).
    """

    def __init__(self, dim: int):
        super().__init__()
        self.dim = check_positive_int("dim", dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Data -> latent: ``(z, log|det dz/dx|)``, shapes (N, D) and (N,)."""
        return self._forward(check_matrix("x", x, self.dim, min_rows=0))

    def inverse(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Latent -> data: ``(x, log|det dx/dz|)``, shapes (N, D) and (N,)."""
        return self._inverse(check_matrix("z", z, self.dim, min_rows=0))

    def _forward(self, x):  # pragma: no cover - abstract
        raise NotImplementedError

    def _inverse(self, z):  # pragma: no cover - abstract
        raise NotImplementedError


class ElementwiseAffine(FlowLayer):
    r"""Per-dimension affine map :math:`z = x \odot e^{s} + t` with learnable :math:`s, t \in \mathbb{R}^D`.

    Jacobian :math:`\operatorname{diag}(e^{s})`, so :math:`\log\lvert\det\rvert = \sum_i s_i` (the same for
    every x). Inverse :math:`x = (z - t) \odot e^{-s}`. Initialised to the identity (s = t = 0).

    Args:
        dim: D.
    """

    def __init__(self, dim: int):
        super().__init__(dim)
        self.log_scale = nn.Parameter(torch.zeros(self.dim))
        self.shift = nn.Parameter(torch.zeros(self.dim))

    def _forward(self, x):
        z = x * self.log_scale.exp() + self.shift
        return z, self.log_scale.sum().expand(x.shape[0])

    def _inverse(self, z):
        x = (z - self.shift) * (-self.log_scale).exp()
        return x, (-self.log_scale.sum()).expand(z.shape[0])


class Permute(FlowLayer):
    r"""Reorder the coordinates: :math:`z = x_{\pi}` (``z[:, i] = x[:, perm[i]]``).

    A permutation matrix has :math:`\lvert\det\rvert = 1`, so the log-determinant is 0 both ways. Stacked
    between coupling or autoregressive layers it lets every coordinate be transformed and condition the
    others (Dinh et al. 2017 sec. 3.5; Papamakarios et al. 2017 sec. 3.2).

    Args:
        perm: a permutation of 0..D-1 (sequence or LongTensor).

    Raises:
        ValueError: if ``perm`` is not a permutation.
    """

    def __init__(self, perm):
        perm = torch.as_tensor(perm, dtype=torch.long).reshape(-1)
        if perm.numel() == 0 or not torch.equal(perm.sort().values, torch.arange(perm.numel())):
            raise ValueError(f"perm must be a permutation of 0..D-1, got {perm.tolist()}")
        super().__init__(perm.numel())
        self.register_buffer("perm", perm)
        self.register_buffer("inv_perm", torch.argsort(perm))

    @classmethod
    def reverse(cls, dim: int) -> Permute:
        """The reversal D-1, ..., 0 (the permutation MAF uses between layers)."""
        return cls(torch.arange(check_positive_int("dim", dim) - 1, -1, -1))

    def _forward(self, x):
        return x[:, self.perm], x.new_zeros(x.shape[0])

    def _inverse(self, z):
        return z[:, self.inv_perm], z.new_zeros(z.shape[0])


class LogitTransform(FlowLayer):
    r"""Map data in (0, 1) to the real line: :math:`z = \operatorname{logit}(\alpha + (1 - 2\alpha) x)`.

    RealNVP's pre-processing for images (Dinh et al. 2017 sec. 4.1): a density in logit space becomes a
    density on (0, 1)^D through this layer's log-determinant, so likelihoods stay those of the data.
    With :math:`y = \alpha + (1-2\alpha)x`,

    .. math::

        \frac{dz_i}{dx_i} = \frac{1 - 2\alpha}{y_i (1 - y_i)}, \qquad
        \log\lvert\det\rvert = \sum_i \big[\log(1 - 2\alpha) - \log y_i - \log(1 - y_i)\big].

    Args:
        dim: D.
        alpha: margin in [0, 0.5) keeping :math:`y` away from 0 and 1 (default 0.05).

    Raises:
        ValueError: for ``alpha`` outside [0, 0.5); in ``forward``, for x outside [0, 1]
            (or exactly 0 or 1 when ``alpha = 0``).
    """

    def __init__(self, dim: int, alpha: float = 0.05):
        super().__init__(dim)
        alpha = check_nonnegative_float("alpha", alpha)
        if alpha >= 0.5:
            raise ValueError(f"alpha must be in [0, 0.5), got {alpha}")
        self.alpha = alpha

    def _forward(self, x):
        lo, hi = float(x.detach().min()), float(x.detach().max())
        if lo < 0 or hi > 1 or (self.alpha == 0 and (lo == 0 or hi == 1)):
            raise ValueError(
                f"LogitTransform expects data in [0, 1] (open interval when alpha=0), got values in "
                f"[{lo:g}, {hi:g}]; dequantise and scale the data first"
            )
        y = self.alpha + (1 - 2 * self.alpha) * x
        z = torch.log(y) - torch.log1p(-y)
        log_det = (math.log(1 - 2 * self.alpha) - torch.log(y) - torch.log1p(-y)).sum(-1)
        return z, log_det

    def _inverse(self, z):
        y = torch.sigmoid(z)
        x = (y - self.alpha) / (1 - 2 * self.alpha)
        # log dx/dz = log sigmoid'(z) - log(1 - 2 alpha) = -softplus(-z) - softplus(z) - log(1 - 2 alpha)
        sp = nn.functional.softplus
        log_det = (-sp(-z) - sp(z) - math.log(1 - 2 * self.alpha)).sum(-1)
        return x, log_det


def _soft_clamp(s: torch.Tensor, bound: float | None) -> torch.Tensor:
    """``bound * tanh(s / bound)``: the identity near 0, limited to (-bound, bound) (stabilises training)."""
    return s if bound is None else bound * torch.tanh(s / bound)


def _coupling_mask(mask) -> torch.Tensor:
    """A coupling layer's mask as a float (D,) tensor of 0s and 1s with at least one of each."""
    mask = torch.as_tensor(mask, dtype=torch.float32).reshape(-1)
    if not bool(((mask == 0) | (mask == 1)).all()) or mask.sum() in (0, mask.numel()):
        raise ValueError(f"mask must hold 0s and 1s, with at least one of each, got {mask.tolist()}")
    return mask


class AffineCoupling(FlowLayer):
    r"""RealNVP affine coupling layer (Dinh et al. 2017, eq. 4-9).

    A binary ``mask`` b splits the coordinates into a conditioning half :math:`x_a` (b = 1, passed
    through) and a transformed half :math:`x_b` (b = 0):

    .. math::

        z_a = x_a, \qquad z_b = x_b \odot e^{s(x_a)} + t(x_a).

    The Jacobian is block triangular, :math:`\begin{pmatrix} I & 0 \\ \partial z_b/\partial x_a &
    \operatorname{diag}(e^{s(x_a)}) \end{pmatrix}`, so :math:`\log\lvert\det\rvert = \sum_i s_i(x_a)`, and the
    inverse is explicit, :math:`x_a = z_a`, :math:`x_b = (z_b - t(z_a)) \odot e^{-s(z_a)}` (the conditioning
    half is unchanged, so s and t can be recomputed). In the masked notation of the paper,
    :math:`z = b \odot x + (1 - b) \odot (x \odot e^{s(b \odot x)} + t(b \odot x))`. ``scale=False`` gives
    NICE's additive coupling (Dinh et al. 2015), whose log-determinant is 0.

    s and t come from one :class:`coursekit.nets.MLP` ``(|a| -> hidden -> 2|b|)`` with PyTorch's default
    initialisation (a zero-initialised last layer, which starts the layer at the identity, trained more
    slowly on two moons); s is soft-clamped to ``(-scale_bound, scale_bound)``.

    Args:
        mask: (D,) tensor/sequence of 0/1 with at least one 0 and one 1.
        hidden: hidden widths of the MLP. activation: module class (default ``nn.ReLU``).
        scale: learn the scale s (RealNVP) or only the shift t (NICE).
        scale_bound: soft clamp of s (``None``: unbounded).

    Raises:
        ValueError: for a mask that is not 0/1 or that masks everything or nothing.
    """

    def __init__(self, mask, hidden: Sequence[int] = (64, 64), activation=nn.ReLU, scale: bool = True,
                 scale_bound: float | None = 3.0):
        mask = _coupling_mask(mask)
        super().__init__(mask.numel())
        self.register_buffer("mask", mask)
        self.register_buffer("idx_a", mask.nonzero().reshape(-1))
        self.register_buffer("idx_b", (mask == 0).nonzero().reshape(-1))
        self.scale = bool(scale)
        self.scale_bound = scale_bound
        self.net = MLP(len(self.idx_a), 2 * len(self.idx_b), hidden=hidden, activation=activation)

    def scale_shift(self, x_a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(s, t)``, each (N, |b|), from the conditioning coordinates ``x_a`` (N, |a|)."""
        s, t = self.net(x_a).chunk(2, dim=-1)
        s = _soft_clamp(s, self.scale_bound) if self.scale else torch.zeros_like(s)
        return s, t

    def _forward(self, x):
        s, t = self.scale_shift(x[:, self.idx_a])
        z_b = x[:, self.idx_b] * s.exp() + t
        return x.index_copy(1, self.idx_b, z_b), s.sum(-1)

    def _inverse(self, z):
        s, t = self.scale_shift(z[:, self.idx_a])
        x_b = (z[:, self.idx_b] - t) * (-s).exp()
        return z.index_copy(1, self.idx_b, x_b), -s.sum(-1)


class MaskedLinear(nn.Linear):
    """``nn.Linear`` whose weight is multiplied by a fixed 0/1 ``mask`` of shape (out, in) (MADE)."""

    def __init__(self, in_features: int, out_features: int, mask: torch.Tensor):
        super().__init__(in_features, out_features)
        if tuple(mask.shape) != (out_features, in_features):
            raise ValueError(f"mask must have shape ({out_features}, {in_features}), got {tuple(mask.shape)}")
        self.register_buffer("mask", mask.to(torch.float32))

    def forward(self, x):
        return nn.functional.linear(x, self.weight * self.mask, self.bias)


class MADE(nn.Module):
    r"""Masked autoencoder for distribution estimation (Germain et al. 2015, sec. 4).

    Every input coordinate i gets a degree :math:`m(i) \in \{1..D\}` (its position in the autoregressive
    order), every hidden unit k a degree :math:`m(k) \in \{1..D-1\}`. The masks

    .. math::

        M^{\text{hidden}}_{k, j} = [\,m(k) \ge m(j)\,], \qquad M^{\text{out}}_{i, k} = [\,m(i) > m(k)\,]

    (eq. 12-13) make output i a function of the inputs with *smaller* degree only, so one forward pass
    returns every conditional's parameters at once and the Jacobian d(output_i)/d(input_j) is zero
    unless :math:`m(j) < m(i)`. Hidden degrees are assigned cyclically (deterministic).

    Args:
        dim: D. hidden: hidden widths (each >= 1). n_params: parameters per coordinate (2 for an affine
            flow). order: the degrees as a permutation of 1..D, default 1..D (the natural order).
        activation: module class (default ``nn.ReLU``).

    Shapes:
        input (N, D) -> output (N, n_params, D).
    """

    def __init__(self, dim: int, hidden: Sequence[int] = (64, 64), n_params: int = 2, order=None,
                 activation=nn.ReLU):
        super().__init__()
        self.dim = check_positive_int("dim", dim)
        self.n_params = check_positive_int("n_params", n_params)
        if order is None:
            order = torch.arange(1, self.dim + 1)
        order = torch.as_tensor(order, dtype=torch.long).reshape(-1)
        if not torch.equal(order.sort().values, torch.arange(1, self.dim + 1)):
            raise ValueError(f"order must be a permutation of 1..{self.dim}, got {order.tolist()}")
        self.register_buffer("order", order)
        degrees = [order]
        for width in hidden:
            width = check_positive_int("hidden width", width)
            degrees.append(torch.arange(width) % max(self.dim - 1, 1) + 1)
        layers: list[nn.Module] = []
        for d_in, d_out in pairwise(degrees):
            mask = (d_out[:, None] >= d_in[None, :])
            layers += [MaskedLinear(len(d_in), len(d_out), mask), activation()]
        out_deg = order.repeat(self.n_params)
        out_mask = out_deg[:, None] > degrees[-1][None, :]
        self.out = MaskedLinear(len(degrees[-1]), self.dim * self.n_params, out_mask)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_matrix("x", x, self.dim, min_rows=0)
        return self.out(self.body(x)).reshape(x.shape[0], self.n_params, self.dim)


class _MADEAffineLayer(FlowLayer):
    """An affine autoregressive layer: a :class:`MADE` with two outputs per coordinate, a shift and a log-scale
    (soft-clamped to ``scale_bound``). :class:`MAFLayer` and :class:`IAFLayer` differ only in which side of the
    map the MADE reads."""

    def __init__(self, dim: int, hidden: Sequence[int] = (64, 64), order=None, scale_bound: float | None = 3.0,
                 activation=nn.ReLU):
        super().__init__(dim)
        self.made = MADE(self.dim, hidden, n_params=2, order=order, activation=activation)
        self.scale_bound = scale_bound

    def _params(self, v):
        p = self.made(v)
        return p[:, 0], _soft_clamp(p[:, 1], self.scale_bound)


class MAFLayer(_MADEAffineLayer):
    r"""One layer of a masked autoregressive flow (Papamakarios et al. 2017, eq. 2-5).

    Generative direction (latent u to data x), sequential in the order of the MADE:
    :math:`x_i = u_i\, e^{\alpha_i} + \mu_i` with :math:`(\mu_i, \alpha_i)` functions of :math:`x_{<i}`.
    Normalizing direction (x to u), **one parallel pass** of the MADE on x:
    :math:`u_i = (x_i - \mu_i(x_{<i}))\, e^{-\alpha_i(x_{<i})}`, with a triangular Jacobian and
    :math:`\log\lvert\det \partial u/\partial x\rvert = -\sum_i \alpha_i`. So density evaluation costs
    one pass and sampling costs D passes (``inverse`` loops D times).

    Args:
        dim: D. hidden: MADE hidden widths. order: MADE degrees (default 1..D).
        scale_bound: soft clamp of :math:`\alpha` (``None``: unbounded).
    """

    def _forward(self, x):  # one pass
        mu, alpha = self._params(x)
        return (x - mu) * (-alpha).exp(), -alpha.sum(-1)

    def _inverse(self, u):  # D sequential passes
        x = torch.zeros_like(u)
        for _ in range(self.dim):
            mu, alpha = self._params(x)
            x = u * alpha.exp() + mu  # coordinates up to the current degree are now exact
        return x, alpha.sum(-1)


class IAFLayer(_MADEAffineLayer):
    r"""One layer of an inverse autoregressive flow (Kingma et al. 2016, eq. 10, affine form).

    The MADE reads the *latent* side: generative direction (z to x), **one parallel pass**:
    :math:`x_i = z_i\, e^{a_i(z_{<i})} + m_i(z_{<i})`, :math:`\log\lvert\det \partial x/\partial z\rvert = \sum_i a_i`.
    Normalizing direction (x to z) for an arbitrary x must recover :math:`z_1, z_2, \dots` one after the
    other: :math:`z_i = (x_i - m_i(z_{<i}))\, e^{-a_i(z_{<i})}`, **D sequential passes**. So sampling (and
    the density of the model's own samples, whose z is known) is fast, and the density of data is slow:
    the mirror image of :class:`MAFLayer`. (Kingma et al. write the update with a sigmoid gate; the exp
    form here is the same family.)

    Args: as :class:`MAFLayer`.
    """

    def _inverse(self, z):  # one pass
        m, a = self._params(z)
        return z * a.exp() + m, a.sum(-1)

    def _forward(self, x):  # D sequential passes
        z = torch.zeros_like(x)
        for _ in range(self.dim):
            m, a = self._params(z)
            z = (x - m) * (-a).exp()
        return z, -a.sum(-1)


# ------------------------------------------------------------------------------------------------
# Neural spline flows: monotonic rational-quadratic splines (Durkan et al. 2019)
# ------------------------------------------------------------------------------------------------


def rq_spline_knots(widths: torch.Tensor, heights: torch.Tensor, derivatives: torch.Tensor, bound: float = 3.0, *,
                    min_bin_width: float = 1e-3, min_bin_height: float = 1e-3,
                    min_derivative: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""Knots of a monotonic rational-quadratic spline on :math:`[-b_{\max}, b_{\max}]` from unconstrained network
    outputs (:math:`b_{\max}` = ``bound``, the half-width).

    Durkan et al. (2019): K bins with widths and heights given by a softmax, so they are positive and
    sum to :math:`2 b_{\max}`; positive derivatives at the K - 1 interior knots; derivative 1 at the two boundary
    knots, so that the spline joins the identity tails outside :math:`[-b_{\max}, b_{\max}]` with a continuous
    derivative.

    .. math::

        w_k = 2 b_{\max}\,\big(m_w + (1 - K m_w)\operatorname{softmax}(u^w)_k\big), \qquad
        x^{(k)} = -b_{\max} + \textstyle\sum_{j<k} w_j, \qquad
        \delta^{(k)} = m_\delta + \operatorname{softplus}\big(u^\delta_k + c_\delta\big), \quad
        c_\delta = \log(e^{1 - m_\delta} - 1),

    and the same for the heights and :math:`y^{(k)}`. The shift :math:`c_\delta` makes
    :math:`u^\delta = 0` give :math:`\delta = 1`, so zero outputs (widths, heights and derivatives) give equal
    bins, :math:`\rho_k = 1`, :math:`\beta_k = 0` and the identity map (see :func:`rq_spline`).

    Args:
        widths: (..., K) unconstrained bin widths :math:`u^w`, float.
        heights: (..., K) unconstrained bin heights :math:`u^h`, same shape.
        derivatives: (..., K - 1) unconstrained interior derivatives :math:`u^\delta`.
        bound: b_max > 0, the half-width of the interval the spline acts on.
        min_bin_width, min_bin_height: smallest bin width / height as a fraction of 2 b_max, in [0, 1/K).
        min_derivative: smallest derivative at a knot, >= 0 (0 allows flat pieces, which are not invertible).

    Returns:
        ``(knots_x, knots_y, knot_derivatives)``, each (..., K + 1): strictly increasing knots from -b_max to b_max
        (the end points exactly) and positive derivatives (1 at both ends).

    Raises:
        TypeError / ValueError: for non-float or non-finite inputs, mismatched shapes, K < 1, ``bound <= 0``,
            or minima that leave no room (``K * min_bin_width >= 1``).
    """
    for name, t in (("widths", widths), ("heights", heights), ("derivatives", derivatives)):
        check_floating(name, t)
        if t.ndim < 1:
            raise ValueError(f"{name} must have at least one dimension (the bins), got a scalar")
    n_bins = widths.shape[-1]
    if n_bins < 1 or heights.shape != widths.shape or derivatives.shape != widths.shape[:-1] + (n_bins - 1,):
        raise ValueError(f"expected widths and heights of shape (..., K) with K >= 1 and derivatives of shape "
                         f"(..., K - 1), got {tuple(widths.shape)}, {tuple(heights.shape)} and "
                         f"{tuple(derivatives.shape)}")
    _check_spline_settings(n_bins, bound, min_bin_width, min_bin_height, min_derivative)
    return _rq_knots(widths, heights, derivatives, bound, min_bin_width, min_bin_height, min_derivative)


def _check_spline_settings(n_bins, bound, min_bin_width, min_bin_height, min_derivative):
    check_positive_int("bins", n_bins)
    check_positive_float("bound", bound)
    check_nonnegative_float("min_derivative", min_derivative)
    for name, minimum in (("min_bin_width", min_bin_width), ("min_bin_height", min_bin_height)):
        minimum = check_nonnegative_float(name, minimum)
        if minimum * n_bins >= 1:
            raise ValueError(f"{name} * K must be < 1, got {name}={minimum} with K={n_bins} bins")


def _rq_knots(widths, heights, derivatives, bound, min_bin_width, min_bin_height, min_derivative):
    """:func:`rq_spline_knots` without the input checks (the settings checked once, by the caller)."""
    n_bins = widths.shape[-1]
    knots = []
    for u, minimum in ((widths, min_bin_width), (heights, min_bin_height)):
        frac = minimum + (1 - minimum * n_bins) * torch.softmax(u, dim=-1)
        inner = 2 * bound * torch.cumsum(frac[..., :-1], dim=-1) - bound
        # the end points exactly -b_max and b_max (a cumulative sum may miss 1 by rounding)
        end = torch.full_like(frac[..., :1], bound)
        knots.append(torch.cat([-end, inner, end], dim=-1))
    shift = math.log(math.expm1(1 - min_derivative)) if min_derivative < 1 else -math.inf
    inner = min_derivative + nn.functional.softplus(derivatives + shift)
    ones = torch.ones_like(widths[..., :1])
    return knots[0], knots[1], torch.cat([ones, inner, ones], dim=-1)


def _rq_bin_values(x, src, knots_x, knots_y, derivatives):
    """For each entry of x: whether it lies in [src_0, src_K], and x^(k), w_k, y^(k), h_k, delta^(k), delta^(k+1)
    of its bin k (found in the knots ``src``: the x-knots forwards, the y-knots for the inverse)."""
    inside = (x >= src[..., 0]) & (x <= src[..., -1])
    # the number of interior knots <= x: the bin 0..K-1 (the right end point falls in bin K-1)
    k = torch.searchsorted(src[..., 1:-1].contiguous(), x.unsqueeze(-1).contiguous(), right=True)

    def at(t, offset):
        return t.gather(-1, k + offset).squeeze(-1)

    x0, y0 = at(knots_x, 0), at(knots_y, 0)
    return inside, x0, at(knots_x, 1) - x0, y0, at(knots_y, 1) - y0, at(derivatives, 0), at(derivatives, 1)


def rq_spline(x: torch.Tensor, knots_x: torch.Tensor, knots_y: torch.Tensor, derivatives: torch.Tensor, *,
              inverse: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Monotonic rational-quadratic spline, applied elementwise, with identity tails (Durkan et al. 2019).

    The spline is written :math:`r` (chapter 05: it maps data-side coordinates towards the latent side, part of
    :math:`f = g^{-1}`). In bin k, with :math:`w_k = x^{(k+1)} - x^{(k)}`, :math:`h_k = y^{(k+1)} - y^{(k)}`, the slope
    :math:`\rho_k = h_k / w_k`, :math:`\xi = (x - x^{(k)}) / w_k \in [0, 1]` and
    :math:`\beta_k = \delta^{(k+1)} + \delta^{(k)} - 2 \rho_k` (Gregory & Delbourgo 1982; Durkan et al. 2019),

    .. math::

        r(x) = y^{(k)} + h_k\,\frac{\rho_k \xi^2 + \delta^{(k)} \xi (1 - \xi)}{\rho_k + \beta_k\, \xi (1 - \xi)}, \qquad
        r'(x) = \frac{\rho_k^2\,\big[\delta^{(k+1)} \xi^2 + 2 \rho_k \xi (1 - \xi) + \delta^{(k)} (1 - \xi)^2\big]}
                     {\big[\rho_k + \beta_k\, \xi (1 - \xi)\big]^2},

    so :math:`r'(x) > 0` whenever every :math:`\rho_k > 0` and every :math:`\delta^{(k)} > 0`. Outside
    :math:`[x^{(0)}, x^{(K)}]` the map is the identity (log-derivative 0); it joins the spline continuously, with a
    continuous derivative, when the end knots are :math:`\mp b_{\max}` in both x and y and
    :math:`\delta^{(0)} = \delta^{(K)} = 1` (as :func:`rq_spline_knots` builds them). The inverse solves
    :math:`a \xi^2 + b \xi + c = 0` with :math:`\Delta = y - y^{(k)}`,
    :math:`a = h_k (\rho_k - \delta^{(k)}) + \Delta \beta_k`, :math:`b = h_k \delta^{(k)} - \Delta \beta_k`,
    :math:`c = -\rho_k \Delta`; the root in [0, 1] is :math:`(-b + \sqrt{b^2 - 4ac}) / (2a)`, computed without
    cancellation as :math:`2c / (-b - \sqrt{b^2 - 4ac})` when :math:`b \ge 0` and in the first form when
    :math:`b < 0` (then :math:`a > 0`; Press et al. 2007, sec. 5.6).

    Args:
        x: (...) float tensor: inputs (``inverse=False``) or outputs (``inverse=True``) of the spline.
        knots_x, knots_y: (..., K + 1) strictly increasing knots (leading shape that of ``x``), e.g. from
            :func:`rq_spline_knots`; ``knots_x[..., 0]`` and ``knots_x[..., -1]`` equal ``knots_y``'s for identity
            tails that join the spline continuously.
        derivatives: (..., K + 1) positive derivatives at the knots.
        inverse: evaluate :math:`r^{-1}` instead of :math:`r`.

    Returns:
        ``(y, log_det)``, both shaped like ``x``: :math:`r(x)` and :math:`\log r'(x)` (nats), or with
        ``inverse=True`` :math:`r^{-1}(x)` and :math:`\log (r^{-1})'(x) = -\log r'(r^{-1}(x))`.

    Raises:
        TypeError / ValueError: for non-float or non-finite tensors or inconsistent shapes.
    """
    check_floating("x", x)
    for name, t in (("knots_x", knots_x), ("knots_y", knots_y), ("derivatives", derivatives)):
        check_floating(name, t)
        if t.shape[:-1] != x.shape or t.shape[-1] < 2 or t.shape != knots_x.shape:
            raise ValueError(f"{name} must have shape x.shape + (K + 1,) = {tuple(x.shape)} + (K + 1,) with K >= 1, "
                             f"like knots_x {tuple(knots_x.shape)}; got {tuple(t.shape)}")
    return _rq_spline(x, knots_x, knots_y, derivatives, inverse)


def _unit_interval(xi: torch.Tensor) -> torch.Tensor:
    """``xi`` clamped to [0, 1] against rounding, with the gradient of ``xi`` itself: the spline's derivative at a
    knot or at +-b_max is its one-sided limit, not the clamp's subgradient (whose value at the ends differs between
    torch releases: 1 in 2.13, 0 in 2.14)."""
    return xi + (xi.clamp(0, 1) - xi).detach()


def _rq_spline(x, knots_x, knots_y, derivatives, inverse):
    """:func:`rq_spline` without the input checks."""
    inside, x0, w, y0, h, d0, d1 = _rq_bin_values(x, knots_y if inverse else knots_x, knots_x, knots_y, derivatives)
    s = h / w
    beta = d1 + d0 - 2 * s
    if inverse:
        delta = torch.where(inside, x - y0, torch.zeros_like(x))
        a = h * (s - d0) + delta * beta
        b = h * d0 - delta * beta
        c = -s * delta
        root = torch.sqrt((b * b - 4 * a * c).clamp_min(0))
        b_pos = b >= 0  # each branch divides by a safe placeholder where it is not used (finite gradients)
        xi = _unit_interval(torch.where(b_pos, 2 * c / torch.where(b_pos, -b - root, -torch.ones_like(b)),
                                        (-b + root) / torch.where(b_pos, torch.ones_like(a), 2 * a)))
        out = x0 + xi * w
    else:
        xi = _unit_interval(torch.where(inside, (x - x0) / w, torch.zeros_like(x)))
        out = y0 + h * (s * xi**2 + d0 * xi * (1 - xi)) / (s + beta * xi * (1 - xi))
    one_minus = 1 - xi
    log_slope = (2 * torch.log(s) + torch.log(d1 * xi**2 + 2 * s * xi * one_minus + d0 * one_minus**2)
                 - 2 * torch.log(s + beta * xi * one_minus))
    log_det = torch.where(inside, -log_slope if inverse else log_slope, torch.zeros_like(x))
    return torch.where(inside, out, x), log_det


class SplineCoupling(FlowLayer):
    r"""Rational-quadratic spline coupling layer (neural spline flow, Durkan et al. 2019).

    As in :class:`AffineCoupling`, a binary ``mask`` b splits x into a conditioning half :math:`x_a`
    (b = 1, passed through) and a transformed half :math:`x_b` (b = 0), but each :math:`x_{b,i}` goes through
    its own monotonic rational-quadratic spline :math:`r_{\theta_i(x_a)}` (:func:`rq_spline`) on
    :math:`[-b_{\max}, b_{\max}]` (``bound``) with K bins, identity outside:

    .. math::

        z_a = x_a, \qquad z_{b,i} = r_{\theta_i(x_a)}(x_{b,i}), \qquad
        \log\lvert\det \partial z / \partial x\rvert = \sum_{i \in b} \log r'_{\theta_i(x_a)}(x_{b,i}).

    The Jacobian is block triangular with diagonal entries :math:`r' > 0`, and the inverse recomputes
    :math:`\theta(z_a) = \theta(x_a)` and inverts each spline (the root of a quadratic). One
    :class:`coursekit.nets.MLP` ``(|a| -> hidden -> |b| (3K - 1))`` outputs, per transformed coordinate, K
    widths, K heights and K - 1 interior derivatives (:func:`rq_spline_knots`), with PyTorch's default
    initialisation.

    Args:
        mask: (D,) 0/1 with at least one of each. hidden: MLP widths. bins: K >= 1. bound: b_max > 0.
        activation: module class (default ``nn.ReLU``).
        min_bin_width, min_bin_height, min_derivative: see :func:`rq_spline_knots`.

    Raises:
        ValueError: for a bad mask, ``bins < 1``, ``bound <= 0`` or minima out of range.
    """

    def __init__(self, mask, hidden: Sequence[int] = (64, 64), bins: int = 8, bound: float = 3.0,
                 activation=nn.ReLU, *, min_bin_width: float = 1e-3, min_bin_height: float = 1e-3,
                 min_derivative: float = 1e-3):
        mask = _coupling_mask(mask)
        super().__init__(mask.numel())
        self.register_buffer("mask", mask)
        self.register_buffer("idx_a", mask.nonzero().reshape(-1))
        self.register_buffer("idx_b", (mask == 0).nonzero().reshape(-1))
        self.bins = check_positive_int("bins", bins)
        self.bound = check_positive_float("bound", bound)
        _check_spline_settings(self.bins, self.bound, min_bin_width, min_bin_height, min_derivative)
        self.minima = (float(min_bin_width), float(min_bin_height), float(min_derivative))
        self.net = MLP(len(self.idx_a), len(self.idx_b) * (3 * self.bins - 1), hidden=hidden, activation=activation)

    def knots(self, x_a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(knots_x, knots_y, derivatives)``, each (N, |b|, K + 1), from the conditioning coordinates (N, |a|)."""
        params = self.net(x_a).reshape(x_a.shape[0], len(self.idx_b), 3 * self.bins - 1)
        w, h, d = params.split([self.bins, self.bins, self.bins - 1], dim=-1)
        return _rq_knots(w, h, d, self.bound, *self.minima)

    def _forward(self, x):
        z_b, ld = _rq_spline(x[:, self.idx_b], *self.knots(x[:, self.idx_a]), False)
        return x.index_copy(1, self.idx_b, z_b), ld.sum(-1)

    def _inverse(self, z):
        x_b, ld = _rq_spline(z[:, self.idx_b], *self.knots(z[:, self.idx_a]), True)
        return z.index_copy(1, self.idx_b, x_b), ld.sum(-1)


class Flow(nn.Module):
    r"""A normalizing flow: layers applied in order from data to latent, standard normal base.

    :math:`\log p(x) = \log \mathcal{N}(f(x); 0, \mathbf{I}) + \sum_k \log\lvert\det J_{f_k}\rvert`
    (change of variables + chain rule; Papamakarios et al. 2021, eq. 2-8). Sampling runs the layers'
    ``inverse`` in reverse order on :math:`z \sim \mathcal{N}(0, \mathbf{I})`.

    Args:
        layers: sequence of :class:`FlowLayer` with the same ``dim``.

    Raises:
        ValueError: if the list is empty or the layers' dims differ.
    """

    def __init__(self, layers: Sequence[FlowLayer]):
        super().__init__()
        layers = list(layers)
        if not layers:
            raise ValueError("a Flow needs at least one layer")
        dims = {layer.dim for layer in layers}
        if len(dims) != 1:
            raise ValueError(f"all layers must have the same dim, got {sorted(dims)}")
        self.dim = dims.pop()
        self.layers = nn.ModuleList(layers)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Data -> latent: ``(z, sum of log|det dz/dx|)``, (N, D) and (N,)."""
        check_matrix("x", x, self.dim, min_rows=0)
        total = x.new_zeros(x.shape[0])
        for layer in self.layers:  # x is checked once, here: each layer's own check would read the device again
            x, ld = layer._forward(x)
            total = total + ld
        return x, total

    def inverse(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Latent -> data: ``(x, sum of log|det dx/dz|)``, (N, D) and (N,)."""
        check_matrix("z", z, self.dim, min_rows=0)
        total = z.new_zeros(z.shape[0])
        for layer in reversed(self.layers):
            z, ld = layer._inverse(z)
            total = total + ld
        return z, total

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log-density of each row of ``x`` (N, D) -> (N,), nats."""
        z, log_det = self.forward(x)
        return _standard_normal_log_prob(z) + log_det

    def sample(self, n: int, generator: torch.Generator | None = None, temperature: float = 1.0) -> torch.Tensor:
        """``n`` samples (n, D): ``inverse(temperature * z)``, ``z ~ N(0, I)`` drawn on the flow's device
        (with ``generator`` if given, which must live on that device). ``temperature`` < 1 draws from a
        narrower base (Kingma & Dhariwal 2018); 1 is the model's own distribution."""
        n = check_positive_int("n", n)
        temperature = check_positive_float("temperature", temperature)
        ref = next(self.parameters(), None)
        ref = ref if ref is not None else next(self.buffers())
        z = torch.randn(n, self.dim, generator=generator, device=ref.device, dtype=ref.dtype)
        return self.inverse(temperature * z)[0]


def _alternating_mask(dim: int, parity: int) -> torch.Tensor:
    return ((torch.arange(dim) + parity) % 2).float()


def checkerboard_mask(height: int, width: int) -> torch.Tensor:
    """The (height * width,) 0/1 checkerboard ``(row + col) % 2 == 0`` of a row-major image (Dinh et al.
    2017 fig. 3): every pixel's four neighbours sit in the other half."""
    rows = torch.arange(check_positive_int("height", height)).view(-1, 1)
    cols = torch.arange(check_positive_int("width", width)).view(1, -1)
    return ((rows + cols) % 2 == 0).float().reshape(-1)


def _coupling_masks(dim, n_couplings, mask) -> list[torch.Tensor]:
    """The masks of ``n_couplings`` coupling layers, alternating between ``mask`` (default: the even coordinates)
    and ``1 - mask``, after checking ``dim >= 2`` and the mask's size."""
    dim = check_positive_int("dim", dim)
    if dim < 2:
        raise ValueError("a coupling flow needs dim >= 2")
    n_couplings = check_positive_int("n_couplings", n_couplings)
    mask = _alternating_mask(dim, 0) if mask is None else torch.as_tensor(mask, dtype=torch.float32).reshape(-1)
    if mask.numel() != dim:
        raise ValueError(f"mask must have {dim} entries, got {mask.numel()}")
    return [mask if k % 2 == 0 else 1 - mask for k in range(n_couplings)]


def realnvp(dim: int, n_couplings: int = 6, hidden: Sequence[int] = (64, 64), *, mask=None, logit: bool = False,
            alpha: float = 0.05, scale_bound: float | None = 3.0, activation=nn.ReLU, seed: int | None = None) -> Flow:
    """A RealNVP flow (Dinh et al. 2017): ``n_couplings`` affine couplings whose masks alternate between
    ``mask`` and ``1 - mask`` (default: even / odd coordinates; :func:`checkerboard_mask` suits images),
    preceded by a :class:`LogitTransform` if ``logit`` (for data in [0, 1]) and followed by an
    :class:`ElementwiseAffine` on the latent side.

    Alternating masks play the role of the permutations between layers: every coordinate is
    transformed by every second coupling. ``seed`` (optional) seeds the initialisation without touching
    the global RNG.

    Raises:
        ValueError: for ``dim < 2`` or a mask of the wrong size (see :class:`AffineCoupling`).
    """
    masks = _coupling_masks(dim, n_couplings, mask)
    dim = masks[0].numel()

    def build():
        layers: list[FlowLayer] = [LogitTransform(dim, alpha)] if logit else []
        layers += [AffineCoupling(m, hidden, activation, scale_bound=scale_bound) for m in masks]
        layers.append(ElementwiseAffine(dim))
        return Flow(layers)

    return _seeded(build, seed)


def _autoregressive(cls, dim, n_layers, hidden, logit, alpha, scale_bound, activation, seed):
    dim = check_positive_int("dim", dim)
    n_layers = check_positive_int("n_layers", n_layers)

    def build():
        layers: list[FlowLayer] = [LogitTransform(dim, alpha)] if logit else []
        for k in range(n_layers):
            if k > 0:
                layers.append(Permute.reverse(dim))
            layers.append(cls(dim, hidden, scale_bound=scale_bound, activation=activation))
        layers.append(ElementwiseAffine(dim))
        return Flow(layers)

    return _seeded(build, seed)


def maf(dim: int, n_layers: int = 5, hidden: Sequence[int] = (64, 64), *, logit: bool = False, alpha: float = 0.05,
        scale_bound: float | None = 3.0, activation=nn.ReLU, seed: int | None = None) -> Flow:
    """A masked autoregressive flow (Papamakarios et al. 2017): ``n_layers`` :class:`MAFLayer` with the
    order reversed between layers (:meth:`Permute.reverse`), optional logit pre-processing, an
    :class:`ElementwiseAffine` on the latent side. ``log_prob`` costs one MADE pass per layer;
    ``sample`` costs D passes per layer."""
    return _autoregressive(MAFLayer, dim, n_layers, hidden, logit, alpha, scale_bound, activation, seed)


def iaf(dim: int, n_layers: int = 5, hidden: Sequence[int] = (64, 64), *, logit: bool = False, alpha: float = 0.05,
        scale_bound: float | None = 3.0, activation=nn.ReLU, seed: int | None = None) -> Flow:
    """An inverse autoregressive flow (Kingma et al. 2016) built like :func:`maf` from :class:`IAFLayer`:
    ``sample`` costs one MADE pass per layer; ``log_prob`` of arbitrary data costs D passes per layer."""
    return _autoregressive(IAFLayer, dim, n_layers, hidden, logit, alpha, scale_bound, activation, seed)


def nsf(dim: int, n_couplings: int = 4, hidden: Sequence[int] = (64, 64), *, bins: int = 8, bound: float = 3.0,
        mask=None, activation=nn.ReLU, min_bin_width: float = 1e-3, min_bin_height: float = 1e-3,
        min_derivative: float = 1e-3, seed: int | None = None) -> Flow:
    """A rational-quadratic neural spline flow with coupling layers (RQ-NSF (C), Durkan et al. 2019):
    ``n_couplings`` :class:`SplineCoupling` layers (``bins`` bins on [-bound, bound], identity tails) whose
    masks alternate between ``mask`` and ``1 - mask`` (default: even / odd coordinates), followed by an
    :class:`ElementwiseAffine` on the latent side, as :func:`realnvp` builds its affine couplings.

    Data (and the intermediate values) outside [-bound, bound] pass through a spline unchanged: standardise
    the data, or choose ``bound`` to cover it. ``seed`` (optional) seeds the initialisation without touching the
    global RNG.

    Raises:
        ValueError: for ``dim < 2``, a mask of the wrong size, or bad spline settings (see :class:`SplineCoupling`).
    """
    masks = _coupling_masks(dim, n_couplings, mask)
    dim = masks[0].numel()
    minima = {"min_bin_width": min_bin_width, "min_bin_height": min_bin_height, "min_derivative": min_derivative}

    def build():
        layers: list[FlowLayer] = [SplineCoupling(m, hidden, bins, bound, activation, **minima) for m in masks]
        layers.append(ElementwiseAffine(dim))
        return Flow(layers)

    return _seeded(build, seed)


def _seeded(build, seed):
    if seed is None:
        return build()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return build()


# ------------------------------------------------------------------------------------------------
# Checks: invertibility and log-determinants against autograd
# ------------------------------------------------------------------------------------------------


def autograd_log_det(fn, x: torch.Tensor) -> torch.Tensor:
    r""":math:`\log\lvert\det \partial \mathrm{fn}(x_n)/\partial x_n\rvert` for each row, by autograd.

    Builds the full D x D Jacobian of each example with ``torch.autograd.functional.jacobian`` and
    takes ``torch.linalg.slogdet``: O(D^3) per example, an independent reference for the layers'
    cheap formulas.

    Args:
        fn: maps a (1, D) tensor to a (1, D) tensor (e.g. ``lambda v: layer(v)[0]``).
        x: (N, D) float tensor.

    Returns:
        (N,) tensor, nats.
    """
    check_matrix("x", x, min_rows=0)
    out = []
    for row in x:
        jac = torch.autograd.functional.jacobian(lambda v: fn(v.unsqueeze(0)).squeeze(0), row)
        out.append(torch.linalg.slogdet(jac).logabsdet)
    return torch.stack(out)


@torch.no_grad()
def _max_abs(a, b):
    return float((a - b).abs().max())


def check_layer(layer, x: torch.Tensor) -> dict:
    """Measure a flow layer (or a whole :class:`Flow`) at the points ``x`` (N, D).

    Returns a dict of python floats:

    * ``inverse_error``: max |inverse(forward(x)) - x|;
    * ``forward_error``: max |forward(inverse(z)) - z| with z = forward(x);
    * ``log_det_error``: max |forward log-det - autograd log|det J|| (:func:`autograd_log_det`);
    * ``inverse_log_det_error``: max |inverse log-det at z - autograd log|det| of ``inverse`` at z|;
    * ``log_det_sum``: max |forward log-det(x) + inverse log-det(z)| (must be 0: the Jacobians are
      inverses of each other).

    Use float64 inputs (and ``layer.double()``) for tight tolerances.
    """
    check_matrix("x", x, min_rows=0)
    z, ld = layer(x)
    x_back, ld_inv = layer.inverse(z)
    z_again, _ = layer(x_back)
    ad_fwd = autograd_log_det(lambda v: layer(v)[0], x)
    ad_inv = autograd_log_det(lambda v: layer.inverse(v)[0], z.detach())
    return {
        "inverse_error": _max_abs(x_back, x),
        "forward_error": _max_abs(z_again, z),
        "log_det_error": _max_abs(ld, ad_fwd),
        "inverse_log_det_error": _max_abs(ld_inv, ad_inv),
        "log_det_sum": _max_abs(ld + ld_inv, torch.zeros_like(ld)),
    }


# ------------------------------------------------------------------------------------------------
# Training objective, dequantisation and bits/dim
# ------------------------------------------------------------------------------------------------


def nll_loss(flow: Flow, batch: torch.Tensor):
    """Mean negative log-likelihood of a minibatch (nats per example), for :func:`coursekit.train.fit`.

    Returns ``(loss, {"nll": loss})``; maximum likelihood = minimising KL(p_data || p_model).
    """
    nll = -flow.log_prob(batch).mean()
    return nll, {"nll": nll.detach()}


def dequantize_digits(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    r"""Uniformly dequantise scikit-learn digits: ``y = (k + u) / 17`` with ``k = 16 x`` and ``u ~ U[0,1)``.

    The digits of :func:`coursekit.data.load_digits` are integer counts k in 0..16 divided by 16. The
    17 levels are mapped to the 17 bins [k/17, (k+1)/17) of [0, 1), each of width 1/17, and the noise
    fills the bin (:func:`coursekit.metrics.uniform_dequantize`; Theis et al. 2016 sec. 3.1). A continuous
    density p on y then bounds the discrete likelihood:
    :math:`-\log P(k) \le \mathbb{E}_u[-\log p(y)] + D \log 17` (see :func:`digits_bits_per_dim`).

    Args:
        x: (N, 64) float tensor of digits in {0, 1/16, ..., 1}.
        generator: optional ``torch.Generator`` on ``x``'s device.

    Returns:
        float32 (N, 64) in [0, 1), on ``x``'s device.

    Raises:
        ValueError: if ``x`` does not hold multiples of 1/16 in [0, 1].
    """
    check_matrix("x", x, min_rows=0)
    k = x * (DIGITS_LEVELS - 1)
    if bool(((k - k.round()).abs() > 1e-4).any()):
        raise ValueError("x must hold the digits' intensities k/16, k = 0..16 (as load_digits returns them)")
    return uniform_dequantize(k.round(), DIGITS_LEVELS, generator=generator)


def digits_bits_per_dim(nll_nats, dim: int = 64):
    r"""Bits/dim of the discrete digits from a continuous NLL (nats per image) on dequantised data in [0, 1).

    ``(nll + D log 17) / (D ln 2)`` = ``nll / (D ln 2) + log2 17``
    (:func:`coursekit.metrics.discrete_nll_to_bits_per_dim` with ``levels=17``, ``data_range=1``): the
    17 bins of width 1/17 tile [0, 1), and a bin's volume :math:`17^{-D}` turns a density into a
    probability. A model uniform on [0, 1)^D (NLL 0) gets exactly :math:`\log_2 17` bits/dim, the code
    length of 17 equally likely levels.

    Raises:
        TypeError / ValueError: ``dim`` not a positive integer, or ``nll_nats`` not a number, array or tensor of
            finite values.
    """
    check_finite_values("nll_nats", nll_nats)
    return discrete_nll_to_bits_per_dim(nll_nats, dim, DIGITS_LEVELS, 1.0)


@torch.no_grad()
def dequantized_nll(flow: Flow, x: torch.Tensor, draws: int = 10,
                    generator: torch.Generator | None = None) -> torch.Tensor:
    r"""Held-out NLL of digits under a flow on dequantised data, averaged over ``draws`` noise draws.

    Estimates :math:`\mathbb{E}_u[-\log p(y)]`, :math:`y = (16x + u)/17`, per image: in expectation an
    upper bound on the discrete NLL minus the bin-volume term (Theis et al. 2016). Pass the result to
    :func:`digits_bits_per_dim`.

    Args:
        flow: a :class:`Flow` on (0, 1)^64 data (e.g. ``realnvp(64, ..., logit=True)``).
        x: (N, 64) digits from :func:`coursekit.data.load_digits` (multiples of 1/16).
        draws: number of dequantisation draws (>= 1).
        generator: optional ``torch.Generator`` on ``x``'s device for the noise.

    Returns:
        (N,) tensor, nats per image (continuous density on [0, 1)^64).
    """
    draws = check_positive_int("draws", draws)
    was_training = flow.training
    flow.eval()
    total = torch.zeros(x.shape[0], device=x.device)
    for _ in range(draws):
        total += -flow.log_prob(dequantize_digits(x, generator))
    flow.train(was_training)
    return total / draws


def quantize_digits(y: torch.Tensor) -> torch.Tensor:
    """Map continuous samples in [0, 1) back to the digits' levels: the bin ``k = floor(17 y)`` (clipped to
    0..16) as the intensity ``k / 16``, the space of :func:`coursekit.data.load_digits` (grey scale).

    Args:
        y: (N, D) float tensor (values outside [0, 1) are clipped to the end bins; NaN rejected).

    Returns:
        (N, D) float32 in {0, 1/16, ..., 1}.
    """
    check_matrix("y", y, min_rows=0)
    k = torch.floor(y.float() * DIGITS_LEVELS).clamp(0, DIGITS_LEVELS - 1)
    return k / (DIGITS_LEVELS - 1)
