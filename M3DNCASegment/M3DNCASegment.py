"""M3DNCASegment: M3D-NCA segmentation with a quality traffic light for 3D Slicer.

Processing model (documented choice): the panel's Apply runs the engine in a separate
PythonSlicer process (M3DNCASegmentLib/job.py + worker.py); a QTimer polls its progress file,
so Slicer stays fully responsive, and Cancel kills the process at once. Nothing is added to
the scene until the result is complete. The console API ``M3DNCASegmentLogic().process`` runs
the engine in Slicer's own process (synchronously) and returns a result object.
"""
import logging
import math
import os
import shutil
import sys
import time
from typing import Annotated, Callable, Optional, Tuple

import numpy as np
import qt
import vtk

import slicer
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin
from slicer.parameterNodeWrapper import (
    parameterNodeWrapper,
    Choice,
    WithinRange,
)

from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode

from M3DNCASegmentLib import options

MODULE_DIR = os.path.dirname(os.path.abspath(__file__))
ENGINE_DIR = options.ensure_engine_importable(MODULE_DIR)  # first: display takes the light's palette from nca_core

from M3DNCASegmentLib import display, geometry  # noqa: E402
from M3DNCASegmentLib.job import CANCELLED, FAILED, FINISHED, BackgroundJob  # noqa: E402
DEFAULT_MODEL = "hippocampus"
LOAD_MODEL_ITEM = "Load model file\u2026"
CANCEL_GRACE_SECONDS = 0.5  # Cancel clicks this soon after Apply belong to a double-click


#
# M3DNCASegment
#


