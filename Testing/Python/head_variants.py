"""Real scanner-space heads changed the way scanners and pipelines change them, with their
labels changed alike: lying on a side or prone, pitched or rolled, conformed as FreeSurfer does,
skull-stripped, the neck cut off, resampled, thick slices, a bias field. Used by the real-head tests and
``scripts/realheads_eval.py``."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import numpy as np
import SimpleITK as sitk

from nca_core.space.regions import code_axes
from nca_helpers import resampled, turned

LABEL_OF_SIDE = {"left": 48, "right": 47}  # DLMUSE (MUSE) label values of each hippocampus
Pair = Tuple[sitk.Image, sitk.Image]


def centroid_mm(mask: np.ndarray, image: sitk.Image) -> np.ndarray:
    """The physical (LPS mm) centroid of an (X, Y, Z) mask on ``image``'s grid."""
    index = np.argwhere(mask).mean(axis=0)
    return np.asarray(image.TransformContinuousIndexToPhysicalPoint([float(i) for i in index]))


def _header_turn(degrees: float, axis: int) -> Callable[[sitk.Image, sitk.Image], Pair]:
    """Turned about a physical axis (0: left-right, pitch; 1: front-back, roll; 2: the bore, as a
    patient lying on a side or prone), in the header: the voxels and labels stay as they are."""
    return lambda image, labels: (turned(image, degrees, axis), turned(labels, degrees, axis))


def _resampled(*spacing: float) -> Callable[[sitk.Image, sitk.Image], Pair]:
    """Resampled to ``spacing`` (one size for all axes, or one per index axis)."""
    spacing = spacing * 3 if len(spacing) == 1 else spacing
    return lambda image, labels: (resampled(image, spacing, sitk.sitkLinear),
                                  resampled(labels, spacing, sitk.sitkNearestNeighbor))


def bias_field(image: sitk.Image, labels: sitk.Image) -> Pair:
    """Grey levels multiplied by a smooth field from 0.6 to 1.4 across the head (a receive coil's
    shading), quantised to 8 bits again."""
    array = sitk.GetArrayFromImage(image).astype(np.float32)
    ramp = np.linspace(0.6, 1.4, array.shape[0], dtype=np.float32)[:, None, None]
    ramp = ramp * np.linspace(1.2, 0.8, array.shape[1], dtype=np.float32)[None, :, None]
    shaded = np.clip(np.round(array * ramp / max(1.0, float((array * ramp).max())) * 255.0), 0, 255)
    out = sitk.GetImageFromArray(shaded.astype(np.uint8))
    out.CopyInformation(image)
    return out, labels


def conformed(image: sitk.Image, labels: sitk.Image) -> Pair:
    """FreeSurfer's ``mri_convert --conform``: 256³ voxels of 1 mm, LIA, about the volume's
    centre, grey levels scaled into 0-255 (uint8)."""
    lia = code_axes("LIA")
    centre = np.asarray(image.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in image.GetSize()]))
    origin = centre - lia @ np.full(3, 127.5)
    grid = sitk.Image([256] * 3, sitk.sitkUInt8)
    grid.SetSpacing([1.0] * 3)
    grid.SetDirection([float(d) for d in lia.reshape(-1)])
    grid.SetOrigin([float(o) for o in origin])
    values = sitk.Resample(sitk.Cast(image, sitk.sitkFloat32), grid, sitk.Transform(), sitk.sitkLinear, 0.0,
                           sitk.sitkFloat32)
    array = sitk.GetArrayFromImage(values)
    top = float(np.percentile(array[array > 0], 99.9)) if (array > 0).any() else 1.0
    scaled = sitk.GetImageFromArray(np.clip(array / top * 255.0, 0, 255).astype(np.uint8))
    scaled.CopyInformation(grid)
    return scaled, sitk.Resample(labels, grid, sitk.Transform(), sitk.sitkNearestNeighbor, 0, labels.GetPixelID())


