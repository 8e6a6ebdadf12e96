r"""Disentanglement and controllability: beta-VAE, the DCI and MIG metrics, InfoGAN's code, StyleGAN's ideas.

Conventions: ``codes`` are float ``(N, D)`` (one row per example, one column per latent), ``factors`` are
``(N, K)`` ground-truth factors of variation (integer level indices for the discrete factors of
:func:`coursekit.data.load_sprites`). Mutual informations and entropies are in **nats** unless a function says
otherwise; the DCI entropies use the logarithm to base K (disentanglement) or D (completeness), so that each score
lies in [0, 1].

* beta-VAE (Higgins et al. 2017): :func:`beta_vae_loss` with the reconstruction term summed over pixels (the
  convention of :func:`coursekit.vae.elbo`) or averaged, and :func:`summed_beta`, the conversion between the two.
* DCI (Eastwood & Williams 2018): :func:`importance_matrix` (lasso or gradient-boosted trees, scikit-learn),
  :func:`dci_from_importance` and :func:`dci`.
* MIG (Chen et al. 2018): :func:`discretise`, :func:`discrete_mutual_information`, :func:`mig`.
* InfoGAN (Chen et al. 2016): :func:`infogan_mi_lower_bound`, :class:`InfoGANDiscriminator`,
  :func:`infogan_players` (players for :func:`coursekit.train.fit_players`), :func:`matched_agreement`.
* StyleGAN's ideas (Karras et al. 2019, 2020) at 16 x 16: :func:`adain` (Huang & Belongie 2017),
  :class:`MappingNetwork`, :class:`StyleGenerator` (learnt constant, AdaIN, noise injection, style mixing,
  progressive growing with fade-in as in Karras et al. 2018), :class:`SpritesDiscriminator`, :func:`fade_in`,
  :func:`perceptual_path_length`, :func:`linear_separability`.
* Control: :func:`latent_traversal`, :func:`linear_probe_direction`, :class:`SpritesFactorClassifier`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ._validate import (
    check_choice,
    check_finite,
    check_floating,
    check_matrix,
    check_nonnegative_float,
    check_nonnegative_int,
    check_positive_float,
    check_positive_int,
    check_same_shape,
    check_shape,
    check_tensor,
)
from .data import SPRITE_FACTORS, SPRITE_SIZE
from .divergences import conditional_entropy, entropy, mutual_information
from .gan import DigitsDiscriminator, discriminator_loss, generator_loss
from .nets import MLP
from .train import Player, frozen
from .vae import elbo

__all__ = [
    "summed_beta",
    "beta_vae_loss",
    "latent_traversal",
    "dci_from_importance",
    "importance_matrix",
    "dci",
    "discretise",
    "discrete_mutual_information",
    "mig",
    "infogan_mi_lower_bound",
    "InfoGANDiscriminator",
    "infogan_players",
    "matched_agreement",
    "adain",
    "MappingNetwork",
    "StyleGenerator",
    "SpritesDiscriminator",
    "fade_in",
    "slerp",
    "perceptual_path_length",
    "linear_separability",
    "linear_probe_direction",
    "SpritesFactorClassifier",
    "factor_classifier_loss",
]


# --------------------------------------------------------------------------------------------- beta-VAE
def summed_beta(beta_mean: float, data_dim: int) -> float:
    r"""The KL weight on a *summed* reconstruction that matches ``beta_mean`` on a per-pixel *averaged* one.

    .. math::

        \frac1D \sum_{j=1}^D \log p(x_j|z) - \beta_{\text{mean}}\, \mathrm{KL}
        = \frac1D \Big(\sum_{j=1}^D \log p(x_j|z) - D \beta_{\text{mean}}\, \mathrm{KL}\Big),

    so the two objectives have the same maximiser when :math:`\beta_{\text{sum}} = D\,\beta_{\text{mean}}`.
    Higgins et al. (2017) report :math:`\beta_{\text{norm}} = \beta M / N` for M latents and N pixels for the same
    reason.

    Args:
        beta_mean: KL weight >= 0 next to an averaged reconstruction. data_dim: D >= 1 (pixels).

    Returns:
        float, ``beta_mean * data_dim``.
    """
    return check_nonnegative_float("beta_mean", beta_mean) * check_positive_int("data_dim", data_dim)


def beta_vae_loss(model, batch, beta: float = 1.0, reconstruction: str = "sum"):
    r"""Loss for :func:`coursekit.train.fit`: the negative beta-VAE objective (Higgins et al. 2017).

    ``reconstruction="sum"``: :math:`-\mathrm{mean}_n[\sum_j \log p(x_{nj}|z_n) - \beta\,\mathrm{KL}_n]`, the
    objective of :func:`coursekit.vae.vae_loss` (nats per example). ``"mean"``: the reconstruction is averaged over
    the D pixels instead, :math:`-\mathrm{mean}_n[\frac1D\sum_j \log p(x_{nj}|z_n) - \beta\,\mathrm{KL}_n]`, which
    weighs the KL D times more for the same beta (see :func:`summed_beta`).

    Args:
        model: a :class:`coursekit.vae.VAE`. batch: ``x`` (N, D) in [0, 1] or a tuple whose first entry is ``x``.
        beta: KL weight >= 0. reconstruction: ``"sum"`` or ``"mean"``.

    Returns:
        ``(loss, metrics)``: a scalar tensor and floats ``elbo``, ``rec``, ``kl`` (batch means, nats per example,
        always with the summed reconstruction, so runs with either convention are comparable).

    Raises:
        ValueError: beta < 0, unknown ``reconstruction``, bad ``x`` (as :func:`coursekit.vae.elbo`).
    """
    check_choice("reconstruction", reconstruction, ("sum", "mean"))
    beta = check_nonnegative_float("beta", beta)
    x = batch[0] if isinstance(batch, (tuple, list)) else batch
    out = elbo(model, x, beta=beta)
    scale = 1.0 if reconstruction == "sum" else 1.0 / model.data_dim
    loss = -(scale * out["rec"] - beta * out["kl"]).mean()
    return loss, {k: float(out[k].detach().mean()) for k in ("elbo", "rec", "kl")}


@torch.no_grad()
def latent_traversal(decode: Callable, z0: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Decode ``z0`` with one latent at a time set to each of ``values``: row i varies latent i, the rest fixed.

    Args:
        decode: ``decode(z)`` for z of shape (M, d), returning (M, ...) images (e.g. probabilities).
        z0: (d,) float, the base code. values: (V,) float, the values given to each latent in turn.

    Returns:
        ``(d, V, ...)`` tensor, entry ``[i, v]`` = ``decode(z0 with z_i = values[v])``.

    Raises:
        TypeError / ValueError: not 1-d float tensors, NaN.
    """
    check_floating("z0", z0)
    check_floating("values", values)
    check_shape("z0", z0, ("d",))
    check_shape("values", values, ("V",))
    d, v = z0.shape[0], values.shape[0]
    z = z0.expand(d, v, d).clone()
    idx = torch.arange(d, device=z0.device)
    z[idx, :, idx] = values.to(z0).expand(d, v)
    out = decode(z.reshape(d * v, d))
    return out.reshape(d, v, *out.shape[1:])