class M3DNCASegment(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("M3D-NCA Segment")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["M3DNCASegment contributors"]
        self.parent.helpText = _("""
Segment a volume with an M3D-NCA model (neural cellular automata). The model runs several times
with random cell updates; the mean gives the segmentation, the spread (standard deviation) gives a
variance map shown as a coloured overlay, and the NCA quality metric (NQM) gives a traffic light:
green = quality likely above the calibrated threshold, yellow = check, red = review carefully,
grey = no verdict (the model has no calibration, or a single run cannot measure disagreement).
The light is an estimate, not a guarantee: always review.
""")
        self.parent.acknowledgementText = _("""
Based on M3D-NCA (Kalkhof and Mukhopadhyay, MICCAI 2023).
""")


#
# Result of one segmentation
#


class M3DNCASegmentResult:
    """What ``M3DNCASegmentLogic.process`` returns."""

    def __init__(self, segmentationNode, varianceNode, report: dict, totalSeconds: float):
        self.segmentationNode = segmentationNode
        self.varianceNode = varianceNode
        self.report = dict(report)
        nqm = report.get("nqm")
        self.nqm = math.inf if nqm is None else float(nqm)  # inf: empty segmentation
        self.light = report.get("quality", "unknown")  # green | yellow | red | unknown
        self.predictedDice = report.get("predicted_dice")  # float or None (not calibrated)
        self.explanation = report.get("explanation", "")
        self.engineSeconds = report.get("seconds")
        self.totalSeconds = totalSeconds
        self.device = report.get("device")
        self.runs = report.get("runs")
        self.model = report.get("model")

    def summary(self) -> str:
        return display.light_summary(self.light, self.nqm, self.predictedDice, self.explanation)

    def __repr__(self) -> str:
        return (f"M3DNCASegmentResult(light={self.light!r}, nqm={self.nqm:.4f}, "
                f"predictedDice={self.predictedDice}, totalSeconds={self.totalSeconds:.1f})")


#
# M3DNCASegmentParameterNode
#


@parameterNodeWrapper
class M3DNCASegmentParameterNode:
    """
    inputVolume - the volume to segment.
    model - shipped model name or path to a .m3dnca file (kept in sync with the model combo box).
    runs - pseudo-ensemble size.
    device - auto, CPU or GPU.
    seed, fireRate (0 = the model's own), steps ("" = the model's own, else e.g. "10,10").
    overlayOpacity - opacity of the variance overlay in slice views.
    outputSegmentation, outputVariance - the latest results.
    """

    inputVolume: vtkMRMLScalarVolumeNode
    model: str = DEFAULT_MODEL
    runs: Annotated[int, WithinRange(1, 200)] = 10
    device: Annotated[str, Choice(list(options.DEVICE_CHOICES))] = "auto"
    seed: Annotated[int, WithinRange(0, 2**31 - 1)] = 0
    fireRate: Annotated[float, WithinRange(0.0, 0.99)] = 0.0
    steps: str = ""
    overlayOpacity: Annotated[float, WithinRange(0.0, 1.0)] = display.DEFAULT_OVERLAY_OPACITY
    outputSegmentation: vtkMRMLSegmentationNode
    outputVariance: vtkMRMLScalarVolumeNode


#
# M3DNCASegmentWidget
#


class M3DNCASegmentWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._job = None
        self._jobInput = None
        self._jobStarted = 0.0
        self._previousModelIndex = 0
        self._resultInputID = ""  # the volume whose result the light shows

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/M3DNCASegment.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = M3DNCASegmentLogic()

        self._timer = qt.QTimer()
        self._timer.setInterval(200)
        self._timer.timeout.connect(self.onPollJob)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        # "activated" fires on user choices only (also when "Load model file..." is chosen again);
        # programmatic selection goes through selectModel().
        self.ui.modelComboBox.connect("activated(int)", self.onModelActivated)
        self.ui.overlayOpacitySlider.connect("valueChanged(double)", self.onOpacityChanged)
        self.ui.progressBar.hide()
        self.showLight(None)

        self.populateModels()
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self.cancelJob()
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)

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

    def setParameterNode(self, inputParameterNode: Optional[M3DNCASegmentParameterNode]) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
            self.selectModel(self._parameterNode.model)
            self._checkCanApply()

    def _checkCanApply(self, caller=None, event=None) -> None:
        p = self._parameterNode
        if p and self._job is None and self.ui.modelComboBox.currentIndex != self._modelIndex(p.model):
            self.selectModel(p.model)  # the node changed under the panel: a scene was loaded, or the console
        if self._resultInputID and not (p and p.inputVolume and p.inputVolume.GetID() == self._resultInputID):
            self.clearResult()  # the light shown belongs to another volume
        if self._job is not None:
            self.ui.applyButton.text = _("Cancel")
            self.ui.applyButton.toolTip = _("Stop the segmentation; the scene is left as it was")
            self.ui.applyButton.enabled = True
        elif p and p.inputVolume and self._modelIndex(p.model) >= 0:
            self.ui.applyButton.text = _("Apply")
            self.ui.applyButton.toolTip = _("Segment the input volume")
            self.ui.applyButton.enabled = True
        else:
            self.ui.applyButton.text = _("Apply")
            self.ui.applyButton.toolTip = _("Select an input volume and a model")
            self.ui.applyButton.enabled = False

    # --- models -----------------------------------------------------------------------------

    def populateModels(self) -> None:
        combo = self.ui.modelComboBox
        combo.clear()
        for info in self.logic.modelCatalog():
            combo.addItem(info.name, info.path)
            combo.setItemData(combo.count - 1, info.summary(), qt.Qt.ToolTipRole)
        combo.addItem(LOAD_MODEL_ITEM, "")
        self.selectModel(self._parameterNode.model if self._parameterNode else DEFAULT_MODEL)

    def _modelIndex(self, model: str) -> int:
        """The combo box item of a model name or file path; -1 if none."""
        combo = self.ui.modelComboBox
        for i in range(combo.count - 1):  # the last item is "Load model file..."
            if model and (combo.itemText(i) == model or combo.itemData(i) == model):
                return i
        return -1

    def selectModel(self, model: str) -> None:
        """Show the parameter node's model in the combo box, adding a model file if needed.
        A model that cannot be found (a moved file from a saved scene) is not replaced by
        another: the box shows none, the description says so, and Apply stays disabled."""
        combo = self.ui.modelComboBox
        index = self._modelIndex(model)
        if index < 0 and model and os.path.isfile(model):
            combo.insertItem(combo.count - 1, os.path.basename(model), model)
            index = combo.count - 2
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
                options.read_model_info(path)
            except (OSError, ValueError) as error:
                slicer.util.errorDisplay(str(error), windowTitle=_("Cannot load model"))
                combo.currentIndex = self._previousModelIndex
                return
            combo.insertItem(combo.count - 1, os.path.basename(path), path)
            combo.currentIndex = combo.count - 2
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
            return
        if not model:
            self.ui.modelDescriptionLabel.text = _("No model selected.")
            return
        try:
            self.ui.modelDescriptionLabel.text = self.logic.modelInfo(model).summary()
        except (OSError, ValueError) as error:
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
        runOptions = self.logic.runOptions(p.model, p.runs, p.seed, p.device, p.fireRate, p.steps)
        inputVolume = p.inputVolume
        array = self.logic.engineArray(inputVolume)
        spacing, direction = self.logic.engineGeometry(inputVolume)
        job = BackgroundJob(array, runOptions, ENGINE_DIR, python=self.logic.pythonExecutable(),
                            spacing=spacing, direction=direction)
        job.start()
        self._job = job
        self._jobInput = inputVolume
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
        self.ui.progressBar.setValue(status.done)
        self.ui.progressBar.setFormat(display.progress_text(status.done, status.total))
        if status.state == "running" and os.path.exists(job.path("progress.json")):
            self.ui.statusLabel.text = _("Segmenting\u2026")
        if status.state == FINISHED:
            self._timer.stop()  # an error dialog runs its own event loop: no second poll meanwhile
            self.ui.statusLabel.text = _("Creating outputs\u2026")
            try:
                with slicer.util.tryWithErrorDisplay(_("Failed to create the outputs.")):
                    if not slicer.mrmlScene.IsNodePresent(self._jobInput):
                        raise RuntimeError(_("The input volume was removed during the segmentation."))
                    previous = (self._parameterNode.outputSegmentation, self._parameterNode.outputVariance)
                    result = self.logic.createOutputs(
                        self._jobInput, job.result(), time.perf_counter() - self._jobStarted,
                        showResult=True, overlayOpacity=self._parameterNode.overlayOpacity,
                    )
                    self.logic.hideOutputs(*previous)
                    self._parameterNode.outputSegmentation = result.segmentationNode
                    self._parameterNode.outputVariance = result.varianceNode
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
        self._job = None
        self._jobInput = None
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

    def showResult(self, result: M3DNCASegmentResult) -> None:
        self.showLight(result.light)
        self.ui.lightTitleLabel.text = display.light_title(result.light)
        self.ui.nqmLabel.text = display.format_nqm(result.nqm)
        self.ui.predictedDiceLabel.text = display.format_predicted_dice(result.predictedDice)
        self.ui.explanationLabel.text = result.explanation
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
            self.ui.nqmLabel.text = ""
            self.ui.predictedDiceLabel.text = ""
            self.ui.explanationLabel.text = ""


