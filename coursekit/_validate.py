"""Small input checks shared by every coursekit module.

Each check raises a ``ValueError`` or ``TypeError`` whose message names the argument, says what was
expected and what was received. Catching bad input early turns a confusing failure deep inside a
training loop ("mat1 and mat2 shapes cannot be multiplied") into a sentence a student can act on.

All checks return the checked value unchanged, so they can be used inline::

    x = check_shape("x", x, ("N", 64))

Other coursekit modules may add small functions here (keep them short and documented).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence

import numpy as np
import torch

__all__ = [
    "check_tensor",
    "check_finite",
    "check_shape",
    "check_positive_int",
    "check_nonnegative_int",
    "check_positive_float",
    "check_probability",
    "check_choice",
    "check_broadcastable",
    "check_same_shape",
    "check_floating",
    "check_nonnegative_float",
    "check_matrix",
    "check_batch",
    "check_all_positive",
    "check_weights",
    "check_nonempty",
    "check_log_values",
    "check_covariance",
    "check_scores",
    "check_probability_vectors",
    "PROBABILITY_SUM_ATOL",
    "check_points",
    "check_class_labels",
    "check_finite_values",
    "check_schedule",
    "check_alphas_cumprod",
    "check_time_indices",
]


def check_tensor(name: str, t) -> torch.Tensor:
    """Check that ``t`` is a ``torch.Tensor``.

    Raises:
        TypeError: if ``t`` is not a tensor (e.g. a numpy array or a list).
    """
    if not isinstance(t, torch.Tensor):
        raise TypeError(
            f"{name} must be a torch.Tensor, got {type(t).__name__}; "
            f"convert it with torch.as_tensor({name}, dtype=torch.float32)"
        )
    return t


def check_finite(name: str, t: torch.Tensor) -> torch.Tensor:
    """Check that every entry of tensor ``t`` is finite (no NaN, no +-Inf).

    Integer and boolean tensors are always finite and pass unchanged.

    Raises:
        TypeError: if ``t`` is not a tensor.
        ValueError: if ``t`` contains NaN or Inf; the message counts them.
    """
    check_tensor(name, t)
    if t.is_floating_point() or t.is_complex():
        finite = torch.isfinite(t)
        if not bool(finite.all()):
            n_nan = int(torch.isnan(t).sum())
            n_inf = int(torch.isinf(t).sum())
            raise ValueError(
                f"{name} must be finite, but it has {n_nan} NaN and {n_inf} Inf entries "
                f"(shape {tuple(t.shape)})"
            )
    return t


def check_shape(name: str, t: torch.Tensor, shape_pattern: Sequence) -> torch.Tensor:
    """Check the shape of tensor ``t`` against a pattern.

    Pattern entries:

    * an ``int``: that dimension must have exactly this size;
    * ``None``: any size;
    * a ``str`` such as ``"N"``: any size, but every dimension with the same name must agree;
    * ``...`` (Ellipsis), only as the first entry: any number of leading (batch) dimensions.

    Examples: ``("N", 64)`` accepts (N, 64); ``(..., 2)`` accepts (2,), (N, 2), (B, N, 2);
    ``("N", "N")`` accepts square matrices.

    Raises:
        TypeError: if ``t`` is not a tensor.
        ValueError: if the number of dimensions or a size does not match.
    """
    check_tensor(name, t)
    pattern = tuple(shape_pattern)
    shape = tuple(t.shape)
    leading = len(pattern) > 0 and pattern[0] is Ellipsis
    core = pattern[1:] if leading else pattern
    if Ellipsis in core:
        raise ValueError("check_shape: '...' may only appear as the first entry of the pattern")
    shown = "(" + ", ".join("..." if p is Ellipsis else "?" if p is None else str(p) for p in pattern)
    shown += ",)" if len(pattern) == 1 else ")"
    if (leading and len(shape) < len(core)) or (not leading and len(shape) != len(core)):
        raise ValueError(f"{name} must have shape {shown}, got shape {shape}")
    tail = shape[len(shape) - len(core):] if core else ()
    named: dict[str, int] = {}
    for dim, (want, got) in enumerate(zip(core, tail)):
        if want is None:
            continue
        if isinstance(want, str):
            if want in named and named[want] != got:
                raise ValueError(
                    f"{name} must have shape {shown} with equal sizes for '{want}', got shape {shape}"
                )
            named[want] = got
        elif int(want) != got:
            raise ValueError(f"{name} must have shape {shown}, got shape {shape}")
    return t


def check_positive_int(name: str, v) -> int:
    """Check that ``v`` is an integer >= 1 (``bool`` is rejected; 0-d integer tensors are accepted).

    Returns:
        ``v`` as a python ``int``.

    Raises:
        TypeError: if ``v`` is not an integer (e.g. ``2.0`` or ``"3"``).
        ValueError: if ``v < 1``.
    """
    v = _as_int(name, v)
    if v < 1:
        raise ValueError(f"{name} must be a positive integer (>= 1), got {v}")
    return v


def check_nonnegative_int(name: str, v) -> int:
    """Check that ``v`` is an integer >= 0. Returns it as a python ``int``.

    Raises:
        TypeError: if ``v`` is not an integer.
        ValueError: if ``v < 0``.
    """
    v = _as_int(name, v)
    if v < 0:
        raise ValueError(f"{name} must be a non-negative integer (>= 0), got {v}")
    return v


def check_positive_float(name: str, v) -> float:
    """Check that ``v`` is a finite real number > 0. Returns it as a python ``float``.

    Raises:
        TypeError: if ``v`` is not a real number.
        ValueError: if ``v`` is not finite or ``v <= 0``.
    """
    v = _as_float(name, v)
    if not (v > 0 and v != float("inf")):  # also false for NaN
        raise ValueError(f"{name} must be a finite number > 0, got {v}")
    return v


def check_probability(name: str, t) -> torch.Tensor:
    """Check that every entry of ``t`` is a probability: finite and in the closed interval [0, 1].

    Accepts a tensor or a python number (returned as a 0-d float32 tensor).

    Raises:
        TypeError: if ``t`` is neither a tensor nor a real number.
        ValueError: if an entry is NaN/Inf or outside [0, 1]; the message gives the observed range.
    """
    if isinstance(t, numbers.Real) and not isinstance(t, bool):
        t = torch.tensor(float(t))
    check_tensor(name, t)
    if t.numel() > 0:
        # One read from the device: the extremes are NaN or +-Inf exactly when some entry is.
        values = t.detach().to(torch.uint8) if t.dtype == torch.bool else t.detach()
        lo, hi = (float(v) for v in torch.stack(torch.aminmax(values)).tolist())
        if not (math.isfinite(lo) and math.isfinite(hi)):
            check_finite(name, t)  # raises, counting the NaN and Inf entries
        if lo < 0.0 or hi > 1.0:
            raise ValueError(f"{name} must contain probabilities in [0, 1], got values in [{lo:g}, {hi:g}]")
    return t


def check_choice(name: str, v, choices: Sequence) -> object:
    """Check that ``v`` is one of ``choices``.

    Raises:
        ValueError: listing the valid choices.
    """
    if v not in tuple(choices):
        valid = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name} must be one of {valid}; got {v!r}")
    return v


def check_broadcastable(**tensors: torch.Tensor) -> torch.Size:
    """Return the broadcast shape of the named tensors.

    Example: ``check_broadcastable(mu_q=mu_q, mu_p=mu_p)``.

    Raises:
        ValueError: naming every tensor and its shape if they do not broadcast together.
    """
    shapes = {k: tuple(v.shape) for k, v in tensors.items()}
    try:
        return torch.broadcast_shapes(*shapes.values())
    except RuntimeError:
        desc = ", ".join(f"{k} {s}" for k, s in shapes.items())
        raise ValueError(f"shapes do not broadcast: {desc}") from None


def check_same_shape(**tensors: torch.Tensor) -> torch.Size:
    """Check that the named tensors all have the same shape (no broadcasting) and return it.

    Example: ``check_same_shape(x0=x0, noise=noise)``.

    Raises:
        ValueError: naming every tensor and its shape if the shapes differ.
    """
    shapes = {k: tuple(v.shape) for k, v in tensors.items()}
    if len(set(shapes.values())) > 1:
        desc = ", ".join(f"{k} {s}" for k, s in shapes.items())
        raise ValueError(f"{' and '.join(shapes)} must have the same shape, got {desc}")
    return next(iter(tensors.values())).shape if tensors else torch.Size()


def check_floating(name: str, t, *, finite: bool = True) -> torch.Tensor:
    """Check that ``t`` is a floating-point tensor (float16, bfloat16, float32 or float64) and, unless
    ``finite=False``, that every entry is finite.

    Raises:
        TypeError: if ``t`` is not a tensor, or has an integer, boolean or complex dtype.
        ValueError: if ``finite`` and ``t`` contains NaN or Inf (see :func:`check_finite`).
    """
    check_tensor(name, t)
    if not t.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor (e.g. float32 or float64), got dtype {t.dtype}")
    return check_finite(name, t) if finite else t


def check_nonnegative_float(name: str, v) -> float:
    """Check that ``v`` is a finite real number >= 0 (a python number or a 1-element tensor).

    Returns:
        ``v`` as a python ``float``.

    Raises:
        TypeError: if ``v`` is not a real number (``bool`` is rejected).
        ValueError: if ``v`` is NaN, infinite or negative.
    """
    v = _as_float(name, v)
    if not (v >= 0 and v != float("inf")):  # also false for NaN
        raise ValueError(f"{name} must be a finite number >= 0, got {v}")
    return v


def check_matrix(name: str, x, dim: int | None = None, *, min_rows: int = 1) -> torch.Tensor:
    """Check a data matrix: a finite floating-point tensor of shape ``(N, D)``, one example per row.

    Args:
        name: the argument's name, for the message.
        x: the tensor to check.
        dim: the required number of columns D (``None``: any D >= 1).
        min_rows: the smallest number of rows N accepted (default 1; 0 accepts an empty batch).

    Raises:
        TypeError: if ``x`` is not a floating-point tensor.
        ValueError: if ``x`` is not 2-D, has the wrong D, fewer than ``min_rows`` rows, no columns, or NaN/Inf.
    """
    check_floating(name, x, finite=False)
    check_shape(name, x, ("N", "D" if dim is None else dim))
    if x.shape[0] < min_rows or x.shape[1] < 1:
        raise ValueError(f"{name} must have shape (N, D) with N >= {min_rows} and D >= 1, got shape {tuple(x.shape)}")
    return check_finite(name, x)


def check_batch(name: str, x) -> torch.Tensor:
    """Check a batch of examples of any shape: a finite floating-point tensor of shape ``(N, ...)``.

    Raises:
        TypeError: if ``x`` is not a floating-point tensor.
        ValueError: if ``x`` is 0-dimensional (no batch dimension) or contains NaN/Inf.
    """
    check_floating(name, x, finite=False)
    if x.ndim < 1:
        raise ValueError(f"{name} must have a batch dimension, shape (N, ...), got a 0-d tensor")
    return check_finite(name, x)


def check_all_positive(name: str, t: torch.Tensor) -> torch.Tensor:
    """Check that every entry of tensor ``t`` is finite and > 0 (standard deviations, noise levels, widths).

    Raises:
        TypeError: if ``t`` is not a tensor.
        ValueError: if an entry is NaN/Inf or <= 0; the message gives the minimum.
    """
    check_finite(name, t)
    if bool((t <= 0).any()):
        raise ValueError(f"{name} must be > 0, got minimum {float(t.min()):g}")
    return t


def check_weights(name: str, w: torch.Tensor) -> torch.Tensor:
    """Check unnormalised mixture weights: finite entries >= 0 with a positive sum (normalise with ``w / w.sum()``).

    Raises:
        TypeError: if ``w`` is not a tensor.
        ValueError: if an entry is NaN/Inf or negative, or all entries are 0.
    """
    check_finite(name, w)
    if bool((w < 0).any()) or float(w.sum()) <= 0:
        raise ValueError(f"{name} must be >= 0 with a positive sum (mixture weights), got {w.tolist()}")
    return w


def check_nonempty(name: str, t: torch.Tensor) -> torch.Tensor:
    """Check that tensor ``t`` has at least one entry.

    Raises:
        TypeError: if ``t`` is not a tensor.
        ValueError: if ``t.numel() == 0``.
    """
    check_tensor(name, t)
    if t.numel() == 0:
        raise ValueError(f"{name} must have at least one entry, got shape {tuple(t.shape)}")
    return t


def check_log_values(name: str, t) -> torch.Tensor:
    """Check values in the log domain (log weights, log-probabilities): a floating-point tensor without NaN
    or +inf. ``-inf``, the log of a zero weight, is allowed.

    Raises:
        TypeError: if ``t`` is not a floating-point tensor.
        ValueError: if ``t`` contains NaN or +inf; the message counts them.
    """
    check_floating(name, t, finite=False)
    if bool(torch.isnan(t).any()) or bool(torch.isposinf(t).any()):
        raise ValueError(
            f"{name} must not contain NaN or +inf (-inf, a zero weight, is allowed), but it has "
            f"{int(torch.isnan(t).sum())} NaN and {int(torch.isposinf(t).sum())} +inf entries (shape {tuple(t.shape)})"
        )
    return t


def check_covariance(name: str, s, dim: int | None = None):
    """Check a covariance matrix: shape ``(D, D)``, finite, symmetric and positive semi-definite up to round-off.

    Accepts a numpy array or a tensor (any device) and checks it in float64. With
    ``scale = max(1, max |S_ij|)``: every ``|S_ij - S_ji| <= 1e-6 * scale``, and the smallest eigenvalue of
    ``(S + S^T) / 2`` is ``>= -1e-6 * scale`` (round-off makes tiny negative eigenvalues; a clearly negative
    one means ``s`` is not a covariance matrix).

    Args:
        name: the argument's name, for the message. s: the matrix. dim: the required D (``None``: any).

    Returns:
        ``s`` unchanged (symmetrise it with ``(s + s.T) / 2`` if exact symmetry matters downstream).

    Raises:
        ValueError: for a wrong shape, NaN/Inf, an asymmetric matrix or a negative eigenvalue.
    """
    a = s.detach().to("cpu", torch.float64).numpy() if isinstance(s, torch.Tensor) else np.asarray(s, np.float64)
    if a.ndim != 2 or a.shape[0] != a.shape[1] or (dim is not None and a.shape[0] != dim):
        want = "(D, D)" if dim is None else f"({dim}, {dim})"
        raise ValueError(f"{name} must be a {want} covariance matrix, got shape {a.shape}")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} must be finite, but it has {int(np.isnan(a).sum())} NaN and "
                         f"{int(np.isinf(a).sum())} Inf entries (shape {a.shape})")
    scale = max(1.0, float(np.abs(a).max())) if a.size else 1.0
    if not np.allclose(a, a.T, rtol=0.0, atol=1e-6 * scale):
        raise ValueError(f"{name} must be symmetric (a covariance matrix); max |S - S^T| = "
                         f"{float(np.abs(a - a.T).max()):.3g}")
    w_min = float(np.linalg.eigvalsh(0.5 * (a + a.T))[0]) if a.size else 0.0
    if w_min < -1e-6 * scale:
        raise ValueError(f"{name} must be positive semi-definite (a covariance matrix); its smallest "
                         f"eigenvalue is {w_min:.3g}")
    return s


def _as_int(name: str, v) -> int:
    if isinstance(v, torch.Tensor) and v.numel() == 1 and not v.is_floating_point():
        v = v.item()
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(v).__name__} ({v!r})")
    return int(v)


def _as_float(name: str, v) -> float:
    if isinstance(v, torch.Tensor) and v.numel() == 1:
        v = v.item()
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {type(v).__name__}")
    return float(v)


def check_scores(name: str, t) -> torch.Tensor:
    """Check raw discriminator / critic outputs, one score per example, and return them flattened to ``(N,)``.

    Accepts a floating-point tensor of shape ``(N,)`` or ``(N, 1)`` with ``N >= 1`` and finite entries
    (logits of a GAN discriminator, scores of a WGAN critic).

    Raises:
        TypeError: if ``t`` is not a tensor or not floating point.
        ValueError: if the shape is not ``(N,)`` / ``(N, 1)``, ``N == 0``, or an entry is NaN/Inf.
    """
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of raw discriminator outputs, got {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
    if not (t.ndim == 1 or (t.ndim == 2 and t.shape[1] == 1)):
        raise ValueError(f"{name} must have shape (N,) or (N, 1) (one score per example), "
                         f"got shape {tuple(t.shape)}")
    if t.shape[0] == 0:
        raise ValueError(f"{name} is empty (N = 0)")
    check_finite(name, t)
    return t.reshape(-1)


#: Tolerance on ``|sum(p) - 1|`` accepted by :func:`check_probability_vectors` (per vector; float64 gets 1e-8).
PROBABILITY_SUM_ATOL = 1e-4


def check_probability_vectors(**tensors: torch.Tensor) -> torch.Size:
    """Check probability vectors along the last dim and return their broadcast shape.

    Each named tensor must be a floating-point tensor of shape ``(..., K)`` with ``K >= 1``, finite, with
    entries >= 0 summing to 1 along the last dim within :data:`PROBABILITY_SUM_ATOL` (1e-8 for float64);
    together they must broadcast. Example: ``check_probability_vectors(p=p, q=q)``.

    Raises:
        TypeError: if a value is not a tensor or not floating point.
        ValueError: 0-d or empty last dim, NaN/Inf, a negative entry, a sum off 1 (the message says how to
            normalise), or shapes that do not broadcast.
    """
    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a torch.Tensor of probabilities, got {type(t).__name__}")
        if not t.is_floating_point():
            raise TypeError(f"{name} must be a floating-point tensor, got dtype {t.dtype}")
        if t.ndim == 0 or t.shape[-1] == 0:
            raise ValueError(f"{name} must have shape (..., K) with K >= 1 outcomes along the last dim, "
                             f"got shape {tuple(t.shape)}")
        t = t.detach()
        check_finite(name, t)
        if bool((t < 0).any()):
            raise ValueError(f"{name} must be non-negative (probabilities), got minimum {float(t.min()):g}")
        atol = 1e-8 if t.dtype == torch.float64 else PROBABILITY_SUM_ATOL
        err = float((t.sum(dim=-1) - 1.0).abs().max())
        if err > atol:
            raise ValueError(f"{name} must sum to 1 along the last dim (tolerance {atol:g}); the largest "
                             f"deviation is {err:.3g}. Normalise it: {name} / {name}.sum(-1, keepdim=True)")
    return check_broadcastable(**tensors)


def check_points(name: str, x) -> torch.Tensor:
    """Check a sample of N points and return it as a matrix ``(N, D)``.

    Accepts a finite floating-point tensor of shape ``(N,)`` (N scalars, returned as ``(N, 1)``) or
    ``(N, ...)`` (each example flattened to a vector of D entries, e.g. images ``(N, 1, 8, 8)`` -> ``(N, 64)``).

    Raises:
        TypeError: if ``x`` is not a tensor or not floating point.
        ValueError: if ``x`` is 0-dimensional or contains NaN/Inf.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be floating point, got {x.dtype}")
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim < 2:
        raise ValueError(f"{name} must have shape (N,) or (N, ...), got {tuple(x.shape)}")
    check_finite(name, x)
    return x.reshape(x.shape[0], -1)


