"""The module's panel (``M3DNCASegmentLib/panel.py``) over real MRML, with its Qt side stood in.

MRML, the logic, slicer.util, the background job and its worker are real. Stood in are only
what needs a running Slicer application: the widgets of the .ui file, QTimer, the scripted
module base classes, ``slicer.app``, dialogs and the parameterNodeWrapper (which connects Qt
widgets). Each widget stand-in is built from the .ui file (widget names and classes) and refuses
every member its real class lacks (``qt_api.txt``); the parameterNodeWrapper stand-in behaves as
Slicer 5.8's (``connectGui`` returns None; connecting a combo box refills it).
"""
from __future__ import annotations

import os
import shutil
import signal
import sys
import time
import types
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

from mrml_helpers import require_slicer_core  # noqa: E402

slicer = require_slicer_core()

import SimpleITK as sitk  # noqa: E402
import slicer.util  # noqa: E402
import vtk  # noqa: E402

pytestmark = pytest.mark.mrml

REPOSITORY = Path(__file__).resolve().parents[2]
MODULE_DIR = REPOSITORY / "M3DNCASegment"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "M3DNCASegment.ui"
SAMPLE = REPOSITORY / "Resources" / "SampleData" / "mni152_hippocampus_right.nii.gz"


# --- strict Qt stand-ins ----------------------------------------------------------------------

def _read_api():
    classes = {}
    for line in (Path(__file__).parent / "qt_api.txt").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        head, members = line.split(":", 1)
        name, _, base = head.partition("(")
        classes[name.strip()] = (base.rstrip(")").strip() or None, set(members.split()))
    api = {}
    for name in classes:
        members, current = set(), name
        while current:
            base, own = classes[current]
            members |= own
            current = base
        api[name] = members
    return api


API = _read_api()
SIGNALS = {"clicked", "toggled", "activated", "currentIndexChanged", "valueChanged", "timeout", "textChanged",
           "currentNodeChanged", "mrmlSceneChanged", "destroyed", "pressed", "released", "currentTextChanged",
           "editingFinished"}
DEFAULTS = {"text": "", "toolTip": "", "enabled": True, "visible": True, "styleSheet": "", "value": 0, "checked": False}


class Signal:
    def __init__(self):
        self.slots = []

    def connect(self, slot):
        self.slots.append(slot)

    def disconnect(self, slot=None):
        self.slots = [s for s in self.slots if slot is not None and s != slot]

    def emit(self, *args):
        for slot in list(self.slots):
            slot(*args)


class StandIn:
    """A Qt object that has exactly the members of its class in ``qt_api.txt``."""

    def __init__(self, className, properties=None):
        assert className in API, f"no recorded API for {className}"
        for klass in type(self).__mro__[:-2]:  # what a subclass adds must exist on the real class too
            for name in vars(klass):
                assert name.startswith("_") or name in API[className], f"stand-in defines {name}, absent from {className}"
        object.__setattr__(self, "_class", className)
        object.__setattr__(self, "_values", {})
        object.__setattr__(self, "_signals", {})
        object.__setattr__(self, "_properties", dict(properties or {}))
        object.__setattr__(self, "calls", [])

    def _check(self, name):
        if name not in API[self._class]:
            raise AttributeError(f"{self._class} has no member {name!r}")

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        self._check(name)
        if name in SIGNALS:
            return self._signals.setdefault(name, Signal())
        if name in self._values:
            return self._values[name]
        if name in DEFAULTS:
            return DEFAULTS[name]
        if name in ("show", "hide"):
            return lambda: self._values.__setitem__("visible", name == "show")

        def call(*args, **kwargs):
            self.calls.append((name, args))
            prop = name[3:4].lower() + name[4:]
            if name.startswith("set") and prop in API[self._class] and args:
                self._values[prop] = args[0]

        return call

    def __setattr__(self, name, value):
        self._check(name)
        self._values[name] = value

    def property(self, name):
        return self._properties.get(name)

    def connect(self, signature, slot):
        getattr(self, signature.split("(")[0]).connect(slot)