#
# M3DNCASegmentLogic
#


class M3DNCASegmentLogic(ScriptedLoadableModuleLogic):
    """Computation without GUI; usable from the Python console:

    .. code-block:: python

      logic = slicer.util.getModuleLogic("M3DNCASegment")
      result = logic.process(slicer.util.getNode("MRHead"), model="hippocampus", runs=10)
      print(result.light, result.nqm, result.predictedDice)
    """

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)

    def getParameterNode(self):
        return M3DNCASegmentParameterNode(super().getParameterNode())

    # --- dependencies ----------------------------------------------------------------------

    @staticmethod
    def missingDependencies():
        """(torch missing, list of missing pip requirements)."""
        import importlib.util

        torchMissing = importlib.util.find_spec("torch") is None
        return torchMissing, options.missing_pip_packages()

    def setupPythonRequirements(self, interactive: bool = True) -> bool:
        """Install what is missing after one confirmation. Returns False when the user declines.
        With ``interactive=False`` nothing is installed and no dialog opens: raises instead."""
        torchMissing, pipMissing = self.missingDependencies()
        if not torchMissing and not pipMissing:
            return True
        message = options.install_message(torchMissing, pipMissing)
        if not interactive:
            raise RuntimeError(message.replace("Download and install now?",
                                               "Install them from the M3DNCASegment panel (Apply) first."))
        if not slicer.util.confirmOkCancelDisplay(message, windowTitle=_("Install Python packages")):
            return False
        with slicer.util.WaitCursor():
            if torchMissing:
                try:
                    import PyTorchUtils
                except ImportError:
                    raise RuntimeError(_("The PyTorch extension is required: install it from the "
                                         "Extensions Manager and restart Slicer.")) from None
                torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(
                    askConfirmation=False, torchVersionRequirement=options.TORCH_REQUIREMENT)
                if torch is None:
                    raise RuntimeError(_("PyTorch could not be installed."))
            if pipMissing:
                slicer.util.pip_install(list(pipMissing))
        return True

    # --- models and options ----------------------------------------------------------------

    def modelCatalog(self):
        return options.model_catalog()

    def modelInfo(self, model: str) -> options.ModelInfo:
        for info in self.modelCatalog():
            if info.name == model:
                return info
        if os.path.isfile(model):
            return options.read_model_info(model)
        names = ", ".join(info.name for info in self.modelCatalog()) or "none installed"
        raise ValueError(f"unknown model {model!r}; shipped models: {names}")

    def runOptions(self, model: str, runs: int = 10, seed: int = 0, device: str = "auto",
                   fireRate: Optional[float] = None, steps=None) -> options.RunOptions:
        """Checked engine options; ``steps`` may be a list or text such as "10,10"."""
        info = self.modelInfo(model)
        if isinstance(steps, str) or steps is None:
            steps = options.parse_steps(steps, info.levels or None)
        else:
            steps = options.parse_steps(",".join(str(int(s)) for s in steps), info.levels or None)
        return options.RunOptions(model=info.path if os.path.isfile(model) else info.name, runs=runs,
                                  seed=seed, device=device, fire_rate=fireRate, steps=steps).validate()

    @staticmethod
    def pythonExecutable() -> str:
        """PythonSlicer (Slicer's Python without the GUI) for the background process."""
        return shutil.which("PythonSlicer") or sys.executable

    @staticmethod
    def engineArray(inputVolume) -> np.ndarray:
        """The input voxels as float32 (I, J, K), the engine's (X, Y, Z) order."""
        if inputVolume is None or inputVolume.GetImageData() is None:
            raise ValueError(_("The input volume has no voxels."))
        return geometry.engine_input(slicer.util.arrayFromVolume(inputVolume))

    @staticmethod
    def engineGeometry(inputVolume) -> Tuple[Tuple[float, ...], Tuple[float, ...]]:
        """(spacing, direction) of the input's voxel grid in the engine's ITK/LPS convention:
        the engine turns and resamples the volume to the model's training grid with them."""
        ijkToRAS = vtk.vtkMatrix4x4()
        inputVolume.GetIJKToRASMatrix(ijkToRAS)
        _, spacing, direction = geometry.lps_geometry_from_ijk_to_ras(slicer.util.arrayFromVTKMatrix(ijkToRAS))
        return spacing, direction

    # --- processing ------------------------------------------------------------------------

    def process(self, inputVolume, model: str = DEFAULT_MODEL, runs: int = 10, seed: int = 0,
                device: str = "auto", fireRate: Optional[float] = None, steps=None,
                interactive: bool = False, showResult: bool = True,
                overlayOpacity: float = display.DEFAULT_OVERLAY_OPACITY,
                progress: Optional[Callable[[int, int], None]] = None,
                shouldCancel: Optional[Callable[[], bool]] = None) -> M3DNCASegmentResult:
        """Segment ``inputVolume`` in this process and add the outputs to the scene.

        :param model: shipped model name or path to a .m3dnca file.
        :param device: "auto", "CPU"/"cpu" or "GPU"/"cuda".
        :param interactive: if False (default) no dialog ever opens; errors are raised.
        :param progress: called with (runs done, runs total).
        :param shouldCancel: polled after every NCA step; True stops with ``nca_core.ensemble.Cancelled``
          and leaves the scene unchanged.
        :return: M3DNCASegmentResult (segmentationNode, varianceNode, nqm, light, predictedDice, ...).
        """
        if not inputVolume:
            raise ValueError(_("No input volume."))
        started = time.perf_counter()
        if not self.setupPythonRequirements(interactive=interactive):
            raise RuntimeError(_("Required Python packages are not installed."))
        runOptions = self.runOptions(model, runs, seed, device, fireRate, steps)
        from nca_core import registry
        from nca_core.pipeline import segment_array
        from M3DNCASegmentLib.job import JobResult

        bundle = registry.load(runOptions.model)
        name = os.path.basename(runOptions.model)
        name = name[: -len(options.MODEL_SUFFIX)] if name.endswith(options.MODEL_SUFFIX) else name
        logging.info(f"M3D-NCA: segmenting {inputVolume.GetName()} with {name}, {runOptions.runs} runs")
        spacing, direction = self.engineGeometry(inputVolume)
        segmentation = segment_array(
            self.engineArray(inputVolume), bundle, name, runs=runOptions.runs, seed=runOptions.seed,
            device=runOptions.device, fire_rate=runOptions.fire_rate, steps=runOptions.steps,
            progress=progress, should_cancel=shouldCancel, spacing=spacing, direction=direction,
        )
        report = dict(segmentation.report(), labels=list(bundle.config.labels))
        outputs = JobResult(labels=segmentation.ensemble.labels,
                            variance=segmentation.ensemble.variance_map, report=report)
        result = self.createOutputs(inputVolume, outputs, time.perf_counter() - started,
                                    showResult=showResult, overlayOpacity=overlayOpacity)
        logging.info("M3D-NCA: " + result.summary())
        return result

    @staticmethod
    def hideOutputs(segmentationNode, varianceNode) -> None:
        """Hide an earlier result (kept in the scene), so new contours are not drawn over old ones."""
        if segmentationNode and slicer.mrmlScene.IsNodePresent(segmentationNode):
            segmentationNode.SetDisplayVisibility(False)
        if varianceNode and slicer.mrmlScene.IsNodePresent(varianceNode):
            legend = slicer.modules.colors.logic().GetColorLegendDisplayNode(varianceNode)
            if legend:
                legend.SetVisibility(False)

    def createOutputs(self, inputVolume, outputs, totalSeconds: float, showResult: bool = True,
                      overlayOpacity: float = display.DEFAULT_OVERLAY_OPACITY) -> M3DNCASegmentResult:
        """Segmentation and variance nodes from engine outputs (X, Y, Z arrays); on any error the
        nodes made so far are removed, so nothing is left half-made."""
        created = []
        try:
            segmentationNode = self._createSegmentation(inputVolume, outputs, created)
            varianceNode = self._createVariance(inputVolume, outputs, created)
        except Exception:
            for node in reversed(created):
                if slicer.mrmlScene.IsNodePresent(node):
                    slicer.mrmlScene.RemoveNode(node)
            raise
        if showResult:
            segmentationNode.CreateClosedSurfaceRepresentation()  # show the segments in 3D too
            self.showVarianceOverlay(inputVolume, varianceNode, overlayOpacity)
        return M3DNCASegmentResult(segmentationNode, varianceNode, outputs.report, totalSeconds)

    def _createSegmentation(self, inputVolume, outputs, created: list):
        baseName = inputVolume.GetName()
        segmentationNode = slicer.mrmlScene.AddNewNodeByClass(
            "vtkMRMLSegmentationNode", slicer.mrmlScene.GenerateUniqueName(f"{baseName} M3D-NCA segmentation"))
        created.append(segmentationNode)
        segmentationNode.CreateDefaultDisplayNodes()
        # Transform first: the reference geometry is stored relative to the node's parent transform.
        segmentationNode.SetAndObserveTransformNodeID(inputVolume.GetTransformNodeID())
        segmentationNode.SetReferenceImageGeometryParameterFromVolumeNode(inputVolume)
        labelsKJI = geometry.ijk_to_kji(np.asarray(outputs.labels))
        expected = tuple(reversed(inputVolume.GetImageData().GetDimensions()))
        if labelsKJI.shape != expected:
            raise RuntimeError(f"segmentation shape {labelsKJI.shape} does not match the input {expected}")
        segmentation = segmentationNode.GetSegmentation()
        for value, name, color, terminology in display.segment_specs(outputs.label_names):
            segmentId = segmentation.AddEmptySegment("", name, color)
            segment = segmentation.GetSegment(segmentId)
            if terminology:
                segment.SetTag(segment.GetTerminologyEntryTagName(), terminology)
            mask = (labelsKJI == value).astype(np.uint8)
            if mask.any():
                slicer.util.updateSegmentBinaryLabelmapFromArray(mask, segmentationNode, segmentId, inputVolume)
        return segmentationNode

    def _createVariance(self, inputVolume, outputs, created: list):
        ijkToRAS = vtk.vtkMatrix4x4()
        inputVolume.GetIJKToRASMatrix(ijkToRAS)
        variance = np.asarray(outputs.variance, dtype=np.float32)
        varianceNode = slicer.util.addVolumeFromArray(
            geometry.ijk_to_kji(variance), ijkToRAS=ijkToRAS,
            name=slicer.mrmlScene.GenerateUniqueName(f"{inputVolume.GetName()} M3D-NCA variance"))
        created.append(varianceNode)
        varianceNode.SetAndObserveTransformNodeID(inputVolume.GetTransformNodeID())
        settings = display.overlay_settings(variance)
        displayNode = varianceNode.GetScalarVolumeDisplayNode()
        displayNode.SetAndObserveColorNodeID(display.VARIANCE_COLOR_NODE_ID)
        displayNode.SetAutoWindowLevel(0)
        displayNode.SetWindowLevelMinMax(settings.window_min, settings.window_max)
        displayNode.SetAutoThreshold(0)
        displayNode.SetThreshold(settings.threshold, max(settings.window_max, settings.threshold) * 10.0)
        displayNode.SetApplyThreshold(1)
        legend = slicer.modules.colors.logic().AddDefaultColorLegendDisplayNode(varianceNode)
        if legend:
            created.append(legend)
            legend.SetTitleText("M3D-NCA variance (std)")
        return varianceNode

    @staticmethod
    def showVarianceOverlay(inputVolume, varianceNode, opacity: float) -> None:
        """Input as background, variance as coloured foreground (see-through below threshold)."""
        slicer.util.setSliceViewerLayers(background=inputVolume, foreground=varianceNode,
                                         foregroundOpacity=display.clamp_opacity(opacity))


