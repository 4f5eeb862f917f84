"""The module's real Logic against real MRML (PyPI ``slicer-core``: Slicer's MRML, volumes,
segmentations and colors logic and Slicer's own ``slicer.util``; fixtures in conftest.py).

Nothing of MRML is stood in. Only the application's module registry is: ``slicer.modules.<name>``
is a Qt module object in Slicer, here a small object whose ``logic()`` returns the real logic, and
which has no other attribute. Run alone with ``pytest -m mrml``.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

from mrml_helpers import require_slicer_core  # noqa: E402

slicer = require_slicer_core()

import SimpleITK as sitk  # noqa: E402
import vtk  # noqa: E402

pytestmark = pytest.mark.mrml

REPOSITORY = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPOSITORY / "M3DNCASegment"))
sys.path.insert(0, str(REPOSITORY))

import slicer.util  # noqa: E402
from M3DNCASegmentLib import display  # noqa: E402
from M3DNCASegmentLib.job import JobResult  # noqa: E402
from M3DNCASegmentLib.logic import SegmentLogic  # noqa: E402
from nca_core.modelfile import registry  # noqa: E402
from nca_core.errors import NCAError  # noqa: E402
from nca_core.inference.pipeline import segment_image  # noqa: E402
from nca_core.inference.settings import SegmentSettings  # noqa: E402

SAMPLE = REPOSITORY / "Resources" / "SampleData" / "mni152_hippocampus_right.nii.gz"
RUNS = 2  # the shipped sample is a right hippocampus: side="right" skips the side probe's runs


@pytest.fixture(scope="module")
def model():
    return registry.load("hippocampus")


def _ijk_to_ras(image: sitk.Image) -> np.ndarray:
    matrix = np.eye(4)
    direction = np.array(image.GetDirection()).reshape(3, 3)
    lps_to_ras = np.diag([-1.0, -1.0, 1.0])
    matrix[:3, :3] = lps_to_ras @ direction @ np.diag(image.GetSpacing())
    matrix[:3, 3] = lps_to_ras @ np.array(image.GetOrigin())
    return matrix


def _volume_node(image: sitk.Image, name: str = "input"):
    """A scalar volume node with the image's voxels and geometry, as Slicer loads a file."""
    return slicer.util.addVolumeFromArray(sitk.GetArrayFromImage(image), ijkToRAS=_ijk_to_ras(image), name=name)


def _rotation(degrees: float, axis: int) -> np.ndarray:
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    a, b = [i for i in range(3) if i != axis]
    rotation = np.eye(3)
    rotation[a, a], rotation[a, b], rotation[b, a], rotation[b, b] = c, -s, s, c
    return rotation


def _sample(geometry: str) -> sitk.Image:
    """The shipped crop stored four ways: as shipped (RAS), LPS (axes flipped, same anatomy),
    oblique (turned 20 degrees), or as shipped (the parent transform is added to the node)."""
    image = sitk.ReadImage(str(SAMPLE), sitk.sitkFloat32)
    if geometry == "lps":
        image = sitk.Flip(image, [True, True, False])  # keeps each voxel's physical point
    elif geometry == "oblique":
        direction = _rotation(20, 2) @ np.array(image.GetDirection()).reshape(3, 3)
        image.SetDirection(tuple(direction.ravel()))
    return image


def _labelmap_kji(segmentationNode, segmentName, reference):
    segmentId = segmentationNode.GetSegmentation().GetSegmentIdBySegmentName(segmentName)
    assert segmentId, f"no segment named {segmentName!r}"
    return slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, segmentId, reference)


def _node_ids(scene):
    return {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}


def _matrix(node) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return slicer.util.arrayFromVTKMatrix(matrix)