class ComboBox(StandIn):
    def __init__(self, className="QComboBox", properties=None):
        super().__init__(className, properties)
        object.__setattr__(self, "_items", [])
        self._values["currentIndex"] = -1

    @property
    def count(self):
        return len(self._items)

    @property
    def currentText(self):
        index = self._values["currentIndex"]
        return self._items[index][0] if 0 <= index < len(self._items) else ""

    def __setattr__(self, name, value):
        changed = name == "currentIndex" and value != self._values.get("currentIndex")
        super().__setattr__(name, value)
        if changed:
            self.currentIndexChanged.emit(value)

    def addItem(self, text, data=None):
        self._items.append([text, data])
        if self._values["currentIndex"] < 0:
            self.currentIndex = 0

    def insertItem(self, index, text, data=None):
        self._items.insert(index, [text, data])

    def setItemData(self, index, value, role=None):
        pass

    def itemText(self, index):
        return self._items[index][0]

    def itemData(self, index, role=None):
        return self._items[index][1]

    def clear(self):
        self._items.clear()
        self.currentIndex = -1


def _ui_namespace():
    """Stand-ins for every named widget of the .ui file, with its SlicerParameterName."""
    widgets = {}
    for element in ElementTree.parse(UI_FILE).getroot().iter("widget"):
        properties = {}
        for prop in element.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                properties["SlicerParameterName"] = prop.find("string").text
        className = element.get("class")
        widgets[element.get("name")] = (ComboBox if className == "QComboBox" else StandIn)(className, properties)
    return types.SimpleNamespace(**widgets)


# --- Slicer 5.8's parameterNodeWrapper, as far as the panel sees it ------------------------------

class ParameterNodeStandIn:
    """Values live on the real MRML node (node references for nodes); ``connectGui`` returns
    None as in Slicer 5.8; connecting a combo box refills its items as Slicer's connector does."""

    fields = {}
    choices = {}
    connections = []  # (tag, widget, slot) still connected

    def __init__(self, node):
        object.__setattr__(self, "parameterNode", node)

    def __getattr__(self, name):
        if name not in self.fields:
            raise AttributeError(name)
        node = self.parameterNode
        if self.fields[name] is None:
            return node.GetNodeReference(name)
        text = node.GetParameter(name)
        return self.fields[name][1] if text == "" else self.fields[name][0](text)

    def __setattr__(self, name, value):
        if name not in self.fields:
            raise AttributeError(f"no parameter {name!r}")
        if self.fields[name] is None:
            self.parameterNode.SetNodeReferenceID(name, value.GetID() if value else None)
        else:
            self.parameterNode.SetParameter(name, str(value))

    def AddObserver(self, event, callback, priority=0.0):
        return self.parameterNode.AddObserver(event, callback, priority)

    def RemoveObserver(self, tag):
        self.parameterNode.RemoveObserver(tag)

    def connectGui(self, gui):
        from M3DNCASegmentLib.panel import parameterWidgets

        self.connectParametersToGui(parameterWidgets(gui))
        return None  # Slicer 5.8 (fixed in 5.10)

    def connectParametersToGui(self, mapping):
        tag = len(ParameterNodeStandIn.connections) + 1
        for name, widget in mapping.items():
            if isinstance(widget, ComboBox) and name in self.choices:
                widget.clear()  # QComboBoxToStringableConnector refills the box
                for choice in self.choices[name]:
                    widget.addItem(choice)
                widget.currentIndex = self.choices[name].index(getattr(self, name))

                def slot(index, name=name, widget=widget):
                    if index >= 0:
                        setattr(self, name, widget.itemText(index))

                widget.currentIndexChanged.connect(slot)
                ParameterNodeStandIn.connections.append((tag, widget, slot, name))

        def toGui(caller, event, tag=tag):  # as Slicer's: one observer per connect, never removed
            for entry in [c for c in ParameterNodeStandIn.connections if c[0] == tag]:
                index = self.choices[entry[3]].index(getattr(self, entry[3]))
                if entry[1].currentIndex != index:
                    entry[1].currentIndex = index

        self.AddObserver(vtk.vtkCommand.ModifiedEvent, toGui)
        return tag

    def disconnectGui(self, tag):
        for entry in [c for c in ParameterNodeStandIn.connections if c[0] == tag]:
            entry[1].currentIndexChanged.disconnect(entry[2])
            ParameterNodeStandIn.connections.remove(entry)


