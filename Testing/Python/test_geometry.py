"""Geometry round trip on every file in ../shared/data/formats: the segmentation and the
variance map have the input's exact size, spacing, origin and direction.

NIfTI stores spacing, origin and orientation as float32 (the orientation as a quaternion),
so "exact" means: the same size, and the same geometry to float32 precision.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nca_core.space.imaging import VOLUME_SUFFIXES, case_name, is_dicom_folder, read_volume, to_image

from nca_helpers import assert_same_geometry, fast, model_file, run_cli



def format_inputs(formats_dir: Path):
    entries = sorted(p for p in formats_dir.iterdir()
                     if p.name.lower().endswith(VOLUME_SUFFIXES) or is_dicom_folder(p))
    assert len(entries) >= 7, entries
    return entries


def reference_image(path: Path) -> sitk.Image:
    """The input read directly with SimpleITK (not through nca_core)."""
    if path.is_dir():
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(path)))
        return reader.Execute()
    return sitk.ReadImage(str(path))


def test_read_and_write_round_trip_keeps_geometry_and_voxels(formats_dir, tmp_path):
    for path in format_inputs(formats_dir):
        volume = read_volume(path)
        original = reference_image(path)
        written = tmp_path / f"{case_name(path)}.nii.gz"
        sitk.WriteImage(to_image(volume.array, volume.reference), str(written))
        again = sitk.ReadImage(str(written))
        assert_same_geometry(again, original, path.name)
        assert np.array_equal(sitk.GetArrayFromImage(again), sitk.GetArrayFromImage(original).astype(np.float32))


def test_io_only_outputs_have_the_inputs_geometry(formats_dir, tmp_path, capsys):
    """I/O only: the model is untrained (probability 0.5 everywhere, NQM 0), so this says nothing about segmentation quality."""
    model = model_file(tmp_path / "untrained.m3dnca")
    inputs = format_inputs(formats_dir)
    outdir = tmp_path / "out"
    code, out, err = run_cli(capsys, "segment", *inputs, "-o", outdir, *fast(model), "--locate", "none")
    assert code == 0, err
    for path in inputs:
        original = reference_image(path)
        for suffix, pixel in (("seg", sitk.sitkUInt8), ("variance", sitk.sitkFloat32)):
            output = sitk.ReadImage(str(outdir / f"{case_name(path)}_{suffix}.nii.gz"))
            assert_same_geometry(output, original, f"{path.name} {suffix}")
            assert output.GetPixelID() == pixel


@pytest.mark.parametrize("direction", [(1, 0, 0, 0, 1, 0, 0, 0, 1), (-1, 0, 0, 0, 0, 1, 0, -1, 0)])
def test_io_only_synthetic_oblique_geometry_survives(tmp_path, capsys, direction):
    """Runs without ../shared/data: flipped/permuted axes, anisotropic spacing. I/O only: the model is untrained (probability 0.5 everywhere, NQM 0), so this says nothing about segmentation quality."""
    from nca_helpers import smooth_volume, write_volume

    model = model_file(tmp_path / "untrained.m3dnca")
    path = write_volume(tmp_path / "v.nrrd", smooth_volume((17, 12, 9)), (0.4, 0.9, 3.3), (-5.5, 2.25, 100), direction)
    code, out, err = run_cli(capsys, "segment", path, "-o", tmp_path / "out", *fast(model))
    assert code == 0, err
    for suffix in ("seg", "variance"):
        assert_same_geometry(sitk.ReadImage(str(tmp_path / "out" / f"v_{suffix}.nii.gz")), sitk.ReadImage(str(path)), suffix)