@pytest.mark.parametrize("geometry", ["ras", "lps", "oblique", "transformed"])
def test_outputs_match_the_engine_voxel_for_voxel(scene, model, geometry):
    image = _sample(geometry)
    volume = _volume_node(image)
    if geometry == "transformed":
        transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
        toParent = np.eye(4)
        toParent[:3, :3] = _rotation(30, 0)
        toParent[:3, 3] = (12.0, -7.0, 40.0)
        transform.SetMatrixTransformToParent(slicer.util.vtkMatrixFromArray(toParent))
        volume.SetAndObserveTransformNodeID(transform.GetID())
    result = SegmentLogic().process(volume, runs=RUNS, region="volume", side="right")
    engine = segment_image(image, model, SegmentSettings(model="hippocampus", runs=RUNS, locate="none", side="right"))

    labels = engine.ensemble.labels.transpose(2, 1, 0)  # engine (I, J, K) -> Slicer (K, J, I)
    assert labels.any(), "the engine found nothing: the comparison would be empty"
    names = {value: display.segment_name(name) for value, name in engine.labels.items()}
    segmentation = result.segmentationNode
    assert segmentation.GetSegmentation().GetNumberOfSegments() == len(names)
    for value, name in names.items():
        exported = _labelmap_kji(segmentation, name, volume)
        assert exported.shape == labels.shape
        assert np.array_equal(exported > 0, labels == value), f"{name}: exported labelmap differs from the engine's"
    variance = slicer.util.arrayFromVolume(result.varianceNode)
    assert np.allclose(variance, engine.ensemble.variance_map.transpose(2, 1, 0), atol=1e-6)
    assert variance.max() > 0
    assert np.allclose(_matrix(result.varianceNode), _matrix(volume))
    reference = segmentation.GetNodeReference(segmentation.GetReferenceImageGeometryReferenceRole())
    assert reference.GetID() == volume.GetID()
    for node in (segmentation, result.varianceNode):
        assert node.GetTransformNodeID() == volume.GetTransformNodeID()
    assert result.light == engine.quality.light
    assert result.nqm == pytest.approx(engine.nqm, abs=1e-6)


def test_a_right_crop_gives_a_right_hippocampus_with_slicer_terminology(scene):
    volume = _volume_node(_sample("ras"))
    result = SegmentLogic().process(volume, runs=RUNS, region="volume", side="right")
    segmentation = result.segmentationNode.GetSegmentation()
    assert segmentation.GetNumberOfSegments() == 1
    segment = segmentation.GetNthSegment(0)
    assert segment.GetName() == "Right hippocampus"
    assert tuple(segment.GetColor()) == pytest.approx(display.segment_color(0))
    tag = vtk.mutable("")
    assert segment.GetTag(segment.GetTerminologyEntryTagName(), tag)
    entry = slicer.vtkSlicerTerminologyEntry()
    assert slicer.vtkSlicerTerminologiesModuleLogic.DeserializeTerminologyEntry(str(tag), entry)
    assert entry.GetTerminologyContextName() == "Segmentation category and type - DICOM master list"
    assert (entry.GetCategoryObject().GetCodeValue(), entry.GetCategoryObject().GetCodeMeaning()) == \
        ("123037004", "Anatomical Structure")
    assert (entry.GetTypeObject().GetCodingSchemeDesignator(), entry.GetTypeObject().GetCodeValue(),
            entry.GetTypeObject().GetCodeMeaning()) == ("SCT", "5366008", "Hippocampus")
    assert (entry.GetTypeModifierObject().GetCodeValue(), entry.GetTypeModifierObject().GetCodeMeaning()) == \
        ("24028007", "Right")
    assert [side["side"] for side in result.sides] == ["right"]


def test_two_class_model_names_anterior_and_posterior_of_the_side(scene):
    volume = _volume_node(_sample("ras"))
    result = SegmentLogic().process(volume, model="hippocampus-2class", runs=RUNS, region="volume", side="right")
    segmentation = result.segmentationNode.GetSegmentation()
    names = [segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())]
    assert names == ["Right anterior hippocampus", "Right posterior hippocampus"]
    for value, name in enumerate(names, start=1):
        assert _labelmap_kji(result.segmentationNode, name, volume).any(), f"{name} is empty"