def parameterNodeWrapper(cls):
    import typing

    fields, choices = {}, {}
    for name, annotation in typing.get_type_hints(cls, include_extras=True).items():
        base = getattr(annotation, "__origin__", annotation)
        if isinstance(base, type) and issubclass(base, slicer.vtkMRMLNode):
            fields[name] = None
            continue
        fields[name] = (base, getattr(cls, name))
        for extra in getattr(annotation, "__metadata__", ()):
            if isinstance(extra, tuple) and extra[0] == "Choice":
                choices[name] = list(extra[1])
    return type(cls.__name__, (ParameterNodeStandIn,), {"fields": fields, "choices": choices})


# --- the module under the stand-ins ---------------------------------------------------------------

class Application:
    """``slicer.app``: the members tryWithErrorDisplay and the panel use."""

    def testingEnabled(self):
        return False

    def setOverrideCursor(self, cursor):
        pass

    def restoreOverrideCursor(self):
        pass

    def processEvents(self):
        pass


@pytest.fixture
def module(scene, monkeypatch):
    errors = []
    qt = types.ModuleType("qt")
    qt.QTimer = lambda: StandIn("QTimer")
    qt.Qt = types.SimpleNamespace(ToolTipRole=3, WaitCursor=3)
    i18n = types.ModuleType("slicer.i18n")
    i18n.tr = lambda text: text
    i18n.translate = lambda context, text: text
    scripted = types.ModuleType("slicer.ScriptedLoadableModule")

    class ScriptedLoadableModule:
        def __init__(self, parent):
            self.parent = parent

    class ScriptedLoadableModuleWidget:
        def __init__(self, parent=None):
            self.parent = types.SimpleNamespace(isEntered=True)
            self.moduleName = "M3DNCASegment"

        def setup(self):
            self.layout = StandIn("QWidget")
            self.layout.__dict__["addWidget"] = lambda widget: None  # QBoxLayout.addWidget

        def resourcePath(self, filename):
            return str(MODULE_DIR / "Resources" / filename)

    class ScriptedLoadableModuleLogic:
        def __init__(self, parent=None):
            self.moduleName = "M3DNCASegment"

        def getParameterNode(self):
            node = slicer.mrmlScene.GetSingletonNode(self.moduleName, "vtkMRMLScriptedModuleNode")
            if node is None:
                node = slicer.vtkMRMLScriptedModuleNode()
                node.SetSingletonTag(self.moduleName)
                node.SetModuleName(self.moduleName)
                node = slicer.mrmlScene.AddNode(node)
            return node

    scripted.ScriptedLoadableModule = ScriptedLoadableModule
    scripted.ScriptedLoadableModuleWidget = ScriptedLoadableModuleWidget
    scripted.ScriptedLoadableModuleLogic = ScriptedLoadableModuleLogic
    import unittest

    class ScriptedLoadableModuleTest(unittest.TestCase):
        def __init__(self, *args):
            super().__init__("runTest")

        def delayDisplay(self, message, msec=None):
            pass

    scripted.ScriptedLoadableModuleTest = ScriptedLoadableModuleTest
    wrapper = types.ModuleType("slicer.parameterNodeWrapper")
    wrapper.parameterNodeWrapper = parameterNodeWrapper
    wrapper.Choice = lambda choices: ("Choice", tuple(choices))
    wrapper.WithinRange = lambda low, high: ("WithinRange", low, high)
    for name, stand_in in (("qt", qt), ("slicer.i18n", i18n), ("slicer.ScriptedLoadableModule", scripted),
                           ("slicer.parameterNodeWrapper", wrapper)):
        monkeypatch.setitem(sys.modules, name, stand_in)
        if name.startswith("slicer."):
            monkeypatch.setattr(slicer, name.split(".")[1], stand_in, raising=False)
    for name in [n for n in sys.modules if n == "M3DNCASegmentLib.panel"]:
        monkeypatch.delitem(sys.modules, name)  # bind the panel to the qt stand-in
    monkeypatch.setattr(slicer, "app", Application(), raising=False)
    monkeypatch.setattr(slicer.util, "loadUI", lambda path: StandIn("qMRMLWidget"))
    monkeypatch.setattr(slicer.util, "childWidgetVariables", lambda widget: _ui_namespace())
    monkeypatch.setattr(slicer.util, "errorDisplay", lambda text, **kwargs: errors.append(text))
    monkeypatch.setattr(slicer.util, "showStatusMessage", lambda message, duration=0: None)
    monkeypatch.syspath_prepend(str(MODULE_DIR))
    monkeypatch.setattr(ParameterNodeStandIn, "connections", [])
    import importlib.util

    spec = importlib.util.spec_from_file_location("M3DNCASegment_with_qt_stand_ins", MODULE_DIR / "M3DNCASegment.py")
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    loaded.errors = errors
    return loaded


