"""FreeSurfer volumes (.mgz, .mgh) through the engine's reader: the voxels and the physical
position of every voxel equal those of the same volume stored as NIfTI; a broken file is one line."""
from __future__ import annotations

import gzip
import json

import nibabel
import numpy as np
import pytest
import SimpleITK as sitk

from nca_core.errors import InputImageError
from nca_core.space.imaging import case_name, list_inputs, read_volume
from nca_core.space.regions import code_axes

from nca_helpers import fast, model_file, run_cli


def conformed(image: sitk.Image) -> sitk.Image:
    """FreeSurfer's ``mri_convert --conform``: 256³ voxels of 1 mm, LIA, about the volume's
    centre, grey levels scaled into 0-255 (uint8)."""
    lia = code_axes("LIA")
    centre = np.asarray(image.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in image.GetSize()]))
    grid = sitk.Image([256] * 3, sitk.sitkUInt8)
    grid.SetDirection([float(d) for d in lia.reshape(-1)])
    grid.SetOrigin([float(o) for o in centre - lia @ np.full(3, 127.5)])
    values = sitk.GetArrayFromImage(sitk.Resample(sitk.Cast(image, sitk.sitkFloat32), grid, sitk.Transform(),
                                                  sitk.sitkLinear, 0.0, sitk.sitkFloat32))
    scaled = sitk.GetImageFromArray(np.clip(values / np.percentile(values[values > 0], 99.9) * 255, 0, 255)
                                    .astype(np.uint8))
    scaled.CopyInformation(grid)
    return scaled


def as_mgz(nifti_path, mgz_path) -> None:
    """The NIfTI's voxels and affine saved as FreeSurfer's format by nibabel (not by the engine)."""
    nifti = nibabel.load(str(nifti_path))
    nibabel.save(nibabel.MGHImage(np.asanyarray(nifti.dataobj), nifti.affine), str(mgz_path))


def assert_same_voxels_and_positions(mgz, nifti) -> None:
    """Equal voxels, and equal physical positions of every voxel: positions are affine in the
    index, so the corners and a random sample of voxels pin them all down."""
    assert mgz.array.shape == nifti.array.shape
    assert np.array_equal(mgz.array, nifti.array)
    shape = np.asarray(nifti.array.shape)
    corners = np.array(np.meshgrid(*[(0, s - 1) for s in shape])).reshape(3, -1).T
    sample = np.random.default_rng(0).integers(0, shape, size=(500, 3))
    for index in np.vstack([corners, sample]).tolist():
        expected = nifti.reference.TransformIndexToPhysicalPoint(index)
        assert np.allclose(mgz.reference.TransformIndexToPhysicalPoint(index), expected, atol=1e-3), index


@pytest.mark.parametrize("suffix", [".mgz", ".mgh"])
def test_oblique_volume_reads_as_its_nifti(tmp_path, suffix):
    rotation = sitk.VersorTransform((0.2, -0.3, 0.9), 0.4).GetMatrix()
    affine = np.eye(4)
    affine[:3, :3] = np.asarray(rotation).reshape(3, 3) @ np.diag([0.9, 1.2, 2.5])
    affine[:3, 3] = (-40.5, 12.25, 7.0)
    voxels = np.random.default_rng(1).integers(0, 3000, (17, 23, 11)).astype(np.int16)
    nibabel.save(nibabel.Nifti1Image(voxels, affine), str(tmp_path / "v.nii.gz"))
    as_mgz(tmp_path / "v.nii.gz", tmp_path / f"v{suffix}")
    mgz, nifti = read_volume(tmp_path / f"v{suffix}"), read_volume(tmp_path / "v.nii.gz")
    assert_same_voxels_and_positions(mgz, nifti)
    assert mgz.name == "v" and case_name(tmp_path / "T1.MGZ") == "T1"