def test_display_settings_of_the_variance_overlay(scene):
    volume = _volume_node(_sample("ras"))
    result = SegmentLogic().process(volume, runs=RUNS, region="volume", side="right", overlayOpacity=0.4)
    varianceNode = result.varianceNode
    settings = display.overlay_settings(slicer.util.arrayFromVolume(varianceNode))
    displayNode = varianceNode.GetScalarVolumeDisplayNode()
    color = scene.GetNodeByID(displayNode.GetColorNodeID())
    assert color is not None, "the variance colour table is not in the scene"
    assert displayNode.GetAutoWindowLevel() == 0 and displayNode.GetApplyThreshold() == 1
    assert displayNode.GetWindowLevelMin() == pytest.approx(settings.window_min, abs=1e-5)
    assert displayNode.GetWindowLevelMax() == pytest.approx(settings.window_max, abs=1e-5)
    assert displayNode.GetLowerThreshold() == pytest.approx(settings.threshold, abs=1e-5)
    legend = slicer.modules.colors.logic().GetColorLegendDisplayNode(varianceNode)
    assert legend is not None and legend.GetTitleText() == "M3D-NCA variance (std)"
    composites = [scene.GetNthNodeByClass(i, "vtkMRMLSliceCompositeNode") for i in range(3)]
    for composite in composites:
        assert composite.GetBackgroundVolumeID() == volume.GetID()
        assert composite.GetForegroundVolumeID() == varianceNode.GetID()
        assert composite.GetForegroundOpacity() == pytest.approx(0.4)
    assert result.segmentationNode.GetSegmentation().ContainsRepresentation(
        slicer.vtkSegmentationConverter.GetClosedSurfaceRepresentationName())


def test_a_rerun_hides_the_previous_result_of_the_same_volume(scene):
    volume = _volume_node(_sample("ras"))
    other = _volume_node(_sample("ras"), "other")
    logic = SegmentLogic()
    first = logic.process(volume, runs=RUNS, region="volume", side="right")
    unrelated = logic.process(other, runs=RUNS, region="volume", side="right")
    second = logic.process(volume, runs=RUNS, region="volume", side="right")
    assert scene.IsNodePresent(first.segmentationNode)  # kept, hidden
    assert not first.segmentationNode.GetDisplayVisibility()
    assert not slicer.modules.colors.logic().GetColorLegendDisplayNode(first.varianceNode).GetVisibility()
    assert second.segmentationNode.GetDisplayVisibility()
    assert unrelated.segmentationNode.GetDisplayVisibility()
    assert first.searchBoxes == second.searchBoxes == []  # a crop has no search boxes


def test_scene_close_removes_the_outputs_and_the_logic_still_works(scene):
    logic = SegmentLogic()
    result = logic.process(_volume_node(_sample("ras")), runs=RUNS, region="volume", side="right")
    ids = [result.segmentationNode.GetID(), result.varianceNode.GetID()]
    scene.Clear(0)
    assert all(scene.GetNodeByID(node_id) is None for node_id in ids)
    assert scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 0
    again = logic.process(_volume_node(_sample("ras")), runs=RUNS, region="volume", side="right")
    assert scene.IsNodePresent(again.segmentationNode)


