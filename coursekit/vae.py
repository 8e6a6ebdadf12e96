r"""Variational autoencoders: the ELBO, the reparameterisation trick, the IWAE bound,
and a linear-Gaussian model (probabilistic PCA) on which every bound can be
compared with the exact log-likelihood.

Conventions: all log-densities and bounds are in **nats** per example (natural
log, summed over data dimensions); ``logvar`` always means log *variance*
:math:`\log\sigma^2`, never log standard deviation. Batch-first shapes:
``x`` is ``(N, D)``, latents are ``(N, d)``; Monte Carlo sample dimensions come
first, e.g. ``(k, N, d)``.

Key results implemented here (derivations in the docstrings):

* ELBO: :math:`\log p(x) = \mathbb E_q[\log p(x,z) - \log q(z|x)] + \mathrm{KL}(q(z|x)\,\|\,p(z|x))`,
  so the ELBO is a lower bound whose gap is exactly that KL (Kingma & Welling 2014, eq. 1-3).
* Reparameterisation: :math:`z = \mu + \sigma\epsilon`, :math:`\epsilon\sim\mathcal N(0,I)`
  (Kingma & Welling 2014, sec. 2.4).
* IWAE: :math:`\mathcal L_k = \mathbb E\big[\log \tfrac1k\sum_i p(x,z_i)/q(z_i|x)\big]`, with
  :math:`\mathcal L_1 = \text{ELBO} \le \mathcal L_k \le \mathcal L_{k+1} \le \log p(x)`
  (Burda, Grosse & Salakhutdinov 2016, eq. 8 and Theorem 1).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ._validate import (
    check_all_positive,
    check_broadcastable,
    check_finite,
    check_floating,
    check_log_values,
    check_nonempty,
    check_nonnegative_float,
    check_nonnegative_int,
    check_positive_float,
    check_positive_int,
    check_probability,
    check_shape,
    check_tensor,
)
from .divergences import gaussian_kl
from .nets import MLP

__all__ = [
    "reparameterise",
    "bernoulli_log_likelihood",
    "VAE",
    "elbo",
    "vae_loss",
    "log_mean_exp",
    "iwae_from_log_weights",
    "iwae_bound",
    "LinearGaussianModel",
    "reparam_gradient_samples",
    "score_function_gradient_samples",
    "fit_independent_bernoulli",
    "independent_bernoulli_log_prob",
    "kl_per_dimension",
    "ACTIVE_UNIT_THRESHOLD",
    "latent_activity",
    "kl_warmup_beta",
    "free_bits_kl",
    "free_bits_loss",
]

_LOG_2PI = math.log(2.0 * math.pi)


# --------------------------------------------------------------------------- helpers
def _randn(shape, generator, dtype, device) -> torch.Tensor:
    """Standard normal noise on ``device``; drawn on the generator's own device if that differs
    (e.g. a CPU ``torch.Generator`` with a CUDA model), so results only depend on the seed."""
    device = torch.device(device)
    if generator is not None and generator.device.type != device.type:
        return torch.randn(shape, generator=generator, dtype=dtype, device=generator.device).to(device)
    return torch.randn(shape, generator=generator, dtype=dtype, device=device)


def _reparameterise(mu, logvar, eps):
    """z = mu + sigma * eps on checked arguments (see :func:`reparameterise`)."""
    return mu + torch.exp(0.5 * logvar) * eps


def _bernoulli_log_likelihood(logits, x):
    """sum_j x_j l_j - softplus(l_j) on checked arguments (see :func:`bernoulli_log_likelihood`)."""
    return (x * logits - F.softplus(logits)).sum(-1)


def _std_normal_log_prob(z: torch.Tensor) -> torch.Tensor:
    """log N(z; 0, I) summed over the last dim."""
    return -0.5 * (z.pow(2) + _LOG_2PI).sum(-1)


# --------------------------------------------------------------------------- core maths
def reparameterise(
    mu: torch.Tensor,
    logvar: torch.Tensor,
    eps: torch.Tensor | None = None,
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""Sample :math:`z \sim \mathcal N(\mu, \mathrm{diag}\,\sigma^2)` as a differentiable function of (mu, logvar).

    :math:`z = \mu + \exp(\tfrac12 \log\sigma^2)\odot\epsilon`, :math:`\epsilon\sim\mathcal N(0, I)`
    (Kingma & Welling 2014, sec. 2.4). Because the randomness sits in ``eps``,
    :math:`\partial z/\partial\mu = 1` and :math:`\partial z/\partial\log\sigma^2 = \tfrac12\sigma\epsilon`,
    so gradients of any :math:`f(z)` flow back to the encoder.

    Args:
        mu, logvar: float tensors, shapes that broadcast (typically ``(N, d)``);
            ``logvar`` is the log **variance**.
        eps: optional standard-normal noise broadcastable with ``mu``; e.g.
            ``(S, N, d)`` gives S samples per example. Drawn with ``generator``
            in the broadcast shape of (mu, logvar) when ``None``.
        generator: optional ``torch.Generator`` for the noise.

    Returns:
        z: tensor of the broadcast shape, dtype/device of ``mu``.

    Raises:
        TypeError: non-tensor or non-float input. ValueError: NaN/Inf, shapes that do not broadcast.
    """
    check_floating("mu", mu)
    check_floating("logvar", logvar)
    shape = check_broadcastable(mu=mu, logvar=logvar)
    if eps is None:
        eps = _randn(shape, generator, mu.dtype, mu.device)
    else:
        check_floating("eps", eps)
        check_broadcastable(mu=mu, logvar=logvar, eps=eps)
    return _reparameterise(mu, logvar, eps)


