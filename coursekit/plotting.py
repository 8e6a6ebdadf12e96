"""Plots used across the chapters, made with matplotlib only.

Every function draws into ``ax`` when given (so figures can be composed with ``plt.subplots``) or into a
new figure otherwise, and returns the ``matplotlib.axes.Axes`` it drew on. Tensors may live on any
device and may require grad: they are detached and copied to the CPU first.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["image_grid", "plot_history", "scatter_2d", "density_2d", "vector_field_2d", "interpolation_strip"]


def _new_ax(ax, figsize=None):
    if ax is not None:
        return ax
    import matplotlib.pyplot as plt  # imported lazily: importing coursekit must not pick a backend

    _, ax = plt.subplots(figsize=figsize)
    return ax


def _to_numpy(name: str, x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", torch.float32).numpy()
    if isinstance(x, np.ndarray):
        return x.astype(np.float32, copy=False)
    raise TypeError(f"{name} must be a torch.Tensor or numpy array, got {type(x).__name__}")


def _as_images(x) -> np.ndarray:
    """Return (N, H, W) or (N, H, W, 3) float array in [0, 1] from the accepted input layouts."""
    a = _to_numpy("x", x)
    if a.ndim == 2:  # (N, D) flattened square images, e.g. (N, 64) digits or (N, 784) MNIST
        side = math.isqrt(a.shape[1])
        if side * side != a.shape[1]:
            raise ValueError(f"flattened images need a square number of pixels, got shape {a.shape}")
        a = a.reshape(-1, side, side)
    elif a.ndim == 4:  # (N, C, H, W)
        if a.shape[1] == 1:
            a = a[:, 0]
        elif a.shape[1] == 3:
            a = a.transpose(0, 2, 3, 1)
        else:
            raise ValueError(f"images (N, C, H, W) need C = 1 or 3, got shape {a.shape}")
    elif a.ndim != 3:
        raise ValueError(f"images must have shape (N, D), (N, H, W) or (N, C, H, W), got {a.shape}")
    if a.shape[0] == 0:
        raise ValueError("no images to show (N = 0)")
    if not np.isfinite(a).all():
        raise ValueError("images contain NaN or Inf")
    lo, hi = float(a.min()), float(a.max())
    if lo < -1e-6 or hi > 1 + 1e-6:
        raise ValueError(
            f"image values must be in [0, 1], got [{lo:.3g}, {hi:.3g}]; "
            f"for logits apply torch.sigmoid first, for [-1, 1] data use (x + 1) / 2"
        )
    return np.clip(a, 0.0, 1.0)


def image_grid(x, nrow: int = 10, ax=None, title: str | None = None, cmap: str = "gray_r", pad: int = 1):
    """Show images as one mosaic, ``nrow`` images per row (torchvision's convention).

    Args:
        x: images with values in [0, 1]: (N, D) with D a square number (e.g. 64 -> 8x8),
            (N, H, W), (N, 1, H, W) or (N, 3, H, W); a Tensor (any device) or numpy array.
        nrow: number of images per row of the mosaic.
        ax: Axes to draw into (default: a new figure).
        title: optional title.
        cmap: colour map for grey images; the default ``"gray_r"`` shows ink (1) as black on white,
            like the digits on paper.
        pad: pixels of background between images.

    Returns:
        The matplotlib Axes.

    Raises:
        ValueError: for an unsupported shape, NaN/Inf, or values outside [0, 1] (e.g. logits).
    """
    imgs = _as_images(x)
    if isinstance(nrow, bool) or not isinstance(nrow, int) or nrow < 1:
        raise ValueError(f"nrow must be a positive integer, got {nrow!r}")
    n, h, w = imgs.shape[:3]
    ncol = min(nrow, n)
    nrows = math.ceil(n / ncol)
    # Background 0 is white with gray_r; mosaic[r*(h+pad):..., c*(w+pad):...] holds image r*ncol + c.
    canvas = np.zeros((nrows * (h + pad) - pad, ncol * (w + pad) - pad) + imgs.shape[3:], dtype=np.float32)
    for i in range(n):
        r, c = divmod(i, ncol)
        canvas[r * (h + pad): r * (h + pad) + h, c * (w + pad): c * (w + pad) + w] = imgs[i]
    ax = _new_ax(ax, figsize=(max(2.0, 0.6 * ncol), max(1.0, 0.6 * nrows)))
    ax.imshow(canvas, cmap=cmap if canvas.ndim == 2 else None, vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title)
    return ax


def _ema(values: np.ndarray, weight: float) -> np.ndarray:
    """Bias-corrected exponential moving average that skips NaNs (TensorBoard-style smoothing)."""
    out = np.full_like(values, np.nan)
    avg, norm = 0.0, 0.0
    for i, v in enumerate(values):
        if np.isnan(v):
            continue
        avg = weight * avg + (1 - weight) * v
        norm = weight * norm + (1 - weight)
        out[i] = avg / norm
    return out


def plot_history(history, keys: Sequence[str] = ("loss",), ax=None, smooth: float = 0.6, logy: bool = False,
                 title: str | None = None):
    """Plot logged scalars against the training step.

    Args:
        history: a :class:`coursekit.train.History`, or a dict ``{"steps": [...], key: [...]}``
            (``"steps"`` optional: 1, 2, ... is used).
        keys: names of the scalars to plot (one line each), or a single name.
        ax: Axes to draw into (default: a new figure).
        smooth: exponential moving-average weight in [0, 1): 0 plots the raw values; otherwise the raw
            values are drawn faintly with the smoothed curve on top.
        logy: logarithmic y axis (for positive quantities).
        title: optional title.

    Returns:
        The matplotlib Axes.

    Raises:
        ValueError: if a key was not logged, or ``smooth`` is outside [0, 1).
    """
    if isinstance(keys, str):
        keys = (keys,)
    if not (0.0 <= float(smooth) < 1.0):
        raise ValueError(f"smooth must be in [0, 1), got {smooth}")
    available = list(history.keys())
    steps = history.steps if hasattr(history, "steps") else history.get("steps")
    ax = _new_ax(ax)
    for key in keys:
        if key not in available or key == "steps":
            raise ValueError(f"{key!r} was not logged; available: {[k for k in available if k != 'steps']}")
        values = np.asarray(history[key], dtype=np.float64)
        x = np.arange(1, len(values) + 1) if steps is None else np.asarray(steps)
        if len(x) != len(values):
            raise ValueError(f"{key!r} has {len(values)} values for {len(x)} steps")
        if smooth > 0:
            (line,) = ax.plot(x, values, alpha=0.25)
            ax.plot(x, _ema(values, float(smooth)), color=line.get_color(), label=key)
        else:
            ax.plot(x, values, label=key)
    ax.set_xlabel("step")
    if logy:
        ax.set_yscale("log")
    if len(keys) > 1:
        ax.legend()
    else:
        ax.set_ylabel(keys[0])
    if title:
        ax.set_title(title)
    return ax


def scatter_2d(x, ax=None, *, s: float = 2.0, alpha: float = 0.5, color=None, label: str | None = None,
               modes=None, lim: float | None = None, title: str | None = None):
    """Scatter plot of 2-D points, with equal axis scales.

    Args:
        x: (N, 2) points (Tensor on any device, or numpy array).
        ax: Axes to draw into (default: a new figure).
        s, alpha, color, label: passed to ``ax.scatter``.
        modes: optional (K, 2) mode centres (e.g. :func:`coursekit.data.ring_modes`), drawn as red crosses.
        lim: if given, both axes span [-lim, lim].
        title: optional title.

    Returns:
        The matplotlib Axes.

    Raises:
        ValueError: if ``x`` (or ``modes``) is not of shape (N, 2).
    """
    pts = _to_numpy("x", x)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"x must have shape (N, 2), got {pts.shape}")
    ax = _new_ax(ax, figsize=(4, 4))
    ax.scatter(pts[:, 0], pts[:, 1], s=s, alpha=alpha, color=color, label=label, linewidths=0)
    if modes is not None:
        m = _to_numpy("modes", modes)
        if m.ndim != 2 or m.shape[1] != 2:
            raise ValueError(f"modes must have shape (K, 2), got {m.shape}")
        ax.scatter(m[:, 0], m[:, 1], marker="x", color="red", s=30, label="modes")
    if lim is not None:
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    if title:
        ax.set_title(title)
    return ax


def _grid(xlim, ylim, n: int):
    for name, lim in (("xlim", xlim), ("ylim", ylim)):
        if len(lim) != 2 or not float(lim[0]) < float(lim[1]):
            raise ValueError(f"{name} must be (low, high) with low < high, got {lim}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise ValueError(f"n (grid points per axis) must be an integer >= 2, got {n!r}")
    xs = torch.linspace(float(xlim[0]), float(xlim[1]), n)
    ys = torch.linspace(float(ylim[0]), float(ylim[1]), n)
    gx, gy = torch.meshgrid(xs, ys, indexing="xy")  # gx[i, j] = xs[j]: rows follow y, as imshow expects
    return gx, gy, torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1)


def density_2d(log_prob_fn, xlim=(-3.0, 3.0), ylim=(-3.0, 3.0), ax=None, *, n: int = 200, log: bool = False,
               cmap: str = "viridis", device=None, title: str | None = None):
    """Show a 2-D density as an image, evaluating ``log_prob_fn`` on an n x n grid.

    Args:
        log_prob_fn: maps a float32 (M, 2) tensor to (M,) log-densities (nats); called once under
            ``torch.no_grad()``.
        xlim, ylim: (low, high) ranges of the two coordinates.
        ax: Axes to draw into (default: a new figure).
        n: grid points per axis (>= 2).
        log: show the log-density instead of the density exp(log p).
        cmap: colour map.
        device: device of the grid passed to ``log_prob_fn`` (``None``: CPU).
        title: optional title.

    Returns:
        The matplotlib Axes.

    Raises:
        ValueError: for bad limits, an output that is not (M,), or NaN / +Inf log-densities
            (-Inf, i.e. zero density, is allowed).
    """
    _, _, pts = _grid(xlim, ylim, n)
    with torch.no_grad():
        logp = log_prob_fn(pts.to(device))
    if not isinstance(logp, torch.Tensor) or tuple(logp.shape) != (pts.shape[0],):
        shape = tuple(logp.shape) if isinstance(logp, torch.Tensor) else type(logp).__name__
        raise ValueError(f"log_prob_fn must return a tensor of shape ({pts.shape[0]},), got {shape}")
    logp = logp.detach().to("cpu", torch.float64)
    if bool(torch.isnan(logp).any()) or bool((logp == math.inf).any()):
        raise ValueError("log_prob_fn returned NaN or +Inf")
    z = (logp if log else logp.exp()).reshape(n, n).numpy()
    if log:
        z = np.where(np.isfinite(z), z, np.nan)  # -inf (zero density) shows as blank
    ax = _new_ax(ax, figsize=(4, 4))
    ax.imshow(z, origin="lower", extent=(*map(float, xlim), *map(float, ylim)), cmap=cmap, aspect="equal")
    if title:
        ax.set_title(title)
    return ax


def vector_field_2d(fn, xlim=(-3.0, 3.0), ylim=(-3.0, 3.0), ax=None, *, n: int = 20, device=None,
                    title: str | None = None):
    """Draw a 2-D vector field (e.g. a score function grad log p) as arrows on an n x n grid.

    Args:
        fn: maps a float32 (M, 2) tensor to (M, 2) vectors; called once under ``torch.no_grad()``.
        xlim, ylim, n, device, title: as in :func:`density_2d`.
        ax: Axes to draw into (default: a new figure).

    Returns:
        The matplotlib Axes.

    Raises:
        ValueError: for bad limits or an output that is not (M, 2) or not finite.
    """
    gx, gy, pts = _grid(xlim, ylim, n)
    with torch.no_grad():
        v = fn(pts.to(device))
    if not isinstance(v, torch.Tensor) or tuple(v.shape) != tuple(pts.shape):
        shape = tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__
        raise ValueError(f"fn must return a tensor of shape {tuple(pts.shape)}, got {shape}")
    v = v.detach().to("cpu", torch.float32)
    if not bool(torch.isfinite(v).all()):
        raise ValueError("fn returned NaN or Inf vectors")
    ax = _new_ax(ax, figsize=(4, 4))
    ax.quiver(gx.numpy(), gy.numpy(), v[:, 0].reshape(n, n).numpy(), v[:, 1].reshape(n, n).numpy())
    ax.set_aspect("equal")
    if title:
        ax.set_title(title)
    return ax


def interpolation_strip(images, ax=None, *, title: str | None = None, cmap: str = "gray_r"):
    """Show interpolations: one row per path, left to right.

    Args:
        images: one strip, a (K, ...) batch of K images in any layout accepted by :func:`image_grid`
            ((K, D), (K, H, W) or (K, C, H, W)); or several strips, as a list of such batches with the
            same K, or a (R, K, C, H, W) tensor. Values in [0, 1].
        ax: Axes to draw into (default: a new figure).
        title: optional title.
        cmap: colour map for grey images.

    Returns:
        The matplotlib Axes.

    Raises:
        ValueError: if the strips have different lengths, or as :func:`image_grid`.
    """
    if isinstance(images, (list, tuple)):
        rows = [r if isinstance(r, torch.Tensor) else torch.as_tensor(np.asarray(r)) for r in images]
        if not rows:
            raise ValueError("no strips to show")
        lengths = {r.shape[0] for r in rows}
        if len(lengths) != 1:
            raise ValueError(f"every strip must have the same number of images, got {sorted(lengths)}")
        k, flat = rows[0].shape[0], torch.cat([r.detach().cpu() for r in rows])
    elif isinstance(images, (torch.Tensor, np.ndarray)) and images.ndim == 5:  # (R, K, C, H, W)
        k, flat = images.shape[1], images.reshape(-1, *images.shape[2:])
    else:
        k, flat = images.shape[0], images
    return image_grid(flat, nrow=k, ax=ax, title=title, cmap=cmap)
