"""Find both hippocampi in a whole-head T1: an affine registration (SimpleITK) of the
shipped MNI152 brain template onto the scan, then one box per side where the template's
hippocampi land, cut the way the training crops were cut.

The template and where its hippocampi lie come from ``Resources/Templates`` (made by
``scripts/make_head_template.py`` from the ICBM 2009a template inside the ``nilearn`` wheel).
"""
from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

from ..errors import InputImageError
from .regions import SIDES, Region, box_grid

TEMPLATE_FILE = "mni152_t1_2mm.nii.gz"
ATLAS_FILE = "hippocampus_atlas.json"
# A registered scan must match the template this well (normalised correlation inside the brain).
MIN_CORRELATION = 0.5
# Scales of the found affine outside this range are no head of an adult (or a wrong fit).
SCALE_RANGE = (0.75, 1.35)
MIN_BOX_INSIDE = 0.9  # fraction of each box that must lie inside the scan
# Crops larger than this many times a training crop (per sorted extent) count as whole scans.
CROP_FACTOR = 2.0
REGISTRATION_SPACING = 2.0  # mm: the template's and the registered scan's grid
SAMPLING = 0.05  # fraction of the template's brain voxels the metric samples

StepProgress = Callable[[str, int, int], None]  # (step, done, total)


def template_dirs() -> List[Path]:
    """``Resources/Templates`` beside the package (checkout, Slicer) or the installed copy."""
    package = Path(__file__).resolve().parents[1]
    return [d for d in (package.parent / "Resources" / "Templates", package / "templates") if d.is_dir()]


@dataclass(frozen=True)
class HeadAtlas:
    """The template and, in its physical space, each hippocampus and the training crops' box."""

    template: sitk.Image  # float32, brain only (0 outside)
    centres: Dict[str, Tuple[float, float, float]]  # side -> LPS mm
    crop_size_mm: Tuple[float, float, float]  # training crop extent in the model's orientation
    centre_in_crop_mm: Tuple[float, float, float]  # where the hippocampus centre sits in it

    @classmethod
    @functools.lru_cache(maxsize=None)
    def load(cls, folder: Optional[Path] = None) -> "HeadAtlas":
        """The atlas of ``folder`` (default: the shipped one), read from disk once per process."""
        folders = [folder] if folder else template_dirs()
        for candidate in folders:
            if (candidate / ATLAS_FILE).is_file() and (candidate / TEMPLATE_FILE).is_file():
                data = json.loads((candidate / ATLAS_FILE).read_text(encoding="utf-8"))
                template = sitk.Cast(sitk.ReadImage(str(candidate / TEMPLATE_FILE)), sitk.sitkFloat32)
                return cls(template, {side: _ras_to_lps(data["centres_ras_mm"][side]) for side in SIDES},
                           tuple(data["crop_size_mm"]), tuple(data["centre_in_crop_mm"]))
        raise InputImageError("the head template is not installed (Resources/Templates); reinstall M3DNCASegment")


@dataclass(frozen=True)
class Registration:
    """Template physical points -> scan physical points, and how well it fits."""

    transform: sitk.AffineTransform
    correlation: float
    scales: Tuple[float, float, float]

    @property
    def rotation(self) -> np.ndarray:
        """The pose of the head: the rotation nearest to the affine's matrix."""
        u, _, vt = np.linalg.svd(np.asarray(self.transform.GetMatrix()).reshape(3, 3))
        rotation = u @ vt
        if np.linalg.det(rotation) < 0:
            u[:, -1] *= -1
            rotation = u @ vt
        return rotation

    def to_dict(self) -> Dict[str, object]:
        return {"correlation": round(self.correlation, 4), "scales": [round(s, 3) for s in self.scales]}


def is_whole_scan(image: sitk.Image, atlas_crop_mm: Sequence[float]) -> bool:
    """Whether ``image`` is much larger than a training crop (in physical extent)."""
    extent = sorted(n * s for n, s in zip(image.GetSize(), image.GetSpacing()))
    return any(e > CROP_FACTOR * c for e, c in zip(extent, sorted(atlas_crop_mm)))


def register(image: sitk.Image, atlas: HeadAtlas, progress: Optional[StepProgress] = None) -> Registration:
    """Affine registration of the template onto ``image``.

    Raises InputImageError when the result is no head (poor match, implausible scales).
    """
    moving = _prepared(image)
    fixed = atlas.template
    mask = sitk.Cast(fixed > 0, sitk.sitkUInt8)
    start = _best_start(fixed, moving, mask)
    stages = [sitk.VersorRigid3DTransform(), sitk.AffineTransform(3)]  # rigid first, then scale and shear
    transform: sitk.Transform = start
    for done, stage in enumerate(stages):
        if progress:
            progress("registration", done, len(stages))
        stage.SetCenter(start.GetCenter())
        stage.SetTranslation(transform.GetTranslation())
        if isinstance(stage, sitk.AffineTransform):
            stage.SetMatrix(transform.GetMatrix())
        transform = _optimise(fixed, moving, mask, stage)
    if progress:
        progress("registration", len(stages), len(stages))
    affine = transform
    scales = tuple(float(s) for s in np.linalg.svd(np.asarray(affine.GetMatrix()).reshape(3, 3), compute_uv=False))
    result = Registration(affine, _correlation(fixed, moving, mask, affine), scales)
    _check(result)
    return result


