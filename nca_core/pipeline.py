"""Segment one volume with a model: the single entry point behind the CLI and Slicer."""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence

import numpy as np

from .atomic import atomic_group
from .config import MAX_STEPS, NCAConfig
from .devices import pick_device
from .ensemble import EnsembleResult, ProgressCallback, label_map, run_ensemble
from .errors import InputImageError, NCAError
from .grid import GridChange, ModelGrid, spacing_text
from .imaging import Volume, check_not_constant, intensity_array, output_reason, to_image, volume_suffix, write_image
from .limits import check_fits, check_memory, inference_bytes, size_text
from .modelfile import ModelBundle
from .postprocessing import Postprocessing
from .quality import Quality, assess_segmentation


@dataclass
class SegmentationResult:
    """The pseudo-ensemble's outputs with the quality verdict."""

    ensemble: EnsembleResult
    quality: Quality
    model_name: str
    device: str
    seconds: float
    largest_component_only: bool = False  # the model's postprocessing removed other components
    grid: Optional[GridChange] = None  # how the input was brought to the model's grid (None: unknown geometry)

    @property
    def nqm(self) -> float:
        return self.ensemble.nqm

    def report(self) -> Dict[str, Any]:
        nqm = self.ensemble.nqm
        return {
            "nqm": None if math.isinf(nqm) else round(nqm, 6),
            "empty_segmentation": not self.ensemble.labels.any(),
            "quality": self.quality.light,
            "predicted_dice": None if self.quality.predicted_dice is None else round(self.quality.predicted_dice, 4),
            "explanation": self.quality.explanation,
            "runs": self.ensemble.runs,
            "model": self.model_name,
            "device": self.device,
            "seconds": round(self.seconds, 3),
            "foreground_voxels": int((self.ensemble.labels > 0).sum()),
            "largest_component_only": self.largest_component_only,
            "grid": None if self.grid is None else self.grid.to_dict(),
        }


def segment_array(
    array: np.ndarray,
    bundle: ModelBundle,
    model_name: str,
    runs: int = 10,
    seed: int = 0,
    device: str = "auto",
    fire_rate: Optional[float] = None,
    steps: Optional[Sequence[int]] = None,
    progress: Optional[ProgressCallback] = None,
    should_cancel: Optional[Callable[[], bool]] = None,
    spacing: Optional[Sequence[float]] = None,
    direction: Optional[Sequence[float]] = None,
) -> SegmentationResult:
    """Run the pseudo-ensemble on a raw (X, Y, Z) volume and judge its quality.

    ``spacing`` (mm) and ``direction`` (9 cosines, ITK/LPS) are the volume's geometry: with
    them it is turned and resampled to the model's training grid and the outputs mapped back
    (NQM is of the model's grid, where it was calibrated). Without them the volume is taken
    to be on the model's grid. Raises NCAError subclasses (without a file name) for inputs
    the model cannot take.
    """
    check_options(bundle, runs, steps, fire_rate)
    array = intensity_array(array, "")
    check_not_constant(array, "")
    grid = ModelGrid(array.shape, spacing, direction, bundle.preprocessing)
    shape = grid.model_shape
    try:
        check_fits(shape, bundle.config, bundle.preprocessing)
    except InputImageError as error:
        if not grid.resampled:
            raise
        raise InputImageError(f"{error} (after resampling to the model's {spacing_text(grid.change.model_spacing)} "
                              "grid)") from None
    started = time.perf_counter()
    device = pick_device(device)
    check_memory(shape, bundle.config, bundle.preprocessing, device)
    try:
        ensemble = run_ensemble(
            bundle.build(), grid.to_model(array), bundle.preprocessing, runs=runs, seed=seed, fire_rate=fire_rate,
            steps=steps, device=device, progress=progress, should_cancel=should_cancel,
            postprocessing=bundle.postprocessing,
        )
    except (MemoryError, RuntimeError) as error:
        if not _out_of_memory(error):
            raise
        need = size_text(inference_bytes(shape, bundle.config, bundle.preprocessing))
        raise NCAError(f"ran out of memory (estimated need {need}); crop or downsample the volume") from None
    ensemble = on_input_grid(ensemble, grid, bundle.postprocessing)
    return SegmentationResult(
        ensemble=ensemble,
        quality=judge(ensemble, bundle, runs, fire_rate),
        model_name=model_name,
        device=device,
        seconds=time.perf_counter() - started,
        largest_component_only=bundle.postprocessing.largest_component,
        grid=grid.change,
    )


