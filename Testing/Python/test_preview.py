"""The preview PNG: slice, plane and orientation letters from the image's geometry."""
from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk

from nca_core.inference.ensemble import EnsembleResult
from nca_core.space.imaging import Volume
from nca_core.inference.result import SegmentationResult
from nca_core.cli.preview import choose_view, save_preview
from nca_core.quality.nqm import Quality

RAS_DIRECTION = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)  # the MSD hippocampus images'


def reference(array: np.ndarray, direction, spacing=(1.0, 1.0, 1.0)) -> sitk.Image:
    image = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
    image.SetDirection(direction)
    image.SetSpacing(spacing)
    return image


def labelled(shape=(12, 10, 8)) -> np.ndarray:
    labels = np.zeros(shape, dtype=np.uint8)
    labels[2:5, 3:8, 5] = 1  # most voxels in slice z = 5, off centre so that flips show
    labels[2:3, 3:4, 2] = 1
    return labels


def test_view_of_a_ras_volume_is_axial_radiological():
    labels = labelled()
    view = choose_view(labels, reference(labels, RAS_DIRECTION))
    assert (view.plane, view.axis, view.index, view.count) == ("axial", 2, 5, 8)
    assert view.letters == ("R", "L", "A", "P")
    assert view.caption() == "axial slice 6 of 8 (S 5.0 mm)"


@pytest.mark.parametrize("flip, axes", [((0, 1), (0, 1, 2)), ((), (2, 1, 0)), ((2,), (1, 2, 0))])
def test_the_same_anatomy_stored_otherwise_gives_the_same_picture(flip, axes):
    """Flipping or swapping the stored axes (with a matching direction) changes nothing shown."""
    labels = labelled()
    image = reference(labels, RAS_DIRECTION)
    restored = sitk.PermuteAxes(sitk.Flip(image, [a in flip for a in range(3)]), list(axes))
    array = sitk.GetArrayFromImage(restored).transpose(2, 1, 0)
    shown, view = choose_view(labels, image), choose_view(array, restored)
    assert np.array_equal(shown.take(labels), view.take(array))
    assert (view.plane, view.letters) == ("axial", ("R", "L", "A", "P"))


def test_thick_slices_are_shown_in_their_plane_with_the_voxels_aspect():
    labels = labelled()
    coronal = (-1.0, 0.0, 0.0, 0.0, 0.0, -1.0, 0.0, 1.0, 0.0)  # axes: to the right, up, to the front
    view = choose_view(labels, reference(labels, coronal, spacing=(0.8, 0.5, 3.0)))
    assert view.plane == "coronal" and view.axis == 2 and view.letters == ("R", "L", "S", "I")
    assert view.aspect == pytest.approx(0.5 / 0.8)  # rows run along the second axis, columns along the first
    assert choose_view(labels, reference(labels, coronal)).plane == "axial"  # thin slices: axial


@pytest.mark.parametrize("light, nqm, dice", [("green", 0.05, 0.92), ("unknown", 0.0, None), ("red", math.inf, 0.0)])
def test_preview_is_written_for_every_light(tmp_path, light, nqm, dice):
    labels = labelled() if math.isfinite(nqm) else np.zeros((12, 10, 8), dtype=np.uint8)
    probability = labels[None].astype(np.float32)
    ensemble = EnsembleResult(probability=probability, std=0.1 * probability, labels=labels, nqm=nqm, runs=10,
                              seconds=1.0)
    result = SegmentationResult(ensemble=ensemble, quality=Quality(light, dice, "explanation"),
                                model_name="hippocampus", device="cpu", seconds=1.0)
    array = np.random.default_rng(0).random(labels.shape).astype(np.float32)
    volume = Volume(array=array, reference=reference(array, RAS_DIRECTION), name="case", source="case.nii.gz")
    save_preview(volume, result, tmp_path / "case_preview.png")
    assert (tmp_path / "case_preview.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
