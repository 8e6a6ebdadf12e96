"""coursekit: the tested helper package of the Deep Generative Models course.

Submodules are imported on first use, so ``import coursekit as ck`` is cheap and
``ck.vae``, ``ck.train`` ... work without separate imports.
"""

from importlib import import_module

__version__ = "0.1.0"

# The submodules, loaded on first attribute access, in the package's three layers. The concept modules
# are in chapter order, each with the number of the chapter that teaches it; a concept module imports only
# infrastructure and earlier chapters, and nothing in coursekit imports an application.
__all__ = [
    "__version__",
    # infrastructure: knows no chapter
    "runtime", "data", "nets", "train", "plotting", "metrics", "student",
    # concepts, one module per chapter
    "divergences",  # 01
    "mixtures",  # 02
    "autoencoders",  # 03
    "vae",  # 04
    "flows",  # 05
    "gan",  # 06
    "wasserstein",  # 07
    "diffusion",  # 08
    "score",  # 09
    "flow_matching",  # 10
    "autoregressive",  # 11
    "guidance",  # 12
    "disentangle",  # 14
    # the exercise checkers, one module per concept module with exercises
    "check",
    # applications
    "bench",
]
_SUBMODULES = frozenset(__all__) - {"__version__"}


def __getattr__(name):
    if name in _SUBMODULES:
        module = import_module(f"{__name__}.{name}")
        globals()[name] = module  # cache: later look-ups skip __getattr__
        return module
    raise AttributeError(f"module 'coursekit' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
