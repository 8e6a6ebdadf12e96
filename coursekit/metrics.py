"""Evaluation metrics for generative models: likelihood units and sample quality.

Likelihood helpers
    :func:`nats_to_bits_per_dim`, :func:`dequantize_nll_correction`,
    :func:`discrete_nll_to_bits_per_dim`, :func:`uniform_dequantize`.

Sample-quality metrics (all computed on *features*, arrays of shape ``(N, D)``)
    :func:`frechet_distance` / :func:`frechet_distance_from_features` (FID, Heusel et al. 2017),
    :func:`kernel_distance` (KID, Binkowski et al. 2018),
    :func:`inception_score` (IS, Salimans et al. 2016; takes class probabilities),
    :func:`precision_recall` (Kynkaanniemi et al. 2019), :func:`density_coverage` (Naeem et al. 2020),
    :func:`prdc` (all four at once), :func:`fid_infinity` (FID extrapolated to infinite n, Chong & Forsyth
    2020), :func:`expected_coverage` (its value for identical distributions), :func:`sliced_wasserstein`
    (Rabin et al. 2011; Karras et al. 2018).

Memorisation and diversity
    :func:`nearest_neighbour_distances`, :func:`memorisation_check` (nearest training neighbours of samples
    against those of held-out data), :func:`ssim` (Wang et al. 2004), :func:`ms_ssim` (Wang et al. 2003) and
    :func:`pairwise_ms_ssim` (MS-SSIM between random pairs of samples, Odena et al. 2017).

The feature extractor
    ImageNet's Inception network cannot be downloaded here and does not suit 8x8 digits, so the course
    measures sample quality in the feature space of its own small digit classifier, as practitioners do
    for MNIST: :func:`get_digits_classifier`, :func:`features`, :func:`probabilities`. The numbers are
    therefore *not* comparable with published ImageNet-feature FIDs, only with each other and with the
    real-data floor (:func:`real_data_floor`) computed in the same feature space at the same sample size.
    :func:`random_digits_network` gives the same architecture untrained, the random-features baseline.

Which real data, and how many
    Samples are compared with real data in the space the model was trained in: the chapter 04 VAE models
    *binarised* digits, so its samples (binary draws x ~ Bernoulli(decoder(z))) are compared with the
    binarised test split and read against the binarised floor (``binarize=True``); a model of grey-scale
    intensities uses ``binarize=False``. The classifier is trained on grey-scale and binarised digits
    together, so its features mean something in both spaces and for Bernoulli means in between. Every
    number uses n = :data:`COURSE_SAMPLE_SIZE` = 250 samples, the size of the held-out test split, because
    FID depends strongly on n (:func:`fid_vs_sample_size`).

Every metric accepts numpy arrays or torch tensors (any device), computes in float64 on the CPU and
returns python floats. Bad input (wrong rank, mismatched feature sizes, NaN/Inf, too few samples for the
estimate to mean anything) raises ``ValueError``/``TypeError`` saying what was expected.
"""

from __future__ import annotations

import functools
import math
import os
from pathlib import Path

import numpy as np
import torch
from scipy.spatial.distance import cdist
from scipy.special import rel_entr
from torch import nn

from . import data
from ._compat import moved_names
from ._validate import (
    check_choice,
    check_covariance,
    check_floating,
    check_nonnegative_float,
    check_nonnegative_int,
    check_positive_float,
    check_positive_int,
    check_tensor,
)

__all__ = [
    # likelihood units
    "nats_to_bits_per_dim",
    "dequantize_nll_correction",
    "discrete_nll_to_bits_per_dim",
    "uniform_dequantize",
    # sample quality
    "frechet_distance",
    "frechet_distance_from_features",
    "kernel_distance",
    "inception_score",
    "precision_recall",
    "density_coverage",
    "prdc",
    "fid_infinity",
    "expected_coverage",
    "nearest_neighbour_distances",
    "memorisation_check",
    "sliced_wasserstein",
    "MS_SSIM_WEIGHTS",
    "ssim",
    "ms_ssim",
    "pairwise_ms_ssim",
    # the domain classifier
    "CLASSIFIER_VERSION",
    "FEATURE_DIM",
    "DigitsClassifier",
    "get_digits_classifier",
    "random_digits_network",
    "features",
    "probabilities",
    # real-data reference numbers
    "COURSE_SAMPLE_SIZE",
    "KID_SUBSETS",
    "KID_SUBSET_SIZE",
    "sample_quality",
    "real_data_floor",
    "fid_vs_sample_size",
]

# The course has one Gaussian-kernel MMD^2, taught in chapter 07; `coursekit.metrics.mmd2_unbiased` finds it there.
# KID's polynomial-kernel estimator is private to this module (:func:`kernel_distance`).
__getattr__ = moved_names(__name__, {"mmd2_unbiased": "coursekit.wasserstein"})

LN2 = math.log(2.0)


# ------------------------------------------------------------------------------------------------
# Likelihood units
# ------------------------------------------------------------------------------------------------


def nats_to_bits_per_dim(nats, dim):
    """Convert a log-likelihood quantity in nats per example into bits per dimension.

    ``bits/dim = nats / (dim * ln 2)``. The sign is kept: pass a negative log-likelihood (NLL) to get
    the NLL in bits/dim (the number papers report; lower is better).

    Args:
        nats: python float, numpy array or tensor of any shape, nats per example.
        dim: number of dimensions D of one example (e.g. 64 for 8x8 digits), positive integer.

    Returns:
        Same type and shape as ``nats``, in bits per dimension.

    Raises:
        TypeError / ValueError: if ``dim`` is not a positive integer.
    """
    dim = check_positive_int("dim", dim)
    return nats / (dim * LN2)


def dequantize_nll_correction(dim, levels, data_range=1.0):
    r"""The term linking a continuous density on dequantised data to the discrete likelihood, in nats.

    Derivation (Theis, van den Oord & Bethge 2016, "A note on the evaluation of generative models",
    sec. 3.1). Let each of the ``dim`` = D pixels take one of B = ``levels`` values, placed in bins of
    width :math:`w = r/B` that tile an interval of length :math:`r` = ``data_range`` (r = 1 for data in
    [0, 1]). Uniform dequantisation adds noise inside the bin: :math:`y = \mathrm{bin}(x) + w\,u`,
    :math:`u \sim U[0,1)^D`. A continuous density :math:`p` on :math:`y` defines a discrete model by
    integrating over the bin, whose volume is :math:`w^D`:

    .. math::

        P(x) = \int_{\mathrm{bin}(x)} p(y)\,dy = w^D\,\mathbb{E}_u[p(y)]
        \quad\Rightarrow\quad
        -\log P(x) = -\log \mathbb{E}_u[p(y)] - D \log w
        \le \mathbb{E}_u[-\log p(y)] + D \log (B / r)

    by Jensen's inequality (:math:`-\log` is convex). So the continuous NLL measured on dequantised data
    plus :math:`D \log(B/r)` nats is an upper bound on the discrete NLL, with equality when :math:`p` is
    constant inside every bin. In bits/dim the correction is :math:`\log_2(B/r)`: +8 bits/dim for
    8-bit images scaled to [0, 1]. Without it, a continuous density on the *undequantised* points could
    put arbitrarily high density on them and report an arbitrarily good (meaningless) NLL.

    Args:
        dim: D, number of discrete dimensions per example (positive integer).
        levels: B, number of discrete values per dimension (integer >= 2), e.g. 256 for 8-bit pixels,
            17 for scikit-learn's digits (intensities 0..16).
        data_range: r, length of the interval the B bins tile after scaling (1.0 for [0, 1], 2.0 for
            [-1, 1]).

    Returns:
        python float, nats per example: ``D * log(B / r)``. Add it to a continuous NLL (nats) measured on
        dequantised data to get an upper bound on the discrete NLL (nats).

    Raises:
        TypeError / ValueError: for a non-integer or too small ``dim``/``levels`` or a non-positive range.
    """
    dim = check_positive_int("dim", dim)
    levels = check_positive_int("levels", levels)
    if levels < 2:
        raise ValueError(f"levels must be >= 2 (a pixel with one value carries no information), got {levels}")
    data_range = check_positive_float("data_range", data_range)
    return dim * math.log(levels / data_range)


def discrete_nll_to_bits_per_dim(nll, dim, levels, data_range=1.0):
    """Bits/dim of discrete data from a continuous density's NLL on uniformly dequantised data.

    ``(nll + D log(B / r)) / (D ln 2)`` = ``nll / (D ln 2) + log2(B / r)``: the standard number reported
    for flows and diffusion models on 8-bit images (an upper bound on the discrete NLL; see
    :func:`dequantize_nll_correction` for the derivation, Theis et al. 2016).

    Args:
        nll: float, numpy array or tensor of any shape: continuous negative log-density in nats per
            example, measured on dequantised data scaled to an interval of length ``data_range``.
        dim: D, dimensions per example. levels: B, values per dimension. data_range: r (1.0 for [0, 1]).

    Returns:
        Same type and shape as ``nll``, bits per dimension of the discrete data.

    Raises:
        TypeError / ValueError: as :func:`dequantize_nll_correction`.
    """
    return nats_to_bits_per_dim(nll + dequantize_nll_correction(dim, levels, data_range), dim)


