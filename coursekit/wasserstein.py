r"""Beyond Jensen-Shannon (chapter 07): f-divergences, Wasserstein-1, WGAN, MMD and the semi-supervised critic.

Chapter 06 trains a GAN whose optimal discriminator makes the generator minimise a Jensen-Shannon divergence.
This module holds what chapter 07 puts in its place:

* **f-divergences** (Csiszar 1967; Ali & Silvey 1966): :math:`D_f(P\|Q) = \mathbb E_Q[f(p/q)]` for a convex
  :math:`f` with :math:`f(1) = 0`. Each entry of :data:`F_DIVERGENCES` carries f, its derivative f', its convex
  conjugate :math:`f^*(t) = \sup_u (tu - f(u))`, the domain of :math:`f^*` and the output activation g that maps
  a real number onto that domain (Nowozin, Cseke & Tomioka 2016, "f-GAN", Table 2, here re-derived in the
  docstring of :class:`FDivergence` and checked numerically in the tests). "js" is the Jensen-Shannon
  divergence itself (f halved relative to Nowozin's table, so :math:`D_f = \mathrm{JS} \in [0, \log 2]`);
  "gan" is Goodfellow's f, :math:`D_f = 2\,\mathrm{JS} - \log 4`. The variational bound
  (:func:`f_variational_bound`) and the f-GAN losses (:func:`f_gan_value`) follow from Fenchel's inequality.
* the **density-ratio trick** (:func:`density_ratio_from_logits`);
* **Wasserstein-1**: exactly in 1-D (:func:`wasserstein1_1d`), and through its Kantorovich-Rubinstein dual as
  the WGAN critic and generator losses, with the gradient penalty (WGAN-GP) or weight clipping (WGAN) to keep
  the critic (close to) 1-Lipschitz;
* the **maximum mean discrepancy** with Gaussian kernels (:func:`mmd2_unbiased`, the one Gaussian-kernel
  MMD^2 of the course, with :func:`gaussian_kernel_matrix` and :func:`median_bandwidths`);
* the **semi-supervised (C+1)-way critic** and feature matching (Salimans et al. 2016), and
  :class:`MLPGenerator`, the fully connected generator of the chapter's digit experiments.

Conventions: critic outputs (scores, logits) have shape ``(N,)`` or ``(N, 1)``; losses are 0-dim tensors.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from ._validate import (
    check_finite,
    check_points,
    check_positive_float,
    check_probability_vectors,
    check_scores,
)
from .nets import MLP

__all__ = [
    # f-divergences and their variational bounds
    "FDivergence",
    "F_DIVERGENCES",
    "f_divergence",
    "f_variational_bound",
    "density_ratio_from_logits",
    "f_gan_value",
    "f_gan_discriminator_loss",
    "f_gan_generator_loss",
    # Wasserstein-1 and the WGAN
    "wasserstein1_1d",
    "wasserstein_critic_loss",
    "wasserstein_generator_loss",
    "gradient_penalty",
    "clip_weights",
    # maximum mean discrepancy
    "gaussian_kernel_matrix",
    "median_bandwidths",
    "mmd2_unbiased",
    "mmd2_biased",
    # semi-supervised GAN
    "ssgan_real_logit",
    "ssgan_discriminator_loss",
    "feature_matching_loss",
    "MLPGenerator",
]


@dataclass(frozen=True)
class FDivergence:
    r"""One f-divergence :math:`D_f(P\|Q) = \mathbb E_Q[f(p/q)]` with everything the variational bound needs.

    Attributes:
        name: key in :data:`F_DIVERGENCES`.
        f: the generator, convex on ``[0, inf)`` with ``f(1) = 0`` (tensor -> tensor; ``f(0)`` by continuity).
        f_prime: its derivative (a subgradient for "tv"); ``T*(x) = f'(p(x)/q(x))`` attains the bound.
        conjugate: :math:`f^*(t) = \sup_{u \ge 0} (tu - f(u))`, finite on ``domain``.
        domain: ``(lo, hi)``, the open interval where the conjugate is finite ("tv": the closed one).
        activation: ``g(v)``, a map from the reals onto ``domain`` (Nowozin et al. 2016, Table 2).
        slope_at_infinity: :math:`\lim_{u\to\infty} f(u)/u`, the contribution per unit of P mass where q = 0.

    Conjugates (set the derivative of :math:`tu - f(u)` to zero, :math:`t = f'(u)`, solve for u, substitute):

    * KL, :math:`f = u\log u`: :math:`u = e^{t-1}`, :math:`f^* = e^{t-1}`.
    * reverse KL, :math:`f = -\log u`: :math:`u = -1/t` (t < 0), :math:`f^* = -1 - \log(-t)`.
    * Pearson :math:`\chi^2`, :math:`f = (u-1)^2`: :math:`u = 1 + t/2`, :math:`f^* = t + t^2/4`
      (for :math:`t \ge -2`; the sup over :math:`u \ge 0` is :math:`-1` below, which the tests check).
    * squared Hellinger, :math:`f = (\sqrt u - 1)^2`: :math:`u = (1-t)^{-2}` (t < 1), :math:`f^* = t/(1-t)`.
    * JS, :math:`f = \tfrac12[u\log u - (u+1)\log\tfrac{u+1}2]`: :math:`e^{2t} = 2u/(u+1)`,
      :math:`f^* = -\tfrac12\log(2 - e^{2t})` (t < log(2)/2).
    * GAN, :math:`f = u\log u - (u+1)\log(u+1)`: :math:`e^t = u/(u+1)`, :math:`f^* = -\log(1 - e^t)` (t < 0).
    * TV, :math:`f = \tfrac12|u-1|`: :math:`f^* = t` on :math:`|t| \le \tfrac12` (over :math:`u \ge 0` the
      supremum is :math:`-\tfrac12` for :math:`t < -\tfrac12` and :math:`+\infty` for :math:`t > \tfrac12`; critics are
      kept in :math:`[-\tfrac12, \tfrac12]`).
    """

    name: str
    f: Callable
    f_prime: Callable
    conjugate: Callable
    domain: tuple
    activation: Callable
    slope_at_infinity: float


def _softplus(v):
    return torch.nn.functional.softplus(v)


F_DIVERGENCES: dict[str, FDivergence] = {
    d.name: d
    for d in [
        FDivergence("kl", lambda u: torch.xlogy(u, u), lambda u: torch.log(u) + 1,
                    lambda t: torch.exp(t - 1), (-math.inf, math.inf), lambda v: v, math.inf),
        FDivergence("reverse_kl", lambda u: -torch.log(u), lambda u: -1 / u,
                    lambda t: -1 - torch.log(-t), (-math.inf, 0.0), lambda v: -torch.exp(v), 0.0),
        FDivergence("pearson", lambda u: (u - 1) ** 2, lambda u: 2 * (u - 1),
                    lambda t: torch.where(t >= -2, t + t * t / 4, -torch.ones_like(t)),
                    (-math.inf, math.inf), lambda v: v, math.inf),
        FDivergence("hellinger", lambda u: (torch.sqrt(u) - 1) ** 2, lambda u: 1 - 1 / torch.sqrt(u),
                    lambda t: t / (1 - t), (-math.inf, 1.0), lambda v: 1 - torch.exp(v), 1.0),
        FDivergence("js", lambda u: 0.5 * (torch.xlogy(u, u) - torch.xlogy(u + 1, (u + 1) / 2)),
                    lambda u: 0.5 * torch.log(2 * u / (u + 1)),
                    lambda t: -0.5 * torch.log(2 - torch.exp(2 * t)), (-math.inf, 0.5 * math.log(2)),
                    lambda v: 0.5 * (math.log(2) - _softplus(-v)), 0.5 * math.log(2)),
        FDivergence("gan", lambda u: torch.xlogy(u, u) - torch.xlogy(u + 1, u + 1),
                    lambda u: torch.log(u / (u + 1)),
                    lambda t: -torch.log(-torch.expm1(t)), (-math.inf, 0.0), lambda v: -_softplus(-v), 0.0),
        FDivergence("tv", lambda u: 0.5 * (u - 1).abs(), lambda u: 0.5 * torch.sign(u - 1),
                    lambda t: t, (-0.5, 0.5), lambda v: 0.5 * torch.tanh(v), 0.5),
    ]
}


def _get_f(name) -> FDivergence:
    if isinstance(name, FDivergence):
        return name
    if name not in F_DIVERGENCES:
        raise ValueError(f"unknown f-divergence {name!r}; expected one of {sorted(F_DIVERGENCES)}")
    return F_DIVERGENCES[name]


def f_divergence(p: torch.Tensor, q: torch.Tensor, name: str = "kl") -> torch.Tensor:
    r"""f-divergence :math:`D_f(P\|Q) = \sum_k q_k f(p_k / q_k)` of probability vectors, nats.

    Conventions at the boundary (limits of the summand): where ``q_k = 0 < p_k`` the term is
    ``p_k * slope_at_infinity`` (``inf`` for "kl" and "pearson"); where ``p_k = 0 < q_k`` it is ``q_k f(0)``
    ("reverse_kl": ``inf``); where both are 0 it is 0. Csiszar (1967); Nowozin et al. (2016), eq. (1).

    Args:
        p, q: non-negative tensors (..., K) summing to 1 over the last dim (tolerance
            :data:`PROBABILITY_SUM_ATOL`, 1e-8 for float64), broadcastable.
        name: a key of :data:`F_DIVERGENCES`.

    Returns:
        tensor (...), nats (``inf`` where the divergence is infinite).

    Raises:
        TypeError, ValueError: not floating point, negative, not normalised, NaN, unknown name.
    """
    fd = _get_f(name)
    check_probability_vectors(p=p, q=q)
    p, q = torch.broadcast_tensors(p, q)
    both = (p > 0) & (q > 0)
    safe_q = torch.where(both, q, torch.ones_like(q))
    safe_u = torch.where(both, p / safe_q, torch.ones_like(p))
    term = torch.where(both, q * fd.f(safe_u), torch.zeros_like(p))
    only_p = (p > 0) & (q == 0)
    only_q = (p == 0) & (q > 0)
    if bool(only_p.any()):
        term = torch.where(only_p, p * fd.slope_at_infinity, term)
    if bool(only_q.any()):
        f0 = fd.f(torch.zeros((), dtype=p.dtype)).item() if fd.name != "reverse_kl" else math.inf
        term = torch.where(only_q, q * f0, term)
    return term.sum(-1)


def f_variational_bound(t: torch.Tensor, p: torch.Tensor, q: torch.Tensor, name: str = "kl") -> torch.Tensor:
    r"""The variational lower bound :math:`\sum_k p_k t_k - \sum_k q_k f^*(t_k) \le D_f(P\|Q)` for discrete P, Q.

    For every function (vector) ``t`` with values in the domain of :math:`f^*`, Fenchel's inequality
    :math:`f(u) \ge tu - f^*(t)` gives the bound (Nguyen, Wainwright & Jordan 2010, eq. (4); Nowozin et al.
    2016, eq. (4)); it is an equality at :math:`t_k = f'(p_k/q_k)`.

    Args:
        t: critic values (..., K) in the domain of the conjugate. p, q: probability vectors (..., K).
        name: a key of :data:`F_DIVERGENCES`.

    Returns:
        tensor (...), nats.

    Raises:
        ValueError: bad p, q (see :func:`f_divergence`), NaN in t, or t outside the conjugate's domain.
    """
    fd = _get_f(name)
    check_probability_vectors(p=p, q=q)
    check_finite("t", t)
    lo, hi = fd.domain
    closed = fd.name == "tv"
    outside = (t < lo) | (t > hi) if closed else (t <= lo) | (t >= hi)
    if bool(outside.any()):
        raise ValueError(f"t must lie in the domain {fd.domain} of the conjugate of {fd.name!r}; "
                         f"map a real critic output v with F_DIVERGENCES[{fd.name!r}].activation(v)")
    return (p * t).sum(-1) - (q * fd.conjugate(t)).sum(-1)


def wasserstein1_1d(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    r"""Wasserstein-1 distance between two 1-D empirical distributions, by the CDF formula.

    .. math::

        W_1(P, Q) = \int_{-\infty}^{\infty} \lvert F_P(s) - F_Q(s) \rvert \, ds

    (Vallender 1974; in 1-D the optimal coupling is monotone, so :math:`W_1` is the area between the two
    distribution functions). Computed exactly on the merged sorted sample; it equals
    ``scipy.stats.wasserstein_distance`` and, for equal sizes, ``mean(|sort(x) - sort(y)|)``. Differentiable
    with respect to the sample values (a.e.), so autograd gives the gradient used in chapter 07.

    Args:
        x: (m,) or (m, 1) samples; y: (n,) or (n, 1) samples; finite, floating point, m, n >= 1.

    Returns:
        0-dim tensor, in the units of the data.

    Raises:
        TypeError, ValueError: not floating point, wrong shape, empty, NaN/Inf.
    """
    vals = []
    for name, t in (("x", x), ("y", y)):
        check_finite(name, t)
        if not t.is_floating_point():
            raise TypeError(f"{name} must be floating point, got {t.dtype}")
        if t.ndim == 2 and t.shape[1] == 1:
            t = t[:, 0]
        if t.ndim != 1 or t.shape[0] < 1:
            raise ValueError(f"{name} must have shape (n,) or (n, 1) with n >= 1, got {tuple(t.shape)}")
        vals.append(t)
    x, y = vals
    xs, _ = torch.sort(x)
    ys, _ = torch.sort(y)
    allv, _ = torch.sort(torch.cat([xs, ys]))
    deltas = allv[1:] - allv[:-1]
    grid = allv[:-1].detach()
    cdf_x = torch.searchsorted(xs.detach().contiguous(), grid.contiguous(), right=True).to(x.dtype) / xs.shape[0]
    cdf_y = torch.searchsorted(ys.detach().contiguous(), grid.contiguous(), right=True).to(x.dtype) / ys.shape[0]
    return ((cdf_x - cdf_y).abs() * deltas).sum()


def wasserstein_critic_loss(real_scores: torch.Tensor, fake_scores: torch.Tensor) -> torch.Tensor:
    r"""WGAN critic loss :math:`\mathbb E f(\tilde x) - \mathbb E f(x)` (the critic minimises it).

    Its negative estimates the Kantorovich-Rubinstein dual ``W1 = sup_{||f||_L <= 1} E_data f - E_model f``
    when f is (close to) 1-Lipschitz. Arjovsky, Chintala & Bottou (2017), "Wasserstein GAN", Sec. 3 and
    Algorithm 1. Units: those of the data (a distance), not nats.

    Args:
        real_scores: (N,) or (N, 1) float critic scores on data. fake_scores: (M,) or (M, 1) on samples.

    Returns:
        0-dim tensor. Raises: TypeError / ValueError as :func:`gan_value`.
    """
    real = check_scores("real_scores", real_scores)
    fake = check_scores("fake_scores", fake_scores)
    return fake.mean() - real.mean()


def wasserstein_generator_loss(fake_scores: torch.Tensor) -> torch.Tensor:
    r"""WGAN generator loss :math:`-\mathbb E f(G(z))` (Arjovsky et al. 2017, Algorithm 1: the generator step).

    Args: fake_scores (M,) or (M, 1) float. Returns a 0-dim tensor. Raises as :func:`gan_value`.
    """
    return -check_scores("fake_scores", fake_scores).mean()


def gradient_penalty(critic, real: torch.Tensor, fake: torch.Tensor, *, generator: torch.Generator | None = None,
                     target: float = 1.0) -> torch.Tensor:
    r"""WGAN-GP gradient penalty :math:`\mathbb E_{\hat x}(\|\nabla_{\hat x} f(\hat x)\|_2 - 1)^2`.

    Gulrajani et al. (2017), "Improved Training of Wasserstein GANs", eq. (3) and Algorithm 1: for each
    example i one :math:`\epsilon_i \sim U[0, 1]`, :math:`\hat x_i = \epsilon_i x_i + (1 - \epsilon_i)\tilde x_i`
    (a point on the segment between a real and a generated example), the norm of the gradient of the
    critic at :math:`\hat x_i` over all non-batch dimensions (per sample, never over the batch), then the
    batch mean of ``(norm - target)^2``. Multiply by the penalty weight (lambda = 10 in the paper) yourself.

    The gradient is taken with ``create_graph=True``, so the penalty can be backpropagated into the
    critic's parameters. ``real`` and ``fake`` are detached: the penalty trains only the critic (as in
    Algorithm 1, where it is part of the critic's loss).

    Per-sample gradients from one backward pass: ``autograd.grad(f(x_hat).sum(), x_hat)`` row i is
    ``d f(x_hat_i) / d x_hat_i`` as long as example i's score depends only on example i (true for MLP and
    conv critics *without batch normalisation*; Gulrajani et al. drop batch norm from the critic for this
    reason, Sec. 4).

    Args:
        critic: callable ``x -> scores`` of shape (N,) or (N, 1) (wrap a conditional critic in a lambda,
            e.g. ``lambda x: D(x, y)``).
        real, fake: float tensors of the same shape (N, ...), e.g. (N, 2) or (N, 1, 8, 8).
        generator: optional ``torch.Generator`` for the epsilons (default: torch's global RNG). It must
            live on the device of ``real``.
        target: the desired gradient norm (1.0 for 1-Lipschitz), > 0.

    Returns:
        0-dim tensor, >= 0.

    Raises:
        TypeError: ``critic`` not callable, inputs not floating tensors. ValueError: shapes differ or are
        0-d / empty, NaN/Inf, critic output of the wrong shape or not differentiable wrt its input,
        non-positive target.
    """
    if not callable(critic):
        raise TypeError(f"critic must be callable x -> scores, got {type(critic).__name__}")
    for name, t in (("real", real), ("fake", fake)):
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():
            raise TypeError(f"{name} must be a floating-point torch.Tensor, got "
                            f"{t.dtype if isinstance(t, torch.Tensor) else type(t).__name__}")
        if t.ndim < 2 or t.shape[0] == 0:
            raise ValueError(f"{name} must have shape (N, ...) with N >= 1 and at least one feature dim, "
                             f"got {tuple(t.shape)}")
        check_finite(name, t)
    if real.shape != fake.shape:
        raise ValueError(f"real and fake must have the same shape (one interpolation per pair), "
                         f"got {tuple(real.shape)} and {tuple(fake.shape)}")
    target = check_positive_float("target", target)
    n = real.shape[0]
    eps = torch.rand((n,) + (1,) * (real.ndim - 1), generator=generator, device=real.device, dtype=real.dtype)
    x_hat = (eps * real.detach() + (1.0 - eps) * fake.detach()).requires_grad_(True)
    scores = critic(x_hat)
    scores = check_scores("critic(x_hat)", scores)
    if scores.shape[0] != n:
        raise ValueError(f"critic returned {scores.shape[0]} scores for {n} inputs")
    if not scores.requires_grad:
        raise ValueError("the critic's output does not depend on its input with gradients "
                         "(computed under torch.no_grad() or detached?)")
    (grad,) = torch.autograd.grad(scores.sum(), x_hat, create_graph=True)
    norms = grad.reshape(n, -1).norm(2, dim=1)
    return ((norms - target) ** 2).mean()


def clip_weights(module: nn.Module, c: float) -> None:
    """Clamp every parameter of ``module`` in place to ``[-c, c]``: Arjovsky et al. (2017), Algorithm 1.

    Call it after each critic optimiser step. It keeps the critic K-Lipschitz for some K depending on c and
    the architecture (a crude constraint: Gulrajani et al. 2017, Sec. 3, show it biases the critic towards
    simple functions and can make gradients vanish or explode). The paper uses c = 0.01.

    Args:
        module: an ``nn.Module`` (all its parameters are clipped, buffers untouched). c: finite > 0.

    Returns: None. Raises: TypeError (not a module / not a number), ValueError (c <= 0, inf or nan).
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    c = check_positive_float("c", c)
    with torch.no_grad():
        for p in module.parameters():
            p.clamp_(-c, c)


def density_ratio_from_logits(logits: torch.Tensor, *, n_p: int | None = None, n_q: int | None = None) -> torch.Tensor:
    r"""The density ratio :math:`r(x) = p(x)/q(x)` from a classifier's logit (the density-ratio trick).

    A classifier trained by logistic regression to tell samples of P (label 1) from samples of Q (label 0),
    with class proportions :math:`\pi = n_p/(n_p+n_q)`, has the optimum
    :math:`D^*(x) = \pi p / (\pi p + (1-\pi) q)` (Goodfellow et al. 2014, Prop. 1 for :math:`\pi = 1/2`), so

    .. math::

        \frac{D^*}{1 - D^*} = \frac{\pi\, p(x)}{(1-\pi)\, q(x)}
        \quad\Rightarrow\quad r(x) = \frac{n_q}{n_p} \frac{D}{1 - D} = \frac{n_q}{n_p} e^{\ell(x)},

    because :math:`D = \sigma(\ell)` gives :math:`D/(1-D) = e^{\ell}` (Sugiyama, Suzuki & Kanamori 2012;
    Mohamed & Lakshminarayanan 2016, sec. 2.1). Computing ``exp(logit)`` rather than ``D / (1 - D)`` avoids the
    division by a rounded ``1 - D``.

    Args:
        logits: (N,) or (N, 1) classifier logits (real = P = 1). n_p, n_q: sample sizes of the two classes
            in training, both or neither (default: balanced classes).

    Returns:
        (N,) tensor of ratios, > 0.

    Raises:
        TypeError, ValueError: bad logits; only one of n_p / n_q given or non-positive.
    """
    logits = check_scores("logits", logits)
    if (n_p is None) != (n_q is None):
        raise ValueError("give both n_p and n_q (the class sizes used in training) or neither")
    log_prior = 0.0
    if n_p is not None:
        if not (n_p > 0 and n_q > 0):
            raise ValueError(f"n_p and n_q must be positive, got {n_p}, {n_q}")
        log_prior = float(torch.log(torch.tensor(n_q / n_p, dtype=torch.float64)))
    return torch.exp(logits + log_prior)


def f_gan_value(real_v: torch.Tensor, fake_v: torch.Tensor, divergence: str = "gan") -> torch.Tensor:
    r"""The f-GAN objective :math:`F = \mathbb E_P[g_f(V(x))] - \mathbb E_Q[f^*(g_f(V(x)))]` (nats).

    Nowozin, Cseke & Tomioka (2016), eq. (6): :math:`V` is the critic's raw output, :math:`g_f` the output
    activation of :data:`coursekit.divergences.F_DIVERGENCES`, :math:`f^*` the convex conjugate. For every
    critic, :math:`F \le D_f(P\|Q)` (Nguyen, Wainwright & Jordan 2010), with equality at
    :math:`g_f(V) = f'(p/q)`. With ``divergence="gan"`` (:math:`g = \log\sigma`,
    :math:`f^*(t) = -\log(1 - e^t)`) F is exactly Goodfellow's value :math:`V(D, G)` of :func:`gan_value`.

    Args:
        real_v: (N,) or (N, 1) critic outputs on samples of P; fake_v: (M,) or (M, 1) on samples of Q.
        divergence: key of ``F_DIVERGENCES`` ("kl", "reverse_kl", "pearson", "hellinger", "js", "gan", "tv").

    Returns:
        0-dim tensor (the critic maximises it).
    """
    fd = _get_f(divergence)
    real_v = check_scores("real_v", real_v)
    fake_v = check_scores("fake_v", fake_v)
    return fd.activation(real_v).mean() - fd.conjugate(fd.activation(fake_v)).mean()


def f_gan_discriminator_loss(real_v: torch.Tensor, fake_v: torch.Tensor, divergence: str = "gan") -> torch.Tensor:
    """``-f_gan_value(real_v, fake_v, divergence)``: the critic minimises it (0-dim tensor, nats)."""
    return -f_gan_value(real_v, fake_v, divergence)


def f_gan_generator_loss(fake_v: torch.Tensor, divergence: str = "gan") -> torch.Tensor:
    r"""Generator loss of the f-GAN saddle point: the part of :func:`f_gan_value` that depends on the
    generator, :math:`-\mathbb E_Q[f^*(g_f(V(G(z))))]` (Nowozin et al. 2016, eq. (6); the generator minimises
    the value). For "gan" it is the minimax loss :math:`\mathbb E \log(1 - D(G(z)))`. 0-dim tensor."""
    fd = _get_f(divergence)
    fake_v = check_scores("fake_v", fake_v)
    return -fd.conjugate(fd.activation(fake_v)).mean()


def gaussian_kernel_matrix(x: torch.Tensor, y: torch.Tensor, bandwidths=(1.0,)) -> torch.Tensor:
    r"""Kernel matrix :math:`K_{ij} = \frac{1}{|B|}\sum_{h \in B} \exp(-\lVert x_i - y_j \rVert^2 / 2h^2)`.

    The same kernel as :func:`coursekit.score.gaussian_mmd2` (an average of Gaussian kernels, itself a
    characteristic kernel). x: (m, ...) or (m,), y: (n, ...) or (n,), flattened to vectors; bandwidths: positive
    floats in data units. Returns (m, n), differentiable in x and y.
    """
    x, y = check_points("x", x), check_points("y", y)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same dimension, got {x.shape[1]} and {y.shape[1]}")
    hs = [float(h) for h in bandwidths]
    if not hs or any(not (h > 0) for h in hs):
        raise ValueError(f"bandwidths must be a non-empty sequence of positive floats, got {bandwidths!r}")
    # squared distances directly (a norm, sqrt of d2, has an infinite derivative at zero distance)
    d2 = ((x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2 * x @ y.T).clamp_min(0)
    inv = torch.tensor([-0.5 / (h * h) for h in hs], dtype=d2.dtype, device=d2.device)
    return torch.exp(d2[None] * inv[:, None, None]).mean(0)  # one exp for all bandwidths

def median_bandwidths(x: torch.Tensor, y: torch.Tensor) -> list[float]:
    r"""Four Gaussian-kernel bandwidths from the median heuristic: the median pairwise distance times
    (0.25, 0.5, 1, 2).

    The median is that of all pairwise Euclidean distances (zeros of the diagonal included) within the
    pooled sample ``cat([x, y])``, or within an evenly spaced subsample of at most 1,000 of its points
    (``torch.linspace`` indices, no randomness). Gretton et al. (2012), sec. 8, use the median distance as the
    kernel width; a few multiples of it make the mixture kernel of :func:`gaussian_kernel_matrix` sensitive at
    several scales.

    Args:
        x: (m, D) float tensor, y: (n, D) float tensor, m + n >= 1 (checked by the callers).

    Returns:
        list of four python floats, in the units of the data.
    """
    pooled = torch.cat([x, y])
    sub = pooled[torch.linspace(0, len(pooled) - 1, min(len(pooled), 1000)).long()]
    med = torch.cdist(sub, sub).median().item()
    return [med * f for f in (0.25, 0.5, 1.0, 2.0)]


def mmd2_unbiased(x: torch.Tensor, y: torch.Tensor, bandwidths=(1.0,)) -> torch.Tensor:
    r"""Unbiased estimate of :math:`\mathrm{MMD}^2(P, Q)` with the kernel of :func:`gaussian_kernel_matrix`.

    .. math::

        \widehat{\mathrm{MMD}}^2_u = \frac{1}{m(m-1)}\sum_{i \ne j} k(x_i, x_j)
          + \frac{1}{n(n-1)}\sum_{i \ne j} k(y_i, y_j) - \frac{2}{mn}\sum_{i,j} k(x_i, y_j)

    (Gretton et al. 2012, eq. (3)): the diagonal terms :math:`k(x_i, x_i)` are left out, so its expectation is
    the population :math:`\mathrm{MMD}^2` at every sample size (it can be negative). Differentiable: the loss
    of generative moment matching networks (Li, Swersky & Zemel 2015; Dziugaite, Roy & Ghahramani 2015).

    Args:
        x: (m, ...) samples of P, y: (n, ...) samples of Q, m, n >= 2. bandwidths: Gaussian widths.

    Returns:
        0-dim tensor (squared kernel units).
    """
    x, y = check_points("x", x), check_points("y", y)
    m, n = x.shape[0], y.shape[0]
    if m < 2 or n < 2:
        raise ValueError(f"the unbiased MMD needs at least 2 samples per set, got {m} and {n}")
    kxx = gaussian_kernel_matrix(x, x, bandwidths)
    kyy = gaussian_kernel_matrix(y, y, bandwidths)
    kxy = gaussian_kernel_matrix(x, y, bandwidths)
    sxx = (kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
    syy = (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1))
    return sxx + syy - 2 * kxy.mean()


def mmd2_biased(x: torch.Tensor, y: torch.Tensor, bandwidths=(1.0,)) -> torch.Tensor:
    r"""The biased (V-statistic) estimate :math:`\lVert \hat\mu_P - \hat\mu_Q \rVert^2_{\mathcal H}`, diagonal
    terms included (Gretton et al. 2012, eq. (5)); always >= 0, and its expectation exceeds
    :math:`\mathrm{MMD}^2` by :math:`(\mathbb E k(x,x) - \mathbb E k(x,x'))/m + (\ldots)/n`. Same arguments as
    :func:`mmd2_unbiased`; 0-dim tensor."""
    x, y = check_points("x", x), check_points("y", y)
    return (gaussian_kernel_matrix(x, x, bandwidths).mean() + gaussian_kernel_matrix(y, y, bandwidths).mean()
            - 2 * gaussian_kernel_matrix(x, y, bandwidths).mean())


def ssgan_real_logit(class_logits: torch.Tensor) -> torch.Tensor:
    r"""The binary "real vs fake" logit of a (C+1)-way critic whose fake-class logit is fixed at 0.

    Salimans et al. (2016), sec. 5: with logits :math:`l_1..l_C` for the real classes and :math:`l_{C+1} = 0`,
    :math:`D(x) = 1 - p(y = C+1 \mid x) = Z/(Z+1)` with :math:`Z = \sum_k e^{l_k}`, i.e.
    :math:`D = \sigma(\operatorname{logsumexp}_k l_k)`. Returns ``logsumexp(class_logits, -1)``, shape (N,).
    """
    if not isinstance(class_logits, torch.Tensor) or class_logits.ndim != 2 or not class_logits.is_floating_point():
        raise ValueError("class_logits must be a floating tensor of shape (N, C)")
    if not bool(torch.isfinite(class_logits).all()):
        raise ValueError("class_logits contains NaN or Inf")
    return torch.logsumexp(class_logits, dim=-1)


def ssgan_discriminator_loss(labelled_logits: torch.Tensor, labels: torch.Tensor, real_logits: torch.Tensor,
                             fake_logits: torch.Tensor) -> torch.Tensor:
    r"""Loss of the semi-supervised (C+1)-way critic (Salimans et al. 2016, sec. 5), nats, 0-dim.

    .. math::

        L = \underbrace{-\mathbb E_{(x,y)\,\text{labelled}} \log p(y \mid x, y \le C)}_{\text{cross-entropy on the C classes}}
            \underbrace{- \mathbb E_{x\,\text{unlabelled}} \log D(x) - \mathbb E_z \log(1 - D(G(z)))}_{\text{real vs fake}}

    with :math:`D = \sigma(\operatorname{logsumexp} l)` (:func:`ssgan_real_logit`), computed stably:
    :math:`\log D = -\operatorname{softplus}(-s)`, :math:`\log(1-D) = -\operatorname{softplus}(s)`.

    Args:
        labelled_logits: (N_l, C) logits of labelled real images; labels: (N_l,) int64 in [0, C).
        real_logits: (N_u, C) logits of unlabelled real images; fake_logits: (N_f, C) of generated ones.
    """
    if labels.dtype != torch.int64 or labels.ndim != 1 or labels.shape[0] != labelled_logits.shape[0]:
        raise ValueError("labels must be int64 of shape (N_l,) matching labelled_logits")
    c = labelled_logits.shape[-1]
    if not all(t.ndim == 2 and t.shape[1] == c for t in (labelled_logits, real_logits, fake_logits)):
        raise ValueError("labelled_logits, real_logits and fake_logits must all have shape (N, C) with one C")
    if bool(((labels < 0) | (labels >= c)).any()):
        raise ValueError(f"labels must lie in [0, {c})")
    supervised = F.cross_entropy(labelled_logits, labels)
    s_real, s_fake = ssgan_real_logit(real_logits), ssgan_real_logit(fake_logits)
    unsupervised = F.softplus(-s_real).mean() + F.softplus(s_fake).mean()
    return supervised + unsupervised


def feature_matching_loss(real_features: torch.Tensor, fake_features: torch.Tensor) -> torch.Tensor:
    r"""Feature matching (Salimans et al. 2016, sec. 3.1): :math:`\lVert \mathbb E f(x) - \mathbb E f(G(z)) \rVert_2^2`
    for intermediate critic features (N, F) and (M, F); the generator loss of the semi-supervised GAN. 0-dim."""
    if real_features.ndim != 2 or fake_features.ndim != 2 or real_features.shape[1] != fake_features.shape[1]:
        raise ValueError("real_features and fake_features must have shapes (N, F) and (M, F)")
    return (real_features.mean(0) - fake_features.mean(0)).pow(2).sum()


class MLPGenerator(nn.Module):
    r"""Fully connected generator for the 8x8 digits (chapter 07's WGAN-GP, MMD and semi-supervised GANs).

    ``z (N, latent_dim) -> MLP(latent_dim, out_dim, hidden, activation) -> sigmoid -> x (N, out_dim)`` in
    (0, 1), the range of the grey-scale digits. Pair it with a critic ``coursekit.nets.MLP(64, 1, hidden)``:
    no batch normalisation anywhere, so each critic score is a function of its own input only, which the
    per-sample gradient penalty requires (Gulrajani et al. 2017, sec. 4).

    Args:
        latent_dim: size of z (>= 1). out_dim: pixels (default 64). hidden: hidden widths.
        activation: module class (default ``nn.LeakyReLU`` with slope 0.2, as DCGAN's discriminator).
    """

    def __init__(self, latent_dim: int, out_dim: int = 64, hidden=(256, 256), activation=None):
        super().__init__()
        act = activation or (lambda: nn.LeakyReLU(0.2))
        self.latent_dim = latent_dim
        self.net = MLP(latent_dim, out_dim, hidden, activation=act)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(z))
