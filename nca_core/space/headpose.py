"""The head's pose in a scan: where the head template lies on it, whatever the scanner wrote.

A head may come with neck, shoulders and face, pitched or rolled, or from a patient lying
prone or on a side (then the header's physical axes are not the patient's). So the pose is
searched, not assumed: each of the 24 ways of turning a cube (every physical axis may be the
head's up, front or left) and a few tilts about them, each placed by the top of the head
(the one landmark that neck, face and field of view leave alone: the brain's centre lies a
steady distance below it), scored by the match of the two heads at 8 mm; the best is then
fitted rigidly and affinely at 8 and 4 mm.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import List, Tuple

import numpy as np
import SimpleITK as sitk

from .atlas import composed

POSE_SPACING = 4.0  # mm: the grid the head template and the scan are compared on
TOP_TO_BRAIN_MM = 65.0  # from the top of the head down to the brain's centre (adults, about)
SLAB_MM = 110.0  # the top part of a head whose centroid places the brain front-back and left-right
TILTS = (-20.0, 0.0, 20.0)  # degrees of pitch and roll tried about each of the best orientations
BEST_ORIENTATIONS = 3
# The pose fit stops when its step falls below this (mm): the brain fit that follows refines the
# pose (1e-3 took 0.2 s more per head; no hippocampus of the 20 real heads moved by more than 0.03 mm).
MIN_STEP_MM = 1e-2


@dataclass(frozen=True)
class HeadPose:
    """Head-template points -> scan points, and how well the two heads match (Pearson r)."""

    transform: sitk.Transform
    correlation: float


def on_grid(image: sitk.Image, spacing: float) -> sitk.Image:
    """``image`` as float32 on a grid of ``spacing`` mm with its own axes (smoothed first)."""
    image = sitk.Cast(image, sitk.sitkFloat32)
    sigma = [max(0.01, (spacing**2 - s**2)) ** 0.5 / 2 for s in image.GetSpacing()]
    image = sitk.SmoothingRecursiveGaussian(image, sigma)
    extent = np.asarray(image.GetSize()) * np.asarray(image.GetSpacing())
    size = [max(1, int(round(e / spacing))) for e in extent]
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    first_edge = np.asarray(image.TransformContinuousIndexToPhysicalPoint([-0.5, -0.5, -0.5]))
    origin = first_edge + direction @ np.full(3, spacing / 2)
    return sitk.Resample(image, size, sitk.Transform(), sitk.sitkLinear, [float(o) for o in origin],
                         [spacing] * 3, image.GetDirection(), 0.0, sitk.sitkFloat32)


def find_head_pose(scan: sitk.Image, head: sitk.Image, mask: sitk.Image, orientations: int = 1) -> List[HeadPose]:
    """The template ``head`` (compared inside ``mask``) fitted onto ``scan`` (float32 on the
    ``POSE_SPACING`` grid): the whole-head template, or for a skull-stripped scan the brain's.

    Returns a fit from each of the ``orientations`` best-scoring orientations, best first (a
    brain alone scores its front and back alike at 8 mm; a head with its face does not).
    """
    template_points, scan_points = head_points(head), head_points(scan)
    coarse = metric(sitk.BinShrink(mask, [2] * 3), [1], [0.0])
    small_head, small_scan = sitk.BinShrink(head, [2] * 3), sitk.BinShrink(scan, [2] * 3)

    def score(rotation: np.ndarray) -> Tuple[float, sitk.Euler3DTransform]:
        start = placed(rotation, template_points, scan_points)
        coarse.SetInitialTransform(start, inPlace=False)
        return coarse.MetricEvaluate(small_head, small_scan), start

    ranked = sorted((score(rotation)[0], index) for index, rotation in enumerate(ROTATIONS))
    best = [min((score(ROTATIONS[index] @ turn(0, pitch) @ turn(1, roll)) for pitch in TILTS for roll in TILTS),
                key=lambda item: item[0]) for _, index in ranked[:BEST_ORIENTATIONS]]
    best.sort(key=lambda item: item[0])
    return [_fitted(head, scan, mask, start) for _, start in best[:orientations]]


def _fitted(head: sitk.Image, scan: sitk.Image, mask: sitk.Image, start: sitk.Transform) -> HeadPose:
    """``start`` refined rigidly, then affinely, at 8 and 4 mm."""
    residual: sitk.Transform = sitk.Euler3DTransform()  # fitted after ``start`` (no 180° turn to optimise)
    for stage in (sitk.VersorRigid3DTransform(), sitk.AffineTransform(3)):
        stage.SetCenter(start.GetCenter())
        stage.SetMatrix(residual.GetMatrix())
        stage.SetTranslation(residual.GetTranslation())
        fit = metric(mask, [2, 1], [4.0, 0.0])
        fit.SetOptimizerAsRegularStepGradientDescent(2.0, MIN_STEP_MM, 100, relaxationFactor=0.6,
                                                     gradientMagnitudeTolerance=1e-6)
        fit.SetOptimizerScalesFromPhysicalShift()
        fit.SetMovingInitialTransform(start)
        fit.SetInitialTransform(stage, inPlace=True)
        fit.Execute(head, scan)
        residual = stage
    transform = composed(start, residual)
    return HeadPose(transform, correlation(head, scan, mask, transform))


def metric(mask: sitk.Image, shrink: List[int], smooth: List[float], sampling: float = 0.2) -> sitk.ImageRegistrationMethod:
    """Mattes mutual information over ``mask`` of the fixed image, ``sampling`` of it sampled."""
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(32)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(sampling, seed=1)
    method.SetMetricFixedMask(mask)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetShrinkFactorsPerLevel(shrink)
    method.SetSmoothingSigmasPerLevel(smooth)
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    return method


def correlation(fixed: sitk.Image, moving: sitk.Image, mask: sitk.Image, transform: sitk.Transform) -> float:
    """Pearson correlation of ``fixed`` and ``moving`` mapped onto it, inside ``mask``."""
    warped = sitk.Resample(moving, fixed, transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    inside = sitk.GetArrayViewFromImage(mask) > 0
    a = sitk.GetArrayViewFromImage(fixed)[inside].astype(np.float64)
    b = sitk.GetArrayViewFromImage(warped)[inside].astype(np.float64)
    if a.std() == 0 or b.std() == 0:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


def head_points(image: sitk.Image) -> np.ndarray:
    """Physical points (N, 3) of the largest bright object (the head), a sample of them."""
    mask = sitk.RelabelComponent(sitk.ConnectedComponent(sitk.OtsuThreshold(image, 0, 1))) == 1
    index = np.argwhere(sitk.GetArrayViewFromImage(mask).transpose(2, 1, 0) > 0)[::5].astype(float)
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    return np.asarray(image.GetOrigin()) + (index * np.asarray(image.GetSpacing())) @ direction.T


def brain_centre(rotation: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Where the brain's centre lies in a head whose up is ``rotation``'s image of S: below
    the top of the head, under the centroid of the head's top part."""
    up = rotation @ np.array([0.0, 0.0, 1.0])
    height = points @ up
    top = height.max()
    centroid = points[height > top - SLAB_MM].mean(axis=0)
    return centroid + (top - TOP_TO_BRAIN_MM - centroid @ up) * up