def uniform_dequantize(x, levels, *, generator=None):
    """Uniformly dequantise integer-valued data: ``y = (x + u) / B`` with ``u ~ U[0, 1)``.

    Args:
        x: tensor of any shape holding integers in {0, ..., B-1} (any dtype).
        levels: B, number of discrete values (integer >= 2).
        generator: optional ``torch.Generator`` for the noise (on ``x``'s device).

    Returns:
        float32 tensor, same shape and device as ``x``, values in [0, 1): continuous data whose density's
        NLL plus :func:`dequantize_nll_correction` (with ``data_range=1``) bounds the discrete NLL.

    Raises:
        TypeError: if ``x`` is not a tensor. ValueError: if ``x`` holds non-integers or values outside
        {0, ..., B-1}.
    """
    levels = check_positive_int("levels", levels)
    if levels < 2:
        raise ValueError(f"levels must be >= 2, got {levels}")
    xf = check_tensor("x", x).to(torch.float32)
    if xf.numel() and (
        not bool(torch.isfinite(xf).all()) or bool((xf != xf.round()).any())
        or float(xf.min()) < 0 or float(xf.max()) > levels - 1
    ):
        raise ValueError(
            f"x must hold integers in {{0, ..., {levels - 1}}} (levels={levels}); got values in "
            f"[{float(xf.min()):g}, {float(xf.max()):g}] (scale [0,1] data back with x * (levels - 1) first)"
        )
    u = torch.rand(xf.shape, generator=generator, device=xf.device, dtype=torch.float32)
    return (xf + u) / levels


# ------------------------------------------------------------------------------------------------
# Input validation for feature-space metrics
# ------------------------------------------------------------------------------------------------


def _to_numpy64(name, x) -> np.ndarray:
    """Any tensor/array-like -> float64 numpy array, refusing NaN/Inf."""
    if isinstance(x, torch.Tensor):
        arr = x.detach().to("cpu", torch.float64).numpy()
    else:
        try:
            arr = np.asarray(x, dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise TypeError(f"{name} must be a numpy array or torch tensor of numbers, got {type(x).__name__}") from err
    if not np.all(np.isfinite(arr)):
        raise ValueError(
            f"{name} must be finite, but it has {int(np.isnan(arr).sum())} NaN and "
            f"{int(np.isinf(arr).sum())} Inf entries (shape {arr.shape}); "
            "a generator that diverged produces NaN samples: check its training loss"
        )
    return arr


def _features_2d(name, x, min_n=1, why="") -> np.ndarray:
    arr = _to_numpy64(name, x)
    if arr.ndim != 2:
        raise ValueError(f"{name} must have shape (N, D) (one feature vector per row), got shape {arr.shape}")
    if arr.shape[1] < 1:
        raise ValueError(f"{name} must have at least one feature column, got shape {arr.shape}")
    if arr.shape[0] < min_n:
        raise ValueError(f"{name} has {arr.shape[0]} samples but {why or f'at least {min_n} are needed'}")
    return arr


def _same_dim(name1, a, name2, b):
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"{name1} and {name2} must have the same feature size D, got {name1} {a.shape} and "
            f"{name2} {b.shape} (were they computed with the same feature extractor?)"
        )


# ------------------------------------------------------------------------------------------------
# Frechet distance (FID)
# ------------------------------------------------------------------------------------------------


def _sym_sqrt(a: np.ndarray) -> np.ndarray:
    """Square root of a symmetric positive semi-definite matrix by eigen-decomposition (clips tiny
    negative eigenvalues that round-off produces)."""
    w, v = np.linalg.eigh(a)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    r"""Squared Frechet (2-Wasserstein) distance between two Gaussians, the formula behind FID.

    .. math::

        d^2 = \lVert \mu_1 - \mu_2 \rVert^2
              + \operatorname{Tr}\big(\Sigma_1 + \Sigma_2 - 2 (\Sigma_1 \Sigma_2)^{1/2}\big)

    (Dowson & Landau 1982; used as FID by Heusel et al. 2017, "GANs trained by a two time-scale update
    rule converge to a local Nash equilibrium", eq. 6). The trace of the matrix square root is computed
    robustly as :math:`\operatorname{Tr}(\Sigma_1\Sigma_2)^{1/2} = \operatorname{Tr}(\Sigma_1^{1/2}
    \Sigma_2 \Sigma_1^{1/2})^{1/2} = \sum_i \sqrt{\lambda_i}`, with :math:`\lambda_i \ge 0` the
    eigenvalues of the symmetric PSD matrix :math:`\Sigma_1^{1/2}\Sigma_2\Sigma_1^{1/2}` (the two
    matrices are similar when :math:`\Sigma_1` is invertible, and the formula is the continuous
    extension otherwise). This needs no ``+ eps * I`` offset for near-singular covariances and never
    returns a complex number, unlike ``scipy.linalg.sqrtm(sigma1 @ sigma2)``.

    Args:
        mu1, mu2: means, shape (D,). sigma1, sigma2: covariances, shape (D, D), symmetric PSD.
            numpy arrays or tensors; computed in float64.

    Returns:
        python float >= 0 (clipped at 0 against round-off), in squared feature units.

    Raises:
        ValueError: on mismatched shapes, NaN/Inf, a non-symmetric or clearly non-PSD covariance.
    """
    mu1 = _to_numpy64("mu1", mu1)
    mu2 = _to_numpy64("mu2", mu2)
    if mu1.ndim != 1 or mu2.ndim != 1:
        raise ValueError(f"mu1 and mu2 must be vectors of shape (D,), got {mu1.shape} and {mu2.shape}")
    if mu1.shape != mu2.shape:
        raise ValueError(f"mu1 and mu2 must have the same size D, got {mu1.shape} and {mu2.shape}")
    d = mu1.shape[0]
    sigma1 = check_covariance("sigma1", _to_numpy64("sigma1", sigma1), d)
    sigma2 = check_covariance("sigma2", _to_numpy64("sigma2", sigma2), d)
    sigma1, sigma2 = 0.5 * (sigma1 + sigma1.T), 0.5 * (sigma2 + sigma2.T)
    s1_half = _sym_sqrt(sigma1)
    m = s1_half @ sigma2 @ s1_half
    eig = np.linalg.eigvalsh(0.5 * (m + m.T))
    tr_covmean = float(np.sqrt(np.clip(eig, 0.0, None)).sum())
    diff = mu1 - mu2
    value = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean)
    return max(value, 0.0)


def frechet_distance_from_features(f1, f2) -> float:
    """FID-style Frechet distance between the Gaussians fitted to two feature sets.

    Means and *unbiased* covariances (divide by N - 1, as pytorch-fid, torchmetrics and the TTUR
    reference code do) of each set, then :func:`frechet_distance`.

    Sample size: FID is biased upwards for finite N, the bias shrinking roughly like 1/N (Binkowski et
    al. 2018, app. D; Chong & Forsyth 2020), so compare FIDs only at the same N (the course uses
    :data:`COURSE_SAMPLE_SIZE`). Each set needs N > D samples (otherwise its covariance is singular by
    construction and the estimate is dominated by noise); a ValueError says so.

    Args:
        f1, f2: features, shape (N1, D) and (N2, D); N1 and N2 may differ.

    Returns:
        python float >= 0, squared feature units.

    Raises:
        ValueError: for mismatched D, NaN/Inf, or N <= D in either set.
    """
    f1 = _to_numpy64("f1", f1)
    f2 = _to_numpy64("f2", f2)
    for name, f in (("f1", f1), ("f2", f2)):
        if f.ndim != 2:
            raise ValueError(f"{name} must have shape (N, D), got shape {f.shape}")
    _same_dim("f1", f1, "f2", f2)
    d = f1.shape[1]
    for name, f in (("f1", f1), ("f2", f2)):
        if f.shape[0] <= d:
            raise ValueError(
                f"{name} has N={f.shape[0]} samples of D={d} features; the Frechet distance needs N > D "
                f"(at least {d + 1}) for a full-rank covariance estimate, and far more for a stable one"
            )
    mu1, mu2 = f1.mean(axis=0), f2.mean(axis=0)
    s1 = np.cov(f1, rowvar=False, ddof=1).reshape(d, d)
    s2 = np.cov(f2, rowvar=False, ddof=1).reshape(d, d)
    return frechet_distance(mu1, s1, mu2, s2)


# ------------------------------------------------------------------------------------------------
# Kernel distance (KID)
# ------------------------------------------------------------------------------------------------

#: Default number of random subsets for KID. Binkowski et al. use 100 subsets of 1000 from 50k
#: images; the course's sets have 250 images, so it uses 100 subsets of 100.
KID_SUBSETS = 100
KID_SUBSET_SIZE = 100


