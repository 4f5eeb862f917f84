"""Which body side a crop shows, and mirroring it to the side the model learned.

An NCA's rule is not mirror-symmetric: a model trained on left hippocampi fails on a right
one as it is, and succeeds on the same voxels mirrored left-right. For a crop the side is
given (``left``/``right``) or, with ``auto``, decided by a short probe: a few runs as stored
and a few mirrored, and the orientation with the lower NQM (the model is more consistent on
the side it knows) wins.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional, Sequence

import numpy as np

from ..space.regions import other_side

# Runs per probe: per orientation in the side probe (on the 36 validation crops and their mirror
# images, 2 runs chose the right side every time: NQM about 0.03 against 0.1 mirrored), and per
# size in the prior-size probe (``priorsize``).
PROBE_RUNS = 2


@dataclass(frozen=True)
class SideChoice:
    """The side a crop shows and whether it is mirrored for the model."""

    side: Optional[str]  # None: the model records no side (never mirrored)
    mirrored: bool
    reason: str


def choose_side(requested: str, model_side: Optional[str], probe: Callable[[bool], float]) -> SideChoice:
    """The side of a crop: ``requested`` (checked with the settings) unless ``auto``, else the probe's verdict.

    ``probe(mirrored)`` returns the NQM of ``PROBE_RUNS`` runs with or without mirroring.
    """
    if model_side is None:
        return SideChoice(None, False, "the model records no side: used as stored")
    if requested != "auto":
        return SideChoice(requested, requested != model_side, f"given ({requested})")
    as_stored, mirrored = probe(False), probe(True)
    flip = mirrored < as_stored
    side = other_side(model_side) if flip else model_side
    reason = (f"auto: NQM {min(as_stored, mirrored):.3f} as a {side} crop against {max(as_stored, mirrored):.3f} "
              f"as a {other_side(side)} one ({PROBE_RUNS} runs each)")
    return SideChoice(side, flip, reason)


def mirror(array: np.ndarray, axis: int) -> np.ndarray:
    """``array`` reversed along a spatial ``axis`` of (X, Y, Z) or (K, X, Y, Z) data."""
    return np.ascontiguousarray(np.flip(array, axis=axis + array.ndim - 3))


def label_names(labels: Sequence[str], side: Optional[str], first: int = 1) -> Dict[int, str]:
    """Label value -> name (``left hippocampus``) for the model's classes on one side."""
    return {first + i: f"{side} {label}" if side else label for i, label in enumerate(labels)}
