"""A volume node as the engine's input: a SimpleITK image with the node's voxels and geometry.

The only IJK/RAS arithmetic of the module: the node's IJKToRAS becomes the image's LPS
origin, spacing and direction, and an ROI becomes an index box of the volume. Everything
else (turning, resampling, locating the hippocampi, mirroring) is the engine's.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
import SimpleITK as sitk
import slicer
import vtk

from .geometry import lps_geometry_from_ijk_to_ras

Box = Tuple[Tuple[int, int], Tuple[int, int], Tuple[int, int]]  # (start, stop) per I, J, K


def ijkToRAS(volumeNode) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(matrix)
    return slicer.util.arrayFromVTKMatrix(matrix)


def imageFromVolume(volumeNode, box: Optional[Box] = None) -> sitk.Image:
    """The volume's voxels (float32) with its geometry in LPS, cut to ``box`` when given.
    Geometry is the node's own (a parent transform applies to the outputs alike)."""
    if volumeNode is None or volumeNode.GetImageData() is None:
        raise ValueError("The input volume has no voxels.")
    voxels = np.asarray(slicer.util.arrayFromVolume(volumeNode), dtype=np.float32)  # K, J, I
    if voxels.ndim != 3:
        raise ValueError(f"The input must be a 3D scalar volume, not an array of shape {voxels.shape}.")
    image = sitk.GetImageFromArray(voxels)  # SimpleITK reads (K, J, I) as an (I, J, K) image
    origin, spacing, direction = lps_geometry_from_ijk_to_ras(ijkToRAS(volumeNode))
    image.SetOrigin(origin)
    image.SetSpacing(spacing)
    image.SetDirection(direction)
    if box is None:
        return image
    (i0, i1), (j0, j1), (k0, k1) = box
    return image[i0:i1, j0:j1, k0:k1]


def roiBox(volumeNode, roiNode) -> Box:
    """The voxel index box of ``volumeNode`` that the ROI covers (world coordinates, parent
    transforms of both included); refuses an ROI that misses the volume."""
    bounds = [0.0] * 6
    roiNode.GetRASBounds(bounds)  # world coordinates
    worldToLocal = vtk.vtkGeneralTransform()
    slicer.vtkMRMLTransformNode.GetTransformBetweenNodes(None, volumeNode.GetParentTransformNode(), worldToLocal)
    rasToIJK = np.linalg.inv(ijkToRAS(volumeNode))
    corners = []
    for x in bounds[0:2]:
        for y in bounds[2:4]:
            for z in bounds[4:6]:
                local = worldToLocal.TransformPoint((x, y, z))
                corners.append((rasToIJK @ np.array([*local, 1.0]))[:3])
    corners = np.array(corners)
    size = volumeNode.GetImageData().GetDimensions()
    low = np.clip(np.floor(corners.min(axis=0) + 0.5).astype(int), 0, size)
    high = np.clip(np.floor(corners.max(axis=0) + 0.5).astype(int) + 1, 0, size)
    if np.any(high - low < 1):
        raise ValueError(f"The ROI '{roiNode.GetName()}' does not overlap the volume '{volumeNode.GetName()}'.")
    return tuple((int(a), int(b)) for a, b in zip(low, high))


def pasteIntoVolume(arrayIJK: np.ndarray, shapeIJK, box: Optional[Box], fill=0) -> np.ndarray:
    """An output of the cropped input placed in an array of the whole volume (``fill`` outside)."""
    if box is None:
        return arrayIJK
    whole = np.full(tuple(shapeIJK), fill, dtype=arrayIJK.dtype)
    (i0, i1), (j0, j1), (k0, k1) = box
    whole[i0:i1, j0:j1, k0:k1] = arrayIJK
    return whole
