"""Segmentation metrics."""
from __future__ import annotations

import numpy as np


def dice(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Hard Dice of two binary masks; 1.0 when both are empty."""
    prediction, truth = prediction.astype(bool), truth.astype(bool)
    total = prediction.sum() + truth.sum()
    if total == 0:
        return 1.0
    return float(2.0 * np.logical_and(prediction, truth).sum() / total)


def mean_foreground_dice(labels: np.ndarray, truth: np.ndarray, classes: int) -> float:
    """Mean over classes 1..K of the hard Dice (K = 1: foreground Dice)."""
    return float(np.mean([dice(labels == k, truth == k) for k in range(1, classes + 1)]))
