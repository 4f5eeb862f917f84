"""The location prior's shifts: moves of its centre stored in the model file, probed on every scan
before the sizes (the place whose runs agree most wins), refused where they cannot work."""
from __future__ import annotations

import csv
import dataclasses
import json

import numpy as np
import pytest
import SimpleITK as sitk

from nca_core.errors import ModelFileError
from nca_core.inference import pipeline
from nca_core.inference.pipeline import segment_array
from nca_core.inference.priorsize import (PriorChoice, at_prior, checked_if_moved, choose_prior, probe_count,
                                          with_prior_probes)
from nca_core.inference.settings import SegmentSettings
from nca_core.inference.sides import PROBE_RUNS
from nca_core.modelfile.bundle import load_model, save_model
from nca_core.modelfile.registry import load
from nca_core.quality.metrics import dice
from nca_core.quality.nqm import Calibration, Quality
from nca_core.space.preprocessing import Preprocessing

from nca_helpers import header_and_data, run_cli, write_volume
from prostate_helpers import case_paths, xyz
from test_location_prior import PRIOR, SMALL_GRID, two_channel_model

UP, STILL, DOWN = (0.0, -0.15, 0.0), (0.0, 0.0, 0.0), (0.0, 0.15, 0.0)
MOVED_UP = ("the structure was looked for away from where the model expects it (moved 0.15 of the grid towards "
            "anterior): check that the outline lies on the structure")  # on an LPS grid


@pytest.mark.parametrize("shifts", [[], [[0, 0]], [[0.6, 0, 0], [0, 0, 0]], [[0, 0, 0], [0, 0, 0]], "0,0,0",
                                    [[True, 0, 0], [0, 0, 0]], [[0, 0.1, 0]], [[0, i / 100, 0] for i in range(9)]])
def test_shifts_that_cannot_be_probed_are_refused(shifts):
    with pytest.raises(ModelFileError, match="shifts must be 1 to 8 different"):
        Preprocessing.from_dict(dict(SMALL_GRID.to_dict(), location_prior=dict(PRIOR, shifts=shifts)))


def test_shifts_need_a_model_without_a_side_and_a_valid_command_line(tmp_path, capsys):
    fields = dict(SMALL_GRID.to_dict(), side="left", location_prior=dict(PRIOR, shifts=[[0, 0.1, 0], [0, 0, 0]]))
    with pytest.raises(ModelFileError, match="a model with a side cannot have them"):
        Preprocessing.from_dict(fields)
    for bad in ("0,0.1", "0,up,0", ";"):
        with pytest.raises(SystemExit):
            run_cli(capsys, "evaluate", "--data", tmp_path, "--model", "prostate", "--prior-shifts", bad,
                    "-o", tmp_path / "out")
        assert "shifts are x,y,z moves separated by semicolons" in capsys.readouterr().err
    code, _, err = run_cli(capsys, "evaluate", "--data", tmp_path, "--model", "hippocampus", "--prior-shifts",
                           "0,0.1,0;0,0,0", "-o", tmp_path / "out")
    assert code != 0 and len(err) == 1 and "need a model with a location prior" in err[0]


def test_a_model_with_shifts_is_format_9_and_info_lists_them(tmp_path, capsys):
    shifted = with_prior_probes(two_channel_model(), [1.0, 1.3], [list(UP), list(STILL)])
    save_model(shifted, tmp_path / "shifted.m3dnca")
    assert load_model(tmp_path / "shifted.m3dnca").preprocessing.location_prior == dict(
        PRIOR, sizes=[1.0, 1.3], shifts=[list(UP), list(STILL)])
    assert header_and_data(tmp_path / "shifted.m3dnca")[0]["__metadata__"]["format_version"] == "9"
    code, out, _ = run_cli(capsys, "info", tmp_path / "shifted.m3dnca")
    assert code == 0 and "prior shifts: centre moved by [+0, -0.15, +0; +0, +0, +0] of the grid" in out
    unshifted = with_prior_probes(shifted, shifts=[[0, 0, 0]])
    assert unshifted.preprocessing.location_prior == dict(PRIOR, sizes=[1.0, 1.3]) and unshifted.format_version == 6


def test_a_shifted_prior_moves_its_centre_and_stays_on_the_grid():
    moved = at_prior(two_channel_model(), 1.5, (0.1, -0.5, 0.0)).preprocessing.location_prior
    assert moved["centre"] == pytest.approx([0.6, 0.0, 0.5]) and moved["spread"] == pytest.approx([0.15, 0.15, 0.3])