def _poly_kernel(a, b, degree, gamma, coef0):
    return (gamma * (a @ b.T) + coef0) ** degree


def _mmd2_unbiased_np(x, y, degree, gamma, coef0):
    m, n = x.shape[0], y.shape[0]
    kxx = _poly_kernel(x, x, degree, gamma, coef0)
    kyy = _poly_kernel(y, y, degree, gamma, coef0)
    kxy = _poly_kernel(x, y, degree, gamma, coef0)
    sxx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    syy = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(sxx + syy - 2.0 * kxy.sum() / (m * n))


def _kernel_args(d, degree, gamma, coef0):
    degree = check_positive_int("degree", degree)
    gamma = 1.0 / d if gamma is None else check_positive_float("gamma", gamma)
    return degree, gamma, check_nonnegative_float("coef0", coef0)


def _kid_mmd2_unbiased(f1, f2, *, degree=3, gamma=None, coef0=1.0) -> float:
    r"""Unbiased estimate of the squared MMD with the polynomial kernel, on the full feature sets.

    .. math::

        \widehat{\mathrm{MMD}}^2_u = \frac{1}{m(m-1)} \sum_{i \ne j} k(x_i, x_j)
            + \frac{1}{n(n-1)} \sum_{i \ne j} k(y_i, y_j) - \frac{2}{mn} \sum_{i,j} k(x_i, y_j),
        \qquad k(a, b) = (\gamma\, a^\top b + c_0)^{\text{degree}}

    (Gretton et al. 2012, "A kernel two-sample test", eq. 3; the kernel of KID, Binkowski et al. 2018,
    "Demystifying MMD GANs", sec. 4, with degree 3, gamma = 1/D, c0 = 1). Its expectation is the
    population MMD^2 for every sample size, so, unlike FID, it has no small-sample bias; it can be
    slightly negative when the two distributions are equal.

    Args:
        f1: (m, D) features, f2: (n, D) features (m, n >= 2, may differ). degree: positive int.
        gamma: positive float, default 1/D. coef0: float >= 0.

    Returns:
        python float, squared feature-kernel units (unitless for the default kernel).

    Raises:
        ValueError: for mismatched D, NaN/Inf, fewer than 2 samples, or bad kernel parameters.
    """
    f1 = _features_2d("f1", f1, 2, "the unbiased MMD needs at least 2 per set")
    f2 = _features_2d("f2", f2, 2, "the unbiased MMD needs at least 2 per set")
    _same_dim("f1", f1, "f2", f2)
    degree, gamma, coef0 = _kernel_args(f1.shape[1], degree, gamma, coef0)
    return _mmd2_unbiased_np(f1, f2, degree, gamma, coef0)


def kernel_distance(f1, f2, *, subsets=KID_SUBSETS, subset_size=KID_SUBSET_SIZE, degree=3, gamma=None,
                    coef0=1.0, seed=0):
    r"""Kernel Inception Distance (KID) in the given feature space: mean and std over random subsets.

    For each of ``subsets`` rounds draw ``subset_size`` rows of ``f1`` and of ``f2`` without replacement
    (numpy ``default_rng(seed)``, so the result is deterministic) and compute the unbiased squared MMD
    (Gretton et al. 2012, eq. 3) with the polynomial kernel :math:`k(a, b) = (\gamma\, a^\top b + c_0)^{d}`;
    return the mean and the standard deviation (``ddof=0``, as Binkowski et al.'s code and torchmetrics)
    of the per-subset values (Binkowski et al. 2018, "Demystifying MMD GANs", sec. 4 and app. D).
    The mean is an unbiased estimate of MMD^2 whatever ``subset_size``; the std describes the spread of
    the subset estimates (it shrinks as ``subset_size`` grows and is 0 when ``subset_size`` equals both
    set sizes, since every subset is then the whole set).

    Args:
        f1, f2: features (N1, D) and (N2, D). subsets: positive int. subset_size: int >= 2 and
            <= min(N1, N2). degree: the kernel's positive integer degree d (default 3). gamma: float > 0,
            default 1/D. coef0: :math:`c_0 \ge 0` (default 1).
        seed: seed of the subset draws.

    Returns:
        ``(mean, std)``, python floats (KID is often reported x 1000).

    Raises:
        ValueError: if a set has fewer than ``subset_size`` samples, for mismatched D, NaN/Inf, or
            bad parameters.
    """
    subsets = check_positive_int("subsets", subsets)
    subset_size = check_positive_int("subset_size", subset_size)
    if subset_size < 2:
        raise ValueError(f"subset_size must be >= 2 for the unbiased MMD, got {subset_size}")
    why = (
        f"KID draws subsets of subset_size={subset_size} without replacement: "
        "pass more samples or a smaller subset_size"
    )
    f1 = _features_2d("f1", f1, subset_size, why)
    f2 = _features_2d("f2", f2, subset_size, why)
    _same_dim("f1", f1, "f2", f2)
    degree, gamma, coef0 = _kernel_args(f1.shape[1], degree, gamma, coef0)
    rng = np.random.default_rng(seed)
    values = np.empty(subsets)
    for s in range(subsets):
        i = rng.choice(f1.shape[0], subset_size, replace=False)
        j = rng.choice(f2.shape[0], subset_size, replace=False)
        values[s] = _mmd2_unbiased_np(f1[i], f2[j], degree, gamma, coef0)
    return float(values.mean()), float(values.std())


# ------------------------------------------------------------------------------------------------
# Inception Score
# ------------------------------------------------------------------------------------------------


def inception_score(probs, splits=10):
    r"""Inception Score of samples from their class probabilities under a classifier.

    .. math::

        \mathrm{IS} = \exp\big(\mathbb{E}_x\, \mathrm{KL}(p(y \mid x) \,\|\, p(y))\big),
        \qquad p(y) = \mathbb{E}_x\, p(y \mid x)

    (Salimans et al. 2016, "Improved techniques for training GANs", sec. 4). High when each sample is
    classified confidently *and* the classes are used evenly: it ranges from 1 to the number of classes
    C (10 for digits). It ignores the real data entirely, so it cannot detect a generator that
    reproduces one perfect image per class. The N rows are cut into ``splits`` contiguous groups
    (``numpy.array_split``; shuffle first if the rows are ordered), the score is computed per group and
    the mean and std (``ddof=0``, as the original code) over groups are returned.

    Args:
        probs: (N, C) class probabilities (rows non-negative, summing to 1 within 1e-4), e.g.
            :func:`probabilities` of the samples. splits: positive int with N >= 2 * splits.

    Returns:
        ``(mean, std)`` python floats, unitless, in [1, C].

    Raises:
        ValueError: for a non-2-D input, NaN/Inf, rows that are not distributions, or N < 2 * splits.
    """
    splits = check_positive_int("splits", splits)
    p = _features_2d("probs", probs, 2 * splits,
                     f"inception_score needs at least 2 samples per split (2 * splits = {2 * splits})")
    if p.min() < 0 or np.abs(p.sum(axis=1) - 1.0).max() > 1e-4:
        raise ValueError(
            "probs must hold class probabilities (non-negative rows summing to 1); got min "
            f"{p.min():.3g} and row sums in [{p.sum(axis=1).min():.6g}, {p.sum(axis=1).max():.6g}] "
            "(pass softmax(logits), not logits)"
        )
    scores = []
    for part in np.array_split(p, splits, axis=0):
        py = part.mean(axis=0, keepdims=True)
        kl = rel_entr(part, py).sum(axis=1).mean()
        scores.append(math.exp(kl))
    scores = np.asarray(scores)
    return float(scores.mean()), float(scores.std())


# ------------------------------------------------------------------------------------------------
# k-NN manifold metrics: precision, recall, density, coverage
# ------------------------------------------------------------------------------------------------


def _knn_radii(f, k):
    """Distance of each row of f to its k-th nearest *other* row (column 0 of the sorted distances is
    the point itself)."""
    d = cdist(f, f)
    return np.partition(d, k, axis=1)[:, k]


def _prdc_parts(real, fake, k):
    k = check_positive_int("k", k)
    why = (f"the k-nearest-neighbour radii need more than k={k} samples per set "
           "(k-th neighbour other than the point itself)")
    real = _features_2d("real", real, k + 1, why)
    fake = _features_2d("fake", fake, k + 1, why)
    _same_dim("real", real, "fake", fake)
    return real, fake, k


def _prdc_np(real, fake, k):
    r_real = _knn_radii(real, k)            # (N_real,)
    d = cdist(real, fake)                   # (N_real, N_fake)
    inside_real = d <= r_real[:, None]      # fake j inside the ball of real i
    out = {
        "precision": float(inside_real.any(axis=0).mean()),
        "density": float(inside_real.sum(axis=0).mean() / k),
        "coverage": float((d.min(axis=1) <= r_real).mean()),
    }
    r_fake = _knn_radii(fake, k)
    out["recall"] = float((d <= r_fake[None, :]).any(axis=1).mean())
    return out


