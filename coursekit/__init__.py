"""coursekit: the tested helper package of the Deep Generative Models course.

Submodules are imported on first use, so ``import coursekit as ck`` is cheap and
``ck.vae``, ``ck.train`` ... work without separate imports.
"""
from importlib import import_module

__version__ = "0.1.0"

_SUBMODULES = (
    "runtime", "data", "nets", "train", "plotting", "check", "student",
    "divergences", "vae", "metrics", "bench", "score", "flows", "diffusion", "gan",
)
__all__ = list(_SUBMODULES) + ["__version__"]


def __getattr__(name):
    if name in _SUBMODULES:
        module = import_module(f"{__name__}.{name}")
        globals()[name] = module  # cache: later look-ups skip __getattr__
        return module
    raise AttributeError(f"module 'coursekit' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
