"""The model's voxel grid: an input is turned to the axis orientation and resampled to the
spacing the model was trained on, and the results are mapped back onto the input's grid.

An NCA's kernels are in voxels and its rules are not mirror- or rotation-symmetric, so a
volume stored with flipped or swapped axes, or at another resolution, must be brought to the
training grid first (as nnU-Net and TotalSegmentator do). Geometry follows ITK: spacing in mm
per (X, Y, Z) axis, direction as 9 row-major cosines in LPS, orientation as ITK's three-letter
code (``RAS`` is the MSD hippocampus data's).
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

from ..errors import InputImageError
from .preprocessing import Preprocessing

# Spacings closer than this (relative) count as equal: no interpolation for them.
SPACING_TOLERANCE = 0.01
IDENTITY_DIRECTION = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


def orientation_code(direction: Sequence[float]) -> str:
    """ITK's three-letter orientation code of the nearest axis-aligned direction."""
    return sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines([float(d) for d in direction])


def spacing_text(spacing: Sequence[float]) -> str:
    return "x".join(f"{s:g}" for s in spacing) + " mm"


@dataclass(frozen=True)
class GridChange:
    """What mapping onto the model's grid does to one input (for reports)."""

    input_spacing: Tuple[float, ...]
    input_orientation: str
    model_spacing: Tuple[float, ...]
    model_orientation: str
    reoriented: bool
    resampled: bool

    def to_dict(self) -> Dict[str, object]:
        return {
            "input": {"spacing": [round(s, 4) for s in self.input_spacing], "orientation": self.input_orientation},
            "model": {"spacing": [round(s, 4) for s in self.model_spacing], "orientation": self.model_orientation},
            "reoriented": self.reoriented,
            "resampled": self.resampled,
        }


class ModelGrid:
    """Maps (X, Y, Z) arrays between an input's grid and the model's grid.

    The model's spacing and orientation come from its preprocessing (None: keep the input's);
    without input geometry (``input_spacing`` None) the input is taken to be on the model's
    grid already. A field-of-view model (``grid_shape``) maps every input by its extent, not
    its spacing: its central part resampled to the grid's shape (see ``field_of_view_geometry``).
    """

    def __init__(self, shape: Sequence[int], input_spacing: Optional[Sequence[float]],
                 input_direction: Optional[Sequence[float]], preprocessing: Preprocessing):
        self.input_shape = tuple(int(s) for s in shape)
        known = input_spacing is not None
        self._input = _geometry(self.input_shape, input_spacing if known else (1.0, 1.0, 1.0),
                                IDENTITY_DIRECTION if input_direction is None else input_direction)
        input_code = orientation_code(self._input.GetDirection())
        orientation, spacing = preprocessing.orientation, preprocessing.spacing
        field_of_view = preprocessing.relative_to_field_of_view  # maps without the input's spacing
        self.code = orientation if (known or field_of_view) and orientation else input_code
        self._input_code = input_code
        oriented = sitk.DICOMOrient(self._input, self.code) if self.code != input_code else self._input
        self.reoriented = self.code != input_code
        self._oriented = oriented
        if field_of_view:
            self.resampled = not on_field_of_view_grid(oriented.GetSize(), preprocessing)
            self._model = field_of_view_geometry(oriented, preprocessing) if self.resampled else oriented
        else:
            target = tuple(float(s) for s in spacing) if known and spacing else oriented.GetSpacing()
            self.resampled = any(abs(t - s) > SPACING_TOLERANCE * t for t, s in zip(target, oriented.GetSpacing()))
            self._model = _resampled_geometry(oriented, target) if self.resampled else oriented
        self.change = GridChange(tuple(self._input.GetSpacing()), input_code, tuple(self._model.GetSpacing()),
                                 self.code, self.reoriented, self.resampled) if known else None

    @property
    def model_shape(self) -> Tuple[int, int, int]:
        return tuple(int(s) for s in self._model.GetSize())

    @property
    def changes_grid(self) -> bool:
        return self.reoriented or self.resampled

    def to_model(self, array: np.ndarray) -> np.ndarray:
        """The input's intensities on the model's grid (linear interpolation)."""
        return self._to_model(array, sitk.sitkLinear)

    def label_to_model(self, label: np.ndarray) -> np.ndarray:
        """A label map on the model's grid (nearest neighbour)."""
        return self._to_model(label, sitk.sitkNearestNeighbor)

    def _to_model(self, array: np.ndarray, interpolator: int) -> np.ndarray:
        if not self.changes_grid:
            return array
        image = _image(array, self._input)
        if self.reoriented:
            image = sitk.DICOMOrient(image, self.code)
        if self.resampled:
            image = sitk.Resample(image, self._model, sitk.Transform(), interpolator, 0.0)
        return _array(image)

    def to_input(self, array: np.ndarray) -> np.ndarray:
        """A model-grid array (X, Y, Z) on the input's grid: resampled linearly, then the
        axes turned back exactly."""
        if not self.changes_grid:
            return array
        image = _image(array, self._model)
        if self.resampled:
            image = sitk.Resample(image, self._oriented, sitk.Transform(), sitk.sitkLinear, 0.0)
        if self.reoriented:
            image = sitk.DICOMOrient(image, self._input_code)
        back = _array(image)
        if back.shape != self.input_shape:  # DICOMOrient keeps sizes; a mismatch is a bug, not bad input
            raise RuntimeError(f"grid mapping gave {back.shape}, expected {self.input_shape}")
        return back

    def channels_to_input(self, arrays: np.ndarray) -> np.ndarray:
        """(K, X, Y, Z) model-grid arrays on the input's grid."""
        return np.stack([self.to_input(channel) for channel in arrays]) if self.changes_grid else arrays


