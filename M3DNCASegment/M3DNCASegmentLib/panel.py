"""The module panel: parameter node <-> widgets, the model list, Apply/Cancel of a background
job and the traffic light. The computation is the logic's (``logic.SegmentLogic``)."""
from __future__ import annotations

import os
import time
from typing import Optional

import qt
import slicer
import vtk
from slicer.i18n import tr as _
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleWidget
from slicer.util import VTKObservationMixin

from nca_core.errors import NCAError
from nca_core.modelfile.header import read_model_header
from nca_core.modelfile.registry import DEFAULT_MODEL

from . import display
from .job import CANCELLED, FAILED, FINISHED, BackgroundJob

LOAD_MODEL_ITEM = "Load model file\u2026"
CANCEL_GRACE_SECONDS = 0.5  # Cancel clicks this soon after Apply belong to a double-click
PARAMETER_PROPERTY = "SlicerParameterName"


def parameterWidgets(ui) -> dict:
    """Parameter name -> widget, from the widgets' SlicerParameterName property."""
    mapping = {}
    for widget in vars(ui).values():
        name = widget.property(PARAMETER_PROPERTY) if hasattr(widget, "property") else None
        if name:
            mapping[str(name)] = widget
    return mapping


def sameNode(a, b) -> bool:
    return a is b or (a.GetScene() is b.GetScene() and a.GetID() == b.GetID())


