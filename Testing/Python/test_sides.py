"""Crops of either side: the model learned left hippocampi; right ones are mirrored for it."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import SimpleITK as sitk

from nca_core.inference.ensemble import combine, run_ensemble
from nca_core.errors import ModelFileError
from nca_core.quality.metrics import mean_foreground_dice
from nca_core.inference.pipeline import segment_array
from nca_core.inference.settings import SegmentSettings
from nca_core.space.preprocessing import Preprocessing
from nca_core.space.regions import box_grid
from nca_core.modelfile.registry import load
from nca_core.inference.sides import choose_side

from nca_helpers import REPOSITORY


@pytest.fixture(scope="module")
def bundle():
    return load("hippocampus")


def crop_and_label(hippocampus_dir, case):
    image = sitk.ReadImage(str(hippocampus_dir / "imagesTr" / f"{case}.nii.gz"))
    label = sitk.GetArrayFromImage(sitk.ReadImage(str(hippocampus_dir / "labelsTr" / f"{case}.nii.gz")))
    return image, (label.transpose(2, 1, 0) > 0).astype(np.uint8)


def segment(image: sitk.Image, array: np.ndarray, bundle, **options):
    return segment_array(array, bundle, SegmentSettings(model="hippocampus", device="cpu", **options),
                         spacing=image.GetSpacing(), direction=image.GetDirection())


def mirrored_against_stored(bundle, hippocampus_dir, cases):
    """Per case: (Dice as stored, Dice mirrored, side chosen as stored, side chosen mirrored)."""
    rows = []
    for case in cases:
        image, label = crop_and_label(hippocampus_dir, case)
        array = sitk.GetArrayFromImage(image).transpose(2, 1, 0).astype(np.float32)
        stored = segment(image, array, bundle)
        flipped = segment(image, np.ascontiguousarray(array[::-1]), bundle)  # a right hippocampus, geometry kept
        rows.append((mean_foreground_dice(stored.ensemble.labels, label, 1),
                     mean_foreground_dice(flipped.ensemble.labels, np.ascontiguousarray(label[::-1]), 1),
                     stored.sides[0].side, flipped.sides[0].side))
    return rows


def check_mirrored_scores_the_same(rows):
    stored, flipped = np.array([r[0] for r in rows]), np.array([r[1] for r in rows])
    assert [r[2] for r in rows] == ["left"] * len(rows)
    assert [r[3] for r in rows] == ["right"] * len(rows)
    assert abs(flipped.mean() - stored.mean()) < 0.005, (stored.mean(), flipped.mean())
    assert stored.mean() > 0.85


def test_mirrored_validation_crops_score_the_same(bundle, hippocampus_dir):
    check_mirrored_scores_the_same(mirrored_against_stored(bundle, hippocampus_dir, bundle.provenance["validation_cases"][:3]))


@pytest.mark.slow
def test_mirrored_validation_crops_score_the_same_all(bundle, hippocampus_dir):
    check_mirrored_scores_the_same(mirrored_against_stored(bundle, hippocampus_dir, bundle.provenance["validation_cases"]))


def test_right_sample_crop_is_found_right_and_green(bundle):
    image = sitk.ReadImage(str(REPOSITORY / "Resources" / "SampleData" / "mni152_hippocampus_right.nii.gz"))
    result = segment(image, sitk.GetArrayFromImage(image).transpose(2, 1, 0), bundle)
    assert result.sides[0].side == "right" and result.sides[0].reason.startswith("auto: NQM")
    assert result.quality.light == "green"
    assert result.labels == {1: "right hippocampus"}
    as_left = segment(image, sitk.GetArrayFromImage(image).transpose(2, 1, 0), bundle, side="left")
    assert as_left.quality.light == "red" and as_left.nqm > 3 * result.nqm


def test_given_side_is_used_without_a_probe():
    def no_probe(mirrored):
        raise AssertionError("the probe must not run when the side is given")

    assert choose_side("right", "left", no_probe).mirrored
    assert not choose_side("left", "left", no_probe).mirrored
    unknown = choose_side("auto", None, no_probe)
    assert unknown.side is None and not unknown.mirrored


def test_probe_runs_are_the_first_runs_of_the_ensemble(bundle, hippocampus_dir):
    image, _ = crop_and_label(hippocampus_dir, "hippocampus_001")
    array = sitk.GetArrayFromImage(image).transpose(2, 1, 0).astype(np.float32)
    model = bundle.build()
    whole = run_ensemble(model, array, bundle.preprocessing, runs=10, postprocessing=bundle.postprocessing)
    first = run_ensemble(model, array, bundle.preprocessing, runs=2)
    rest = run_ensemble(model, array, bundle.preprocessing, runs=8, first_run=2)
    merged = combine(first, rest, bundle.postprocessing)
    np.testing.assert_allclose(merged.probability, whole.probability, atol=1e-6)
    np.testing.assert_allclose(merged.std, whole.std, atol=1e-5)
    assert np.array_equal(merged.labels, whole.labels) and merged.runs == 10
    assert merged.nqm == pytest.approx(whole.nqm, rel=1e-5)
    again = run_ensemble(model, array, bundle.preprocessing, runs=8)  # runs 0-7: not the same runs
    assert not np.allclose(again.probability, rest.probability, atol=1e-4)
    via_pipeline = segment(image, array, bundle)  # auto side: 2 probe runs each way, then 8 more
    np.testing.assert_allclose(via_pipeline.ensemble.probability, whole.probability, atol=1e-6)


def test_mirrored_box_is_the_mirror_image_of_the_plain_box():
    rng = np.random.default_rng(0)
    scan = sitk.GetImageFromArray(rng.random((40, 60, 50)).astype(np.float32))
    scan.SetDirection((-1, 0, 0, 0, -1, 0, 0, 0, 1))
    centre = scan.TransformContinuousIndexToPhysicalPoint((24.5, 30.0, 20.0))
    size, inside = (11, 13, 9), (5, 6, 4)
    args = (centre, np.eye(3), "RAS", (1.0, 1.0, 1.0), size)
    plain = sitk.Resample(scan, box_grid(*args, inside, mirrored=False))
    mirrored = sitk.Resample(scan, box_grid(*args, (size[0] - 1 - inside[0],) + inside[1:], mirrored=True))
    plain_xyz = sitk.GetArrayFromImage(plain).transpose(2, 1, 0)
    mirrored_xyz = sitk.GetArrayFromImage(mirrored).transpose(2, 1, 0)
    np.testing.assert_allclose(mirrored_xyz, plain_xyz[::-1], atol=1e-6)


@pytest.mark.parametrize("fields, words", [
    ({"side": "up", "orientation": "RAS"}, "side must be left or right"),
    ({"side": "left"}, "side needs the orientation"),
])
def test_model_file_side_is_checked(fields, words):
    with pytest.raises(ModelFileError, match=words):
        Preprocessing.from_dict(dict(Preprocessing().to_dict(), **fields))


def test_shipped_models_record_the_left_side():
    for name in ("hippocampus", "hippocampus-2class"):
        assert load(name).preprocessing.side == "left"


def test_model_without_a_side_is_never_mirrored(bundle, hippocampus_dir):
    image, _ = crop_and_label(hippocampus_dir, "hippocampus_001")
    array = sitk.GetArrayFromImage(image).transpose(2, 1, 0).astype(np.float32)
    unsided = replace(bundle, preprocessing=replace(bundle.preprocessing, side=None))
    result = segment(image, np.ascontiguousarray(array[::-1]), unsided, runs=2)
    assert result.sides[0].side is None and "no side" in result.sides[0].reason