def common_grid(geometries: Sequence[Tuple[Sequence[float], Sequence[float]]]) -> Tuple[List[float], str]:
    """The grid to train on from the training images' (spacing, direction): their most common
    orientation and, per axis in that orientation, their median spacing (as nnU-Net)."""
    codes = Counter(orientation_code(direction) for _, direction in geometries)
    code = codes.most_common(1)[0][0]
    oriented = [sitk.DICOMOrient(_geometry((1, 1, 1), spacing, direction), code).GetSpacing()
                for spacing, direction in geometries]
    return [float(s) for s in np.median(np.asarray(oriented), axis=0)], code


def _geometry(shape: Sequence[int], spacing: Sequence[float], direction: Sequence[float]) -> sitk.Image:
    """A small image that only carries geometry (origin 0)."""
    if len(spacing) != 3 or not all(math.isfinite(s) and s > 0 for s in spacing):
        raise InputImageError(f"voxel spacing {tuple(spacing)} is not three positive sizes in mm")
    matrix = np.asarray(direction, dtype=float).reshape(3, 3)
    if not np.isfinite(matrix).all() or abs(abs(np.linalg.det(matrix)) - 1) > 1e-3:
        raise InputImageError("the volume's direction matrix is not a rotation; fix its header")
    image = sitk.Image([int(s) for s in shape], sitk.sitkUInt8)
    image.SetSpacing([float(s) for s in spacing])
    image.SetDirection([float(d) for d in matrix.reshape(-1)])
    return image


def _resampled_geometry(oriented: sitk.Image, spacing: Sequence[float]) -> sitk.Image:
    """The grid with ``spacing`` that spans the same voxel extent (edge to edge) as ``oriented``."""
    old_spacing = np.asarray(oriented.GetSpacing())
    new_spacing = np.asarray(spacing, dtype=float)
    size = np.maximum(1, np.round(np.asarray(oriented.GetSize()) * old_spacing / new_spacing)).astype(int)
    direction = np.asarray(oriented.GetDirection()).reshape(3, 3)
    # First new voxel's edge on the first old voxel's edge: shift the centre by half the difference.
    origin = np.asarray(oriented.GetOrigin()) + direction @ ((new_spacing - old_spacing) / 2)
    return _grid_image(size, new_spacing, oriented.GetDirection(), origin)


def on_field_of_view_grid(size: Sequence[int], preprocessing: Preprocessing) -> bool:
    """Whether a volume of ``size`` (in the model's orientation) is taken as on a field-of-view
    model's grid already: exactly ``grid_shape`` voxels, as the model's training data was."""
    return [int(s) for s in size] == list(preprocessing.grid_shape)


def field_of_view_geometry(oriented: sitk.Image, preprocessing: Preprocessing) -> sitk.Image:
    """The grid of ``grid_shape`` voxels over the central ``fov_fraction`` of ``oriented``'s
    extent (edge to edge), in its orientation."""
    old_size = np.asarray(oriented.GetSize(), dtype=float)
    old_spacing = np.asarray(oriented.GetSpacing())
    fraction = np.asarray(preprocessing.fov_fraction or (1.0, 1.0, 1.0))
    shape = np.asarray(preprocessing.grid_shape)
    new_spacing = old_spacing * old_size * fraction / shape
    cut = old_size * (1 - fraction) / 2 * old_spacing  # mm left out before the kept part, per axis
    direction = np.asarray(oriented.GetDirection()).reshape(3, 3)
    origin = np.asarray(oriented.GetOrigin()) + direction @ (cut + (new_spacing - old_spacing) / 2)
    return _grid_image(shape, new_spacing, oriented.GetDirection(), origin)


def _grid_image(size: Sequence[int], spacing: Sequence[float], direction: Sequence[float],
                origin: Sequence[float]) -> sitk.Image:
    """A small image that carries one grid's geometry."""
    geometry = sitk.Image([int(s) for s in size], sitk.sitkUInt8)
    geometry.SetSpacing([float(s) for s in spacing])
    geometry.SetDirection([float(d) for d in direction])
    geometry.SetOrigin([float(o) for o in origin])
    return geometry


def _image(array: np.ndarray, geometry: sitk.Image) -> sitk.Image:
    image = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
    image.CopyInformation(geometry)
    return image


def _array(image: sitk.Image) -> np.ndarray:
    return np.ascontiguousarray(sitk.GetArrayFromImage(image).transpose(2, 1, 0))

