"""The head atlas: the templates a scan is registered to and where the hippocampi lie on them.

- The brain template (ICBM 2009a MNI152, brain only, 2 mm) fixes where each hippocampus is.
- The head template (a mean whole-head T1 with skull, face and neck, 4 mm) finds the head's
  pose first, whatever lies around the brain and however the head lies in the scanner.
- ``template_to_head`` maps brain-template points onto the head template (fitted once, by
  ``scripts/make_head_template.py``, which writes everything in ``Resources/Templates``).
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import SimpleITK as sitk

from ..errors import InputImageError
from .regions import SIDES

TEMPLATE_FILE = "mni152_t1_2mm.nii.gz"
HEAD_TEMPLATE_FILE = "mean_head_t1_4mm.nii.gz"
ATLAS_FILE = "hippocampus_atlas.json"


def template_dirs() -> List[Path]:
    """``Resources/Templates`` beside the package (checkout, Slicer) or the installed copy."""
    package = Path(__file__).resolve().parents[1]
    return [d for d in (package.parent / "Resources" / "Templates", package / "templates") if d.is_dir()]


def affine_transform(matrix: np.ndarray, offset: np.ndarray) -> sitk.AffineTransform:
    """The transform x -> matrix @ x + offset."""
    transform = sitk.AffineTransform(3)
    transform.SetMatrix([float(v) for v in np.asarray(matrix, dtype=float).reshape(-1)])
    transform.SetTranslation([float(v) for v in offset])
    return transform


def matrix_and_offset(transform: sitk.Transform) -> Tuple[np.ndarray, np.ndarray]:
    """(A, b) with transform(x) = A @ x + b, for a matrix-offset transform (rigid, affine...)."""
    matrix = np.asarray(transform.GetMatrix(), dtype=float).reshape(3, 3)
    centre = np.asarray(transform.GetCenter(), dtype=float)
    return matrix, np.asarray(transform.GetTranslation(), dtype=float) + centre - matrix @ centre


def composed(outer: sitk.Transform, inner: sitk.Transform) -> sitk.AffineTransform:
    """One affine transform doing ``inner`` then ``outer``."""
    a2, b2 = matrix_and_offset(outer)
    a1, b1 = matrix_and_offset(inner)
    return affine_transform(a2 @ a1, a2 @ b1 + b2)


@dataclass(frozen=True)
class HeadAtlas:
    """The templates and, in the brain template's physical space, each hippocampus and the
    training crops' box."""

    template: sitk.Image  # brain template, float32, 0 outside the brain
    head: sitk.Image  # head template, float32
    template_to_head: sitk.AffineTransform
    centres: Dict[str, Tuple[float, float, float]]  # side -> LPS mm on the brain template
    crop_size_mm: Tuple[float, float, float]  # training crop extent in the model's orientation
    centre_in_crop_mm: Tuple[float, float, float]  # where the hippocampus centre sits in it

    @functools.cached_property
    def brain_mask(self) -> sitk.Image:
        return sitk.Cast(self.template > 0, sitk.sitkUInt8)

    @functools.cached_property
    def brain_rim_mask(self) -> sitk.Image:
        """The brain and 4 mm around it (the dark rim a skull-stripped scan also has)."""
        return sitk.Cast(sitk.BinaryDilate(self.brain_mask, [2] * 3), sitk.sitkUInt8)

    @functools.cached_property
    def head_mask(self) -> sitk.Image:
        """The head template's head and a rim of air around it (where the metric looks)."""
        return sitk.Cast(sitk.BinaryDilate(sitk.OtsuThreshold(self.head, 0, 1), [2] * 3), sitk.sitkUInt8)

    @classmethod
    @functools.lru_cache(maxsize=None)
    def load(cls, folder: Optional[Path] = None) -> "HeadAtlas":
        """The atlas of ``folder`` (default: the shipped one), read from disk once per process."""
        for candidate in [folder] if folder else template_dirs():
            files = [candidate / name for name in (ATLAS_FILE, TEMPLATE_FILE, HEAD_TEMPLATE_FILE)]
            if all(path.is_file() for path in files):
                data = json.loads(files[0].read_text(encoding="utf-8"))
                to_head = data["template_to_head_lps"]
                return cls(_read_float(files[1]), _read_float(files[2]),
                           affine_transform(np.asarray(to_head["matrix"]), np.asarray(to_head["offset"])),
                           {side: _ras_to_lps(data["centres_ras_mm"][side]) for side in SIDES},
                           tuple(data["crop_size_mm"]), tuple(data["centre_in_crop_mm"]))
        raise InputImageError("the head templates are not installed (Resources/Templates); reinstall M3DNCASegment")


def _read_float(path: Path) -> sitk.Image:
    return sitk.Cast(sitk.ReadImage(str(path)), sitk.sitkFloat32)


def _ras_to_lps(point) -> Tuple[float, float, float]:
    return (-float(point[0]), -float(point[1]), float(point[2]))
