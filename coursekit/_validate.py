"""Shared input validation for coursekit (raise early, say what was expected).

Every helper raises ``TypeError`` for a wrong type and ``ValueError`` for a wrong
shape or value, with a message naming the argument, what was expected and what
was received.
"""

from __future__ import annotations

import numbers

import torch

__all__ = [
    "check_tensor",
    "check_finite",
    "check_shape",
    "check_positive_int",
    "check_probability",
    "check_broadcastable",
]


def check_tensor(name: str, t) -> None:
    """Raise TypeError unless ``t`` is a ``torch.Tensor``."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")


def check_finite(name: str, t: torch.Tensor) -> None:
    """Raise ValueError if ``t`` contains NaN or +/-Inf (TypeError if not a tensor)."""
    check_tensor(name, t)
    if t.is_floating_point() or t.is_complex():
        bad = ~torch.isfinite(t)
        if bool(bad.any()):
            n_nan = int(torch.isnan(t).sum())
            n_inf = int(bad.sum()) - n_nan
            raise ValueError(
                f"{name} must be finite, but it contains {n_nan} NaN and {n_inf} Inf "
                f"value(s) (shape {tuple(t.shape)})"
            )


def check_shape(name: str, t: torch.Tensor, shape_pattern) -> None:
    """Raise ValueError unless ``t.shape`` matches ``shape_pattern``.

    ``shape_pattern`` is a tuple whose entries are an ``int`` (that size exactly),
    ``None`` or a ``str`` (any size; the string names the dimension in the
    error message, e.g. ``("N", 64)``).
    """
    check_tensor(name, t)
    pattern = tuple(shape_pattern)
    ok = t.ndim == len(pattern) and all(
        not isinstance(p, int) or p is None or int(s) == p
        for s, p in zip(t.shape, pattern)
    )
    if not ok:
        want = "(" + ", ".join("?" if p is None else str(p) for p in pattern)
        want += ",)" if len(pattern) == 1 else ")"
        raise ValueError(f"{name} must have shape {want}, got {tuple(t.shape)}")


def check_positive_int(name: str, v) -> int:
    """Return ``int(v)``; raise TypeError unless ``v`` is an integer, ValueError unless ``v >= 1``."""
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        if isinstance(v, torch.Tensor) and v.ndim == 0 and not v.is_floating_point():
            v = int(v)
        else:
            raise TypeError(f"{name} must be a positive integer, got {v!r} ({type(v).__name__})")
    if v < 1:
        raise ValueError(f"{name} must be a positive integer (>= 1), got {v}")
    return int(v)


def check_probability(name: str, t: torch.Tensor) -> None:
    """Raise ValueError unless every entry of ``t`` is a finite number in [0, 1]."""
    check_finite(name, t)
    if t.numel() and (bool((t < 0).any()) or bool((t > 1).any())):
        raise ValueError(
            f"{name} must contain probabilities in [0, 1], got values in "
            f"[{float(t.min()):.4g}, {float(t.max()):.4g}]"
        )


def check_broadcastable(**tensors: torch.Tensor) -> torch.Size:
    """Return the broadcast shape of the named tensors; ValueError naming their shapes if they do not broadcast."""
    shapes = {k: tuple(v.shape) for k, v in tensors.items()}
    try:
        return torch.broadcast_shapes(*shapes.values())
    except RuntimeError:
        desc = ", ".join(f"{k} {s}" for k, s in shapes.items())
        raise ValueError(f"shapes do not broadcast: {desc}") from None
