"""Tests for the coursekit package itself: every submodule is reachable lazily as ``ck.<name>``."""

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import coursekit as ck

PACKAGE = Path(ck.__file__).parent


def public_submodules() -> set[str]:
    """The modules and subpackages of coursekit whose names do not start with an underscore."""
    modules = {p.stem for p in PACKAGE.glob("*.py") if not p.name.startswith("_")}
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists() and not p.name.startswith("_")}
    return modules | packages


def test_every_public_submodule_is_listed_once():
    listed = [name for name in ck.__all__ if name != "__version__"]
    assert len(listed) == len(set(listed)), f"listed twice: {sorted({m for m in listed if listed.count(m) > 1})}"
    assert set(listed) == public_submodules()
    assert sorted(dir(ck)) == sorted(ck.__all__)


def test_import_is_lazy_and_attribute_access_loads_the_module():
    code = (
        "import sys, coursekit as ck\n"
        "assert 'coursekit.vae' not in sys.modules and 'torch' not in sys.modules, sorted(sys.modules)\n"
        "assert ck.vae is sys.modules['coursekit.vae']\n"
        "assert 'vae' in vars(ck)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr


def test_unknown_attribute_raises_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        ck.nonexistent  # noqa: B018


@pytest.mark.parametrize("name", sorted(public_submodules()))
def test_submodule_imports(name):
    assert getattr(ck, name) is importlib.import_module(f"coursekit.{name}")
