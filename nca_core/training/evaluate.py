"""Per-case evaluation: hard Dice, NQM and the quality light."""
from __future__ import annotations

import csv
import io
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
from tqdm import tqdm

from ..atomic import write_json, write_text
from ..quality.metrics import mean_foreground_dice
from ..modelfile.bundle import ModelBundle
from ..inference.settings import SegmentSettings
from ..space.postprocessing import Postprocessing, largest_component
from ..inference.pipeline import segment_array
from .artifacts import degrade
from .data import Case


@dataclass
class CaseEvaluation:
    case: str
    artifact: str  # "none" or the artifact's name
    dice: float
    nqm: float
    dice_largest_component: float  # Dice had only the largest foreground component been kept
    quality: str
    predicted_dice: Optional[float]
    foreground_voxels: int  # of the segmentation; 0: nothing found


def evaluate_cases(
    bundle: ModelBundle,
    cases: Sequence[Case],
    settings: Optional[SegmentSettings] = None,
    artifacts: Sequence[str] = ("none",),
    show_progress: bool = True,
    postprocessing: Optional[Postprocessing] = None,
) -> List[CaseEvaluation]:
    """One row per case and artifact, each segmented as ``segment`` does with ``settings``
    (runs, seed, device, side...; default: segment's defaults); ``postprocessing`` defaults to
    the model's."""
    settings = (settings or SegmentSettings()).check(bundle.config.levels)
    if postprocessing is not None:
        bundle = replace(bundle, postprocessing=postprocessing)
    classes = bundle.config.output_channels
    rows = []
    jobs = [(case, artifact) for case in cases for artifact in artifacts]
    for index, (case, artifact) in enumerate(tqdm(jobs, desc="evaluating", disable=not show_progress)):
        image = case.image if artifact == "none" else degrade(case.image, artifact, settings.seed + index)
        segmentation = segment_array(image, bundle, settings, spacing=case.volume.spacing,
                                     direction=case.volume.reference.GetDirection())
        result, quality = segmentation.ensemble, segmentation.quality  # on the case's own voxels, as users get it
        rows.append(CaseEvaluation(
            case=case.name, artifact=artifact,
            dice=mean_foreground_dice(result.labels, case.label, classes),
            nqm=result.nqm,
            dice_largest_component=mean_foreground_dice(largest_component(result.labels), case.label, classes),
            quality=quality.light, predicted_dice=quality.predicted_dice,
            foreground_voxels=int(np.count_nonzero(result.labels)),
        ))
    return rows


def dice_key(artifact: str) -> str:
    """The summary's key for one artifact's Dice: ``dice_clean``, ``dice_with_noise``, ..."""
    return "dice_clean" if artifact == "none" else f"dice_with_{artifact}"


def summarise(rows: Sequence[CaseEvaluation], target_dice: float = 0.8) -> Dict:
    """Mean ± std Dice per artifact and the light's detection rates."""
    summary: Dict = {"cases": len(rows)}
    for artifact in sorted({r.artifact for r in rows}):
        dices = np.array([r.dice for r in rows if r.artifact == artifact])
        summary[dice_key(artifact)] = {"mean": float(dices.mean()), "std": float(dices.std()), "n": int(dices.size)}
    summary.update(detection_rates(rows, target_dice))
    return summary


def detection_rates(rows: Sequence[CaseEvaluation], target_dice: float) -> Dict:
    """Share of failures (Dice < target) the light flags, and of good cases it flags wrongly."""
    judged = [r for r in rows if r.quality != "unknown"]
    failures = [r for r in judged if r.dice < target_dice]
    good = [r for r in judged if r.dice >= target_dice]
    flagged = lambda group: sum(r.quality in ("yellow", "red") for r in group)  # noqa: E731
    return {
        "failures": len(failures),
        "failures_flagged": flagged(failures) / len(failures) if failures else None,
        "good_cases": len(good),
        "good_cases_flagged": flagged(good) / len(good) if good else None,
    }


def write_evaluation(rows: Sequence[CaseEvaluation], summary: Dict, outdir: Path) -> None:
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(asdict(rows[0]).keys()) if rows else ["case"])
    writer.writeheader()
    for row in rows:
        writer.writerow(asdict(row))
    write_text(outdir / "evaluation.csv", buffer.getvalue())
    write_json(outdir / "evaluation.json", {"summary": summary, "cases": [asdict(r) for r in rows]})
