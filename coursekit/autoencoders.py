r"""Autoencoders (chapter 03): plain, linear, denoising, contractive and sparse, and why they cannot generate.

An autoencoder is an encoder :math:`f: \mathbb R^D \to \mathbb R^k` and a decoder :math:`g: \mathbb R^k \to
\mathbb R^D` trained to make :math:`g(f(x)) \approx x`. What keeps it from learning the identity map is either a
bottleneck (:math:`k < D`, undercomplete) or a regulariser (noise, a Jacobian penalty, sparsity). This module
holds the models and objectives the chapter derives:

* :class:`Autoencoder` - MLP encoder and decoder (:class:`coursekit.nets.MLP`); with ``hidden=()`` both maps are
  affine, the *linear autoencoder* whose optimum spans the principal subspace (Baldi & Hornik 1989), and
  :meth:`Autoencoder.linear_maps` returns its matrices. :class:`TiedSigmoidAutoencoder` - one sigmoid layer
  with the decoder tied to the transposed encoder weights (Rifai et al. 2011).
* :func:`reconstruction_error`, :func:`autoencoder_loss` - squared error summed over the D coordinates and
  averaged over the batch; :func:`eckart_young_floor` - the smallest mean squared error any rank-k affine
  reconstruction reaches (Eckart & Young 1936), the value the linear autoencoder attains.
* :func:`denoising_loss` (Vincent et al. 2008), :func:`dae_score` - the score estimate
  :math:`(r(\tilde x) - \tilde x)/\sigma^2` (Alain & Bengio 2014), and :func:`mixture_posterior_mean` - the
  optimal denoiser :math:`\mathbb E[x \mid \tilde x]` of an isotropic Gaussian mixture in closed form, which
  equals :math:`\tilde x + \sigma^2 \nabla \log q_\sigma(\tilde x)` (Tweedie's formula; Efron 2011).
* :func:`jacobian_frobenius_sq` (``torch.func``), :func:`sigmoid_jacobian_frobenius_sq` (its closed form for a
  sigmoid layer) and :func:`contractive_loss` (Rifai et al. 2011, the contractive objective).
* :func:`l1_activity_penalty`, :func:`kl_sparsity_penalty` and :func:`sparse_loss` (Ng 2011).
* :func:`nearest_code_distance`, :func:`far_from_codes_fraction` - how much of a sampling distribution over
  codes lands far from every training code (why decoding prior samples fails).

Conventions: data ``x`` are float (N, D); codes are (N, k); squared errors and penalties are per example
(shape (N,)) summed over coordinates, and the losses average them over the batch. The computations run in the
inputs' dtype and on their device.
"""

from __future__ import annotations

import torch
from torch import nn

from ._validate import (
    check_choice,
    check_floating,
    check_matrix,
    check_nonnegative_float,
    check_positive_float,
    check_positive_int,
    check_probability,
    check_same_shape,
    check_shape,
    check_tensor,
)
from .mixtures import gaussian_mixture_log_prob
from .nets import MLP

__all__ = [
    "Autoencoder",
    "TiedSigmoidAutoencoder",
    "reconstruction_error",
    "autoencoder_loss",
    "eckart_young_floor",
    "denoising_loss",
    "dae_score",
    "mixture_posterior_mean",
    "jacobian_frobenius_sq",
    "sigmoid_jacobian_frobenius_sq",
    "contractive_loss",
    "l1_activity_penalty",
    "kl_sparsity_penalty",
    "sparse_loss",
    "nearest_code_distance",
    "far_from_codes_fraction",
]

_CODE_ACTIVATIONS = {None: nn.Identity, "sigmoid": nn.Sigmoid, "relu": nn.ReLU}
#: Mean activations are clamped to [KL_CLAMP, 1 - KL_CLAMP] inside :func:`kl_sparsity_penalty` (finite logs).
KL_CLAMP = 1e-6


def _batch_x(batch) -> torch.Tensor:
    """The data tensor of a minibatch from :func:`coursekit.train.fit` (a tensor, or a tuple whose first entry
    is the data; labels are ignored), checked with :func:`coursekit._validate.check_matrix`: a finite
    floating-point (N, D) tensor, so that a NaN batch raises instead of returning a NaN loss."""
    x = batch[0] if isinstance(batch, (tuple, list)) else batch
    return check_matrix("x", x)


