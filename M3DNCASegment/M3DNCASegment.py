"""M3DNCASegment: M3D-NCA segmentation with a quality traffic light for 3D Slicer.

A thin adapter: module metadata, the parameter node, and the names Slicer looks up. The panel
is ``M3DNCASegmentLib/panel.py`` (Apply runs the engine in a separate PythonSlicer process,
``job.py`` + ``worker.py``, so Slicer stays responsive); the computation, also for the Python
console, is ``M3DNCASegmentLib/logic.py``:

.. code-block:: python

  logic = slicer.util.getModuleLogic("M3DNCASegment")
  result = logic.process(slicer.util.getNode("MRHead"), model="hippocampus", runs=10)  # region "auto"
  print(result.summary())
"""
import os
import time
from typing import Annotated

import numpy as np
import slicer
from slicer import vtkMRMLMarkupsROINode, vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import ScriptedLoadableModule, ScriptedLoadableModuleLogic, ScriptedLoadableModuleTest

from M3DNCASegmentLib import display, options
from M3DNCASegmentLib.job import CANCELLED, FAILED, FINISHED, BackgroundJob
from M3DNCASegmentLib.logic import M3DNCASegmentResult, SegmentLogic  # noqa: F401  (console API)
from M3DNCASegmentLib.panel import Panel
from nca_core.modelfile.registry import DEFAULT_MODEL


