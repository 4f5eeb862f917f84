"""The prostate model's field-of-view grid, its training and routing, on the shared PROMISE12 cases."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk

from nca_core.errors import ModelFileError, NCAError
from nca_core.inference.route import locates_hippocampi
from nca_core.modelfile.bundle import load_model
from nca_core.modelfile.registry import shipped_models
from nca_core.quality.metrics import mean_foreground_dice
from nca_core.space.grid import ModelGrid
from nca_core.space.preprocessing import Preprocessing
from nca_core.training.settings import PROSTATE_GRID, TrainSettings

from nca_helpers import REPOSITORY, run_cli
from prostate_helpers import case_paths, scanner_version, two_case_trainer, xyz


@pytest.fixture(scope="module")
def scanner_case(prostate_dir):
    """Case 00 (BIDMC) as the model's grid has it, and as a 320x320x24 RAI scan."""
    image_path, label_path = case_paths(prostate_dir, 0)
    image, label = sitk.ReadImage(str(image_path)), sitk.ReadImage(str(label_path))
    return image, label, *scanner_version(image, label)


def grid_of(image: sitk.Image) -> ModelGrid:
    return ModelGrid(image.GetSize(), image.GetSpacing(), image.GetDirection(), PROSTATE_GRID)


def test_a_scan_of_another_size_and_orientation_maps_onto_the_training_grid_and_back(scanner_case):
    image, label, scan, scan_label = scanner_case
    grid = grid_of(scan)
    assert grid.model_shape == (128, 128, 32) and grid.reoriented and grid.resampled
    on_grid = grid.label_to_model(xyz(scan_label))
    assert mean_foreground_dice(on_grid, xyz(label), 1) > 0.93  # the training case's own label, recovered
    image_on_grid = grid.to_model(xyz(scan).astype(np.float32))
    assert np.corrcoef(image_on_grid.ravel(), xyz(image).ravel())[0, 1] > 0.95  # 32 -> 24 -> 32 slices, linear
    back = grid.to_input(xyz(label).astype(np.float32)) > 0.5
    assert back.shape == xyz(scan).shape == (320, 320, 24)
    assert mean_foreground_dice(back.astype(np.uint8), xyz(scan_label), 1) > 0.9
    assert not (back[:32].any() or back[-32:].any() or back[:, :32].any() or back[:, -32:].any())  # the cut 10%


def test_the_central_field_of_view_lands_on_the_grid_voxel_for_voxel(scanner_case):
    """At 160x160x32 the kept 80% is 128x128x32 of the scan's own voxels: no interpolation at all."""
    image, label = scanner_case[:2]
    scan, _ = scanner_version(image, label, size=(160, 160, 32), orientation="RAI")
    np.testing.assert_allclose(grid_of(scan).to_model(xyz(scan).astype(np.float32)), xyz(image), atol=1e-3)


def test_a_volume_already_on_the_grid_is_used_as_it_is(scanner_case):
    image = scanner_case[0]
    grid = grid_of(image)
    assert not grid.changes_grid and grid.model_shape == (128, 128, 32)


def test_only_a_field_of_view_model_needs_format_4(tmp_path):
    from nca_core.modelfile.registry import load

    assert load("hippocampus").format_version == 3  # still read by versions before field-of-view grids
    assert TrainSettings.for_preset("hippocampus").given_preprocessing is None


def test_locate_head_with_a_field_of_view_model_is_refused_once_for_a_batch(scanner_case, tmp_path, capsys):
    model = tmp_path / "p.m3dnca"
    assert run_cli(capsys, "new-model", "--preset", "prostate", "-o", model)[0] == 0
    sitk.WriteImage(scanner_case[2], str(tmp_path / "a.nii.gz"))
    sitk.WriteImage(scanner_case[2], str(tmp_path / "b.nii.gz"))
    code, _, err = run_cli(capsys, "segment", tmp_path / "a.nii.gz", tmp_path / "b.nii.gz", "--model", model,
                           "--locate", "head", "-o", tmp_path / "out")
    assert code == 1 and len(err) == 1 and "--locate head finds hippocampi" in err[0], err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize("fields, words", [
    ({"grid_shape": [128, 128]}, "grid_shape must be 3 positive sizes"),
    ({"grid_shape": [1024, 1024, 256], "orientation": "LPS"}, "at most 134,217,728 voxels"),
    ({"grid_shape": [128, 128, 32]}, "needs an orientation and no spacing"),
    ({"grid_shape": [128, 128, 32], "orientation": "LPS", "spacing": [1, 1, 3]}, "needs an orientation and no spacing"),
    ({"grid_shape": [128, 128, 32], "orientation": "LPS", "fov_fraction": [0.8, 0.8, 1.5]}, "fov_fraction must be"),
    ({"fov_fraction": [0.8, 0.8, 1.0]}, "fov_fraction needs grid_shape"),
])
def test_a_field_of_view_grid_that_cannot_work_is_refused(fields, words):
    with pytest.raises(ModelFileError, match=words):
        Preprocessing.from_dict(fields)


