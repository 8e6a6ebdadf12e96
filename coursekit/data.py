"""Datasets used by the course, returned as ``torch.Tensor``s with documented shapes, ranges and splits.

* :func:`load_digits` - scikit-learn's 8x8 handwritten digits, bundled with scikit-learn (no download).
* 2-D toy distributions - :func:`two_moons`, :func:`swiss_roll`, :func:`ring_of_gaussians`,
  :func:`grid_of_gaussians`, :func:`gaussian_mixture`, dispatched by name with :func:`sample_2d`.
* Procedural sprites with known factors of variation - :func:`load_sprites` (fixed splits of the full factor
  grid), :func:`sample_sprites` (random draws), :func:`render_sprites` (any factor values), chapter 14.
* :func:`load_mnist` - MNIST / Fashion-MNIST from the standard IDX gzip files; downloads (hash-checked,
  with ``pooch``) only when asked to with ``download=True``.

Nothing here touches the network unless ``download=True`` is passed explicitly. Every loader takes a
``device`` argument: the small datasets are created as tensors directly on that device, so a training
loop can index minibatches without any host-to-device copies. ``device=None`` means the CPU, as in torch.

Randomness: every sampler takes a ``seed`` and draws from its own ``torch.Generator`` on the CPU, then
moves the result to ``device``. So the same seed gives the same numbers on every device, and sampling
never disturbs (or depends on) the global RNG state.
"""

from __future__ import annotations

import functools
import gzip
import math
import os
import zlib
from pathlib import Path

import numpy as np
import torch

from ._validate import (
    check_all_positive,
    check_choice,
    check_finite,
    check_nonempty,
    check_nonnegative_float,
    check_positive_float,
    check_positive_int,
    check_shape,
    check_weights,
)

__all__ = [
    "DIGITS_SPLIT_SIZES",
    "load_digits",
    "two_moons",
    "swiss_roll",
    "ring_of_gaussians",
    "ring_modes",
    "grid_of_gaussians",
    "grid_modes",
    "gaussian_mixture",
    "sample_2d",
    "TOY_2D",
    "MNIST_FILES",
    "load_mnist",
    "read_idx",
    "SPRITE_FACTORS",
    "SPRITE_SIZE",
    "SPRITE_SPLIT_SIZES",
    "sprite_factor_values",
    "all_sprite_factors",
    "render_sprites",
    "sample_sprites",
    "load_sprites",
]

# ----------------------------------------------------------------------------------------------------
# scikit-learn digits
# ----------------------------------------------------------------------------------------------------

#: Sizes of the fixed digits splits (they add up to the 1797 images of the dataset).
DIGITS_SPLIT_SIZES = {"train": 1297, "val": 250, "test": 250}

_DIGITS_SPLIT_SEED = 0


@functools.lru_cache(maxsize=1)
def _digits_numpy() -> tuple[np.ndarray, np.ndarray]:
    """All 1797 digits as (images uint8 (1797, 64) in 0..16, labels int64 (1797,)), read once and cached."""
    # Imported on first use: sklearn.datasets takes seconds to import and only the digits need it (the data is
    # bundled with scikit-learn, so this works offline).
    from sklearn.datasets import load_digits as _sk_load_digits

    bunch = _sk_load_digits()
    images = bunch.data.astype(np.uint8)  # stored as float64 with integer values 0..16
    labels = bunch.target.astype(np.int64)
    return images, labels


@functools.lru_cache(maxsize=1)
def _digits_split_indices() -> dict[str, np.ndarray]:
    """Indices of each split: a seeded permutation of 0..1796 cut into train / val / test."""
    n = sum(DIGITS_SPLIT_SIZES.values())
    # np.random.RandomState is numpy's legacy generator whose stream is frozen across numpy versions,
    # so these splits never change under a student's feet (np.random.default_rng has no such promise).
    perm = np.random.RandomState(_DIGITS_SPLIT_SEED).permutation(n)
    out, start = {}, 0
    for name, size in DIGITS_SPLIT_SIZES.items():
        out[name] = perm[start:start + size]
        start += size
    return out


