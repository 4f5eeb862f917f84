"""The model's grid: inputs stored with other axes or another spacing are brought to the grid
the model was trained on, and the outputs land back on the input's own grid."""
from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from nca_core.errors import InputImageError, ModelFileError
from nca_core.space.grid import ModelGrid, common_grid, orientation_code
from nca_core.space.imaging import read_volume
from nca_core.quality.metrics import mean_foreground_dice
from nca_core.inference.settings import SegmentSettings
from nca_core.inference.pipeline import segment_array
from nca_core.space.preprocessing import Preprocessing
from nca_core.modelfile.registry import load
from nca_core.training.data import find_pairs, load_cases
from nca_core.training.evaluate import evaluate_cases
from nca_core.training.trainer import Trainer

from nca_helpers import quick_settings, run_cli

RAS_GRID = Preprocessing(spacing=[1.0, 1.0, 1.0], orientation="RAS")
IDENTITY = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
RAS = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)
SWAPPED = (0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0)  # voxel X runs along the body's S axis


def tilted(degrees: float):
    angle = np.deg2rad(degrees)
    return tuple(np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]]).ravel())


@pytest.mark.parametrize("direction", [IDENTITY, RAS, SWAPPED, tilted(10)])
def test_turning_the_axes_is_exact_both_ways(direction):
    array = np.random.default_rng(0).random((20, 30, 25), dtype=np.float32)
    grid = ModelGrid(array.shape, (1.0, 1.0, 1.0), direction, RAS_GRID)
    assert not grid.resampled
    assert grid.reoriented == (orientation_code(direction) != "RAS")
    on_model = grid.to_model(array)
    assert np.array_equal(grid.to_input(on_model), array)


def test_lps_input_is_mirrored_in_x_and_y_for_a_ras_model():
    array = np.random.default_rng(1).random((8, 9, 10), dtype=np.float32)
    grid = ModelGrid(array.shape, (1.0, 1.0, 1.0), IDENTITY, RAS_GRID)
    assert np.array_equal(grid.to_model(array), array[::-1, ::-1, :])
    assert grid.change.to_dict()["input"] == {"spacing": [1.0, 1.0, 1.0], "orientation": "LPS"}


def test_swapped_axes_are_put_back_in_the_model_order():
    array = np.random.default_rng(2).random((8, 9, 10), dtype=np.float32)
    grid = ModelGrid(array.shape, (1.0, 1.0, 1.0), SWAPPED, RAS_GRID)
    assert grid.model_shape == (10, 9, 8)


def test_resampling_spans_the_same_extent_and_keeps_a_ramp():
    shape, spacing = (40, 40, 10), (0.5, 0.5, 2.0)
    grid = ModelGrid(shape, spacing, RAS, RAS_GRID)
    assert grid.resampled and not grid.reoriented
    assert grid.model_shape == (20, 20, 20)
    x = np.arange(shape[0], dtype=np.float32)[:, None, None] * spacing[0]
    ramp = np.broadcast_to(x, shape).astype(np.float32)  # mm along X: linear, so interpolation keeps it
    on_model = grid.to_model(ramp)
    centres = (np.arange(20) + 0.5) * 1.0 - 0.25  # 1 mm voxels, first edge on the first 0.5 mm voxel's edge
    assert np.allclose(on_model[:, 5, 5], centres, atol=1e-4)
    back = grid.to_input(on_model)
    assert back.shape == shape
    assert np.allclose(back[1:-1], ramp[1:-1], atol=1e-4)  # away from the border voxels


def test_without_geometry_or_grid_nothing_changes():
    array = np.zeros((5, 6, 7), dtype=np.float32)
    unknown = ModelGrid(array.shape, None, None, RAS_GRID)
    own = ModelGrid(array.shape, (0.7, 0.7, 3.0), IDENTITY, Preprocessing())
    assert unknown.change is None and not unknown.changes_grid
    assert not own.changes_grid and own.change.model_spacing == pytest.approx((0.7, 0.7, 3.0))
    assert unknown.to_model(array) is array and own.to_input(array) is array