def test_frames_need_a_channel(tmp_path):
    path = tmp_path / "frames.mgz"
    nibabel.save(nibabel.MGHImage(np.arange(4 * 5 * 6 * 2, dtype=np.float32).reshape(4, 5, 6, 2), np.eye(4)), str(path))
    with pytest.raises(InputImageError, match="4D with 2 channels"):
        read_volume(path)
    assert np.array_equal(read_volume(path, channel=1).array, np.asanyarray(nibabel.load(str(path)).dataobj)[..., 1])


def test_conformed_real_head_reads_as_its_nifti(wholehead_dir, tmp_path):
    head = conformed(sitk.ReadImage(str(wholehead_dir / "ch2.nii.gz")))
    sitk.WriteImage(head, str(tmp_path / "T1.nii.gz"))
    as_mgz(tmp_path / "T1.nii.gz", tmp_path / "T1.mgz")
    mgz = read_volume(tmp_path / "T1.mgz")
    assert mgz.reference.GetSize() == (256, 256, 256) and mgz.reference.GetPixelID() == sitk.sitkUInt8
    assert sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(mgz.reference.GetDirection()) == "LIA"
    assert_same_voxels_and_positions(mgz, read_volume(tmp_path / "T1.nii.gz"))
    assert list_inputs([tmp_path]) == [tmp_path / "T1.mgz", tmp_path / "T1.nii.gz"]


def truncated(path, tmp_path):
    whole = gzip.decompress(path.read_bytes())
    cut = tmp_path / "cut.mgz"
    cut.write_bytes(gzip.compress(whole[: len(whole) // 2]))
    return cut


@pytest.mark.parametrize("make", [
    lambda good, tmp: truncated(good, tmp),
    lambda good, tmp: (tmp / "noise.mgz").write_bytes(b"not a FreeSurfer volume at all" * 40) and tmp / "noise.mgz",
    lambda good, tmp: (tmp / "cut.mgz").write_bytes(good.read_bytes()[:200]) and tmp / "cut.mgz",
    lambda good, tmp: (tmp / "zeros.mgh").write_bytes(bytes(400)) and tmp / "zeros.mgh",
])
def test_broken_file_is_one_line_and_exit_1(tmp_path, capsys, make):
    good = tmp_path / "good.mgz"
    voxels = np.random.default_rng(2).integers(0, 255, (8, 9, 10), np.uint8)  # random: the file is not tiny
    nibabel.save(nibabel.MGHImage(voxels, np.eye(4)), str(good))
    broken = make(good, tmp_path)
    code, out, errors = run_cli(capsys, "segment", broken, "-o", tmp_path / "out", *fast(model_file(tmp_path / "m.m3dnca")))
    assert code == 1 and out == "" and len(errors) == 1, errors
    assert errors[0].startswith(f"m3dnca: error: {broken}: ") and "Traceback" not in errors[0]


@pytest.mark.slow
def test_conformed_head_segments_with_nifti_outputs_beside_it(wholehead_dir, tmp_path, capsys):
    """A FreeSurfer-conformed head: both hippocampi, the outputs named after ``T1`` and NIfTI."""
    head = conformed(sitk.ReadImage(str(wholehead_dir / "ch2.nii.gz")))
    sitk.WriteImage(head, str(tmp_path / "T1.nii.gz"))
    as_mgz(tmp_path / "T1.nii.gz", tmp_path / "T1.mgz")
    code, out, errors = run_cli(capsys, "segment", tmp_path / "T1.mgz", "-o", tmp_path / "out", "--runs", "2")
    assert code == 0, errors
    report = json.loads((tmp_path / "out" / "T1_report.json").read_text())
    assert sorted(side["side"] for side in report["sides"]) == ["left", "right"]
    segmentation = sitk.ReadImage(str(tmp_path / "out" / "T1_seg.nii.gz"))
    assert segmentation.GetSize() == (256, 256, 256)
    assert np.allclose(segmentation.GetDirection(), head.GetDirection(), atol=1e-6)
