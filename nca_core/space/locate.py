"""Find both hippocampi in a whole-head T1: the head's pose (``headpose``), then the brain
template fitted affinely onto the scan from there, then one box per side where the template's
hippocampi land, cut the way the training crops were cut.

A volume whose head match stays poor is no whole-head T1 and is refused in one line. A head
whose brain fit stays poor is still segmented: its report says why its light cannot be green.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

from ..errors import InputImageError
from .atlas import HeadAtlas, composed
from .headpose import POSE_SPACING, correlation, find_head_pose, on_grid
from .regions import SIDES, Region, box_grid, fraction_inside

# The head template must match a scan this well (Pearson r over the head) for it to be a head.
MIN_HEAD_CORRELATION = 0.3
# Heads with skull, face and neck match the head template better than this (IXI 0.77-0.83, Colin 27 0.62);
# below it the scan may be a brain without skull, whose pose the brain template is also asked for.
WHOLE_HEAD_CORRELATION = 0.6
BRAIN_ORIENTATIONS = 3  # a brain's pose is fitted from this many orientations, the brain fit judges
# A brain fit this good (r inside the brain) is trusted; below it the light is at most yellow.
MIN_CORRELATION = 0.55  # IXI heads fitted right: 0.56-0.71; fitted wrong (skull-stripped): 0.48-0.51
# Below this the head's brain does not look T1-weighted (T2, FLAIR and CT correlate near 0 or below).
MIN_T1_CORRELATION = 0.2
# Scales of the brain fit outside this range are no adult head (or a wrong fit).
SCALE_RANGE = (0.75, 1.35)
MIN_BOX_INSIDE = 0.5  # fraction of each box inside the scan below which a side cannot be segmented
FULL_BOX_INSIDE = 0.95  # below this, part of the hippocampus may be cut off: the light is at most yellow
# Crops larger than this many times a training crop (per sorted extent) count as whole scans.
CROP_FACTOR = 2.0
BRAIN_SPACING = 2.0  # mm: the brain template's grid, and the scan's for the brain fit
SAMPLING = 0.25  # fraction of the brain template's voxels the brain fit samples (0.1 stalled on Colin 27)
FINE_SAMPLING = 0.12  # at 2 mm (8x the voxels of 4 mm): about 4x the points of the 4 mm stage
FINE_ITERATIONS = 15

StepProgress = Callable[[str, int, int], None]  # (step, done, total)


@dataclass(frozen=True)
class Registration:
    """Brain-template physical points -> scan physical points, and how well it fits."""

    transform: sitk.AffineTransform
    correlation: float  # brain template and scan inside the brain
    head_correlation: float  # head template and scan over the head
    scales: Tuple[float, float, float]
    seconds: float = 0.0  # how long the registration took

    @property
    def rotation(self) -> np.ndarray:
        """The pose of the head: the rotation nearest to the affine's matrix."""
        u, _, vt = np.linalg.svd(np.asarray(self.transform.GetMatrix()).reshape(3, 3))
        if np.linalg.det(u @ vt) < 0:
            u[:, -1] *= -1
        return u @ vt

    @property
    def doubt(self) -> Optional[str]:
        """Why the localisation is uncertain, or None when the fit is good."""
        low, high = SCALE_RANGE
        if self.correlation < MIN_CORRELATION:
            return (f"the head template fits this scan poorly (correlation {self.correlation:.2f} inside the "
                    f"brain, {MIN_CORRELATION} expected): check that the box covers the hippocampus")
        if not all(low <= s <= high for s in self.scales):
            return (f"the fitted head is unusually sized (scales {', '.join(f'{s:.2f}' for s in self.scales)}): "
                    "check that the box covers the hippocampus")
        return None

    def to_dict(self) -> Dict[str, object]:
        return {"correlation": round(self.correlation, 4), "head_correlation": round(self.head_correlation, 4),
                "scales": [round(s, 3) for s in self.scales], "doubt": self.doubt, "seconds": round(self.seconds, 3)}


def is_whole_scan(image: sitk.Image, atlas_crop_mm: Sequence[float]) -> bool:
    """Whether ``image`` is much larger than a training crop (in physical extent)."""
    extent = sorted(n * s for n, s in zip(image.GetSize(), image.GetSpacing()))
    return any(e > CROP_FACTOR * c for e, c in zip(extent, sorted(atlas_crop_mm)))


