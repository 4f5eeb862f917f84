"""Segment both hippocampi of a whole-head scan: locate them (``locate``), segment each
side's box on the model's grid (mirrored for the side the model did not learn), judge
each side and put the outputs back onto the scan's voxels."""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import SimpleITK as sitk

from .ensemble import EnsembleResult, ProgressCallback, label_map
from ..errors import InputImageError
from ..space.imaging import check_not_constant
from ..space.locate import HeadAtlas, StepProgress, hippocampus_regions, register
from ..modelfile.bundle import ModelBundle
from ..quality.nqm import Quality
from ..space.regions import Region
from .result import SideResult
from ..quality.lights import LIGHT_ORDER
from .sides import label_names


def worst(qualities: Sequence[Quality]) -> Quality:
    """The overall light of several sides: the worse one."""
    return max(qualities, key=lambda quality: (LIGHT_ORDER.index(quality.light), -(quality.predicted_dice or 0.0)))


@dataclass
class LocatedRegions:
    """The boxes of the requested sides on a whole-head scan and the registration's report."""

    regions: List[Region]
    registration: Dict[str, Any]


@dataclass
class HeadSegmentation:
    """Every side of a head segmented and put back onto the scan's voxels.

    ``combined`` has one channel: the foreground probability and the summed standard deviation;
    its labels give each side's classes their own values (left first), named in ``labels``.
    """

    combined: EnsembleResult
    sides: List[SideResult]
    labels: Dict[int, str]


def locate_regions(image: sitk.Image, bundle: ModelBundle, sides: Sequence[str],
                   progress: Optional[StepProgress] = None) -> LocatedRegions:
    """The regions of the requested ``sides`` on a whole-head ``image``, with the registration."""
    atlas = HeadAtlas.load()
    registration = register(image, atlas, progress)
    spec = bundle.preprocessing
    code = spec.orientation or "RAS"
    spacing = spec.spacing or [1.0, 1.0, 1.0]
    regions = hippocampus_regions(image, registration, atlas, code, spacing, spec.side)
    return LocatedRegions([region for region in regions if region.side in sides], registration.to_dict())


def segment_regions(
    image: sitk.Image,
    regions: Sequence[Region],
    bundle: ModelBundle,
    ensemble_of: Callable[[np.ndarray, str, Optional[ProgressCallback]], EnsembleResult],
    judge: Callable[[EnsembleResult], Quality],
    progress: Optional[StepProgress] = None,
) -> HeadSegmentation:
    """Segment each region, judge it and paste it back onto ``image``'s voxels."""
    started = time.perf_counter()
    shape = tuple(image.GetSize())
    probability = np.zeros(shape, np.float32)
    deviation = np.zeros(shape, np.float32)
    labels = np.zeros(shape, np.uint8)
    classes = len(bundle.config.labels)
    names: Dict[int, str] = {}
    sides: List[SideResult] = []
    ensembles: List[EnsembleResult] = []
    for index, region in enumerate(regions):
        crop = region.crop(image)
        try:
            check_not_constant(crop, "")
        except InputImageError:
            raise InputImageError(f"the {region.side} hippocampus box is empty (constant intensity); "
                                  "this does not look like a whole-head T1") from None
        step = f"{region.side} hippocampus"
        ensemble = ensemble_of(crop, region.side, (lambda done, runs, step=step: progress(step, done, runs))
                               if progress else None)
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
        sides.append(SideResult(region.side, region.reason, ensemble.nqm, quality, int(np.count_nonzero(values)),
                                region.to_dict(), list(range(first, first + classes))))
        ensembles.append(ensemble)
    combined = EnsembleResult(probability=probability[None], std=deviation[None], labels=labels,
                              nqm=max(ensemble.nqm for ensemble in ensembles), runs=ensembles[0].runs,
                              seconds=time.perf_counter() - started)
    return HeadSegmentation(combined, sides, names)
