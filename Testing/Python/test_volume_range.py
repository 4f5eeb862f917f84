"""The plausible volume range: the anatomy a calibrated model's light also checks. An outline
whose volume (mL, on the scan's own voxels) is outside it is red whatever the runs' agreement
(a whole head given to the prostate model), the range is stored in the model file (format 7)
and ``m3dnca calibrate --volume-range`` sets it (or keeps the model's own)."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import SimpleITK as sitk

from nca_core.errors import ModelFileError
from nca_core.inference.limits import long_run_notice
from nca_core.inference.pipeline import segment_array, segment_image
from nca_core.inference.priorsize import at_prior, with_prior_probes
from nca_core.inference.settings import SegmentSettings
from nca_core.modelfile.bundle import load_model, save_model
from nca_core.modelfile.registry import load
from nca_core.network.config import preset
from nca_core.quality.nqm import Calibration, assess_segmentation
from nca_core.space.preprocessing import Preprocessing
from nca_core.training.data import find_pairs

from nca_helpers import header_and_data, run_cli, small_dataset
from prostate_helpers import case_paths
from test_training_input import assert_usage_error

CALIBRATION = Calibration(slope=-1.0, intercept=0.9, target_dice=0.7, margin=0.05, cases=10)
GOOD_NQM = 0.05  # predicted Dice 0.85: green
OUTSIDE = "is outside this model's plausible"


def ranged(bundle, volume_range):
    """``bundle`` whose calibration has ``volume_range`` (mL; None: no range)."""
    return replace(bundle, calibration=replace(bundle.calibration, volume_range_ml=volume_range))


@pytest.mark.parametrize("values", [[5], [300, 5], [5, 5], [-1, 5], [True, 5], "5,300", [5, float("inf")],
                                    [5, 300, 400]])
def test_a_range_that_cannot_be_a_volume_is_refused(values):
    with pytest.raises(ModelFileError, match="invalid calibration: volume_range_ml"):
        Calibration.from_dict(dict(CALIBRATION.to_dict(), volume_range_ml=values))


def test_outside_the_range_is_red_inside_it_the_runs_agreement_decides():
    limited = replace(CALIBRATION, volume_range_ml=[5.0, 300.0])
    for volume in (5.0, 40.0, 300.0, None):  # the bounds belong to the range; no volume, no check
        assert assess_segmentation(GOOD_NQM, 100, True, limited, volume).light == "green"
    for volume in (395.0, 2.0):
        quality = assess_segmentation(GOOD_NQM, 100, True, limited, volume)
        assert quality.light == "red" and quality.explanation == (
            f"the outline's volume ({volume:.1f} mL) {OUTSIDE} 5-300 mL (is this the scan and the model you meant?); "
            "by NQM alone: quality likely above the calibrated threshold")
    assert assess_segmentation(GOOD_NQM, 100, False, limited, 395.0).light == "red"  # no NQM verdict, still red
    assert assess_segmentation(GOOD_NQM, 100, True, CALIBRATION, 395.0).light == "green"  # no range
    assert assess_segmentation(GOOD_NQM, 0, True, limited, 0.0).explanation.startswith("the segmentation is empty")


def test_a_range_is_format_7_and_a_model_without_one_is_written_as_before(tmp_path):
    plain = ranged(with_prior_probes(load("prostate"), shifts=[[0, 0, 0]]), None)  # its sizes only: format 6
    save_model(plain, tmp_path / "plain.m3dnca")
    metadata = header_and_data(tmp_path / "plain.m3dnca")[0]["__metadata__"]
    assert metadata["format_version"] == "6" and "volume_range_ml" not in json.loads(metadata["calibration"])
    save_model(ranged(plain, [5.0, 300.0]), tmp_path / "ranged.m3dnca")
    assert load_model(tmp_path / "ranged.m3dnca").calibration.volume_range_ml == [5.0, 300.0]
    assert header_and_data(tmp_path / "ranged.m3dnca")[0]["__metadata__"]["format_version"] == "7"


def test_the_shipped_prostate_range_holds_every_labelled_gland(prostate_dir):
    """Every PROMISE12 gland, at the spacing its file carries (the teaching copy's nominal 1 x 1
    x 3 mm), is inside the shipped model's plausible range (so the range never reddens a real
    gland of the training data)."""
    low, high = load("prostate").calibration.volume_range_ml
    labels = [sitk.ReadImage(str(label)) for _, label in find_pairs(prostate_dir)]
    volumes = [np.count_nonzero(sitk.GetArrayViewFromImage(label)) * np.prod(label.GetSpacing()) / 1000
               for label in labels]
    assert len(volumes) == 38 and low < min(volumes) and max(volumes) < high, (min(volumes), max(volumes))


def test_on_a_real_case_the_same_outline_twice_as_large_per_axis_turns_red(prostate_dir):
    """Case 02 and the same scan with every spacing doubled (a field-of-view model sees the
    same grid, so the runs outline the same voxels): a range around the first volume leaves
    its light alone and reddens the eight times larger second."""
    image = sitk.ReadImage(str(case_paths(prostate_dir, 2)[0]))
    bundle, settings = at_prior(load("prostate"), 1.0), SegmentSettings(runs=2)
    first = segment_image(image, ranged(bundle, None), settings)
    volume = first.report()["volumes"]["total_ml"]
    limited = ranged(bundle, [volume / 2, volume * 2])
    inside = segment_image(image, limited, settings).quality
    assert (inside.light, inside.explanation) == (first.quality.light, first.quality.explanation)
    large = sitk.Image(image)
    large.SetSpacing([2 * s for s in image.GetSpacing()])
    second = segment_image(large, limited, settings)
    assert np.array_equal(second.ensemble.labels, first.ensemble.labels)
    assert second.quality.light == "red" and OUTSIDE in second.quality.explanation
    assert second.report()["volumes"]["total_ml"] == pytest.approx(8 * volume, rel=1e-6)
    assert second.report()["volumes"]["trusted"] is False


@pytest.mark.slow
def test_calibrate_stores_the_range_a_recalibration_keeps_it_and_none_drops_it(hippocampus_dir, tmp_path, capsys):
    data = small_dataset(hippocampus_dir, tmp_path / "data", 3)
    common = ["--data", data, "--runs", "2", "--cross-validate", "1", "--device", "cpu"]
    first, second = tmp_path / "first.m3dnca", tmp_path / "second.m3dnca"
    code, _, err = run_cli(capsys, "calibrate", "--model", "hippocampus", *common, "--volume-range", "0.5,20",
                           "-o", first)
    assert code == 0, err
    assert load_model(first).calibration.volume_range_ml == [0.5, 20.0]
    code, out, _ = run_cli(capsys, "info", first)
    assert code == 0 and "plausible volume: 0.5-20 mL (an outline outside it is red)" in out
    code, _, err = run_cli(capsys, "calibrate", "--model", first, *common, "-o", second)
    assert code == 0, err
    assert load_model(second).calibration.volume_range_ml == [0.5, 20.0]
    code, _, err = run_cli(capsys, "calibrate", "--model", second, *common, "--volume-range", "none",
                           "-o", tmp_path / "third.m3dnca")
    assert code == 0, err
    assert load_model(tmp_path / "third.m3dnca").calibration.volume_range_ml is None


@pytest.mark.parametrize("value, words", [("300,5", "a volume range is [low, high] in mL with 0 <= low < high"),
                                          ("5", "found [5.0]"), ("small,large", "two numbers in mL")])
def test_a_bad_volume_range_is_a_usage_error(tmp_path, capsys, value, words):
    assert_usage_error(capsys, ["calibrate", "--data", tmp_path, "--model", "prostate", "--volume-range", value,
                                "-o", tmp_path / "c.m3dnca"], words)


def test_a_field_of_view_model_is_announced_by_its_grid_and_runs_not_the_scan_size():
    """Its grid is the same for every scan: the estimate counts the grid's voxels and every run
    (the size probe's too), whatever the scan's size; a spacing model's counts the scan's."""
    field_of_view = Preprocessing(grid_shape=[128, 128, 32], fov_fraction=[0.8, 0.8, 1.0], orientation="LPS")
    def notice(shape, runs, threads):
        return long_run_notice(shape, (0.5, 0.5, 1.0), preset("prostate"), field_of_view, runs, None, threads)

    assert notice((512, 512, 200), 10, 2) is None and notice((64, 64, 8), 10, 2) is None
    assert notice((512, 512, 200), 18, 1) == notice((64, 64, 8), 18, 1) == (
        "18 runs on the model's 128x128x32 grid will take about 2 min on 1 CPU thread(s)")
    assert long_run_notice((512, 512, 200), (0.5, 0.5, 1.0), preset("hippocampus"),
                           Preprocessing(spacing=[1.0, 1.0, 1.0]), 10, None, 1).startswith("large input (512x512x200")


def test_an_array_without_spacing_is_judged_only_where_the_model_records_one(prostate_dir, hippocampus_dir):
    """A raw array: the hippocampus model records 1 mm, so its outline has a volume and a range
    that excludes it turns the light red; the prostate model records no spacing (a field-of-view
    grid), so its outline's volume is unknown and not judged."""
    hippocampus = load("hippocampus")
    crop = sitk.GetArrayFromImage(sitk.ReadImage(str(find_pairs(hippocampus_dir)[0][0]))).transpose(2, 1, 0)
    result = segment_array(crop, ranged(hippocampus, [100.0, 200.0]), SegmentSettings(runs=2, side="left"))
    assert result.quality.light == "red" and OUTSIDE in result.quality.explanation
    prostate = at_prior(load("prostate"), 1.0)
    grid = sitk.GetArrayFromImage(sitk.ReadImage(str(case_paths(prostate_dir, 2)[0]))).transpose(2, 1, 0)
    plain = segment_array(grid, ranged(prostate, None), SegmentSettings(runs=2))
    limited = segment_array(grid, ranged(prostate, [0.0, 0.001]), SegmentSettings(runs=2))
    assert (limited.quality.light, limited.quality.explanation) == (plain.quality.light, plain.quality.explanation)
    assert OUTSIDE not in limited.quality.explanation


@pytest.mark.slow
def test_each_side_of_a_head_is_judged_by_its_volume_on_the_scan(wholehead_dir):
    """Colin 27 with the hippocampus model and a range around the left side's volume: the left
    side keeps its light, the right one (a range it misses) turns red quoting its own volume."""
    head = sitk.ReadImage(str(wholehead_dir / "ch2.nii.gz"))
    hippocampus, settings = load("hippocampus"), SegmentSettings(runs=2)
    first = segment_image(head, hippocampus, settings)
    volumes = {side.side: side.volume.total.ml for side in first.sides}
    left, right = volumes["left"], volumes["right"]
    apart = abs(left - right)
    assert apart > 0.003, volumes  # 3 voxels of 1 mm: a range can then hold one side and not the other
    limited = segment_image(head, ranged(hippocampus, [left - apart / 3, left + apart / 3]), settings)
    lights = {side.side: side.quality for side in limited.sides}
    original = {side.side: side.quality for side in first.sides}
    assert (lights["left"].light, lights["left"].explanation) == (original["left"].light, original["left"].explanation)
    assert lights["right"].light == "red" and f"({right:.1f} mL) {OUTSIDE}" in lights["right"].explanation


@pytest.mark.slow
def test_a_whole_head_given_to_the_prostate_model_is_red(wholehead_dir, tmp_path, capsys):
    """Colin 27's head through the shipped prostate model (whose NQM alone called it green at
    4 runs): the outline is far larger than any prostate, so the light is red and the volume is
    marked untrusted."""
    code, _, err = run_cli(capsys, "segment", wholehead_dir / "ch2.nii.gz", "--model", "prostate", "--runs", "2",
                           "-o", tmp_path)
    assert code == 0, err
    report = json.loads((tmp_path / "ch2_report.json").read_text())
    assert report["quality"] == "red" and OUTSIDE in report["explanation"], report["explanation"]
    assert report["volumes"]["total_ml"] > load("prostate").calibration.volume_range_ml[1]
    assert report["volumes"]["trusted"] is False