def _as_float_tensor(name: str, v, like: torch.Tensor) -> torch.Tensor:
    """A tensor argument must be floating (an integer tensor is a TypeError naming it); a python number or
    list is converted. The result has ``like``'s dtype and device."""
    if isinstance(v, torch.Tensor):
        check_floating(name, v, finite=False)
    return torch.as_tensor(v, dtype=like.dtype, device=like.device)


def _sq_err(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """(N,) squared errors summed over coordinates, without the checks of :func:`reconstruction_error`."""
    return ((x_hat - x) ** 2).sum(-1)


# --------------------------------------------------------------------------- models
class Autoencoder(nn.Module):
    r"""An autoencoder :math:`x \mapsto g(f(x))` with MLP encoder :math:`f` and decoder :math:`g`.

    ``encoder = MLP(data_dim, code_dim, hidden)`` followed by the code activation, and
    ``decoder = MLP(code_dim, data_dim, reversed(hidden))`` followed by the output map. With ``hidden=()``,
    no code activation and ``output="linear"`` both maps are affine, :math:`f(x) = Ax + a`, :math:`g(z) = Bz + b`:
    the linear autoencoder (:meth:`linear_maps`).

    Args:
        data_dim: D >= 1. code_dim: k >= 1 (k < D undercomplete, k >= D overcomplete).
        hidden: hidden widths of the encoder (the decoder uses them reversed); ``()`` for affine maps.
        activation: hidden activation class (default ``nn.SiLU``).
        code_activation: ``None`` (a linear code), ``"sigmoid"`` (codes in (0, 1), as the KL sparsity penalty
            needs) or ``"relu"``.
        output: ``"linear"`` (real-valued reconstructions) or ``"sigmoid"`` (reconstructions in (0, 1), for
            pixel intensities).

    Shapes:
        ``encode``: (N, D) -> (N, k); ``decode``: (N, k) -> (N, D); ``forward``: (N, D) -> (N, D).

    Raises:
        TypeError / ValueError: for bad sizes or an unknown ``code_activation`` / ``output``; wrong input shapes
            in the methods.
    """

    def __init__(self, data_dim: int, code_dim: int, hidden=(128,), activation=nn.SiLU, code_activation=None,
                 output: str = "linear"):
        super().__init__()
        self.data_dim = check_positive_int("data_dim", data_dim)
        self.code_dim = check_positive_int("code_dim", code_dim)
        self.hidden = tuple(check_positive_int(f"hidden[{i}]", h) for i, h in enumerate(hidden))
        check_choice("code_activation", code_activation, tuple(_CODE_ACTIVATIONS))
        self.output = check_choice("output", output, ("linear", "sigmoid"))
        self.code_activation = code_activation
        self.encoder = MLP(self.data_dim, self.code_dim, self.hidden, activation)
        self.code_map = _CODE_ACTIVATIONS[code_activation]()
        self.decoder = MLP(self.code_dim, self.data_dim, tuple(reversed(self.hidden)), activation)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Codes (N, code_dim) of data (N, data_dim)."""
        check_shape("x", check_tensor("x", x), ("N", self.data_dim))
        return self.code_map(self.encoder(x))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Reconstructions (N, data_dim) of codes (N, code_dim) (in (0, 1) when ``output="sigmoid"``)."""
        check_shape("z", check_tensor("z", z), ("N", self.code_dim))
        out = self.decoder(z)
        return torch.sigmoid(out) if self.output == "sigmoid" else out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstructions g(f(x)), (N, data_dim)."""
        return self.decode(self.encode(x))

    def linear_maps(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        r"""The affine maps of a linear autoencoder: ``(A, a, B, b)`` with :math:`f(x) = Ax + a`,
        :math:`g(z) = Bz + b`; A (k, D), a (k,), B (D, k), b (D,), detached.

        Raises:
            ValueError: if the model is not linear (hidden layers, a code activation or a sigmoid output).
        """
        if self.hidden or self.code_activation is not None or self.output != "linear":
            raise ValueError("linear_maps needs a linear autoencoder: hidden=(), code_activation=None, "
                             f"output='linear'; got hidden={self.hidden}, code_activation={self.code_activation!r}, "
                             f"output={self.output!r}")
        enc, dec = self.encoder.net[0], self.decoder.net[0]
        return enc.weight.detach(), enc.bias.detach(), dec.weight.detach(), dec.bias.detach()


class TiedSigmoidAutoencoder(nn.Module):
    r"""One sigmoid layer with tied weights: :math:`h = \mathrm{sigmoid}(Wx + b)`, :math:`r = W^\top h + c`
    (Rifai et al. 2011, tied weights with a sigmoid encoder; the tied autoencoders of Vincent et al. 2010).

    Tying the decoder to :math:`W^\top` stops the encoder from shrinking :math:`W` (which lowers a Jacobian
    penalty) while the decoder scales up to compensate.

    Args:
        data_dim: D >= 1. code_dim: k >= 1. output: ``"linear"`` or ``"sigmoid"`` (r in (0, 1)).

    Attributes:
        weight (k, D), bias (k,), out_bias (D,): the parameters W, b, c (W initialised with std 1/sqrt(D)).

    Shapes:
        ``encode``: (N, D) -> (N, k) in (0, 1); ``decode``: (N, k) -> (N, D); ``forward``: (N, D) -> (N, D).
    """

    def __init__(self, data_dim: int, code_dim: int, output: str = "linear"):
        super().__init__()
        self.data_dim = check_positive_int("data_dim", data_dim)
        self.code_dim = check_positive_int("code_dim", code_dim)
        self.output = check_choice("output", output, ("linear", "sigmoid"))
        self.weight = nn.Parameter(torch.randn(self.code_dim, self.data_dim) / self.data_dim**0.5)
        self.bias = nn.Parameter(torch.zeros(self.code_dim))
        self.out_bias = nn.Parameter(torch.zeros(self.data_dim))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Codes sigmoid(x W^T + b), (N, code_dim)."""
        check_shape("x", check_tensor("x", x), ("N", self.data_dim))
        return torch.sigmoid(x @ self.weight.T + self.bias)

    def decode(self, h: torch.Tensor) -> torch.Tensor:
        """Reconstructions h W + c, (N, data_dim) (through a sigmoid when ``output="sigmoid"``)."""
        check_shape("h", check_tensor("h", h), ("N", self.code_dim))
        out = h @ self.weight + self.out_bias
        return torch.sigmoid(out) if self.output == "sigmoid" else out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstructions, (N, data_dim)."""
        return self.decode(self.encode(x))

    def contractive_penalty(self, x: torch.Tensor) -> torch.Tensor:
        """The squared Frobenius norm of the encoder Jacobian at each row of x, (N,), in closed form
        (:func:`sigmoid_jacobian_frobenius_sq`)."""
        return sigmoid_jacobian_frobenius_sq(self.weight, self.bias, x)


# --------------------------------------------------------------------------- reconstruction
def reconstruction_error(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    r"""Squared error :math:`\lVert x_n - \hat x_n \rVert^2` of each example, summed over the D coordinates.

    Args:
        x, x_hat: float (N, D) of the same shape, finite.

    Returns:
        (N,) tensor (units of x squared).

    Raises:
        TypeError / ValueError: non-tensors, non-float or non-finite input, or different shapes.
    """
    check_matrix("x", x)
    check_matrix("x_hat", x_hat)
    check_same_shape(x=x, x_hat=x_hat)
    return ((x_hat - x) ** 2).sum(-1)


def autoencoder_loss(model: nn.Module, batch):
    r"""Loss for :func:`coursekit.train.fit`: the mean over the batch of :func:`reconstruction_error`,
    :math:`\frac1N \sum_n \lVert x_n - g(f(x_n)) \rVert^2` (summed over coordinates, so a penalty added to it
    keeps its weight whatever D is).

    Args:
        model: a module mapping (N, D) -> (N, D) reconstructions. batch: x (N, D), or a tuple starting with x.

    Returns:
        ``(loss, {"mse": float})``, ``mse`` the same value as a python float.

    Raises:
        TypeError: the data ``x`` is not a floating-point tensor.
        ValueError: ``x`` is not of shape (N, D) with N, D >= 1, or has NaN/Inf entries.
    """
    x = _batch_x(batch)
    loss = _sq_err(x, model(x)).mean()
    return loss, {"mse": float(loss.detach())}


def eckart_young_floor(x: torch.Tensor, k: int) -> torch.Tensor:
    r"""The smallest mean squared reconstruction error of any rank-k affine reconstruction of the rows of x:

    .. math::

        \min_{\operatorname{rank} M \le k,\ c} \frac1N \sum_n \lVert x_n - M x_n - c \rVert^2
        = \frac1N \sum_{i > k} s_i^2 = \sum_{i > k} \lambda_i,

    with :math:`s_i` the singular values of the centred data matrix and :math:`\lambda_i = s_i^2 / N` the
    eigenvalues of the (biased) sample covariance (Eckart & Young 1936; the optimal c centres the data).

    Args:
        x: float (N, D) data. k: 0 <= k; k >= min(N, D) gives 0.

    Returns:
        0-d tensor in x's dtype (units of x squared, per example).

    Raises:
        TypeError / ValueError: bad x, or k not a non-negative integer.
    """
    x = check_matrix("x", x)
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise ValueError(f"k must be a non-negative integer, got {k!r}")
    s = torch.linalg.svdvals(x - x.mean(0))
    return (s[k:] ** 2).sum() / x.shape[0]


# --------------------------------------------------------------------------- denoising
def denoising_loss(model: nn.Module, batch, sigma: float, generator: torch.Generator | None = None):
    r"""Loss for :func:`coursekit.train.fit`: the denoising autoencoder's
    :math:`\frac1N \sum_n \lVert r(x_n + \sigma\varepsilon_n) - x_n \rVert^2`, :math:`\varepsilon_n \sim
    \mathcal N(0, I)` drawn fresh at every call (Vincent et al. 2008, with Gaussian corruption).

    Args:
        model: maps (N, D) -> (N, D). batch: x (N, D) or a tuple starting with x. sigma: noise std > 0.
        generator: optional ``torch.Generator`` (on x's device) for the noise; default torch's global RNG.

    Returns:
        ``(loss, {"mse": float})``.

    Raises:
        TypeError: the data ``x`` is not a floating-point tensor, or sigma is not a real number.
        ValueError: ``x`` is not of shape (N, D) with N, D >= 1, has NaN/Inf entries, or sigma <= 0.
    """
    sigma = check_positive_float("sigma", sigma)
    x = _batch_x(batch)
    noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    loss = _sq_err(x, model(x + sigma * noise)).mean()
    return loss, {"mse": float(loss.detach())}


def dae_score(reconstruction: torch.Tensor, x_noisy: torch.Tensor, sigma) -> torch.Tensor:
    r"""The score estimate of a denoising autoencoder, :math:`(r(\tilde x) - \tilde x) / \sigma^2`.

    For the optimal denoiser :math:`r^\star(\tilde x) = \mathbb E[x \mid \tilde x]` this is exactly the score
    :math:`\nabla \log q_\sigma(\tilde x)` of the noisy density (Tweedie's formula; Alain & Bengio 2014;
    Vincent 2011).

    Args:
        reconstruction: r(x~), float (N, D). x_noisy: x~, float (N, D). sigma: the noise std > 0 (a float).

    Returns:
        (N, D) tensor, units 1 / (units of x).

    Raises:
        TypeError / ValueError: bad tensors, different shapes, or sigma <= 0.
    """
    sigma = check_positive_float("sigma", sigma)
    check_matrix("reconstruction", reconstruction)
    check_matrix("x_noisy", x_noisy)
    check_same_shape(reconstruction=reconstruction, x_noisy=x_noisy)
    return (reconstruction - x_noisy) / sigma**2


def mixture_posterior_mean(x_noisy: torch.Tensor, means, stds, weights=None, sigma: float = 0.0) -> torch.Tensor:
    r"""The optimal denoiser :math:`\mathbb E[x \mid \tilde x]` for :math:`x \sim \sum_k w_k \mathcal N(\mu_k,
    s_k^2 I)` and :math:`\tilde x = x + \sigma\varepsilon`, in closed form, component by component:

    .. math::

        \mathbb E[x \mid \tilde x] = \sum_k \gamma_k(\tilde x)\,
        \frac{s_k^2\, \tilde x + \sigma^2 \mu_k}{s_k^2 + \sigma^2},
        \qquad \gamma_k(\tilde x) = \frac{w_k \mathcal N(\tilde x; \mu_k, (s_k^2 + \sigma^2) I)}{q_\sigma(\tilde x)}

    (the posterior of the component given x~, times the Gaussian posterior mean within it). It is computed
    without the score, so it checks Tweedie's formula :math:`\tilde x + \sigma^2 \nabla \log q_\sigma(\tilde x)`
    (:func:`coursekit.mixtures.gaussian_mixture_score`) independently.

    Args:
        x_noisy: (N, D) noisy points. means: (K, D). stds: scalar or (K,) > 0. weights: (K,) >= 0 (normalised
            here) or ``None`` (uniform). sigma: noise std >= 0 (0 gives x_noisy back).

    Returns:
        (N, D) tensor in x_noisy's dtype and device.

    Raises:
        TypeError: a tensor argument (x_noisy, means, stds, weights) that is not floating point.
        ValueError: NaN/Inf entries, wrong shapes (means not (K, D), stds not scalar or (K,)), stds <= 0, invalid
            weights or sigma < 0, each naming the argument (as :func:`coursekit.mixtures.gaussian_mixture_log_prob`).
    """
    x = check_matrix("x_noisy", x_noisy)
    means = check_matrix("means", _as_float_tensor("means", means, x), x.shape[1])
    n_comp = means.shape[0]
    stds = check_floating("stds", _as_float_tensor("stds", stds, x))
    if stds.ndim > 1 or stds.numel() not in (1, n_comp):
        raise ValueError(f"stds must be a scalar or have shape ({n_comp},), got shape {tuple(stds.shape)}")
    stds = stds.expand(n_comp)
    w = torch.full((n_comp,), 1.0 / n_comp, dtype=x.dtype, device=x.device) if weights is None else \
        check_floating("weights", _as_float_tensor("weights", weights, x))
    total = gaussian_mixture_log_prob(x, means, stds, w, sigma)  # validates every argument; (N,)
    w = w / w.sum()
    out = torch.zeros_like(x)
    for k in range(n_comp):
        log_joint = torch.log(w[k]) + gaussian_mixture_log_prob(x, means[k:k + 1], stds[k:k + 1], None, sigma)
        var = stds[k] ** 2 + sigma**2
        post = (stds[k] ** 2 * x + sigma**2 * means[k]) / var  # (N, D) mean of x given x~ and component k
        out = out + torch.exp(log_joint - total)[:, None] * post
    return out


# --------------------------------------------------------------------------- contractive
def jacobian_frobenius_sq(encoder, x: torch.Tensor) -> torch.Tensor:
    r""":math:`\lVert J_f(x_n) \rVert_F^2 = \sum_{j,i} (\partial f_j / \partial x_i)^2` at every row of x, by
    ``torch.func.vmap(torch.func.jacrev(...))`` (one Jacobian per example, differentiable with respect to the
    encoder's parameters, so it can be trained on).

    Args:
        encoder: maps (N, D) -> (N, k), row by row (e.g. ``model.encode``). x: float (N, D).

    Returns:
        (N,) tensor.

    Raises:
        TypeError / ValueError: bad x; ``encoder`` not callable.
    """
    x = check_matrix("x", x)
    if not callable(encoder):
        raise TypeError(f"encoder must be callable, got {type(encoder).__name__}")
    jac = torch.func.vmap(torch.func.jacrev(lambda v: encoder(v[None])[0]))(x)  # (N, k, D)
    return (jac**2).sum((-2, -1))


def sigmoid_jacobian_frobenius_sq(weight: torch.Tensor, bias: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    r"""Closed form of :math:`\lVert J(x) \rVert_F^2` for a sigmoid layer :math:`h = \mathrm{sigmoid}(Wx + b)`
    (the closed form of Rifai et al. 2011 for a sigmoid encoder):

    .. math::

        \lVert J(x) \rVert_F^2 = \sum_j \big(h_j (1 - h_j)\big)^2 \sum_i W_{ji}^2,

    because :math:`J = \operatorname{diag}(h \odot (1 - h))\, W`.

    Args:
        weight: W, float (k, D). bias: b, float (k,). x: float (N, D).

    Returns:
        (N,) tensor.

    Raises:
        TypeError: weight, bias or x not a floating-point tensor.
        ValueError: NaN/Inf entries or inconsistent shapes (weight not (k, D), bias not (k,)), naming the argument.
    """
    x = check_matrix("x", x)
    check_matrix("weight", weight, x.shape[1])
    check_shape("bias", check_floating("bias", bias), (weight.shape[0],))
    h = torch.sigmoid(x @ weight.T + bias)
    return ((h * (1 - h)) ** 2) @ (weight**2).sum(1)


def contractive_loss(model: nn.Module, batch, weight: float):
    r"""Loss for :func:`coursekit.train.fit`: the contractive autoencoder's
    :math:`\frac1N \sum_n \big[\lVert x_n - g(f(x_n)) \rVert^2 + \lambda \lVert J_f(x_n) \rVert_F^2\big]`
    (the objective of Rifai et al. 2011; squared error in place of their cross-entropy).

    The penalty is ``model.contractive_penalty(x)`` if the model has one (the closed form of
    :class:`TiedSigmoidAutoencoder`), else :func:`jacobian_frobenius_sq` of ``model.encode``.

    Args:
        model: an autoencoder with ``encode`` and ``decode``. batch: x (N, D) or a tuple starting with x.
        weight: lambda >= 0.

    Returns:
        ``(loss, {"mse": float, "jacobian": float})`` (batch means of the two terms).

    Raises:
        TypeError: the data ``x`` is not a floating-point tensor, or weight is not a real number.
        ValueError: ``x`` is not of shape (N, D) with N, D >= 1, has NaN/Inf entries, or weight < 0.
    """
    weight = check_nonnegative_float("weight", weight)
    x = _batch_x(batch)
    mse = _sq_err(x, model.decode(model.encode(x))).mean()
    pen = model.contractive_penalty(x) if hasattr(model, "contractive_penalty") else \
        jacobian_frobenius_sq(model.encode, x)
    pen = pen.mean()
    return mse + weight * pen, {"mse": float(mse.detach()), "jacobian": float(pen.detach())}


# --------------------------------------------------------------------------- sparse
def l1_activity_penalty(h: torch.Tensor) -> torch.Tensor:
    r"""The L1 activity penalty :math:`\sum_j |h_{nj}|` of each example's code, (N,).

    Raises:
        TypeError / ValueError: h not a finite float (N, k) tensor.
    """
    return check_matrix("h", h).abs().sum(-1)


def kl_sparsity_penalty(h: torch.Tensor, rho: float) -> torch.Tensor:
    r"""The KL sparsity penalty of Ng's sparse autoencoder notes (2011, sec. 3):

    .. math::

        \sum_{j=1}^k \operatorname{KL}\big(\mathrm{Bern}(\rho) \,\|\, \mathrm{Bern}(\hat\rho_j)\big)
        = \sum_j \Big[\rho \log\frac{\rho}{\hat\rho_j} + (1 - \rho)\log\frac{1 - \rho}{1 - \hat\rho_j}\Big],
        \qquad \hat\rho_j = \frac1N \sum_n h_{nj},

    a penalty on each unit's *mean* activation over the batch (not on each example). :math:`\hat\rho_j` is
    clamped to [:data:`KL_CLAMP`, 1 - :data:`KL_CLAMP`] so the logs stay finite.

    Args:
        h: codes in [0, 1] (e.g. sigmoid units), float (N, k), N >= 1. rho: the target rate, 0 < rho < 1.

    Returns:
        0-d tensor in nats (sum over the k units).

    Raises:
        TypeError / ValueError: bad h, h outside [0, 1], or rho not in (0, 1).
    """
    check_probability("h", check_matrix("h", check_tensor("h", h).detach()))  # detached: checks need no graph
    rho = check_positive_float("rho", rho)
    if rho >= 1:
        raise ValueError(f"rho must lie in (0, 1), got {rho}")
    rho_hat = h.mean(0).clamp(KL_CLAMP, 1 - KL_CLAMP)
    return (rho * torch.log(rho / rho_hat) + (1 - rho) * torch.log((1 - rho) / (1 - rho_hat))).sum()


def sparse_loss(model: nn.Module, batch, penalty: str, weight: float, rho: float = 0.05):
    r"""Loss for :func:`coursekit.train.fit`: squared error plus a sparsity penalty on the codes
    :math:`h = f(x)`:

    * ``penalty="l1"``: :math:`\frac1N \sum_n \lVert x_n - g(h_n) \rVert^2 + \lambda \frac1N \sum_n \lVert h_n
      \rVert_1` (:func:`l1_activity_penalty`);
    * ``penalty="kl"``: :math:`\frac1N \sum_n \lVert x_n - g(h_n) \rVert^2 + \lambda \sum_j
      \operatorname{KL}(\rho \,\|\, \hat\rho_j)` (:func:`kl_sparsity_penalty`; needs codes in [0, 1]).

    Args:
        model: an autoencoder with ``encode`` / ``decode``. batch: x (N, D) or a tuple starting with x.
        penalty: ``"l1"`` or ``"kl"``. weight: lambda >= 0. rho: target mean activation for ``"kl"``.

    Returns:
        ``(loss, {"mse": float, "penalty": float, "mean_activation": float})``.

    Raises:
        TypeError: the data ``x`` is not a floating-point tensor, or weight is not a real number.
        ValueError: ``x`` is not of shape (N, D) with N, D >= 1 or has NaN/Inf entries; penalty not ``"l1"`` or
            ``"kl"``; weight < 0; for ``"kl"``, codes outside [0, 1] or rho not in (0, 1).
    """
    check_choice("penalty", penalty, ("l1", "kl"))
    weight = check_nonnegative_float("weight", weight)
    x = _batch_x(batch)
    h = model.encode(x)
    mse = _sq_err(x, model.decode(h)).mean()
    pen = l1_activity_penalty(h).mean() if penalty == "l1" else kl_sparsity_penalty(h, rho)
    return mse + weight * pen, {"mse": float(mse.detach()), "penalty": float(pen.detach()),
                                "mean_activation": float(h.detach().mean())}


# --------------------------------------------------------------------------- the codes as a sampling space
def nearest_code_distance(z: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    r"""Euclidean distance from each row of z to its nearest row of ``codes``, :math:`\min_m \lVert z_i - c_m
    \rVert`, (M,).

    Args:
        z: float (M, k) query codes. codes: float (N, k) reference codes, N >= 1.

    Raises:
        TypeError / ValueError: bad tensors or different code sizes k.
    """
    z = check_matrix("z", z, min_rows=0)
    codes = check_matrix("codes", codes, z.shape[1])
    return torch.cdist(z, codes).min(1).values


def far_from_codes_fraction(z: torch.Tensor, codes: torch.Tensor, quantile: float = 0.95) -> tuple[float, float]:
    r"""The share of the codes z (drawn from some sampling distribution) that lie farther from every training
    code than a training code typically lies from its nearest neighbour.

    The radius is the ``quantile`` of the leave-one-out nearest-neighbour distances among ``codes``; a query
    farther than that from all codes is in a region the decoder was never trained on (the autoencoder's codes
    do not cover it).

    Args:
        z: float (M, k), M >= 1. codes: float (N, k), N >= 2. quantile: in (0, 1].

    Returns:
        ``(fraction, radius)``: the share of z beyond the radius (in [0, 1]) and the radius (python floats).

    Raises:
        TypeError / ValueError: bad tensors, N < 2, different k, or a quantile outside (0, 1].
    """
    z = check_matrix("z", z)
    codes = check_matrix("codes", codes, z.shape[1], min_rows=2)
    quantile = check_positive_float("quantile", quantile)
    if quantile > 1:
        raise ValueError(f"quantile must lie in (0, 1], got {quantile}")
    d = torch.cdist(codes, codes)
    d.fill_diagonal_(float("inf"))
    radius = float(torch.quantile(d.min(1).values, quantile))
    return float((nearest_code_distance(z, codes) > radius).double().mean()), radius
