"""Control flow of M3DNCASegmentLogic with FakeSlicer, a minimal stand-in for Slicer's API.

FakeSlicer only records calls; it proves nothing about Slicer itself. The names it offers are
checked against the real Slicer source elsewhere (test_slicer_module.py: slicer.util names
from Slicer 5.8's util.py, .ui widget names, parameter-node connectors). What this file checks
is the module's own logic: engine arrays in and out in the right order, segments per label,
overlay settings, no dialog when interactive=False, and nothing left in the scene on failure
or cancel.
"""
from __future__ import annotations

import contextlib
import importlib.util
import math
import sys
import types
import unittest
from pathlib import Path

import numpy as np
import pytest

REPOSITORY = Path(__file__).resolve().parents[2]
MODULE_DIR = REPOSITORY / "M3DNCASegment"

pytest.importorskip("torch")


class FakeNode:
    def __init__(self, scene, className, name=""):
        self.scene, self.className, self.name = scene, className, name
        self.transformID = None
        self.calls = []

    def GetName(self):
        return self.name

    def GetClassName(self):
        return self.className

    def SetAndObserveTransformNodeID(self, nodeID):
        self.transformID = nodeID

    def GetTransformNodeID(self):
        return self.transformID

    def __getattr__(self, name):  # any other setter: record it
        if name[:1].isupper():
            return lambda *args: self.calls.append((name, args))
        raise AttributeError(name)


class FakeImageData:
    def __init__(self, kji_shape):
        self.shape = kji_shape

    def GetDimensions(self):
        return tuple(reversed(self.shape))


class FakeVolume(FakeNode):
    def __init__(self, scene, array_kji, matrix, name="volume"):
        super().__init__(scene, "vtkMRMLScalarVolumeNode", name)
        self.array = np.asarray(array_kji)
        self.matrix = np.asarray(matrix, dtype=float)
        self.display = FakeNode(scene, "vtkMRMLScalarVolumeDisplayNode")

    def GetImageData(self):
        return FakeImageData(self.array.shape)

    def GetIJKToRASMatrix(self, matrix):
        matrix.values = self.matrix.copy()

    def GetScalarVolumeDisplayNode(self):
        return self.display


class FakeSegment:
    def __init__(self, name, color):
        self.name, self.color, self.tags = name, color, {}

    def SetTag(self, key, value):
        self.tags[key] = value

    @staticmethod
    def GetTerminologyEntryTagName():
        return "TerminologyEntry"


class FakeSegmentation:
    def __init__(self):
        self.segments = {}

    def AddEmptySegment(self, segmentId, name, color):
        segmentId = segmentId or f"Segment_{len(self.segments) + 1}"
        self.segments[segmentId] = FakeSegment(name, color)
        return segmentId

    def GetSegment(self, segmentId):
        return self.segments[segmentId]

    def GetNumberOfSegments(self):
        return len(self.segments)


class FakeSegmentationNode(FakeNode):
    def __init__(self, scene, name):
        super().__init__(scene, "vtkMRMLSegmentationNode", name)
        self.segmentation = FakeSegmentation()
        self.masks = {}
        self.reference = None
        self.transformAtReference = None

    def GetSegmentation(self):
        return self.segmentation

    def SetReferenceImageGeometryParameterFromVolumeNode(self, volume):
        # Slicer stores this geometry relative to the node's parent transform at call time.
        self.reference = volume
        self.transformAtReference = self.transformID


class FakeScene:
    def __init__(self):
        self.nodes = []

    def AddNewNodeByClass(self, className, name=""):
        node = FakeSegmentationNode(self, name) if className == "vtkMRMLSegmentationNode" else FakeNode(self, className, name)
        self.nodes.append(node)
        return node

    def AddNode(self, node):
        self.nodes.append(node)
        return node

    def RemoveNode(self, node):
        self.nodes.remove(node)

    def IsNodePresent(self, node):
        return int(node in self.nodes)

    def GenerateUniqueName(self, base):
        return base