def _volume(scene, path=SAMPLE):
    image = sitk.ReadImage(str(path), sitk.sitkFloat32)
    node = slicer.vtkMRMLScalarVolumeNode()
    node.SetName(Path(path).name.split(".")[0])
    scene.AddNode(node)
    from M3DNCASegmentLib.geometry import ijk_to_ras_from_lps

    node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(
        ijk_to_ras_from_lps(image.GetOrigin(), image.GetSpacing(), image.GetDirection())))
    slicer.util.updateVolumeFromArray(node, sitk.GetArrayFromImage(image))
    return node


def _panel(module, scene, **parameters):
    volume = _volume(scene)
    panel = module.M3DNCASegmentWidget()
    panel.setup()
    p = panel._parameterNode
    p.inputVolume = volume
    for name, value in dict(dict(runs=2, side="right", region="volume", device="auto"), **parameters).items():
        setattr(p, name, value)
    return panel, volume


def _run(panel, timeout=240):
    """Apply, then poll as the QTimer would until the job is over."""
    panel.onApplyButton()
    deadline = time.time() + timeout
    while panel._job is not None and time.time() < deadline:
        panel.onPollJob()
        time.sleep(0.05)
    assert panel._job is None, "the job did not end"


def _segment_ml(segmentationNode, volume) -> float:
    """The first segment's volume in mL on the volume's voxels."""
    segmentId = segmentationNode.GetSegmentation().GetNthSegmentID(0)
    voxels = int(slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, segmentId, volume).sum())
    spacing = volume.GetSpacing()
    return voxels * spacing[0] * spacing[1] * spacing[2] / 1000


def _outputs(scene):
    return scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode"), scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")


def _node_ids(scene):
    return {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}


# --- tests ------------------------------------------------------------------------------------------

def test_apply_runs_the_job_and_shows_the_result_and_the_light(module, scene):
    panel, volume = _panel(module, scene)
    assert panel.ui.applyButton.enabled
    _run(panel)
    assert not module.errors, module.errors
    p = panel._parameterNode
    assert p.outputSegmentation is not None and scene.IsNodePresent(p.outputSegmentation)
    assert p.outputSegmentation.GetSegmentation().GetNthSegment(0).GetName() == "Right hippocampus"
    # the shipped sample (a right hippocampus) is segmented with runs that agree: below the model's
    # calibrated NQM threshold, so green
    from M3DNCASegmentLib import display
    from nca_core.modelfile.registry import load

    nqm = float(panel.ui.nqmLabel.text.removeprefix("NQM: "))
    assert nqm < load("hippocampus").calibration.nqm_threshold
    assert panel.ui.lightTitleLabel.text == display.light_title("green")
    table = panel.ui.volumesLabel.text  # the side's volume, the runs' interval and the light in one row
    assert table.count("<tr>") == 2 and "Right" in table and f"{_segment_ml(p.outputSegmentation, volume):.2f} mL" in table
    assert "SD" in table and panel.ui.lightTitleLabel.text in table
    assert "Done in" in panel.ui.statusLabel.text
    assert not panel.ui.progressBar.visible and panel.ui.inputsCollapsibleButton.enabled
    first = p.outputSegmentation
    _run(panel)  # again: the earlier result is hidden, the new one shown
    assert p.outputSegmentation is not first and not first.GetDisplayVisibility()
    assert p.outputSegmentation.GetDisplayVisibility()


