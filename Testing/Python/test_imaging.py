"""The image reader: every bad input raises InputImageError naming the file and the problem."""
from __future__ import annotations

import gzip
import re
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nca_core.network.config import NCAConfig, preset
from nca_core.errors import InputImageError, ModelFileError, NCAError
from nca_core.space.imaging import intensity_array, list_inputs, read_volume, to_image
from nca_core.network.model import M3DNCA
from nca_core.modelfile.bundle import ModelBundle
from nca_core.inference.pipeline import segment_array
from nca_core.inference.settings import SegmentSettings

from nca_helpers import smooth_volume, write_volume


def assert_refused(path: Path, words: str, channel=None) -> str:
    with pytest.raises(InputImageError) as raised:
        read_volume(path, channel)
    message = str(raised.value)
    assert message.startswith(f"{path}: ") and words in message and "\n" not in message
    return message


def nifti_bytes(tmp_path: Path) -> bytes:
    return write_volume(tmp_path / "good.nii.gz", smooth_volume()).read_bytes()


def test_good_volume_keeps_values_and_geometry(tmp_path):
    array = smooth_volume((9, 8, 7))
    direction = (0, 1, 0, -1, 0, 0, 0, 0, 1)
    path = write_volume(tmp_path / "v.nrrd", array, (0.5, 1.5, 3.0), (10, -20, 5), direction)
    volume = read_volume(path)
    assert volume.array.shape == (9, 8, 7) and volume.array.dtype == np.float32
    assert np.array_equal(volume.array, array)
    assert volume.name == "v" and volume.spacing == (0.5, 1.5, 3.0)
    assert volume.reference.GetDirection() == tuple(float(d) for d in direction)


def test_missing_file(tmp_path):
    assert_refused(tmp_path / "absent.nii.gz", "no such file or folder")


def test_empty_file(tmp_path):
    path = tmp_path / "empty.nii.gz"
    path.write_bytes(b"")
    assert_refused(path, "file is empty")


@pytest.mark.parametrize("keep", [0.5, 0.99])
def test_truncated_nii_gz(tmp_path, keep):
    data = nifti_bytes(tmp_path)
    path = tmp_path / "cut.nii.gz"
    path.write_bytes(data[: int(len(data) * keep)])
    assert_refused(path, "truncated")


def test_truncated_uncompressed_nii(tmp_path):
    raw = gzip.decompress(nifti_bytes(tmp_path))
    path = tmp_path / "cut.nii"
    path.write_bytes(raw[:-64])
    assert_refused(path, "truncated NIfTI file")