class M3DNCASegment(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("M3D-NCA Segment")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = []
        self.parent.contributors = ["M3DNCASegment contributors"]
        self.parent.helpText = _("""
Segment the hippocampus with an M3D-NCA model (neural cellular automata); the experimental
"prostate" model segments the prostate gland on an axial T2 (Dice about 0.77: review every
outline; it always takes the whole scan, never an ROI). Region "auto" finds both hippocampi in a
whole-head T1 and segments each side; "roi" segments the part of the volume inside a markups ROI;
"volume" takes the volume as one crop. The model runs several times with random cell updates;
the mean gives the segmentation, the spread (standard deviation) gives a variance map shown
as a coloured overlay, and the NCA quality metric (NQM) gives a traffic light per side and overall:
green = quality likely above the calibrated threshold, yellow = check, red = review carefully,
grey = no verdict. The light is an estimate, not a guarantee: always review.
""")
        self.parent.acknowledgementText = _("Based on M3D-NCA (Kalkhof and Mukhopadhyay, MICCAI 2023).")


@parameterNodeWrapper
class M3DNCASegmentParameterNode:
    """
    inputVolume - the volume to segment; region - auto (whole head or crop), roi, or volume;
    roi - the markups ROI for region roi; side - auto, left or right.
    model - shipped model name or path to a .m3dnca file (kept in sync with the model combo box).
    runs, device, seed, fireRate (0 = the model's own), steps ("" = the model's own, else "10,10").
    overlayOpacity - opacity of the variance overlay; showSearchBoxes - show a whole head's search boxes (ROIs);
    outputSegmentation, outputVariance - the latest results.
    """

    inputVolume: vtkMRMLScalarVolumeNode
    region: Annotated[str, Choice(list(options.REGION_CHOICES))] = "auto"
    roi: vtkMRMLMarkupsROINode
    side: Annotated[str, Choice(list(options.SIDE_CHOICES))] = "auto"
    model: str = DEFAULT_MODEL
    runs: Annotated[int, WithinRange(1, 200)] = 10
    device: Annotated[str, Choice(list(options.DEVICE_CHOICES))] = "auto"
    seed: Annotated[int, WithinRange(0, 2**31 - 1)] = 0
    fireRate: Annotated[float, WithinRange(0.0, 0.99)] = 0.0
    steps: str = ""
    overlayOpacity: Annotated[float, WithinRange(0.0, 1.0)] = display.DEFAULT_OVERLAY_OPACITY
    showSearchBoxes: bool = False
    outputSegmentation: vtkMRMLSegmentationNode
    outputVariance: vtkMRMLScalarVolumeNode


class M3DNCASegmentLogic(ScriptedLoadableModuleLogic, SegmentLogic):
    """The module's logic (``SegmentLogic``) with its parameter node."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)

    def getParameterNode(self):
        return M3DNCASegmentParameterNode(super().getParameterNode())


class M3DNCASegmentWidget(Panel):
    logicClass = M3DNCASegmentLogic
    defaultModel = DEFAULT_MODEL


class M3DNCASegmentTest(ScriptedLoadableModuleTest):
    """The real workflow in Slicer on a synthetic crop and the shipped model: the console API and
    the background job give the same labels, variance and NQM as the engine for the same seed,
    the engine reading an image built by the test itself (not the module's conversion)."""

    def setUp(self):
        slicer.mrmlScene.Clear()
        # Install what is missing (torch, ...), as a clean Slicer needs it. Under ctest (--testing)
        # slicer.util answers the confirmation itself, so no dialog waits.
        self.assertTrue(M3DNCASegmentLogic().setupPythonRequirements(interactive=True))

    def runTest(self):
        for test in (self.test_process_matches_the_engine, self.test_background_job_matches_the_engine,
                     self.test_background_job_cancel_leaves_scene):
            self.setUp()
            test()

    def _volume(self):
        """(volume node, SimpleITK image) of one synthetic crop, stored oblique. The image is the
        engine's input built here, not by the module's conversion of the node (``engineInput``),
        so that a geometry bug there cannot be on both sides of the comparison."""
        import SimpleITK as sitk

        shape = (24, 32, 28)  # K, J, I
        k, j, i = np.mgrid[: shape[0], : shape[1], : shape[2]]
        ellipsoid = ((k - 12) / 6.0) ** 2 + ((j - 16) / 9.0) ** 2 + ((i - 14) / 7.0) ** 2 <= 1
        array = (ellipsoid * 800 + np.random.default_rng(0).normal(100, 20, shape)).astype(np.int16)
        angle = np.radians(20.0)
        direction = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
        spacing, origin = np.array([1.0, 1.2, 1.5]), np.array([-10.0, 20.0, 30.0])  # LPS
        image = sitk.GetImageFromArray(array.astype(np.float32))  # (K, J, I) array -> (I, J, K) image
        image.SetSpacing(spacing.tolist())
        image.SetOrigin(origin.tolist())
        image.SetDirection(direction.ravel().tolist())
        ijkToRAS = np.eye(4)
        lpsToRAS = np.diag([-1.0, -1.0, 1.0])
        ijkToRAS[:3, :3] = lpsToRAS @ direction @ np.diag(spacing)
        ijkToRAS[:3, 3] = lpsToRAS @ origin
        return slicer.util.addVolumeFromArray(array, ijkToRAS=ijkToRAS, name="M3DNCATestVolume"), image

    def _engine(self, image):
        from nca_core.inference.pipeline import segment_image
        from nca_core.inference.settings import SegmentSettings
        from nca_core.modelfile import registry

        settings = SegmentSettings(model=DEFAULT_MODEL, runs=2, device="cpu", side="left", locate="none")
        return segment_image(image, registry.load(DEFAULT_MODEL), settings)

    def _checkMatches(self, volume, result, engine):
        labels = engine.ensemble.labels.transpose(2, 1, 0)
        self.assertTrue(labels.any(), "the engine segmented nothing: the comparison would be empty")
        segmentation = result.segmentationNode.GetSegmentation()
        self.assertEqual(segmentation.GetNumberOfSegments(), len(engine.labels))
        for value, name in engine.labels.items():
            segmentId = segmentation.GetSegmentIdBySegmentName(display.segment_name(name))
            exported = slicer.util.arrayFromSegmentBinaryLabelmap(result.segmentationNode, segmentId, volume)
            self.assertTrue(np.array_equal(exported > 0, labels == value), name)
        variance = slicer.util.arrayFromVolume(result.varianceNode)
        self.assertTrue(np.allclose(variance, engine.ensemble.variance_map.transpose(2, 1, 0), atol=1e-6))
        self.assertAlmostEqual(result.nqm, engine.nqm, places=5)
        self.assertEqual(result.light, engine.quality.light)

    def test_process_matches_the_engine(self):
        self.delayDisplay("Segmenting a synthetic volume")
        volume, image = self._volume()
        steps = []
        result = M3DNCASegmentLogic().process(volume, model=DEFAULT_MODEL, runs=2, device="CPU", side="left",
                                               region="volume", progress=lambda *step: steps.append(step))
        self.assertEqual(steps[-1], ("segmentation", 2, 2))
        self._checkMatches(volume, result, self._engine(image))
        self.delayDisplay("Test passed: " + result.summary())

    def _job(self, volume, runs):
        logic = M3DNCASegmentLogic()
        image, _box = logic.engineInput(volume, "volume")
        job = BackgroundJob(image, logic.runOptions(DEFAULT_MODEL, runs, 0, "CPU", side="left", region="volume"),
                            logic.engineDir, python=logic.pythonExecutable())
        job.start()
        return job

    def test_background_job_matches_the_engine(self):
        volume, image = self._volume()
        job = self._job(volume, 2)
        try:
            deadline = time.time() + 300
            while job.poll().state not in (FINISHED, FAILED) and time.time() < deadline:
                slicer.app.processEvents()
                time.sleep(0.1)
            status = job.poll()
            self.assertEqual(status.state, FINISHED, status.message)
            result = M3DNCASegmentLogic().createOutputs(volume, job.result(), 0.0)
            self._checkMatches(volume, result, self._engine(image))
        finally:
            job.cleanup()

    def test_background_job_cancel_leaves_scene(self):
        volume, _image = self._volume()
        before = slicer.mrmlScene.GetNumberOfNodes()
        job = self._job(volume, 50)
        job.cancel()
        self.assertEqual(job.poll().state, CANCELLED)
        job.cleanup()
        self.assertFalse(os.path.exists(job.workdir))
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), before)