def test_show_search_boxes_switches_the_boxes_of_the_latest_result(module, scene):
    from M3DNCASegmentLib import outputs

    panel, volume = _panel(module, scene)
    _run(panel)
    result = panel._parameterNode.outputSegmentation
    box = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "a search box")  # as a whole head's result has
    box.CreateDefaultDisplayNodes()
    box.SetDisplayVisibility(False)
    result.AddNodeReferenceID(outputs.SEARCH_BOX_REFERENCE_ROLE, box.GetID())
    checkBox = panel.ui.showSearchBoxesCheckBox
    checkBox.checked = True
    checkBox.toggled.emit(True)
    assert box.GetDisplayVisibility()
    checkBox.checked = False
    checkBox.toggled.emit(False)
    assert not box.GetDisplayVisibility()


def test_a_failed_job_says_why_and_leaves_the_scene(module, scene, monkeypatch):
    panel, volume = _panel(module, scene)
    monkeypatch.setattr(panel.logic, "pythonExecutable", lambda: shutil.which("false") or "/bin/false")
    before = _outputs(scene)
    _run(panel)
    assert len(module.errors) == 1 and "Segmentation failed" in module.errors[0]
    assert _outputs(scene) == before
    assert panel.ui.statusLabel.text == "Failed." and panel.ui.applyButton.text == "Apply"


def test_cancel_mid_run_ends_the_worker_and_leaves_the_scene(module, scene, wholehead_dir):
    """Cancel once the worker has reported a side's runs (after the registration's progress; the
    left side's runs come first, then the right's): the worker and its process group are gone at
    once, killed, and no node was added."""
    from M3DNCASegmentLib.job import RUNNING

    panel, volume = _panel(module, scene, runs=4, region="auto", side="auto")
    panel._parameterNode.inputVolume = head = _volume(scene, wholehead_dir / "ch2.nii.gz")
    before = _node_ids(scene)
    panel.onApplyButton()
    job = panel._job
    deadline = time.time() + 240
    status = job.poll()
    while not (status.step.endswith("hippocampus") and status.done > 0) and time.time() < deadline:
        assert status.state == RUNNING, status
        panel.onPollJob()
        time.sleep(0.02)
        status = job.poll()
    assert status.state == RUNNING, status  # mid-run: a side's runs reported, the worker still at work
    panel._jobStarted -= 1.0  # past the double-click grace
    panel.onApplyButton()
    assert panel._job is None and job.process.returncode == -signal.SIGKILL, job.process.returncode
    with pytest.raises(ProcessLookupError):
        os.killpg(job.process.pid, 0)  # nothing of the worker's process group is left
    assert not os.path.exists(job.workdir)
    for _ in range(5):  # the timer's polls after the cancel change nothing either
        panel.onPollJob()
    assert _node_ids(scene) == before and scene.IsNodePresent(head) and not module.errors
    assert panel.ui.statusLabel.text.startswith("Cancelled") and panel.ui.applyButton.text == "Apply"


def test_an_input_removed_during_the_job_gives_an_error_and_no_outputs(module, scene):
    panel, volume = _panel(module, scene)
    panel.onApplyButton()
    scene.RemoveNode(volume)
    deadline = time.time() + 240
    while panel._job is not None and time.time() < deadline:
        panel.onPollJob()
        time.sleep(0.05)
    assert len(module.errors) == 1 and "removed during the segmentation" in module.errors[0]
    assert scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 0
    assert panel.ui.statusLabel.text == "Failed."


def test_the_gui_is_connected_once_and_choices_survive_reentering(module, scene):
    panel, volume = _panel(module, scene, device="GPU")
    assert panel.ui.deviceComboBox.currentText == "GPU"
    panel.enter()
    panel.exit()
    panel.enter()
    assert panel._parameterNode.device == "GPU", "re-entering the module reset the device choice"
    combos = [c for c in ParameterNodeStandIn.connections if c[1] is panel.ui.deviceComboBox]
    assert len(combos) == 1, f"{len(combos)} connectors on the device box"
    tag = panel._parameterNodeGuiTag
    assert tag is not None
    panel.onSceneStartClose(None, None)  # a new parameter node: the old connection goes, by its tag
    assert ParameterNodeStandIn.connections == []


