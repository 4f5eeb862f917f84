"""The preview PNG: slice, plane and orientation letters from the image's geometry."""
from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk

from nca_core.inference.ensemble import EnsembleResult
from nca_core.space.imaging import Volume
from nca_core.inference.result import SegmentationResult, SideResult
from nca_core.cli.overview import coronal_overview
from nca_core.cli.preview import choose_view, save_preview
from nca_core.quality.lights import light_color
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


def whole_head(direction_code: str):
    """A head-sized volume (LPS x, y, z = 40 x 30 x 50 mm) whose intensity tells the voxel's
    physical point, two hippocampus boxes in the report and a segmentation inside the left one,
    stored with the axes of ``direction_code``; the same anatomy whatever the code."""
    from nca_core.space.regions import code_axes

    axes = code_axes(direction_code)  # columns: each index axis in LPS
    extent = np.array([40.0, 30.0, 50.0])
    size = np.rint(np.abs(axes.T) @ extent).astype(int)
    low = np.array([-19.5, -14.5, -24.5])  # the first voxel centre along each LPS axis
    origin = low + np.where(axes.sum(axis=1) < 0, extent - 1, 0)  # an axis running down starts at the top
    grid = sitk.Image([int(s) for s in size], sitk.sitkFloat32)
    grid.SetDirection([float(d) for d in axes.reshape(-1)])
    grid.SetOrigin([float(o) for o in origin])
    index = np.stack(np.meshgrid(*[np.arange(s) for s in size], indexing="ij"), axis=-1).reshape(-1, 3)
    points = index @ axes.T + origin  # 1 mm spacing
    array = (points[:, 0] * 3 + points[:, 2] * 0.1 + 200).reshape(tuple(size)).astype(np.float32)
    labels = ((np.abs(points[:, 0] - 10) < 3) & (np.abs(points[:, 1]) < 4) & (np.abs(points[:, 2] + 5) < 3))
    labels = labels.reshape(tuple(size)).astype(np.uint8)
    probability = labels[None].astype(np.float32)
    ensemble = EnsembleResult(probability=probability, std=0.1 * probability, labels=labels, nqm=0.05, runs=2,
                              seconds=1.0)
    box = dict(size=[8, 12, 10], spacing_mm=[1.0, 1.0, 1.0], direction=list(code_axes("RAS").reshape(-1)))
    sides = [SideResult("left", "located", 0.05, Quality("green", 0.9, ""), int(labels.sum()),
                        dict(box, centre_lps_mm=[10.0, 0.0, -5.0], mirrored=False), [1]),
             SideResult("right", "located", 0.3, Quality("red", 0.5, ""), 0,
                        dict(box, centre_lps_mm=[-10.0, 2.0, -5.0], mirrored=True), [2])]
    result = SegmentationResult(ensemble=ensemble, quality=Quality("red", 0.5, "explanation"), model_name="m",
                                device="cpu", seconds=1.0, sides=sides, input_spacing=(1.0, 1.0, 1.0))
    return Volume(array=array, reference=grid, name="head", source="head.nii.gz"), result


@pytest.mark.parametrize("code", ["LPS", "RAS", "LIA", "SAR"])
def test_overview_is_upright_and_radiological_whatever_the_storage(code):
    overview = coronal_overview(*whole_head(code))
    assert overview.position == "A -1.0 mm"  # the boxes' mean centre, y = 1 (LPS)
    rows, columns = overview.image.shape
    assert overview.image[rows // 2, -1] > overview.image[rows // 2, 0]  # patient's left (LPS x up) on the right
    assert overview.image[0, columns // 2] > overview.image[-1, columns // 2]  # superior on top
    assert np.allclose(overview.image, coronal_overview(*whole_head("LPS")).image, atol=1e-3)
    left, right = overview.boxes
    assert (left.letter, left.color, right.letter, right.color) == ("L", light_color("green"), "R", light_color("red"))
    # the boxes' outer edges: 8 mm across x, 10 mm along z, around each centre
    assert np.allclose(sorted(map(tuple, left.polygon)), [(6, -10), (6, 0), (14, -10), (14, 0)])
    assert np.allclose(sorted(map(tuple, right.polygon)), [(-14, -10), (-14, 0), (-6, -10), (-6, 0)])
    found = np.argwhere(overview.labels > 0)  # the segmentation, inside the left box, right of the picture's middle
    x = overview.extent[0] + (found[:, 1] + 0.5) * (overview.extent[1] - overview.extent[0]) / columns
    assert len(found) and np.all((x > 6) & (x < 14))


def test_a_crop_has_no_overview_and_a_head_preview_is_written(tmp_path):
    volume, result = whole_head("LIA")
    save_preview(volume, result, tmp_path / "head_preview.png")
    assert (tmp_path / "head_preview.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result.sides = [SideResult("left", "given", 0.05, Quality("green", 0.9, ""), 1, None, [1])]
    assert coronal_overview(volume, result) is None


@pytest.mark.parametrize("spacing, thick", [((1.0, 1.0, 1.0), False), ((0.9, 0.9, 3.0), False),
                                            ((0.9, 3.5, 0.9), True), (None, False)])
def test_thick_slices_are_said_in_the_report(spacing, thick):
    volume, result = whole_head("LPS")
    result.input_spacing = spacing
    report = result.report()
    assert report["largest_spacing_mm"] == (None if spacing is None else max(spacing))
    assert bool(report["thick_slices"]) == thick == bool(result.thick_slices)
    if thick:
        assert report["thick_slices"].startswith("thick slices (3.5 mm, over 3 mm)")