def test_an_roi_is_cut_from_the_volume_and_the_result_pasted_back(scene, model):
    image = _sample("ras")
    volume = _volume_node(image)
    size = np.array(image.GetSize())
    low, high = size // 6, size - size // 6  # voxel box the ROI covers
    corners = [_ijk_to_ras(image) @ np.array([*corner, 1.0]) for corner in (low - 0.5, high - 0.5)]
    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode")
    roi.SetXYZ(*((corners[0][:3] + corners[1][:3]) / 2))
    roi.SetRadiusXYZ(*(np.abs(corners[1][:3] - corners[0][:3]) / 2 - 0.01))
    result = SegmentLogic().process(volume, runs=RUNS, region="roi", roi=roi, side="right")
    engine = segment_image(image[int(low[0]):int(high[0]), int(low[1]):int(high[1]), int(low[2]):int(high[2])],
                           model, SegmentSettings(model="hippocampus", runs=RUNS, locate="none", side="right"))
    expected = np.zeros(tuple(size), np.uint8)
    expected[low[0]:high[0], low[1]:high[1], low[2]:high[2]] = engine.ensemble.labels
    name = display.segment_name(engine.labels[1])
    exported = _labelmap_kji(result.segmentationNode, name, volume)
    assert expected.any()
    assert np.array_equal(exported > 0, expected.transpose(2, 1, 0) == 1)
    variance = slicer.util.arrayFromVolume(result.varianceNode)
    assert variance.shape == tuple(reversed(image.GetSize()))
    assert not variance[:, :, : low[0]].any()  # nothing outside the ROI


def test_an_roi_outside_the_volume_is_refused_and_adds_nothing(scene):
    volume = _volume_node(_sample("ras"))
    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode")
    roi.SetXYZ(5000.0, 5000.0, 5000.0)
    roi.SetRadiusXYZ(10.0, 10.0, 10.0)
    before = _node_ids(scene)
    with pytest.raises(ValueError, match="does not overlap"):
        SegmentLogic().process(volume, runs=RUNS, region="roi", roi=roi, side="right")
    assert _node_ids(scene) == before


def test_a_failure_while_creating_outputs_leaves_the_scene_as_it_was(scene, monkeypatch):
    from M3DNCASegmentLib import outputs

    volume = _volume_node(_sample("ras"))
    before = _node_ids(scene)

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(outputs, "createVariance", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        SegmentLogic().process(volume, runs=RUNS, region="volume", side="right")
    assert _node_ids(scene) == before


def test_a_whole_head_gives_two_named_sides_each_on_its_own_side(scene, wholehead_dir):
    image = sitk.ReadImage(str(wholehead_dir / "ch2.nii.gz"), sitk.sitkFloat32)
    volume = _volume_node(image, "ch2")
    result = SegmentLogic().process(volume, runs=RUNS)  # region auto: a whole head
    segmentationNode = result.segmentationNode
    segmentation = segmentationNode.GetSegmentation()
    names = sorted(segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments()))
    assert names == ["Left hippocampus", "Right hippocampus"]
    assert sorted(side["side"] for side in result.sides) == ["left", "right"]
    # Colin 27's runs agree on both sides (NQM about 0.03): below the model's calibrated
    # threshold, so each side is green, and so is the overall light
    threshold = registry.load("hippocampus").calibration.nqm_threshold
    assert all(side["quality"] == "green" and side["nqm"] < threshold for side in result.sides), result.sides
    assert result.light == "green"
    assert "Left:" in result.summary() and "Right:" in result.summary()
    assert "Left volume:" in result.summary() and "eTIV" in result.summary()
    voxel_mm3 = float(np.prod(volume.GetSpacing()))
    for name, side in (("Left hippocampus", "left"), ("Right hippocampus", "right")):  # the console's numbers
        voxels = int(_labelmap_kji(segmentationNode, name, volume).sum())  # are the segments' own
        entry = result.volume(side)
        assert entry["mm3"] == pytest.approx(voxels * voxel_mm3, abs=0.1)
        low, high = entry["runs_interval_mm3"]
        assert low <= entry["mm3"] <= high and entry["light"] == next(s["quality"] for s in result.sides
                                                                      if s["side"] == side)
    assert 1000 < result.volumes["etiv_ml"] < 2500
    ijkToRAS = _matrix(volume)
    for name, sign in (("Left hippocampus", -1), ("Right hippocampus", 1)):  # RAS: +x is the patient's right
        voxels = np.argwhere(_labelmap_kji(segmentationNode, name, volume) > 0)
        assert len(voxels) > 1000, f"{name}: {len(voxels)} voxels"
        centre = ijkToRAS @ np.array([*voxels.mean(axis=0)[::-1], 1.0])
        assert sign * centre[0] > 10, f"{name} lies at x = {centre[0]:.1f} mm (RAS)"
    atlas = sitk.GetArrayFromImage(sitk.ReadImage(str(wholehead_dir / "ch2_hippocampus_aal.nii.gz")))
    for name, value in (("Left hippocampus", 1), ("Right hippocampus", 2)):
        mask = _labelmap_kji(segmentationNode, name, volume) > 0
        assert (atlas[mask] == value).mean() > 0.5, f"{name} is mostly outside the atlas's {name.lower()}"
    _check_search_boxes(scene, volume, result)


