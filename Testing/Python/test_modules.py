"""Every engine module imports: under the Python 3.9 job (scripts/test39.sh) this is the check
that the code runs on Slicer 5.8's Python, modules no other test imports included."""
from __future__ import annotations

import importlib
import pkgutil

import pytest

import nca_core

# __main__ runs the command line on import (python -m nca_core); test_cli runs it
MODULES = sorted(info.name for info in pkgutil.walk_packages(nca_core.__path__, "nca_core.")
                 if info.name != "nca_core.__main__")


def test_the_engine_has_its_modules():
    assert {"nca_core.cli.main", "nca_core.inference.ensemble", "nca_core.training.trainer"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_module_imports(name):
    importlib.import_module(name)
