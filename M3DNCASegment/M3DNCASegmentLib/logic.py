"""The module's computation without GUI: volume node -> engine -> scene outputs.

Used by the panel (through a background job), the Python console and the tests against real
MRML (Testing/Python/test_slicer_mrml.py). Imports slicer and vtk, never qt.

.. code-block:: python

  logic = slicer.util.getModuleLogic("M3DNCASegment")
  result = logic.process(slicer.util.getNode("MRHead"), model="hippocampus", runs=10)
  print(result.light, [side["side"] for side in result.sides], result.summary())
  print(result.volume("left")["ml"], result.volume("left")["runs_interval_mm3"], result.volumes["etiv_ml"])
"""
from __future__ import annotations

import logging
import math
import shutil
import sys
import time
from typing import Callable, Optional

import numpy as np
from nca_core.modelfile.registry import DEFAULT_MODEL

from . import dependencies, display, options, outputs, volume
from . import ENGINE_DIR
from .job import JobResult


class M3DNCASegmentResult:
    """What ``process`` returns: the nodes and the report (overall light and one entry per side);
    ``searchBoxes``: a whole head's ROI node per side, where that hippocampus was looked for."""

    def __init__(self, segmentationNode, varianceNode, report: dict, totalSeconds: float, searchBoxes=()):
        self.segmentationNode = segmentationNode
        self.varianceNode = varianceNode
        self.searchBoxes = list(searchBoxes)
        self.report = dict(report)
        nqm = report.get("nqm")
        self.nqm = math.inf if nqm is None else float(nqm)  # inf: empty segmentation
        self.light = report.get("quality", "unknown")  # overall: the worst side
        self.predictedDice = report.get("predicted_dice")
        self.explanation = report.get("explanation", "")
        self.sides = list(report.get("sides") or [])  # each with its "volume" (mm3, runs' interval, light)
        self.volumes = report.get("volumes")  # total, eTIV and asymmetry index (whole heads)
        self.engineSeconds = report.get("seconds")
        self.totalSeconds = totalSeconds
        self.device = report.get("device")
        self.runs = report.get("runs")
        self.model = report.get("model")

    def summary(self) -> str:
        lines = [display.light_summary(self.light, self.nqm, self.predictedDice, self.explanation)]
        if len(self.sides) > 1:
            lines += display.side_summaries(self.sides)
        return "\n".join(lines + display.volume_lines(self.sides, self.volumes))

    def volume(self, side: str = "left") -> Optional[dict]:
        """The report's volume of ``side`` (mm3, ml, runs_interval_mm3, runs_std_mm3, light,
        trusted, fraction_of_etiv, classes), or None when that side was not segmented."""
        return next((entry.get("volume") for entry in self.sides if entry.get("side") == side), None)

    def __repr__(self) -> str:
        return (f"M3DNCASegmentResult(light={self.light!r}, nqm={self.nqm:.4f}, "
                f"sides={[side.get('side') for side in self.sides]}, totalSeconds={self.totalSeconds:.1f})")


