"""Where the structure usually lies in a field-of-view grid: a Gaussian location prior that a
model reads as a second input channel beside the image.

A field-of-view grid (``Preprocessing.grid_shape``) is relative to the scan's field of view,
and a prostate scan is prescribed around the gland: on PROMISE12's three hospitals the gland's
centre lies within a few per cent of the middle of the field of view. An NCA's rule is the same
at every voxel, so it cannot know where in the field of view a cell is; the prior tells it.
The prior is fitted to the training labels (the foreground voxels' mean and deviation per
axis, as fractions of the grid) and stored in the model file as six numbers. Optional ``sizes``
(spread factors, set by ``m3dnca calibrate --prior-sizes``) are the prior's sizes that inference
probes for each scan (``inference.priorsize``).
"""
from __future__ import annotations

import math
import random
import reprlib
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import NCAError

KEYS = ("centre", "spread")
SIZES = "sizes"
SHIFTS = "shifts"
MAX_SIZES = 8
MAX_SIZE_FACTOR = 4.0
MAX_SHIFTS = 8
MAX_SHIFT = 0.5
NO_SHIFT = (0.0, 0.0, 0.0)
MOVE_GAIN = 0.75  # a move of the centre is kept when its NQM is under this times the own place's


def input_channels(with_prior: bool) -> int:
    """How many channels a model reads: the image, and the location prior when it has one."""
    return 2 if with_prior else 1


def location_prior_problem(prior: Any) -> str:
    """What keeps ``prior`` from being a location prior, or '' when it is one: a JSON object
    with ``centre`` (3 numbers in [0, 1]) and ``spread`` (3 numbers in (0, 1]), fractions of the
    grid's axes, and optionally ``sizes`` (``sizes_problem``)."""
    if not isinstance(prior, dict) or not set(KEYS) <= set(prior) <= set(KEYS + (SIZES, SHIFTS)):
        return (f"must be {{\"centre\": [x, y, z], \"spread\": [x, y, z]}} (and optionally \"sizes\" and "
                f"\"shifts\"), found {reprlib.repr(prior)}")
    centre, spread = prior["centre"], prior["spread"]
    if not _three_numbers(centre) or not all(0 <= c <= 1 for c in centre):
        return f"centre must be 3 fractions of the grid in [0, 1], found {reprlib.repr(centre)}"
    if not _three_numbers(spread) or not all(0 < s <= 1 for s in spread):
        return f"spread must be 3 fractions of the grid in (0, 1], found {reprlib.repr(spread)}"
    return (sizes_problem(prior[SIZES]) if SIZES in prior else "") or (
        shifts_problem(prior[SHIFTS]) if SHIFTS in prior else "")


def sizes_problem(sizes: Any) -> str:
    """What keeps ``sizes`` from being the spread factors to probe, or '' when they are:
    1 to ``MAX_SIZES`` different numbers in (0, ``MAX_SIZE_FACTOR``]."""
    if (not isinstance(sizes, list) or not 1 <= len(sizes) <= MAX_SIZES
            or not all(_is_number(s) and 0 < s <= MAX_SIZE_FACTOR for s in sizes) or len(set(sizes)) != len(sizes)):
        return (f"sizes must be 1 to {MAX_SIZES} different spread factors in (0, {MAX_SIZE_FACTOR:g}], "
                f"found {reprlib.repr(sizes)}")
    return ""


def shifts_problem(shifts: Any) -> str:
    """What keeps ``shifts`` from being the prior's centre moves to probe, or '' when they are:
    1 to ``MAX_SHIFTS`` different [x, y, z] moves, each in [-``MAX_SHIFT``, ``MAX_SHIFT``] of the
    grid, one of them [0, 0, 0] (the own place, which a move must beat)."""
    if (not isinstance(shifts, list) or not 1 <= len(shifts) <= MAX_SHIFTS
            or not all(_three_numbers(s) and all(abs(v) <= MAX_SHIFT for v in s) for s in shifts)
            or len({tuple(s) for s in shifts}) != len(shifts) or list(NO_SHIFT) not in [list(s) for s in shifts]):
        return (f"shifts must be 1 to {MAX_SHIFTS} different [x, y, z] moves of the centre, each in "
                f"[-{MAX_SHIFT:g}, {MAX_SHIFT:g}] of the grid, one of them 0,0,0 (the own place), found "
                f"{reprlib.repr(shifts)}")
    return ""


