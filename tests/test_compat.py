"""coursekit._compat.moved_names: a moved name stays importable from its old module."""

import math
import sys
import types
from collections import OrderedDict

import pytest

from coursekit._compat import moved_names


def test_moved_name_resolves_to_the_object_in_its_new_module():
    getattr_ = moved_names("coursekit.old", {"sqrt": "math"})
    assert getattr_("sqrt") is math.sqrt


def test_unknown_name_raises_attribute_error_naming_the_old_module():
    getattr_ = moved_names("coursekit.old", {"sqrt": "math"})
    with pytest.raises(AttributeError, match=r"module 'coursekit.old' has no attribute 'cbrt'"):
        getattr_("cbrt")


def test_module_level_getattr_supports_from_import(monkeypatch):
    old = types.ModuleType("coursekit_old_for_test")
    old.__getattr__ = moved_names(old.__name__, {"OrderedDict": "collections"})
    monkeypatch.setitem(sys.modules, old.__name__, old)
    from coursekit_old_for_test import OrderedDict as moved  # the import statement is what is tested

    assert moved is OrderedDict
