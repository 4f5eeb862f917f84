"""Segment many inputs into one output folder; one failing case does not stop the rest."""
from __future__ import annotations

import csv
import io
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence

from .atomic import write_text
from .errors import NCAError
from .imaging import case_name, list_inputs, read_volume
from .modelfile import ModelBundle
from .pipeline import output_paths, segment_array, write_outputs

SUMMARY = "summary.csv"


@dataclass
class CaseOutcome:
    case: str
    input: str
    status: str  # ok | skipped | failed
    message: str = ""
    nqm: Optional[float] = None
    quality: str = ""
    predicted_dice: Optional[float] = None
    seconds: Optional[float] = None


@dataclass
class SegmentOptions:
    runs: int = 10
    seed: int = 0
    device: str = "auto"
    fire_rate: Optional[float] = None
    steps: Optional[Sequence[int]] = None
    save_probability: bool = False
    preview: bool = False
    overwrite: bool = False


def check_outputs_are_not_inputs(inputs: List[Path], outdir: Path) -> None:
    resolved = {p.resolve() for p in inputs}
    for path in inputs:
        for output in output_paths(outdir, case_name(path)).values():
            if output.resolve() in resolved:
                raise NCAError(f"{output}: output would overwrite an input; choose another output folder")


def segment_inputs(
    inputs: Sequence[Path],
    outdir: Path,
    bundle: ModelBundle,
    model_name: str,
    options: SegmentOptions,
    progress_for: Optional[Callable[[str], Callable[[int, int], None]]] = None,
    report: Callable[[str], None] = print,
) -> List[CaseOutcome]:
    """Segment every input; returns one outcome per case (see ``write_summary``)."""
    paths = list_inputs([Path(p) for p in inputs])
    outdir = Path(outdir)
    try:
        outdir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise NCAError(f"{outdir}: cannot create output folder ({error.strerror})") from None
    if not os.access(outdir, os.W_OK):
        raise NCAError(f"{outdir}: output folder is not writable")
    check_outputs_are_not_inputs(paths, outdir)
    outcomes = []
    for path in paths:
        outcome = _segment_one(path, outdir, bundle, model_name, options, progress_for)
        report(_describe(outcome))
        outcomes.append(outcome)
    return outcomes


def _segment_one(path, outdir, bundle, model_name, options: SegmentOptions, progress_for) -> CaseOutcome:
    name = case_name(path)
    if output_paths(outdir, name)["report"].exists() and not options.overwrite:
        return CaseOutcome(name, str(path), "skipped", "outputs exist; pass --overwrite to redo")
    try:
        volume = read_volume(path)
        result = segment_array(
            volume.array, bundle, model_name, runs=options.runs, seed=options.seed,
            device=options.device, fire_rate=options.fire_rate, steps=options.steps,
            progress=progress_for(name) if progress_for else None,
        )
        write_outputs(volume, result, outdir, options.save_probability, options.preview)
    except NCAError as error:
        return CaseOutcome(name, str(path), "failed", str(error))
    except MemoryError:
        return CaseOutcome(name, str(path), "failed", f"{path}: not enough memory for this volume")
    report = result.report()
    return CaseOutcome(name, str(path), "ok", "", report["nqm"], report["quality"],
                       report["predicted_dice"], report["seconds"])


def _describe(outcome: CaseOutcome) -> str:
    if outcome.status == "ok":
        nqm = "empty segmentation" if outcome.nqm is None else f"NQM {outcome.nqm:.4f}"
        return f"{outcome.case}: {nqm}, quality {outcome.quality} ({outcome.seconds:.1f} s)"
    return f"{outcome.case}: {outcome.status}: {outcome.message}"


def write_summary(outcomes: Sequence[CaseOutcome], outdir: Path) -> Path:
    """``summary.csv``: one row per case with its status, written atomically."""
    buffer = io.StringIO()
    fields = list(asdict(CaseOutcome("", "", "")).keys())
    writer = csv.DictWriter(buffer, fieldnames=fields)
    writer.writeheader()
    for outcome in outcomes:
        writer.writerow(asdict(outcome))
    path = Path(outdir) / SUMMARY
    write_text(path, buffer.getvalue())
    return path