def precision_recall(real, fake, k=3):
    r"""Improved precision and recall (Kynkaanniemi et al. 2019, "Improved precision and recall metric
    for assessing generative models", eq. 1-3).

    Each set's manifold is approximated by the union of balls around its points, the radius of a ball
    being the distance to the point's k-th nearest neighbour in the same set. *Precision* is the fraction
    of fake samples inside the real manifold (are samples realistic?); *recall* is the fraction of real
    samples inside the fake manifold (is the data's variety covered?). Balls are closed (``<=``, as in
    the paper; the ``prdc`` package uses ``<``, which differs only on exact ties).

    Args:
        real: (N_real, D) features, fake: (N_fake, D) features, both with N > k. k: positive int.

    Returns:
        ``(precision, recall)`` python floats in [0, 1].

    Raises:
        ValueError: if a set has N <= k samples, mismatched D, NaN/Inf.
    """
    real, fake, k = _prdc_parts(real, fake, k)
    out = _prdc_np(real, fake, k)
    return out["precision"], out["recall"]


def density_coverage(real, fake, k=3):
    r"""Density and coverage (Naeem et al. 2020, "Reliable fidelity and diversity metrics for generative
    models", eq. 5-6), robust alternatives to precision and recall.

    With :math:`B(x_i, r_i)` the ball around real sample :math:`x_i` whose radius :math:`r_i` is the
    distance to its k-th nearest real neighbour:
    *density* = :math:`\frac{1}{kM}\sum_j \sum_i 1[y_j \in B(x_i, r_i)]` (how many real neighbourhoods
    contain each fake sample, on average, divided by k; about 1 when fake matches real, can exceed 1),
    *coverage* = :math:`\frac{1}{N}\sum_i 1[\exists j: y_j \in B(x_i, r_i)]` (fraction of real
    neighbourhoods that contain at least one fake sample). Only the real manifold is estimated, so a few
    outlying fake samples cannot inflate them. Closed balls (``<=``) as in the paper.

    Args:
        real: (N_real, D), fake: (N_fake, D) features; N_real > k and N_fake > k. k: positive int
            (the paper recommends k=5 with 10k samples; the course uses 3 for its 250 samples).

    Returns:
        ``(density, coverage)`` python floats; density >= 0, coverage in [0, 1].

    Raises:
        ValueError: if a set has N <= k samples, mismatched D, NaN/Inf.
    """
    real, fake, k = _prdc_parts(real, fake, k)
    out = _prdc_np(real, fake, k)
    return out["density"], out["coverage"]


def prdc(real, fake, k=3) -> dict:
    """Precision, recall (Kynkaanniemi et al. 2019), density and coverage (Naeem et al. 2020) at once.

    See :func:`precision_recall` and :func:`density_coverage`; the pairwise distances are computed once.

    Returns:
        ``{"precision", "recall", "density", "coverage"}`` -> python floats.
    """
    real, fake, k = _prdc_parts(real, fake, k)
    return _prdc_np(real, fake, k)


# ------------------------------------------------------------------------------------------------
# FID at infinite sample size (Chong & Forsyth 2020)
# ------------------------------------------------------------------------------------------------


