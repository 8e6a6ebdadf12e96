r"""Denoising diffusion probabilistic models (chapter 08): schedules, the forward process, the posterior,
the reverse (DDPM and DDIM) steps, the training objectives, the variational bound and the SNR view.

Conventions
    *Time indices are 0-based, as in the reference implementations* (Ho et al.'s code, diffusers): a
    schedule of ``T`` steps is a tensor ``betas`` of shape (T,), and the code index ``t`` in
    ``{0, ..., T-1}`` is the paper's time :math:`t+1` in :math:`\{1, \dots, T\}`. So
    ``alphas_cumprod[t]`` is :math:`\bar\alpha_{t+1} = \prod_{s \le t+1} (1 - \beta_s)`, ``x_t`` in code is
    the paper's :math:`x_{t+1}`, and "one step back" from code index ``0`` lands on the data :math:`x_0`
    (:math:`\bar\alpha = 1` there).

    *Everything is a function of* ``alphas_cumprod`` (:math:`\bar\alpha`, shape (T,)): the per-step
    :math:`\alpha_t = \bar\alpha_t / \bar\alpha_{t-1}` and :math:`\beta_t = 1 - \alpha_t` are derived from it,
    exactly as diffusers' schedulers do, so the same numbers come out whichever way a schedule was made.
    Coefficients are computed in float64 and the result is returned in the dtype of the images.

    *Images* are float tensors (N, ...) scaled to [-1, 1] (the digits: ``2 * x - 1``), and a *noise model*
    is any callable ``model(x_t, t) -> eps_hat`` with ``t`` an int64 tensor (N,) of code indices
    (e.g. :class:`coursekit.nets.UNet`). Log-likelihood terms are in nats per image.

References
    Sohl-Dickstein et al. 2015, "Deep unsupervised learning using nonequilibrium thermodynamics";
    Ho, Jain & Abbeel 2020, "Denoising diffusion probabilistic models" (DDPM; equations cited as Ho eq. N);
    Song, Meng & Ermon 2021, "Denoising diffusion implicit models" (DDIM);
    Nichol & Dhariwal 2021, "Improved denoising diffusion probabilistic models" (cosine schedule);
    Kingma, Salimans, Poole & Ho 2021, "Variational diffusion models" (SNR view, low-discrepancy sampler).
"""

from __future__ import annotations

import math

import torch

from ._validate import (
    check_all_positive,
    check_alphas_cumprod,
    check_batch,
    check_broadcastable,
    check_choice,
    check_floating,
    check_nonnegative_float,
    check_nonnegative_int,
    check_positive_float,
    check_positive_int,
    check_same_shape,
    check_schedule,
    check_time_indices,
)

__all__ = [
    "SCHEDULES",
    "beta_schedule",
    "alphas_cumprod_from_betas",
    "snr",
    "log_snr",
    "q_sample",
    "q_step",
    "simulate_forward_chain",
    "q_posterior_mean_variance",
    "predict_x0_from_eps",
    "predict_eps_from_x0",
    "p_mean_variance",
    "ddpm_step",
    "ddim_step",
    "ddim_sigma",
    "ddim_posterior_mean_variance",
    "simulate_ddim_forward",
    "ddim_loss_weights",
    "ddim_timesteps",
    "ddpm_sample",
    "ddim_sample",
    "sample_timesteps",
    "l_simple",
    "diffusion_loss",
    "vlb_weights",
    "normal_kl",
    "discretized_gaussian_log_likelihood",
    "vlb_terms",
    "to_model_space",
    "to_image_space",
]

#: Names accepted by :func:`beta_schedule`.
SCHEDULES = ("linear", "cosine")
_TIME_SAMPLERS = ("uniform", "low_discrepancy")  # the methods of sample_timesteps


# ------------------------------------------------------------------------------------------------
# Input checks
# ------------------------------------------------------------------------------------------------


