"""Segment both hippocampi of a whole-head scan: locate them (``locate``), segment each
side's box on the model's grid (mirrored for the side the model did not learn), judge
each side and put the outputs back onto the scan's voxels."""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import SimpleITK as sitk

from .ensemble import EnsembleResult, ProgressCallback, RunCounter, label_map
from ..errors import InputImageError
from ..space.imaging import check_not_constant
from ..space.atlas import HeadAtlas
from ..space.locate import Registration, StepProgress, hippocampus_regions, register
from ..modelfile.bundle import ModelBundle
from ..quality.nqm import Quality, at_least
from ..space.regions import Region
from .result import SideResult
from ..quality.lights import LIGHT_ORDER
from .sides import label_names
from .volumes import MM3_PER_ML, run_counter, side_volume, voxel_volume_mm3


def overall_quality(sides: Sequence[SideResult]) -> Quality:
    """The overall light of several sides: the worse side's, with every side's caveats, each
    prefixed with its side; the other sides' caveats lead the worse side's explanation."""
    worst = max(sides, key=lambda side: (LIGHT_ORDER.index(side.quality.light), -(side.quality.predicted_dice or 0.0)))
    others = [f"{side.side}: {caveat}" for side in sides if side is not worst
              for caveat in side.quality.caveats if caveat not in worst.quality.caveats]
    caveats = [f"{side.side}: {caveat}" for side in sides for caveat in side.quality.caveats]
    return replace(worst.quality, explanation="; ".join(others + [worst.quality.explanation]),
                   caveats=tuple(dict.fromkeys(caveats)))


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
                   progress: Optional[StepProgress] = None,
                   registration: Optional[Registration] = None) -> LocatedRegions:
    """The regions of the requested ``sides`` on a whole-head ``image``, with the registration
    (``registration``: the image's, when it was registered already)."""
    atlas = HeadAtlas.load()
    if registration is None:
        registration = register(image, atlas, progress)
    spec = bundle.preprocessing
    code = spec.orientation or "RAS"
    spacing = spec.spacing or [1.0, 1.0, 1.0]
    regions = hippocampus_regions(image, registration, atlas, code, spacing, spec.side)
    determinant = float(np.linalg.det(np.asarray(registration.transform.GetMatrix()).reshape(3, 3)))
    return LocatedRegions([region for region in regions if region.side in sides],
                          dict(registration.to_dict(), determinant=round(determinant, 5)))


def segment_regions(
    image: sitk.Image,
    regions: Sequence[Region],
    bundle: ModelBundle,
    ensemble_of: Callable[[np.ndarray, str, Optional[ProgressCallback], RunCounter], EnsembleResult],
    judge: Callable[[EnsembleResult, float], Quality],
    progress: Optional[StepProgress] = None,
    etiv_ml: Optional[float] = None,
) -> HeadSegmentation:
    """Segment each region, paste it back onto ``image``'s voxels and judge it there
    (``judge(ensemble, volume_ml)``). Each side gets its volume (``volumes``): each of its runs
    is counted on the scan's voxels as it ends, and ``etiv_ml`` (the head's eTIV) gives its
    fraction."""
    started = time.perf_counter()
    shape = tuple(image.GetSize())
    probability = np.zeros(shape, np.float32)
    deviation = np.zeros(shape, np.float32)
    labels = np.zeros(shape, np.uint8)
    classes = len(bundle.config.labels)
    names: Dict[int, str] = {}
    sides: List[SideResult] = []
    ensembles: List[EnsembleResult] = []
    probability_sums: List[np.ndarray] = []
    voxel_mm3 = voxel_volume_mm3(image.GetSpacing())
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

        ensemble = ensemble_of(crop, region.side, (lambda done, runs, step=step: progress(step, done, runs))
                               if progress else None, run_counter(run_labels, classes))
        where, pasted = region.paste(np.concatenate([ensemble.probability, ensemble.std]), image)
        side_probability, side_std = pasted[:classes], pasted[classes:]
        first = 1 + index * classes
        side_labels = bundle.postprocessing.apply(label_map(side_probability))
        values = np.where(side_labels > 0, side_labels + first - 1, 0).astype(np.uint8)
        quality = judge(ensemble, np.count_nonzero(values) * voxel_mm3 / MM3_PER_ML)
        if region.doubt:
            quality = at_least(quality, "yellow", region.doubt)
        labels[where] = np.where(values > 0, values, labels[where])
        probability[where] = np.maximum(probability[where], side_probability.sum(axis=0).clip(0, 1))
        deviation[where] = np.maximum(deviation[where], side_std.sum(axis=0))
        names.update(label_names(bundle.config.labels, region.side, first))
        sides.append(SideResult(region.side, region.reason, ensemble.nqm, quality, int(np.count_nonzero(values)),
                                region.to_dict(), list(range(first, first + classes))))
        ensembles.append(ensemble)
        probability_sums.append(side_probability.reshape(classes, -1).sum(axis=1, dtype=np.float64))
    for side, ensemble, sums in zip(sides, ensembles, probability_sums):  # on the final label map
        side.volume = side_volume(side.side, side.quality.light, labels, side.label_values,
                                  [names[value] for value in side.label_values], voxel_mm3, ensemble.run_counts,
                                  etiv_ml, sums)
    combined = EnsembleResult(probability=probability[None], std=deviation[None], labels=labels,
                              nqm=max(ensemble.nqm for ensemble in ensembles), runs=ensembles[0].runs,
                              seconds=time.perf_counter() - started)
    return HeadSegmentation(combined, sides, names)