def fid_infinity(real, fake, ns=None, *, repeats: int = 1, seed: int = 0) -> dict:
    r"""FID extrapolated to an infinite number of generated samples (Chong & Forsyth 2020, "Effectively unbiased
    FID and Inception Score and where to find them").

    The Frechet distance between the Gaussian fitted to all of ``real`` and the one fitted to ``n`` rows of
    ``fake`` is biased upwards at finite n, to leading order linearly in 1/n:
    :math:`\mathbb{E}[\mathrm{FID}_n] \approx \mathrm{FID}_\infty + b / n`. For each n in ``ns`` this draws
    ``repeats`` subsets of ``fake`` without replacement (numpy ``default_rng(seed)``), averages their FIDs, fits
    the line :math:`\mathrm{FID}_n = a + b/n` by least squares and returns its intercept :math:`a`, the estimate
    of :math:`\mathrm{FID}_\infty`. (Chong & Forsyth's code keeps the real statistics fixed, evaluates 15 sizes
    evenly spaced between 5,000 and 50,000 generated images, one draw each, and fits the same line.) The
    extrapolation removes the bias from the generated side only; the real statistics are used as they are.

    Args:
        real: (N_real, D) features, N_real > D. fake: (N_fake, D) features, N_fake > D.
        ns: increasing subset sizes, each D < n <= N_fake, at least 2 distinct values; default: 6 sizes evenly
            spaced between max(2D, N_fake / 5) and N_fake.
        repeats: subsets per size (positive int); the largest size always uses all of ``fake``.
        seed: seed of the subset draws.

    Returns:
        dict: ``fid_infinity`` (the intercept, squared feature units; may be slightly negative when the
        distributions are equal), ``slope`` (b, squared feature units x samples), ``ns`` (list of int) and
        ``fid`` (list of the mean FID at each n).

    Raises:
        ValueError: for mismatched D, NaN/Inf, a set with N <= D, sizes outside (D, N_fake] or fewer than 2
            distinct sizes.
    """
    real = _features_2d("real", real)
    fake = _features_2d("fake", fake)
    _same_dim("real", real, "fake", fake)
    repeats = check_positive_int("repeats", repeats)
    d, n_fake = fake.shape[1], fake.shape[0]
    for name, f in (("real", real), ("fake", fake)):
        if f.shape[0] <= d:
            raise ValueError(f"{name} has N={f.shape[0]} samples of D={d} features; FID needs N > D")
    if ns is None:
        lo = min(max(2 * d, n_fake // 5), n_fake)
        ns = np.unique(np.linspace(lo, n_fake, 6).astype(int))
    ns = sorted({check_positive_int("ns", n) for n in ns})
    if len(ns) < 2 or ns[0] <= d or ns[-1] > n_fake:
        raise ValueError(f"ns must hold at least 2 distinct sizes with D={d} < n <= N_fake={n_fake}, got {ns}")
    mu_r = real.mean(axis=0)
    sigma_r = np.cov(real, rowvar=False, ddof=1).reshape(d, d)
    rng = np.random.default_rng(seed)
    means = []
    for n in ns:
        vals = []
        for _ in range(repeats if n < n_fake else 1):
            f = fake[np.sort(rng.choice(n_fake, n, replace=False))]
            vals.append(frechet_distance(mu_r, sigma_r, f.mean(axis=0), np.cov(f, rowvar=False, ddof=1).reshape(d, d)))
        means.append(float(np.mean(vals)))
    design = np.stack([np.ones(len(ns)), 1.0 / np.asarray(ns, dtype=np.float64)], axis=1)
    (intercept, slope), *_ = np.linalg.lstsq(design, np.asarray(means), rcond=None)
    return {"fid_infinity": float(intercept), "slope": float(slope), "ns": [int(n) for n in ns], "fid": means}



# ------------------------------------------------------------------------------------------------
# Expected coverage of identical distributions
# ------------------------------------------------------------------------------------------------


def expected_coverage(n_real: int, n_fake: int, k: int) -> float:
    r"""The expected coverage when real and fake samples come from the same continuous distribution.

    .. math::

        \mathbb{E}[\mathrm{coverage}] = 1 - \frac{\binom{N - 1}{k}}{\binom{M + N - 1}{k}}
        = 1 - \prod_{j=1}^{k} \frac{N - j}{M + N - j}
        \xrightarrow{M = N \to \infty} 1 - 2^{-k}

    for N = ``n_real`` real and M = ``n_fake`` fake samples (Naeem et al. 2020, "Reliable fidelity and diversity
    metrics for generative models"). Reason: the ball of real sample :math:`x_i` misses every fake sample exactly
    when its k nearest neighbours among the other N - 1 real and the M fake samples are all real; the M + N - 1
    distances are exchangeable and tie-free, so the k nearest are a uniformly random k-subset. Chapter 13 derives
    it step by step and checks it by simulation.

    Args:
        n_real: N >= k + 1. n_fake: M >= 1. k: the neighbourhood size, positive int.

    Returns:
        python float in (0, 1).

    Raises:
        TypeError / ValueError: for non-integers or N <= k.
    """
    n_real = check_positive_int("n_real", n_real)
    n_fake = check_positive_int("n_fake", n_fake)
    k = check_positive_int("k", k)
    if n_real <= k:
        raise ValueError(f"n_real must exceed k={k} (each real ball needs k other real samples), got {n_real}")
    miss = 1.0
    for j in range(1, k + 1):
        miss *= (n_real - j) / (n_fake + n_real - j)
    return 1.0 - miss


# ------------------------------------------------------------------------------------------------
# Nearest neighbours: memorisation
# ------------------------------------------------------------------------------------------------


def nearest_neighbour_distances(x, reference) -> np.ndarray:
    """Euclidean distance from each row of ``x`` to its nearest row of ``reference``.

    Args:
        x: (N, D) samples (images flattened, or features). reference: (M, D), e.g. the training set; M >= 1.

    Returns:
        float64 numpy array (N,), in the units of the inputs (pixel intensities or feature units).

    Raises:
        ValueError: for mismatched D, NaN/Inf, an empty set.
    """
    x = _features_2d("x", x)
    reference = _features_2d("reference", reference)
    _same_dim("x", x, "reference", reference)
    return cdist(x, reference).min(axis=1)


def memorisation_check(samples, train, held_out, *, quantile: float = 0.05) -> dict:
    r"""Does a generator copy its training set? Nearest training neighbours of samples vs of held-out data.

    For every generated sample its distance :math:`d_s` to the nearest training image, and for every held-out real
    image the same distance :math:`d_h`. A model that generalises puts its samples about as far from the training
    images as new real data is, so the fraction of samples closer than the ``quantile``-quantile :math:`\tau` of
    the held-out distances is about ``quantile``; a model that reproduces training images has fraction 1. Small
    distances are necessary for memorisation, not sufficient proof of it, and in pixel space a copy shifted by one
    pixel is far from its original: compute it also in a feature space (Theis et al. 2016 discuss both
    limitations of nearest-neighbour tests).

    Args:
        samples: (N, D) generated samples. train: (M, D) training set. held_out: (L, D) real data not trained on,
            L >= 1. All in the same space (flattened pixels or features).
        quantile: q in (0, 1).

    Returns:
        dict of python floats: ``threshold`` (:math:`\tau`), ``copy_fraction`` (fraction of samples with
        :math:`d_s \le \tau`; about q for a model that generalises), ``held_out_fraction`` (the same fraction for the
        held-out data, about q by construction), ``exact_copies`` (fraction of samples at distance 0 from a
        training image), ``median_ratio`` (median :math:`d_s` / median :math:`d_h`; about 1 for a model that
        generalises, 0 for a copier).

    Raises:
        ValueError: for mismatched D, NaN/Inf, empty sets, q outside (0, 1).
    """
    quantile = check_positive_float("quantile", quantile)
    if quantile >= 1:
        raise ValueError(f"quantile must be in (0, 1), got {quantile}")
    samples = _features_2d("samples", samples)
    train = _features_2d("train", train)
    held_out = _features_2d("held_out", held_out)
    _same_dim("samples", samples, "train", train)
    _same_dim("held_out", held_out, "train", train)
    d_s = cdist(samples, train).min(axis=1)
    d_h = cdist(held_out, train).min(axis=1)
    tau = float(np.quantile(d_h, quantile))
    med_h = float(np.median(d_h))
    return {"threshold": tau, "copy_fraction": float((d_s <= tau).mean()),
            "held_out_fraction": float((d_h <= tau).mean()), "exact_copies": float((d_s == 0).mean()),
            "median_ratio": float(np.median(d_s) / med_h) if med_h > 0 else math.inf}


# ------------------------------------------------------------------------------------------------
# Sliced Wasserstein distance
# ------------------------------------------------------------------------------------------------


def _wasserstein_1d_pp(u: np.ndarray, v: np.ndarray, p: float) -> np.ndarray:
    """W_p^p between the empirical distributions of each row of ``u`` (P, n) and ``v`` (P, m), both sorted along
    rows: the integral over t in (0, 1] of |F^-1(t) - G^-1(t)|^p, exactly, on the merged grid of the two step
    quantile functions."""
    n, m = u.shape[1], v.shape[1]
    t = np.union1d(np.arange(1, n + 1) / n, np.arange(1, m + 1) / m)
    width = np.diff(t, prepend=0.0)
    mid = t - width / 2
    iu = np.minimum((mid * n).astype(np.int64), n - 1)
    iv = np.minimum((mid * m).astype(np.int64), m - 1)
    return (np.abs(u[:, iu] - v[:, iv]) ** p) @ width


def sliced_wasserstein(x, y, *, n_projections: int = 256, p: float = 2.0, seed: int = 0, projections=None) -> float:
    r"""Sliced Wasserstein distance between the empirical distributions of two sample sets.

    .. math::

        \mathrm{SW}_p(\mu, \nu) = \Big( \mathbb{E}_{\theta \sim \mathcal{U}(S^{D-1})}
            W_p^p\big(\theta^\top_\# \mu, \theta^\top_\# \nu\big) \Big)^{1/p},

    estimated with ``n_projections`` random unit directions :math:`\theta_l` (Rabin et al. 2011; Bonneel et al.
    2015). Each 1-D distance is exact: with :math:`F^{-1}, G^{-1}` the quantile functions of the projected
    samples, :math:`W_p^p = \int_0^1 |F^{-1}(t) - G^{-1}(t)|^p\, dt`, a sum over the merged grid of the two step
    functions (sorting; sizes may differ). Karras et al. (2018) compute it on local patches of a Laplacian pyramid
    of the images to compare generators at several scales; here it is computed on whatever vectors it is given
    (flattened pixels or features).

    Args:
        x: (N, D), y: (M, D) samples (numpy or torch), N, M >= 1.
        n_projections: P, positive int. p: the order, float >= 1. seed: numpy ``default_rng`` seed of the
            directions. projections: optional (D, P) matrix whose columns are the directions (normalised here);
            overrides ``n_projections`` and ``seed``.

    Returns:
        python float >= 0, in the units of the inputs.

    Raises:
        ValueError: for mismatched D, NaN/Inf, p < 1, a zero or wrongly shaped projection matrix.
    """
    x = _features_2d("x", x)
    y = _features_2d("y", y)
    _same_dim("x", x, "y", y)
    p = check_positive_float("p", p)
    if p < 1:
        raise ValueError(f"p must be >= 1 (W_p is a distance for p >= 1), got {p}")
    d = x.shape[1]
    if projections is None:
        n_projections = check_positive_int("n_projections", n_projections)
        theta = np.random.default_rng(seed).normal(size=(d, n_projections))
    else:
        theta = _features_2d("projections", projections)
        if theta.shape[0] != d:
            raise ValueError(f"projections must have shape (D, P) with D={d}, got {theta.shape}")
    norms = np.linalg.norm(theta, axis=0)
    if np.any(norms == 0):
        raise ValueError("projections must not contain a zero column (a direction needs a length)")
    theta = theta / norms
    u = np.sort((x @ theta).T, axis=1)
    v = np.sort((y @ theta).T, axis=1)
    return float(np.mean(_wasserstein_1d_pp(u, v, p)) ** (1.0 / p))


# ------------------------------------------------------------------------------------------------
# SSIM and MS-SSIM (diversity between pairs of samples)
# ------------------------------------------------------------------------------------------------

#: Wang, Simoncelli & Bovik's (2003) exponents of the five scales of MS-SSIM, finest first.
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def _images_4d(name: str, x) -> torch.Tensor:
    check_floating(name, x)
    if x.ndim == 2 and x.shape[1] == 64:
        x = x.reshape(-1, 1, 8, 8)
    elif x.ndim == 3:
        x = x.unsqueeze(1)
    if x.ndim != 4:
        raise ValueError(f"{name} must have shape (N, C, H, W), (N, H, W) or (N, 64) (8x8 digits), got "
                         f"{tuple(x.shape)}")
    return x


def _window(kernel_size, sigma, channels, like: torch.Tensor) -> torch.Tensor:
    k = check_positive_int("kernel_size", kernel_size)
    if k % 2 == 0:
        raise ValueError(f"kernel_size must be odd (a window centred on a pixel), got {k}")
    r = torch.arange(k, dtype=like.dtype, device=like.device) - (k - 1) / 2
    if sigma is None:
        g = torch.ones_like(r)
    else:
        g = torch.exp(-r**2 / (2 * check_positive_float("sigma", sigma) ** 2))
    w = g[:, None] * g[None, :]
    return (w / w.sum()).expand(channels, 1, k, k)


def _ssim_maps(x, y, window, c1, c2):
    """Local statistics with a normalised window over the valid positions (Wang et al. 2004, eq. 14-16) and the
    SSIM and contrast-structure maps (eq. 13 with C3 = C2 / 2)."""
    ch = x.shape[1]
    conv = functools.partial(nn.functional.conv2d, weight=window, groups=ch)
    mu_x, mu_y = conv(x), conv(y)
    var_x = (conv(x * x) - mu_x**2).clamp_min(0)
    var_y = (conv(y * y) - mu_y**2).clamp_min(0)
    cov = conv(x * y) - mu_x * mu_y
    cs = (2 * cov + c2) / (var_x + var_y + c2)
    lum = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1)
    return lum * cs, cs


def _ssim_inputs(x, y, data_range, k1, k2):
    x, y = _images_4d("x", x), _images_4d("y", y)
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape (one pair per row), got x {tuple(x.shape)} and y "
                         f"{tuple(y.shape)}")
    data_range = check_positive_float("data_range", data_range)
    k1, k2 = check_positive_float("k1", k1), check_positive_float("k2", k2)
    return x, y, (k1 * data_range) ** 2, (k2 * data_range) ** 2