def check_class_labels(name: str, y, n: int, n_classes: int) -> torch.Tensor:
    """Check ``n`` class labels, one per example, and return them as int64.

    Accepts an integer tensor (int64, int32, int16 or uint8) of shape ``(n,)`` with values in
    ``0..n_classes - 1``.

    Raises:
        TypeError: if ``y`` is not an integer tensor.
        ValueError: if its shape is not ``(n,)`` or a label is out of range (the message gives the range seen).
    """
    if not isinstance(y, torch.Tensor) or y.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise TypeError(f"{name} must be an integer tensor, got {getattr(y, 'dtype', type(y).__name__)}")
    if y.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},), one entry per example, got {tuple(y.shape)}")
    if n > 0 and (int(y.min()) < 0 or int(y.max()) >= n_classes):
        raise ValueError(f"{name} must lie in 0..{n_classes - 1}, got values in {int(y.min())}..{int(y.max())}")
    return y.to(torch.int64)


def check_finite_values(name: str, v):
    """Check that a python number, numpy array or tensor has only finite entries (integers always pass).

    For the functions that accept any of the three (unit conversions such as nats to bits per dimension).
    Returns ``v`` unchanged.

    Raises:
        TypeError: if ``v`` is none of the three (``bool`` and non-numeric arrays are rejected).
        ValueError: if an entry is NaN or Inf; the message counts them.
    """
    if isinstance(v, torch.Tensor):
        return check_finite(name, v)
    a = np.asarray(v) if isinstance(v, (numbers.Real, np.ndarray, np.generic)) and not isinstance(v, bool) else None
    if a is None or a.dtype.kind not in "iuf":
        raise TypeError(f"{name} must be a real number, a numpy array or a tensor, got {type(v).__name__}")
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        raise ValueError(f"{name} must be finite, but it has {int(np.isnan(a).sum())} NaN and "
                         f"{int(np.isinf(a).sum())} Inf entries (shape {a.shape})")
    return v