@pytest.mark.parametrize("up_nqm, chosen", [(0.07, UP), (0.08, STILL)])
def test_shifts_are_probed_at_the_own_size_then_sizes_at_the_chosen_shift(up_nqm, chosen):
    """A move is taken only when its NQM is under MOVE_GAIN (0.75) times the own place's (0.10).
    The probe here is a stand-in for the runs (it returns given NQMs; control flow only)."""
    nqms = {(UP, 1.0): up_nqm, (STILL, 1.0): 0.10, (DOWN, 1.0): 0.30, (UP, 1.3): 0.06, (STILL, 1.3): 0.09}
    probed = []

    def stand_in_probe(shift, factor: float) -> float:
        probed.append((shift, factor))
        return nqms[shift, factor]

    bundle = with_prior_probes(two_channel_model(), [1.0, 1.3], [list(UP), list(STILL), list(DOWN)])
    choice = choose_prior(bundle, stand_in_probe)
    assert (choice.shift, choice.factor) == (chosen, 1.3)
    assert probed == [(UP, 1.0), (STILL, 1.0), (DOWN, 1.0), (chosen, 1.0), (chosen, 1.3)]
    verdict = "centre moved by [+0, -0.15, +0]" if chosen == UP else "centre kept"
    assert verdict in choice.reason and f"[+0, -0.15, +0]: {up_nqm:.3f}" in choice.reason
    assert probe_count(bundle.preprocessing.location_prior) == 4  # the chosen shift's own size is probed once


@pytest.mark.parametrize("light, after", [("green", "yellow"), ("unknown", "yellow"), ("yellow", "yellow"),
                                          ("red", "red")])
def test_a_moved_prior_makes_the_light_at_most_yellow_and_says_where_it_looked(light, after):
    quality = Quality(light, 0.8, "the light's own reason")
    assert checked_if_moved(quality, None, "LPS") is quality
    assert checked_if_moved(quality, PriorChoice(1.3, STILL, "centre kept"), "LPS") is quality
    moved = checked_if_moved(quality, PriorChoice(1.0, UP, "centre moved"), "LPS")
    assert moved.light == after and moved.predicted_dice == 0.8
    own = ("by NQM alone: " if light in ("green", "unknown") else "") + "the light's own reason"
    assert moved.explanation == f"{MOVED_UP}; {own}" and moved.caveats == (MOVED_UP,)
    sideways = checked_if_moved(quality, PriorChoice(1.0, (0.1, 0.0, -0.2), ""), "RAS").explanation
    assert "(moved 0.1 of the grid towards right, 0.2 of the grid towards inferior)" in sideways
    assert "(moved 0.1 of the grid towards left, 0.2 of the grid towards inferior)" in checked_if_moved(
        quality, PriorChoice(1.0, (0.1, 0.0, -0.2), ""), "LPS").explanation


def test_a_segmentation_whose_prior_moved_is_never_green(monkeypatch):
    """The prior's chooser is a stand-in here (it always moves the prior: control flow only); the
    calibration predicts Dice 0.95 whatever the NQM, so the light would be green."""
    bundle = dataclasses.replace(with_prior_probes(two_channel_model(), [1.0], [list(UP), list(STILL)]),
                                 calibration=Calibration(slope=0.0, intercept=0.95, target_dice=0.7))
    image = np.random.default_rng(5).random((32, 32, 16)).astype(np.float32)
    assert segment_array(image, at_prior(bundle, 1.0), SegmentSettings(runs=2)).quality.light == "green"
    monkeypatch.setattr(pipeline, "choose_prior", lambda model, probe: PriorChoice(1.0, UP, "stand-in: moved"))
    result = segment_array(image, bundle, SegmentSettings(runs=2))
    assert result.quality.light == "yellow" and result.sides[0].quality.light == "yellow"
    assert result.report()["explanation"].startswith("the structure was looked for away")
    assert result.report()["sides"][0]["volume"]["light"] == "yellow"
    assert result.report()["caveats"] == result.report()["sides"][0]["caveats"] == [MOVED_UP]