def load_digits(
    split: str = "train",
    *,
    binarize: bool = False,
    image_shape: bool = False,
    device=None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load scikit-learn's 8x8 handwritten digits as tensors.

    Source: the test set of the UCI "Optical Recognition of Handwritten Digits" data (optdigits;
    Alpaydin & Kaynak, 1998), as bundled with scikit-learn (``sklearn.datasets.load_digits``):
    1797 grey-scale 8x8 images of the digits 0-9 written by 43 people, each pixel an integer count 0..16.
    It ships with scikit-learn, so it works offline.

    Splits are fixed: a permutation of the 1797 images made with seed 0 (numpy's frozen legacy RNG),
    cut into ``"train"`` (1297), ``"val"`` (250) and ``"test"`` (250) images, see
    :data:`DIGITS_SPLIT_SIZES`. The splits are disjoint and together cover the dataset.

    Args:
        split: ``"train"``, ``"val"`` or ``"test"``.
        binarize: if True, threshold at 0.5 (``x >= 0.5`` -> 1.0, else 0.0), deterministically;
            use it for Bernoulli likelihoods.
        image_shape: if True return images as (N, 1, 8, 8), else flattened (N, 64) (row-major).
        device: where to create the tensors (``None``: CPU).

    Returns:
        ``(x, y)``: ``x`` float32 of shape (N, 64) or (N, 1, 8, 8) with values in [0, 1]
        (the pixel counts divided by 16; exactly {0, 1} when ``binarize``); ``y`` int64 (N,) in 0..9.

    Raises:
        ValueError: for an unknown ``split``.
    """
    check_choice("split", split, tuple(DIGITS_SPLIT_SIZES))
    images, labels = _digits_numpy()
    idx = _digits_split_indices()[split]
    x = torch.from_numpy(images[idx]).to(device=device, dtype=torch.float32) / 16.0
    if binarize:
        x = (x >= 0.5).to(torch.float32)
    if image_shape:
        x = x.reshape(-1, 1, 8, 8)
    y = torch.from_numpy(labels[idx]).to(device)
    return x.contiguous(), y


# ----------------------------------------------------------------------------------------------------
# 2-D toy distributions
# ----------------------------------------------------------------------------------------------------


def _generator(seed: int) -> torch.Generator:
    # A private CPU generator: same numbers on every device, global RNG untouched.
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    return torch.Generator(device="cpu").manual_seed(seed)


def two_moons(n: int, noise: float = 0.1, *, seed: int = 0, device=None) -> torch.Tensor:
    """Sample ``n`` points from two interleaving half circles ("two moons").

    The same geometry as ``sklearn.datasets.make_moons``: the upper moon is (cos t, sin t), the lower
    moon (1 - cos t, 0.5 - sin t), t ~ Uniform(0, pi), each moon chosen with probability 1/2, then
    isotropic Gaussian noise of standard deviation ``noise`` is added. Points lie roughly in
    [-1, 2] x [-0.5, 1] (plus noise).

    Args:
        n: number of points (>= 1).
        noise: standard deviation of the added Gaussian noise (>= 0).
        seed: seed of the private generator.
        device: output device (``None``: CPU).

    Returns:
        float32 tensor of shape (n, 2).

    Raises:
        TypeError / ValueError: for a non-integer or non-positive ``n``, or a negative ``noise``.
    """
    n = check_positive_int("n", n)
    noise = check_nonnegative_float("noise", noise)
    g = _generator(seed)
    t = torch.rand(n, generator=g) * math.pi
    upper = torch.rand(n, generator=g) < 0.5
    x = torch.where(upper, torch.cos(t), 1.0 - torch.cos(t))
    y = torch.where(upper, torch.sin(t), 0.5 - torch.sin(t))
    pts = torch.stack([x, y], dim=1) + noise * torch.randn(n, 2, generator=g)
    return pts.to(device=device, dtype=torch.float32)


#: The swiss roll is divided by this constant: the standard deviation of the noiseless roll is about 6.8.
SWISS_ROLL_SCALE = 7.0


def swiss_roll(n: int, noise: float = 0.5, *, seed: int = 0, device=None) -> torch.Tensor:
    """Sample ``n`` points from a 2-D swiss roll (a spiral), scaled to roughly unit standard deviation.

    The 2-D version of ``sklearn.datasets.make_swiss_roll`` (its x and z coordinates):
    t = 1.5 pi (1 + 2u), u ~ Uniform(0, 1), point = (t cos t, t sin t) + ``noise`` * N(0, I),
    then everything is divided by :data:`SWISS_ROLL_SCALE` (= 7). ``noise`` is therefore in the
    *unscaled* units (sklearn's convention); the default 0.5 becomes about 0.07 after scaling.

    Args:
        n: number of points (>= 1).
        noise: standard deviation of the Gaussian noise before scaling (>= 0).
        seed: seed of the private generator.
        device: output device (``None``: CPU).

    Returns:
        float32 tensor of shape (n, 2), values roughly in [-1.4, 1.8].

    Raises:
        TypeError / ValueError: for a bad ``n`` or a negative ``noise``.
    """
    n = check_positive_int("n", n)
    noise = check_nonnegative_float("noise", noise)
    g = _generator(seed)
    t = 1.5 * math.pi * (1.0 + 2.0 * torch.rand(n, generator=g))
    pts = torch.stack([t * torch.cos(t), t * torch.sin(t)], dim=1)
    pts = (pts + noise * torch.randn(n, 2, generator=g)) / SWISS_ROLL_SCALE
    return pts.to(device=device, dtype=torch.float32)


def gaussian_mixture(
    n: int,
    means,
    stds,
    weights=None,
    *,
    seed: int = 0,
    device=None,
) -> torch.Tensor:
    """Sample ``n`` points from a mixture of k axis-aligned Gaussians in d dimensions.

    Generative process: pick component j with probability ``weights[j]``, then draw
    ``means[j] + stds[j] * eps`` with eps ~ N(0, I).

    Args:
        n: number of points (>= 1).
        means: (k, d) component means (tensor, array or nested list).
        stds: standard deviations > 0: a scalar, a (k,) tensor (isotropic per component) or (k, d).
        weights: (k,) mixing weights >= 0 with a positive sum; normalised to sum to 1.
            ``None`` means uniform.
        seed: seed of the private generator.
        device: output device (``None``: CPU).

    Returns:
        float32 tensor of shape (n, d) (d = 2 for the course's toy data).

    Raises:
        ValueError: for wrong shapes, non-finite values, non-positive stds, negative weights or
            weights that sum to zero.
    """
    n = check_positive_int("n", n)
    means = torch.as_tensor(means, dtype=torch.float32).cpu()
    check_nonempty("means", check_shape("means", means, ("k", "d")))
    check_finite("means", means)
    k, d = means.shape
    stds = check_finite("stds", torch.as_tensor(stds, dtype=torch.float32).cpu())
    if stds.ndim == 0:
        stds = stds.expand(k, d)
    elif stds.shape == (k,):
        stds = stds[:, None].expand(k, d)
    elif stds.shape != (k, d):
        raise ValueError(f"stds must be a scalar, shape ({k},) or ({k}, {d}); got shape {tuple(stds.shape)}")
    check_all_positive("stds", stds)
    if weights is None:
        weights = torch.full((k,), 1.0 / k)
    else:
        weights = torch.as_tensor(weights, dtype=torch.float32).cpu()
        check_weights("weights", check_shape("weights", weights, (k,)))
        weights = weights / weights.sum()
    g = _generator(seed)
    comp = torch.multinomial(weights, n, replacement=True, generator=g)  # (n,) component index
    eps = torch.randn(n, d, generator=g)
    pts = means[comp] + stds[comp] * eps
    return pts.to(device=device, dtype=torch.float32)


def ring_modes(n_modes: int = 8, radius: float = 2.0, *, device=None) -> torch.Tensor:
    """Centres of the ring benchmark: ``n_modes`` points evenly spaced on a circle.

    Centre j is radius * (cos(2 pi j / n_modes), sin(2 pi j / n_modes)), j = 0..n_modes-1.

    Returns:
        float32 tensor (n_modes, 2).

    Raises:
        TypeError / ValueError: for a bad ``n_modes`` or a non-positive ``radius``.
    """
    n_modes = check_positive_int("n_modes", n_modes)
    radius = check_positive_float("radius", radius)
    angles = 2.0 * math.pi * torch.arange(n_modes, dtype=torch.float64) / n_modes
    centres = radius * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
    return centres.to(device=device, dtype=torch.float32)


def ring_of_gaussians(
    n: int, n_modes: int = 8, radius: float = 2.0, std: float = 0.02, *, seed: int = 0, device=None
) -> torch.Tensor:
    """Sample the "ring of 8 Gaussians" mode-collapse benchmark.

    An equally weighted mixture of ``n_modes`` isotropic Gaussians (standard deviation ``std``) centred
    on :func:`ring_modes`. With the defaults this is the 2-D benchmark of Metz et al. (2017),
    "Unrolled Generative Adversarial Networks", used again by Srivastava et al. (2017), "VEEGAN".

    Args:
        n: number of points (>= 1).
        n_modes: number of modes (default 8).
        radius: radius of the ring (default 2.0).
        std: standard deviation of each mode (default 0.02), > 0.
        seed: seed of the private generator.
        device: output device (``None``: CPU).

    Returns:
        float32 tensor of shape (n, 2).

    Raises:
        TypeError / ValueError: for a bad ``n``, ``n_modes``, ``radius`` or ``std``.
    """
    centres = ring_modes(n_modes, radius)
    return gaussian_mixture(n, centres, std, seed=seed, device=device)


def grid_modes(side: int = 5, spacing: float = 2.0, *, device=None) -> torch.Tensor:
    """Centres of the grid benchmark: a ``side`` x ``side`` grid centred on the origin.

    Coordinates are spacing * (i - (side - 1) / 2), i = 0..side-1; with the defaults {-4, -2, 0, 2, 4}^2.
    Rows are ordered with the first coordinate varying slowest.

    Returns:
        float32 tensor (side**2, 2).

    Raises:
        TypeError / ValueError: for a bad ``side`` or a non-positive ``spacing``.
    """
    side = check_positive_int("side", side)
    spacing = check_positive_float("spacing", spacing)
    coords = spacing * (torch.arange(side, dtype=torch.float64) - (side - 1) / 2.0)
    gx, gy = torch.meshgrid(coords, coords, indexing="ij")
    centres = torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1)
    return centres.to(device=device, dtype=torch.float32)


def grid_of_gaussians(
    n: int, side: int = 5, spacing: float = 2.0, std: float = 0.02, *, seed: int = 0, device=None
) -> torch.Tensor:
    """Sample the "5x5 grid of Gaussians" mode-collapse benchmark.

    An equally weighted mixture of ``side**2`` isotropic Gaussians (standard deviation ``std``) centred
    on :func:`grid_modes`; the 2-D grid benchmark of Srivastava et al. (2017), "VEEGAN", also used in
    later mode-collapse studies (e.g. PacGAN, Lin et al. 2018).

    Args:
        n: number of points (>= 1).
        side: modes per side (default 5, i.e. 25 modes).
        spacing: distance between neighbouring modes (default 2.0).
        std: standard deviation of each mode (default 0.02), > 0.
        seed: seed of the private generator.
        device: output device (``None``: CPU).

    Returns:
        float32 tensor of shape (n, 2).

    Raises:
        TypeError / ValueError: for a bad ``n``, ``side``, ``spacing`` or ``std``.
    """
    centres = grid_modes(side, spacing)
    return gaussian_mixture(n, centres, std, seed=seed, device=device)


#: Names accepted by :func:`sample_2d` (short aliases included).
TOY_2D = {
    "two_moons": two_moons,
    "moons": two_moons,
    "swiss_roll": swiss_roll,
    "ring_of_gaussians": ring_of_gaussians,
    "ring": ring_of_gaussians,
    "grid_of_gaussians": grid_of_gaussians,
    "grid": grid_of_gaussians,
    "gaussian_mixture": gaussian_mixture,
}


def sample_2d(name: str, n: int, **kw) -> torch.Tensor:
    """Sample ``n`` points from the 2-D toy distribution called ``name``.

    ``name`` is one of the keys of :data:`TOY_2D` (``"two_moons"``/``"moons"``, ``"swiss_roll"``,
    ``"ring_of_gaussians"``/``"ring"``, ``"grid_of_gaussians"``/``"grid"``, ``"gaussian_mixture"``);
    keyword arguments (``seed``, ``device``, ``noise``, ``std``, ...) are passed on.

    Returns:
        float32 tensor of shape (n, 2).

    Raises:
        ValueError: for an unknown name (the message lists the valid names).
    """
    if name not in TOY_2D:
        raise ValueError(f"unknown 2-D dataset {name!r}; valid names are {', '.join(sorted(TOY_2D))}")
    return TOY_2D[name](n, **kw)


# ----------------------------------------------------------------------------------------------------
# MNIST / Fashion-MNIST (IDX files)
# ----------------------------------------------------------------------------------------------------

#: File names of each split and their MD5 checksums as published with the datasets
#: (the same checksums torchvision uses).
MNIST_FILES = {
    "mnist": {
        "train": (("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
                  ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432")),
        "test": (("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
                 ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c")),
    },
    "fashion": {
        "train": (("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
                  ("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe")),
        "test": (("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
                 ("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310")),
    },
}

# Mirrors tried in order (yann.lecun.com itself often refuses downloads nowadays).
_MIRRORS = {
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ),
    "fashion": (
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    ),
}

# IDX magic numbers: two zero bytes, a type code (0x08 = unsigned byte) and the number of dimensions.
_IDX_IMAGES_MAGIC = 0x00000803  # uint8, 3 dimensions (N, rows, cols)
_IDX_LABELS_MAGIC = 0x00000801  # uint8, 1 dimension (N,)


def read_idx(path, expected_magic: int | None = None) -> np.ndarray:
    """Read a gzip-compressed IDX file (the MNIST format of LeCun et al., 1998) into a numpy array.

    Format: a 4-byte big-endian magic number ``0x0000TTDD`` (TT = 0x08 for unsigned bytes, DD = number
    of dimensions), then DD big-endian uint32 sizes, then the data in row-major order.

    Args:
        path: path of a ``.gz`` IDX file.
        expected_magic: if given, the magic number the file must start with (2051 for images, 2049 for labels).

    Returns:
        uint8 array with the shape stored in the header.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if the file is not gzip, is truncated, has the wrong magic number, an unsupported
            type code, or a data size that does not match the header (a corrupt or partial download).
    """
    path = Path(path)
    hint = f"{path} looks corrupt or incomplete; delete it and download it again"
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise
    except (OSError, EOFError, zlib.error) as err:  # gzip.BadGzipFile is an OSError
        raise ValueError(f"cannot decompress {path} ({err}); {hint}") from None
    if len(raw) < 4:
        raise ValueError(f"{path} is too short to be an IDX file ({len(raw)} bytes); {hint}")
    magic = int.from_bytes(raw[:4], "big")
    type_code, ndim = (magic >> 8) & 0xFF, magic & 0xFF
    if magic >> 16 != 0 or type_code != 0x08 or ndim == 0:
        raise ValueError(f"{path} has magic number {magic:#010x}, not an unsigned-byte IDX file; {hint}")
    if expected_magic is not None and magic != expected_magic:
        raise ValueError(
            f"{path} has magic number {magic} but {expected_magic} was expected "
            f"(2051 = images, 2049 = labels); are the image and label files swapped? {hint}"
        )
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise ValueError(f"{path} ends inside its header; {hint}")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    n_expected = int(np.prod(shape))
    n_found = len(raw) - header_len
    if n_found != n_expected:
        raise ValueError(
            f"{path}: header says shape {shape} ({n_expected} bytes of data) but the file holds "
            f"{n_found} bytes; {hint}"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header_len).reshape(shape)


def _download(root: Path, fname: str, md5: str, kind: str) -> None:
    """Download one file into ``root`` with pooch, checking its MD5; try each mirror in turn."""
    import pooch  # imported here: only needed for downloads

    errors = []
    for base in _MIRRORS[kind]:
        try:
            pooch.retrieve(base + fname, known_hash=f"md5:{md5}", fname=fname, path=root, progressbar=True)
            return
        except Exception as err:  # noqa: BLE001 - requests, ftplib and hash errors differ: try the next mirror
            errors.append(f"{base}: {err}")
    raise RuntimeError(f"could not download {fname}; tried:\n  " + "\n  ".join(errors))


def load_mnist(
    root,
    split: str = "train",
    *,
    download: bool = False,
    device=None,
    fashion: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Load MNIST (LeCun et al., 1998) or Fashion-MNIST (Xiao et al., 2017) from IDX gzip files in ``root``.

    Expects the four standard files (``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``,
    ``t10k-images-idx3-ubyte.gz``, ``t10k-labels-idx1-ubyte.gz``) directly in ``root``. With
    ``download=True`` missing files are fetched with ``pooch`` and checked against the published MD5
    checksums (:data:`MNIST_FILES`); nothing is downloaded otherwise.

    Args:
        root: directory holding (or receiving) the ``.gz`` files.
        split: ``"train"`` (60000 images) or ``"test"`` (10000 images).
        download: download missing files (needs internet, e.g. on Colab).
        device: where to create the tensors (``None``: CPU).
        fashion: load Fashion-MNIST (same file names and format; keep it in its own ``root``).

    Returns:
        ``(x, y)``: ``x`` float32 (N, 1, 28, 28) with values in [0, 1] (bytes divided by 255);
        ``y`` int64 (N,) in 0..9.

    Raises:
        ValueError: for an unknown split, a corrupt file, or image/label counts that disagree.
        FileNotFoundError: if a file is missing and ``download=False`` (the message says how to fix it).
        RuntimeError: if ``download=True`` and every mirror failed.
    """
    check_choice("split", split, ("train", "test"))
    kind = "fashion" if fashion else "mnist"
    root = Path(os.fspath(root)).expanduser()
    (img_name, img_md5), (lab_name, lab_md5) = MNIST_FILES[kind][split]
    missing = [name for name in (img_name, lab_name) if not (root / name).is_file()]
    if missing and not download:
        what = "Fashion-MNIST" if fashion else "MNIST"
        raise FileNotFoundError(
            f"{what} {split} file(s) not found in {root}: {', '.join(missing)}. "
            f"Call load_mnist({str(root)!r}, split={split!r}, download=True{', fashion=True' if fashion else ''}) "
            f"to download them (needs internet, e.g. on Colab), or copy the .gz files into that folder."
        )
    if missing:
        root.mkdir(parents=True, exist_ok=True)
        for name, md5 in ((img_name, img_md5), (lab_name, lab_md5)):
            if name in missing:
                _download(root, name, md5, kind)
    images = read_idx(root / img_name, expected_magic=_IDX_IMAGES_MAGIC)
    labels = read_idx(root / lab_name, expected_magic=_IDX_LABELS_MAGIC)
    if images.shape[0] != labels.shape[0]:
        raise ValueError(
            f"{img_name} holds {images.shape[0]} images but {lab_name} holds {labels.shape[0]} labels"
        )
    if labels.size and labels.max() > 9:
        raise ValueError(f"{lab_name} holds labels up to {labels.max()}, expected 0..9; the file looks corrupt")
    x = torch.from_numpy(images.copy()).to(device)  # copy: frombuffer arrays are read-only
    x = (x.to(torch.float32) / 255.0).unsqueeze(1)  # (N, 28, 28) -> (N, 1, 28, 28)
    y = torch.from_numpy(labels.astype(np.int64)).to(device)
    return x, y


# ----------------------------------------------------------------------------------------------------
# Procedural sprites with known factors (chapter 14)
# ----------------------------------------------------------------------------------------------------

#: The sprites' factors of variation and how many values each takes, in the column order of the factor tensors.
#: shape: 0 square, 1 ellipse, 2 triangle; scale: 4 sizes; rotation: 6 angles in [0, pi/2); x, y: 8 positions each.
SPRITE_FACTORS = {"shape": 3, "scale": 4, "rotation": 6, "x": 8, "y": 8}

#: Side of a sprite image in pixels.
SPRITE_SIZE = 16

#: The fixed splits of the 3 * 4 * 6 * 8 * 8 = 4608 factor combinations (disjoint, together all of them).
SPRITE_SPLIT_SIZES = {"train": 3686, "test": 922}

_SPRITE_SPLIT_SEED = 0
_SPRITE_SUPERSAMPLE = 4


def sprite_factor_values() -> dict[str, torch.Tensor]:
    r"""The physical value of every level of every sprite factor, float64 tensors keyed by factor name.

    * ``shape``: 0, 1, 2 (square, ellipse, triangle; a category, its values are just the indices);
    * ``scale``: 4 values evenly spaced in [0.6, 1.0], the size relative to the largest sprite;
    * ``rotation``: 6 angles :math:`k\pi/12`, k = 0..5, in radians, in [0, pi/2): a square has 4-fold, an ellipse
      2-fold and a triangle 3-fold symmetry, so no two angles in this range give the same image of a shape;
    * ``x``, ``y``: 8 centres evenly spaced in [5, 11] pixels (pixel i covers [i, i + 1); y grows downwards).

    Returns:
        dict: name -> (SPRITE_FACTORS[name],) float64 tensor.
    """
    return {
        "shape": torch.arange(3, dtype=torch.float64),
        "scale": torch.linspace(0.6, 1.0, 4, dtype=torch.float64),
        "rotation": torch.arange(6, dtype=torch.float64) * math.pi / 12,
        "x": torch.linspace(5.0, 11.0, 8, dtype=torch.float64),
        "y": torch.linspace(5.0, 11.0, 8, dtype=torch.float64),
    }


def all_sprite_factors(device=None) -> torch.Tensor:
    """Every combination of factor levels, (4608, 5) int64, in lexicographic order (the last factor, y, fastest).

    Column j holds the level index of factor j of :data:`SPRITE_FACTORS` (shape, scale, rotation, x, y), each in
    0..SPRITE_FACTORS[name] - 1.
    """
    axes = [torch.arange(k) for k in SPRITE_FACTORS.values()]
    grid = torch.cartesian_prod(*axes)
    return grid.to(device)


def _check_sprite_factors(factors) -> torch.Tensor:
    if not isinstance(factors, torch.Tensor):
        raise TypeError(f"factors must be a torch.Tensor of level indices, got {type(factors).__name__}")
    if factors.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise TypeError(f"factors must be an integer tensor of level indices, got dtype {factors.dtype}")
    check_shape("factors", factors, ("N", len(SPRITE_FACTORS)))
    sizes = torch.tensor(list(SPRITE_FACTORS.values()), device=factors.device)
    bad = (factors < 0) | (factors >= sizes)
    if bool(bad.any()):
        row, col = (int(v) for v in bad.nonzero()[0])
        name = list(SPRITE_FACTORS)[col]
        raise ValueError(f"factors[{row}, {col}] = {int(factors[row, col])} is outside 0..{SPRITE_FACTORS[name] - 1} "
                         f"(the levels of factor {name!r})")
    return factors.long()


def render_sprites(factors: torch.Tensor, *, device=None, chunk: int = 1024) -> torch.Tensor:
    r"""Render sprites from factor level indices, vectorised over the batch.

    Each pixel is the fraction of its 4 x 4 sub-pixel grid that lies inside the shape (anti-aliasing), so values
    are multiples of 1/16 in [0, 1]. A point :math:`p` (pixel coordinates) is inside when its body coordinates
    :math:`u = R(-\theta)(p - c) / (4.5 s)` (centre c = (x, y), rotation theta, scale s) satisfy

    * square: :math:`\max(|u_1|, |u_2|) \le 0.75`;
    * ellipse: :math:`u_1^2 + (u_2 / 0.55)^2 \le 1` (semi-axes 1 and 0.55);
    * triangle (equilateral, circumradius 1.1, one vertex pointing down at theta = 0, as y grows downwards):
      :math:`n_k^\top u \le 0.55` for the three outward edge normals :math:`n_k` at angles
      :math:`90° + 180° + 120° k`.

    Deterministic: no randomness at all.

    Args:
        factors: integer tensor (N, 5) of level indices (columns as :data:`SPRITE_FACTORS`).
        device: where to create the images (``None``: the device of ``factors``).
        chunk: sprites rendered at once (memory: chunk * 4096 floats).

    Returns:
        float32 tensor (N, 1, 16, 16) in [0, 1].

    Raises:
        TypeError: factors not an integer tensor. ValueError: wrong shape or a level index out of range.
    """
    factors = _check_sprite_factors(factors)
    chunk = check_positive_int("chunk", chunk)
    device = factors.device if device is None else torch.device(device)
    vals = sprite_factor_values()
    f = factors.cpu()
    shape = f[:, 0]
    scale = (vals["scale"][f[:, 1]] * 4.5).float()
    theta = vals["rotation"][f[:, 2]].float()
    cx, cy = vals["x"][f[:, 3]].float(), vals["y"][f[:, 4]].float()
    ss, size = _SPRITE_SUPERSAMPLE, SPRITE_SIZE
    coords = (torch.arange(size * ss, dtype=torch.float32) + 0.5) / ss  # sub-pixel centres
    py, px = torch.meshgrid(coords, coords, indexing="ij")  # (S*ss, S*ss)
    out = []
    for start in range(0, f.shape[0], chunk):
        sl = slice(start, start + chunk)
        dx = (px[None] - cx[sl, None, None]) / scale[sl, None, None]
        dy = (py[None] - cy[sl, None, None]) / scale[sl, None, None]
        c, s = torch.cos(theta[sl])[:, None, None], torch.sin(theta[sl])[:, None, None]
        u1, u2 = c * dx + s * dy, -s * dx + c * dy  # R(-theta) (p - c); image y points down
        square = torch.maximum(u1.abs(), u2.abs()) <= 0.75
        ellipse = u1**2 + (u2 / 0.55) ** 2 <= 1.0
        tri = torch.ones_like(square)
        for k in range(3):
            a = math.pi / 2 + math.pi + 2 * math.pi * k / 3  # outward normals; the vertex opposite points up
            tri &= (math.cos(a) * u1 - math.sin(a) * u2) <= 0.55
        sh = shape[sl, None, None]
        inside = torch.where(sh == 0, square, torch.where(sh == 1, ellipse, tri)).to(torch.float32)
        img = inside.reshape(-1, size, ss, size, ss).mean(dim=(2, 4))
        out.append(img)
    return torch.cat(out).unsqueeze(1).to(device)


def sample_sprites(n: int, *, seed: int = 0, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw ``n`` sprites with every factor level independent and uniform, and render them.

    Args:
        n: number of sprites (>= 1). seed: seed of a private CPU generator (the global RNG is untouched).
        device: where to create the tensors (``None``: CPU).

    Returns:
        ``(images, factors)``: float32 (n, 1, 16, 16) in [0, 1] and int64 (n, 5) level indices
        (columns as :data:`SPRITE_FACTORS`).

    Raises:
        TypeError / ValueError: n not a positive int, seed not an int.
    """
    n = check_positive_int("n", n)
    g = _generator(seed)
    factors = torch.stack([torch.randint(k, (n,), generator=g) for k in SPRITE_FACTORS.values()], dim=1)
    return render_sprites(factors, device=device), factors.to(device)


@functools.lru_cache(maxsize=1)
def _sprite_split_indices() -> dict[str, np.ndarray]:
    n = sum(SPRITE_SPLIT_SIZES.values())
    perm = np.random.RandomState(_SPRITE_SPLIT_SEED).permutation(n)  # numpy's frozen legacy stream
    return {"train": perm[:SPRITE_SPLIT_SIZES["train"]], "test": perm[SPRITE_SPLIT_SIZES["train"]:]}


def load_sprites(split: str = "train", *, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """The sprites dataset: every combination of the factor levels rendered once, in fixed splits.

    The 3 (shape) x 4 (scale) x 6 (rotation) x 8 (x) x 8 (y) = 4608 combinations of :func:`all_sprite_factors`,
    rendered by :func:`render_sprites` (16 x 16 pixels, grey values in [0, 1]), cut by a permutation made with
    seed 0 (numpy's frozen legacy RNG) into ``"train"`` (3686) and ``"test"`` (922) sprites, see
    :data:`SPRITE_SPLIT_SIZES`. Over the whole grid the factors are exactly independent and uniform.
    Generated offline in about a second; nothing is downloaded.

    Args:
        split: ``"train"``, ``"test"`` or ``"all"`` (the 4608 sprites in grid order).
        device: where to create the tensors (``None``: CPU).

    Returns:
        ``(images, factors)``: float32 (N, 1, 16, 16) in [0, 1] and int64 (N, 5) factor level indices.

    Raises:
        ValueError: unknown split.
    """
    check_choice("split", split, ("train", "test", "all"))
    factors = all_sprite_factors()
    if split != "all":
        factors = factors[torch.from_numpy(_sprite_split_indices()[split])]
    return render_sprites(factors, device=device), factors.to(device)
