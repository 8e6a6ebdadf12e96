"""Names that moved to a later chapter's module stay importable from their old module.

A concept module imports only infrastructure and earlier chapters, so an earlier chapter cannot import a
later one at the top of its file to re-export what moved there. Instead the old module defines a module-level
``__getattr__`` (PEP 562) with :func:`moved_names`: ``coursekit.gan.gradient_penalty`` and
``from coursekit.gan import gradient_penalty`` still work, and return the very object that now lives in
``coursekit.wasserstein``, loaded on first use.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from importlib import import_module

__all__ = ["moved_names"]


def moved_names(module: str, moved: Mapping[str, str]) -> Callable[[str], object]:
    """Return a module ``__getattr__`` that finds each moved name in its new module.

    Args:
        module: the old module's ``__name__`` (for the error message).
        moved: ``{name: new module's full name}``, e.g. ``{"gradient_penalty": "coursekit.wasserstein"}``.

    Returns:
        ``__getattr__(name)``: the object ``name`` of its new module.

    Raises:
        AttributeError: (from the returned function) for a name that is neither defined nor moved.
    """
    table = dict(moved)

    def __getattr__(name: str) -> object:
        target = table.get(name)
        if target is None:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        return getattr(import_module(target), name)

    return __getattr__