def _gather(values: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """values[t] as float64, shaped (N, 1, ..., 1) to broadcast against ``like`` (N, ...)."""
    out = values.to(device=like.device, dtype=torch.float64)[t]
    return out.reshape((-1,) + (1,) * (like.ndim - 1))


def _abar_prev(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """(T,) float64: abar at the previous index, with abar = 1 before the first step."""
    a = alphas_cumprod.to(torch.float64)
    return torch.cat([a.new_ones(1), a[:-1]])


def _images_at_t(t, alphas_cumprod, like: str, **images):
    """Validate same-shape image batches, the schedule and ``t``; return ``(alphas_cumprod (T,), t (N,) int64)``
    on the device of ``images[like]`` (the batch the result is computed like)."""
    for name, x in images.items():
        check_batch(name, x)
    check_same_shape(**images)
    a = check_alphas_cumprod(alphas_cumprod)
    ref = images[like]
    return a, check_time_indices(t, a.numel(), ref.shape[0], ref.device)


# ------------------------------------------------------------------------------------------------
# Schedules and the signal-to-noise ratio
# ------------------------------------------------------------------------------------------------


def beta_schedule(name: str, T: int, *, dtype=torch.float64, max_beta: float = 0.999, s: float = 0.008) -> torch.Tensor:
    r"""The noise schedule :math:`\beta_1, \dots, \beta_T` of a diffusion model.

    * ``"linear"`` (Ho et al. 2020, sec. 4): :math:`\beta_t` evenly spaced from ``1e-4 * 1000 / T`` to
      ``0.02 * 1000 / T``. Ho et al. used 1e-4 to 0.02 for T = 1000; scaling both ends by 1000/T keeps
      :math:`\bar\alpha_T` (hence how much signal survives) about the same for other T (Nichol & Dhariwal
      2021, their code's ``get_named_beta_schedule``). Same numbers as diffusers'
      ``DDPMScheduler(beta_schedule="linear", beta_start=1e-4 * 1000 / T, beta_end=0.02 * 1000 / T)``.
    * ``"cosine"`` (Nichol & Dhariwal 2021, eq. 17): :math:`\bar\alpha(u) = f(u)/f(0)` with
      :math:`f(u) = \cos^2\big(\frac{u + s}{1 + s}\frac{\pi}{2}\big)`, :math:`s = 0.008`, and
      :math:`\beta_t = \min\big(1 - \bar\alpha(t/T) / \bar\alpha((t-1)/T),\ 0.999\big)`: the clipping stops
      the last betas reaching 1 (where :math:`\bar\alpha` hits 0 and the reverse step divides by zero).
      Same numbers as diffusers' ``beta_schedule="squaredcos_cap_v2"``.

    Args:
        name: ``"linear"`` or ``"cosine"`` (:data:`SCHEDULES`).
        T: number of diffusion steps, integer >= 2.
        dtype: ``torch.float64`` (default: products of hundreds of factors lose digits in float32) or
            ``torch.float32``.
        max_beta: the cosine schedule's clipping value, in (0, 1). s: the cosine schedule's offset > 0.

    Returns:
        ``betas``, tensor of shape (T,) and dtype ``dtype``, each in (0, 1), on the CPU.

    Raises:
        ValueError: unknown name, T < 2, max_beta outside (0, 1), or a linear schedule whose largest beta
            would reach 1 (T < 21). TypeError: non-integer T, or a non-float dtype.
    """
    check_choice("name", name, SCHEDULES)
    T = check_positive_int("T", T)
    if T < 2:
        raise ValueError(f"T must be >= 2 diffusion steps, got {T}")
    if dtype not in (torch.float32, torch.float64):
        raise TypeError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    if not (0.0 < float(max_beta) < 1.0):
        raise ValueError(f"max_beta must be in (0, 1), got {max_beta}")
    if name == "linear":
        scale = 1000.0 / T
        start, end = 1e-4 * scale, 0.02 * scale
        if end >= 1.0:
            raise ValueError(f"the scaled linear schedule needs T >= 21 (its last beta 20 / T must be < 1), got T={T}")
        return torch.linspace(start, end, T, dtype=torch.float64).to(dtype)
    if not (float(s) > 0):
        raise ValueError(f"s must be > 0, got {s}")

    def abar(u):
        return math.cos((u + s) / (1 + s) * math.pi / 2) ** 2

    betas = [min(1 - abar((i + 1) / T) / abar(i / T), max_beta) for i in range(T)]
    return torch.tensor(betas, dtype=torch.float64).to(dtype)


def alphas_cumprod_from_betas(betas: torch.Tensor) -> torch.Tensor:
    r""":math:`\bar\alpha_t = \prod_{s \le t} (1 - \beta_s)` (Ho eq. 4's notation), computed in float64.

    Args:
        betas: (T,) float tensor with entries in [0, 1).

    Returns:
        (T,) float64 tensor on ``betas``' device, non-increasing, in (0, 1].

    Raises:
        TypeError: non-float input. ValueError: wrong shape, NaN/Inf, betas outside [0, 1).
    """
    check_schedule("betas", betas)
    if bool((betas < 0).any()) or bool((betas >= 1).any()):
        raise ValueError(
            f"betas must lie in [0, 1), got values in [{float(betas.min()):.3g}, {float(betas.max()):.3g}]"
        )
    return torch.cumprod(1.0 - betas.to(torch.float64), dim=0)


def snr(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    r"""Signal-to-noise ratio :math:`\mathrm{SNR}_t = \bar\alpha_t / (1 - \bar\alpha_t)` of
    :math:`q(x_t \mid x_0) = \mathcal{N}(\sqrt{\bar\alpha_t}x_0, (1-\bar\alpha_t)\mathbf{I})` (Kingma et al. 2021,
    eq. 2 with :math:`\alpha^2 = \bar\alpha`, :math:`\sigma^2 = 1 - \bar\alpha`). Float64 (T,); decreasing in t.
    A schedule with :math:`\bar\alpha_t = 1` has infinite SNR there."""
    a = check_alphas_cumprod(alphas_cumprod).to(torch.float64)
    return a / (1 - a)


def log_snr(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    r""":math:`\log \mathrm{SNR}_t = \log \bar\alpha_t - \log(1 - \bar\alpha_t)`, float64 (T,) (Kingma et al.
    2021 write :math:`\gamma = -\log\mathrm{SNR}`)."""
    a = check_alphas_cumprod(alphas_cumprod).to(torch.float64)
    return torch.log(a) - torch.log1p(-a)


# ------------------------------------------------------------------------------------------------
# The forward process
# ------------------------------------------------------------------------------------------------


def q_sample(x0: torch.Tensor, t, noise: torch.Tensor, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    r"""Sample the diffusion kernel :math:`x_t \sim q(x_t \mid x_0) = \mathcal{N}(\sqrt{\bar\alpha_t}x_0,
    (1-\bar\alpha_t)\mathbf{I})` by reparameterisation: :math:`x_t = \sqrt{\bar\alpha_t}\,x_0 +
    \sqrt{1-\bar\alpha_t}\,\varepsilon` (Ho eq. 4; derived by induction in chapter 08).

    Args:
        x0: clean images, float (N, ...), e.g. (N, 1, 8, 8) in [-1, 1].
        t: code time indices in {0, ..., T-1} (code index t is the paper's t + 1): python int or integer
            tensor of shape () or (N,).
        noise: standard normal noise :math:`\varepsilon`, same shape as ``x0``.
        alphas_cumprod: (T,) :math:`\bar\alpha` of the schedule.

    Returns:
        :math:`x_t`, same shape, dtype and device as ``x0``.

    Raises:
        TypeError: non-float images, float or bool ``t``. ValueError: ``t`` out of range, shapes that do not
            match, NaN/Inf, an invalid ``alphas_cumprod``.
    """
    a, t = _images_at_t(t, alphas_cumprod, "x0", x0=x0, noise=noise)
    ab = _gather(a, t, x0)
    return (ab.sqrt() * x0.to(torch.float64) + (1 - ab).sqrt() * noise.to(torch.float64)).to(x0.dtype)


def q_step(x_prev: torch.Tensor, t, noise: torch.Tensor, betas: torch.Tensor) -> torch.Tensor:
    r"""One forward transition :math:`x_t = \sqrt{1 - \beta_t}\,x_{t-1} + \sqrt{\beta_t}\,\varepsilon`, i.e. a
    sample of :math:`q(x_t \mid x_{t-1}) = \mathcal{N}(\sqrt{1-\beta_t}x_{t-1}, \beta_t\mathbf{I})` (Ho eq. 2).

    Args:
        x_prev: float (N, ...), the state before the step (the data for code index 0).
        t: code index of the step in {0, ..., T-1} (int or integer tensor () / (N,)).
        noise: standard normal, same shape as ``x_prev``. betas: (T,) schedule.

    Returns:
        the next state, same shape/dtype/device as ``x_prev``.
    """
    check_batch("x_prev", x_prev)
    check_batch("noise", noise)
    check_same_shape(x_prev=x_prev, noise=noise)
    a = alphas_cumprod_from_betas(betas)  # validates betas
    t = check_time_indices(t, a.numel(), x_prev.shape[0], x_prev.device)
    b = _gather(betas.to(torch.float64), t, x_prev)
    return ((1 - b).sqrt() * x_prev.to(torch.float64) + b.sqrt() * noise.to(torch.float64)).to(x_prev.dtype)


def simulate_forward_chain(x0: torch.Tensor, betas: torch.Tensor, keep, *, generator=None) -> dict[int, torch.Tensor]:
    r"""Run the Markov chain :math:`x_0 \to x_1 \to \dots` step by step with :func:`q_step` (fresh noise at
    every step) and return the states at the code indices in ``keep``. This is the *definition* of the
    forward process; comparing its statistics with :func:`q_sample` checks the closed-form kernel.

    Args:
        x0: float (N, ...). betas: (T,). keep: iterable of code indices in {0, ..., T-1}.
        generator: optional ``torch.Generator`` on ``x0``'s device.

    Returns:
        dict ``{t: x_t}`` (each same shape/dtype as ``x0``).
    """
    check_batch("x0", x0)
    T = alphas_cumprod_from_betas(betas).numel()
    keep = sorted({int(check_time_indices(int(k), T, 1, "cpu", name="keep")[0]) for k in keep})
    out, x = {}, x0
    for t in range(keep[-1] + 1 if keep else 0):
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        x = q_step(x, t, noise, betas)
        if t in keep:
            out[t] = x
    return out


def q_posterior_mean_variance(x0: torch.Tensor, xt: torch.Tensor, t, alphas_cumprod: torch.Tensor):
    r"""The forward-process posterior
    :math:`q(x_{t-1} \mid x_t, x_0) = \mathcal{N}(\tilde\mu_t, \tilde\beta_t\mathbf{I})` (Ho eqs. 6-7):

    .. math::

        \tilde\mu_t = \frac{\sqrt{\bar\alpha_{t-1}}\,\beta_t}{1 - \bar\alpha_t}\,x_0
                    + \frac{\sqrt{\alpha_t}\,(1 - \bar\alpha_{t-1})}{1 - \bar\alpha_t}\,x_t, \qquad
        \tilde\beta_t = \frac{1 - \bar\alpha_{t-1}}{1 - \bar\alpha_t}\,\beta_t,

    with :math:`\alpha_t = \bar\alpha_t/\bar\alpha_{t-1}`, :math:`\beta_t = 1 - \alpha_t` and
    :math:`\bar\alpha = 1` before the first step (so at code index 0 the posterior is the point mass at
    :math:`x_0`: mean :math:`x_0`, variance 0).

    Args:
        x0, xt: float (N, ...), same shape. t: code indices (int or integer tensor () / (N,)).
        alphas_cumprod: (T,).

    Returns:
        ``(mean, variance)``: mean same shape/dtype as ``xt``; variance (N, 1, ..., 1) (broadcasts
        against the images), same dtype.
    """
    a, t = _images_at_t(t, alphas_cumprod, "xt", x0=x0, xt=xt)
    ab, ab_prev = _gather(a, t, xt), _gather(_abar_prev(a), t, xt)
    alpha = ab / ab_prev
    beta = 1 - alpha
    c0 = ab_prev.sqrt() * beta / (1 - ab)
    ct = alpha.sqrt() * (1 - ab_prev) / (1 - ab)
    mean = c0 * x0.to(torch.float64) + ct * xt.to(torch.float64)
    var = (1 - ab_prev) / (1 - ab) * beta
    return mean.to(xt.dtype), var.to(xt.dtype)


def predict_x0_from_eps(xt: torch.Tensor, t, eps: torch.Tensor, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    r"""Invert :func:`q_sample` for :math:`x_0`: :math:`\hat x_0 = (x_t - \sqrt{1-\bar\alpha_t}\,\hat\varepsilon)
    / \sqrt{\bar\alpha_t}` (Ho eq. 15). Same shape/dtype as ``xt``."""
    a, t = _images_at_t(t, alphas_cumprod, "xt", xt=xt, eps=eps)
    ab = _gather(a, t, xt)
    return ((xt.to(torch.float64) - (1 - ab).sqrt() * eps.to(torch.float64)) / ab.sqrt()).to(xt.dtype)


def predict_eps_from_x0(xt: torch.Tensor, t, x0: torch.Tensor, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    r"""The noise that maps ``x0`` to ``xt``: :math:`\varepsilon = (x_t - \sqrt{\bar\alpha_t}\,x_0) /
    \sqrt{1 - \bar\alpha_t}`. Same shape/dtype as ``xt``."""
    a, t = _images_at_t(t, alphas_cumprod, "xt", xt=xt, x0=x0)
    ab = _gather(a, t, xt)
    return ((xt.to(torch.float64) - ab.sqrt() * x0.to(torch.float64)) / (1 - ab).sqrt()).to(xt.dtype)


# ------------------------------------------------------------------------------------------------
# The reverse process
# ------------------------------------------------------------------------------------------------


def p_mean_variance(eps: torch.Tensor, xt: torch.Tensor, t, alphas_cumprod: torch.Tensor, *, clip: bool = True,
                    variance: str = "small"):
    r"""Mean and variance of the reverse step
    :math:`p_\theta(x_{t-1} \mid x_t) = \mathcal{N}(\mu_\theta, \sigma_t^2\mathbf{I})` from a noise prediction.

    The epsilon parameterisation (Ho eq. 11) plugs :math:`\hat x_0` of :func:`predict_x0_from_eps` into the
    posterior mean; without clipping this equals
    :math:`\mu_\theta = \frac{1}{\sqrt{\alpha_t}}\big(x_t - \frac{\beta_t}{\sqrt{1-\bar\alpha_t}}\hat\varepsilon\big)`.
    With ``clip=True`` :math:`\hat x_0` is clipped to [-1, 1] first (the data range), as in Ho et al.'s
    code and diffusers' ``clip_sample=True``.

    Args:
        eps: the model's noise prediction, same shape as ``xt``. xt: float (N, ...).
        t: code indices (int or integer tensor () / (N,)). alphas_cumprod: (T,).
        clip: clip :math:`\hat x_0` to [-1, 1].
        variance: ``"small"``: :math:`\sigma_t^2 = \tilde\beta_t` (optimal for a point-mass :math:`x_0`;
            diffusers' ``"fixed_small"``) or ``"large"``: :math:`\sigma_t^2 = \beta_t` (optimal for
            :math:`x_0 \sim \mathcal{N}(0, \mathbf{I})`; Ho sec. 3.2).

    Returns:
        ``(mean, variance, x0_hat)``: mean and x0_hat of ``xt``'s shape and dtype; variance (N, 1, ..., 1).
    """
    check_choice("variance", variance, ("small", "large"))
    x0_hat = predict_x0_from_eps(xt, t, eps, alphas_cumprod)
    if clip:
        x0_hat = x0_hat.clamp(-1.0, 1.0)
    mean, var = q_posterior_mean_variance(x0_hat, xt, t, alphas_cumprod)
    if variance == "large":
        a = alphas_cumprod
        tt = check_time_indices(t, a.numel(), xt.shape[0], xt.device)
        var = (1 - _gather(a, tt, xt) / _gather(_abar_prev(a), tt, xt)).to(xt.dtype)
    return mean, var, x0_hat


def _noise_like(x, noise, generator):
    if noise is None:
        return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    check_batch("noise", noise)
    check_same_shape(xt=x, noise=noise)
    return noise


def ddpm_step(eps: torch.Tensor, xt: torch.Tensor, t, alphas_cumprod: torch.Tensor, *, noise=None, generator=None,
              clip: bool = True, variance: str = "small") -> torch.Tensor:
    r"""One ancestral (DDPM) reverse step :math:`x_{t-1} = \mu_\theta(x_t, t) + \sigma_t z`,
    :math:`z \sim \mathcal{N}(0, \mathbf{I})` (Ho et al. 2020, Algorithm 2), no noise at the last step
    (code index 0). Same numbers as diffusers' ``DDPMScheduler.step`` (``variance_type="fixed_small"``,
    ``clip_sample=clip``) given the same noise.

    Args:
        eps: noise prediction (N, ...). xt: current state (N, ...). t: code index (int or integer tensor
            () / (N,)). alphas_cumprod: (T,).
        noise: the standard normal :math:`z` (same shape as ``xt``); drawn with ``generator`` if None.
        clip, variance: see :func:`p_mean_variance`.

    Returns:
        :math:`x_{t-1}`, same shape/dtype/device as ``xt``.
    """
    mean, var, _ = p_mean_variance(eps, xt, t, alphas_cumprod, clip=clip, variance=variance)
    z = _noise_like(xt, noise, generator)
    tt = check_time_indices(t, alphas_cumprod.numel(), xt.shape[0], xt.device)
    nonzero = (tt > 0).reshape((-1,) + (1,) * (xt.ndim - 1)).to(xt.dtype)
    return mean + nonzero * var.clamp_min(1e-20).sqrt() * z


def ddim_step(eps: torch.Tensor, xt: torch.Tensor, t, t_prev, alphas_cumprod: torch.Tensor, *, eta: float = 0.0,
              noise=None, generator=None, clip: bool = True) -> torch.Tensor:
    r"""One DDIM step from code index ``t`` to ``t_prev < t`` (Song et al. 2021, eq. 12):

    .. math::

        x_{t'} = \sqrt{\bar\alpha_{t'}}\,\hat x_0 + \sqrt{1 - \bar\alpha_{t'} - \sigma^2}\,\hat\varepsilon + \sigma z,
        \qquad \sigma = \eta\,\sqrt{\frac{1 - \bar\alpha_{t'}}{1 - \bar\alpha_t}}
            \sqrt{1 - \frac{\bar\alpha_t}{\bar\alpha_{t'}}},

    with :math:`\hat x_0` from :func:`predict_x0_from_eps`. ``eta = 0`` is the deterministic DDIM sampler;
    ``eta = 1`` with ``t_prev = t - 1`` is DDPM with :math:`\sigma_t^2 = \tilde\beta_t`. ``t_prev = -1`` means
    the data, :math:`\bar\alpha = 1`. With ``clip=True``, :math:`\hat x_0` is clipped to [-1, 1] and
    :math:`\hat\varepsilon` recomputed from the clipped :math:`\hat x_0` (Nichol & Dhariwal's code; diffusers'
    ``DDIMScheduler.step(..., use_clipped_model_output=True)``).

    Args:
        eps, xt: (N, ...). t: code index (int or integer tensor () / (N,)). t_prev: int or tensor in
            {-1, ..., T-1}, < t. alphas_cumprod: (T,). eta: >= 0. noise/generator: the z above (used only
            if eta > 0). clip: see above.

    Returns:
        :math:`x_{t'}`, same shape/dtype as ``xt``.
    """
    check_batch("xt", xt)
    a = check_alphas_cumprod(alphas_cumprod)
    T, n = a.numel(), xt.shape[0]
    tt = check_time_indices(t, T, n, xt.device)
    tp = check_time_indices(t_prev, T, n, xt.device, name="t_prev", allow_minus_one=True)
    if bool((tp >= tt).any()):
        raise ValueError("t_prev must be smaller than t (DDIM steps go backwards in time)")
    eta = check_nonnegative_float("eta", eta)
    x0_hat = predict_x0_from_eps(xt, tt, eps, a)
    if clip:
        x0_hat = x0_hat.clamp(-1.0, 1.0)
        eps = predict_eps_from_x0(xt, tt, x0_hat, a)
    ab, ab_prev = _gather(a, tt, xt), _gather(_abar_ext(a), tp + 1, xt)
    sigma = _ddim_sigma(ab, ab_prev, eta)
    out = (
        ab_prev.sqrt() * x0_hat.to(torch.float64)
        + (1 - ab_prev - sigma**2).clamp_min(0).sqrt() * eps.to(torch.float64)
    )
    if eta > 0:
        out = out + sigma * _noise_like(xt, noise, generator).to(torch.float64)
    return out.to(xt.dtype)


def _abar_ext(a: torch.Tensor) -> torch.Tensor:
    """(T + 1,) float64: abar with a leading 1, indexed by t + 1, so that t = -1 (the data) gives abar = 1."""
    a = a.to(torch.float64)
    return torch.cat([a.new_ones(1), a])


def _ddim_sigma(ab: torch.Tensor, ab_prev: torch.Tensor, eta: float) -> torch.Tensor:
    """sigma(eta) of Song et al. 2021, eq. 16, from abar at t and at t_prev (float64 tensors)."""
    return eta * ((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev)).clamp_min(0).sqrt()


def ddim_sigma(alphas_cumprod: torch.Tensor, t, t_prev, eta: float) -> torch.Tensor:
    r"""The standard deviation :math:`\sigma` of the DDIM family for a step from code index ``t`` to ``t_prev``
    (Song et al. 2021, eq. 16):

    .. math::

        \sigma(\eta) = \eta\,\sqrt{\frac{1 - \bar\alpha_{t'}}{1 - \bar\alpha_t}}
            \sqrt{1 - \frac{\bar\alpha_t}{\bar\alpha_{t'}}} .

    ``eta = 0`` gives the deterministic sampler; ``eta = 1`` with ``t_prev = t - 1`` gives
    :math:`\sigma^2 = \tilde\beta_t`, the DDPM posterior variance. For ``0 <= eta <= 1``,
    :math:`\sigma^2 \le 1 - \bar\alpha_{t'}`, so the family of :func:`ddim_posterior_mean_variance` is defined.

    Args:
        alphas_cumprod: (T,). t: code indices, int or integer tensor (N,). t_prev: int or tensor in
            {-1, ..., T-1}, < t (-1: the data). eta: >= 0.

    Returns:
        float64 tensor (N,) (N = 1 for python ints).

    Raises:
        TypeError / ValueError: bad schedule or indices, t_prev >= t, eta < 0.
    """
    a = check_alphas_cumprod(alphas_cumprod)
    n = t.shape[0] if isinstance(t, torch.Tensor) and t.ndim == 1 else 1
    tt = check_time_indices(t, a.numel(), n, a.device)
    tp = check_time_indices(t_prev, a.numel(), n, a.device, name="t_prev", allow_minus_one=True)
    if bool((tp >= tt).any()):
        raise ValueError("t_prev must be smaller than t")
    eta = check_nonnegative_float("eta", eta)
    ext = _abar_ext(a)
    return _ddim_sigma(ext[tt + 1], ext[tp + 1], eta)


def ddim_posterior_mean_variance(x0: torch.Tensor, xt: torch.Tensor, t, t_prev, alphas_cumprod: torch.Tensor, *,
                                 eta: float):
    r"""The non-Markovian "posterior" of the DDIM family (Song et al. 2021, eq. 7), for a step from code index
    ``t`` back to ``t_prev``:

    .. math::

        q_\sigma(x_{t'} \mid x_t, x_0) = \mathcal{N}\Big(\sqrt{\bar\alpha_{t'}}\,x_0
            + \sqrt{1 - \bar\alpha_{t'} - \sigma^2}\;\frac{x_t - \sqrt{\bar\alpha_t}\,x_0}{\sqrt{1 - \bar\alpha_t}},
            \ \sigma^2 \mathbf{I}\Big), \qquad \sigma = \sigma(\eta) \text{ of } :func:`ddim_sigma`.

    If :math:`x_t \sim q(x_t \mid x_0)` then :math:`x_{t'}` drawn from it has the DDPM marginal
    :math:`q(x_{t'} \mid x_0)` whatever :math:`\sigma` (checked by :func:`simulate_ddim_forward`); with ``eta = 1``
    and ``t_prev = t - 1`` it is :func:`q_posterior_mean_variance`.

    Args:
        x0, xt: float (N, ...), same shape. t, t_prev: as :func:`ddim_sigma`. alphas_cumprod: (T,).
        eta: >= 0 with :math:`\sigma^2 \le 1 - \bar\alpha_{t'}` (always true for eta <= 1).

    Returns:
        ``(mean, variance)``: mean like ``xt``; variance :math:`\sigma^2` as (N, 1, ..., 1), same dtype.

    Raises:
        TypeError / ValueError: bad shapes or indices, or :math:`\sigma^2 > 1 - \bar\alpha_{t'}`.
    """
    a, tt = _images_at_t(t, alphas_cumprod, "xt", x0=x0, xt=xt)
    tp = check_time_indices(t_prev, a.numel(), xt.shape[0], xt.device, name="t_prev", allow_minus_one=True)
    if bool((tp >= tt).any()):
        raise ValueError("t_prev must be smaller than t")
    eta = check_nonnegative_float("eta", eta)
    ab, ab_prev = _gather(a, tt, xt), _gather(_abar_ext(a), tp + 1, xt)
    sigma = _ddim_sigma(ab, ab_prev, eta)
    room = 1 - ab_prev - sigma**2
    if bool((room < -1e-12).any()):
        raise ValueError(f"sigma^2 exceeds 1 - abar_t_prev for eta = {eta:g}; use eta <= 1")
    x0d, xtd = x0.to(torch.float64), xt.to(torch.float64)
    eps = (xtd - ab.sqrt() * x0d) / (1 - ab).sqrt()
    mean = ab_prev.sqrt() * x0d + room.clamp_min(0).sqrt() * eps
    return mean.to(xt.dtype), (sigma**2).to(xt.dtype)


def simulate_ddim_forward(x0: torch.Tensor, alphas_cumprod: torch.Tensor, timesteps, *, eta: float,
                          generator=None) -> dict[int, torch.Tensor]:
    r"""Draw from the non-Markovian forward process of DDIM (Song et al. 2021, eq. 6) on a decreasing list of code
    indices :math:`\tau_1 > \tau_2 > \dots`: :math:`x_{\tau_1} \sim q(x_{\tau_1} \mid x_0)` by :func:`q_sample`, then
    each next state from :func:`ddim_posterior_mean_variance` given the previous one *and* :math:`x_0`. Only
    these conditionals are used, so comparing the states' statistics with :math:`q(x_t \mid x_0)` checks that the
    family keeps the DDPM marginals.

    Args:
        x0: float (N, ...). alphas_cumprod: (T,). timesteps: strictly decreasing code indices in {0, ..., T-1}
            (e.g. :func:`ddim_timesteps`). eta: >= 0 (0: every state after the first is a function of it and x0).
        generator: optional ``torch.Generator`` on ``x0``'s device.

    Returns:
        dict ``{t: x_t}`` for every index in ``timesteps`` (same shape/dtype as ``x0``).

    Raises:
        TypeError / ValueError: bad inputs or timesteps that are not strictly decreasing.
    """
    check_batch("x0", x0)
    a = check_alphas_cumprod(alphas_cumprod)
    ts = [int(check_time_indices(int(k), a.numel(), 1, "cpu", name="timesteps")[0]) for k in timesteps]
    if not ts or any(ts[i + 1] >= ts[i] for i in range(len(ts) - 1)):
        raise ValueError(f"timesteps must be a non-empty, strictly decreasing list, got {ts}")

    def noise():
        return torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)

    x = q_sample(x0, ts[0], noise(), a)
    out = {ts[0]: x}
    for i in range(len(ts) - 1):
        t, t_prev = ts[i], ts[i + 1]
        mean, var = ddim_posterior_mean_variance(x0, x, t, t_prev, a, eta=eta)
        x = mean + var.sqrt() * noise()
        out[t_prev] = x
    return out


def ddim_loss_weights(alphas_cumprod: torch.Tensor, eta: float) -> torch.Tensor:
    r"""The weights :math:`\gamma_t` of the DDIM family's bound on consecutive steps, as a weighted noise regression
    (Song et al. 2021, section 3.1):

    .. math::

        \mathrm{KL}\big(q_\sigma(x_{t-1} \mid x_t, x_0) \,\|\, q_\sigma(x_{t-1} \mid x_t, \hat x_0)\big)
            = \gamma_t\,\lVert \varepsilon - \hat\varepsilon \rVert^2, \qquad
        \gamma_t = \frac{c_t^2\,(1 - \bar\alpha_t)}{2\sigma_t^2\,\bar\alpha_t}, \quad
        c_t = \sqrt{\bar\alpha_{t-1}}
            - \sqrt{1 - \bar\alpha_{t-1} - \sigma_t^2}\,\sqrt{\frac{\bar\alpha_t}{1 - \bar\alpha_t}},

    where :math:`\hat x_0` is the model's prediction from :math:`\hat\varepsilon` (:func:`predict_x0_from_eps`)
    and :math:`\sigma_t = \sigma(\eta)` of :func:`ddim_sigma` for the step t -> t - 1. ``eta = 1`` gives
    :func:`vlb_weights`.

    Args:
        alphas_cumprod: (T,). eta: > 0 (at eta = 0 the KL is infinite).

    Returns:
        float64 (T,); entry 0 (the decoder term) is ``inf``, like :func:`vlb_weights`.

    Raises:
        TypeError / ValueError: bad schedule or eta <= 0.
    """
    a = check_alphas_cumprod(alphas_cumprod).to(torch.float64)
    eta = check_positive_float("eta", eta)
    ap = _abar_prev(a)
    sigma2 = _ddim_sigma(a, ap, eta) ** 2
    c = ap.sqrt() - (1 - ap - sigma2).clamp_min(0).sqrt() * (a / (1 - a)).sqrt()
    w = c**2 * (1 - a) / (2 * sigma2 * a)
    w[0] = math.inf
    return w


def ddim_timesteps(T: int, n_steps: int) -> list[int]:
    """The ``n_steps`` code indices a DDIM sampler visits, from T-1 down ("trailing" spacing: the first step
    starts from pure noise at T-1; Lin et al. 2024, "Common diffusion noise schedules and sample steps are
    flawed"), the same as diffusers' ``timestep_spacing="trailing"``. Each step goes to the next index in
    the list, the last one to -1 (the data).

    Raises:
        ValueError: n_steps outside {1, ..., T}.
    """
    T, n_steps = check_positive_int("T", T), check_positive_int("n_steps", n_steps)
    if n_steps > T:
        raise ValueError(f"n_steps must be <= T = {T}, got {n_steps}")
    ratio = T / n_steps
    return [round(T - i * ratio) - 1 for i in range(n_steps)]


@torch.no_grad()
def ddpm_sample(model, shape, alphas_cumprod: torch.Tensor, *, generator=None, device=None, clip: bool = True,
                variance: str = "small", keep=()):
    r"""Ancestral sampling (Ho et al. 2020, Algorithm 2): :math:`x_T \sim \mathcal{N}(0, \mathbf{I})`, then
    :func:`ddpm_step` for code indices T-1, ..., 0 (T network evaluations).

    Args:
        model: noise model ``model(x_t, t) -> eps_hat`` (in eval mode, e.g. the EMA copy).
        shape: output shape (N, ...). alphas_cumprod: (T,). generator: ``torch.Generator`` on ``device``.
        device: default the model's device. clip, variance: see :func:`p_mean_variance`.
        keep: code indices whose states to return as well (for a denoising trajectory).

    Returns:
        ``x0`` (float32, ``shape``, in [-1, 1] when ``clip``) if ``keep`` is empty, else ``(x0, {t: x_t})``
        where the state stored under ``t`` is the input of the step at ``t`` (``t = T-1``: the noise).

    Raises:
        TypeError / ValueError: a bad schedule, or a ``keep`` entry that is not a code index in 0..T-1.
    """
    a = check_alphas_cumprod(alphas_cumprod)
    keep, states = {check_nonnegative_int("keep", k) for k in keep}, {}
    if keep and max(keep) >= a.numel():
        raise ValueError(f"keep must hold code indices in 0..{a.numel() - 1}, got {sorted(keep)}")
    device = device if device is not None else next(model.parameters()).device
    x = torch.randn(tuple(shape), generator=generator, device=device)
    for t in range(a.numel() - 1, -1, -1):
        if t in keep:
            states[t] = x
        tt = torch.full((x.shape[0],), t, device=device, dtype=torch.long)
        x = ddpm_step(model(x, tt), x, tt, a, generator=generator, clip=clip, variance=variance)
    return (x, states) if keep else x


@torch.no_grad()
def ddim_sample(model, shape, alphas_cumprod: torch.Tensor, n_steps: int, *, eta: float = 0.0, generator=None,
                device=None, clip: bool = True, x_T=None, keep_all: bool = False):
    r"""DDIM sampling (Song et al. 2021) with ``n_steps`` network evaluations on :func:`ddim_timesteps`.

    Args:
        model, shape, alphas_cumprod, generator, device, clip: as :func:`ddpm_sample`.
        n_steps: number of steps, 1 <= n_steps <= T. eta: 0 = deterministic.
        x_T: optional starting noise of ``shape`` (to compare samplers on the same :math:`x_T`).
        keep_all: also return the list of states (starting with :math:`x_T`).

    Returns:
        ``x0`` (float32 ``shape``) or ``(x0, states)``.

    Raises:
        TypeError / ValueError: a bad schedule, n_steps or eta, or an ``x_T`` that is not a finite floating-point
            tensor of ``shape``.
    """
    a = check_alphas_cumprod(alphas_cumprod)
    if x_T is not None and tuple(check_batch("x_T", x_T).shape) != tuple(shape):
        raise ValueError(f"x_T must have the output shape {tuple(shape)}, got {tuple(x_T.shape)}")
    device = device if device is not None else next(model.parameters()).device
    x = torch.randn(tuple(shape), generator=generator, device=device) if x_T is None else x_T.to(device)
    ts = ddim_timesteps(a.numel(), n_steps)
    states = [x]
    for i, t in enumerate(ts):
        t_prev = ts[i + 1] if i + 1 < len(ts) else -1
        tt = torch.full((x.shape[0],), t, device=device, dtype=torch.long)
        x = ddim_step(model(x, tt), x, tt, t_prev, a, eta=eta, generator=generator, clip=clip)
        states.append(x)
    return (x, states) if keep_all else x


# ------------------------------------------------------------------------------------------------
# Training objectives
# ------------------------------------------------------------------------------------------------


def sample_timesteps(n: int, T: int, *, method: str = "uniform", generator=None, device=None) -> torch.Tensor:
    r"""Draw ``n`` code time indices for a minibatch.

    * ``"uniform"``: i.i.d. uniform on {0, ..., T-1}.
    * ``"low_discrepancy"`` (Kingma et al. 2021, appendix I.1): one :math:`u_0 \sim U[0, 1)`, then
      :math:`u_i = (u_0 + i/n) \bmod 1` for :math:`i = 0, \dots, n-1`, and index :math:`\lfloor T u_i \rfloor`.
      Each index is still uniform on {0, ..., T-1} (so a loss averaged over the batch stays unbiased) but
      the batch covers [0, 1) evenly, which lowers the variance of the minibatch average. The order is
      shuffled so that time is not tied to position in the batch.

    Returns:
        int64 tensor (n,) on ``device``.
    """
    n, T = check_positive_int("n", n), check_positive_int("T", T)
    check_choice("method", method, _TIME_SAMPLERS)
    if method == "uniform":
        return torch.randint(0, T, (n,), generator=generator, device=device)
    u0 = torch.rand((), generator=generator, device=device, dtype=torch.float64)
    u = torch.remainder(u0 + torch.arange(n, device=device, dtype=torch.float64) / n, 1.0)
    u = u[torch.randperm(n, generator=generator, device=device)]
    return torch.clamp((u * T).long(), max=T - 1)


def l_simple(eps_hat: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    r"""Per-image :math:`\lVert\varepsilon - \hat\varepsilon\rVert^2` *averaged* over pixels (Ho eq. 14 up to
    the factor D; the mean keeps learning rates independent of the image size). Returns float (N,)."""
    check_batch("eps_hat", eps_hat)
    check_batch("eps", eps)
    check_same_shape(eps_hat=eps_hat, eps=eps)
    return ((eps - eps_hat) ** 2).reshape(eps.shape[0], -1).mean(dim=1)


def diffusion_loss(model, x0: torch.Tensor, alphas_cumprod: torch.Tensor, *, time_sampler: str = "uniform",
                   generator=None):
    r""":math:`L_\text{simple}` on a minibatch (Ho et al. 2020, Algorithm 1): draw :math:`t`
    (:func:`sample_timesteps`) and :math:`\varepsilon \sim \mathcal{N}(0, \mathbf{I})`, form :math:`x_t` with
    :func:`q_sample`, return the batch mean of :func:`l_simple`. Fits ``coursekit.train.fit``:
    ``fit(model, opt, lambda m, b: diffusion_loss(m, b, abar), x_train, ...)``.

    Args:
        model: noise model ``model(x_t, t)``. x0: float (N, ...) in [-1, 1]. alphas_cumprod: (T,) on any
            device. time_sampler: ``"uniform"`` or ``"low_discrepancy"``. generator: optional.

    Returns:
        scalar loss tensor (mean squared error per pixel, dimensionless).

    Raises:
        TypeError / ValueError: a non-finite or non-float x0, a bad schedule, or a time_sampler other than
            ``"uniform"`` and ``"low_discrepancy"``.
    """
    check_batch("x0", x0)
    check_choice("time_sampler", time_sampler, _TIME_SAMPLERS)
    a = check_alphas_cumprod(alphas_cumprod)
    t = sample_timesteps(x0.shape[0], a.numel(), method=time_sampler, generator=generator, device=x0.device)
    eps = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    xt = q_sample(x0, t, eps, a)
    return l_simple(model(xt, t), eps).mean()


# ------------------------------------------------------------------------------------------------
# The variational bound
# ------------------------------------------------------------------------------------------------


def vlb_weights(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    r"""The weight :math:`w_t` with which the bound's term :math:`L_{t-1}` counts the *summed* squared noise
    error, when :math:`p_\theta`'s variance is :math:`\tilde\beta_t`:
    :math:`L_{t-1} = w_t\,\mathbb{E}\lVert\varepsilon - \hat\varepsilon\rVert^2`,

    .. math::

        w_t = \frac{\beta_t^2}{2\tilde\beta_t\,\alpha_t\,(1-\bar\alpha_t)}
            = \frac{\beta_t}{2\alpha_t(1 - \bar\alpha_{t-1})}
            = \frac12\Big(\frac{\mathrm{SNR}_{t-1}}{\mathrm{SNR}_t} - 1\Big)

    (Ho eq. 12; the SNR form is Kingma et al. 2021 eq. 13 rewritten for :math:`\varepsilon`). Float64 (T,);
    entry 0 (the paper's t = 1, whose term is the decoder :math:`L_0`) is ``inf``.
    """
    a = check_alphas_cumprod(alphas_cumprod).to(torch.float64)
    ap = _abar_prev(a)
    alpha = a / ap
    return (1 - alpha) / (2 * alpha * (1 - ap))


def normal_kl(mean1, var1, mean2, var2) -> torch.Tensor:
    r"""Elementwise :math:`\mathrm{KL}(\mathcal{N}(m_1, v_1) \,\|\, \mathcal{N}(m_2, v_2))
    = \frac12\big(\log\frac{v_2}{v_1} + \frac{v_1 + (m_1 - m_2)^2}{v_2} - 1\big)`
    in nats (broadcasting; variances > 0).

    Args:
        mean1, var1, mean2, var2: floating-point tensors that broadcast together; the variances > 0.

    Returns:
        The broadcast tensor of KL values, nats, >= 0 up to rounding.

    Raises:
        TypeError: an argument is not a floating-point tensor. ValueError: NaN/Inf, a variance <= 0, or shapes
            that do not broadcast.
    """
    for name, m in (("mean1", mean1), ("mean2", mean2)):
        check_floating(name, m)
    for name, v in (("var1", var1), ("var2", var2)):
        check_all_positive(name, check_floating(name, v))
    check_broadcastable(mean1=mean1, var1=var1, mean2=mean2, var2=var2)
    return 0.5 * (torch.log(var2) - torch.log(var1) + (var1 + (mean1 - mean2) ** 2) / var2 - 1.0)


def _std_normal_cdf(x):
    return 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))


def discretized_gaussian_log_likelihood(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor, *,
                                        levels: int) -> torch.Tensor:
    r"""Log-probability (nats, per element) of discrete data under a Gaussian integrated over each value's bin
    (Ho et al. 2020, eq. 13, the decoder :math:`L_0`). Data take ``levels`` equally spaced values in [-1, 1]
    (bin half-width :math:`1/(\text{levels}-1)`); the two outer bins extend to :math:`\pm\infty`, so the
    probabilities over the levels sum to 1.

    Args:
        x: float (N, ...) with values on the grid ``-1 + 2k/(levels-1)``. mean, log_scale: broadcastable to x
            (log of the standard deviation). levels: number of values (17 for the 8x8 digits, 256 for
            8-bit images).

    Returns:
        float64 tensor of x's shape: log-probabilities (<= 0).

    Raises:
        TypeError: x, mean or log_scale not a floating-point tensor. ValueError: levels < 2, NaN/Inf in x, mean
            or log_scale, x off the grid / outside [-1, 1], or mean / log_scale not broadcastable to x's shape.
    """
    levels = check_positive_int("levels", levels)
    if levels < 2:
        raise ValueError(f"levels must be >= 2, got {levels}")
    check_batch("x", x)
    check_floating("mean", mean)
    check_floating("log_scale", log_scale)
    if check_broadcastable(x=x, mean=mean, log_scale=log_scale) != x.shape:
        raise ValueError(f"mean and log_scale must broadcast to x's shape {tuple(x.shape)}, got mean "
                         f"{tuple(mean.shape)} and log_scale {tuple(log_scale.shape)}")
    half = 1.0 / (levels - 1)
    x64 = x.to(torch.float64)
    k = (x64 + 1) / (2 * half)
    if bool((k - k.round()).abs().max() > 1e-4) or float(x64.min()) < -1 - 1e-6 or float(x64.max()) > 1 + 1e-6:
        raise ValueError(f"x must lie on the grid of {levels} values in [-1, 1] (spacing {2 * half:g})")
    inv_s = torch.exp(-log_scale.to(torch.float64))
    centred = x64 - mean.to(torch.float64)
    cdf_plus = _std_normal_cdf((centred + half) * inv_s)
    cdf_minus = _std_normal_cdf((centred - half) * inv_s)
    log_cdf_plus = torch.log(cdf_plus.clamp_min(1e-300))
    log_one_minus_cdf_min = torch.log((1 - cdf_minus).clamp_min(1e-300))
    log_mid = torch.log((cdf_plus - cdf_minus).clamp_min(1e-300))
    return torch.where(x64 < -1 + 1e-6, log_cdf_plus, torch.where(x64 > 1 - 1e-6, log_one_minus_cdf_min, log_mid))


@torch.no_grad()
def vlb_terms(model, x0: torch.Tensor, alphas_cumprod: torch.Tensor, *, levels: int, generator=None) -> dict:
    r"""Every term of the variational bound (Ho eq. 5) for each image, one noise draw per term:

    .. math::

        -\log p_\theta(x_0) \le \underbrace{\mathrm{KL}(q(x_T \mid x_0) \,\|\, p(x_T))}_{L_T}
        + \sum_{t=2}^{T} \underbrace{\mathbb{E}_q\,\mathrm{KL}(q(x_{t-1} \mid x_t, x_0)
            \,\|\, p_\theta(x_{t-1} \mid x_t))}_{L_{t-1}}
        \underbrace{- \mathbb{E}_q \log p_\theta(x_0 \mid x_1)}_{L_0}.

    :math:`p_\theta(x_{t-1} \mid x_t)` uses the epsilon parameterisation *without clipping* and variance
    :math:`\tilde\beta_t`; the decoder :math:`L_0` is :func:`discretized_gaussian_log_likelihood` with mean
    :math:`\mu_\theta(x_1, 1)` and variance :math:`\tilde\beta_2` (the first non-zero one, as Ho et al.'s and
    Nichol & Dhariwal's code). Each :math:`L_{t-1}` is estimated with one :math:`x_t \sim q(x_t \mid x_0)`.

    Args:
        model: noise model (eval mode). x0: (N, ...) on the grid of ``levels`` values in [-1, 1].
        alphas_cumprod: (T,) with T >= 2. levels: see :func:`discretized_gaussian_log_likelihood`.
        generator: optional, for the noise.

    Returns:
        dict of float64 tensors, nats per image: ``prior`` (N,) :math:`L_T`; ``terms`` (T-1, N) with row
        ``t-2`` holding :math:`L_{t-1}` for paper times t = 2..T; ``decoder`` (N,) :math:`L_0`; ``total`` (N,)
        the bound on :math:`-\log p_\theta(x_0)`; and ``mse`` (T, N) the summed squared noise errors
        (row ``t`` for code index ``t``).
    """
    check_batch("x0", x0)
    a = check_alphas_cumprod(alphas_cumprod).to(x0.device)
    T, n = a.numel(), x0.shape[0]
    if T < 2:
        raise ValueError("vlb_terms needs T >= 2")
    dims = tuple(range(1, x0.ndim))
    abT = float(a[-1])
    x64 = x0.to(torch.float64)
    prior = normal_kl(abT**0.5 * x64, torch.tensor(1 - abT, dtype=torch.float64, device=x0.device),
                      torch.zeros_like(x64), torch.ones_like(x64)).sum(dims)
    terms, mses = [], []
    decoder = None
    post_var_1 = None
    for t in range(T):
        eps = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        xt = q_sample(x0, t, eps, a)
        tt = torch.full((n,), t, device=x0.device, dtype=torch.long)
        eps_hat = model(xt, tt)
        mses.append(((eps.to(torch.float64) - eps_hat.to(torch.float64)) ** 2).sum(dims))
        mean_p, var_p, _ = p_mean_variance(eps_hat.to(torch.float64), xt.to(torch.float64), tt, a, clip=False)
        if t == 0:
            first_eps_hat_mean = mean_p
        else:
            mean_q, var_q = q_posterior_mean_variance(x64, xt.to(torch.float64), tt, a)
            terms.append(normal_kl(mean_q, var_q, mean_p, var_p).sum(dims))
            if t == 1:
                post_var_1 = var_q
    log_scale = 0.5 * torch.log(post_var_1)
    decoder = -discretized_gaussian_log_likelihood(x0, first_eps_hat_mean, log_scale, levels=levels).sum(dims)
    terms = torch.stack(terms)
    return {"prior": prior, "terms": terms, "decoder": decoder, "total": prior + terms.sum(0) + decoder,
            "mse": torch.stack(mses)}


# ------------------------------------------------------------------------------------------------
# Data scaling
# ------------------------------------------------------------------------------------------------


def to_model_space(x: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] -> [-1, 1] (``2x - 1``), the range the forward process assumes (signal variance
    about 1, like the noise). Raises ValueError outside [0, 1]."""
    check_batch("x", x)
    if x.numel() and (float(x.min()) < 0 or float(x.max()) > 1):
        raise ValueError(f"x must lie in [0, 1], got [{float(x.min()):.3g}, {float(x.max()):.3g}]")
    return 2 * x - 1


def to_image_space(x: torch.Tensor) -> torch.Tensor:
    """Model outputs in [-1, 1] -> images in [0, 1] (``(x + 1) / 2``, clipped), e.g. for plots and metrics."""
    check_batch("x", x)
    return ((x + 1) / 2).clamp(0.0, 1.0)