class FakeSlicer:
    """Builds fake ``slicer``, ``qt`` and ``vtk`` modules recording what the logic does."""

    def __init__(self):
        self.scene = FakeScene()
        self.layers = []
        self.dialogs = []
        self.statusMessages = []
        self.failVarianceVolume = False
        fake = self

        util = types.ModuleType("slicer.util")

        class VTKObservationMixin:
            def __init__(self):
                pass

        def dialog(*args, **kwargs):
            fake.dialogs.append(args)
            raise AssertionError("a dialog was opened")

        def updateSegmentBinaryLabelmapFromArray(narray, segmentationNode, segmentId, referenceVolumeNode=None):
            assert narray.shape == referenceVolumeNode.array.shape
            segmentationNode.masks[segmentId] = narray.copy()

        def addVolumeFromArray(narray, ijkToRAS=None, name=None, nodeClassName=None):
            if fake.failVarianceVolume:
                raise RuntimeError("simulated failure")
            node = FakeVolume(fake.scene, narray, ijkToRAS.values, name)
            fake.scene.AddNode(node)
            return node

        util.VTKObservationMixin = VTKObservationMixin
        util.arrayFromVolume = lambda node: node.array
        util.arrayFromVTKMatrix = lambda matrix: np.array(matrix.values)
        util.updateSegmentBinaryLabelmapFromArray = updateSegmentBinaryLabelmapFromArray
        util.addVolumeFromArray = addVolumeFromArray
        util.setSliceViewerLayers = lambda **kwargs: fake.layers.append(kwargs)
        util.showStatusMessage = lambda message, duration=0: fake.statusMessages.append(message)
        util.confirmOkCancelDisplay = dialog
        util.WaitCursor = contextlib.nullcontext
        util.errorDisplay = dialog
        util.pip_install = dialog

        slicer = types.ModuleType("slicer")
        slicer.__path__ = []  # a package, so "slicer.util" imports
        slicer.util = util
        slicer.mrmlScene = self.scene
        slicer.vtkMRMLScalarVolumeNode = FakeVolume
        slicer.vtkMRMLSegmentationNode = FakeSegmentationNode
        legend = FakeNode(self.scene, "vtkMRMLColorLegendDisplayNode")

        def addLegend(node):
            self.scene.AddNode(legend)
            return legend

        colorsLogic = types.SimpleNamespace(AddDefaultColorLegendDisplayNode=addLegend,
                                            GetColorLegendDisplayNode=lambda node: legend)
        slicer.modules = types.SimpleNamespace(colors=types.SimpleNamespace(logic=lambda: colorsLogic))

        i18n = types.ModuleType("slicer.i18n")
        i18n.tr = lambda text: text
        i18n.translate = lambda context, text: text

        scripted = types.ModuleType("slicer.ScriptedLoadableModule")
        for name in ("ScriptedLoadableModule", "ScriptedLoadableModuleWidget", "ScriptedLoadableModuleLogic"):
            setattr(scripted, name, type(name, (), {"__init__": lambda self, *args: None}))
        scripted.ScriptedLoadableModuleTest = type("ScriptedLoadableModuleTest", (unittest.TestCase,), {})

        wrapper = types.ModuleType("slicer.parameterNodeWrapper")
        wrapper.parameterNodeWrapper = lambda cls: cls
        wrapper.Choice = lambda choices: ("Choice", choices)
        wrapper.WithinRange = lambda low, high: ("WithinRange", low, high)

        vtk = types.ModuleType("vtk")

        class vtkMatrix4x4:
            values = np.eye(4)

        vtk.vtkMatrix4x4 = vtkMatrix4x4
        vtk.vtkCommand = types.SimpleNamespace(ModifiedEvent="ModifiedEvent")

        self.modules = {"slicer": slicer, "slicer.util": util, "slicer.i18n": i18n,
                        "slicer.ScriptedLoadableModule": scripted, "slicer.parameterNodeWrapper": wrapper,
                        "qt": types.ModuleType("qt"), "vtk": vtk}