def register(image: sitk.Image, atlas: HeadAtlas, progress: Optional[StepProgress] = None) -> Registration:
    """The brain template fitted onto ``image``: the head's pose, then an affine brain fit.

    Raises InputImageError when ``image`` does not match the head template (no head), or its
    brain does not match the T1 brain template (another contrast).
    """
    started = time.perf_counter()
    if progress:
        progress("registration", 0, 2)
    pose_scan = on_grid(image, POSE_SPACING)
    pose = find_head_pose(pose_scan, atlas.head, atlas.head_mask)[0]
    if pose.correlation < MIN_HEAD_CORRELATION:
        raise InputImageError(
            "this is neither a hippocampus crop nor a whole-head T1 MRI: it does not match the head template "
            f"(correlation {pose.correlation:.2f}, needs {MIN_HEAD_CORRELATION}); to segment it as it is, "
            "pass --locate none")
    if progress:
        progress("registration", 1, 2)
    scan = on_grid(image, BRAIN_SPACING)

    def fitted_from(start: sitk.Transform) -> List[Tuple[float, sitk.Transform]]:
        return [(correlation(atlas.template, scan, atlas.brain_mask, t), t) for t in (_fit_brain(atlas, scan, start), start)]

    fits = fitted_from(composed(pose.transform, atlas.template_to_head))
    head_fit_r = max(r for r, _ in fits)
    if head_fit_r < MIN_T1_CORRELATION:  # judged on the head's own pose: other poses of a brain can match by chance
        raise InputImageError(
            f"this head does not look like a T1-weighted MRI (its brain correlates {head_fit_r:.2f} with the T1 "
            f"template, {MIN_CORRELATION} or more expected); the model knows T1 only: to segment it anyway, "
            "pass --locate none with a crop around the hippocampus")
    if pose.correlation < WHOLE_HEAD_CORRELATION:  # maybe a brain without skull: its pose from the brain
        for brain in find_head_pose(pose_scan, atlas.template, atlas.brain_rim_mask, BRAIN_ORIENTATIONS):
            fits += fitted_from(brain.transform)
    brain_r, transform = max(fits, key=lambda item: item[0])  # a fit only where it improved the match
    if progress:
        progress("registration", 2, 2)
    scales = tuple(float(s) for s in np.linalg.svd(np.asarray(transform.GetMatrix()).reshape(3, 3), compute_uv=False))
    return Registration(transform, brain_r, pose.correlation, scales, time.perf_counter() - started)


def hippocampus_regions(image: sitk.Image, registration: Registration, atlas: HeadAtlas, model_code: str,
                        model_spacing: Sequence[float], model_side: Optional[str]) -> List[Region]:
    """One box per side on ``image``; a side the model did not learn gets a mirrored box.

    Raises InputImageError when a box lies mostly outside the scan.
    """
    spacing = np.asarray(model_spacing, dtype=float)
    size = np.maximum(1, np.round(np.asarray(atlas.crop_size_mm) / spacing)).astype(int)
    centre_voxel = np.asarray(atlas.centre_in_crop_mm) / spacing
    regions = []
    for side in SIDES:
        centre = registration.transform.TransformPoint(atlas.centres[side])
        mirrored = model_side is not None and side != model_side
        grid = box_grid(centre, registration.rotation, model_code, spacing, size, centre_voxel, mirrored)
        region = Region(side, grid, mirrored, f"located: the template's {side} hippocampus",
                        tuple(float(c) for c in centre), _doubt(registration, grid, image, side))
        regions.append(region)
    return regions


def _doubt(registration: Registration, grid: sitk.Image, image: sitk.Image, side: str) -> Optional[str]:
    """Why this side's box may miss its hippocampus, or None."""
    inside = fraction_inside(grid, image)
    if inside < MIN_BOX_INSIDE:
        raise InputImageError(f"the {side} hippocampus lies outside the scanned field of view "
                              f"({100 * inside:.0f}% of its box is inside the scan); it cannot be segmented")
    if inside < FULL_BOX_INSIDE:
        return f"{100 * (1 - inside):.0f}% of the box lies outside the scan: part of the hippocampus may be missing"
    return registration.doubt


def _fit_brain(atlas: HeadAtlas, scan: sitk.Image, start: sitk.Transform) -> sitk.AffineTransform:
    """The brain template fitted affinely onto ``scan`` from ``start`` (correlation inside the
    brain: both are T1, and correlation keeps the brain off the bright scalp): to convergence at
    4 mm, then a few short steps at 2 mm (the fine level of one run took most of its time, and
    moved the hippocampi by 0.3 mm or less after these steps)."""
    transform = sitk.AffineTransform(3)
    transform.SetMatrix(start.GetMatrix())
    transform.SetTranslation(start.GetTranslation())
    for stage in BRAIN_FIT_STAGES:
        _affine_stage(atlas, scan, transform, stage)
    return transform


@dataclass(frozen=True)
class FitStage:
    """One resolution of the brain fit."""

    shrink: int  # of the brain template's 2 mm grid
    smoothing_mm: float
    sampling: float  # fraction of the brain's voxels sampled
    step_mm: float  # the optimiser's first step
    iterations: int


BRAIN_FIT_STAGES = (FitStage(2, 2.0, SAMPLING, 1.0, 100), FitStage(1, 0.0, FINE_SAMPLING, 0.25, FINE_ITERATIONS))


def _affine_stage(atlas: HeadAtlas, scan: sitk.Image, transform: sitk.AffineTransform, stage: FitStage) -> None:
    """``transform`` improved in place by one resolution of the brain fit."""
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsCorrelation()
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(stage.sampling, seed=1)
    method.SetMetricFixedMask(atlas.brain_mask)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetShrinkFactorsPerLevel([stage.shrink])
    method.SetSmoothingSigmasPerLevel([stage.smoothing_mm])
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    method.SetOptimizerAsRegularStepGradientDescent(stage.step_mm, 1e-3, stage.iterations, relaxationFactor=0.6,
                                                    gradientMagnitudeTolerance=1e-6)
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetInitialTransform(transform, inPlace=True)
    method.Execute(atlas.template, scan)