def placed(rotation: np.ndarray, template_points: np.ndarray, scan_points: np.ndarray) -> sitk.Euler3DTransform:
    """Head template -> scan turned by ``rotation``, the brain centres of both heads matched."""
    template_centre = brain_centre(np.eye(3), template_points)
    transform = sitk.Euler3DTransform()
    transform.SetCenter([float(c) for c in template_centre])
    transform.SetMatrix([float(v) for v in rotation.reshape(-1)])
    transform.SetTranslation([float(t) for t in brain_centre(rotation, scan_points) - template_centre])
    return transform


def turn(axis: int, degrees: float) -> np.ndarray:
    """The rotation by ``degrees`` about physical axis ``axis`` (0: x, 1: y, 2: z)."""
    angle = np.radians(degrees)
    i, j = [k for k in range(3) if k != axis]
    rotation = np.eye(3)
    rotation[i, i] = rotation[j, j] = np.cos(angle)
    rotation[i, j], rotation[j, i] = -np.sin(angle), np.sin(angle)
    return rotation


def _axis_rotations() -> List[np.ndarray]:
    """The 24 rotations that map the axes onto the axes (a cube's turns)."""
    found = []
    for order in itertools.permutations(range(3)):
        for signs in itertools.product((1.0, -1.0), repeat=3):
            rotation = np.zeros((3, 3))
            for row, (column, sign) in enumerate(zip(order, signs)):
                rotation[row, column] = sign
            if np.linalg.det(rotation) > 0:
                found.append(rotation)
    return found


ROTATIONS = _axis_rotations()