def bernoulli_log_likelihood(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    r"""Bernoulli log-likelihood :math:`\sum_j x_j\log\pi_j + (1-x_j)\log(1-\pi_j)`, :math:`\pi=\mathrm{sigmoid}(\ell)`.

    Computed stably from logits as :math:`\sum_j x_j \ell_j - \mathrm{softplus}(\ell_j)`
    (because :math:`\log\mathrm{sigmoid}(\ell) = \ell - \mathrm{softplus}(\ell)` and
    :math:`\log(1-\mathrm{sigmoid}(\ell)) = -\mathrm{softplus}(\ell)`); this is minus
    ``binary_cross_entropy_with_logits`` summed over pixels (Kingma & Welling 2014, appendix C.1).

    Args:
        logits: float tensor ``(..., D)`` of decoder logits (e.g. ``(N, D)`` or ``(k, N, D)``).
        x: float tensor ``(..., D)`` broadcastable with ``logits``; values must be in
            [0, 1] (binary {0, 1} for a proper likelihood; fractional values give the
            cross-entropy used for grey-level data).

    Returns:
        Tensor of the broadcast batch shape (last dim summed out), nats, <= 0.

    Raises:
        TypeError: non-tensor or non-float input. ValueError: NaN/Inf, x outside [0, 1],
        different last dimensions, or shapes that do not broadcast.
    """
    check_floating("logits", logits)
    check_floating("x", x)
    check_probability("x", x)
    if logits.ndim == 0 or x.ndim == 0 or logits.shape[-1] != x.shape[-1]:
        raise ValueError(
            "logits and x must have the same last (pixel) dimension, got "
            f"logits {tuple(logits.shape)} and x {tuple(x.shape)}"
        )
    check_broadcastable(logits=logits, x=x)
    return _bernoulli_log_likelihood(logits, x)


def log_mean_exp(log_w: torch.Tensor, dim: int = 0) -> torch.Tensor:
    r"""Stable :math:`\log \frac1k \sum_i \exp(a_i)` along ``dim``: ``logsumexp(a, dim) - log k``.

    ``logsumexp`` subtracts the maximum before exponentiating, so log weights of
    magnitude 1e4 (which overflow/underflow a naive ``exp``) are handled exactly.

    Args:
        log_w: float tensor; ``-inf`` entries are allowed (zero weight).
        dim: dimension to reduce (size k >= 1).

    Returns:
        Tensor with ``dim`` removed, same dtype/device.

    Raises:
        TypeError: non-tensor or non-float input. ValueError: NaN or +inf entries,
        0-dimensional input, or an empty ``dim``.
    """
    check_log_values("log_w", log_w)
    if log_w.ndim == 0:
        raise ValueError("log_w must have at least one dimension to average over, got a scalar")
    k = log_w.shape[dim]
    if k < 1:
        raise ValueError(f"log_w has size 0 along dim {dim}; need k >= 1 samples")
    return torch.logsumexp(log_w, dim=dim) - math.log(k)


def iwae_from_log_weights(log_w: torch.Tensor) -> torch.Tensor:
    r"""IWAE estimate :math:`\log\frac1k\sum_{i=1}^k w_i` from log importance weights.

    :math:`\log w_i = \log p(x, z_i) - \log q(z_i|x)`, :math:`z_i \sim q(z|x)` i.i.d.
    (Burda et al. 2016, eq. 8). For k = 1 this is the single-sample ELBO estimate.

    Args:
        log_w: float tensor ``(k, N)``: k samples (dim 0) for each of N examples.

    Returns:
        Tensor ``(N,)`` in nats.

    Raises:
        TypeError/ValueError: not a float tensor, not 2-D, NaN or +inf entries.
    """
    check_tensor("log_w", log_w)
    check_shape("log_w", log_w, ("k", "N"))
    return log_mean_exp(log_w, dim=0)


# --------------------------------------------------------------------------- the VAE
class VAE(nn.Module):
    r"""VAE with a diagonal-Gaussian encoder and a Bernoulli decoder (Kingma & Welling 2014, appendix C).

    * prior :math:`p(z) = \mathcal N(0, I_d)`
    * encoder :math:`q_\phi(z|x) = \mathcal N(\mu_\phi(x), \mathrm{diag}\exp(\log\sigma^2_\phi(x)))`:
      a :class:`coursekit.nets.MLP` ``data_dim -> hidden -> 2*latent_dim`` split into (mu, logvar)
    * decoder :math:`p_\theta(x|z) = \prod_j \mathrm{Bernoulli}(x_j; \mathrm{sigmoid}(\ell_\theta(z)_j))`:
      a :class:`coursekit.nets.MLP` ``latent_dim -> hidden -> data_dim`` giving logits (for binarised pixels).

    Args:
        data_dim: number of pixels D (64 for 8x8 digits).
        latent_dim: d.
        hidden: hidden layer widths (SiLU activations), used by both encoder and decoder
            (the decoder uses them in the same order).

    Inputs ``x`` are float ``(N, D)``; image-shaped ``(N, 1, H, W)`` input is flattened.

    Raises:
        TypeError/ValueError on non-positive-integer sizes.
    """

    def __init__(self, data_dim: int = 64, latent_dim: int = 8, hidden=(256, 256)):
        super().__init__()
        self.data_dim = check_positive_int("data_dim", data_dim)
        self.latent_dim = check_positive_int("latent_dim", latent_dim)
        hidden = tuple(check_positive_int("hidden[i]", h) for h in hidden)
        self.hidden = hidden
        self.encoder = MLP(self.data_dim, 2 * self.latent_dim, hidden)
        self.decoder = MLP(self.latent_dim, self.data_dim, hidden)

    def _flat(self, x: torch.Tensor) -> torch.Tensor:
        check_tensor("x", x)
        if x.ndim > 2 and math.prod(x.shape[1:]) == self.data_dim:
            x = x.reshape(x.shape[0], self.data_dim)
        check_shape("x", x, ("N", self.data_dim))
        return x

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (N, D) float -> (mu, logvar), each (N, latent_dim) float; logvar is log variance."""
        x = self._flat(x)
        mu, logvar = self.encoder(x).chunk(2, dim=-1)
        return mu, logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z (..., latent_dim) -> Bernoulli logits (..., data_dim)."""
        check_tensor("z", z)
        if z.ndim == 0 or z.shape[-1] != self.latent_dim:
            raise ValueError(f"z must have shape (..., {self.latent_dim}), got {tuple(z.shape)}")
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (N, D) -> (logits (N, D), mu (N, d), logvar (N, d)) with one reparameterised z per example."""
        mu, logvar = self.encode(x)
        z = reparameterise(mu, logvar)
        return self.decode(z), mu, logvar

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw z ~ N(0, I) and return the decoder's Bernoulli **means** (probabilities), (n, data_dim) in [0, 1].

        Use ``torch.bernoulli(probs)`` for binary samples; the means are what is
        usually shown as images.
        """
        n = check_positive_int("n", n)
        p = next(self.parameters())
        z = _randn((n, self.latent_dim), generator, p.dtype, p.device)
        return torch.sigmoid(self.decode(z))


def elbo(
    model: VAE,
    x: torch.Tensor,
    beta: float = 1.0,
    n_samples: int = 1,
    *,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    r"""Monte Carlo ELBO of a Bernoulli-decoder VAE, per example.

    .. math::

        \mathcal L(x) = \underbrace{\mathbb E_{q(z|x)}[\log p(x|z)]}_{\texttt{rec}}
          - \underbrace{\mathrm{KL}(q(z|x)\,\|\,\mathcal N(0,I))}_{\texttt{kl}}
          \le \log p(x)

    (Kingma & Welling 2014, eq. 3 / eq. 10). ``rec`` is estimated with
    ``n_samples`` reparameterised samples per example (averaged); ``kl`` is the
    closed form of :func:`coursekit.divergences.gaussian_kl`.

    Args:
        model: any module with ``encode(x) -> (mu, logvar)`` and ``decode(z) -> logits``.
        x: float ``(N, D)`` in [0, 1] (binarised pixels for a true likelihood).
        beta: KL weight >= 0 for the beta-VAE objective (Higgins et al. 2017);
            it only changes ``objective``.
        n_samples: Monte Carlo samples of z per example (>= 1).
        generator: optional ``torch.Generator`` for the noise.

    Returns:
        dict of ``(N,)`` tensors in nats: ``elbo = rec - kl`` (always the beta = 1
        bound), ``rec``, ``kl``, and ``objective = rec - beta * kl``.

    Raises:
        TypeError/ValueError: bad shapes, x outside [0, 1], NaN, beta < 0, n_samples < 1.
    """
    beta = check_nonnegative_float("beta", beta)
    n_samples = check_positive_int("n_samples", n_samples)
    x = model._flat(x) if hasattr(model, "_flat") else x
    check_floating("x", x, finite=False)
    check_probability("x", x)  # also rejects NaN/Inf
    # Only x is checked: the encoder's and decoder's outputs are not read back from the device (in training, a
    # NaN there makes the loss NaN, which the training loop's guard reports).
    mu, logvar = model.encode(x)
    kl = gaussian_kl(mu, logvar, validate_args=False)
    eps = _randn((n_samples,) + tuple(mu.shape), generator, mu.dtype, mu.device)
    z = _reparameterise(mu, logvar, eps)  # (S, N, d)
    logits = model.decode(z)  # (S, N, D)
    if logits.shape[-1] != x.shape[-1]:
        raise ValueError(f"the decoder must return logits of shape (..., {x.shape[-1]}), got {tuple(logits.shape)}")
    rec = _bernoulli_log_likelihood(logits, x).mean(0)
    return {"elbo": rec - kl, "rec": rec, "kl": kl, "objective": rec - beta * kl}


def vae_loss(model: VAE, batch, beta: float = 1.0):
    """Loss for :func:`coursekit.train.fit`: mean negative beta-ELBO per example (nats).

    Args:
        model: a :class:`VAE`.
        batch: ``x`` (N, D) or a tuple/list whose first element is ``x`` (labels ignored).
        beta: KL weight >= 0.

    Returns:
        ``(loss, metrics)``: ``loss`` a scalar tensor ``-mean(rec - beta*kl)``;
        ``metrics`` a dict of detached 0-d tensors ``elbo``, ``rec``, ``kl`` (batch means, nats), left on the
        device so that :func:`coursekit.train.fit` reads them with the loss in one synchronisation.
    """
    x = batch[0] if isinstance(batch, (tuple, list)) else batch
    out = elbo(model, x, beta=beta)
    loss = -out["objective"].mean()
    metrics = {k: out[k].detach().mean() for k in ("elbo", "rec", "kl")}
    return loss, metrics


@torch.no_grad()
def iwae_bound(
    model: VAE,
    x: torch.Tensor,
    k: int,
    batch_size: int | None = None,
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""Importance-weighted bound :math:`\mathcal L_k(x) = \log\frac1k\sum_{i=1}^k \frac{p(x|z_i)p(z_i)}{q(z_i|x)}`,
    :math:`z_i\sim q(z|x)`.

    Burda, Grosse & Salakhutdinov (2016), eq. (8): an unbiased estimate of the
    bound, with :math:`\text{ELBO} = \mathcal L_1 \le \mathcal L_k \le \mathcal L_{k+1} \le \log p(x)`
    in expectation (their Theorem 1). Computed with ``logsumexp - log k``. For a
    diagonal Gaussian q written as :math:`z = \mu + \sigma\epsilon`,
    :math:`\log p(z) - \log q(z|x) = -\tfrac12\sum_j (z_j^2 - \epsilon_j^2 - \log\sigma_j^2)`.

    Evaluation only: runs under ``torch.no_grad()``.

    Args:
        model: module with ``encode``/``decode`` (Bernoulli logits), e.g. :class:`VAE`.
        x: float ``(N, D)`` in [0, 1].
        k: importance samples per example (>= 1).
        batch_size: examples per chunk; default keeps ``k * batch_size`` at most 65536
            decoder rows, bounding memory. (The random numbers drawn depend on it.)
        generator: optional ``torch.Generator`` for the noise.

    Returns:
        Tensor ``(N,)`` in nats.

    Raises:
        TypeError/ValueError: bad shapes, x outside [0, 1], NaN, k < 1, batch_size < 1.
    """
    k = check_positive_int("k", k)
    batch_size = max(1, 65536 // k) if batch_size is None else check_positive_int("batch_size", batch_size)
    x = model._flat(x) if hasattr(model, "_flat") else x
    check_floating("x", x)
    check_probability("x", x)
    out = []
    for start in range(0, x.shape[0], batch_size):
        xb = x[start : start + batch_size]
        mu, logvar = model.encode(xb)
        eps = _randn((k,) + tuple(mu.shape), generator, mu.dtype, mu.device)
        z = reparameterise(mu, logvar, eps)  # (k, n, d)
        log_px_z = bernoulli_log_likelihood(model.decode(z), xb)  # (k, n)
        log_pz_minus_log_qz = -0.5 * (z.pow(2) - eps.pow(2) - logvar).sum(-1)  # (k, n)
        out.append(log_mean_exp(log_px_z + log_pz_minus_log_qz, dim=0))
    return torch.cat(out)


# --------------------------------------------------------------------------- linear-Gaussian model
class LinearGaussianModel:
    r"""Linear-Gaussian latent variable model (probabilistic PCA; Tipping & Bishop 1999).

    :math:`p(z) = \mathcal N(0, I_d)`, :math:`p(x|z) = \mathcal N(Wz + b, \sigma^2 I_D)`.
    Everything is Gaussian, so the quantities a VAE can only bound are exact here:

    * marginal (T&B 1999 sec. 3; Bishop 2006, PRML eq. 12.35-12.36): :math:`p(x) = \mathcal N(x; b, C)`,
      :math:`C = WW^\top + \sigma^2 I_D`
      (since :math:`x = Wz + b + \sigma\varepsilon` is a sum of independent Gaussians).
    * posterior (T&B 1999 sec. 3; PRML eq. 12.42), by completing the square in
      :math:`\log p(x|z) + \log p(z) = -\tfrac1{2\sigma^2}\|x-b-Wz\|^2 - \tfrac12\|z\|^2 + c`):
      precision :math:`\Lambda = I_d + W^\top W/\sigma^2 = M/\sigma^2`,
      :math:`p(z|x) = \mathcal N\big(\Lambda^{-1}W^\top(x-b)/\sigma^2,\ \Lambda^{-1}\big)
      = \mathcal N\big(M^{-1}W^\top(x-b),\ \sigma^2 M^{-1}\big)`, :math:`M = W^\top W + \sigma^2 I_d`.
    * ELBO of a diagonal Gaussian :math:`q = \mathcal N(m, \mathrm{diag}\,s^2)`: see
      :meth:`elbo_closed_form`.

    Internally float64 (so identities hold to ~1e-10); results are returned in the
    dtype of ``x`` (``sample`` returns the dtype of ``W``), on ``x``'s device.

    Args:
        W: float tensor ``(D, d)``.
        b: float tensor ``(D,)``.
        sigma: observation noise standard deviation > 0 (float or 0-d tensor).

    Raises:
        TypeError/ValueError: wrong shapes, NaN/Inf, sigma <= 0.
    """

    def __init__(self, W: torch.Tensor, b: torch.Tensor, sigma):
        check_floating("W", W)
        check_shape("W", W, ("D", "d"))
        check_floating("b", b)
        check_shape("b", b, (W.shape[0],))
        if isinstance(sigma, torch.Tensor) and sigma.numel() != 1:
            raise ValueError(f"sigma must be a scalar, got shape {tuple(sigma.shape)}")
        sigma = check_positive_float("sigma", sigma)
        self.dtype = W.dtype
        self.W = W.detach().to(torch.float64)
        self.b = b.detach().to(device=W.device, dtype=torch.float64)
        self.sigma = float(sigma)
        self.data_dim, self.latent_dim = W.shape

    def __repr__(self) -> str:
        return f"LinearGaussianModel(data_dim={self.data_dim}, latent_dim={self.latent_dim}, sigma={self.sigma:.4g})"

    # -- internals
    def _params(self, device):
        return self.W.to(device), self.b.to(device)

    def _x(self, x: torch.Tensor) -> torch.Tensor:
        check_floating("x", x)
        check_shape("x", x, ("N", self.data_dim))
        return x.to(torch.float64)

    def _latent(self, name: str, t: torch.Tensor, n: int) -> torch.Tensor:
        check_floating(name, t)
        if t.ndim == 0 or t.shape[-1] != self.latent_dim:
            raise ValueError(f"{name} must have shape (..., {self.latent_dim}), got {tuple(t.shape)}")
        try:
            torch.broadcast_shapes(t.shape, (n, self.latent_dim))
        except RuntimeError:
            raise ValueError(
                f"{name} of shape {tuple(t.shape)} does not broadcast with (N, d) = ({n}, {self.latent_dim})"
            ) from None
        return t.to(torch.float64)

    def _precision_chol(self, device) -> torch.Tensor:
        W, _ = self._params(device)
        lam = torch.eye(self.latent_dim, dtype=torch.float64, device=device) + W.T @ W / self.sigma**2
        return torch.linalg.cholesky(lam)

    # -- exact quantities
    def marginal(self, device=None) -> torch.distributions.MultivariateNormal:
        """The exact marginal p(x) = N(b, W W^T + sigma^2 I) as a float64 ``MultivariateNormal``."""
        W, b = self._params(device if device is not None else self.W.device)
        cov = W @ W.T + self.sigma**2 * torch.eye(self.data_dim, dtype=torch.float64, device=W.device)
        return torch.distributions.MultivariateNormal(b, scale_tril=torch.linalg.cholesky(cov))

    def log_marginal(self, x: torch.Tensor) -> torch.Tensor:
        r"""Exact :math:`\log p(x) = \log\mathcal N(x; b, WW^\top + \sigma^2 I)`
        (Tipping & Bishop 1999, sec. 3; PRML eq. 12.35).

        Args: x float ``(N, D)``. Returns: ``(N,)`` nats, dtype of x.
        Raises: TypeError/ValueError on bad shape/dtype/NaN.
        """
        x64 = self._x(x)
        return self.marginal(x.device).log_prob(x64).to(x.dtype)

    def posterior(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r"""Exact posterior :math:`p(z|x) = \mathcal N(M^{-1}W^\top(x-b),\ \sigma^2 M^{-1})`,
        :math:`M = W^\top W + \sigma^2 I`.

        Tipping & Bishop (1999), sec. 3; PRML eq. (12.42); derivation in the class docstring.
        Computed as mean :math:`\Lambda^{-1}W^\top(x-b)/\sigma^2`, covariance :math:`\Lambda^{-1}`
        with :math:`\Lambda = I + W^\top W/\sigma^2` via a Cholesky factor.

        Args: x float ``(N, D)``.
        Returns: ``(mean (N, d), cov (d, d))`` in the dtype of x (the covariance does not depend on x).
        """
        x64 = self._x(x)
        W, b = self._params(x.device)
        L = self._precision_chol(x.device)
        rhs = W.T @ (x64 - b).T / self.sigma**2  # (d, N)
        mean = torch.cholesky_solve(rhs, L).T
        cov = torch.cholesky_inverse(L)
        return mean.to(x.dtype), cov.to(x.dtype)

    def log_joint(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        r""":math:`\log p(x, z) = \log\mathcal N(x; Wz+b, \sigma^2 I) + \log\mathcal N(z; 0, I)`.

        Args: x float ``(N, D)``; z float ``(..., N, d)`` (e.g. ``(k, N, d)``), broadcast against x.
        Returns: ``(..., N)`` nats, dtype of x.
        """
        x64 = self._x(x)
        z64 = self._latent("z", z, x.shape[0])
        W, b = self._params(x.device)
        resid = x64 - (z64 @ W.T + b)
        log_px_z = -0.5 * (resid.pow(2).sum(-1) / self.sigma**2 + self.data_dim * (_LOG_2PI + 2 * math.log(self.sigma)))
        return (log_px_z + _std_normal_log_prob(z64)).to(x.dtype)

    def elbo_closed_form(self, x: torch.Tensor, q_mu: torch.Tensor, q_logvar: torch.Tensor) -> torch.Tensor:
        r"""Exact ELBO of :math:`q(z) = \mathcal N(m, \mathrm{diag}\,s^2)` (no Monte Carlo).

        With :math:`r = x - b - Wm` and :math:`\mathbb E_q[zz^\top] = mm^\top + \mathrm{diag}\,s^2`:

        .. math::

            \mathbb E_q[\log p(x|z)] &= -\tfrac D2\log(2\pi\sigma^2)
                - \tfrac1{2\sigma^2}\big(\|r\|^2 + \textstyle\sum_j s_j^2\|W_{:,j}\|^2\big)
                && (\mathbb E\|x-b-Wz\|^2 = \|r\|^2 + \mathrm{tr}(W\,\mathrm{diag}(s^2)W^\top))\\
            \mathbb E_q[\log p(z)] &= -\tfrac d2\log 2\pi - \tfrac12\big(\|m\|^2 + \textstyle\sum_j s_j^2\big)\\
            H[q] &= \tfrac d2(1 + \log 2\pi) + \tfrac12\textstyle\sum_j\log s_j^2\\
            \mathrm{ELBO} &= \mathbb E_q[\log p(x|z)] + \mathbb E_q[\log p(z)] + H[q] \le \log p(x),

        with equality iff q is the exact posterior (possible only when that posterior's
        covariance is diagonal). The gap equals :math:`\mathrm{KL}(q\,\|\,p(z|x))`.

        Args:
            x: float ``(N, D)``.
            q_mu: float ``(N, d)`` (or broadcastable, e.g. ``(d,)``).
            q_logvar: float ``(N, d)`` or broadcastable; log variances.

        Returns: ``(N,)`` nats, dtype of x.
        """
        x64 = self._x(x)
        n = x.shape[0]
        m = self._latent("q_mu", q_mu, n)
        lv = self._latent("q_logvar", q_logvar, n)
        W, b = self._params(x.device)
        s2 = torch.exp(lv).expand(n, self.latent_dim)
        m = m.expand(n, self.latent_dim)
        lv = lv.expand(n, self.latent_dim)
        r = x64 - b - m @ W.T
        col_norms = W.pow(2).sum(0)  # ||W_{:,j}||^2, (d,)
        e_log_px_z = -0.5 * self.data_dim * (_LOG_2PI + 2 * math.log(self.sigma)) - 0.5 / self.sigma**2 * (
            r.pow(2).sum(-1) + (s2 * col_norms).sum(-1)
        )
        e_log_pz = -0.5 * self.latent_dim * _LOG_2PI - 0.5 * (m.pow(2).sum(-1) + s2.sum(-1))
        entropy = 0.5 * self.latent_dim * (1 + _LOG_2PI) + 0.5 * lv.sum(-1)
        return (e_log_px_z + e_log_pz + entropy).to(x.dtype)

    def iwae(
        self,
        x: torch.Tensor,
        q_mu: torch.Tensor,
        q_logvar: torch.Tensor,
        k: int,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        r"""Monte Carlo IWAE estimate :math:`\log\frac1k\sum_i p(x,z_i)/q(z_i)`,
        :math:`z_i\sim\mathcal N(m,\mathrm{diag}\,s^2)`.

        Burda et al. (2016), eq. (8). ``k = 1`` is an unbiased estimate of
        :meth:`elbo_closed_form`; as k grows the expectation increases to ``log_marginal``.

        Args:
            x: float ``(N, D)``; q_mu, q_logvar: ``(N, d)`` or broadcastable; k >= 1;
            generator: optional ``torch.Generator`` (CPU generator for CPU tensors).

        Returns: ``(N,)`` nats, dtype of x.
        """
        k = check_positive_int("k", k)
        n = x.shape[0] if isinstance(x, torch.Tensor) and x.ndim == 2 else 0
        x64 = self._x(x)
        m = self._latent("q_mu", q_mu, n)
        lv = self._latent("q_logvar", q_logvar, n)
        eps = _randn((k, n, self.latent_dim), generator, torch.float64, x.device)
        z = m + torch.exp(0.5 * lv) * eps
        log_q = -0.5 * (eps.pow(2) + lv + _LOG_2PI).sum(-1)
        log_w = self.log_joint(x64, z) - log_q
        return log_mean_exp(log_w, dim=0).to(x.dtype)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Ancestral sample x = W z + b + sigma * eps, z ~ N(0, I): returns ``(n, D)`` in the dtype of W."""
        n = check_positive_int("n", n)
        W, b = self._params(self.W.device)
        z = _randn((n, self.latent_dim), generator, torch.float64, W.device)
        noise = _randn((n, self.data_dim), generator, torch.float64, W.device)
        return (z @ W.T + b + self.sigma * noise).to(self.dtype)

    @classmethod
    def fit(cls, x: torch.Tensor, latent_dim: int) -> LinearGaussianModel:
        r"""Maximum-likelihood PPCA fit in closed form (Tipping & Bishop 1999, sec. 3).

        With sample mean :math:`\bar x` and covariance eigen-decomposition
        :math:`S = U\Lambda U^\top` (eigenvalues descending):
        :math:`b = \bar x`, :math:`\sigma^2 = \frac1{D-d}\sum_{j>d}\lambda_j`,
        :math:`W = U_d(\Lambda_d - \sigma^2 I)^{1/2}` (rotation R = I).

        Args: x float ``(N, D)`` with N >= 2; latent_dim d with 1 <= d < D.
        Returns: a fitted model (W dtype = x dtype).
        Raises: ValueError if d >= D or the discarded variance is 0 (sigma would be 0).
        """
        check_floating("x", x)
        check_shape("x", x, ("N", "D"))
        d = check_positive_int("latent_dim", latent_dim)
        n, D = x.shape
        if d >= D:
            raise ValueError(f"latent_dim must be < data dimension {D}, got {d}")
        if n < 2:
            raise ValueError(f"need at least 2 examples to fit, got {n}")
        x64 = x.detach().to(torch.float64)
        b = x64.mean(0)
        S = (x64 - b).T @ (x64 - b) / n  # ML covariance
        evals, evecs = torch.linalg.eigh(S)
        evals, evecs = evals.flip(0).clamp_min(0), evecs.flip(1)
        sigma2 = float(evals[d:].mean())
        if sigma2 <= 0:
            raise ValueError("the data has no variance outside the top latent_dim directions; sigma would be 0")
        W = evecs[:, :d] * (evals[:d] - sigma2).clamp_min(0).sqrt()
        return cls(W.to(x.dtype), b.to(x.dtype), math.sqrt(sigma2))


# --------------------------------------------------------------------------- gradient estimators
def _scalar_param(name: str, v, positive: bool = False) -> torch.Tensor:
    if isinstance(v, torch.Tensor):
        if v.numel() != 1:
            raise ValueError(f"{name} must be a scalar, got shape {tuple(v.shape)}")
        t = v.detach().reshape(())
        if not t.is_floating_point():
            t = t.to(torch.get_default_dtype())
    elif isinstance(v, numbers.Real) and not isinstance(v, bool):
        t = torch.tensor(float(v), dtype=torch.get_default_dtype())
    else:
        raise TypeError(f"{name} must be a real number or a 1-element tensor, got {type(v).__name__}")
    return check_all_positive(name, t) if positive else check_finite(name, t)


def _eval_f(f: Callable, z: torch.Tensor) -> torch.Tensor:
    fz = f(z)
    if not isinstance(fz, torch.Tensor) or fz.shape != z.shape:
        got = tuple(fz.shape) if isinstance(fz, torch.Tensor) else type(fz).__name__
        raise ValueError(f"f must map a tensor of shape {tuple(z.shape)} elementwise to the same shape, got {got}")
    return fz


def reparam_gradient_samples(
    f: Callable[[torch.Tensor], torch.Tensor],
    mu,
    sigma,
    n: int,
    *,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""Per-sample reparameterisation (pathwise) estimates of
    :math:`\frac{d}{d\mu}\mathbb E_{z\sim\mathcal N(\mu,\sigma^2)}[f(z)]`.

    With :math:`z = \mu + \sigma\epsilon`:
    :math:`\frac{d}{d\mu}\mathbb E[f(z)] = \mathbb E_\epsilon[f'(\mu+\sigma\epsilon)]` (Kingma & Welling 2014,
    sec. 2.4); each sample is :math:`f'(z_i)`, computed by autograd.

    Args:
        f: differentiable elementwise function, tensor (n,) -> tensor (n,).
        mu: real number or 1-element tensor; sigma: real > 0 or 1-element tensor.
        n: number of samples >= 1. generator: optional ``torch.Generator``.

    Returns:
        Tensor ``(n,)`` of i.i.d. unbiased estimates (dtype of mu, or the default dtype);
        their mean estimates the gradient, their variance is the estimator's variance.

    Raises:
        TypeError/ValueError: non-scalar mu/sigma, sigma <= 0, n < 1, f not elementwise.
    """
    mu_t = _scalar_param("mu", mu)
    sigma_t = _scalar_param("sigma", sigma, positive=True).to(mu_t.dtype)
    n = check_positive_int("n", n)
    eps = _randn((n,), generator, mu_t.dtype, mu_t.device)
    with torch.enable_grad():
        mu_rep = mu_t.expand(n).clone().requires_grad_(True)  # one copy of mu per sample
        fz = _eval_f(f, mu_rep + sigma_t * eps)
        (grad,) = torch.autograd.grad(fz.sum(), mu_rep)  # d f(z_i) / d mu_i = f'(z_i)
    return grad.detach()


def score_function_gradient_samples(
    f: Callable[[torch.Tensor], torch.Tensor],
    mu,
    sigma,
    n: int,
    *,
    baseline: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    r"""Per-sample score-function (REINFORCE) estimates of
    :math:`\frac{d}{d\mu}\mathbb E_{z\sim\mathcal N(\mu,\sigma^2)}[f(z)]`.

    :math:`\nabla_\mu\mathbb E_p[f] = \mathbb E_p[f(z)\,\nabla_\mu\log p(z)]` (Williams 1992, REINFORCE;
    the log-derivative trick), with :math:`\nabla_\mu\log\mathcal N(z;\mu,\sigma^2) = (z-\mu)/\sigma^2`.
    Each sample is :math:`(f(z_i) - c)(z_i-\mu)/\sigma^2`; subtracting a constant baseline c
    keeps it unbiased because :math:`\mathbb E[(z-\mu)/\sigma^2] = 0`. f need not be differentiable.

    Args:
        f: elementwise function, tensor (n,) -> tensor (n,).
        mu: real number or 1-element tensor; sigma: real > 0 or 1-element tensor.
        n: number of samples >= 1. baseline: constant c. generator: optional ``torch.Generator``.

    Returns:
        Tensor ``(n,)`` of i.i.d. unbiased estimates (dtype of mu, or the default dtype).

    Raises:
        TypeError/ValueError: non-scalar mu/sigma, sigma <= 0, n < 1, f not elementwise.
    """
    mu_t = _scalar_param("mu", mu)
    sigma_t = _scalar_param("sigma", sigma, positive=True).to(mu_t.dtype)
    c = float(_scalar_param("baseline", baseline))
    n = check_positive_int("n", n)
    eps = _randn((n,), generator, mu_t.dtype, mu_t.device)
    z = mu_t + sigma_t * eps
    with torch.no_grad():
        fz = _eval_f(f, z)
    return ((fz - c) * (z - mu_t) / sigma_t**2).detach()


# --------------------------------------------------------------------------- independent-pixel baseline
def fit_independent_bernoulli(x_train: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    r"""Laplace-smoothed maximum-likelihood pixel probabilities
    :math:`\hat p_j = (\sum_n x_{nj} + \alpha)/(N + 2\alpha)`.

    The MLE of independent Bernoullis is the pixel mean; ``alpha`` pseudo-counts of
    each outcome (add-alpha / Laplace smoothing, alpha = 1) keep the probabilities
    away from 0 and 1 so that unseen test pixels get finite log-probability.

    Args: x_train float ``(N, D)`` in [0, 1]; alpha >= 0.
    Returns: probs ``(D,)``, dtype of x_train, in (0, 1) when alpha > 0.
    Raises: TypeError/ValueError on bad shape, values outside [0, 1], NaN, alpha < 0.
    """
    check_floating("x_train", x_train)
    check_shape("x_train", x_train, ("N", "D"))
    check_probability("x_train", x_train)
    alpha = check_nonnegative_float("alpha", alpha)
    n = x_train.shape[0]
    if n == 0 and alpha == 0:
        raise ValueError("x_train is empty and alpha = 0: the probabilities are undefined")
    return (x_train.sum(0) + alpha) / (n + 2 * alpha)


def independent_bernoulli_log_prob(x: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    r""":math:`\log p(x) = \sum_j x_j\log p_j + (1 - x_j)\log(1 - p_j)` for independent pixels.

    Uses ``xlogy`` so that :math:`0\log 0 = 0` (probabilities of exactly 0 or 1 give
    ``-inf`` only where the data disagree).

    Args: x float ``(N, D)`` in [0, 1]; probs float ``(D,)`` in [0, 1].
    Returns: ``(N,)`` nats.
    Raises: TypeError/ValueError on bad shapes or values outside [0, 1].
    """
    check_floating("x", x)
    check_shape("x", x, ("N", "D"))
    check_probability("x", x)
    check_floating("probs", probs)
    check_shape("probs", probs, (x.shape[1],))
    check_probability("probs", probs)
    return (torch.xlogy(x, probs) + torch.xlogy(1 - x, 1 - probs)).sum(-1)


# --------------------------------------------------------------------------- posterior collapse and its remedies
#: Burda, Grosse & Salakhutdinov (2016), "Importance weighted autoencoders": a latent unit u is *active*
#: when its activity
#: :math:`A_u = \operatorname{Cov}_x(\mathbb E_{q(u \mid x)}[u])` exceeds this threshold.
ACTIVE_UNIT_THRESHOLD = 1e-2


def kl_per_dimension(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    r"""Per-dimension KL terms :math:`\mathrm{KL}(\mathcal N(\mu_j, \sigma_j^2) \,\|\, \mathcal N(0, 1))`, nats.

    :math:`\tfrac12(\mu_j^2 + \sigma_j^2 - \log\sigma_j^2 - 1)` for each example and latent dimension; the sum over
    the last dimension is the KL term (rate) of the ELBO (Kingma & Welling 2014, appendix B). The mean over
    the examples of a data set is the *KL per dimension*: how many nats each latent coordinate carries.

    Args:
        mu, logvar: float tensors of the same shape ``(..., d)`` (the encoder's outputs; log *variance*).

    Returns:
        Tensor of the same shape ``(..., d)``, nats, >= 0.

    Raises:
        TypeError: non-tensor or non-float input. ValueError: NaN/Inf or different shapes.
    """
    check_floating("mu", mu)
    check_floating("logvar", logvar)
    if mu.shape != logvar.shape:
        raise ValueError(f"mu and logvar must have the same shape, got {tuple(mu.shape)} and {tuple(logvar.shape)}")
    return gaussian_kl(mu.unsqueeze(-1), logvar.unsqueeze(-1))


def latent_activity(mu: torch.Tensor) -> torch.Tensor:
    r"""Activity of each latent unit, :math:`A_u = \operatorname{Var}_x\big(\mathbb E_{q(z_u \mid x)}[z_u]\big)`.

    Burda, Grosse & Salakhutdinov (2016), "active units": a unit whose posterior mean does not vary across the data
    carries no information about x (its posterior is the same for every image); it counts as *active* when
    :math:`A_u >` :data:`ACTIVE_UNIT_THRESHOLD`. A collapsed unit has :math:`A_u \approx 0`.

    Args:
        mu: float ``(N, d)``, the encoder means :math:`\mu_\phi(x_n)` of N >= 2 data points.

    Returns:
        ``(d,)`` tensor: the (unbiased, N - 1) sample variance of each column of ``mu``.

    Raises:
        TypeError: non-float input. ValueError: not 2-D, fewer than 2 rows, NaN/Inf.
    """
    check_floating("mu", mu)
    check_shape("mu", mu, ("N", "d"))
    if mu.shape[0] < 2:
        raise ValueError(f"mu needs at least 2 rows (data points) to have a variance, got shape {tuple(mu.shape)}")
    return mu.var(0, unbiased=True)


def kl_warmup_beta(step: int, warmup_steps: int) -> float:
    r"""KL warm-up (annealing) schedule :math:`\beta_t = \min(1, t / T)`.

    The KL weight rises linearly from 0 at step 0 to 1 at ``warmup_steps`` and stays there, so the encoder
    first learns to carry information and only then pays the full rate (Bowman et al. 2016, "KL cost
    annealing"; Sonderby et al. 2016, "warm-up"). Training with it optimises the ELBO only after the warm-up.

    Args:
        step: completed steps t >= 0. warmup_steps: T >= 1.

    Returns:
        beta in [0, 1] (python float).

    Raises:
        TypeError / ValueError: non-integer arguments, step < 0 or warmup_steps < 1.
    """
    step = check_nonnegative_int("step", step)
    warmup_steps = check_positive_int("warmup_steps", warmup_steps)
    return min(1.0, step / warmup_steps)


def free_bits_kl(kl_dims: torch.Tensor, free_bits: float) -> torch.Tensor:
    r"""The free-bits KL term :math:`\sum_j \max\big(\lambda, \tfrac1N \sum_n \mathrm{KL}_{nj}\big)`, nats.

    Kingma et al. (2016), "Improved variational inference with inverse autoregressive flow" (the "free bits"
    objective, with one group per latent dimension): each dimension's KL, averaged over the minibatch, is
    charged only above :math:`\lambda` nats. Below it the term is the constant :math:`\lambda` and its gradient is
    0, so the optimiser has no reason to switch the dimension off. Since :math:`\max(\lambda, a) \ge a`, the
    objective :math:`\mathrm{rec} - \sum_j \max(\lambda, \overline{\mathrm{KL}}_j)` is still <= the mean ELBO.

    Args:
        kl_dims: float ``(N, d)``, per-example and per-dimension KL terms (:func:`kl_per_dimension`), >= 0.
        free_bits: lambda >= 0, nats per dimension (0 gives the ordinary KL term, averaged over the batch).

    Returns:
        0-dim tensor, nats (per example).

    Raises:
        TypeError: non-float input. ValueError: not 2-D, empty, NaN/Inf, negative entries or free_bits < 0.
    """
    check_floating("kl_dims", kl_dims)
    check_shape("kl_dims", kl_dims, ("N", "d"))
    check_nonempty("kl_dims", kl_dims)
    if (kl_dims < 0).any():
        raise ValueError("kl_dims must be KL terms, >= 0; got a negative entry (pass KL, not -KL or log-variances)")
    free_bits = check_nonnegative_float("free_bits", free_bits)
    return kl_dims.mean(0).clamp_min(free_bits).sum()


def free_bits_loss(model: VAE, batch, free_bits: float):
    """Loss for :func:`coursekit.train.fit`: the negative free-bits objective of :func:`free_bits_kl` (nats).

    ``-(mean rec - sum_j max(free_bits, mean KL_j))`` with one reparameterised sample per example; the metrics
    report the ordinary (beta = 1) ELBO terms, so the logged ``elbo`` stays comparable with :func:`vae_loss`.

    Args:
        model: a :class:`VAE`. batch: ``x`` (N, D) in [0, 1], or a tuple whose first element is ``x``.
        free_bits: lambda >= 0, nats per latent dimension.

    Returns:
        ``(loss, metrics)``: a scalar tensor and a dict of python floats ``elbo``, ``rec``, ``kl`` (batch means).

    Raises:
        TypeError / ValueError: bad input (see :func:`elbo`, :func:`free_bits_kl`).
    """
    x = batch[0] if isinstance(batch, (tuple, list)) else batch
    x = model._flat(x) if hasattr(model, "_flat") else x
    check_floating("x", x)
    check_probability("x", x)
    mu, logvar = model.encode(x)
    kl_dims = kl_per_dimension(mu, logvar)  # (N, d)
    rec = bernoulli_log_likelihood(model.decode(reparameterise(mu, logvar)), x)  # (N,)
    loss = -(rec.mean() - free_bits_kl(kl_dims, free_bits))
    kl = kl_dims.sum(-1)
    metrics = {"elbo": float((rec - kl).detach().mean()), "rec": float(rec.detach().mean()),
               "kl": float(kl.detach().mean())}
    return loss, metrics
