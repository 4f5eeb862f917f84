"""A hippocampus box in a larger scan: the model-grid crop that is segmented, and the way
its outputs are put back onto the scan's voxels.

A box is a small image grid in physical space (origin, spacing, direction, size) cut the way
the training crops were cut. For the side the model did not learn, the grid's left-right axis
runs the other way: the crop's voxels are then a mirror image, which looks like the side the
model knows, and resampling back through physical space un-mirrors every output.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

SIDES = ("left", "right")

# LPS direction (ITK's physical frame) of an axis that points towards each letter of an orientation code.
_LETTER_VECTORS = {"R": (-1, 0, 0), "L": (1, 0, 0), "A": (0, -1, 0), "P": (0, 1, 0), "S": (0, 0, 1), "I": (0, 0, -1)}


def other_side(side: str) -> str:
    return "right" if side == "left" else "left"


def code_axes(code: str) -> np.ndarray:
    """Columns: the LPS direction of each index axis of an orientation code (``RAS``...)."""
    return np.array([_LETTER_VECTORS[letter] for letter in code], dtype=float).T


def left_right_axis(code: str) -> int:
    """The index axis of an orientation code that runs left-right."""
    return next(i for i, letter in enumerate(code) if letter in "LR")


@dataclass(frozen=True)
class Region:
    """One side's box: ``grid`` carries geometry only (its pixels are unused)."""

    side: str
    grid: sitk.Image
    mirrored: bool  # the grid's left-right axis is reversed (the model learned the other side)
    reason: str  # why this side: "located ..." or "given ..."

    @property
    def shape(self) -> Tuple[int, int, int]:
        return tuple(int(s) for s in self.grid.GetSize())

    def crop(self, image: sitk.Image) -> np.ndarray:
        """The scan's intensities on the box (X, Y, Z), linear interpolation, 0 outside."""
        resampled = sitk.Resample(image, self.grid, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
        return sitk.GetArrayFromImage(resampled).transpose(2, 1, 0)

    def fraction_inside(self, image: sitk.Image) -> float:
        """How much of the box lies inside the scan (1 = all of it)."""
        ones = sitk.Image(image.GetSize(), sitk.sitkUInt8) + 1
        ones.CopyInformation(image)
        inside = sitk.Resample(ones, self.grid, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
        return float(sitk.GetArrayViewFromImage(inside).mean())

    def footprint(self, image: sitk.Image) -> Tuple[slice, slice, slice]:
        """The scan's (X, Y, Z) index ranges that the box covers."""
        size = np.asarray(self.grid.GetSize())
        corners = [self.grid.TransformContinuousIndexToPhysicalPoint([float(c) for c in corner])
                   for corner in np.array(np.meshgrid(*[(-0.5, s - 0.5) for s in size])).reshape(3, -1).T]
        indices = np.array([image.TransformPhysicalPointToContinuousIndex(p) for p in corners])
        low = np.clip(np.floor(indices.min(axis=0)).astype(int), 0, None)
        high = np.minimum(np.ceil(indices.max(axis=0)).astype(int) + 1, image.GetSize())
        return tuple(slice(int(lo), int(hi)) for lo, hi in zip(low, high))

    def paste(self, arrays: np.ndarray, image: sitk.Image) -> Tuple[Tuple[slice, ...], np.ndarray]:
        """(K, X, Y, Z) box arrays resampled onto the scan's voxels under the box.

        Returns the scan index ranges and the (K, ...) arrays for them (0 outside the box).
        """
        where = self.footprint(image)
        target = sitk.Image([s.stop - s.start for s in where], sitk.sitkUInt8)
        target.SetSpacing(image.GetSpacing())
        target.SetDirection(image.GetDirection())
        target.SetOrigin(image.TransformIndexToPhysicalPoint([s.start for s in where]))
        pasted = []
        for channel in arrays:
            box = sitk.GetImageFromArray(np.ascontiguousarray(channel.transpose(2, 1, 0).astype(np.float32)))
            box.CopyInformation(self.grid)
            back = sitk.Resample(box, target, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32)
            pasted.append(sitk.GetArrayFromImage(back).transpose(2, 1, 0))
        return where, np.stack(pasted)

    def to_dict(self) -> Dict[str, object]:
        """The box for reports: centre (LPS mm), size (voxels), spacing, direction (9 row-major
        LPS cosines, ITK's order), whether mirrored."""
        centre = self.grid.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in self.grid.GetSize()])
        return {
            "centre_lps_mm": [round(c, 1) for c in centre],
            "size": list(self.shape),
            "spacing_mm": [round(s, 4) for s in self.grid.GetSpacing()],
            "direction": [round(d, 6) for d in self.grid.GetDirection()],
            "mirrored": self.mirrored,
        }


def box_grid(centre: Sequence[float], rotation: np.ndarray, model_code: str, spacing: Sequence[float],
             size: Sequence[int], centre_voxel: Sequence[float], mirrored: bool) -> sitk.Image:
    """A box of ``size`` voxels whose ``centre_voxel`` lies on the physical point ``centre``.

    Its axes are the model's orientation axes turned by ``rotation`` (the scan's pose), with
    the left-right axis reversed when ``mirrored``.
    """
    axes = rotation @ code_axes(model_code)
    if mirrored:
        axes[:, left_right_axis(model_code)] *= -1
    spacing = np.asarray(spacing, dtype=float)
    origin = np.asarray(centre, dtype=float) - axes @ (np.asarray(centre_voxel, dtype=float) * spacing)
    grid = sitk.Image([int(s) for s in size], sitk.sitkUInt8)
    grid.SetSpacing([float(s) for s in spacing])
    grid.SetDirection([float(d) for d in axes.reshape(-1)])
    grid.SetOrigin([float(o) for o in origin])
    return grid
