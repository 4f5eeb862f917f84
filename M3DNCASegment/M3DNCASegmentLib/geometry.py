"""Array and coordinate conventions between Slicer and the nca_core engine.

Slicer: ``slicer.util.arrayFromVolume`` returns voxels in (K, J, I) order (slowest axis first)
and the node's IJKToRAS matrix maps voxel indices to RAS world coordinates.

nca_core / SimpleITK: arrays in (X, Y, Z) = (I, J, K) order; geometry in LPS (origin,
spacing, direction), the DICOM/ITK convention.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np

# RAS = diag(-1, -1, 1) * LPS, and the same matrix converts back.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def kji_to_ijk(array: np.ndarray) -> np.ndarray:
    """A (K, J, I) Slicer voxel array as a contiguous (I, J, K) array for the engine."""
    if array.ndim != 3:
        raise ValueError(f"expected a 3D scalar volume, got an array of shape {array.shape}")
    return np.ascontiguousarray(array.transpose(2, 1, 0))


def ijk_to_kji(array: np.ndarray) -> np.ndarray:
    """An engine (I, J, K) array as a contiguous (K, J, I) array for Slicer."""
    if array.ndim != 3:
        raise ValueError(f"expected a 3D array, got shape {array.shape}")
    return np.ascontiguousarray(array.transpose(2, 1, 0))


def engine_input(array_kji: np.ndarray) -> np.ndarray:
    """Slicer voxels -> float32 (X, Y, Z) copy, as ``segment_array`` expects."""
    return kji_to_ijk(np.asarray(array_kji)).astype(np.float32, copy=True)


def ras_to_lps_point(point: Sequence[float]) -> np.ndarray:
    return LPS_TO_RAS @ np.asarray(point, dtype=float)


lps_to_ras_point = ras_to_lps_point  # the conversion is its own inverse


def ijk_to_ras_from_lps(origin: Sequence[float], spacing: Sequence[float],
                        direction: Sequence[float]) -> np.ndarray:
    """4x4 IJKToRAS matrix from ITK/SimpleITK geometry (LPS origin, spacing, 9-element direction)."""
    direction = np.asarray(direction, dtype=float).reshape(3, 3)
    matrix = np.eye(4)
    matrix[:3, :3] = LPS_TO_RAS @ direction @ np.diag(np.asarray(spacing, dtype=float))
    matrix[:3, 3] = LPS_TO_RAS @ np.asarray(origin, dtype=float)
    return matrix


def lps_geometry_from_ijk_to_ras(matrix: Sequence[Sequence[float]]):
    """(origin, spacing, direction) in LPS from a 4x4 IJKToRAS matrix; inverse of the above."""
    matrix = np.asarray(matrix, dtype=float)
    linear = LPS_TO_RAS @ matrix[:3, :3]
    spacing = np.linalg.norm(linear, axis=0)
    if np.any(spacing == 0):
        raise ValueError("IJKToRAS matrix has a zero-length axis")
    direction = linear / spacing
    origin = LPS_TO_RAS @ matrix[:3, 3]
    return tuple(origin), tuple(spacing), tuple(direction.reshape(-1))


def box_object_to_ras(box: dict) -> Tuple[np.ndarray, np.ndarray]:
    """(4x4 object-to-RAS matrix, size in mm) of a report's box (LPS centre, size in voxels,
    spacing, direction), as a markups ROI takes them. A mirrored box's axes are a reflection;
    its first axis is turned round, which leaves the box (a set of points) as it is."""
    axes = LPS_TO_RAS @ np.asarray(box["direction"], dtype=float).reshape(3, 3)
    if np.linalg.det(axes) < 0:
        axes[:, 0] *= -1
    matrix = np.eye(4)
    matrix[:3, :3] = axes
    matrix[:3, 3] = lps_to_ras_point(box["centre_lps_mm"])
    return matrix, np.asarray(box["size"], dtype=float) * np.asarray(box["spacing_mm"], dtype=float)
