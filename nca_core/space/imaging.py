"""Reading and writing volumes with their geometry (SimpleITK), with input checks."""
from __future__ import annotations

import contextlib
import errno
import gzip
import os
import struct
import sys
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, List, Optional

import numpy as np
import SimpleITK as sitk

from ..errors import InputImageError
from .freesurfer import FREESURFER_SUFFIXES, is_freesurfer_file, read_freesurfer

VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd") + FREESURFER_SUFFIXES
# Intensities are scaled by a power of two (exact) when their magnitude leaves this
# range, so that float32 neither overflows nor loses them to underflow.
SAFE_MAGNITUDE = (2.0**-100, 2.0**100)
CHOOSE_CHANNEL = "choose one with --channel N (0 to {last})"
_NIFTI_BITS = {2: 8, 4: 16, 8: 32, 16: 32, 64: 64, 256: 8, 512: 16, 768: 32, 1024: 64, 1280: 64}


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
    return path.is_dir() and bool(_series_ids(path))


def _series_ids(folder: Path) -> List[str]:
    """DICOM series in ``folder``, without ITK's warning when there are none."""
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        return list(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)))
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)


def require_input(path: Path) -> None:
    """Refuse an input that does not exist."""
    if not path.exists():
        raise InputImageError(f"{path}: no such file or folder")


def _read_image(path: Path) -> sitk.Image:
    require_input(path)
    if path.is_dir():
        return _read_dicom(path)
    if path.stat().st_size == 0:
        raise InputImageError(f"{path}: file is empty")
    if is_freesurfer_file(path):
        return read_freesurfer(path)
    _check_nifti_complete(path)
    with _captured_stderr() as captured:
        try:
            return sitk.ReadImage(str(path))
        except RuntimeError as error:
            raise InputImageError(f"{path}: {_itk_reason(error, captured())}") from None


@contextlib.contextmanager
def _captured_stderr(replay: bool = True) -> Iterator[Callable[[], str]]:
    """Collect what C++ readers print on file descriptor 2 (MetaIO, ITK warnings);
    replay it afterwards when ``replay`` and the block succeeded."""
    sys.stderr.flush()
    with tempfile.TemporaryFile(mode="w+b") as sink:
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            yield lambda: _text_of(sink)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            text = _text_of(sink)
        if text and replay:
            sys.stderr.write(text)


def _text_of(sink) -> str:
    sink.flush()
    sink.seek(0)
    return sink.read().decode("utf-8", "replace")


def _read_dicom(path: Path) -> sitk.Image:
    series = _series_ids(path)
    if not series:
        raise InputImageError(f"{path}: folder holds no readable DICOM series")
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(path), series[0]))
    with _captured_stderr(replay=False) as captured:
        try:
            image = reader.Execute()
        except RuntimeError as error:
            raise InputImageError(f"{path}: DICOM series cannot be read ({_itk_reason(error, captured())})") from None
        if "missing slices" in captured():
            raise InputImageError(
                f"{path}: DICOM series has missing or unreadable slices (uneven slice spacing); "
                "check that every slice file is complete"
            )
    return image


def _itk_reason(error: Exception, printed: str = "") -> str:
    """The informative part of a SimpleITK/ITK error message (and of what ITK printed)."""
    text = str(error)
    if "Unable to determine ImageIO reader" in text:
        return "not a recognised image file (NIfTI, NRRD, MetaImage, FreeSurfer MGH or DICOM) or corrupt"
    lines = [line.strip().replace("sitk::ERROR: ", "") for line in (printed + "\n" + text).splitlines()]
    useful = [line for line in lines if line and ".cxx:" not in line and not line.startswith("Exception thrown")]
    hints = [line for line in useful if any(w in line for w in ("expected", "not read completely", "fread", "ideal"))]
    detail = (hints or useful or [type(error).__name__])[0]
    return f"corrupt or truncated image file ({detail})"


def _check_nifti_complete(path: Path) -> None:
    """ITK silently zero-fills truncated NIfTI files; check the data is all there."""
    name = path.name.lower()
    if not name.endswith((".nii", ".nii.gz")):
        return
    try:
        size, header = _nifti_size_and_header(path, name.endswith(".gz"))
    except gzip.BadGzipFile:
        raise InputImageError(f"{path}: not gzip-compressed, so not a .nii.gz file (wrong name or another file type)") from None
    except (OSError, EOFError, zlib.error) as error:
        raise InputImageError(f"{path}: corrupt or truncated compressed file ({error})") from None
    needed = _nifti_bytes_needed(header)
    if needed is not None and size < needed:
        raise InputImageError(f"{path}: truncated NIfTI file ({size} of {needed} bytes present)")


def _nifti_size_and_header(path: Path, compressed: bool):
    if not compressed:
        with open(path, "rb") as handle:
            return path.stat().st_size, handle.read(352)
    size, header = 0, b""
    with gzip.open(path, "rb") as handle:
        while True:
            block = handle.read(1 << 22)
            if not block:
                return size, header
            if len(header) < 352:
                header += block[: 352 - len(header)]
            size += len(block)


def _nifti_bytes_needed(header: bytes) -> Optional[int]:
    """vox_offset + data size from a NIfTI-1 header, or None when it is not one."""
    if len(header) < 348:
        return None
    for order in "<>":
        if struct.unpack(order + "i", header[:4])[0] != 348:
            continue
        dims = struct.unpack(order + "8h", header[40:56])
        datatype = struct.unpack(order + "h", header[70:72])[0]
        offset = struct.unpack(order + "f", header[108:112])[0]
        if not 1 <= dims[0] <= 7 or datatype not in _NIFTI_BITS:
            return None
        voxels = int(np.prod([max(1, d) for d in dims[1 : dims[0] + 1]], dtype=np.int64))
        return int(offset) + voxels * _NIFTI_BITS[datatype] // 8
    return None