def _three_numbers(values: Any) -> bool:
    return isinstance(values, list) and len(values) == 3 and all(_is_number(v) for v in values)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def fit_location_prior(labels: Sequence[np.ndarray]) -> Dict[str, List[float]]:
    """The prior of label maps on one grid: their foreground voxels' mean position and standard
    deviation per axis, as fractions of the grid (a voxel's centre at (i + 0.5) / size).

    Raises:
        NCAError: when the labels differ in shape or hold no foreground.
    """
    shapes = {label.shape for label in labels}
    if len(shapes) != 1:
        raise NCAError(f"a location prior needs the labels on one grid, found shapes {sorted(shapes)}")
    (shape,) = shapes
    positions = [np.argwhere(label > 0) for label in labels]
    voxels = np.concatenate(positions) if positions else np.empty((0, 3))
    if len(voxels) < 2:
        raise NCAError("a location prior needs labelled foreground in the training cases; none found")
    fractions = (voxels + 0.5) / np.asarray(shape, dtype=np.float64)
    return {"centre": [round(float(c), 4) for c in fractions.mean(0)],
            "spread": [round(max(float(s), 1e-3), 4) for s in fractions.std(0)]}


def location_prior_map(shape: Sequence[int], prior: Dict[str, List[float]]) -> np.ndarray:
    """The prior on a grid of ``shape`` voxels (float32, 1 at the centre, falling as a Gaussian)."""
    squared = np.zeros(tuple(shape), dtype=np.float32)
    for axis, (size, centre, spread) in enumerate(zip(shape, prior["centre"], prior["spread"])):
        distance = (((np.arange(size, dtype=np.float32) + 0.5) / size - centre) / spread) ** 2
        squared += distance.reshape([-1 if a == axis else 1 for a in range(3)])
    return np.exp(-0.5 * squared).astype(np.float32)


def jittered_prior(prior: Dict[str, List[float]], strength: float, rng: random.Random) -> Dict[str, List[float]]:
    """``prior`` moved and resized at random, for one training step: every spread scaled by one
    factor in [1 / (1 + strength), 1 + strength] and each centre shifted by up to ``strength``
    times its axis's spread (kept on the grid). A model trained so cannot read a gland's size
    off the prior and leans on the image for it; ``strength`` 0 returns ``prior`` unchanged."""
    if strength == 0:
        return prior
    scale = math.exp(rng.uniform(-1.0, 1.0) * math.log1p(strength))
    centre = [min(1.0, max(0.0, c + rng.uniform(-strength, strength) * s))
              for c, s in zip(prior["centre"], prior["spread"])]
    return {"centre": centre, "spread": [min(1.0, s * scale) for s in prior["spread"]]}


def prior_sizes(prior: Dict[str, Any]) -> List[float]:
    """The spread factors inference probes: the prior's ``sizes``, else its own size only."""
    return [float(size) for size in prior.get(SIZES, [1.0])]


def prior_shifts(prior: Dict[str, Any]) -> List[Tuple[float, float, float]]:
    """The centre moves inference probes: the prior's ``shifts``, else its own centre only."""
    return [(float(x), float(y), float(z)) for x, y, z in prior.get(SHIFTS, [NO_SHIFT])]


def sized_prior(prior: Dict[str, Any], factor: float,
                shift: Sequence[float] = NO_SHIFT) -> Dict[str, List[float]]:
    """``prior`` with every spread times ``factor`` (at most a whole axis), its centre moved by
    ``shift`` (kept on the grid), and nothing left to probe."""
    return {"centre": [min(1.0, max(0.0, c + d)) for c, d in zip(prior["centre"], shift)],
            "spread": [min(1.0, s * factor) for s in prior["spread"]]}


def with_probes(prior: Dict[str, Any], sizes: Optional[Sequence[float]] = None,
                shifts: Optional[Sequence[Sequence[float]]] = None) -> Dict[str, Any]:
    """``prior`` that inference probes at ``sizes`` (spread factors) and ``shifts`` (centre moves),
    each checked; None keeps the prior's own; one size 1.0 or one shift [0, 0, 0] drops them.

    Raises:
        NCAError: when ``sizes`` are not spread factors or ``shifts`` not centre moves.
    """
    sizes = prior_sizes(prior) if sizes is None else [float(size) for size in sizes]
    shifts = [[float(v) for v in shift] for shift in (prior_shifts(prior) if shifts is None else shifts)]
    problem = sizes_problem(sizes) or shifts_problem(shifts)
    if problem:
        raise NCAError(problem)
    probed = sized_prior(prior, 1.0)
    if sizes != [1.0]:
        probed[SIZES] = sizes
    if shifts != [list(NO_SHIFT)]:
        probed[SHIFTS] = shifts
    return probed