#
# M3DNCASegmentTest
#


class M3DNCASegmentTest(ScriptedLoadableModuleTest):
    """Runs the real workflow on a small synthetic volume with a shipped model."""

    def setUp(self):
        slicer.mrmlScene.Clear()
        # Install what is missing (torch, ...), as a clean Slicer needs it. Under ctest (--testing)
        # slicer.util answers the confirmation itself, so no dialog waits.
        self.assertTrue(M3DNCASegmentLogic().setupPythonRequirements(interactive=True))

    def runTest(self):
        self.setUp()
        self.test_helpers()
        self.setUp()
        self.test_process_synthetic_volume()
        self.setUp()
        self.test_background_job_cancel_leaves_scene()
        self.setUp()
        self.test_background_job_outputs()

    def _syntheticVolume(self):
        shape = (24, 32, 28)  # K, J, I
        k, j, i = np.mgrid[: shape[0], : shape[1], : shape[2]]
        ellipsoid = ((k - 12) / 6.0) ** 2 + ((j - 16) / 9.0) ** 2 + ((i - 14) / 7.0) ** 2 <= 1
        array = (ellipsoid * 800 + np.random.default_rng(0).normal(100, 20, shape)).astype(np.int16)
        ijkToRAS = np.array([[-1.0, 0, 0, 10], [0, -1.2, 0, -20], [0, 0, 1.5, 30], [0, 0, 0, 1]])
        return slicer.util.addVolumeFromArray(array, ijkToRAS=ijkToRAS, name="M3DNCATestVolume")

    def _model(self):
        catalog = M3DNCASegmentLogic().modelCatalog()
        names = [info.name for info in catalog]
        self.assertTrue(names, "no shipped model found")
        return DEFAULT_MODEL if DEFAULT_MODEL in names else names[0]

    def test_helpers(self):
        a = np.arange(24).reshape(2, 3, 4)
        self.assertEqual(geometry.kji_to_ijk(a).shape, (4, 3, 2))
        self.assertTrue(np.array_equal(geometry.ijk_to_kji(geometry.kji_to_ijk(a)), a))
        self.assertEqual(options.engine_device("GPU"), "cuda")

    def test_process_synthetic_volume(self):
        self.delayDisplay("Segmenting a synthetic volume")
        volume = self._syntheticVolume()
        calls = []
        result = M3DNCASegmentLogic().process(volume, model=self._model(), runs=2, device="CPU",
                                               interactive=False, progress=lambda d, t: calls.append((d, t)))
        self.assertEqual(calls[-1], (2, 2))
        self.assertIn(result.light, ("green", "yellow", "red", "unknown"))
        self.assertTrue(result.nqm >= 0)
        self._checkOutputs(volume, result)
        self.delayDisplay("Test passed: " + result.summary())

    def _checkOutputs(self, volume, result):
        seg, var = result.segmentationNode, result.varianceNode
        self.assertTrue(slicer.mrmlScene.IsNodePresent(seg))
        self.assertTrue(slicer.mrmlScene.IsNodePresent(var))
        labels = M3DNCASegmentLogic().modelInfo(self._model()).labels
        self.assertEqual(seg.GetSegmentation().GetNumberOfSegments(), len(labels))
        self.assertEqual(var.GetImageData().GetDimensions(), volume.GetImageData().GetDimensions())
        a, b = vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()
        volume.GetIJKToRASMatrix(a)
        var.GetIJKToRASMatrix(b)
        self.assertTrue(np.allclose(slicer.util.arrayFromVTKMatrix(a), slicer.util.arrayFromVTKMatrix(b)))
        self.assertTrue(np.all(slicer.util.arrayFromVolume(var) >= 0))
        reference = seg.GetNodeReference(seg.GetReferenceImageGeometryReferenceRole())
        self.assertEqual(reference.GetID(), volume.GetID())

    def _job(self, volume, runs):
        logic = M3DNCASegmentLogic()
        spacing, direction = logic.engineGeometry(volume)
        job = BackgroundJob(logic.engineArray(volume), logic.runOptions(self._model(), runs, 0, "CPU"),
                            ENGINE_DIR, python=logic.pythonExecutable(), spacing=spacing, direction=direction)
        job.start()
        return job

    def test_background_job_cancel_leaves_scene(self):
        volume = self._syntheticVolume()
        before = slicer.mrmlScene.GetNumberOfNodes()
        job = self._job(volume, 50)
        job.cancel()
        self.assertEqual(job.poll().state, CANCELLED)
        job.cleanup()
        self.assertFalse(os.path.exists(job.workdir))
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), before)

    def test_background_job_outputs(self):
        volume = self._syntheticVolume()
        job = self._job(volume, 2)
        try:
            deadline = time.time() + 300
            while job.poll().state not in (FINISHED, FAILED) and time.time() < deadline:
                slicer.app.processEvents()
                time.sleep(0.1)
            status = job.poll()
            self.assertEqual(status.state, FINISHED, status.message)
            result = M3DNCASegmentLogic().createOutputs(volume, job.result(), 0.0)
            self._checkOutputs(volume, result)
        finally:
            job.cleanup()
