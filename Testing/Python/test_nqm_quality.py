"""NQM (paper eq. 1) on hand-computed arrays, the ensemble's statistics, labels and the traffic light."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from nca_core.network.config import preset
from nca_core.inference.ensemble import label_map, nqm, run_ensemble
from nca_core.network.model import LevelPlan
from nca_core.space.preprocessing import Preprocessing, prepare
from nca_core.inference.result import SideResult
from nca_core.inference.wholehead import overall_quality
from nca_core.quality.nqm import Calibration, Quality, assess, at_least

from nca_helpers import random_model


def test_nqm_is_sum_of_std_over_sum_of_mean():
    mean = np.array([[0.2, 0.8], [0.5, 0.0]], dtype=np.float32)
    std = np.array([[0.1, 0.05], [0.25, 0.0]], dtype=np.float32)
    assert nqm(mean, std) == pytest.approx((0.1 + 0.05 + 0.25) / (0.2 + 0.8 + 0.5))


def test_nqm_of_an_empty_segmentation_is_infinite_and_of_agreeing_runs_zero():
    assert math.isinf(nqm(np.zeros((3, 3)), np.zeros((3, 3))))
    assert nqm(np.full((2, 2), 0.7), np.zeros((2, 2))) == 0.0


def test_population_std_from_three_hand_made_runs():
    runs = np.array([[0.0, 1.0], [0.5, 1.0], [1.0, 1.0]])
    mean, std = runs.mean(axis=0), runs.std(axis=0)  # ddof 0: population
    assert std[0] == pytest.approx(math.sqrt(((0 - 0.5) ** 2 + 0 + (1 - 0.5) ** 2) / 3))
    assert nqm(mean, std) == pytest.approx(std[0] / 1.5)


def test_ensemble_mean_std_and_nqm_match_the_individual_runs():
    model = random_model(preset("hippocampus"), scale=0.3)
    array = np.random.default_rng(3).random((12, 10, 8)).astype(np.float32)
    result = run_ensemble(model, array, Preprocessing(), runs=4, seed=11, steps=[2, 2])
    image = torch.from_numpy(prepare(array, Preprocessing(), model.multiple))[None, None]
    probabilities = []
    with torch.no_grad():
        for run in range(4):
            state, _ = model(image, LevelPlan(steps=[2, 2], fire_rate=0.5, seed=11, runs=[run]))
            probabilities.append(torch.sigmoid(state[0, 1:2, :12, :10, :8]).double().numpy())
    stack = np.stack(probabilities)
    assert stack.std(axis=0).max() > 1e-3  # the runs really differ
    assert np.allclose(result.probability, stack.mean(axis=0), atol=1e-5)
    assert np.allclose(result.std, stack.std(axis=0), atol=1e-4)
    assert result.nqm == pytest.approx(stack.std(axis=0).sum() / stack.mean(axis=0).sum(), rel=1e-4)


def test_ensemble_is_reproducible_with_a_seed():
    model = random_model(preset("hippocampus"), scale=0.3)
    array = np.random.default_rng(4).random((10, 10, 10)).astype(np.float32)
    first = run_ensemble(model, array, Preprocessing(), runs=3, seed=5, steps=[1, 1])
    again = run_ensemble(model, array, Preprocessing(), runs=3, seed=5, steps=[1, 1])
    other = run_ensemble(model, array, Preprocessing(), runs=3, seed=6, steps=[1, 1])
    assert np.array_equal(first.probability, again.probability)
    assert not np.array_equal(first.probability, other.probability)


def test_label_map_thresholds_at_one_half_and_takes_the_best_class():
    one = np.array([[[[0.2, 0.5, 0.51]]]])
    assert label_map(one).tolist() == [[[0, 0, 1]]]
    two = np.array([[[[0.6, 0.2, 0.3]]], [[[0.7, 0.9, 0.4]]]])
    assert label_map(two).tolist() == [[[2, 2, 0]]]


# slope -4, intercept 1, target 0.75, margin 0.125: exact binary fractions at the borders
CALIBRATION = Calibration(slope=-4.0, intercept=1.0, target_dice=0.75, margin=0.125)


@pytest.mark.parametrize("value, light, dice", [
    (0.0, "green", 1.0),
    (0.03125, "green", 0.875),   # predicted = target + margin: still green
    (0.04, "yellow", 0.84),
    (0.09375, "yellow", 0.625),  # predicted = target - margin: still yellow
    (0.1, "red", 0.6),
    (math.inf, "red", 0.0),      # empty segmentation
])
def test_traffic_light_thresholds(value, light, dice):
    quality = assess(value, CALIBRATION)
    assert quality.light == light
    assert quality.predicted_dice == pytest.approx(dice)


def test_nqm_threshold_and_uncalibrated_model():
    assert CALIBRATION.nqm_threshold == pytest.approx(0.0625)
    assert assess(0.01, None).light == "unknown"
    assert assess(0.01, None).predicted_dice is None
    assert Calibration.from_dict(CALIBRATION.to_dict()) == CALIBRATION


def test_a_caveat_holds_the_light_leads_the_explanation_and_is_listed():
    doubted = at_least(Quality("green", 0.85, "fine"), "yellow", "the box is cut")
    assert (doubted.light, doubted.caveats) == ("yellow", ("the box is cut",))
    assert doubted.explanation == "the box is cut; by NQM alone: fine"  # NQM's verdict no longer the light's
    again = at_least(doubted, "red", "too large")
    assert (again.light, again.caveats) == ("red", ("too large", "the box is cut"))
    assert again.explanation == "too large; the box is cut; by NQM alone: fine"
    kept = at_least(Quality("red", 0.4, "poor"), "yellow", "the box is cut")
    assert (kept.light, kept.explanation) == ("red", "the box is cut; poor")  # the light is NQM's own


def test_a_heads_light_is_its_worse_sides_with_every_sides_caveats_named():
    doubted = SideResult("left", "located", 0.05, at_least(Quality("green", 0.85, "fine"), "yellow", "the box is cut"),
                         10, None)
    poor = SideResult("right", "located", 0.3, Quality("red", 0.5, "poor"), 10, None)
    overall = overall_quality([doubted, poor])
    assert (overall.light, overall.caveats) == ("red", ("left: the box is cut",))
    assert overall.explanation == "left: the box is cut; poor"  # what Slicer and the preview show
    both = overall_quality([doubted, dataclasses.replace(doubted, side="right")])
    assert (both.light, both.caveats) == ("yellow", ("left: the box is cut", "right: the box is cut"))
    assert both.explanation == "the box is cut; by NQM alone: fine"
    assert overall_quality([poor]) == poor.quality
