"""Segment both hippocampi of a whole-head scan: locate them (``locate``), segment each
side's box on the model's grid (mirrored for the side the model did not learn), judge
each side and put the outputs back onto the scan's voxels."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import SimpleITK as sitk

from .ensemble import EnsembleResult, ProgressCallback, RunCounter, label_map
from .errors import InputImageError
from .imaging import check_not_constant
from .locate import HeadAtlas, StepProgress, hippocampus_regions, register
from .modelfile import ModelBundle
from .quality import Quality
from .regions import Region
from .sides import label_names
from .volumes import run_counter

LIGHT_ORDER = ("green", "unknown", "yellow", "red")  # worse to the right


@dataclass
class SideSegmentation:
    """One side of a whole head: its box, ensemble (on the box) and light, and on the scan its
    label values, voxels and each class's mean probability summed."""

    region: Region
    ensemble: EnsembleResult
    quality: Quality
    values: List[int]
    voxels: int
    probability_sums: np.ndarray


def worst(qualities: Sequence[Quality]) -> Quality:
    """The overall light of several sides: the worse one."""
    return max(qualities, key=lambda quality: (LIGHT_ORDER.index(quality.light), -(quality.predicted_dice or 0.0)))


def locate_regions(image: sitk.Image, bundle: ModelBundle, sides: Sequence[str],
                   progress: Optional[StepProgress] = None) -> tuple:
    """(regions of the requested ``sides``, registration report) on a whole-head ``image``."""
    atlas = HeadAtlas.load()
    registration = register(image, atlas, progress)
    spec = bundle.preprocessing
    code = spec.orientation or "RAS"
    spacing = spec.spacing or [1.0, 1.0, 1.0]
    regions = hippocampus_regions(image, registration, atlas, code, spacing, spec.side)
    determinant = float(np.linalg.det(np.asarray(registration.transform.GetMatrix()).reshape(3, 3)))
    return ([region for region in regions if region.side in sides],
            dict(registration.to_dict(), determinant=round(determinant, 5)))


def segment_regions(
    image: sitk.Image,
    regions: Sequence[Region],
    bundle: ModelBundle,
    ensemble_of: Callable[[np.ndarray, str, Optional[ProgressCallback], RunCounter], EnsembleResult],
    judge: Callable[[EnsembleResult], Quality],
    progress: Optional[StepProgress] = None,
) -> tuple:
    """Segment each region and paste it back: (combined ensemble, [SideSegmentation], labels).

    The combined ensemble has one channel: the foreground probability and the summed standard
    deviation; its labels give each side's classes their own values (left first). Each run of a
    side is counted on the scan's voxels as it ends (its ensemble's ``run_counts``).
    """
    started = time.perf_counter()
    shape = tuple(image.GetSize())
    probability = np.zeros(shape, np.float32)
    deviation = np.zeros(shape, np.float32)
    labels = np.zeros(shape, np.uint8)
    classes = len(bundle.config.labels)
    names: Dict[int, str] = {}
    per_side: List[SideSegmentation] = []
    for index, region in enumerate(regions):
        crop = region.crop(image)
        try:
            check_not_constant(crop, "")
        except InputImageError:
            raise InputImageError(f"the {region.side} hippocampus box is empty (constant intensity); "
                                  "this does not look like a whole-head T1") from None
        step = f"{region.side} hippocampus"
        def run_labels(run: np.ndarray, region: Region = region) -> np.ndarray:
            return bundle.postprocessing.apply(label_map(region.paste(run, image)[1]))

        counter = run_counter(run_labels, classes)
        ensemble = ensemble_of(crop, region.side, (lambda done, runs, step=step: progress(step, done, runs))
                               if progress else None, counter)
        quality = judge(ensemble)
        where, pasted = region.paste(np.concatenate([ensemble.probability, ensemble.std]), image)
        side_probability, side_std = pasted[:classes], pasted[classes:]
        first = 1 + index * classes
        side_labels = bundle.postprocessing.apply(label_map(side_probability))
        values = np.where(side_labels > 0, side_labels + first - 1, 0).astype(np.uint8)
        labels[where] = np.where(values > 0, values, labels[where])
        probability[where] = np.maximum(probability[where], side_probability.sum(axis=0).clip(0, 1))
        deviation[where] = np.maximum(deviation[where], side_std.sum(axis=0))
        names.update(label_names(bundle.config.labels, region.side, first))
        per_side.append(SideSegmentation(region, ensemble, quality, list(range(first, first + classes)),
                                         int(np.count_nonzero(values)),
                                         side_probability.reshape(classes, -1).sum(axis=1, dtype=np.float64)))
    nqm = max(item.ensemble.nqm for item in per_side)
    runs = per_side[0].ensemble.runs
    combined = EnsembleResult(probability=probability[None], std=deviation[None], labels=labels, nqm=nqm,
                              runs=runs, seconds=time.perf_counter() - started)
    return combined, per_side, names
