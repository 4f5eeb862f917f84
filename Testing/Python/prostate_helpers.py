"""The shared PROMISE12 prostate cases for tests: their files, and a case as a scanner would store it.

The shared cases are already on the prostate model's grid (the central 80% of each slice at
128x128, 32 slices). ``scanner_version`` undoes that as far as it can: it puts the cut 10% back
on every side (filled with the image's lowest value), resamples to a scanner's matrix and turns
the axes, so that a test can check that a real-size scan in another orientation maps onto the
model's grid and back onto its own voxels.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

from nca_core.training.settings import TrainSettings
from nca_core.training.trainer import Trainer


def case_paths(data: Path, number: int) -> Tuple[Path, Path]:
    name = f"promise12_{number:02d}.nii.gz"
    return data / "imagesTr" / name, data / "labelsTr" / name


def two_case_trainer(data: Path, run_dir: Path, iterations: int = 1, **settings: Any) -> Trainer:
    """A ``prostate``-preset trainer for a few quick steps: cases 00 (BIDMC) and 13 (RUNMC) to
    train on, 01 (UCL) to validate with 1 run, 16x16x8 patches; ``settings`` override the preset's."""
    split = run_dir.with_name(f"{run_dir.name}_split.json")
    split.write_text(json.dumps({"train": ["promise12_00", "promise12_13"], "validation": ["promise12_01"]}))
    chosen = TrainSettings.for_preset("prostate", iterations=iterations, validate_every=iterations, validation_runs=1,
                                      patch_sizes=[None, [16, 16, 8]], **settings)
    return Trainer(data, run_dir, chosen, device="cpu", split_file=split)


def scanner_version(image: sitk.Image, label: sitk.Image, size: Sequence[int] = (320, 320, 24),
                    orientation: str = "RAI") -> Tuple[sitk.Image, sitk.Image]:
    """``image`` and ``label`` on their full field of view (the 80% grown back to 100%),
    resampled to ``size`` voxels over the same extent and stored in ``orientation``."""
    margin = [round(s * 0.125) for s in image.GetSize()[:2]] + [0]  # 0.1 / 0.8 of the kept width
    low = float(sitk.GetArrayViewFromImage(image).min())
    full = sitk.ConstantPad(image, margin, margin, low)
    full_label = sitk.ConstantPad(label, margin, margin, 0)
    old_size = np.asarray(full.GetSize(), dtype=float)
    old_spacing = np.asarray(full.GetSpacing())
    spacing = old_size * old_spacing / np.asarray(size, dtype=float)
    geometry = sitk.Image([int(s) for s in size], sitk.sitkUInt8)
    geometry.SetSpacing([float(s) for s in spacing])
    geometry.SetDirection(full.GetDirection())
    edge = np.asarray(full.GetDirection()).reshape(3, 3) @ ((spacing - old_spacing) / 2)
    geometry.SetOrigin([float(o) for o in np.asarray(full.GetOrigin()) + edge])
    scan = sitk.Resample(full, geometry, sitk.Transform(), sitk.sitkLinear, low)
    scan_label = sitk.Resample(full_label, geometry, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    return sitk.DICOMOrient(scan, orientation), sitk.DICOMOrient(scan_label, orientation)


def xyz(image: sitk.Image) -> np.ndarray:
    """An image's voxels in (X, Y, Z) order."""
    return np.ascontiguousarray(sitk.GetArrayFromImage(image).transpose(2, 1, 0))
