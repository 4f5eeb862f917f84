"""Segment one volume with a model: the single entry point behind the CLI and Slicer."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence

import numpy as np

from .ensemble import EnsembleResult, ProgressCallback, run_ensemble
from .errors import NCAError
from .imaging import Volume, to_image, write_atomic
from .modelfile import ModelBundle
from .quality import Quality, assess
from .atomic import write_json
from .devices import pick_device


@dataclass
class SegmentationResult:
    """The pseudo-ensemble's outputs with the quality verdict."""

    ensemble: EnsembleResult
    quality: Quality
    model_name: str
    device: str
    seconds: float

    @property
    def nqm(self) -> float:
        return self.ensemble.nqm

    def report(self) -> Dict[str, Any]:
        nqm = self.ensemble.nqm
        return {
            "nqm": None if math.isinf(nqm) else round(nqm, 6),
            "empty_segmentation": math.isinf(nqm),
            "quality": self.quality.light,
            "predicted_dice": None if self.quality.predicted_dice is None else round(self.quality.predicted_dice, 4),
            "explanation": self.quality.explanation,
            "runs": self.ensemble.runs,
            "model": self.model_name,
            "device": self.device,
            "seconds": round(self.seconds, 3),
            "foreground_voxels": int((self.ensemble.labels > 0).sum()),
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
) -> SegmentationResult:
    """Run the pseudo-ensemble on a raw (X, Y, Z) volume and judge its quality."""
    if runs < 1:
        raise NCAError("--runs must be at least 1")
    if steps is not None and len(steps) != bundle.config.levels:
        raise NCAError(f"steps needs {bundle.config.levels} values, one per level")
    started = time.perf_counter()
    device = pick_device(device)
    ensemble = run_ensemble(
        bundle.build(), array, bundle.preprocessing, runs=runs, seed=seed, fire_rate=fire_rate,
        steps=steps, device=device, progress=progress, should_cancel=should_cancel,
    )
    return SegmentationResult(
        ensemble=ensemble,
        quality=assess(ensemble.nqm, bundle.calibration),
        model_name=model_name,
        device=device,
        seconds=time.perf_counter() - started,
    )


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
    """Write the case's files; each one atomically. Returns the paths written."""
    paths = output_paths(outdir, volume.name)
    written = {}
    ensemble = result.ensemble
    write_atomic(to_image(ensemble.labels, volume.reference), paths["segmentation"])
    written["segmentation"] = paths["segmentation"]
    write_atomic(to_image(ensemble.variance_map, volume.reference), paths["variance"])
    written["variance"] = paths["variance"]
    if save_probability:
        write_atomic(to_image(ensemble.foreground_probability, volume.reference), paths["probability"])
        written["probability"] = paths["probability"]
    if preview:
        from .preview import save_preview

        save_preview(volume, result, paths["preview"])
        written["preview"] = paths["preview"]
    report = dict(result.report(), case=volume.name, input=volume.source,
                  outputs={k: str(v) for k, v in written.items()})
    write_json(paths["report"], report)
    written["report"] = paths["report"]
    return written