def test_corrupt_nii_gz(tmp_path):
    data = bytearray(nifti_bytes(tmp_path))
    data[len(data) // 2] ^= 0xFF
    path = tmp_path / "bad.nii.gz"
    path.write_bytes(bytes(data))
    assert_refused(path, "corrupt")


def test_text_file_named_nii_gz(tmp_path):
    path = tmp_path / "notes.nii.gz"
    path.write_text("patient notes, not an image\n")
    assert_refused(path, "not gzip-compressed")


@pytest.mark.parametrize("name", ["notes.nrrd", "notes.mha"])
def test_text_file_named_like_another_format(tmp_path, name):
    path = tmp_path / name
    path.write_text("patient notes, not an image\n")
    assert_refused(path, "not a recognised image file")


@pytest.mark.parametrize("name", ["cut.nrrd", "cut.mha"])
def test_truncated_nrrd_and_metaimage(tmp_path, name):
    full = write_volume(tmp_path / ("full" + Path(name).suffix), smooth_volume())
    path = tmp_path / name
    path.write_bytes(full.read_bytes()[:-300])
    assert_refused(path, "corrupt or truncated image file")


def test_unreadable_dicom_folder(tmp_path):
    folder = tmp_path / "series"
    folder.mkdir()
    (folder / "IM0001.dcm").write_bytes(b"\0" * 200)
    with pytest.raises(InputImageError, match="holds no volumes or DICOM series"):
        list_inputs([folder])
    assert_refused(folder, "no readable DICOM series")


def test_two_dimensional_image(tmp_path):
    path = tmp_path / "slice.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.random.rand(20, 30).astype(np.float32)), str(path))
    assert_refused(path, "is 2D (a single slice); a 3D volume is needed")


def four_d(tmp_path: Path) -> Path:
    array = np.stack([np.full((6, 7, 8), c, np.float32) + np.random.rand(6, 7, 8) for c in range(3)])
    path = tmp_path / "series4d.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(array, isVector=False), str(path))
    return path


def test_four_d_image_needs_a_channel(tmp_path):
    path = four_d(tmp_path)
    assert_refused(path, "is 4D with 3 channels or time points; choose one with --channel N (0 to 2)")
    assert_refused(path, "--channel 3 is out of range", channel=3)
    volume = read_volume(path, channel=2)
    assert volume.array.shape == (8, 7, 6) and 2 <= volume.array.min() and volume.array.max() <= 3
    assert volume.reference.GetDimension() == 3


def test_vector_image_needs_a_channel(tmp_path):
    array = np.random.rand(6, 7, 8, 3).astype(np.float32)
    array[..., 1] += 10
    path = tmp_path / "rgbish.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(array, isVector=True), str(path))
    assert_refused(path, "has 3 components per voxel (a vector image); choose one with --channel N")
    volume = read_volume(path, channel=1)
    assert np.allclose(volume.array, array[..., 1].transpose(2, 1, 0))


def test_channel_for_a_scalar_image(tmp_path):
    path = write_volume(tmp_path / "v.nrrd", smooth_volume())
    assert read_volume(path, channel=0).array.shape == smooth_volume().shape
    assert_refused(path, "the image has a single channel", channel=1)


@pytest.mark.parametrize("value, words", [(np.nan, "1 NaN and 0 infinite"), (np.inf, "0 NaN and 1 infinite")])
def test_nan_and_infinite_voxels(tmp_path, value, words):
    array = smooth_volume()
    array[3, 4, 5] = value
    assert_refused(write_volume(tmp_path / "v.nrrd", array), words)


def test_int64_is_read_exactly(tmp_path):
    array = np.arange(16 * 14 * 12, dtype=np.int64).reshape(16, 14, 12) - 1000
    volume = read_volume(write_volume(tmp_path / "v.nrrd", array))
    assert np.array_equal(volume.array, array.astype(np.float32))


@pytest.mark.parametrize("scale", [1e300, 1e-300])
def test_huge_and_tiny_intensity_ranges_are_scaled_exactly(tmp_path, scale):
    array = smooth_volume().astype(np.float64) * scale
    volume = read_volume(write_volume(tmp_path / "v.nrrd", array))
    assert np.isfinite(volume.array).all() and volume.array.max() > 0
    ratio = volume.array.astype(np.float64) / array
    assert np.allclose(ratio[array != 0], ratio.flat[np.flatnonzero(array)[0]], rtol=1e-6)


def test_bool_array_is_refused():
    with pytest.raises(InputImageError, match="binary mask"):
        intensity_array(np.ones((4, 4, 4), bool), "mask")


@pytest.mark.parametrize("array, words", [
    (np.zeros((16, 14, 12), np.int16), "every voxel is 0 (an all-zero image); nothing to segment"),
    (np.full((16, 14, 12), 7.5, np.float32), "every voxel has the value 7.5; nothing to segment"),
    (np.random.rand(16, 14, 3).astype(np.float32), "too small for this model: every side needs at least 7 voxels"),
])
def test_unsegmentable_arrays_are_refused_by_the_api(array, words):
    bundle = ModelBundle.from_model(M3DNCA(preset("hippocampus")))
    with pytest.raises(InputImageError, match=re.escape(words)):
        segment_array(array, bundle, SegmentSettings(model="test", runs=1, steps=[1, 1], device="cpu"))


def test_mostly_uniform_image_is_segmented():
    array = np.zeros((16, 14, 12), np.float32)
    array[2, 3, 4] = 5.0  # percentiles coincide; min/max range is used
    bundle = ModelBundle.from_model(M3DNCA(preset("hippocampus")))
    result = segment_array(array, bundle, SegmentSettings(model="test", runs=1, steps=[1, 1], device="cpu"))
    assert result.ensemble.labels.shape == array.shape


def test_a_model_reading_more_channels_than_its_preprocessing_gives_cannot_be_built():
    config = NCAConfig(input_channels=2, kernel_sizes=[7, 3], steps=[1, 1], downscale=2)
    with pytest.raises(ModelFileError, match="the config reads 2 input channels, the preprocessing gives 1"):
        ModelBundle.from_model(M3DNCA(config))


def test_volume_beyond_the_memory_limit_is_refused(monkeypatch):
    monkeypatch.setenv("M3DNCA_MEMORY_LIMIT", "64K")
    bundle = ModelBundle.from_model(M3DNCA(preset("hippocampus")))
    with pytest.raises(InputImageError, match=r"needs about .* of memory to segment, more than the limit"):
        segment_array(smooth_volume(), bundle, SegmentSettings(model="test", runs=1, steps=[1, 1], device="cpu"))


def test_to_image_copies_geometry(tmp_path):
    path = write_volume(tmp_path / "v.nii.gz", smooth_volume(), (0.7, 0.8, 2.5), (1, 2, 3),
                        (-1, 0, 0, 0, 1, 0, 0, 0, -1))
    volume = read_volume(path)
    image = to_image(volume.array.astype(np.uint8), volume.reference)
    for getter in ("GetSize", "GetSpacing", "GetOrigin", "GetDirection"):
        assert getattr(image, getter)() == getattr(volume.reference, getter)()


def test_errors_are_nca_errors():
    assert issubclass(InputImageError, NCAError)


@pytest.mark.parametrize("text, expected", [("512M", 512 << 20), ("8G", 8 << 30), ("1.5GiB", 3 << 29), ("1000", 1000)])
def test_memory_limit_variable(monkeypatch, text, expected):
    from nca_core.inference.limits import memory_limit

    monkeypatch.setenv("M3DNCA_MEMORY_LIMIT", text)
    assert memory_limit("cpu")[0] == expected


@pytest.mark.parametrize("value", ["lots", "inf", "1e999", "0", "-2G"])
def test_bad_memory_limit_variable(monkeypatch, value):
    from nca_core.inference.limits import memory_limit

    monkeypatch.setenv("M3DNCA_MEMORY_LIMIT", value)
    with pytest.raises(NCAError, match="not a size"):
        memory_limit("cpu")


def test_memory_limit_defaults_to_physical_memory(monkeypatch):
    import os

    from nca_core.inference.limits import memory_limit

    monkeypatch.delenv("M3DNCA_MEMORY_LIMIT", raising=False)
    limit, what = memory_limit("cpu")
    assert 0 < limit <= os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") and "memory" in what