def hippocampus_regions(image: sitk.Image, registration: Registration, atlas: HeadAtlas, model_code: str,
                        model_spacing: Sequence[float], model_side: Optional[str]) -> List[Region]:
    """One box per side on ``image``; a side the model did not learn gets a mirrored box."""
    spacing = np.asarray(model_spacing, dtype=float)
    size = np.maximum(1, np.round(np.asarray(atlas.crop_size_mm) / spacing)).astype(int)
    centre_voxel = np.asarray(atlas.centre_in_crop_mm) / spacing
    regions = []
    for side in SIDES:
        centre = registration.transform.TransformPoint(atlas.centres[side])
        mirrored = model_side is not None and side != model_side
        grid = box_grid(centre, registration.rotation, model_code, spacing, size, centre_voxel, mirrored)
        region = Region(side, grid, mirrored, f"located: the template's {side} hippocampus")
        if region.fraction_inside(image) < MIN_BOX_INSIDE:
            raise InputImageError(f"the {side} hippocampus found by registration lies outside the scan; "
                                  "this does not look like a whole-head T1 (to segment it as it is, pass --locate none)")
        regions.append(region)
    return regions


def _check(result: Registration) -> None:
    low, high = SCALE_RANGE
    if result.correlation < MIN_CORRELATION or not all(low <= s <= high for s in result.scales):
        raise InputImageError(
            "this is neither a hippocampus crop nor a whole-head T1 MRI: it does not match the head template "
            f"(correlation {result.correlation:.2f}, needs {MIN_CORRELATION}; scales "
            f"{', '.join(f'{s:.2f}' for s in result.scales)}); to segment it as it is, pass --locate none")


def _prepared(image: sitk.Image) -> sitk.Image:
    """The scan as float32 on a grid of the template's resolution (smoothed, then resampled)."""
    image = sitk.Cast(image, sitk.sitkFloat32)
    sigma = [max(0.01, (REGISTRATION_SPACING**2 - s**2)) ** 0.5 / 2 for s in image.GetSpacing()]
    image = sitk.SmoothingRecursiveGaussian(image, sigma)
    extent = np.asarray(image.GetSize()) * np.asarray(image.GetSpacing())
    size = [max(1, int(round(e / REGISTRATION_SPACING))) for e in extent]
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    first_edge = np.asarray(image.TransformContinuousIndexToPhysicalPoint([-0.5, -0.5, -0.5]))
    origin = first_edge + direction @ np.full(3, REGISTRATION_SPACING / 2)
    return sitk.Resample(image, size, sitk.Transform(), sitk.sitkLinear, [float(o) for o in origin],
                         [REGISTRATION_SPACING] * 3, image.GetDirection(), 0.0, sitk.sitkFloat32)


def _method(mask: sitk.Image, shrink: Sequence[int], smooth: Sequence[float]) -> sitk.ImageRegistrationMethod:
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(32)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(SAMPLING, seed=1)
    method.SetMetricFixedMask(mask)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetShrinkFactorsPerLevel(list(shrink))
    method.SetSmoothingSigmasPerLevel(list(smooth))
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    return method


def _best_start(fixed: sitk.Image, moving: sitk.Image, mask: sitk.Image) -> sitk.Euler3DTransform:
    """The best of a few translations around the scan's centre of mass (a head's includes
    neck and skull, so the brain may lie well above it)."""
    initial = sitk.CenteredTransformInitializer(fixed, moving, sitk.Euler3DTransform(),
                                                sitk.CenteredTransformInitializerFilter.MOMENTS)
    fixed, moving, mask = sitk.BinShrink(fixed, [2] * 3), sitk.BinShrink(moving, [2] * 3), sitk.BinShrink(mask, [2] * 3)
    method = _method(mask, [1], [0.0])
    best, best_value = initial, np.inf
    for dz in (-45.0, -30.0, -15.0, 0.0, 15.0):
        for dy in (-10.0, 0.0, 10.0):
            candidate = sitk.Euler3DTransform(initial)
            x, y, z = initial.GetTranslation()
            candidate.SetTranslation((x, y + dy, z + dz))
            method.SetInitialTransform(candidate, inPlace=False)
            value = method.MetricEvaluate(fixed, moving)
            if value < best_value:
                best, best_value = candidate, value
    return best


def _optimise(fixed: sitk.Image, moving: sitk.Image, mask: sitk.Image, transform: sitk.Transform) -> sitk.Transform:
    method = _method(mask, [2, 1], [2.0, 0.0])
    method.SetOptimizerAsRegularStepGradientDescent(2.0, 1e-3, 100, relaxationFactor=0.6,
                                                    gradientMagnitudeTolerance=1e-6)
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetInitialTransform(transform, inPlace=True)
    method.Execute(fixed, moving)
    return transform


def _correlation(fixed: sitk.Image, moving: sitk.Image, mask: sitk.Image, transform: sitk.Transform) -> float:
    """Pearson correlation of template and registered scan inside the template's brain."""
    warped = sitk.Resample(moving, fixed, transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    inside = sitk.GetArrayViewFromImage(mask) > 0
    a = sitk.GetArrayViewFromImage(fixed)[inside].astype(np.float64)
    b = sitk.GetArrayViewFromImage(warped)[inside].astype(np.float64)
    if a.std() == 0 or b.std() == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def _ras_to_lps(point: Sequence[float]) -> Tuple[float, float, float]:
    return (-float(point[0]), -float(point[1]), float(point[2]))