def ssim(x, y, *, data_range: float = 1.0, kernel_size: int = 3, sigma: float | None = 1.0, k1: float = 0.01,
         k2: float = 0.03) -> torch.Tensor:
    r"""Structural similarity (SSIM) of pairs of images (Wang, Bovik, Sheikh & Simoncelli 2004, eq. 13-16).

    With local means :math:`\mu`, variances :math:`\sigma^2` and covariance :math:`\sigma_{xy}` under a normalised
    ``kernel_size`` x ``kernel_size`` window (Gaussian with std ``sigma`` pixels, or uniform for ``sigma=None``) at
    every position where the window fits inside the image,

    .. math::

        \mathrm{SSIM}(x, y) = \operatorname{mean}_{\text{positions}}
        \frac{(2 \mu_x \mu_y + C_1)(2 \sigma_{xy} + C_2)}{(\mu_x^2 + \mu_y^2 + C_1)(\sigma_x^2 + \sigma_y^2 + C_2)},
        \qquad C_1 = (k_1 L)^2,\ C_2 = (k_2 L)^2,

    with L = ``data_range``. 1 for identical images; at most 1. Wang et al. use an 11 x 11 window with
    :math:`\sigma = 1.5` on images of several hundred pixels a side; the default 3 x 3 window with
    :math:`\sigma = 1` suits the 8 x 8 digits.

    Args:
        x, y: floating tensors of the same shape, (N, C, H, W), (N, H, W) or (N, 64) (8 x 8 digits), H, W >=
            ``kernel_size``. data_range: L > 0 (1 for intensities in [0, 1]). kernel_size: odd positive int.
        sigma: window std in pixels (> 0) or ``None`` for a uniform window. k1, k2: positive constants.

    Returns:
        tensor (N,) in the inputs' dtype, on their device: the SSIM of each pair (channels averaged).

    Raises:
        TypeError: for a non-floating tensor. ValueError: for NaN/Inf, different shapes, images smaller than the
            window, an even kernel size or non-positive constants.
    """
    x, y, c1, c2 = _ssim_inputs(x, y, data_range, k1, k2)
    if min(x.shape[-2:]) < kernel_size:
        raise ValueError(f"images of size {tuple(x.shape[-2:])} are smaller than the window (kernel_size="
                         f"{kernel_size}); pass x and y with H, W >= kernel_size")
    s, _ = _ssim_maps(x, y, _window(kernel_size, sigma, x.shape[1], x), c1, c2)
    return s.flatten(1).mean(1)


def ms_ssim(x, y, *, scales: int = 2, weights=None, data_range: float = 1.0, kernel_size: int = 3,
            sigma: float | None = 1.0, k1: float = 0.01, k2: float = 0.03) -> torch.Tensor:
    r"""Multi-scale SSIM of pairs of images (Wang, Simoncelli & Bovik 2003).

    .. math::

        \mathrm{MS\text{-}SSIM}(x, y) = \prod_{j=1}^{M-1} \big[\overline{cs}_j\big]_+^{\beta_j}
            \cdot \big[\overline{\mathrm{SSIM}}_M\big]_+^{\beta_M},

    where scale 1 is the image, scale j + 1 is scale j average-pooled over 2 x 2 blocks, :math:`\overline{cs}_j` is
    the mean of the contrast-structure map :math:`(2\sigma_{xy} + C_2)/(\sigma_x^2 + \sigma_y^2 + C_2)` at scale j
    and :math:`\overline{\mathrm{SSIM}}_M` the mean SSIM map at the coarsest scale (the luminance term enters only
    there). A term that is negative (anti-correlated structure) is clipped to 0 before the power, as torchmetrics'
    ``normalize="relu"`` does, so the value lies in [0, 1]. Default weights: the first ``scales`` of Wang et al.'s
    five exponents (:data:`MS_SSIM_WEIGHTS`), renormalised to sum to 1; the 8 x 8 digits allow 2 scales with the
    default 3 x 3 window.

    Args:
        x, y: as :func:`ssim`; H, W >= kernel_size * 2^(scales - 1). scales: M, positive int.
        weights: M positive exponents (default above). Other arguments: as :func:`ssim`.

    Returns:
        tensor (N,) in [0, 1], the inputs' dtype and device.

    Raises:
        TypeError / ValueError: as :func:`ssim`; images too small for ``scales``; weights of the wrong length or
            not positive.
    """
    x, y, c1, c2 = _ssim_inputs(x, y, data_range, k1, k2)
    scales = check_positive_int("scales", scales)
    if weights is None:
        if scales > len(MS_SSIM_WEIGHTS):
            raise ValueError(f"scales > {len(MS_SSIM_WEIGHTS)} needs explicit weights")
        weights = MS_SSIM_WEIGHTS[:scales]
        weights = [w / sum(weights) for w in weights]
    weights = [check_positive_float(f"weights[{i}]", w) for i, w in enumerate(weights)]
    if len(weights) != scales:
        raise ValueError(f"weights must have one exponent per scale ({scales}), got {len(weights)}")
    if min(x.shape[-2:]) < kernel_size * 2 ** (scales - 1):
        raise ValueError(f"images of size {tuple(x.shape[-2:])} are too small for {scales} scales with kernel_size="
                         f"{kernel_size}: the coarsest scale needs H, W >= {kernel_size} after "
                         f"{scales - 1} halvings")
    window = _window(kernel_size, sigma, x.shape[1], x)
    out = torch.ones(x.shape[0], dtype=x.dtype, device=x.device)
    for j in range(scales):
        s, cs = _ssim_maps(x, y, window, c1, c2)
        term = (s if j == scales - 1 else cs).flatten(1).mean(1).clamp_min(0)
        out = out * term ** weights[j]
        x, y = nn.functional.avg_pool2d(x, 2), nn.functional.avg_pool2d(y, 2)
    return out


def pairwise_ms_ssim(x, labels=None, *, n_pairs: int = 1000, seed: int = 0, **kwargs) -> tuple[float, float]:
    """Mean and std of MS-SSIM between random pairs of distinct samples of one set: a diversity measure.

    Odena, Olah & Shlens (2017) compare the mean MS-SSIM of random pairs of a generator's samples *of one class*
    with that of real images of the class: a higher value than real data's means less variety (a generator that
    collapsed to one image per class scores 1), a lower one more variety than the data has. Pass ``labels`` (e.g.
    the course classifier's predicted classes) to draw pairs within classes; without them pairs are drawn from the
    whole set, where a collapse onto a few images per class goes almost unseen (most pairs then come from two
    different classes). It says nothing about realism, and it is blind to a generator that copies training images
    (their pairs are as different as real pairs).

    Args:
        x: images as :func:`ms_ssim` (N >= 2). labels: optional (N,) integer labels; pairs are then drawn by picking
            an image uniformly among those whose label occurs at least twice, then a partner uniformly among the
            other images with its label. n_pairs: positive int. seed: numpy ``default_rng`` seed.
            **kwargs: passed to :func:`ms_ssim`.

    Returns:
        ``(mean, std)`` python floats (std with ddof=0).

    Raises:
        ValueError: for N < 2, labels of the wrong shape, no label occurring twice, and as :func:`ms_ssim`.
    """
    x = _images_4d("x", x)
    n_pairs = check_positive_int("n_pairs", n_pairs)
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"x needs at least 2 images to form pairs, got {n}")
    rng = np.random.default_rng(seed)
    if labels is None:
        i = rng.integers(0, n, n_pairs)
        j = (i + rng.integers(1, n, n_pairs)) % n  # uniform over the other images
    else:
        lab = np.asarray(labels.detach().cpu() if isinstance(labels, torch.Tensor) else labels)
        if lab.shape != (n,):
            raise ValueError(f"labels must have shape ({n},), one per image, got {lab.shape}")
        groups = [g for g in (np.flatnonzero(lab == v) for v in np.unique(lab)) if len(g) >= 2]
        if not groups:
            raise ValueError("labels: no label occurs at least twice, so there is no pair within a class")
        i = rng.choice(np.concatenate(groups), n_pairs)
        j = np.empty_like(i)
        for g in groups:  # each g is sorted (flatnonzero): a partner is another member of i's group
            at = np.isin(i, g)
            pos = np.searchsorted(g, i[at])
            j[at] = g[(pos + rng.integers(1, len(g), int(at.sum()))) % len(g)]
    v = ms_ssim(x[torch.as_tensor(i, device=x.device)], x[torch.as_tensor(j, device=x.device)], **kwargs).double()
    return float(v.mean()), float(v.std(unbiased=False))


# ------------------------------------------------------------------------------------------------
# The domain classifier: features and class probabilities for 8x8 digits
# ------------------------------------------------------------------------------------------------

#: Bump when the architecture or the training recipe changes (it names the on-disk cache file).
CLASSIFIER_VERSION = "v1"
#: Size of the penultimate layer, i.e. of the features FID/KID/PRDC are computed on.
FEATURE_DIM = 32
_CLASSIFIER_STEPS = 400
_CLASSIFIER_BATCH = 64
_CLASSIFIER_LR = 3e-3


