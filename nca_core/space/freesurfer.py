"""FreeSurfer volumes (``.mgz``, ``.mgh``) read through nibabel into a SimpleITK image with
the same geometry: nibabel gives the voxel-to-RAS affine, ITK wants LPS origin, spacing and
direction, so the first two rows of the affine change sign."""
from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import InputImageError

FREESURFER_SUFFIXES = (".mgz", ".mgh")
RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])


def is_freesurfer_file(path: Path) -> bool:
    return Path(path).name.lower().endswith(FREESURFER_SUFFIXES)


def read_freesurfer(path: Path) -> sitk.Image:
    """The volume of an ``.mgz``/``.mgh`` file (several frames: a 4D image) in LPS geometry.

    Raises InputImageError naming the file when nibabel is missing or the file is corrupt.
    """
    try:
        import nibabel
    except ImportError:
        raise InputImageError(f"{path}: reading FreeSurfer files needs nibabel (pip install nibabel)") from None
    try:
        mgh = nibabel.freesurfer.MGHImage.from_filename(str(path))
        voxels = np.asanyarray(mgh.dataobj)  # reads (and decompresses) every voxel now
    except (OSError, EOFError, ValueError, zlib.error, gzip.BadGzipFile, nibabel.filebasedimages.ImageFileError,
            nibabel.wrapstruct.WrapStructError, nibabel.freesurfer.mghformat.MGHError) as error:
        raise InputImageError(f"{path}: corrupt or truncated FreeSurfer file ({_reason(error)})") from None
    if voxels.ndim not in (3, 4):
        raise InputImageError(f"{path}: has {voxels.ndim} dimensions; a 3D volume is needed")
    return _lps_image(voxels, np.asarray(mgh.affine, dtype=float))


def _reason(error: Exception) -> str:
    text = " ".join(str(error).split())
    return text or type(error).__name__


def _lps_image(voxels: np.ndarray, affine: np.ndarray) -> sitk.Image:
    """A SimpleITK image of (I, J, K[, frame]) voxels with the RAS ``affine``'s geometry."""
    linear = RAS_TO_LPS @ affine[:3, :3]
    spacing = np.linalg.norm(linear, axis=0)
    native = voxels.astype(voxels.dtype.newbyteorder("="), copy=False)  # MGH stores big-endian voxels
    frames = [native] if native.ndim == 3 else [native[..., t] for t in range(native.shape[3])]
    images = []
    for frame in frames:
        image = sitk.GetImageFromArray(np.ascontiguousarray(frame.transpose(2, 1, 0)))
        image.SetSpacing([float(s) for s in spacing])
        image.SetDirection([float(d) for d in (linear / spacing).reshape(-1)])
        image.SetOrigin([float(o) for o in RAS_TO_LPS @ affine[:3, 3]])
        images.append(image)
    return images[0] if native.ndim == 3 else sitk.JoinSeries(images)