def _check_search_boxes(scene, volume, result) -> None:
    """One hidden ROI per side, placed, sized and turned as the report's box (LPS -> RAS), that
    holds its side's segmentation; the panel's switch shows them; a re-run hides them."""
    boxes = {box.GetName(): box for box in result.searchBoxes}
    assert sorted(boxes) == ["ch2 left hippocampus box", "ch2 right hippocampus box"]
    ijkToRAS = _matrix(volume)
    for side in result.sides:
        roi, box = boxes[f"ch2 {side['side']} hippocampus box"], side["box"]
        assert scene.IsNodePresent(roi) and not roi.GetDisplayVisibility() and roi.GetLocked()
        assert np.allclose(roi.GetCenter(), np.array(box["centre_lps_mm"]) * (-1, -1, 1), atol=1e-6)
        assert np.allclose(roi.GetSize(), np.multiply(box["size"], box["spacing_mm"]), atol=1e-6)
        axes = slicer.util.arrayFromVTKMatrix(roi.GetObjectToNodeMatrix())[:3, :3]
        expected = np.diag([-1.0, -1.0, 1.0]) @ np.reshape(box["direction"], (3, 3))
        assert np.allclose(np.abs(np.sum(axes * expected, axis=0)), 1.0, atol=1e-6)  # each axis, either way round
        voxels = np.argwhere(_labelmap_kji(result.segmentationNode, f"{side['side'].capitalize()} hippocampus",
                                           volume) > 0)[:, ::-1]
        ras = (ijkToRAS @ np.c_[voxels, np.ones(len(voxels))].T)[:3]
        inside = np.abs(axes.T @ (ras - np.reshape(roi.GetCenter(), (3, 1)))) <= np.reshape(roi.GetSize(), (3, 1)) / 2
        assert inside.all(axis=0).mean() > 0.99, f"{side['side']}: the segmentation is not inside its box"
    logic = SegmentLogic()
    logic.showSearchBoxes(result.segmentationNode, True)
    assert all(box.GetDisplayVisibility() for box in result.searchBoxes)
    shape = tuple(volume.GetImageData().GetDimensions())
    rerun = JobResult(labels=np.zeros(shape, np.uint8), variance=np.zeros(shape, np.float32), report=result.report)
    again = logic.createOutputs(volume, rerun, 1.0, showResult=False)  # the same report again, as a re-run
    assert not any(box.GetDisplayVisibility() for box in result.searchBoxes)  # the earlier result's, hidden
    assert len(again.searchBoxes) == 2 and not any(box.GetDisplayVisibility() for box in again.searchBoxes)
    ids = [box.GetID() for box in result.searchBoxes + again.searchBoxes]
    scene.Clear(0)
    assert all(scene.GetNodeByID(node_id) is None for node_id in ids)


def test_missing_packages_raise_without_a_dialog_when_not_interactive(scene, monkeypatch):
    from M3DNCASegmentLib import dependencies

    volume = _volume_node(_sample("ras"))
    before = _node_ids(scene)
    monkeypatch.setattr(dependencies, "torch_needs_install", lambda: True)
    monkeypatch.setattr(dependencies, "pytorch_extension_missing", lambda: False)

    def dialog(*args, **kwargs):
        raise AssertionError("a dialog was opened")

    monkeypatch.setattr(slicer.util, "confirmOkCancelDisplay", dialog)
    with pytest.raises(RuntimeError, match="Install them from the M3DNCASegment panel"):
        SegmentLogic().process(volume, runs=RUNS, region="volume", side="right")
    monkeypatch.setattr(dependencies, "pytorch_extension_missing", lambda: True)
    with pytest.raises(RuntimeError, match="install the PyTorch extension"):  # said before any question
        SegmentLogic().process(volume, runs=RUNS, region="volume", side="right", interactive=True)
    assert _node_ids(scene) == before