def _select_channel(image: sitk.Image, channel: Optional[int], path: Path, choose_channel: str) -> sitk.Image:
    """One scalar 3D channel of a vector or 4D image (``--channel``)."""
    components = image.GetNumberOfComponentsPerPixel()
    dimension = image.GetDimension()
    if components > 1:
        _check_channel(channel, components, f"has {components} components per voxel (a vector image)", path,
                       choose_channel)
        return sitk.VectorIndexSelectionCast(image, channel)
    if dimension == 4:
        count = image.GetSize()[3]
        if count == 1 and channel in (None, 0):
            channel = 0
        _check_channel(channel, count, f"is 4D with {count} channels or time points", path, choose_channel)
        size = list(image.GetSize()[:3]) + [0]
        return sitk.Extract(image, size, [0, 0, 0, channel])
    if channel not in (None, 0):
        raise InputImageError(f"{path}: --channel {channel} was given, but the image has a single channel")
    return image


def _check_channel(channel: Optional[int], count: int, what: str, path: Path, choose_channel: str) -> None:
    if channel is None:
        raise InputImageError(f"{path}: {what}; {choose_channel.format(last=count - 1)}")
    if not 0 <= channel < count:
        raise InputImageError(f"{path}: {what}; --channel {channel} is out of range (0 to {count - 1})")


def read_volume(path: Path, channel: Optional[int] = None, choose_channel: str = CHOOSE_CHANNEL) -> Volume:
    """Read a 3D scalar volume from a file or a DICOM series folder.

    ``channel`` picks one channel of a 4D or vector image; such images are refused
    without it, with ``choose_channel`` as the advice ({last}: the last channel's index).
    Raises InputImageError naming the file and the problem.
    """
    path = Path(path)
    image = _select_channel(_read_image(path), channel, path, choose_channel)
    if image.GetDimension() != 3:
        kind = "2D (a single slice)" if image.GetDimension() == 2 else f"{image.GetDimension()}D"
        raise InputImageError(f"{path}: is {kind}; a 3D volume is needed")
    array = sitk.GetArrayViewFromImage(image).transpose(2, 1, 0)
    return Volume(array=intensity_array(array, str(path)), reference=image, name=case_name(path), source=str(path))


def intensity_array(array: np.ndarray, source: str) -> np.ndarray:
    """A contiguous float32 copy of a voxel array, refusing what cannot be an image.

    Refuses bool and non-real dtypes and NaN/infinite voxels; magnitudes outside
    ``SAFE_MAGNITUDE`` are scaled by an exact power of two (percentile normalisation
    is scale-invariant, so the segmentation does not change).
    """
    array = np.asarray(array)
    if array.dtype == np.bool_:
        raise InputImageError(_named(source, "is a binary mask (bool voxels), not an intensity image"))
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise InputImageError(_named(source, f"voxel type {array.dtype} is not supported; use integer or float voxels"))
    if np.issubdtype(array.dtype, np.floating):
        _check_finite(array, source)
    peak = max(abs(float(array.min())), abs(float(array.max()))) if array.size else 0.0
    if peak and not SAFE_MAGNITUDE[0] <= peak <= SAFE_MAGNITUDE[1]:
        array = np.ldexp(array.astype(np.float64), -np.frexp(peak)[1])
    return np.ascontiguousarray(array, dtype=np.float32)


def head_scan(image: sitk.Image) -> sitk.Image:
    """``image`` as float32 voxels (``intensity_array``) with its geometry: what a whole head is
    registered and segmented from."""
    scan = sitk.GetImageFromArray(intensity_array(sitk.GetArrayFromImage(image), ""))
    scan.CopyInformation(image)
    return scan


def _named(source: str, text: str) -> str:
    return f"{source}: {text}" if source else text


def _check_finite(array: np.ndarray, source: str) -> None:
    nan = int(np.isnan(array).sum())
    infinite = int(np.isinf(array).sum())
    if nan or infinite:
        raise InputImageError(_named(
            source, f"contains {nan} NaN and {infinite} infinite voxel values; replace them (e.g. with 0) before segmenting"
        ))


def check_not_constant(array: np.ndarray, source: str) -> None:
    """Refuse a volume with a single intensity (nothing to segment)."""
    if array.size == 0:
        raise InputImageError(_named(source, "the volume has no voxels"))
    low, high = float(array.min()), float(array.max())
    if low == high:
        what = "every voxel is 0 (an all-zero image)" if low == 0 else f"every voxel has the value {low:g}"
        raise InputImageError(_named(source, f"{what}; nothing to segment"))


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


def write_image(image: sitk.Image, filename: str) -> None:
    """Write ``image`` to ``filename`` (compressed), in place: callers stage it
    (``atomic.atomic_group``) so that the target appears only when complete."""
    sitk.WriteImage(image, filename, useCompression=True)
    if filename.lower().endswith(".gz") and not _gzip_complete(filename):
        raise OSError(errno.EIO, "written incompletely (disk full or file size limit?)", filename)


def _gzip_complete(filename: str) -> bool:
    """Whether a gzip file is whole: ITK's NIfTI writer reports a short write (a full disk,
    a file size limit) only on stderr, and its reader fills the missing voxels with zeros."""
    try:
        with gzip.open(filename, "rb") as stream:  # a cut stream fails its length and CRC check
            while stream.read(1 << 24):
                pass
        return True
    except (OSError, EOFError, zlib.error):
        return False


def volume_suffix(path: Path) -> str:
    return next((s for s in VOLUME_SUFFIXES if path.name.lower().endswith(s)), path.suffix)


def output_reason(error: Exception) -> str:
    """Why writing failed, in a few words."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__
