"""The M3DNCASegment module's code, one concern per file.

Slicer-free (tested with plain pytest): ``display`` (light, overlay, segment names and
terminology), ``geometry`` (array order, RAS/LPS), ``options`` (panel choices -> the engine's
``nca_core.inference.settings.SegmentSettings``, model list), ``dependencies`` (the Python
packages the module needs; installing them needs Slicer), ``job`` + ``worker`` (the background
process). With MRML (tested against real MRML from slicer-core): ``volume`` (volume node ->
SimpleITK image, ROI box), ``outputs`` (segmentation and variance nodes), ``logic`` (volume ->
engine -> scene). With Qt: ``panel`` (the module widget).

Importing the package puts the engine (nca_core, beside the module once installed, or in the
checkout root) first on sys.path, so Slicer, the worker and the batch script use the same copy:
this is the one place that looks for it.
"""
import os
import sys


def engine_root(module_dir: str):
    """The folder holding ``nca_core``: the module folder itself once installed (the extension
    copies nca_core beside the module) or its parent in a source checkout; None if neither."""
    module_dir = os.path.abspath(module_dir)
    for candidate in (module_dir, os.path.dirname(module_dir)):
        if os.path.isfile(os.path.join(candidate, "nca_core", "__init__.py")):
            return candidate
    return None


def ensure_engine_importable(module_dir: str):
    """Put the engine's folder first on sys.path; returns it."""
    root = engine_root(module_dir)
    if root:
        if root in sys.path:
            sys.path.remove(root)
        sys.path.insert(0, root)
    return root


ENGINE_DIR = ensure_engine_importable(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