class DigitsClassifier(nn.Module):
    """A small CNN for 8x8 digits whose penultimate layer is the feature space of the course's metrics.

    Architecture: conv3x3(1->16) SiLU maxpool -> conv3x3(16->32) SiLU maxpool -> flatten (128)
    -> linear(128->32) SiLU [= features, D=32] -> linear(32->10) [= logits]. SiLU rather than ReLU keeps
    every feature alive (no constant dead units, so the feature covariance has full rank).

    Input: images with values in [0, 1], shaped (N, 64), (N, 8, 8) or (N, 1, 8, 8); grey-scale digits,
    binarised digits and Bernoulli means (a VAE's samples) are all fine: :func:`get_digits_classifier`
    trains it on the grey-scale *and* the binarised training split so it is accurate on both.

    Attributes:
        accuracy: dict of held-out accuracies, filled by :func:`get_digits_classifier`:
            ``{"val", "test", "val_binarized", "test_binarized"}``.
    """

    def __init__(self, feature_dim: int = FEATURE_DIM, n_classes: int = 10):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.SiLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.SiLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(128, feature_dim), nn.SiLU(),
        )
        self.head = nn.Linear(feature_dim, n_classes)
        self.feature_dim = feature_dim
        # Fixed per-feature standardisation (training-split statistics, set after training): features
        # have mean 0 and variance 1 on real data, so FID is in units of the real-data feature variance
        # and the KID kernel (gamma = 1/D) sees O(1) inner products, as with Inception features.
        self.register_buffer("feature_mean", torch.zeros(feature_dim))
        self.register_buffer("feature_std", torch.ones(feature_dim))
        self.accuracy: dict[str, float] = {}

    @staticmethod
    def _images(x) -> torch.Tensor:
        if not isinstance(x, torch.Tensor):
            x = torch.as_tensor(np.asarray(x), dtype=torch.float32)
        if x.ndim == 2 and x.shape[1] == 64:
            x = x.reshape(-1, 1, 8, 8)
        elif x.ndim == 3 and tuple(x.shape[1:]) == (8, 8):
            x = x.unsqueeze(1)
        if x.ndim != 4 or tuple(x.shape[1:]) != (1, 8, 8):
            raise ValueError(f"images must have shape (N, 64), (N, 8, 8) or (N, 1, 8, 8), got {tuple(x.shape)}")
        x = x.to(torch.float32)
        if not bool(torch.isfinite(x).all()):
            raise ValueError("images must be finite, got NaN/Inf (did the generator diverge?)")
        if x.numel() and (float(x.min()) < -1e-6 or float(x.max()) > 1 + 1e-6):
            raise ValueError(
                f"images must have values in [0, 1] (pixel intensities or Bernoulli means), got values in "
                f"[{float(x.min()):.3g}, {float(x.max()):.3g}]; pass probabilities, not logits"
            )
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, 10) of images (N, 1, 8, 8) (no validation; use :meth:`logits` for checked input)."""
        return self.head(self.body(x))

    def _batched(self, x, fn, batch_size):
        x = self._images(x)
        out_device = x.device
        dev = next(self.parameters()).device
        was_training = self.training
        self.eval()
        with torch.no_grad():
            outs = [fn(x[i:i + batch_size].to(dev)) for i in range(0, x.shape[0], batch_size)]
        self.train(was_training)
        if not outs:
            return torch.empty(0, 0, device=out_device)
        return torch.cat(outs).to(out_device)

    def _standardised_features(self, x: torch.Tensor) -> torch.Tensor:
        return (self.body(x) - self.feature_mean) / self.feature_std

    def features(self, x, batch_size: int = 1024) -> torch.Tensor:
        """Penultimate-layer features, standardised with the training split's per-feature mean and std,
        float32 (N, :data:`FEATURE_DIM`), on ``x``'s device."""
        return self._batched(x, self._standardised_features, batch_size)

    def logits(self, x, batch_size: int = 1024) -> torch.Tensor:
        """Class logits, float32 (N, 10), on ``x``'s device."""
        return self._batched(x, self.forward, batch_size)

    def probabilities(self, x, batch_size: int = 1024) -> torch.Tensor:
        """Softmax class probabilities, float32 (N, 10), rows sum to 1, on ``x``'s device."""
        return self._batched(x, lambda b: torch.softmax(self.forward(b), dim=1), batch_size)


def _train_digits_classifier(seed: int) -> DigitsClassifier:
    """Deterministic CPU training (a few seconds): Adam, cross-entropy, on the grey-scale and the
    binarised training split together, without touching the caller's global RNG state."""
    xg, y = data.load_digits("train", image_shape=True)
    xb, _ = data.load_digits("train", image_shape=True, binarize=True)
    x_all, y_all = torch.cat([xg, xb]), torch.cat([y, y])
    n = x_all.shape[0]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny convolutions: one thread is faster and immune to a busy machine
    try:
        return _train_loop(x_all, y_all, n, seed)
    finally:
        torch.set_num_threads(threads)