@pytest.mark.parametrize("spacing, direction, words", [
    ((1.0, 0.0, 1.0), IDENTITY, "spacing"),
    ((1.0, float("nan"), 1.0), IDENTITY, "spacing"),
    ((1.0, 1.0, 1.0), (1, 0, 0, 1, 0, 0, 0, 0, 1), "direction"),
])
def test_impossible_geometry_is_an_input_error(spacing, direction, words):
    with pytest.raises(InputImageError, match=words):
        ModelGrid((4, 4, 4), spacing, direction, RAS_GRID)


@pytest.mark.parametrize("fields, words", [
    ({"spacing": [1.0, 1.0]}, "spacing"),
    ({"spacing": [1.0, 0.0, 1.0]}, "spacing"),
    ({"orientation": "RRS"}, "orientation"),
    ({"orientation": "ras"}, "orientation"),
])
def test_model_file_grid_is_checked(fields, words):
    with pytest.raises(ModelFileError, match=words):
        Preprocessing(**fields).validate()


def test_shipped_models_record_their_training_grid():
    for name in ("hippocampus", "hippocampus-2class"):
        preprocessing = load(name).preprocessing
        assert preprocessing.spacing == [1.0, 1.0, 1.0] and preprocessing.orientation == "RAS"


# --- the shipped model on one real case stored in other ways ---------------------------

@pytest.fixture(scope="module")
def hippocampus_case(hippocampus_dir):
    image = read_volume(hippocampus_dir / "imagesTr" / "hippocampus_011.nii.gz")
    label = read_volume(hippocampus_dir / "labelsTr" / "hippocampus_011.nii.gz").array
    assert image.reference.GetDirection() == pytest.approx(RAS) and image.spacing == pytest.approx((1, 1, 1))
    return image.array, (label > 0).astype(np.uint8)


def _labels(array, spacing, direction, runs=4):
    return segment_array(array, load("hippocampus"), SegmentSettings(model="hippocampus", runs=runs, seed=0),
                         spacing=spacing, direction=direction).ensemble.labels


def test_mirrored_storage_gives_the_same_segmentation(hippocampus_case):
    image, label = hippocampus_case
    native = _labels(image, (1.0, 1.0, 1.0), RAS)
    assert mean_foreground_dice(native, label, 1) > 0.85
    mirrored = _labels(np.ascontiguousarray(image[::-1, ::-1]), (1.0, 1.0, 1.0), IDENTITY)
    assert np.array_equal(mirrored[::-1, ::-1], native)


def test_finer_voxels_are_resampled_to_the_model_grid(hippocampus_case):
    image, label = hippocampus_case
    fine = sitk.GetImageFromArray(image.transpose(2, 1, 0))
    fine.SetDirection(RAS)
    reference = sitk.Image([int(round(s / 0.7)) for s in fine.GetSize()], sitk.sitkFloat32)
    reference.SetSpacing((0.7, 0.7, 0.7))
    reference.SetDirection(RAS)
    reference.SetOrigin(tuple(np.array(RAS).reshape(3, 3) @ np.full(3, -0.15)))
    resample = lambda img, how: sitk.GetArrayFromImage(sitk.Resample(img, reference, sitk.Transform(), how)).transpose(2, 1, 0)  # noqa: E731
    fine_image = resample(fine, sitk.sitkLinear)
    fine_label_image = sitk.GetImageFromArray(label.transpose(2, 1, 0).copy())
    fine_label_image.SetDirection(RAS)
    fine_label = resample(fine_label_image, sitk.sitkNearestNeighbor)
    labels = _labels(fine_image, (0.7, 0.7, 0.7), RAS)
    assert labels.shape == fine_image.shape
    assert mean_foreground_dice(labels, fine_label, 1) > 0.85
    as_if_1mm = _labels(fine_image, None, None)  # the model's own grid assumed: what models without one did
    assert mean_foreground_dice(as_if_1mm, fine_label, 1) < mean_foreground_dice(labels, fine_label, 1) - 0.05


