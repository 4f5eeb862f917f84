"""NQM calibration (linear Dice ~ NQM) and the traffic light."""
from __future__ import annotations

import dataclasses
import math
import reprlib
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from ..errors import ModelFileError
from ..fields import checked_fields, is_real_number
from .lights import LIGHT_ORDER

DEFAULT_TARGET_DICE = 0.8

EXPLANATIONS = {
    "green": "quality likely above the calibrated threshold",
    "yellow": "quality near the calibrated threshold: check the segmentation",
    "red": "quality likely below the calibrated threshold: review carefully",
    "unknown": "this model has no NQM calibration: judge the segmentation yourself",
}
EMPTY = "the segmentation is empty: nothing was found"
NO_SPREAD = ("the runs cannot disagree (a single run, or fire rate 0), so NQM measures nothing: "
             "use 2 or more runs (10 recommended)")


@dataclass(frozen=True)
class Calibration:
    """Predicted Dice = slope * NQM + intercept, fitted on calibration cases.

    ``margin`` is the half-width, in Dice, of the yellow band around ``target_dice``.
    ``volume_range_ml`` (optional): the structure's plausible volume in mL, [low, high], from
    anatomy; an outline outside it is red whatever its NQM (the runs can agree on a wrong
    structure, e.g. a head given to the prostate model).
    """

    slope: float
    intercept: float
    target_dice: float = DEFAULT_TARGET_DICE
    margin: float = 0.05
    cases: int = 0
    r_squared: Optional[float] = None
    description: str = ""
    volume_range_ml: Optional[List[float]] = None

    @property
    def nqm_threshold(self) -> float:
        """The NQM at which the predicted Dice equals the target."""
        if self.slope == 0:
            return math.inf
        return (self.target_dice - self.intercept) / self.slope

    def predicted_dice(self, nqm: float) -> float:
        if math.isinf(nqm):
            return 0.0
        return min(1.0, max(0.0, self.slope * nqm + self.intercept))

    def to_dict(self) -> Dict[str, Any]:
        """The calibration as JSON data; without ``volume_range_ml`` when it has none (so that
        the model file stays readable by versions before it)."""
        data = dataclasses.asdict(self)
        if self.volume_range_ml is None:
            del data["volume_range_ml"]
        data["nqm_threshold"] = self.nqm_threshold
        return data

    def volume_problem(self, volume_ml: Optional[float]) -> str:
        """Why an outline of ``volume_ml`` cannot be this model's structure, or '' (no range,
        no volume, or within the range)."""
        if self.volume_range_ml is None or volume_ml is None:
            return ""
        low, high = self.volume_range_ml
        if low <= volume_ml <= high:
            return ""
        return (f"the outline's volume ({volume_ml:.1f} mL) is outside this model's plausible {low:g}-{high:g} mL "
                "(is this the scan and the model you meant?)")

    def validate(self) -> "Calibration":
        """Raise ModelFileError when the light cannot be judged with these numbers."""
        problems = []
        if not 0 <= self.target_dice <= 1:
            problems.append("target_dice must be in [0, 1]")
        if not 0 <= self.margin <= 1:
            problems.append("margin must be in [0, 1]")
        if self.cases < 0:
            problems.append("cases must not be negative")
        range_problem = "" if self.volume_range_ml is None else volume_range_problem(self.volume_range_ml)
        if range_problem:
            problems.append(f"volume_range_ml: {range_problem}")
        if problems:
            raise ModelFileError("invalid calibration: " + "; ".join(problems))
        return self

    @classmethod
    def from_dict(cls, data: Any) -> "Calibration":
        """A checked calibration from JSON data (as written by ``to_dict``); raises
        ModelFileError naming the bad field."""
        if isinstance(data, dict):
            data = {k: v for k, v in data.items() if k != "nqm_threshold"}  # derived, recomputed
        return cls(**checked_fields(cls, data, "calibration")).validate()


def volume_range_problem(values: Any) -> str:
    """What keeps ``values`` from being a plausible volume range in mL, or '' when it is one:
    two numbers, 0 <= low < high."""
    if (not isinstance(values, list) or len(values) != 2
            or not all(is_real_number(v) and math.isfinite(v) for v in values)
            or not 0 <= values[0] < values[1]):
        return f"a volume range is [low, high] in mL with 0 <= low < high, found {reprlib.repr(values)}"
    return ""


@dataclass(frozen=True)
class Quality:
    light: str  # green | yellow | red | unknown
    predicted_dice: Optional[float]
    explanation: str
    caveats: Tuple[str, ...] = ()  # reasons beyond NQM to doubt the outline (at_least), the leading one first


def assess(nqm: float, calibration: Optional[Calibration]) -> Quality:
    """The traffic light for one NQM value.

    green: predicted Dice >= target + margin; red: < target - margin; yellow between.
    An empty segmentation (infinite NQM) is red.
    """
    if calibration is None:
        return Quality("unknown", None, EXPLANATIONS["unknown"])
    predicted = calibration.predicted_dice(nqm)
    if predicted >= calibration.target_dice + calibration.margin:
        light = "green"
    elif predicted < calibration.target_dice - calibration.margin or math.isinf(nqm):
        light = "red"
    else:
        light = "yellow"
    return Quality(light, predicted, EXPLANATIONS[light])


def at_least(quality: Quality, light: str, reason: str) -> Quality:
    """``quality`` made no better than ``light`` (green < unknown < yellow < red), with ``reason``
    leading its explanation and its caveats. When the first reason changes the light, NQM's own
    verdict follows as "by NQM alone: ...", so that the explanation does not contradict the light."""
    worse = max(quality.light, light, key=LIGHT_ORDER.index)
    own = quality.explanation
    if worse != quality.light and not quality.caveats:
        own = f"by NQM alone: {own}"
    return Quality(worse, quality.predicted_dice, f"{reason}; {own}", (reason,) + quality.caveats)


def assess_segmentation(nqm: float, foreground_voxels: int, runs_can_disagree: bool,
                        calibration: Optional[Calibration], volume_ml: Optional[float] = None) -> Quality:
    """The light of one segmentation: red when a calibrated model found nothing, unknown
    when its runs cannot disagree (NQM is then 0 whatever the quality), else by NQM; and red
    when its ``volume_ml`` is outside the calibration's plausible range."""
    if foreground_voxels == 0 and calibration is not None:
        return Quality("red", 0.0, EMPTY)
    quality = assess(nqm, calibration) if runs_can_disagree else Quality("unknown", None, NO_SPREAD)
    problem = calibration.volume_problem(volume_ml) if calibration is not None else ""
    if not problem:
        return quality
    return at_least(quality, "red", problem)