def skull_stripped(image: sitk.Image, labels: sitk.Image) -> Pair:
    """Only the brain (every labelled structure, dilated by 4 mm), 0 elsewhere."""
    radius = [max(1, int(round(4.0 / s))) for s in labels.GetSpacing()]
    brain = sitk.BinaryDilate(sitk.Cast(labels > 0, sitk.sitkUInt8), radius)
    return sitk.Mask(image, brain), labels


def neck_cut(image: sitk.Image, labels: sitk.Image) -> Pair:
    """Everything more than 10 mm below the lowest labelled brain voxel removed (the grid
    shortened along its most superior-inferior axis)."""
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    axis = int(np.argmax(np.abs(direction[2])))  # the index axis nearest to S-I
    superior = np.sign(direction[2, axis])
    array = sitk.GetArrayFromImage(labels).transpose(2, 1, 0)
    levels = np.nonzero(np.moveaxis(array > 0, axis, 0).reshape(array.shape[axis], -1).any(axis=1))[0]
    margin = int(round(10.0 / image.GetSpacing()[axis]))
    start, stop = 0, image.GetSize()[axis]
    if superior > 0:
        start = max(0, int(levels.min()) - margin)
    else:
        stop = min(stop, int(levels.max()) + margin + 1)
    index, size = [0, 0, 0], list(image.GetSize())
    index[axis], size[axis] = start, stop - start
    return sitk.RegionOfInterest(image, size, index), sitk.RegionOfInterest(labels, size, index)


REAL_HEAD_VARIANTS: Dict[str, Callable[[sitk.Image, sitk.Image], Pair]] = {
    "side-lying": _header_turn(90.0, 2),
    "prone": _header_turn(180.0, 2),
    "pitch+30": _header_turn(30.0, 0),
    "pitch-30": _header_turn(-30.0, 0),
    "roll+30": _header_turn(30.0, 1),
    "conformed": conformed,
    "skull-stripped": skull_stripped,
    "neck cut": neck_cut,
    "1mm": _resampled(1.0),
    "1.5mm": _resampled(1.5),
    "thick slices": _resampled(1.0, 1.0, 4.0),  # 4 mm sagittal slices (IXI is stored PSR)
    "bias field": bias_field,
}


def real_head_variant(image: sitk.Image, labels: sitk.Image, name: str) -> Pair:
    """The head and its labels changed by the variant ``name``."""
    return REAL_HEAD_VARIANTS[name](image, labels)


@dataclass(frozen=True)
class SideAgreement:
    """One side of a whole-head result against the labels of the same head."""

    side: str
    dice: float
    distance_mm: float  # between the centroids of the segmentation and of the label


def agreement(result, labels: sitk.Image, image: sitk.Image) -> List[SideAgreement]:
    """Each side's Dice and centroid distance against the DLMUSE hippocampus of that side."""
    truth = sitk.GetArrayFromImage(labels).transpose(2, 1, 0)
    found_all = []
    for side in result.sides:
        found = np.isin(result.ensemble.labels, side.label_values)
        expected = truth == LABEL_OF_SIDE[side.side]
        dice = 2 * np.count_nonzero(found & expected) / max(1, np.count_nonzero(found) + np.count_nonzero(expected))
        distance = (float(np.linalg.norm(centroid_mm(found, image) - centroid_mm(expected, image)))
                    if found.any() else float("inf"))
        found_all.append(SideAgreement(side.side, dice, distance))
    return found_all


def real_head(folder: Path, subject: str) -> Pair:
    """The T1 and DLMUSE labels of one subject of ``realheads/`` (e.g. ``IXI212``)."""
    image = next((folder / "images").glob(f"{subject}-*_T1.nii.gz"))
    labels = folder / "labels" / image.name.replace("_T1.nii.gz", "_T1_DLMUSE.nii.gz")
    return sitk.ReadImage(str(image)), sitk.ReadImage(str(labels))