def test_command_line_reports_the_grid_change(hippocampus_case, hippocampus_dir, tmp_path, capsys):
    image = sitk.ReadImage(str(hippocampus_dir / "imagesTr" / "hippocampus_011.nii.gz"))
    lps = sitk.DICOMOrient(image, "LPS")
    source = tmp_path / "in" / "case_lps.nii.gz"
    source.parent.mkdir()
    sitk.WriteImage(lps, str(source))
    code, _, err = run_cli(capsys, "segment", source, "--runs", "4", "-o", tmp_path / "out")
    assert code == 0, err
    report = json.loads((tmp_path / "out" / "case_lps_report.json").read_text())
    assert report["grid"]["reoriented"] and not report["grid"]["resampled"]
    assert report["grid"]["input"]["orientation"] == "LPS" and report["grid"]["model"]["orientation"] == "RAS"
    written = sitk.ReadImage(str(tmp_path / "out" / "case_lps_seg.nii.gz"))
    assert written.GetDirection() == pytest.approx(lps.GetDirection())
    back = sitk.GetArrayFromImage(sitk.DICOMOrient(written, "RAS")).transpose(2, 1, 0)
    assert mean_foreground_dice(back, hippocampus_case[1], 1) > 0.85


# --- training and evaluation on the model's grid ---------------------------------------

def test_common_grid_is_the_most_common_orientation_and_the_median_spacing():
    geometries = [((1.0, 1.0, 1.0), RAS), ((0.8, 0.9, 1.2), RAS), ((3.0, 1.0, 1.0), SWAPPED)]
    spacing, code = common_grid(geometries)
    assert code == "RAS"
    assert spacing == pytest.approx([1.0, 1.0, 1.2])  # the swapped case counts as 1x1x3 in RAS order


def _store_lps(hippocampus_dir, root, count):
    """An MSD-style folder of the first ``count`` cases, the second one stored LPS-first."""
    for sub in ("imagesTr", "labelsTr"):
        (root / sub).mkdir(parents=True)
    for index, (image, label) in enumerate(find_pairs(hippocampus_dir)[:count]):
        for source, sub in ((image, "imagesTr"), (label, "labelsTr")):
            volume = sitk.ReadImage(str(source))
            sitk.WriteImage(sitk.DICOMOrient(volume, "LPS") if index == 1 else volume, str(root / sub / source.name))
    return root


def test_training_records_the_grid_and_brings_every_case_to_it(hippocampus_dir, tmp_path):
    data = _store_lps(hippocampus_dir, tmp_path / "data", 3)
    trainer = Trainer(data, tmp_path / "run", quick_settings(validation_fraction=0.0), device="cpu")
    trainer.load_data()
    assert trainer.preprocessing.spacing == [1.0, 1.0, 1.0] and trainer.preprocessing.orientation == "RAS"
    originals = {case.name: case for case in load_cases(find_pairs(hippocampus_dir)[:3], True)}
    for case in trainer.train_cases:
        assert np.array_equal(case.image, originals[case.name].image), case.name
        assert np.array_equal(case.label, originals[case.name].label), case.name
    assert trainer.bundle({}).preprocessing == trainer.preprocessing


def test_evaluation_scores_each_case_on_its_own_voxels(hippocampus_dir, tmp_path):
    data = _store_lps(hippocampus_dir, tmp_path / "data", 2)
    stored, original = (load_cases(find_pairs(root)[1:2], True)[0] for root in (data, hippocampus_dir))
    assert orientation_code(stored.volume.reference.GetDirection()) == "LPS"
    bundle = load("hippocampus")
    rows = evaluate_cases(bundle, [stored, original], SegmentSettings(runs=2), show_progress=False)
    assert rows[0].dice == pytest.approx(rows[1].dice) and rows[0].dice > 0.85
    assert rows[0].nqm == pytest.approx(rows[1].nqm)


def test_a_volume_too_small_on_the_model_grid_says_so():
    array = np.random.default_rng(3).random((20, 20, 20), dtype=np.float32)  # 4 mm across at 0.2 mm
    with pytest.raises(InputImageError, match=r"after resampling to the model's 1x1x1 mm grid"):
        segment_array(array, load("hippocampus"), SegmentSettings(model="hippocampus", runs=2), spacing=(0.2, 0.2, 0.2),
                      direction=RAS)


def test_info_names_the_input_grid(capsys):
    code, out, _ = run_cli(capsys, "info", "hippocampus")
    assert code == 0 and "input grid: 1x1x1 mm, RAS orientation" in out