def test_the_same_model_file_loaded_twice_is_one_entry(module, scene, tmp_path, monkeypatch):
    from nca_core.modelfile.registry import resolve

    panel, volume = _panel(module, scene)
    copy = tmp_path / "mine.m3dnca"
    shutil.copyfile(resolve("hippocampus"), copy)
    other_spelling = str(tmp_path / "." / "mine.m3dnca")
    count = panel.ui.modelComboBox.count
    for path in (str(copy), other_spelling):
        monkeypatch.setattr(sys.modules["qt"], "QFileDialog",
                            types.SimpleNamespace(getOpenFileName=lambda *args, path=path: path), raising=False)
        monkeypatch.setattr(slicer.util, "mainWindow", lambda: None)
        panel.onModelActivated(panel.ui.modelComboBox.count - 1)  # "Load model file..."
    assert panel.ui.modelComboBox.count == count + 1
    assert panel.ui.modelComboBox.currentText == "mine.m3dnca" and panel._parameterNode.model == str(copy)


def test_region_roi_needs_an_roi_before_apply(module, scene):
    panel, volume = _panel(module, scene, region="roi")
    panel._checkCanApply()
    assert not panel.ui.applyButton.enabled and panel.ui.roiSelector.enabled
    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode")
    panel._parameterNode.roi = roi
    panel._checkCanApply()
    assert panel.ui.applyButton.enabled
    panel._parameterNode.region = "auto"
    panel._checkCanApply()
    assert not panel.ui.roiSelector.enabled


def test_a_missing_model_is_not_replaced_and_apply_waits(module, scene, tmp_path):
    panel, volume = _panel(module, scene)
    moved = str(tmp_path / "moved-away.m3dnca")
    panel._parameterNode.model = moved
    panel._checkCanApply()
    assert panel.ui.modelComboBox.currentIndex == -1 and panel._parameterNode.model == moved
    assert "Model not found" in panel.ui.modelDescriptionLabel.text
    assert not panel.ui.applyButton.enabled


def test_the_light_is_taken_down_when_the_input_volume_changes(module, scene):
    panel, volume = _panel(module, scene)
    panel._resultInputID = volume.GetID()
    panel.ui.nqmLabel.text, panel.ui.statusLabel.text = "NQM: 0.0500", "Done in 1.2 s"
    panel._parameterNode.inputVolume = _volume(scene)
    assert panel._resultInputID == "" and panel.ui.nqmLabel.text == "" and panel.ui.statusLabel.text == ""


def test_a_double_click_on_apply_does_not_cancel_the_job_it_started(module, scene):
    panel, volume = _panel(module, scene)
    cancelled = []
    panel.cancelJob = lambda: cancelled.append(True)
    panel._job = object()
    panel._jobStarted = time.perf_counter()
    panel.onApplyButton()  # the second click of the double-click
    assert not cancelled
    panel._jobStarted -= 1.0
    panel.onApplyButton()  # a deliberate Cancel
    assert cancelled == [True]
    panel._job = None


def test_the_in_slicer_self_test_passes_and_can_fail(module, scene, monkeypatch):
    """The module's own self-test (run by Slicer's ctest) on real MRML; and it fails when the
    outputs stop matching the engine (here: segments taken from a shifted labelmap)."""
    module.M3DNCASegmentTest().runTest()
    from M3DNCASegmentLib import outputs

    original = outputs.setSegmentMask
    monkeypatch.setattr(outputs, "setSegmentMask",
                        lambda node, segmentId, mask, volume: original(node, segmentId, mask[::-1].copy(), volume))
    with pytest.raises(AssertionError):
        module.M3DNCASegmentTest().test_process_matches_the_engine()


def test_the_in_slicer_self_test_fails_on_a_geometry_bug_in_the_module(module, scene, monkeypatch):
    """The self-test's engine reads an image it builds itself: a bug in the module's conversion
    of the volume node (here: the first axis's direction reversed) makes it fail."""
    from M3DNCASegmentLib import volume

    original = volume.lps_geometry_from_ijk_to_ras

    def reversed_first_axis(matrix):
        origin, spacing, direction = original(matrix)
        return origin, spacing, tuple(-d if index % 3 == 0 else d for index, d in enumerate(direction))

    monkeypatch.setattr(volume, "lps_geometry_from_ijk_to_ras", reversed_first_axis)
    with pytest.raises(AssertionError):
        module.M3DNCASegmentTest().test_process_matches_the_engine()