class Panel(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The module's widget; the module file names its logic class (``logicClass``)."""

    logicClass = None
    defaultModel = DEFAULT_MODEL

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._job = None
        self._jobInput = None
        self._jobBox = None
        self._jobStarted = 0.0
        self._previousModelIndex = 0
        self._resultInputID = ""  # the volume whose result the light shows

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/M3DNCASegment.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = self.logicClass()
        self._timer = qt.QTimer()
        self._timer.setInterval(200)
        self._timer.timeout.connect(self.onPollJob)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        # "activated" fires on user choices only; programmatic selection goes through selectModel().
        self.ui.modelComboBox.connect("activated(int)", self.onModelActivated)
        self.ui.overlayOpacitySlider.connect("valueChanged(double)", self.onOpacityChanged)
        self.ui.showSearchBoxesCheckBox.connect("toggled(bool)", self.onShowSearchBoxes)
        self.ui.progressBar.hide()
        self.showLight(None)
        self.populateModels()
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self.cancelJob()
        self.setParameterNode(None)
        self.removeObservers()

    def enter(self) -> None:
        # The GUI stays connected while the module is not shown: connecting again on every entry
        # would pile up connectors (Slicer 5.8 returns no tag to disconnect them) and reset choices.
        self.initializeParameterNode()

    def exit(self) -> None:
        pass

    def onSceneStartClose(self, caller, event) -> None:
        self.cancelJob()
        self.clearResult()
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            firstVolumeNode = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolumeNode:
                self._parameterNode.inputVolume = firstVolumeNode

    def setParameterNode(self, parameterNode) -> None:
        """Connect the widgets to ``parameterNode`` (once: the same node again changes nothing)."""
        if parameterNode is not None and self._parameterNode is not None \
                and sameNode(parameterNode.parameterNode, self._parameterNode.parameterNode):
            return
        if self._parameterNode:
            if self._parameterNodeGuiTag is not None:
                self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
        self._parameterNode, self._parameterNodeGuiTag = parameterNode, None
        if self._parameterNode:
            # connectParametersToGui returns its tag on Slicer 5.8 too (connectGui returns None there).
            self._parameterNodeGuiTag = self._parameterNode.connectParametersToGui(parameterWidgets(self.ui))
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
            self.selectModel(self._parameterNode.model)
            self._checkCanApply()

    def _checkCanApply(self, caller=None, event=None) -> None:
        p = self._parameterNode
        if p and self._job is None and self.ui.modelComboBox.currentIndex != self._modelIndex(p.model):
            self.selectModel(p.model)  # the node changed under the panel: a scene was loaded, or the console
        if self._resultInputID and not (p and p.inputVolume and p.inputVolume.GetID() == self._resultInputID):
            self.clearResult()  # the light shown belongs to another volume
        self.ui.roiSelector.enabled = bool(p and p.region == "roi")
        if self._job is not None:
            self.ui.applyButton.text = _("Cancel")
            self.ui.applyButton.toolTip = _("Stop the segmentation; the scene is left as it was")
            self.ui.applyButton.enabled = True
        elif p and p.inputVolume and self._modelIndex(p.model) >= 0 and (p.region != "roi" or p.roi):
            self.ui.applyButton.text = _("Apply")
            self.ui.applyButton.toolTip = _("Segment the input volume")
            self.ui.applyButton.enabled = True
        else:
            self.ui.applyButton.text = _("Apply")
            self.ui.applyButton.toolTip = _("Select an input volume, a model and (region roi) an ROI")
            self.ui.applyButton.enabled = False

    # --- models -----------------------------------------------------------------------------

    def populateModels(self) -> None:
        combo = self.ui.modelComboBox
        combo.clear()
        for info in self.logic.modelCatalog():
            combo.addItem(info.name, info.path)
            combo.setItemData(combo.count - 1, info.summary(), qt.Qt.ToolTipRole)
        combo.addItem(LOAD_MODEL_ITEM, "")
        self.selectModel(self._parameterNode.model if self._parameterNode else self.defaultModel)

    def _modelIndex(self, model: str) -> int:
        """The combo box item of a model name or file (the same file by any path); -1 if none."""
        combo = self.ui.modelComboBox
        for i in range(combo.count - 1):  # the last item is "Load model file..."
            data = combo.itemData(i)
            if model and (combo.itemText(i) == model or data == model
                          or (data and os.path.isfile(model) and os.path.isfile(data)
                              and os.path.samefile(data, model))):
                return i
        return -1

    def addModelFile(self, path: str) -> int:
        """The combo item of a model file, added unless the same file is listed already."""
        combo = self.ui.modelComboBox
        index = self._modelIndex(path)
        if index < 0:
            combo.insertItem(combo.count - 1, os.path.basename(path), path)
            index = combo.count - 2
        return index

    def selectModel(self, model: str) -> None:
        """Show the parameter node's model in the combo box, adding a model file if needed. A
        model that cannot be found (a moved file from a saved scene) is not replaced by another:
        the box shows none, the description says so, and Apply stays disabled."""
        combo = self.ui.modelComboBox
        index = self._modelIndex(model)
        if index < 0 and model and os.path.isfile(model):
            index = self.addModelFile(model)
        combo.currentIndex = index
        if index >= 0:
            self._previousModelIndex = index
        self.updateModelDescription(missing=model if index < 0 else "")

    def onModelActivated(self, index: int) -> None:
        combo = self.ui.modelComboBox
        if combo.itemText(index) == LOAD_MODEL_ITEM:
            path = qt.QFileDialog.getOpenFileName(
                slicer.util.mainWindow(), _("Load M3D-NCA model"), "", _("M3D-NCA model (*.m3dnca)"))
            if not path:
                combo.currentIndex = self._previousModelIndex
                return
            try:
                read_model_header(path)
            except (OSError, ValueError, NCAError) as error:
                slicer.util.errorDisplay(str(error), windowTitle=_("Cannot load model"))
                combo.currentIndex = self._previousModelIndex
                return
            combo.currentIndex = self.addModelFile(path)
        self._previousModelIndex = combo.currentIndex
        if self._parameterNode:
            self._parameterNode.model = self.currentModel()
        self.updateModelDescription()

    def currentModel(self) -> str:
        """Shipped model name, or file path of a loaded model."""
        combo = self.ui.modelComboBox
        if combo.currentIndex < 0 or combo.currentText == LOAD_MODEL_ITEM:
            return ""
        path = combo.itemData(combo.currentIndex)
        name = combo.currentText
        shipped = {info.name for info in self.logic.modelCatalog()}
        return name if name in shipped else (path or name)

    def updateModelDescription(self, missing: str = "") -> None:
        model = self.currentModel()
        if missing:
            self.ui.modelDescriptionLabel.text = _("Model not found: {model}. Choose a model.").format(model=missing)
        elif not model:
            self.ui.modelDescriptionLabel.text = _("No model selected.")
        else:
            try:
                self.ui.modelDescriptionLabel.text = self.logic.modelInfo(model).summary()
            except (OSError, ValueError, NCAError) as error:
                self.ui.modelDescriptionLabel.text = str(error)

    # --- apply / cancel --------------------------------------------------------------------

    def onApplyButton(self) -> None:
        if self._job is not None:
            if time.perf_counter() - self._jobStarted < CANCEL_GRACE_SECONDS:
                return  # the second click of a double-click on Apply, not a Cancel
            self.cancelJob()
            slicer.util.showStatusMessage(_("M3D-NCA segmentation cancelled"), 3000)
            return
        with slicer.util.tryWithErrorDisplay(_("Failed to start the segmentation."), waitCursor=True):
            self.startJob()

    def startJob(self) -> None:
        p = self._parameterNode
        if not self.logic.setupPythonRequirements(interactive=True):
            return
        runOptions = self.logic.runOptions(p.model, p.runs, p.seed, p.device, p.fireRate, p.steps, p.side, p.region)
        image, box = self.logic.engineInput(p.inputVolume, p.region, p.roi)
        job = BackgroundJob(image, runOptions, self.logic.engineDir, python=self.logic.pythonExecutable())
        job.start()
        self._job, self._jobInput, self._jobBox = job, p.inputVolume, box
        self._jobStarted = time.perf_counter()
        self.ui.progressBar.setRange(0, runOptions.runs)
        self.ui.progressBar.setValue(0)
        self.ui.progressBar.setFormat(display.progress_text(0, runOptions.runs))
        self.ui.progressBar.show()
        self.clearResult()
        self.ui.statusLabel.text = _("Starting the segmentation\u2026")
        self.setInputsEnabled(False)
        self._checkCanApply()
        self._timer.start()

    def onPollJob(self) -> None:
        job = self._job
        if job is None:
            self._timer.stop()
            return
        status = job.poll()
        self.ui.progressBar.setRange(0, max(1, status.total))
        self.ui.progressBar.setValue(status.done)
        self.ui.progressBar.setFormat(display.progress_text(status.done, status.total, status.step))
        if status.state == "running" and status.step:
            self.ui.statusLabel.text = _("Segmenting\u2026")
        if status.state == FINISHED:
            self._timer.stop()  # an error dialog runs its own event loop: no second poll meanwhile
            self.ui.statusLabel.text = _("Creating outputs\u2026")
            try:
                with slicer.util.tryWithErrorDisplay(_("Failed to create the outputs.")):
                    if not slicer.mrmlScene.IsNodePresent(self._jobInput):
                        raise RuntimeError(_("The input volume was removed during the segmentation."))
                    result = self.logic.createOutputs(
                        self._jobInput, job.result(), time.perf_counter() - self._jobStarted, box=self._jobBox,
                        showResult=True, overlayOpacity=self._parameterNode.overlayOpacity)
                    self._parameterNode.outputSegmentation = result.segmentationNode
                    self._parameterNode.outputVariance = result.varianceNode
                    self.logic.showSearchBoxes(result.segmentationNode, self.ui.showSearchBoxesCheckBox.checked)
                    self.showResult(result)
                    self._resultInputID = self._jobInput.GetID()
            except Exception:
                self.ui.statusLabel.text = _("Failed.")
            finally:
                self.finishJob()
        elif status.state == FAILED:
            message = status.message
            self.finishJob()
            self.ui.statusLabel.text = _("Failed.")
            slicer.util.errorDisplay(_("Segmentation failed: {message}").format(message=message),
                                     windowTitle=_("M3D-NCA segmentation"))
        elif status.state == CANCELLED:
            self.finishJob()

    def cancelJob(self) -> None:
        if self._job is not None:
            self._job.cancel()
            self.finishJob()
            self.ui.statusLabel.text = _("Cancelled; the scene was not changed.")

    def finishJob(self) -> None:
        self._timer.stop()
        if self._job is not None:
            self._job.cleanup()
        self._job = self._jobInput = self._jobBox = None
        self.ui.progressBar.hide()
        self.setInputsEnabled(True)
        self._checkCanApply()

    def setInputsEnabled(self, enabled: bool) -> None:
        self.ui.inputsCollapsibleButton.enabled = enabled
        self.ui.advancedCollapsibleButton.enabled = enabled

    # --- outputs ---------------------------------------------------------------------------

    def onOpacityChanged(self, value: float) -> None:
        p = self._parameterNode
        if p and p.outputVariance and slicer.mrmlScene.IsNodePresent(p.outputVariance):
            slicer.util.setSliceViewerLayers(foregroundOpacity=display.clamp_opacity(value))

    def onShowSearchBoxes(self, checked: bool) -> None:
        p = self._parameterNode
        if p and p.outputSegmentation and slicer.mrmlScene.IsNodePresent(p.outputSegmentation):
            self.logic.showSearchBoxes(p.outputSegmentation, checked)

    def showResult(self, result) -> None:
        self.showLight(result.light)
        self.ui.lightTitleLabel.text = display.light_title(result.light)
        self.ui.nqmLabel.text = display.format_nqm(result.nqm)
        self.ui.predictedDiceLabel.text = display.format_predicted_dice(result.predictedDice)
        self.ui.explanationLabel.text = result.explanation
        self.ui.sidesLabel.text = "\n".join(display.side_summaries(result.sides)) if len(result.sides) > 1 else ""
        self.ui.volumesLabel.text = display.volume_table(result.sides, result.volumes)
        self.ui.statusLabel.text = _("Done in {seconds:.1f} s on {device} ({runs} runs).").format(
            seconds=result.totalSeconds, device=result.device, runs=result.runs)

    def clearResult(self) -> None:
        """Take down the light and numbers of a result that no longer applies."""
        self._resultInputID = ""
        self.showLight(None)
        self.ui.statusLabel.text = ""

    def showLight(self, light: Optional[str]) -> None:
        self.ui.lightLabel.setStyleSheet(display.light_stylesheet(light))
        if light is None:
            self.ui.lightTitleLabel.text = _("No result yet")
            for label in (self.ui.nqmLabel, self.ui.predictedDiceLabel, self.ui.explanationLabel, self.ui.sidesLabel,
                          self.ui.volumesLabel):
                label.text = ""