def check_schedule(name: str, a) -> torch.Tensor:
    """A per-step schedule (betas or alphas_cumprod): a finite floating-point tensor of shape (T,), T >= 1.

    Raises:
        TypeError / ValueError: for a non-floating, non-finite, empty or wrongly shaped tensor."""
    return check_nonempty(name, check_shape(name, check_floating(name, a), ("T",)))


def check_alphas_cumprod(a) -> torch.Tensor:
    """A schedule that is a cumulative product of 1 - beta_t (chapters 08, 10, 12): a (T,) floating tensor in (0, 1],
    non-increasing in t.

    Raises:
        TypeError / ValueError: for a non-floating, non-finite, empty or wrongly shaped tensor, values outside
            (0, 1], or an increase in t."""
    check_schedule("alphas_cumprod", a)
    if bool((a <= 0).any()) or bool((a > 1).any()):
        raise ValueError(
            f"alphas_cumprod must lie in (0, 1] (a product of 1 - beta_t), got values in "
            f"[{float(a.min()):.3g}, {float(a.max()):.3g}]"
        )
    if a.numel() > 1 and bool((a[1:] > a[:-1]).any()):
        raise ValueError("alphas_cumprod must be non-increasing in t (every beta_t >= 0)")
    return a


def check_time_indices(t, T: int, n: int, device, name: str = "t", allow_minus_one: bool = False) -> torch.Tensor:
    """Time indices of a T-step schedule -> int64 tensor (n,) on ``device``. Accepts a python int or an integer
    tensor of shape () or (n,), with values in 0..T-1 (-1 also with ``allow_minus_one``: "before the first step").

    Raises:
        TypeError: for a bool, a float or bool tensor, or another type. ValueError: for a wrong shape or a value
            out of range; the messages use ``name``."""
    lo = -1 if allow_minus_one else 0
    if isinstance(t, bool):
        raise TypeError(f"{name} must be an integer time index, got a bool")
    if isinstance(t, numbers.Integral):
        t = torch.full((n,), int(t), dtype=torch.long, device=device)
    elif isinstance(t, torch.Tensor):
        if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise TypeError(
                f"{name} must hold integer time indices (dtype torch.long), got dtype {t.dtype}; "
                f"continuous times in [0, 1] must be mapped to indices first, e.g. (u * T).long()"
            )
        if t.ndim == 0:
            t = t.expand(n)
        elif t.shape != (n,):
            raise ValueError(f"{name} must be a python int or have shape () or ({n},) (one index per image), "
                             f"got shape {tuple(t.shape)}")
        t = t.to(device=device, dtype=torch.long)
    else:
        raise TypeError(f"{name} must be a python int or an integer tensor, got {type(t).__name__}")
    if t.numel() and (int(t.min()) < lo or int(t.max()) > T - 1):
        raise ValueError(
            f"{name} must lie in {{{lo}, ..., {T - 1}}} (0-based indices of a {T}-step schedule), got values in "
            f"[{int(t.min())}, {int(t.max())}]"
        )
    return t