def test_a_field_of_view_model_is_never_routed_through_head_localisation(scanner_case):
    scan = scanner_case[2]
    assert not locates_hippocampi(scan, "auto", PROSTATE_GRID)
    with pytest.raises(NCAError, match="--locate head finds hippocampi"):
        locates_hippocampi(scan, "head", PROSTATE_GRID)


def test_training_a_few_steps_on_two_cases_records_the_grid(prostate_dir, tmp_path):
    """Without the location prior (the preset's default: test_location_prior) the file stays format 4."""
    trainer = two_case_trainer(prostate_dir, tmp_path / "run", iterations=2, location_prior=False)
    result = trainer.fit(log=False)
    assert result.iterations == 2 and len(trainer.train_cases) == 2
    model = load_model(tmp_path / "run" / "best.m3dnca")
    assert model.preprocessing == PROSTATE_GRID and model.config.labels == ["prostate"]
    assert model.format_version == 4 and load_model(tmp_path / "run" / "best.m3dnca").metadata()["format_version"] == "4"


def test_new_model_from_the_prostate_preset_carries_the_field_of_view(tmp_path, capsys):
    code, out, err = run_cli(capsys, "new-model", "--preset", "prostate", "-o", tmp_path / "p.m3dnca")
    assert code == 0, err
    assert load_model(tmp_path / "p.m3dnca").preprocessing.grid_shape == [128, 128, 32]


def test_a_scanner_size_scan_is_segmented_whole_onto_its_own_voxels(scanner_case, tmp_path, capsys):
    """An (untrained) prostate-preset model on a 320x320x24 RAI scan: no head route, outputs
    on the scan's grid, no thick-slice note (the model was trained on thick slices), and
    ``info`` names the field-of-view grid."""
    model = tmp_path / "p.m3dnca"
    assert run_cli(capsys, "new-model", "--preset", "prostate", "-o", model)[0] == 0
    scan = scanner_case[2]
    sitk.WriteImage(scan, str(tmp_path / "scan.nii.gz"))
    code, out, err = run_cli(capsys, "segment", tmp_path / "scan.nii.gz", "--model", model, "--runs", "1",
                             "-o", tmp_path / "out")
    assert code == 0, err
    report = json.loads((tmp_path / "out" / "scan_report.json").read_text())
    assert report["registration"] is None and report["thick_slices"] is None
    assert report["grid"]["model"]["orientation"] == "LPS" and report["grid"]["input"]["orientation"] == "RAI"
    for output in ("seg", "variance"):
        written = sitk.ReadImage(str(tmp_path / "out" / f"scan_{output}.nii.gz"))
        assert written.GetSize() == scan.GetSize() and written.GetDirection() == scan.GetDirection()
        assert np.allclose(written.GetOrigin(), scan.GetOrigin()) and np.allclose(written.GetSpacing(), scan.GetSpacing())
    code, out, _ = run_cli(capsys, "info", model)
    assert "128x128x32 voxels over the central 0.8x0.8x1 of the field of view" in out


def test_the_splits_hold_each_hospital_out_once_the_shipped_three_of_each_and_the_settings_are_the_presets(tmp_path):
    script = REPOSITORY / "scripts" / "prostate_site_splits.py"
    environment = dict(os.environ, PYTHONPATH=str(REPOSITORY))  # nca_core from this checkout
    subprocess.run([sys.executable, str(script), str(tmp_path)], check=True, capture_output=True, env=environment)
    held_out = []
    for site in ("BIDMC", "UCL", "RUNMC"):
        split = json.loads((tmp_path / f"split_{site}.json").read_text())
        assert not set(split["train"]) & set(split["validation"])
        assert len(split["train"]) + len(split["validation"]) == 38
        held_out += split["validation"]
    assert sorted(held_out) == [f"promise12_{n:02d}" for n in range(38)]
    shipped = json.loads((tmp_path / "split_shipped.json").read_text())
    assert not set(shipped["train"]) & set(shipped["validation"])
    assert sorted(shipped["train"] + shipped["validation"]) == sorted(held_out)
    for site in ("BIDMC", "UCL", "RUNMC"):  # every hospital is trained on and validated on
        site_cases = set(json.loads((tmp_path / f"split_{site}.json").read_text())["validation"])
        assert len(site_cases & set(shipped["validation"])) == 3
    if "prostate" in shipped_models():  # the shipped model was validated on exactly these cases
        assert load_model(shipped_models()["prostate"]).provenance["validation_cases"] == shipped["validation"]
    settings = TrainSettings.from_file(tmp_path / "prostate_settings.json")
    assert settings.location_prior and settings.preprocessing == PROSTATE_GRID.to_dict() and settings.ema_decay > 0
    assert settings.coarse_supervision == 1.0
