"""The guard of the real-MRML tier (not a test module): slicer-core, or a skip with the reason."""
from __future__ import annotations

import sys

import pytest


def require_slicer_core():
    """The ``slicer`` package of PyPI's slicer-core; skips the calling module without it."""
    if sys.version_info < (3, 10):
        pytest.skip("slicer-core has wheels for Python >= 3.10 only", allow_module_level=True)
    slicer = pytest.importorskip("slicer", reason="slicer-core is not installed (pip install -e .[test])")
    if not hasattr(slicer, "vtkMRMLScene"):
        pytest.skip("slicer-core is not what the installed 'slicer' package is", allow_module_level=True)
    return slicer
