"""Histogram standardisation across scanners (Nyúl & Udupa, MRM 1999), after TorchIO's
``HistogramStandardization`` (which maps the 1st, 10th ... 90th and 99th percentiles onto a 0-100
scale) but in numpy, so that inference and the Slicer side need no TorchIO.

MRI intensities have no fixed scale, and a percentile rescale removes only their offset and
gain: an endorectal coil's bright rim (BIDMC) leaves the rest of the prostate scan darker than
other hospitals' after it (median at 0.13 of the 1st-99th percentile range, against 0.28-0.30
at UCL and RUNMC). Standardisation maps each image's own intensity percentiles
(``LANDMARK_PERCENTILES``) piecewise-linearly onto landmarks fitted to the training images, so
every scanner's histogram takes the training histogram's shape. The landmarks are stored in the
model file (``Preprocessing.intensity_landmarks``) and applied before the percentile rescale, in
training and inference alike.
"""
from __future__ import annotations

import reprlib
from typing import Any, Iterable, List

import numpy as np

from ..errors import InputImageError
from ..fields import is_real_number

# Model files store only the landmarks, one per percentile: changing these needs a new format version.
LANDMARK_PERCENTILES = (1, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 99)


def image_landmarks(array: np.ndarray) -> np.ndarray:
    """The image's intensities at ``LANDMARK_PERCENTILES``, scaled so the first is 0 and the last 1.

    Raises:
        InputImageError: when those percentiles coincide (a nearly constant image).
    """
    values = np.percentile(array, LANDMARK_PERCENTILES)
    width = values[-1] - values[0]
    if not width > 0:
        raise InputImageError("the image's intensities barely vary; its histogram cannot be standardised")
    return (values - values[0]) / width


def fit_landmarks(arrays: Iterable[np.ndarray]) -> List[float]:
    """The mean of the images' scaled landmarks (``image_landmarks``): what ``standardise`` maps
    every image onto."""
    landmarks = np.mean([image_landmarks(a) for a in arrays], axis=0)
    return [round(float(v), 6) for v in landmarks]


def landmarks_problem(landmarks: Any) -> str:
    """What keeps ``landmarks`` from being standardisation landmarks, or '' when they are: one
    number per ``LANDMARK_PERCENTILES``, from 0 to 1, never falling."""
    count = len(LANDMARK_PERCENTILES)
    expected = f"must be {count} numbers rising from 0 to 1 (one per percentile {list(LANDMARK_PERCENTILES)})"
    valid = (isinstance(landmarks, list) and len(landmarks) == count and all(map(is_real_number, landmarks))
             and landmarks[0] == 0 and landmarks[-1] == 1 and all(a <= b for a, b in zip(landmarks, landmarks[1:])))
    return "" if valid else f"{expected}, found {reprlib.repr(landmarks)}"


def standardise(array: np.ndarray, landmarks: List[float]) -> np.ndarray:
    """``array`` (float32) with its intensities at ``LANDMARK_PERCENTILES`` moved onto
    ``landmarks``, linearly in between and beyond the outer ones. Percentiles that coincide
    (an image mostly of one value) are merged; an image with fewer than two distinct ones is
    returned as it is (the percentile rescale then decides)."""
    source = np.percentile(array, LANDMARK_PERCENTILES)
    distinct = np.concatenate([[True], np.diff(source) > 0])
    source, target = source[distinct], np.asarray(landmarks, dtype=np.float64)[distinct]
    if len(source) < 2:
        return array.astype(np.float32)
    values = array.astype(np.float64)
    mapped = np.interp(values, source, target)
    low_slope = (target[1] - target[0]) / (source[1] - source[0])
    high_slope = (target[-1] - target[-2]) / (source[-1] - source[-2])
    below, above = values < source[0], values > source[-1]
    mapped[below] = target[0] + (values[below] - source[0]) * low_slope
    mapped[above] = target[-1] + (values[above] - source[-1]) * high_slope
    return mapped.astype(np.float32)