def _train_loop(x_all, y_all, n, seed):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DigitsClassifier()
        gen = torch.Generator().manual_seed(seed)
        opt = torch.optim.Adam(model.parameters(), lr=_CLASSIFIER_LR)
        perm, pos = torch.randperm(n, generator=gen), 0
        for _ in range(_CLASSIFIER_STEPS):
            if pos + _CLASSIFIER_BATCH > n:
                perm, pos = torch.randperm(n, generator=gen), 0
            idx = perm[pos:pos + _CLASSIFIER_BATCH]
            pos += _CLASSIFIER_BATCH
            loss = nn.functional.cross_entropy(model(x_all[idx]), y_all[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return _standardise(model, x_all)


def _standardise(model: DigitsClassifier, x_all: torch.Tensor) -> DigitsClassifier:
    """Set the feature standardisation buffers to the per-feature mean and std of ``model.body`` on ``x_all``."""
    model.eval()
    with torch.no_grad():
        h = model.body(x_all).double()
        model.feature_mean.copy_(h.mean(dim=0).float())
        model.feature_std.copy_(h.std(dim=0).clamp_min(1e-6).float())
    return model


def _held_out_accuracy(model: DigitsClassifier) -> dict:
    acc = {}
    for split in ("val", "test"):
        for binarize in (False, True):
            x, y = data.load_digits(split, image_shape=True, binarize=binarize)
            pred = model.logits(x).argmax(dim=1)
            acc[split + ("_binarized" if binarize else "")] = float((pred == y).float().mean())
    return acc


def _cache_dir() -> Path:
    env = os.environ.get("COURSEKIT_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "coursekit"


_CLASSIFIERS: dict[int, DigitsClassifier] = {}


def get_digits_classifier(seed: int = 0, device=None, cache: bool = True) -> DigitsClassifier:
    """The course's digit classifier (features and class probabilities for the sample-quality metrics).

    Trained deterministically on the CPU in a few seconds (400 Adam steps, batch 64, on the 1297
    grey-scale *and* the 1297 binarised training images of :func:`coursekit.data.load_digits`), so the
    same seed gives bit-identical weights on the same machine. Held-out accuracy is in
    ``model.accuracy`` (about 0.98-1.0 grey-scale, about 0.95 binarised: thresholding destroys a little
    information). The model is in eval mode and its parameters do not require gradients.

    Caching (``cache=True``): one model per seed per process, and its ``state_dict`` on disk in
    ``$COURSEKIT_CACHE_DIR`` (default ``$XDG_CACHE_HOME/coursekit`` or ``~/.cache/coursekit``), loaded with
    ``torch.load(..., weights_only=True)``; the file name carries :data:`CLASSIFIER_VERSION` and the torch
    version. ``cache=False`` always trains a fresh model and writes nothing.

    Args:
        seed: non-negative int, seeds initialisation and minibatch order.
        device: where to put the model (``None``: CPU). Inputs on any device are accepted by its methods.
        cache: see above.

    Returns:
        :class:`DigitsClassifier`.
    """
    seed = check_nonnegative_int("seed", seed)
    model = _CLASSIFIERS.get(seed) if cache else None
    if model is None:
        path = _cache_dir() / (
            f"digits_classifier_{CLASSIFIER_VERSION}_seed{seed}_torch{torch.__version__.split('+')[0]}.pt"
        )
        if cache and path.is_file():
            try:
                model = DigitsClassifier()
                model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            except Exception:  # noqa: BLE001 - a corrupt or incompatible file, whatever the error: retrain
                model = None
        if model is None:
            model = _train_digits_classifier(seed)
            if cache:
                try:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    tmp = path.with_suffix(f".tmp{os.getpid()}")
                    torch.save(model.state_dict(), tmp)
                    os.replace(tmp, path)
                except OSError:
                    pass  # a read-only home directory only costs a retraining next time
        model.eval().requires_grad_(False)
        model.accuracy = _held_out_accuracy(model)
        if cache:
            _CLASSIFIERS[seed] = model
    if device is not None:
        model = model.to(device)
    return model


def random_digits_network(seed: int = 0) -> DigitsClassifier:
    """The course classifier's architecture with random (untrained) weights: the random-features baseline.

    PyTorch's default initialisation under ``torch.manual_seed(seed)`` (inside a forked RNG, so the caller's
    random state is untouched), then the same feature standardisation as :func:`get_digits_classifier` (per-feature
    mean and std on the grey-scale and binarised training split), so that its features are on the same scale.
    Its logits and probabilities mean nothing; use only :meth:`DigitsClassifier.features`.

    Args:
        seed: non-negative int.

    Returns:
        :class:`DigitsClassifier` in eval mode on the CPU, parameters not requiring gradients.
    """
    seed = check_nonnegative_int("seed", seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DigitsClassifier()
    x_all = torch.cat([data.load_digits("train", image_shape=True, binarize=b)[0] for b in (False, True)])
    return _standardise(model, x_all).requires_grad_(False)


def features(x, classifier: DigitsClassifier | None = None) -> torch.Tensor:
    """Penultimate-layer features of digit images under the course classifier.

    Args:
        x: (N, 64), (N, 8, 8) or (N, 1, 8, 8) images in [0, 1] (tensor or array, any device).
        classifier: default :func:`get_digits_classifier` ``()``.

    Returns:
        float32 tensor (N, :data:`FEATURE_DIM`) on ``x``'s device (CPU for arrays).

    Raises:
        ValueError: for a wrong shape, NaN/Inf, or values outside [0, 1].
    """
    return (classifier or get_digits_classifier()).features(x)


def probabilities(x, classifier: DigitsClassifier | None = None) -> torch.Tensor:
    """Softmax class probabilities (N, 10) of digit images under the course classifier (see
    :func:`features` for the input); feed them to :func:`inception_score`."""
    return (classifier or get_digits_classifier()).probabilities(x)


# ------------------------------------------------------------------------------------------------
# Everything at once, and the real-data reference numbers
# ------------------------------------------------------------------------------------------------

#: The sample size n at which the course reports sample quality: the size of the digits test split
#: (250 images), the held-out reference every model is compared with. FID is biased at finite n, so
#: model numbers are only comparable with each other and with :func:`real_data_floor` at this n.
COURSE_SAMPLE_SIZE = 250


def sample_quality(real, fake, *, classifier: DigitsClassifier | None = None, k: int = 3,
                   kid_subsets: int = KID_SUBSETS, kid_subset_size: int = KID_SUBSET_SIZE,
                   is_splits: int = 10, seed: int = 0) -> dict:
    """All sample-quality metrics of generated digits ``fake`` against real digits ``real``.

    Args:
        real, fake: images (N, 64) / (N, 1, 8, 8) in [0, 1]; N > :data:`FEATURE_DIM` for FID, N >=
            ``kid_subset_size`` for KID, N > k for PRDC, N >= 2 * ``is_splits`` for IS.
        classifier: feature extractor, default :func:`get_digits_classifier` ``()``.
        k: neighbours for precision/recall/density/coverage. kid_subsets, kid_subset_size, seed: KID.
        is_splits: splits for the Inception Score of ``fake``.

    Returns:
        dict of python floats: ``fid``, ``kid_mean``, ``kid_std``, ``precision``, ``recall``,
        ``density``, ``coverage``, ``is_mean``, ``is_std`` (IS of ``fake`` alone), and the ints
        ``n_real``, ``n_fake``.
    """
    clf = classifier or get_digits_classifier()
    fr, ff = clf.features(real), clf.features(fake)
    out = {"fid": frechet_distance_from_features(fr, ff)}
    out["kid_mean"], out["kid_std"] = kernel_distance(fr, ff, subsets=kid_subsets,
                                                      subset_size=kid_subset_size, seed=seed)
    out.update(prdc(fr, ff, k=k))
    out["is_mean"], out["is_std"] = inception_score(clf.probabilities(fake), splits=is_splits)
    out["n_real"], out["n_fake"] = int(fr.shape[0]), int(ff.shape[0])
    return out


def _subset(x, n, rng, name):
    if n > x.shape[0]:
        raise ValueError(f"n={n} exceeds the {x.shape[0]} images of the {name}")
    return x[torch.as_tensor(np.sort(rng.choice(x.shape[0], n, replace=False)))]


def real_data_floor(n: int = COURSE_SAMPLE_SIZE, seed: int = 0, *, binarize: bool = False,
                    reference_split: str = "train", classifier: DigitsClassifier | None = None,
                    **kwargs) -> dict:
    """Each metric between two sets of *real* digits: the best a generator can hope for at this n.

    ``n`` random images (numpy ``default_rng(seed)``) of ``reference_split`` (default the training
    split, i.e. a "generator" that reproduces training images perfectly) play the generated samples and
    ``n`` images of the test split (the held-out data every model is compared with) play the real data.
    A model's FID/KID is only meaningful relative to this floor: even two samples of the same
    distribution have FID > 0 at finite n. (The classifier was trained on the training split, so the
    floor also contains its small train/test generalisation gap; ``reference_split="val"`` gives a floor
    on data it has never seen.)

    ``binarize`` chooses the data space: set it to match the data the model was trained on (the
    chapter 04 VAE models *binarised* digits, so its samples are compared with binarised test digits and
    its floor is the binarised one).

    Args:
        n: sample size, :data:`FEATURE_DIM` < n <= 250 (the test split size). seed: subset seed.
        binarize: threshold both sets at 0.5. reference_split: ``"train"`` or ``"val"``.
        classifier: feature extractor (default :func:`get_digits_classifier` ``()``).
        **kwargs: passed to :func:`sample_quality` (``k``, ``kid_subsets``, ``kid_subset_size``, ...).

    Returns:
        the dict of :func:`sample_quality` plus ``n``, ``binarize``, ``reference_split``, ``seed``.
    """
    n = check_positive_int("n", n)
    check_choice("reference_split", reference_split, ("train", "val"))
    rng = np.random.default_rng(seed)
    x_test, _ = data.load_digits("test", binarize=binarize)
    x_ref, _ = data.load_digits(reference_split, binarize=binarize)
    real = _subset(x_test, n, rng, "test split")
    fake = _subset(x_ref, n, rng, f"{reference_split} split")
    kwargs.setdefault("kid_subset_size", min(KID_SUBSET_SIZE, n))
    out = sample_quality(real, fake, classifier=classifier, seed=seed, **kwargs)
    out.update(n=n, binarize=bool(binarize), reference_split=reference_split, seed=int(seed))
    return out


def fid_vs_sample_size(ns=(50, 100, 250, 500), *, repeats: int = 5, seed: int = 0, binarize: bool = False,
                       classifier: DigitsClassifier | None = None) -> list[dict]:
    """FID (biased) and KID (unbiased) between real digits as a function of the sample size n.

    For each n and each of ``repeats`` rounds, draw n training images and n held-out images (the
    500 images of the val and test splits pooled), compute FID and the full-set unbiased MMD^2
    (KID's polynomial-kernel estimate on the whole sets, i.e. KID without subsets). Both sets come from the
    same distribution (up to the classifier's train/test gap), yet FID shrinks steadily with n, roughly like
    a + b/n, while KID fluctuates around a constant: compare FIDs only at equal n (Binkowski et al. 2018, app. D;
    Chong & Forsyth 2020, "Effectively unbiased FID and Inception Score and where to find them").

    Args:
        ns: sample sizes, each with :data:`FEATURE_DIM` < n <= 500. repeats: rounds per n.
        seed: numpy ``default_rng`` seed. binarize: use binarised digits.
        classifier: feature extractor (default :func:`get_digits_classifier` ``()``).

    Returns:
        list of dicts ``{"n", "fid_mean", "fid_std", "kid_mean", "kid_std"}`` (std over repeats, ddof=0).

    Raises:
        ValueError: if some n <= FEATURE_DIM or n > 500.
    """
    repeats = check_positive_int("repeats", repeats)
    clf = classifier or get_digits_classifier()
    x_train, _ = data.load_digits("train", binarize=binarize)
    held = torch.cat([data.load_digits(s, binarize=binarize)[0] for s in ("val", "test")])
    f_train, f_held = clf.features(x_train), clf.features(held)
    rng = np.random.default_rng(seed)
    rows = []
    for n in ns:
        n = check_positive_int("n", n)
        if n <= clf.feature_dim or n > held.shape[0]:
            raise ValueError(f"each n must satisfy {clf.feature_dim} < n <= {held.shape[0]}, got {n}")
        fids, kids = [], []
        for _ in range(repeats):
            a = _subset(f_train, n, rng, "training split")
            b = _subset(f_held, n, rng, "held-out splits")
            fids.append(frechet_distance_from_features(b, a))
            kids.append(_kid_mmd2_unbiased(b, a))
        rows.append({"n": n, "fid_mean": float(np.mean(fids)), "fid_std": float(np.std(fids)),
                     "kid_mean": float(np.mean(kids)), "kid_std": float(np.std(kids))})
    return rows