# --------------------------------------------------------------------------------------------- DCI
def _normalised_entropy(p: torch.Tensor, base: int) -> torch.Tensor:
    """Entropy of the rows of p (probability vectors) divided by log(base): in [0, 1] for base = row length."""
    return entropy(p) / math.log(base)


def dci_from_importance(importance) -> dict:
    r"""Disentanglement and completeness of an importance matrix (Eastwood & Williams 2018).

    For :math:`R \in \mathbb R_{\ge 0}^{D \times K}` (latent i, factor j):

    .. math::

        P_{ij} = \frac{R_{ij}}{\sum_k R_{ik}}, \quad D_i = 1 - H_K(P_{i\cdot}), \quad
        \rho_i = \frac{\sum_j R_{ij}}{\sum_{ij} R_{ij}}, \quad \text{disentanglement} = \sum_i \rho_i D_i;

        \tilde P_{ij} = \frac{R_{ij}}{\sum_k R_{kj}}, \quad C_j = 1 - H_D(\tilde P_{\cdot j}), \quad
        \tilde\rho_j = \frac{\sum_i R_{ij}}{\sum_{ij} R_{ij}}, \quad \text{completeness} = \sum_j \tilde\rho_j C_j,

    with :math:`H_b(p) = -\sum p \log_b p` (logarithm to base K for a latent's distribution over factors, to base D
    for a factor's distribution over latents, so :math:`D_i, C_j \in [0, 1]`; ``0 log 0 = 0``). A latent (factor)
    with zero total importance gets score 0 and weight 0.

    Args:
        importance: float (D, K) tensor or array, entries >= 0 and finite, D >= 2 latents, K >= 2 factors,
            not all zero.

    Returns:
        dict with floats ``disentanglement``, ``completeness`` and float64 tensors ``per_latent`` (D,),
        ``per_factor`` (K,), ``latent_weights`` (D,), ``factor_weights`` (K,).

    Raises:
        TypeError: not floating point. ValueError: wrong shape, fewer than 2 rows or columns, negative entries,
        NaN/Inf, all zero.
    """
    r = torch.as_tensor(importance)
    check_floating("importance", r)
    check_shape("importance", r, ("D", "K"))
    r = r.to(torch.float64)
    n_lat, n_fac = r.shape
    if n_lat < 2 or n_fac < 2:
        raise ValueError(f"importance must have at least 2 latents (rows) and 2 factors (columns), got shape "
                         f"{tuple(r.shape)}: a logarithm to base 1 is undefined")
    if bool((r < 0).any()):
        raise ValueError("importance must be non-negative (use absolute lasso coefficients)")
    total = r.sum()
    if float(total) <= 0:
        raise ValueError("importance is all zero: no latent predicts any factor")
    row, col = r.sum(1), r.sum(0)
    p_row = torch.where(row[:, None] > 0, r / row[:, None].clamp_min(1e-300), 1.0 / n_fac)
    p_col = torch.where(col[None, :] > 0, r / col[None, :].clamp_min(1e-300), 1.0 / n_lat)
    d_i = torch.where(row > 0, 1 - _normalised_entropy(p_row, n_fac), 0.0)
    c_j = torch.where(col > 0, 1 - _normalised_entropy(p_col.T, n_lat), 0.0)
    rho, rho_f = row / total, col / total
    return {"disentanglement": float((rho * d_i).sum()), "completeness": float((rho_f * c_j).sum()),
            "per_latent": d_i, "per_factor": c_j, "latent_weights": rho, "factor_weights": rho_f}


def _as_numpy_matrix(name: str, x) -> np.ndarray:
    t = torch.as_tensor(x)
    check_matrix(name, t.to(torch.float64) if not t.is_floating_point() else t, min_rows=2)
    return t.detach().cpu().to(torch.float64).numpy()


