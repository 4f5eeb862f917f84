"""Reading and writing volumes with their geometry (SimpleITK), atomically."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List

import numpy as np
import SimpleITK as sitk

from .atomic import atomic_path
from .errors import InputImageError, NCAError

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


@dataclass
class Volume:
    """A scalar 3D image: voxels in (X, Y, Z) = (I, J, K) order, plus geometry."""

    array: np.ndarray
    reference: sitk.Image  # carries spacing, origin and direction
    name: str
    source: str

    @property
    def spacing(self):
        return self.reference.GetSpacing()


def case_name(path: Path) -> str:
    """File name without its volume extension, or the folder name."""
    name = path.name
    for suffix in VOLUME_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def is_volume_file(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(VOLUME_SUFFIXES)


def is_dicom_folder(path: Path) -> bool:
    return path.is_dir() and bool(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(path)))


def _read_image(path: Path) -> sitk.Image:
    if not path.exists():
        raise InputImageError(f"{path}: no such file or folder")
    if path.is_dir():
        series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(path))
        if not series:
            raise InputImageError(f"{path}: folder holds no readable DICOM series")
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(path), series[0]))
        try:
            return reader.Execute()
        except RuntimeError as error:
            raise InputImageError(f"{path}: DICOM series cannot be read ({_first_line(error)})") from None
    if path.stat().st_size == 0:
        raise InputImageError(f"{path}: file is empty")
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as error:
        raise InputImageError(f"{path}: not a readable image ({_first_line(error)})") from None


def _first_line(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def read_volume(path: Path) -> Volume:
    """Read a 3D scalar volume from a file or a DICOM series folder."""
    path = Path(path)
    image = _read_image(path)
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputImageError(
            f"{path}: has {image.GetNumberOfComponentsPerPixel()} components per voxel; "
            "a scalar (grey-value) volume is needed"
        )
    if image.GetDimension() != 3:
        raise InputImageError(f"{path}: is {image.GetDimension()}D; a 3D volume is needed")
    array = sitk.GetArrayViewFromImage(image).transpose(2, 1, 0)
    if array.dtype == np.bool_:
        raise InputImageError(f"{path}: is a binary mask, not an intensity image")
    array = np.ascontiguousarray(array, dtype=np.float32)
    if not np.isfinite(array).all():
        raise InputImageError(f"{path}: contains NaN or infinite voxel values")
    return Volume(array=array, reference=image, name=case_name(path), source=str(path))


def list_inputs(paths: List[Path]) -> List[Path]:
    """Expand the command line's inputs: files, DICOM folders, folders of volumes."""
    found: List[Path] = []
    for path in map(Path, paths):
        if path.is_dir() and not is_dicom_folder(path):
            entries = sorted(p for p in path.iterdir() if is_volume_file(p) or is_dicom_folder(p))
            if not entries:
                raise InputImageError(f"{path}: folder holds no volumes or DICOM series")
            found.extend(entries)
        else:
            found.append(path)
    return found


def to_image(array: np.ndarray, reference: sitk.Image) -> sitk.Image:
    """An image of ``array`` (X, Y, Z) with the reference's geometry."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
    image.CopyInformation(reference)
    return image


def write_atomic(image: sitk.Image, path: Path) -> None:
    """Write to a temporary file beside ``path``, then rename it into place."""
    path = Path(path)
    suffix = next((s for s in VOLUME_SUFFIXES if path.name.lower().endswith(s)), path.suffix)
    try:
        with atomic_path(path, suffix) as temporary:
            sitk.WriteImage(image, temporary, useCompression=True)
    except (RuntimeError, OSError) as error:
        raise NCAError(f"{path}: cannot write output ({_first_line(error)})") from None