def test_bad_options_and_unknown_models_are_refused_before_running(scene):
    volume = _volume_node(_sample("ras"))
    before = _node_ids(scene)
    with pytest.raises(NCAError, match="one per level"):
        SegmentLogic().process(volume, steps="5")  # the model has 2 levels
    with pytest.raises(NCAError, match="unknown model"):
        SegmentLogic().process(volume, model="no-such-model")
    with pytest.raises(NCAError, match="side"):
        SegmentLogic().process(volume, side="middle")
    with pytest.raises(ValueError, match="needs an ROI"):
        SegmentLogic().process(volume, region="roi")
    assert _node_ids(scene) == before


def test_cancel_stops_the_engine_and_adds_nothing(scene):
    from nca_core.inference.ensemble import Cancelled

    volume = _volume_node(_sample("ras"))
    before = _node_ids(scene)
    polls = []

    def shouldCancel():
        polls.append(True)
        return len(polls) > 3  # after a few NCA steps: outputs could exist if the logic ignored it

    with pytest.raises(Cancelled):
        SegmentLogic().process(volume, runs=RUNS, region="volume", side="right", shouldCancel=shouldCancel)
    assert len(polls) == 4 and _node_ids(scene) == before


def test_a_prostate_scan_gives_a_named_prostate_on_its_own_voxels(scene, prostate_dir, tmp_path):
    """A 320x320x24 scan stored RAI with a prostate-preset model (untrained: the control flow and
    geometry, not the result, are tested): one 'Prostate' segment (SNOMED 41216001, no side) on
    the volume's own voxels, no head route, and an ROI refused (a cut-out would change the field
    of view the grid is relative to)."""
    from nca_core.modelfile.bundle import ModelBundle, save_model
    from nca_core.network.config import preset
    from nca_core.training.settings import PROSTATE_GRID
    from nca_helpers import random_model
    from prostate_helpers import case_paths, scanner_version

    model = tmp_path / "prostate.m3dnca"
    save_model(ModelBundle.from_model(random_model(preset("prostate"), scale=0.3), preprocessing=PROSTATE_GRID), model)
    image_path, label_path = case_paths(prostate_dir, 1)
    scan, _ = scanner_version(sitk.ReadImage(str(image_path), sitk.sitkFloat32), sitk.ReadImage(str(label_path)))
    volume = _volume_node(scan, "prostate")
    with pytest.raises(NCAError, match="whole field of view"):
        SegmentLogic().process(volume, model=str(model), region="roi")
    result = SegmentLogic().process(volume, model=str(model), runs=RUNS, steps="2,2")  # region auto: never a head
    segmentation = result.segmentationNode.GetSegmentation()
    assert [segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())] == ["Prostate"]
    segment = segmentation.GetNthSegment(0)
    tag = vtk.mutable("")
    assert segment.GetTag(segment.GetTerminologyEntryTagName(), tag)
    entry = slicer.vtkSlicerTerminologyEntry()
    assert slicer.vtkSlicerTerminologiesModuleLogic.DeserializeTerminologyEntry(str(tag), entry)
    assert (entry.GetTypeObject().GetCodeValue(), entry.GetTypeObject().GetCodeMeaning()) == ("41216001", "Prostate")
    assert [side["side"] for side in result.sides] == [None] and not result.searchBoxes
    assert _matrix(result.varianceNode) == pytest.approx(_matrix(volume))
    assert slicer.util.arrayFromVolume(result.varianceNode).shape == sitk.GetArrayFromImage(scan).shape