class SegmentLogic:
    """Models, options, the engine call and the scene outputs."""

    engineDir = ENGINE_DIR

    # --- models and options ----------------------------------------------------------------

    def modelCatalog(self):
        return options.model_catalog()

    def modelInfo(self, model: str) -> options.ModelHeader:
        """The header of a shipped model name or a model file (raises NCAError if neither)."""
        return options.find_header(model)

    def runOptions(self, model: str, runs: int = 10, seed: int = 0, device: str = "auto",
                   fireRate: Optional[float] = None, steps=None, side: str = "auto",
                   region: str = "auto") -> options.SegmentSettings:
        """The engine's checked options; ``steps`` may be a list or text such as "10,10"."""
        return options.settings(model, runs, seed, device, fireRate, steps, side, region)

    @staticmethod
    def pythonExecutable() -> str:
        """PythonSlicer (Slicer's Python without the GUI) for the background process."""
        return shutil.which("PythonSlicer") or sys.executable

    # --- the engine's input -----------------------------------------------------------------

    @staticmethod
    def engineInput(inputVolume, region: str = "auto", roi=None):
        """(SimpleITK image, box): the volume, cut to the ROI's box when region is "roi"."""
        if not inputVolume:
            raise ValueError("No input volume.")
        options.region_locate(region)
        box = None
        if region == "roi":
            if roi is None:
                raise ValueError("Region 'roi' needs an ROI (a markups ROI node).")
            box = volume.roiBox(inputVolume, roi)
        return volume.imageFromVolume(inputVolume, box), box

    # --- processing ------------------------------------------------------------------------

    @staticmethod
    def setupPythonRequirements(interactive: bool = True) -> bool:
        """See ``dependencies.setupPythonRequirements``."""
        return dependencies.setupPythonRequirements(interactive)

    def process(self, inputVolume, model: str = DEFAULT_MODEL, runs: int = 10, seed: int = 0,
                device: str = "auto", fireRate: Optional[float] = None, steps=None,
                side: str = "auto", region: str = "auto", roi=None,
                interactive: bool = False, showResult: bool = True, overlayOpacity: float = display.DEFAULT_OVERLAY_OPACITY,
                progress: Optional[Callable[[str, int, int], None]] = None,
                shouldCancel: Optional[Callable[[], bool]] = None) -> M3DNCASegmentResult:
        """Segment ``inputVolume`` in this process and add the outputs to the scene.

        :param model: shipped model name or path to a .m3dnca file.
        :param side: auto, left or right (the crop's side; for a whole head the side to segment).
        :param region: auto (a whole head: both hippocampi found; a crop as it is), roi (``roi``,
          a markups ROI node, cuts the volume first) or volume (the volume as one crop).
        :param interactive: if False (default) no dialog ever opens; errors are raised.
        :param progress: called with (step, done, total) as the engine's steps advance.
        :param shouldCancel: polled after every NCA step; True stops with ``nca_core.inference.ensemble.Cancelled``
          and leaves the scene unchanged.
        """
        started = time.perf_counter()
        if not self.setupPythonRequirements(interactive=interactive):
            raise RuntimeError("Required Python packages are not installed.")
        runOptions = self.runOptions(model, runs, seed, device, fireRate, steps, side, region)
        image, box = self.engineInput(inputVolume, region, roi)
        from nca_core.modelfile import registry
        from nca_core.inference.pipeline import segment_image

        bundle = registry.load(runOptions.model)
        logging.info(f"M3D-NCA: segmenting {inputVolume.GetName()} with {runOptions.model}, {runOptions.runs} runs")
        segmentation = segment_image(image, bundle, runOptions, progress=progress, should_cancel=shouldCancel)
        result = JobResult(labels=segmentation.ensemble.labels, variance=segmentation.ensemble.variance_map,
                           report=segmentation.report())
        return self.createOutputs(inputVolume, result, time.perf_counter() - started, box=box,
                                  showResult=showResult, overlayOpacity=overlayOpacity)

    @staticmethod
    def showSearchBoxes(segmentationNode, visible: bool) -> None:
        """Show or hide the search boxes (ROI nodes) of a result."""
        if segmentationNode:
            outputs.showSearchBoxes(segmentationNode, visible)

    def createOutputs(self, inputVolume, result: JobResult, totalSeconds: float, box=None,
                      showResult: bool = True,
                      overlayOpacity: float = display.DEFAULT_OVERLAY_OPACITY) -> M3DNCASegmentResult:
        """Segmentation and variance nodes, and for a whole head one hidden ROI per side's search
        box (``searchBoxes``), from engine outputs ((X, Y, Z) arrays of the input, or of its
        ``box``); on any error the nodes made so far are removed."""
        shape = inputVolume.GetImageData().GetDimensions()
        labels = volume.pasteIntoVolume(np.asarray(result.labels), shape, box)
        variance = volume.pasteIntoVolume(np.asarray(result.variance, dtype=np.float32), shape, box)
        previous = outputs.resultsOf(inputVolume)
        created = []
        try:
            segmentationNode = outputs.createSegmentation(inputVolume, labels, result.label_names, created)
            varianceNode = outputs.createVariance(inputVolume, variance, created)
            searchBoxes = outputs.createSearchBoxes(inputVolume, result.report.get("sides") or [], created)
        except Exception:
            outputs.removeNodes(created)
            raise
        for earlier in previous:  # new contours are not drawn over old ones; the old stay in the scene
            outputs.hideOutputs(*earlier)
        outputs.markResult(inputVolume, segmentationNode, varianceNode, searchBoxes)
        if showResult:
            segmentationNode.CreateClosedSurfaceRepresentation()  # show the segments in 3D too
            outputs.showVarianceOverlay(inputVolume, varianceNode, overlayOpacity)
        segmented = M3DNCASegmentResult(segmentationNode, varianceNode, result.report, totalSeconds, searchBoxes)
        logging.info("M3D-NCA: " + segmented.summary())
        return segmented