def on_input_grid(ensemble: EnsembleResult, grid: ModelGrid, postprocessing: Postprocessing) -> EnsembleResult:
    """The ensemble's outputs mapped from the model's grid back to the input's (labels cleaned
    with ``postprocessing`` where they are recomputed); NQM unchanged."""
    if not grid.changes_grid:
        return ensemble
    probability = grid.channels_to_input(ensemble.probability)
    # Turned axes move the labels exactly; resampled ones are thresholded anew, as on the model grid.
    labels = postprocessing.apply(label_map(probability)) if grid.resampled else grid.to_input(ensemble.labels)
    return replace(ensemble, probability=probability, std=grid.channels_to_input(ensemble.std), labels=labels)


def judge(ensemble: EnsembleResult, bundle: ModelBundle, runs: int, fire_rate: Optional[float] = None) -> Quality:
    """The traffic light of one pseudo-ensemble run with these options."""
    return assess_segmentation(ensemble.nqm, int(np.count_nonzero(ensemble.labels)),
                               runs_can_disagree(bundle.config, runs, fire_rate), bundle.calibration)


def runs_can_disagree(config: NCAConfig, runs: int, fire_rate: Optional[float]) -> bool:
    """Whether the pseudo-ensemble is stochastic at all: 2+ runs whose cells may skip a step."""
    return runs >= 2 and (config.fire_rate if fire_rate is None else fire_rate) > 0


def check_options(bundle: ModelBundle, runs: int, steps: Optional[Sequence[int]],
                  fire_rate: Optional[float] = None) -> None:
    """Refuse option values the model cannot run with (the API's callers skip argparse)."""
    if runs < 1:
        raise NCAError("--runs must be at least 1")
    if steps is not None and len(steps) != bundle.config.levels:
        raise NCAError(f"--steps needs {bundle.config.levels} values, one per level")
    if steps is not None and any(not 0 <= step <= MAX_STEPS for step in steps):
        raise NCAError(f"--steps must be between 0 and {MAX_STEPS} per level")
    if fire_rate is not None and not 0.0 <= fire_rate < 1.0:
        raise NCAError("--fire-rate must be in [0, 1)")


def _out_of_memory(error: BaseException) -> bool:
    text = str(error)
    return isinstance(error, MemoryError) or "out of memory" in text or "can't allocate memory" in text


def output_paths(outdir: Path, case: str) -> Dict[str, Path]:
    names = {
        "segmentation": "seg.nii.gz", "variance": "variance.nii.gz", "probability": "prob.nii.gz",
        "preview": "preview.png", "report": "report.json",
    }
    return {key: Path(outdir) / f"{case}_{suffix}" for key, suffix in names.items()}


def write_outputs(
    volume: Volume,
    result: SegmentationResult,
    outdir: Path,
    save_probability: bool = False,
    preview: bool = False,
) -> Dict[str, Path]:
    """Write the case's files: all to temporary names first, renamed only when every
    one was written (the report last), so a failure leaves none of them behind."""
    paths = output_paths(outdir, volume.name)
    ensemble = result.ensemble
    images = {"segmentation": ensemble.labels, "variance": ensemble.variance_map}
    if save_probability:
        images["probability"] = ensemble.foreground_probability
    written = {key: paths[key] for key in list(images) + (["preview"] if preview else []) + ["report"]}
    target = paths["report"]
    try:
        with atomic_group() as stage:
            for key, array in images.items():
                target = paths[key]
                write_image(to_image(array, volume.reference), stage(target, volume_suffix(target)))
            if preview:
                from .preview import save_preview

                target = paths["preview"]
                save_preview(volume, result, Path(stage(target, ".png")))
            target = paths["report"]
            report = dict(result.report(), case=volume.name, input=volume.source,
                          outputs={k: str(v) for k, v in written.items() if k != "report"})
            Path(stage(target)).write_text(json.dumps(report, indent=2), encoding="utf-8")
    except (RuntimeError, OSError) as error:
        named = getattr(error, "filename", None)  # renaming into place names the file that failed
        target = Path(named) if named and Path(named) in written.values() else target
        raise NCAError(f"{target}: cannot write output ({output_reason(error)})") from None
    return written
