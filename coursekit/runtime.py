"""Run-time set-up shared by every chapter: device, seeding, run profile, Colab detection.

A notebook starts with::

    import coursekit as ck
    rt = ck.runtime.setup(seed=0)          # seeds and prints one line describing the run
    steps = ck.runtime.budget(smoke=20, cpu=2_000, gpu=20_000)

The *run profile* chooses how much compute a notebook spends:

========  ==========================  ==========================================================
profile   where                       budget
========  ==========================  ==========================================================
smoke     CI and nbval                whole notebook well under a minute on 2 CPU cores
cpu       laptops, default book build whole notebook in a few minutes on 2 CPU cores
gpu       Colab or a workstation      minutes on one GPU, best quality the chapter can show
========  ==========================  ==========================================================

It is read from the environment variable ``COURSEKIT_PROFILE``; when that is unset it is ``"gpu"`` if
CUDA is available and ``"cpu"`` otherwise. Notebooks never branch on the profile in their prose: they
ask :func:`budget` for a number (steps, dataset size, ...) and the same code runs under all three.
"""

from __future__ import annotations

import importlib.util
import os
import random
import sys
from dataclasses import dataclass

import numpy as np
import torch

from . import __version__
from ._validate import check_nonnegative_int

__all__ = [
    "PROFILES",
    "PROFILE_ENV_VAR",
    "Runtime",
    "get_device",
    "seed_everything",
    "validate_profile",
    "get_profile",
    "budget",
    "in_colab",
    "setup",
]

#: The valid run profiles, from cheapest to most expensive.
PROFILES = ("smoke", "cpu", "gpu")

#: Name of the environment variable that selects the profile.
PROFILE_ENV_VAR = "COURSEKIT_PROFILE"


def get_device() -> torch.device:
    """Return the best available device: CUDA, then Apple MPS, then CPU.

    Returns:
        ``torch.device("cuda")``, ``torch.device("mps")`` or ``torch.device("cpu")``.
    """
    if torch.cuda.is_available():
        return torch.device("cuda")
    # torch.backends.mps exists on every build; is_available() is False off Apple silicon.
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int = 0) -> None:
    """Seed python's ``random``, numpy's global RNG and torch (CPU and every CUDA device).

    With the same seed, the same code on the same CPU gives the same numbers. (GPU kernels can still be
    non-deterministic; the course does not force deterministic algorithms because it slows training.)

    Args:
        seed: integer in [0, 2**32 - 1] (numpy's legacy seeding range).

    Raises:
        TypeError: if ``seed`` is not an integer.
        ValueError: if ``seed`` is negative or >= 2**32.
    """
    seed = check_nonnegative_int("seed", seed)
    if seed >= 2**32:
        raise ValueError(f"seed must be < 2**32 (numpy's limit), got {seed}")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # seeds the CPU generator and, lazily, every CUDA device
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def validate_profile(profile: str, source: str = "given") -> str:
    """Return ``profile`` as a canonical run-profile name (lower case, surrounding spaces removed).

    Used by :func:`get_profile` and :func:`budget`, and by any entry point that takes a profile argument
    (e.g. :func:`coursekit.bench.run_bench`), so that every bad name gets the same message.

    Args:
        profile: a profile name, one of :data:`PROFILES` up to case and surrounding spaces.
        source: where the name came from, quoted in the error message (e.g. ``"passed to budget()"``).

    Returns:
        ``"smoke"``, ``"cpu"`` or ``"gpu"``.

    Raises:
        TypeError: if ``profile`` is not a string.
        ValueError: if it names no profile (the message lists the valid ones and says where it came from).
    """
    if not isinstance(profile, str):
        raise TypeError(f"profile must be a string, one of {PROFILES}; got {type(profile).__name__}")
    name = profile.strip().lower()
    if name not in PROFILES:
        valid = ", ".join(repr(p) for p in PROFILES)
        raise ValueError(f"unknown run profile {profile!r} ({source}); valid profiles are {valid}")
    return name


def get_profile() -> str:
    """Return the active run profile: one of :data:`PROFILES`.

    ``COURSEKIT_PROFILE`` wins when set (case and surrounding spaces are ignored); otherwise ``"gpu"`` if
    CUDA is available, else ``"cpu"``. ``"smoke"`` is never chosen automatically.

    Raises:
        ValueError: if ``COURSEKIT_PROFILE`` is set to an unknown name (the message lists the valid ones).
    """
    env = os.environ.get(PROFILE_ENV_VAR)
    if env is not None and env.strip() != "":
        return validate_profile(env, f"from the environment variable {PROFILE_ENV_VAR}")
    return "gpu" if torch.cuda.is_available() else "cpu"


def budget(*, smoke, cpu, gpu, profile: str | None = None):
    """Return the value given for the active run profile.

    Example: ``steps = budget(smoke=20, cpu=3_000, gpu=30_000)``. The values may be of any type
    (an int, a tuple of layer widths, a dict of hyper-parameters, ...) and are returned unchanged.

    Args:
        smoke, cpu, gpu: the value for each profile (keyword-only so they cannot be swapped by accident).
        profile: override the active profile (default: :func:`get_profile`).

    Raises:
        ValueError: if ``profile`` (or ``COURSEKIT_PROFILE``) is not a valid profile name.
    """
    active = get_profile() if profile is None else validate_profile(profile, "passed to budget()")
    return {"smoke": smoke, "cpu": cpu, "gpu": gpu}[active]


def in_colab() -> bool:
    """Return True when running inside Google Colab.

    Colab preloads the ``google.colab`` package and sets ``COLAB_RELEASE_TAG``; either is taken as proof.
    """
    if "google.colab" in sys.modules or "COLAB_RELEASE_TAG" in os.environ:
        return True
    try:
        return importlib.util.find_spec("google.colab") is not None
    except (ImportError, ValueError):  # no "google" package at all
        return False


@dataclass(frozen=True)
class Runtime:
    """What :func:`setup` decided: pass ``rt.device`` to data loaders and models.

    Attributes:
        device: ``torch.device`` to train on.
        profile: one of :data:`PROFILES`.
        seed: the seed every RNG was set with.
        in_colab: True inside Google Colab.
    """

    device: torch.device
    profile: str
    seed: int
    in_colab: bool


def setup(seed: int = 0, verbose: bool = True) -> Runtime:
    """Seed everything, pick the device and profile, and (if ``verbose``) print one summary line::

        coursekit 0.1.0 | profile=cpu | device=cpu | torch 2.13.0 | seed=0

    Args:
        seed: passed to :func:`seed_everything`.
        verbose: print the summary line.

    Returns:
        A frozen :class:`Runtime` (device, profile, seed, in_colab).

    Raises:
        TypeError / ValueError: for a bad seed or an unknown ``COURSEKIT_PROFILE``.
    """
    profile = get_profile()  # validate the profile before doing anything else
    seed_everything(seed)
    rt = Runtime(device=get_device(), profile=profile, seed=int(seed), in_colab=in_colab())
    if verbose:
        torch_version = torch.__version__.split("+")[0]
        print(
            f"coursekit {__version__} | profile={rt.profile} | device={rt.device.type} "
            f"| torch {torch_version} | seed={rt.seed}"
        )
    return rt