def _standardise(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mu, sd = train.mean(0), train.std(0)
    sd = np.where(sd > 1e-12, sd, 1.0)
    return (train - mu) / sd, (test - mu) / sd


def importance_matrix(codes, factors, *, regressor: str = "lasso", alpha: float = 0.01, n_estimators: int = 50,
                      test_fraction: float = 0.25, seed: int = 0) -> dict:
    r"""Importance of each latent for predicting each factor, and how well the factors are predicted.

    Codes and factors are standardised (train-split mean and standard deviation); for each factor j a regressor
    predicts :math:`v_j` from all D latents on a random train split, and :math:`R_{ij}` is

    * ``"lasso"``: :math:`|W_{ij}|`, the absolute coefficient of latent i in an L1-penalised linear regression
      (``sklearn.linear_model.Lasso(alpha)``; Eastwood & Williams 2018 use lasso and random forests);
    * ``"gbt"``: the impurity importance of latent i in gradient-boosted trees
      (``sklearn.ensemble.GradientBoostingRegressor``, ``n_estimators`` trees of depth 3), which sums to 1 per factor.

    Informativeness of factor j is the test :math:`R^2 = 1 - \mathrm{MSE}_j / \mathrm{Var}(v_j)
    = 1 - \mathrm{NRMSE}_j^2` of its regressor (1: perfectly predicted; 0: no better than the mean).

    Args:
        codes: float (N, D), N >= 8. factors: (N, K), integer levels or floats.
        regressor: ``"lasso"`` or ``"gbt"``. alpha: lasso penalty > 0. n_estimators: trees >= 1.
        test_fraction: share of rows held out, in (0, 1). seed: seed of the split (and the trees).

    Returns:
        dict: ``importance`` float64 (D, K) tensor, ``informativeness`` (K,) tensor of test R^2,
        ``informativeness_mean`` float.

    Raises:
        TypeError / ValueError: shapes, NaN, row counts differing, bad parameters.
    """
    from sklearn.ensemble import GradientBoostingRegressor
    from sklearn.linear_model import Lasso

    check_choice("regressor", regressor, ("lasso", "gbt"))
    alpha = check_positive_float("alpha", alpha)
    n_estimators = check_positive_int("n_estimators", n_estimators)
    seed = check_nonnegative_int("seed", seed)
    if not 0 < float(test_fraction) < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    z, v = _as_numpy_matrix("codes", codes), _as_numpy_matrix("factors", factors)
    if z.shape[0] != v.shape[0] or z.shape[0] < 8:
        raise ValueError(f"codes and factors need the same number of rows (>= 8), got {z.shape[0]} and {v.shape[0]}")
    perm = np.random.RandomState(seed).permutation(z.shape[0])
    n_test = max(2, round(test_fraction * z.shape[0]))
    te, tr = perm[:n_test], perm[n_test:]
    z_tr, z_te = _standardise(z[tr], z[te])
    v_tr, v_te = _standardise(v[tr], v[te])
    imp = np.zeros((z.shape[1], v.shape[1]))
    r2 = np.zeros(v.shape[1])
    for j in range(v.shape[1]):
        if regressor == "lasso":
            model = Lasso(alpha=alpha, max_iter=10_000).fit(z_tr, v_tr[:, j])
            imp[:, j] = np.abs(model.coef_)
        else:
            model = GradientBoostingRegressor(n_estimators=n_estimators, max_depth=3, random_state=seed)
            model.fit(z_tr, v_tr[:, j])
            imp[:, j] = np.clip(model.feature_importances_, 0.0, None)  # rounding can give -1e-17
        var = v_te[:, j].var()
        r2[j] = 1 - ((model.predict(z_te) - v_te[:, j]) ** 2).mean() / var if var > 0 else 0.0
    return {"importance": torch.from_numpy(imp), "informativeness": torch.from_numpy(r2),
            "informativeness_mean": float(r2.mean())}


def dci(codes, factors, **kw) -> dict:
    """DCI of codes for factors: :func:`importance_matrix` then :func:`dci_from_importance`.

    Args:
        codes, factors, **kw: as :func:`importance_matrix`.

    Returns:
        dict: ``disentanglement``, ``completeness``, ``informativeness`` (the mean test R^2), all floats, and the
        ``importance`` matrix.
    """
    imp = importance_matrix(codes, factors, **kw)
    scores = dci_from_importance(imp["importance"])
    return {"disentanglement": scores["disentanglement"], "completeness": scores["completeness"],
            "informativeness": imp["informativeness_mean"], "importance": imp["importance"]}


# --------------------------------------------------------------------------------------------- MIG
def discretise(codes, n_bins: int = 20) -> torch.Tensor:
    """Equal-width histogram bins per column: bin b of column i covers [min_i + b w_i, min_i + (b + 1) w_i),
    w_i = (max_i - min_i) / n_bins, the maximum going into the last bin (as ``np.histogram``).

    Args:
        codes: float (N, D). n_bins: >= 2.

    Returns:
        int64 (N, D) in 0..n_bins - 1 (a constant column is all 0).
    """
    n_bins = check_positive_int("n_bins", n_bins)
    if n_bins < 2:
        raise ValueError(f"n_bins must be >= 2, got {n_bins}")
    z = torch.as_tensor(codes)
    check_floating("codes", z)
    check_matrix("codes", z)
    z = z.to(torch.float64)
    lo, hi = z.min(0).values, z.max(0).values
    width = torch.where(hi > lo, (hi - lo) / n_bins, torch.ones_like(hi))
    return ((z - lo) / width).floor().clamp(0, n_bins - 1).long()


def discrete_mutual_information(a: torch.Tensor, b: torch.Tensor) -> float:
    r"""Plug-in mutual information :math:`\hat I(a; b)` of two discrete samples, in nats.

    The empirical joint table :math:`\hat p(a, b) = \#\{n: a_n = a, b_n = b\} / N` is passed to
    :func:`coursekit.divergences.mutual_information`.

    Args:
        a, b: int64 (N,) non-negative labels.

    Returns:
        float, nats, >= 0.
    """
    for name, t in (("a", a), ("b", b)):
        check_tensor(name, t)
        if t.dtype != torch.int64 or t.ndim != 1:
            raise TypeError(f"{name} must be a 1-d int64 tensor of labels, got {t.dtype} of shape {tuple(t.shape)}")
        if t.numel() == 0 or bool((t < 0).any()):
            raise ValueError(f"{name} must be non-empty with labels >= 0")
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same length, got {a.shape[0]} and {b.shape[0]}")
    na, nb = int(a.max()) + 1, int(b.max()) + 1
    joint = torch.bincount(a * nb + b, minlength=na * nb).reshape(na, nb).to(torch.float64) / a.numel()
    return float(mutual_information(joint))


def _factor_labels(factors) -> torch.Tensor:
    f = torch.as_tensor(factors)
    check_tensor("factors", f)
    if f.is_floating_point() or f.dtype == torch.bool:
        raise TypeError(f"factors must be integer level indices (N, K), got {f.dtype}; discretise continuous "
                        "factors first")
    check_shape("factors", f, ("N", "K"))
    f = f.long().cpu()
    if bool((f < 0).any()):
        raise ValueError("factors must be level indices >= 0")
    return f


def mig(codes, factors, n_bins: int = 20) -> dict:
    r"""Mutual information gap (Chen et al. 2018) with codes discretised into ``n_bins`` equal-width bins.

    .. math::

        \mathrm{MIG} = \frac1K \sum_{k=1}^K \frac{\hat I(z_{j^{(k)}}; v_k) - \max_{j \ne j^{(k)}} \hat I(z_j; v_k)}
        {\hat H(v_k)}, \qquad j^{(k)} = \arg\max_j \hat I(z_j; v_k),

    with plug-in estimates (:func:`discrete_mutual_information`) on the binned codes (:func:`discretise`) and the
    discrete factors; :math:`\hat I \le \hat H(v_k)`, so each term lies in [0, 1]. Chen et al. estimate
    :math:`I(z_j; v_k)` from the encoder's distribution; binning the codes, as here, is the common variant of
    Locatello et al. (2019).

    Args:
        codes: float (N, D), D >= 2. factors: integer (N, K) level indices, each factor with >= 2 levels present.
        n_bins: bins per latent, >= 2.

    Returns:
        dict: ``mig`` float, ``per_factor`` (K,) float64 tensor, ``mi`` (D, K) nats, ``entropy`` (K,) nats.

    Raises:
        TypeError / ValueError: float factors, shapes, NaN, D < 2, a constant factor.
    """
    z = discretise(codes, n_bins)
    f = _factor_labels(factors)
    if z.shape[0] != f.shape[0]:
        raise ValueError(f"codes and factors need the same number of rows, got {z.shape[0]} and {f.shape[0]}")
    if z.shape[1] < 2:
        raise ValueError("MIG needs at least 2 latents (the gap is between the best and the second best)")
    n_lat, n_fac = z.shape[1], f.shape[1]
    mi = torch.zeros(n_lat, n_fac, dtype=torch.float64)
    h = torch.zeros(n_fac, dtype=torch.float64)
    for k in range(n_fac):
        counts = torch.bincount(f[:, k]).to(torch.float64)
        h[k] = entropy(counts / counts.sum())
        if float(h[k]) <= 0:
            raise ValueError(f"factors column {k} is constant: its entropy is 0 and MIG divides by it")
        for j in range(n_lat):
            mi[j, k] = discrete_mutual_information(z[:, j].cpu(), f[:, k])
    top2 = mi.topk(2, dim=0).values
    per_factor = (top2[0] - top2[1]) / h
    return {"mig": float(per_factor.mean()), "per_factor": per_factor, "mi": mi, "entropy": h}


# --------------------------------------------------------------------------------------------- InfoGAN
def infogan_mi_lower_bound(q_logits: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    r"""InfoGAN's variational lower bound on :math:`I(c; G(z, c))` for a uniform categorical code (nats).

    .. math::

        I(c; x) = H(c) - H(c \mid x) \ge H(c) + \mathbb E_{c, x}[\log Q(c \mid x)]
        = \log K - \mathbb E[-\log Q(c \mid x)]

    (Chen et al. 2016), with equality when :math:`Q(c|x) = p(c|x)`; here estimated on a batch
    of codes and the logits of Q on the images generated from them. Always :math:`\le \log K`.

    Args:
        q_logits: float (N, K) logits of :math:`Q(c \mid x)`. codes: int64 (N,) in 0..K-1, drawn uniformly.

    Returns:
        0-dim tensor, differentiable in ``q_logits``: ``log K - cross_entropy(q_logits, codes)``.
    """
    check_floating("q_logits", q_logits)
    check_shape("q_logits", q_logits, ("N", "K"))
    check_tensor("codes", codes)
    if codes.dtype != torch.int64 or codes.shape != q_logits.shape[:1]:
        raise ValueError(f"codes must be int64 of shape ({q_logits.shape[0]},), got {codes.dtype} "
                         f"{tuple(codes.shape)}")
    k = q_logits.shape[1]
    if bool((codes < 0).any()) or bool((codes >= k).any()):
        raise ValueError(f"codes must lie in 0..{k - 1}")
    return math.log(k) - F.cross_entropy(q_logits, codes)


class InfoGANDiscriminator(nn.Module):
    r"""A discriminator of 8x8 digits with InfoGAN's Q head on its features (Chen et al. 2016).

    ``d`` is a :class:`coursekit.gan.DigitsDiscriminator`; Q shares its convolutional features
    :math:`\phi(x)` (N, 32C) and adds ``Linear(32C, 64) -> LeakyReLU -> Linear(64, n_codes)``.

    Shapes: ``forward(x)`` -> logits (N,); ``q_logits(x)`` -> (N, n_codes); ``both(x)`` -> the two at once.
    """

    def __init__(self, n_codes: int = 10, channels: int = 16):
        super().__init__()
        self.n_codes = check_positive_int("n_codes", n_codes)
        self.d = DigitsDiscriminator(channels)
        width = self.d.head.in_features
        self.q = nn.Sequential(nn.Linear(width, 64), nn.LeakyReLU(0.2), nn.Linear(64, self.n_codes))

    def both(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = x.reshape(-1, 1, 8, 8) if x.ndim == 2 else x
        check_shape("x", x, ("N", 1, 8, 8))
        phi = self.d.features(2 * x - 1)
        return self.d.head(phi).squeeze(1), self.q(phi)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.both(x)[0]

    def q_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.both(x)[1]


def infogan_players(generator: nn.Module, discriminator: InfoGANDiscriminator, *, noise_dim: int, batch_size: int,
                    info_weight: float = 1.0, lr_g: float = 2e-4, lr_d: float = 2e-4, seed: int = 0):
    r"""The two players of InfoGAN for :func:`coursekit.train.fit_players`, and their latent stream.

    Latents: :math:`z \sim \mathcal N(0, I)` of size ``noise_dim`` and a uniform code :math:`c \in \{0..K-1\}`;
    ``generator(z, c)`` is e.g. a conditional :class:`coursekit.gan.DigitsGenerator` with ``n_classes=K``, whose
    one-hot input is the code. With :math:`\mathcal L_I` = :func:`infogan_mi_lower_bound` and weight
    :math:`\lambda` (Chen et al. 2016):

    * discriminator (and Q): BCE on real vs generated (:func:`coursekit.gan.discriminator_loss`)
      :math:`- \lambda \mathcal L_I` on the generated batch (no gradient into G);
    * generator: non-saturating loss :math:`- \lambda \mathcal L_I` (discriminator and Q frozen).

    Returns:
        ``(players, generators)``: a list of two :class:`coursekit.train.Player` (Adam, betas (0.5, 0.999)) and
        ``{"latents": torch.Generator}`` for ``fit_players(..., generators=...)``. The history logs ``mi_bound``
        (nats) and ``d_real``/``d_fake``.
    """
    noise_dim = check_positive_int("noise_dim", noise_dim)
    batch_size = check_positive_int("batch_size", batch_size)
    lam = check_nonnegative_float("info_weight", info_weight)
    k = discriminator.n_codes
    rng = torch.Generator().manual_seed(check_nonnegative_int("seed", seed) + 1)
    dev = next(generator.parameters()).device

    def latents():
        z = torch.randn(batch_size, noise_dim, generator=rng).to(dev)
        return z, torch.randint(k, (batch_size,), generator=rng).to(dev)

    def d_loss(batch):
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        z, c = latents()
        with torch.no_grad():
            fake = generator(z, c)
        real_logit, _ = discriminator.both(x)
        fake_logit, q = discriminator.both(fake)
        bound = infogan_mi_lower_bound(q, c)
        loss = discriminator_loss(real_logit, fake_logit) - lam * bound
        return loss, {"mi_bound": float(bound.detach()), "d_real": float(torch.sigmoid(real_logit.detach()).mean()),
                      "d_fake": float(torch.sigmoid(fake_logit.detach()).mean())}

    def g_loss(_batch):
        with frozen(discriminator):
            z, c = latents()
            fake_logit, q = discriminator.both(generator(z, c))
            return generator_loss(fake_logit, "non_saturating") - lam * infogan_mi_lower_bound(q, c)

    opt_d = torch.optim.Adam(discriminator.parameters(), lr=lr_d, betas=(0.5, 0.999))
    opt_g = torch.optim.Adam(generator.parameters(), lr=lr_g, betas=(0.5, 0.999))
    players = [Player("discriminator", discriminator, opt_d, d_loss, loss_key="loss_d"),
               Player("generator", generator, opt_g, g_loss, uses_batch=False, loss_key="loss_g")]
    return players, {"latents": rng}


def matched_agreement(codes: torch.Tensor, labels: torch.Tensor, n_codes: int, n_classes: int) -> dict:
    """Agreement of an unsupervised code with class labels after the best one-to-one matching (Hungarian).

    The confusion counts :math:`M_{ck} = \\#\\{n: c_n = c, y_n = k\\}` are matched by
    ``scipy.optimize.linear_sum_assignment`` maximising the matched count (Kuhn 1955); InfoGAN's categories come
    in an arbitrary order, so raw agreement is meaningless.

    Args:
        codes: int64 (N,) in 0..n_codes-1. labels: int64 (N,) in 0..n_classes-1.

    Returns:
        dict: ``accuracy`` float (matched share), ``mapping`` int64 (n_codes,) (class of each code, -1 if
        unmatched), ``confusion`` int64 (n_codes, n_classes).
    """
    from scipy.optimize import linear_sum_assignment

    n_codes, n_classes = check_positive_int("n_codes", n_codes), check_positive_int("n_classes", n_classes)
    for name, t, m in (("codes", codes, n_codes), ("labels", labels, n_classes)):
        check_tensor(name, t)
        if t.dtype != torch.int64 or t.ndim != 1 or t.numel() == 0:
            raise TypeError(f"{name} must be a non-empty 1-d int64 tensor, got {t.dtype} {tuple(t.shape)}")
        if bool((t < 0).any()) or bool((t >= m).any()):
            raise ValueError(f"{name} must lie in 0..{m - 1}")
    if codes.shape != labels.shape:
        raise ValueError("codes and labels must have the same length")
    conf = torch.bincount(codes.cpu() * n_classes + labels.cpu(), minlength=n_codes * n_classes)
    conf = conf.reshape(n_codes, n_classes)
    rows, cols = linear_sum_assignment(-conf.numpy())
    mapping = torch.full((n_codes,), -1, dtype=torch.int64)
    mapping[torch.as_tensor(rows)] = torch.as_tensor(cols, dtype=torch.int64)
    return {"accuracy": float(conf[rows, cols].sum()) / codes.numel(), "mapping": mapping, "confusion": conf}


# --------------------------------------------------------------------------------------------- StyleGAN
def adain(x: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    r"""Adaptive instance normalisation (Huang & Belongie 2017; Karras et al. 2019).

    .. math::

        \mathrm{AdaIN}(x, y)_{nc} = y_{s,nc}\frac{x_{nc} - \mu_{nc}(x)}{\sqrt{\sigma^2_{nc}(x) + \epsilon}} + y_{b,nc},

    with :math:`\mu_{nc}, \sigma^2_{nc}` the mean and (biased) variance of channel c of example n over the spatial
    positions. Each output channel has mean ``bias`` and standard deviation ``|scale|`` (up to the eps).

    Args:
        x: float (N, C, H, W) with H * W >= 2. scale, bias: float (N, C). eps: > 0.

    Returns:
        (N, C, H, W) tensor.
    """
    check_floating("x", x)
    check_shape("x", x, ("N", "C", "H", "W"))
    if x.shape[2] * x.shape[3] < 2:
        raise ValueError("adain needs at least 2 spatial positions per channel to normalise")
    for name, t in (("scale", scale), ("bias", bias)):
        check_floating(name, t)
        check_shape(name, t, (x.shape[0], x.shape[1]))
    eps = check_positive_float("eps", eps)
    mu = x.mean(dim=(2, 3), keepdim=True)
    var = x.var(dim=(2, 3), keepdim=True, unbiased=False)
    return scale[:, :, None, None] * (x - mu) / torch.sqrt(var + eps) + bias[:, :, None, None]


class MappingNetwork(nn.Module):
    r"""StyleGAN's mapping network :math:`f: \mathcal Z \to \mathcal W` (Karras et al. 2019).

    :math:`z` is normalised to unit root-mean-square (pixel norm), then a :class:`coursekit.nets.MLP` with
    LeakyReLU(0.2) maps it to :math:`w`. Shapes: (N, latent_dim) -> (N, w_dim).
    """

    def __init__(self, latent_dim: int = 8, w_dim: int = 32, hidden=(64, 64)):
        super().__init__()
        self.latent_dim = check_positive_int("latent_dim", latent_dim)
        self.w_dim = check_positive_int("w_dim", w_dim)
        self.net = MLP(self.latent_dim, self.w_dim, hidden, activation=lambda: nn.LeakyReLU(0.2))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        check_floating("z", z)
        check_shape("z", z, ("N", self.latent_dim))
        z = z * torch.rsqrt(z.pow(2).mean(1, keepdim=True) + 1e-8)
        return self.net(z)


class _StyleLayer(nn.Module):
    """conv 3x3 (optional) -> noise injection (learnt per-channel weight) -> LeakyReLU -> AdaIN(style of w)."""

    def __init__(self, in_ch: int, out_ch: int, w_dim: int, conv: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 3, padding=1) if conv else None
        self.noise_weight = nn.Parameter(torch.zeros(out_ch))
        self.style = nn.Linear(w_dim, 2 * out_ch)
        with torch.no_grad():  # style scale around 1 and bias around 0 at initialisation (weights: torch's default)
            self.style.bias.copy_(torch.cat([torch.ones(out_ch), torch.zeros(out_ch)]))

    def forward(self, x, w, noise):
        if self.conv is not None:
            x = self.conv(x)
        if noise is not None:
            x = x + self.noise_weight[None, :, None, None] * noise
        x = F.leaky_relu(x, 0.2)
        scale, bias = self.style(w).chunk(2, dim=1)
        return adain(x, scale, bias)


class StyleGenerator(nn.Module):
    r"""A small style-based generator of 16 x 16 images (Karras et al. 2019), with progressive growing.

    Synthesis: a learnt constant (C, 4, 4), then six style layers (two per resolution 4, 8, 16; nearest-neighbour
    upsampling between), each conv -> noise injection :math:`x + \lambda_c \cdot \text{noise}` (one noise image per
    layer, broadcast over channels, scaled per channel) -> LeakyReLU -> :func:`adain` with a style
    :math:`(y_s, y_b) = A_\ell w`. ``to_rgb8`` and ``to_rgb16`` are 1x1 convs to one channel; pixels are the sigmoid.

    Progressive growing (Karras et al. 2018): at ``stage = 8`` the output is the 8 x 8 image upsampled to
    16 x 16; at ``stage = 16`` the logits are :func:`fade_in` ``(up(rgb8), rgb16, alpha)``, so ``alpha = 0`` gives
    exactly the stage-8 output and ``alpha = 1`` the full network.

    Args:
        latent_dim: size of z. w_dim: size of w. channels: C. use_mapping: False feeds z (pixel-normalised and
            zero-padded/truncated to w_dim is not done: w_dim must equal latent_dim) straight to the styles.

    Shapes:
        ``forward(z)``: (N, latent_dim) -> (N, 1, 16, 16) in (0, 1). ``synthesis(w, noise=None)``: w (N, w_dim) or
        per-layer (N, 6, w_dim); noise a list of six (N, 1, r, r) tensors or None (fresh standard normal).
    """

    n_layers = 6
    resolutions = (4, 4, 8, 8, 16, 16)

    def __init__(self, latent_dim: int = 8, w_dim: int = 32, channels: int = 16, use_mapping: bool = True):
        super().__init__()
        self.latent_dim, c = check_positive_int("latent_dim", latent_dim), check_positive_int("channels", channels)
        self.w_dim = check_positive_int("w_dim", w_dim)
        if not use_mapping and self.w_dim != self.latent_dim:
            raise ValueError("without a mapping network w = z, so w_dim must equal latent_dim")
        self.mapping = MappingNetwork(self.latent_dim, self.w_dim) if use_mapping else None
        self.const = nn.Parameter(torch.randn(1, c, 4, 4))
        self.layers = nn.ModuleList([_StyleLayer(c, c, self.w_dim, conv=i > 0) for i in range(self.n_layers)])
        self.to_rgb8, self.to_rgb16 = nn.Conv2d(c, 1, 1), nn.Conv2d(c, 1, 1)
        self.stage, self.alpha = 16, 1.0

    def map(self, z: torch.Tensor) -> torch.Tensor:
        """z (N, latent_dim) -> w (N, w_dim) (w = pixel-normalised z without a mapping network)."""
        if self.mapping is not None:
            return self.mapping(z)
        check_shape("z", z, ("N", self.latent_dim))
        return z * torch.rsqrt(z.pow(2).mean(1, keepdim=True) + 1e-8)

    def make_noise(self, n: int, generator: torch.Generator | None = None) -> list[torch.Tensor]:
        """Six standard-normal noise images (n, 1, r, r), one per layer, on the parameters' device."""
        dev = self.const.device
        return [torch.randn(n, 1, r, r, generator=generator).to(dev) for r in self.resolutions]

    def synthesis(self, w: torch.Tensor, noise: list | None = None) -> torch.Tensor:
        check_floating("w", w)
        ws = w[:, None].expand(-1, self.n_layers, -1) if w.ndim == 2 else w
        check_shape("w", ws, ("N", self.n_layers, self.w_dim))
        n = ws.shape[0]
        noise = self.make_noise(n) if noise is None else noise
        x = self.const.expand(n, -1, -1, -1)
        last = 3 if self.stage == 8 else 5
        for i in range(last + 1):
            if i in (2, 4):
                x8 = x if i == 4 else None
                x = F.interpolate(x, scale_factor=2, mode="nearest")
            x = self.layers[i](x, ws[:, i], noise[i])
        if self.stage == 8:
            return torch.sigmoid(F.interpolate(self.to_rgb8(x), scale_factor=2, mode="nearest"))
        old = F.interpolate(self.to_rgb8(x8), scale_factor=2, mode="nearest")
        return torch.sigmoid(fade_in(old, self.to_rgb16(x), self.alpha))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.synthesis(self.map(z))


def fade_in(old: torch.Tensor, new: torch.Tensor, alpha: float) -> torch.Tensor:
    r"""Progressive growing's blend :math:`(1 - \alpha)\,\text{old} + \alpha\,\text{new}`, alpha in [0, 1]
    (Karras et al. 2018): the upsampled output of the old resolution and the new layer's.

    Args:
        old, new: float tensors of the same shape, finite. alpha: float in [0, 1].

    Returns:
        tensor of that shape; ``old`` exactly at alpha = 0 and ``new`` at alpha = 1.

    Raises:
        TypeError / ValueError: non-float or non-finite tensors, different shapes, alpha outside [0, 1].
    """
    check_floating("old", old)
    check_floating("new", new)
    alpha = check_nonnegative_float("alpha", alpha)
    if alpha > 1:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if old.shape != new.shape:
        raise ValueError(f"old and new must have the same shape, got {tuple(old.shape)} and {tuple(new.shape)}")
    return (1 - alpha) * old + alpha * new


class SpritesDiscriminator(nn.Module):
    """A discriminator of 16 x 16 sprites: conv 3x3 (C) -> conv 4x4/2 (2C, 8x8) -> conv 4x4/2 (2C, 4x4) -> linear,
    LeakyReLU(0.2), no normalisation. For progressive growing its input is first blended like the generator's
    output: at ``stage = 8`` the image is average-pooled to 8 x 8 and upsampled back, at ``stage = 16`` it is
    ``fade_in(that, x, alpha)``. Shapes: (N, 1, 16, 16) in [0, 1] -> logits (N,)."""

    def __init__(self, channels: int = 16):
        super().__init__()
        c = check_positive_int("channels", channels)
        self.net = nn.Sequential(
            nn.Conv2d(1, c, 3, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(c, 2 * c, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(2 * c, 2 * c, 4, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Flatten(), nn.Linear(2 * c * 16, 1))
        self.stage, self.alpha = 16, 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_shape("x", x, ("N", 1, SPRITE_SIZE, SPRITE_SIZE))
        if self.stage == 8 or self.alpha < 1:
            low = F.interpolate(F.avg_pool2d(x, 2), scale_factor=2, mode="nearest")
            x = low if self.stage == 8 else fade_in(low, x, self.alpha)
        return self.net(2 * x - 1).squeeze(1)


def slerp(a: torch.Tensor, b: torch.Tensor, t) -> torch.Tensor:
    r"""Spherical interpolation of the *directions* of a and b (rows), as in Karras et al. (2019):
    :math:`\frac{\sin((1-t)\Omega)}{\sin\Omega}\hat a + \frac{\sin(t\Omega)}{\sin\Omega}\hat b`, :math:`\cos\Omega =
    \hat a^\top \hat b`. a, b: (N, d); t: float or (N,). Returns unit vectors (N, d).

    Raises: TypeError / ValueError: a or b not finite float (N, d) of one shape, t not finite or of N entries."""
    check_shape("a", check_floating("a", a), ("N", "d"))
    check_same_shape(a=a, b=check_floating("b", b))
    t = check_finite("t", torch.as_tensor(t, dtype=a.dtype, device=a.device)).reshape(-1, 1)
    if t.shape[0] not in (1, a.shape[0]):
        raise ValueError(f"t must be a number or have one entry per row of a ({a.shape[0]}), got {t.shape[0]}")
    a, b = F.normalize(a, dim=1), F.normalize(b, dim=1)
    omega = torch.acos((a * b).sum(1, keepdim=True).clamp(-1 + 1e-7, 1 - 1e-7))
    return (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / torch.sin(omega)


@torch.no_grad()
def perceptual_path_length(generator: StyleGenerator, features: Callable, *, space: str = "w", n: int = 512,
                           epsilon: float = 1e-2, seed: int = 0) -> dict:
    r"""Perceptual path length (Karras et al. 2019), with a feature distance of our choosing.

    .. math::

        l_{\mathcal Z} = \mathbb E\Big[\tfrac{1}{\epsilon^2} d\big(G(\mathrm{slerp}(z_1, z_2; t)),
            G(\mathrm{slerp}(z_1, z_2; t + \epsilon))\big)\Big], \quad
        l_{\mathcal W} = \mathbb E\Big[\tfrac{1}{\epsilon^2} d\big(g(\mathrm{lerp}(w_1, w_2; t)),
            g(\mathrm{lerp}(w_1, w_2; t + \epsilon))\big)\Big],

    :math:`t \sim U(0, 1)`, :math:`w_i = f(z_i)`, :math:`d(x, x') = \lVert \phi(x) - \phi(x') \rVert^2` in the
    feature space :math:`\phi` = ``features`` (the paper uses LPIPS on VGG features); the two images of a pair share
    their noise inputs. In Z the slerp runs on the sphere of radius sqrt(latent_dim) (the typical norm of z).

    Args:
        generator: a :class:`StyleGenerator`. features: images (N, 1, 16, 16) -> (N, F).
        space: ``"z"`` or ``"w"``. n: pairs >= 2. epsilon: step in (0, 1) (t is drawn in [0, 1 - epsilon)).
        seed: seed of z, t and the noise.

    Returns:
        dict: ``ppl`` (mean), ``std`` (of the per-pair values), ``sem`` (standard error), floats.

    Raises:
        TypeError / ValueError: an unknown space, n < 2 (the std needs two pairs), epsilon outside (0, 1), or a
            negative seed.
    """
    check_choice("space", space, ("z", "w"))
    n, epsilon = check_positive_int("n", n), check_positive_float("epsilon", epsilon)
    if n < 2:
        raise ValueError(f"n must be >= 2 pairs (the std and sem need two), got {n}")
    if epsilon >= 1:
        raise ValueError(f"epsilon must be < 1 (the pairs are at t and t + epsilon in [0, 1]), got {epsilon}")
    g = torch.Generator().manual_seed(check_nonnegative_int("seed", seed))
    dev, d = generator.const.device, generator.latent_dim
    z1, z2 = (torch.randn(n, d, generator=g).to(dev) for _ in range(2))
    t = torch.rand(n, generator=g).to(dev) * (1 - epsilon)
    noise = generator.make_noise(n, g)
    if space == "z":
        radius = math.sqrt(d)
        w_a = generator.map(radius * slerp(z1, z2, t))
        w_b = generator.map(radius * slerp(z1, z2, t + epsilon))
    else:
        w1, w2 = generator.map(z1), generator.map(z2)
        w_a = torch.lerp(w1, w2, t[:, None])
        w_b = torch.lerp(w1, w2, (t + epsilon)[:, None])
    fa, fb = features(generator.synthesis(w_a, noise)), features(generator.synthesis(w_b, noise))
    vals = ((fa - fb) ** 2).sum(1) / epsilon**2
    return {"ppl": float(vals.mean()), "std": float(vals.std()), "sem": float(vals.std() / math.sqrt(n))}


def linear_separability(latents, labels, *, test_fraction: float = 0.3, seed: int = 0) -> dict:
    r"""How well a linear classifier on the latents predicts a label (Karras et al. 2019).

    A logistic regression (scikit-learn, standardised inputs) is fitted on a random split; on the held-out rows the
    result is its ``accuracy`` and the conditional entropy :math:`H(Y \mid X)` in nats of the labels Y given the
    linear classifier's predicted class X (Karras et al. report :math:`\exp\sum H(Y_i|X_i)` over attributes):
    0 when a hyperplane separates the classes exactly, :math:`H(Y)` when the prediction says nothing.

    Args:
        latents: float (N, d). labels: int64 (N,) class labels (>= 2 classes).

    Returns:
        dict: ``accuracy``, ``conditional_entropy`` (nats), ``label_entropy`` (nats, H(Y) on the test rows).

    Raises:
        TypeError / ValueError: latents not a finite (N, d) matrix, labels not int64 (N,) with >= 2 classes,
            test_fraction outside (0, 1), a negative seed.
    """
    from sklearn.linear_model import LogisticRegression

    if not 0 < float(test_fraction) < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    x = _as_numpy_matrix("latents", latents)
    y = torch.as_tensor(labels)
    if y.dtype != torch.int64 or y.shape != (x.shape[0],):
        raise ValueError(f"labels must be int64 of shape ({x.shape[0]},), got {y.dtype} {tuple(y.shape)}")
    y = y.cpu().numpy()
    if len(np.unique(y)) < 2:
        raise ValueError("labels must contain at least 2 classes")
    perm = np.random.RandomState(check_nonnegative_int("seed", seed)).permutation(x.shape[0])
    n_test = max(2, round(test_fraction * x.shape[0]))
    te, tr = perm[:n_test], perm[n_test:]
    x_tr, x_te = _standardise(x[tr], x[te])
    pred = LogisticRegression(max_iter=2000).fit(x_tr, y[tr]).predict(x_te)
    k = int(y.max()) + 1
    joint = np.zeros((k, k))
    np.add.at(joint, (pred, y[te]), 1.0)
    joint = torch.from_numpy(joint / joint.sum())
    return {"accuracy": float((pred == y[te]).mean()), "conditional_entropy": float(conditional_entropy(joint)),
            "label_entropy": float(entropy(joint.sum(0)))}


# --------------------------------------------------------------------------------------------- control
def linear_probe_direction(latents: torch.Tensor, values: torch.Tensor) -> dict:
    r"""A linear probe :math:`\hat v = a^\top z + b` fitted by least squares; its unit direction edits the attribute.

    Moving a code by :math:`t\,a/\lVert a \rVert` changes the probe's prediction by :math:`t \lVert a \rVert`, so a
    change :math:`\Delta v` needs the step :math:`t = \Delta v / \lVert a \rVert`.

    Args:
        latents: float (N, d), N > d. values: float (N,) attribute values (e.g. a factor's level).

    Returns:
        dict: ``direction`` (d,) unit vector, ``slope`` float :math:`\lVert a \rVert` (attribute units per unit
        step), ``intercept`` float, ``r2`` float (training R^2 of the probe).
    """
    check_floating("latents", latents)
    check_matrix("latents", latents)
    check_floating("values", values)
    check_shape("values", values, (latents.shape[0],))
    if latents.shape[0] <= latents.shape[1]:
        raise ValueError(f"need more examples than latents, got {latents.shape[0]} <= {latents.shape[1]}")
    x = torch.cat([latents, torch.ones_like(latents[:, :1])], 1).double()
    v = values.double()
    coef = torch.linalg.lstsq(x, v[:, None]).solution[:, 0]
    a = coef[:-1]
    r2 = 1 - ((x @ coef - v) ** 2).mean() / v.var(unbiased=False)
    return {"direction": (a / a.norm()).to(latents.dtype), "slope": float(a.norm()), "intercept": float(coef[-1]),
            "r2": float(r2)}


class SpritesFactorClassifier(nn.Module):
    """A small CNN predicting every sprite factor's level: conv 3x3/2 (16) -> conv 3x3/2 (32) -> linear 128 ->
    one softmax head per factor (3 + 4 + 6 + 8 + 8 logits). Used as the measuring instrument of edits and to label
    generated sprites.

    Shapes: ``forward(x)``: (N, 1, 16, 16) -> list of five logit tensors (N, levels_k);
    ``expected_levels(x)``: (N, 5) float, the mean level under each head's softmax (a regressor of the level).
    """

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 16, 3, stride=2, padding=1), nn.SiLU(),
                                  nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.SiLU(),
                                  nn.Flatten(), nn.Linear(32 * 16, 128), nn.SiLU())
        self.heads = nn.ModuleList([nn.Linear(128, k) for k in SPRITE_FACTORS.values()])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        check_shape("x", x, ("N", 1, SPRITE_SIZE, SPRITE_SIZE))
        check_finite("x", x)
        h = self.body(x)
        return [head(h) for head in self.heads]

    @torch.no_grad()
    def expected_levels(self, x: torch.Tensor) -> torch.Tensor:
        outs = self(x)
        return torch.stack([(o.softmax(1) * torch.arange(o.shape[1], device=o.device)).sum(1) for o in outs], 1)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 5) int64 arg-max levels."""
        return torch.stack([o.argmax(1) for o in self(x)], 1)


def factor_classifier_loss(model: SpritesFactorClassifier, batch):
    """Loss for :func:`coursekit.train.fit`: the sum over factors of the cross-entropy (nats), batch = (x, factors);
    metrics: ``acc`` (mean over factors of the batch accuracy).

    Raises:
        TypeError / ValueError: x not a float tensor (N, 1, 16, 16) (or with NaN/Inf), factors not an integer tensor
            (N, 5) of levels in 0..levels_k - 1 (:data:`coursekit.data.SPRITE_FACTORS`).
    """
    x, f = batch
    check_shape("x", check_floating("x", x, finite=False), ("N", 1, SPRITE_SIZE, SPRITE_SIZE))  # finite: the model
    check_tensor("factors", f)
    if f.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise TypeError(f"factors must be an integer tensor of levels, got dtype {f.dtype}")
    check_shape("factors", f, (x.shape[0], len(SPRITE_FACTORS)))
    n_levels = torch.tensor(list(SPRITE_FACTORS.values()), device=f.device)
    if bool(((f < 0) | (f >= n_levels)).any()):
        raise ValueError(f"factors must hold levels 0..levels_k - 1 for the factors {SPRITE_FACTORS}")
    f = f.long()
    outs = model(x)
    loss = sum(F.cross_entropy(o, f[:, k]) for k, o in enumerate(outs))
    acc = sum(float((o.argmax(1) == f[:, k]).float().mean()) for k, o in enumerate(outs)) / len(outs)
    return loss, {"acc": acc}
