"""NQM calibration (linear Dice ~ NQM) and the traffic light."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Dict, Optional

from ..errors import ModelFileError
from ..fields import checked_fields

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
    """

    slope: float
    intercept: float
    target_dice: float = DEFAULT_TARGET_DICE
    margin: float = 0.05
    cases: int = 0
    r_squared: Optional[float] = None
    description: str = ""

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
        data = dataclasses.asdict(self)
        data["nqm_threshold"] = self.nqm_threshold
        return data

    def validate(self) -> "Calibration":
        """Raise ModelFileError when the light cannot be judged with these numbers."""
        problems = []
        if not 0 <= self.target_dice <= 1:
            problems.append("target_dice must be in [0, 1]")
        if not 0 <= self.margin <= 1:
            problems.append("margin must be in [0, 1]")
        if self.cases < 0:
            problems.append("cases must not be negative")
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


@dataclass(frozen=True)
class Quality:
    light: str  # green | yellow | red | unknown
    predicted_dice: Optional[float]
    explanation: str


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


def assess_segmentation(nqm: float, foreground_voxels: int, runs_can_disagree: bool,
                        calibration: Optional[Calibration]) -> Quality:
    """The light of one segmentation: red when a calibrated model found nothing, unknown
    when its runs cannot disagree (NQM is then 0 whatever the quality), else by NQM."""
    if foreground_voxels == 0 and calibration is not None:
        return Quality("red", 0.0, EMPTY)
    if not runs_can_disagree:
        return Quality("unknown", None, NO_SPREAD)
    return assess(nqm, calibration)
