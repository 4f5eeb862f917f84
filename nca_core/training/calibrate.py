"""NQM calibration: a linear Dice ~ NQM fit and the yellow margin, as in the paper."""
from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np

from ..quality.lights import light_color
from ..space.postprocessing import Postprocessing
from ..quality.nqm import DEFAULT_TARGET_DICE, Calibration, assess_segmentation
from .evaluate import CaseEvaluation, detection_rates

FLAG_SHARE = 0.95  # the margin is chosen so that this share of calibration failures is flagged
MINIMUM_MARGIN = 0.02  # the yellow band is never narrower than this (Dice)
COLLAPSED_DICE = 0.05  # segmentations this bad carry no information on the slope
LOCAL_SPAN = 3.0  # the line is refitted on cases with NQM up to this multiple of the threshold


def _line(nqm: np.ndarray, dice: np.ndarray) -> Tuple[float, float]:
    if nqm.size < 3 or np.ptp(nqm) == 0:
        raise ValueError("calibration needs at least 3 cases with different NQM")
    slope, intercept = np.polyfit(nqm, dice, 1)
    if not slope < 0:
        raise ValueError(
            f"Dice does not fall with NQM on these cases (fitted slope {slope:.3f}); "
            "calibrate on more cases or with artifacts"
        )
    return float(slope), float(intercept)


def _local_line(nqm: np.ndarray, dice: np.ndarray, target_dice: float) -> Tuple[float, float]:
    """A line that holds near the decision threshold.

    Dice against NQM is curved and saturates at 0 for heavily degraded images, so a
    global line misplaces the threshold. Collapsed segmentations are left out, then
    the line is refitted twice on the cases with NQM up to LOCAL_SPAN x its threshold.
    """
    informative = dice > COLLAPSED_DICE
    slope, intercept = _line(nqm[informative], dice[informative])
    for _ in range(2):
        threshold = (target_dice - intercept) / slope
        local = informative & (nqm <= LOCAL_SPAN * max(threshold, 0.0))
        if local.sum() < 3 or np.ptp(nqm[local]) == 0:
            break
        slope, intercept = _line(nqm[local], dice[local])
    return slope, intercept


def fit_calibration(
    nqms: Sequence[float],
    dices: Sequence[float],
    target_dice: float = DEFAULT_TARGET_DICE,
    description: str = "",
) -> Calibration:
    """Dice = slope * NQM + intercept near the threshold, and the yellow margin.

    The margin is the smallest Dice band above the target (at least MINIMUM_MARGIN)
    that makes the light flag FLAG_SHARE of the calibration cases whose Dice is below
    the target.
    """
    nqm = np.asarray(nqms, dtype=np.float64)
    dice = np.asarray(dices, dtype=np.float64)
    finite = np.isfinite(nqm)
    nqm, dice = nqm[finite], dice[finite]
    slope, intercept = _local_line(nqm, dice, target_dice)
    predicted = np.clip(slope * nqm + intercept, 0, 1)
    local = nqm <= LOCAL_SPAN * max((target_dice - intercept) / slope, 0.0)
    residual = (dice - predicted)[local]
    spread = ((dice[local] - dice[local].mean()) ** 2).sum() if local.any() else 0.0
    r_squared = 1 - float((residual**2).sum() / spread) if spread > 0 else None
    margin = MINIMUM_MARGIN
    failures = predicted[dice < target_dice]
    if failures.size:
        needed = float(np.quantile(failures, FLAG_SHARE, method="higher")) - target_dice
        margin = max(margin, needed + 1e-6)
    return Calibration(
        slope=slope, intercept=intercept, target_dice=target_dice,
        margin=round(margin, 6), cases=int(nqm.size),
        r_squared=None if r_squared is None else round(r_squared, 4), description=description,
    )


def cross_validated_rates(rows: Sequence[CaseEvaluation], folds: int, target_dice: float) -> Dict:
    """Detection rates of the light on held-out cases: fit on K-1 folds, judge the last.

    Folds are by case, so a case's clean and degraded versions stay together.
    """
    cases = sorted({r.case for r in rows})
    fold_of = {case: index % folds for index, case in enumerate(cases)}
    judged: List[CaseEvaluation] = []
    for fold in range(folds):
        train = [r for r in rows if fold_of[r.case] != fold]
        calibration = fit_calibration([r.nqm for r in train], [r.dice for r in train], target_dice)
        judged.extend(judge(row, calibration) for row in rows if fold_of[row.case] == fold)
    return dict(detection_rates(judged, target_dice), folds=folds)


def judge(row: CaseEvaluation, calibration: Calibration) -> CaseEvaluation:
    """The row with the light this calibration's line gives it, by NQM alone (the plausible
    volume range is anatomy, and a moved location prior's cap at yellow is a rule of use: neither
    is part of the fit or its rates). Calibration needs NQM that varies between cases, so its runs
    can always disagree."""
    quality = assess_segmentation(row.nqm, row.foreground_voxels, True, calibration)
    return replace(row, quality=quality.light, predicted_dice=quality.predicted_dice)


def plot_calibration(rows: Sequence[CaseEvaluation], calibration: Calibration, path: Path) -> None:
    """Dice vs NQM scatter (by artifact) with the fitted line and the light's bands."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..atomic import atomic_path

    figure, axis = plt.subplots(figsize=(6, 4.5))
    finite = [r for r in rows if math.isfinite(r.nqm)]
    for artifact in sorted({r.artifact for r in finite}):
        group = [r for r in finite if r.artifact == artifact]
        label = "clean" if artifact == "none" else f"with {artifact}"
        axis.scatter([r.nqm for r in group], [r.dice for r in group], s=14, label=label)
    xs = np.linspace(0, max(r.nqm for r in finite) * 1.05, 50)
    axis.plot(xs, np.clip(calibration.slope * xs + calibration.intercept, 0, 1), "k-",
              label=f"Dice = {calibration.slope:.2f}·NQM + {calibration.intercept:.2f}")
    axis.axhspan(calibration.target_dice - calibration.margin, calibration.target_dice + calibration.margin,
                 color=light_color("yellow"), alpha=0.2, label="yellow band")
    axis.axhline(calibration.target_dice, color=light_color("red"), lw=0.8, ls="--")
    axis.set_xlabel("NQM")
    axis.set_ylabel("Dice")
    axis.set_ylim(0, 1.02)
    axis.legend(fontsize=8, loc="upper right")  # high Dice at high NQM does not occur
    axis.set_title(f"NQM calibration ({calibration.cases} images)")
    with atomic_path(Path(path), ".png") as temporary:
        figure.savefig(temporary, dpi=100, bbox_inches="tight")
    plt.close(figure)


def choose_postprocessing(rows: Sequence[CaseEvaluation], mode: str) -> Tuple[Postprocessing, Dict]:
    """The model's postprocessing (``auto``: keep the largest component if that raises the
    mean Dice of the artifact-free cases) and a record of the choice."""
    clean = [r for r in rows if r.artifact == "none"] or list(rows)
    without = sum(r.dice for r in clean) / len(clean)
    with_largest = sum(r.dice_largest_component for r in clean) / len(clean)
    keep = with_largest > without if mode == "auto" else mode == "yes"
    record = {"largest_component": keep, "mode": mode, "clean_dice_without": round(without, 4),
              "clean_dice_with_largest_component": round(with_largest, 4)}
    return Postprocessing(largest_component=keep), record
