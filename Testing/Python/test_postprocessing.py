"""Largest-component postprocessing and how calibration chooses it."""
from __future__ import annotations

import numpy as np

from nca_core.space.imaging import read_volume
from nca_core.quality.metrics import mean_foreground_dice
from nca_core.space.postprocessing import Postprocessing, largest_component
from nca_core.training.calibrate import choose_postprocessing
from nca_core.training.data import find_pairs
from nca_core.training.evaluate import CaseEvaluation


def test_keeps_the_largest_component_with_all_its_labels():
    labels = np.zeros((20, 20, 20), np.uint8)
    labels[2:8, 2:8, 2:8] = 1
    labels[8:10, 2:8, 2:8] = 2  # touches the first block: same component
    labels[15:18, 15:18, 15:18] = 1  # a smaller, separate island
    kept = largest_component(labels)
    assert kept.dtype == labels.dtype
    assert (kept[2:10, 2:8, 2:8] == labels[2:10, 2:8, 2:8]).all()
    assert not kept[15:18, 15:18, 15:18].any()


def test_diagonal_neighbours_are_connected_and_empty_stays_empty():
    labels = np.zeros((6, 6, 6), np.uint8)
    labels[1, 1, 1] = labels[2, 2, 2] = labels[3, 3, 3] = 1
    assert (largest_component(labels) == labels).all()
    empty = np.zeros((4, 4, 4), np.uint8)
    assert not largest_component(empty).any()


def test_off_by_default():
    labels = np.zeros((8, 8, 8), np.uint8)
    labels[0, 0, 0] = labels[5, 5, 5] = 1
    assert (Postprocessing().apply(labels) == labels).all()
    assert Postprocessing(largest_component=True).apply(labels).sum() == 1


def test_removes_a_spurious_island_from_a_real_label(hippocampus_dir):
    image_path, label_path = find_pairs(hippocampus_dir)[0]
    truth = (read_volume(label_path).array > 0).astype(np.uint8)
    spoiled = truth.copy()
    corner = tuple(slice(0, 3) for _ in range(3))
    assert not truth[corner].any()
    spoiled[corner] = 1
    assert mean_foreground_dice(spoiled, truth, 1) < 1.0
    assert mean_foreground_dice(largest_component(spoiled), truth, 1) == 1.0


def _row(dice: float, largest: float, artifact: str = "none") -> CaseEvaluation:
    return CaseEvaluation(case="c", artifact=artifact, dice=dice, nqm=0.1, dice_largest_component=largest,
                          quality="unknown", predicted_dice=None, foreground_voxels=1000)


def test_auto_keeps_the_component_only_when_clean_dice_rises():
    helps = [_row(0.80, 0.85), _row(0.90, 0.90), _row(0.2, 0.1, "noise")]
    hurts = [_row(0.80, 0.78), _row(0.90, 0.90), _row(0.2, 0.5, "noise")]
    chosen, record = choose_postprocessing(helps, "auto")
    assert chosen.largest_component and record["clean_dice_with_largest_component"] == 0.875
    assert not choose_postprocessing(hurts, "auto")[0].largest_component
    assert choose_postprocessing(hurts, "yes")[0].largest_component
    assert not choose_postprocessing(helps, "no")[0].largest_component