def test_the_case_line_and_summary_say_why_the_light_is_yellow(tmp_path, capsys, monkeypatch):
    """A batch whose prior is moved for its first case (the same stand-in chooser as above): that
    case's lines say why its light is yellow, summary.csv has it in ``caveats``, also when rebuilt
    from the reports (an older report without ``caveats`` gives an empty one); a case whose place
    was kept has no caveat."""
    bundle = dataclasses.replace(with_prior_probes(two_channel_model(), [1.0], [list(UP), list(STILL)]),
                                 calibration=Calibration(slope=0.0, intercept=0.95, target_dice=0.7))
    save_model(bundle, tmp_path / "model.m3dnca")
    rng = np.random.default_rng(6)
    inputs = [write_volume(tmp_path / f"case{i}.nii.gz", rng.random((32, 32, 16)).astype(np.float32)) for i in (1, 2)]
    moved = iter([UP, STILL])
    monkeypatch.setattr(pipeline, "choose_prior", lambda model, probe: PriorChoice(1.0, next(moved), "stand-in"))
    code, out, err = run_cli(capsys, "segment", *inputs, "-o", tmp_path / "out", "--model", tmp_path / "model.m3dnca",
                             "--runs", "2")
    assert code == 0, err
    assert [line for line in out.splitlines() if ": caveat: " in line] == [f"case1: caveat: {MOVED_UP}"]
    written = _caveats(tmp_path / "out" / "summary.csv")
    assert written == {"case1": ("yellow", MOVED_UP), "case2": ("green", "")}
    assert run_cli(capsys, "summary", tmp_path / "out")[0] == 0
    assert _caveats(tmp_path / "out" / "summary.csv") == written
    report = tmp_path / "out" / "case1_report.json"
    report.write_text(json.dumps({k: v for k, v in json.loads(report.read_text()).items() if k != "caveats"}))
    assert run_cli(capsys, "summary", tmp_path / "out")[0] == 0
    assert _caveats(tmp_path / "out" / "summary.csv") == dict(written, case1=("yellow", ""))


def _caveats(summary) -> dict:
    """case -> (light, caveats) of a summary.csv."""
    return {row["case"]: (row["quality"], row["caveats"]) for row in csv.DictReader(summary.open(newline=""))}


@pytest.mark.parametrize("sizes, probes", [([1.0], 2), ([1.5], 2), ([1.0, 1.3], 3), ([1.15, 1.3], 4)])
@pytest.mark.parametrize("runs", [1, 2, 3])
def test_progress_counts_every_run_and_the_chosen_probe_starts_the_ensemble(runs, sizes, probes):
    """2 shifts, then the sizes at the chosen one: the own size is probed once, and a single size
    is the size the shifts are probed at."""
    bundle = with_prior_probes(two_channel_model(), sizes, [list(UP), list(STILL)])
    image = np.random.default_rng(5).random((32, 32, 16)).astype(np.float32)
    reported = []
    result = segment_array(image, bundle, SegmentSettings(runs=runs),
                           progress=lambda done, total: reported.append((done, total)))
    total = runs + probes * PROBE_RUNS - (PROBE_RUNS if runs >= PROBE_RUNS else 0)
    assert probe_count(bundle.preprocessing.location_prior) == probes
    assert reported[-1] == (total, total) and all(t == total for _, t in reported)
    assert result.report()["prior"]["factor"] == result.prior.factor and result.prior.factor in sizes
    alone = segment_array(image, at_prior(bundle, result.prior.factor, result.prior.shift), SegmentSettings(runs=runs))
    np.testing.assert_allclose(result.ensemble.probability, alone.ensemble.probability, atol=1e-6)


@pytest.mark.slow
def test_a_gland_off_the_field_of_views_centre_is_found_by_the_shifts(prostate_dir):
    """A held-out case (RUNMC 22) whose scan is moved 0.2 of the grid along y (wrapped round), so
    that its gland lies off the centre as a coil-displaced gland does: the shipped model at its own
    place misses it (Dice 0.00 measured, 4 runs); probing the place finds it (0.89), and the
    explanation asks to check the outline's place."""
    image_path, label_path = case_paths(prostate_dir, 22)
    image, label = sitk.ReadImage(str(image_path)), xyz(sitk.ReadImage(str(label_path))) > 0
    roll = round(-0.2 * image.GetSize()[1])
    array, label = np.roll(xyz(image), roll, axis=1), np.roll(label, roll, axis=1)
    geometry = dict(spacing=image.GetSpacing(), direction=image.GetDirection())
    shipped, settings = load("prostate"), SegmentSettings(runs=4)
    own = segment_array(array, at_prior(shipped, 1.0), settings, **geometry)
    found = segment_array(array, with_prior_probes(shipped, [1.0], [list(UP), list(STILL), list(DOWN)]), settings,
                          **geometry)
    assert found.prior.shift == UP, found.prior.reason
    assert "(moved 0.15 of the grid towards anterior)" in found.report()["explanation"]
    assert found.quality.light in ("yellow", "red")
    assert "looked for away" not in own.report()["explanation"]
    assert dice(own.ensemble.labels > 0, label) < 0.3
    assert dice(found.ensemble.labels > 0, label) > 0.8