@pytest.fixture
def fake(monkeypatch):
    fake = FakeSlicer()
    for name, module in fake.modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.syspath_prepend(str(MODULE_DIR))
    spec = importlib.util.spec_from_file_location("M3DNCASegment_under_FakeSlicer", MODULE_DIR / "M3DNCASegment.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    fake.module = module
    return fake


@pytest.fixture(scope="module")
def two_class_model(tmp_path_factory):
    from nca_core.config import NCAConfig
    from nca_core.model import M3DNCA
    from nca_core.modelfile import ModelBundle, save_model

    config = NCAConfig(channels=8, hidden=16, kernel_sizes=[3, 3], steps=[2, 2], downscale=2,
                       output_channels=2, labels=["anterior hippocampus", "posterior hippocampus"])
    path = tmp_path_factory.mktemp("models") / "two.m3dnca"
    save_model(ModelBundle.from_model(M3DNCA(config), provenance={"description": "two classes"}), path)
    return path


def _input(fake):
    array = np.random.default_rng(2).normal(0, 1, (9, 11, 13)).astype(np.float32)  # K, J, I
    matrix = np.array([[-1.0, 0, 0, 5], [0, -2.0, 0, 6], [0, 0, 3.0, 7], [0, 0, 0, 1]])
    volume = FakeVolume(fake.scene, array, matrix, "input")
    fake.scene.AddNode(volume)
    volume.SetAndObserveTransformNodeID("vtkMRMLLinearTransformNode1")
    return volume


def test_process_builds_segments_and_overlay_in_slicer_order(fake, two_class_model):
    volume = _input(fake)
    progress = []
    result = fake.module.M3DNCASegmentLogic().process(
        volume, model=str(two_class_model), runs=2, device="CPU", interactive=False,
        progress=lambda done, total: progress.append((done, total)))
    assert progress[-1] == (2, 2) and not fake.dialogs
    seg, var = result.segmentationNode, result.varianceNode
    assert seg.reference is volume and seg.GetTransformNodeID() == volume.GetTransformNodeID()
    assert seg.transformAtReference == volume.GetTransformNodeID()  # not baked in twice
    names = [s.name for s in seg.segmentation.segments.values()]
    assert names == ["Anterior hippocampus", "Posterior hippocampus"]
    assert all("5366008" in s.tags["TerminologyEntry"] for s in seg.segmentation.segments.values())
    assert var.array.shape == volume.array.shape  # K, J, I like the input
    assert np.allclose(var.matrix, volume.matrix) and var.GetTransformNodeID() == volume.GetTransformNodeID()
    calls = dict(var.display.calls)
    assert calls["SetAndObserveColorNodeID"] == ("vtkMRMLColorTableNodeFileInferno.txt",)
    assert calls["SetApplyThreshold"] == (1,)
    assert fake.layers[-1]["background"] is volume and fake.layers[-1]["foreground"] is var
    assert result.light == "unknown" and result.predictedDice is None
    assert result.runs == 2 and (math.isinf(result.nqm) or result.nqm >= 0)


def test_process_matches_the_engine_on_the_transposed_array(fake, two_class_model):
    from nca_core import registry
    from nca_core.pipeline import segment_array

    volume = _input(fake)
    result = fake.module.M3DNCASegmentLogic().process(volume, model=str(two_class_model), runs=2, seed=3,
                                                     device="cpu", showResult=False)
    direct = segment_array(volume.array.transpose(2, 1, 0).astype(np.float32), registry.load(str(two_class_model)),
                           "two", runs=2, seed=3, device="cpu")
    assert np.allclose(result.varianceNode.array, direct.ensemble.variance_map.transpose(2, 1, 0))
    assert not fake.layers  # showResult=False leaves the views alone


def test_process_gives_the_engine_the_volume_grid(fake):
    from nca_core import registry
    from nca_core.pipeline import segment_array

    volume = _input(fake)  # IJKToRAS diag(-1, -2, 3): LPS axes, 1x2x3 mm; the shipped model wants RAS, 1 mm
    result = fake.module.M3DNCASegmentLogic().process(volume, model="hippocampus", runs=2, seed=3,
                                                     device="cpu", showResult=False)
    array, bundle = volume.array.transpose(2, 1, 0).astype(np.float32), registry.load("hippocampus")
    direct = segment_array(array, bundle, "hippocampus", runs=2, seed=3, device="cpu",
                           spacing=(1.0, 2.0, 3.0), direction=(1, 0, 0, 0, 1, 0, 0, 0, 1))
    assert result.report["grid"] == direct.report()["grid"]
    assert result.report["grid"]["reoriented"] and result.report["grid"]["resampled"]
    assert np.allclose(result.varianceNode.array, direct.ensemble.variance_map.transpose(2, 1, 0))
    assumed = segment_array(array, bundle, "hippocampus", runs=2, seed=3, device="cpu")
    assert not np.allclose(result.varianceNode.array, assumed.ensemble.variance_map.transpose(2, 1, 0))


def test_failure_while_creating_outputs_leaves_the_scene_as_it_was(fake, two_class_model):
    volume = _input(fake)
    before = list(fake.scene.nodes)
    fake.failVarianceVolume = True
    with pytest.raises(RuntimeError, match="simulated failure"):
        fake.module.M3DNCASegmentLogic().process(volume, model=str(two_class_model), runs=1, device="cpu")
    assert fake.scene.nodes == before


def test_a_new_result_hides_the_previous_one(fake, two_class_model):
    volume = _input(fake)
    logic = fake.module.M3DNCASegmentLogic()
    first = logic.process(volume, model=str(two_class_model), runs=2, device="cpu")
    second = logic.process(volume, model=str(two_class_model), runs=2, device="cpu")
    logic.hideOutputs(first.segmentationNode, first.varianceNode)
    assert ("SetDisplayVisibility", (False,)) in first.segmentationNode.calls
    assert ("SetDisplayVisibility", (False,)) not in second.segmentationNode.calls
    legend = next(n for n in fake.scene.nodes if n.className == "vtkMRMLColorLegendDisplayNode")
    assert ("SetVisibility", (False,)) in legend.calls


def test_cancel_raises_and_adds_nothing(fake, two_class_model):
    from nca_core.ensemble import Cancelled

    volume = _input(fake)
    before = list(fake.scene.nodes)
    with pytest.raises(Cancelled):
        fake.module.M3DNCASegmentLogic().process(volume, model=str(two_class_model), runs=3, device="cpu",
                                                 shouldCancel=lambda: True)
    assert fake.scene.nodes == before


def test_missing_dependencies_raise_without_a_dialog_when_not_interactive(fake, two_class_model, monkeypatch):
    logic = fake.module.M3DNCASegmentLogic()
    monkeypatch.setattr(type(logic), "missingDependencies", staticmethod(lambda: (True, ["safetensors>=0.4,<1"])))
    with pytest.raises(RuntimeError, match="PyTorch"):
        logic.process(_input(fake), model=str(two_class_model), interactive=False)
    assert not fake.dialogs


def test_bad_steps_are_rejected_before_running(fake, two_class_model):
    with pytest.raises(ValueError, match="2 levels"):
        fake.module.M3DNCASegmentLogic().process(_input(fake), model=str(two_class_model), steps="5")


def test_unknown_model_is_a_clear_error(fake):
    with pytest.raises(ValueError, match="unknown model"):
        fake.module.M3DNCASegmentLogic().process(_input(fake), model="no-such-model")


class FakeComboBox:
    """The few QComboBox members the widget's model selection uses."""

    def __init__(self, items):
        self.items = list(items)  # (text, data)
        self.currentIndex = -1

    @property
    def count(self):
        return len(self.items)

    @property
    def currentText(self):
        return self.items[self.currentIndex][0]

    def itemText(self, index):
        return self.items[index][0]

    def itemData(self, index):
        return self.items[index][1]

    def insertItem(self, index, text, data):
        self.items.insert(index, (text, data))


def _label():
    return types.SimpleNamespace(text="", styleSheet="", setStyleSheet=lambda sheet: None)


def _widget_with_models(fake, model, volume_id="vtkMRMLScalarVolumeNode1"):
    """The panel's widget over stand-in widgets, its parameter node naming ``model``."""
    logic = fake.module.M3DNCASegmentLogic()
    names = [(info.name, info.path) for info in logic.modelCatalog()]
    widget = fake.module.M3DNCASegmentWidget()
    widget.logic = logic
    widget.ui = types.SimpleNamespace(
        modelComboBox=FakeComboBox(names + [(fake.module.LOAD_MODEL_ITEM, "")]),
        applyButton=types.SimpleNamespace(text="", toolTip="", enabled=False),
        **{name: _label() for name in ("modelDescriptionLabel", "lightLabel", "lightTitleLabel", "nqmLabel",
                                       "predictedDiceLabel", "explanationLabel", "statusLabel")})
    volume = types.SimpleNamespace(GetID=lambda: volume_id)
    widget._parameterNode = types.SimpleNamespace(model=model, inputVolume=volume)
    return widget, names


def test_a_missing_model_is_not_replaced_and_apply_waits(fake, tmp_path):
    moved = str(tmp_path / "moved-away.m3dnca")
    widget, names = _widget_with_models(fake, moved)
    widget.selectModel(moved)  # as setParameterNode does
    widget._checkCanApply()
    assert widget.ui.modelComboBox.currentIndex == -1 and widget._parameterNode.model == moved
    assert "Model not found" in widget.ui.modelDescriptionLabel.text and moved in widget.ui.modelDescriptionLabel.text
    assert not widget.ui.applyButton.enabled


def test_a_model_set_in_the_node_is_shown_before_apply(fake, two_class_model):
    widget, names = _widget_with_models(fake, "hippocampus")
    widget._checkCanApply()
    assert widget.ui.modelComboBox.currentText == "hippocampus" and widget.ui.applyButton.enabled
    widget._parameterNode.model = str(two_class_model)  # a scene was loaded, or the console set it
    widget._checkCanApply()
    assert widget.ui.modelComboBox.currentText == "two.m3dnca" and widget.ui.applyButton.enabled


def test_the_light_is_taken_down_when_the_input_volume_changes(fake):
    widget, names = _widget_with_models(fake, "hippocampus", volume_id="vtkMRMLScalarVolumeNode2")
    widget._resultInputID = "vtkMRMLScalarVolumeNode1"
    widget.ui.nqmLabel.text, widget.ui.statusLabel.text = "NQM: 0.0500", "Done in 1.2 s"
    widget._checkCanApply()
    assert widget._resultInputID == "" and widget.ui.nqmLabel.text == "" and widget.ui.statusLabel.text == ""


def test_self_test_asks_to_install_missing_packages_in_set_up(fake, monkeypatch):
    """Control flow only: the confirmation is stubbed to accept, as slicer.util does under --testing."""
    logic = fake.module.M3DNCASegmentLogic
    monkeypatch.setattr(logic, "missingDependencies", staticmethod(lambda: (False, ["safetensors>=0.4,<1"])))
    installed = []
    util = fake.modules["slicer.util"]
    monkeypatch.setattr(util, "confirmOkCancelDisplay", lambda *args, **kwargs: True)  # Slicer with --testing
    monkeypatch.setattr(util, "pip_install", installed.append)
    fake.scene.Clear = lambda: None
    fake.module.M3DNCASegmentTest().setUp()
    assert installed == [["safetensors>=0.4,<1"]]


def test_a_double_click_on_apply_does_not_cancel_the_job_it_started(fake):
    import time

    widget, names = _widget_with_models(fake, "hippocampus")
    cancelled = []
    widget.cancelJob = lambda: cancelled.append(True)
    widget._job = object()
    widget._jobStarted = time.perf_counter()
    widget.onApplyButton()  # the second click of the double-click
    assert not cancelled
    widget._jobStarted -= 2 * fake.module.CANCEL_GRACE_SECONDS
    widget.onApplyButton()  # a deliberate Cancel
    assert cancelled == [True]
