"""Hippocampal volumes of a segmentation: per side (and per class of the model) in mm³ and mL on
the input's voxels, from the ensemble's label map; the spread of the runs' own volumes; for a whole
head the estimated total intracranial volume (eTIV, atlas scaling as in Buckner et al. 2004), each
side's fraction of it and the asymmetry index. Every volume keeps its side's light; a red side's
volume is marked as not to be trusted. See docs/volumes.md."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import numpy as np

from .ensemble import RunCounter

MM3_PER_ML = 1000.0
# Intracranial volume of the ICBM 2009a nonlinear symmetric template, in mL: the template's own
# average brain mask (the support of the skull-stripped T1 in the nilearn wheel) at 1 mm; made
# and explained by scripts/template_icv.py and docs/volumes.md.
TEMPLATE_ICV_ML = 1886.539
ETIV_METHOD = ("template intracranial volume x |det| of the template-to-scan affine "
               "(atlas scaling factor, Buckner et al. 2004)")
UNTRUSTED_LIGHT = "red"


def voxel_volume_mm3(spacing: Sequence[float]) -> float:
    """The volume of one voxel of a grid with this spacing (mm)."""
    return float(np.prod([float(s) for s in spacing]))


def class_counts(labels: np.ndarray, values: Sequence[int]) -> np.ndarray:
    """Voxels of each label value in ``values`` (one bincount over the map)."""
    counts = np.bincount(labels.ravel(), minlength=max(values) + 1)
    return counts[list(values)].astype(np.int64)


def run_counter(to_labels: Callable[[np.ndarray], np.ndarray], classes: int) -> RunCounter:
    """A ``run_ensemble`` counter: one run's probabilities -> its label map on the input's voxels
    (``to_labels``) -> voxels of classes 1..``classes``."""
    values = list(range(1, classes + 1))
    return lambda probability: class_counts(to_labels(probability.astype(np.float32)), values)


def estimated_tiv_ml(determinant: float) -> float:
    """eTIV: the template's intracranial volume scaled by the template-to-scan affine."""
    return TEMPLATE_ICV_ML * abs(float(determinant))


def asymmetry_index(left_mm3: float, right_mm3: float) -> Optional[float]:
    """(L - R) / ((L + R) / 2); None when both are empty."""
    mean = (left_mm3 + right_mm3) / 2
    return None if mean <= 0 else (left_mm3 - right_mm3) / mean


@dataclass(frozen=True)
class Volume:
    """One structure: the ensemble's volume and each run's own (empty when not counted)."""

    name: str
    mm3: float
    runs_mm3: Tuple[float, ...] = ()
    probability_mm3: Optional[float] = None  # the ensemble's mean probabilities summed: no threshold

    @property
    def ml(self) -> float:
        return self.mm3 / MM3_PER_ML

    @property
    def interval_mm3(self) -> Optional[Tuple[float, float]]:
        """The runs' smallest and largest volume."""
        return (min(self.runs_mm3), max(self.runs_mm3)) if self.runs_mm3 else None

    @property
    def runs_std_mm3(self) -> Optional[float]:
        """Population standard deviation of the runs' volumes."""
        return float(np.std(self.runs_mm3)) if self.runs_mm3 else None

    def report(self) -> Dict[str, Any]:
        interval, std = self.interval_mm3, self.runs_std_mm3
        return {
            "name": self.name,
            "mm3": round(self.mm3, 1),
            "ml": round(self.ml, 4),
            "runs_interval_mm3": None if interval is None else [round(v, 1) for v in interval],
            "runs_std_mm3": None if std is None else round(std, 1),
            "probability_mm3": None if self.probability_mm3 is None else round(self.probability_mm3, 1),
        }


@dataclass(frozen=True)
class SideVolume:
    """A side's volume (all its classes), each class's, with the side's light."""

    side: Optional[str]  # None: a crop whose side is unknown
    light: str
    total: Volume
    classes: Tuple[Volume, ...]
    etiv_ml: Optional[float] = None

    @property
    def trusted(self) -> bool:
        return self.light != UNTRUSTED_LIGHT

    @property
    def fraction_of_etiv(self) -> Optional[float]:
        return None if not self.etiv_ml else self.total.mm3 / (self.etiv_ml * MM3_PER_ML)

    def report(self) -> Dict[str, Any]:
        fraction = self.fraction_of_etiv
        return dict(self.total.report(), light=self.light, trusted=self.trusted,
                    fraction_of_etiv=None if fraction is None else round(fraction, 7),
                    classes=[volume.report() for volume in self.classes])


def side_volume(side: Optional[str], light: str, labels: np.ndarray, values: Sequence[int],
                names: Sequence[str], voxel_mm3: float, run_counts: Optional[np.ndarray],
                etiv_ml: Optional[float] = None, probability_sums: Optional[Sequence[float]] = None) -> SideVolume:
    """The side whose classes have the label ``values`` (named ``names``) in ``labels``;
    ``run_counts`` (runs, classes) are the runs' own voxel counts, ``probability_sums`` each
    class's mean probability summed over the input's voxels."""
    counts = class_counts(labels, values)
    runs = np.zeros((0, len(values)), np.int64) if run_counts is None else np.asarray(run_counts)
    soft = [None] * len(values) if probability_sums is None else [float(p) * voxel_mm3 for p in probability_sums]
    classes = tuple(Volume(name, float(count) * voxel_mm3, tuple(float(c) * voxel_mm3 for c in runs[:, k]), soft[k])
                    for k, (name, count) in enumerate(zip(names, counts)))
    total = Volume(f"{side} hippocampus" if side else "segmentation", float(counts.sum()) * voxel_mm3,
                   tuple(float(c) * voxel_mm3 for c in runs.sum(axis=1)),
                   None if probability_sums is None else sum(soft))
    return SideVolume(side, light, total, classes if len(classes) > 1 else (), etiv_ml)


@dataclass(frozen=True)
class VolumeSummary:
    """All sides together: total, eTIV (whole heads), asymmetry (both sides)."""

    sides: Tuple[SideVolume, ...]
    etiv_ml: Optional[float] = None

    def side(self, name: str) -> Optional[SideVolume]:
        return next((side for side in self.sides if side.side == name), None)

    @property
    def total_mm3(self) -> float:
        return sum(side.total.mm3 for side in self.sides)

    @property
    def trusted(self) -> bool:
        return all(side.trusted for side in self.sides)

    @property
    def asymmetry_index(self) -> Optional[float]:
        left, right = self.side("left"), self.side("right")
        return None if left is None or right is None else asymmetry_index(left.total.mm3, right.total.mm3)

    def report(self) -> Dict[str, Any]:
        asymmetry = self.asymmetry_index
        return {
            "total_mm3": round(self.total_mm3, 1),
            "total_ml": round(self.total_mm3 / MM3_PER_ML, 4),
            "trusted": self.trusted,
            "etiv_ml": None if self.etiv_ml is None else round(self.etiv_ml, 1),
            "etiv_method": ETIV_METHOD if self.etiv_ml is not None else None,
            "asymmetry_index": None if asymmetry is None or math.isnan(asymmetry) else round(asymmetry, 4),
            "note": "research use; no normative percentiles (see docs/volumes.md); a red side's volume "
                    "is not to be trusted",
        }


def volume_text(side: SideVolume) -> str:
    """"left 3.02 mL (runs 2.95-3.08, SD 0.04) green" for result lines and the preview."""
    title = side.side or "volume"
    text = f"{title} {side.total.ml:.2f} mL"
    interval = side.total.interval_mm3
    if interval is not None:
        text += (f" (runs {interval[0] / MM3_PER_ML:.2f}-{interval[1] / MM3_PER_ML:.2f}, "
                 f"SD {side.total.runs_std_mm3 / MM3_PER_ML:.2f})")
    text += f" {side.light}"
    return text if side.trusted else text + " NOT TO BE TRUSTED"


CSV_SIDES = ("left", "right")
CSV_MEASURES = ("mm3", "ml", "runs_min_mm3", "runs_max_mm3", "runs_std_mm3", "quality", "trusted", "fraction_of_etiv",
                "probability_mm3")


def csv_columns(summary: Optional[VolumeSummary]) -> Dict[str, Any]:
    """``summary.csv``'s volume columns of one case: each side's measures (empty for a side not
    segmented), each class's volume of a multi-class model, total, eTIV and asymmetry. A red
    side's ``trusted`` is "no"."""
    row: Dict[str, Any] = {f"{side}_{measure}": "" for side in CSV_SIDES for measure in CSV_MEASURES}
    row.update(total_mm3="", etiv_ml="", asymmetry_index="")
    if summary is None:
        return row
    for side in summary.sides:
        prefix = side.side or "crop"
        interval, std, fraction = side.total.interval_mm3, side.total.runs_std_mm3, side.fraction_of_etiv
        probability = side.total.probability_mm3
        row.update({
            f"{prefix}_mm3": round(side.total.mm3, 1), f"{prefix}_ml": round(side.total.ml, 4),
            f"{prefix}_runs_min_mm3": "" if interval is None else round(interval[0], 1),
            f"{prefix}_runs_max_mm3": "" if interval is None else round(interval[1], 1),
            f"{prefix}_runs_std_mm3": "" if std is None else round(std, 1),
            f"{prefix}_quality": side.light, f"{prefix}_trusted": "yes" if side.trusted else "no",
            f"{prefix}_fraction_of_etiv": "" if fraction is None else round(fraction, 7),
            f"{prefix}_probability_mm3": "" if probability is None else round(probability, 1),
        })
        for volume in side.classes:
            row[f"{'_'.join(volume.name.split())}_mm3"] = round(volume.mm3, 1)
    asymmetry = summary.asymmetry_index
    row.update(total_mm3=round(summary.total_mm3, 1),
               etiv_ml="" if summary.etiv_ml is None else round(summary.etiv_ml, 1),
               asymmetry_index="" if asymmetry is None else round(asymmetry, 4))
    return row
