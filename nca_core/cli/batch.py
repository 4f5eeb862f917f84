"""Segment many inputs into one output folder; one failing case does not stop the rest."""
from __future__ import annotations

import csv
import io
import json
import os
import sys
import tempfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import torch

from ..atomic import write_text
from ..inference.devices import pick_device
from ..inference.fused import choose_engine
from ..errors import NCAError
from ..space.imaging import case_name, is_dicom_folder, list_inputs
from ..inference.limits import long_run_notice, memory_limit
from ..modelfile.bundle import ModelBundle
from ..inference.settings import SegmentSettings
from .outputs import is_done, output_paths, write_outputs
from ..inference.pipeline import segment_image, total_runs
from ..inference.route import check_locate_for_model
from ..space.locate import StepProgress
from .readahead import ReadAhead, ReadCase, read_case
from ..inference.volumes import VolumeSummary, csv_columns, volume_text

SUMMARY = "summary.csv"
REPORT_SUFFIX = output_paths(Path(), "")["report"].name  # CASE_report.json


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
    note: str = ""  # what the reader must know about a result (thick slices)
    volumes: Optional[VolumeSummary] = None
    caveats: str = ""  # reasons beyond NQM to doubt the outline ("; " between two)


@dataclass
class SegmentOptions:
    """A batch's options: the segmentation's (the one settings type) and what is written."""

    settings: SegmentSettings = field(default_factory=SegmentSettings)
    save_probability: bool = False
    preview: bool = False
    overwrite: bool = False
    channel: Optional[int] = None  # of a 4D or vector image


def describe(outcome: CaseOutcome) -> str:
    """One line per case, more for its caveats and its note; a failed case's line is its error
    message (it names the file)."""
    if outcome.status == "ok":
        nqm = "empty segmentation" if outcome.nqm is None else f"NQM {outcome.nqm:.4f}"
        volumes = "; ".join(volume_text(side) for side in outcome.volumes.sides) if outcome.volumes else ""
        lines = [f"{outcome.case}: {nqm}, quality {outcome.quality} ({outcome.seconds:.1f} s)" + (
            f"; {volumes}" if volumes else "")]
        lines += [f"{outcome.case}: caveat: {outcome.caveats}"] if outcome.caveats else []
        lines += [f"{outcome.case}: note: {outcome.note}"] if outcome.note else []
        return "\n".join(lines)
    if outcome.status == "failed":
        return f"error: {outcome.message}"
    return f"{outcome.case}: skipped: {outcome.message}"


def is_batch(inputs: Sequence[Path]) -> bool:
    """Several inputs, or a folder of volumes: such runs get a ``summary.csv``."""
    paths = [Path(p) for p in inputs]
    return len(paths) > 1 or any(p.is_dir() and not is_dicom_folder(p) for p in paths)


def check_outputs_are_not_inputs(inputs: Sequence[Path], given: Sequence[Path], outdir: Path) -> None:
    """Refuse an output file that is an input, or an output folder that is an input folder."""
    resolved = {p.resolve() for p in inputs}
    for folder in given:
        if folder.is_dir() and folder.resolve() == outdir.resolve():
            raise NCAError(f"{outdir}: output folder is an input folder; choose another output folder")
    for path in inputs:
        for output in output_paths(outdir, case_name(path)).values():
            if output.resolve() in resolved:
                raise NCAError(f"{output}: output would overwrite an input; choose another output folder")


def unique_cases(inputs: Sequence[Path]) -> List[Path]:
    """The inputs, each file once; refuses two files whose outputs would share names
    (``a/x.nii.gz`` and ``b/x.nrrd``)."""
    first: Dict[str, Path] = {}
    for path in inputs:
        other = first.setdefault(case_name(path), path)
        if other is not path and other.resolve() != path.resolve():
            raise NCAError(f"{other} and {path}: both would write the outputs of case '{case_name(path)}'; "
                           "segment them into separate output folders")
    return list(first.values())


def prepare_output_folder(outdir: Path) -> None:
    """Create ``outdir`` and prove that files can be created in it."""
    try:
        outdir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=outdir):
            pass
    except OSError as error:
        raise NCAError(f"{outdir}: {_output_folder_problem(outdir, error)}") from None


def _output_folder_problem(outdir: Path, error: OSError) -> str:
    """What stops ``outdir`` from being used, naming the part of the path at fault."""
    if outdir.is_dir():
        return f"output folder is not writable ({error.strerror})"
    if os.path.lexists(outdir):
        return "output path exists and is not a folder"
    missing = outdir  # the outermost folder of the path that does not exist yet
    while missing.parent != missing and not os.path.lexists(missing.parent):
        missing = missing.parent
    if not missing.parent.is_dir():
        return f"output folder cannot be created: {missing.parent} is not a folder"
    if missing != outdir:
        return (f"output folder cannot be created: its parent folder {missing} does not exist and cannot be "
                f"created ({error.strerror})")
    return f"output folder cannot be created in {outdir.parent} ({error.strerror})"


def segment_inputs(
    inputs: Sequence[Path],
    outdir: Path,
    bundle: ModelBundle,
    options: SegmentOptions,
    progress_for: Optional[Callable[[str], Callable[[str, int, int], None]]] = None,
    report: Callable[[CaseOutcome], None] = lambda outcome: print(describe(outcome)),
    notify: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
    ahead: Optional[ReadAhead] = None,
) -> List[CaseOutcome]:
    """Segment every input; returns one outcome per case (see ``write_summary``).

    Problems common to all cases (options, output folder) raise NCAError; a case that
    fails is reported and skipped, and leaves no output files. ``notify`` gets the line
    announcing a long run. Each case is read before the one before it is segmented, and a
    head registered on a background thread meanwhile (``readahead``); ``ahead``: a reader
    that may have started the first case already.
    """
    with ahead or read_ahead(options, bundle) as reader:
        paths = plan_cases(inputs, outdir, bundle, options)
        settings = options.settings  # a fused engine that cannot run fails once; its kernels load meanwhile
        choose_engine(settings.engine, pick_device(settings.device), bundle.config)
        reader.follow([path for path in paths if not is_skipped(path, Path(outdir), options)])
        outcomes = []
        for path in paths:
            outcome = segment_case(path, Path(outdir), bundle, options, progress_for, notify, reader.take)
            report(outcome)
            outcomes.append(outcome)
    return outcomes


def read_ahead(options: SegmentOptions, bundle: ModelBundle) -> ReadAhead:
    """A reader of the cases that ``options`` segment with a model of ``bundle``'s preprocessing."""
    return ReadAhead(options.channel, options.settings.locate, bundle.preprocessing)


def is_skipped(path: Path, outdir: Path, options: SegmentOptions) -> bool:
    """Whether ``segment_case`` skips ``path``: its outputs are complete and not to be overwritten."""
    return not options.overwrite and is_done(output_paths(outdir, case_name(path))["report"])


def plan_cases(inputs: Sequence[Path], outdir: Path, bundle: ModelBundle, options: SegmentOptions) -> List[Path]:
    """The cases of ``inputs``, each once, after the checks common to all of them (options,
    device, output folder); raises NCAError."""
    settings = options.settings.check(bundle.config.levels)  # the whole batch is refused at once, not each case
    check_locate_for_model(settings.locate, bundle.preprocessing)
    memory_limit(pick_device(settings.device))  # a bad --device or memory limit fails once, not per case
    given = [Path(p) for p in inputs]
    paths = unique_cases(list_inputs(given))
    outdir = Path(outdir)
    check_outputs_are_not_inputs(paths, given, outdir)
    prepare_output_folder(outdir)
    return paths


def segment_case(path: Path, outdir: Path, bundle: ModelBundle, options: SegmentOptions,
                 progress_for: Optional[Callable[[str], Callable[[str, int, int], None]]] = None,
                 notify: Callable[[str], None] = lambda line: print(line, file=sys.stderr),
                 read: Optional[Callable[[Path, Optional[StepProgress]], ReadCase]] = None) -> CaseOutcome:
    """One case: skipped when done (unless ``options.overwrite``), else segmented and written;
    a failure is returned as a failed outcome, never raised. ``read``: how the case is read
    (a ``ReadAhead``'s ``take``); by default here and now."""
    name = case_name(path)
    report_path = output_paths(outdir, name)["report"]
    if is_skipped(path, outdir, options):
        return skipped_outcome(report_path, path)
    settings = options.settings
    progress = progress_for(name) if progress_for else None
    try:
        case = read(path, progress) if read else read_case(path, options.channel, settings.locate,
                                                           bundle.preprocessing, progress)
        volume = case.volume
        notice = case.registration is None and pick_device(settings.device) == "cpu" \
            and long_run_notice(volume.array.shape, volume.spacing, bundle.config, bundle.preprocessing,
                                total_runs(bundle, settings.side, settings.runs), settings.steps,
                                torch.get_num_threads())
        if notice:
            notify(f"m3dnca: {name}: {notice}")
        result = segment_image(volume.reference, bundle, settings, progress=progress, registration=case.registration)
        write_outputs(volume, result, outdir, options.save_probability, options.preview)
    except NCAError as error:
        return CaseOutcome(name, str(path), "failed", _naming(str(error), path, outdir))
    except Exception as error:  # noqa: BLE001 - one broken case must not stop a batch
        message = f"unexpected {type(error).__name__}: {error} (please report this)"
        return CaseOutcome(name, str(path), "failed", _naming(message, path, outdir))
    report = result.report()
    return CaseOutcome(name, str(path), "ok", "", report["nqm"], report["quality"],
                       report["predicted_dice"], report["seconds"], report["thick_slices"] or "", result.volumes,
                       "; ".join(report["caveats"]))


def skipped_outcome(report: Path, path: Path) -> CaseOutcome:
    """A case done before: its figures from its report."""
    existing = [p.name for p in output_paths(report.parent, case_name(path)).values() if p.exists()]
    message = f"outputs exist ({', '.join(existing)}); pass --overwrite to redo"
    try:
        done = outcome_from_report(report)
    except (OSError, ValueError):
        done = CaseOutcome(case_name(path), str(path), "ok")
    return replace(done, input=str(path), status="skipped", message=message)


def outcome_from_report(report: Path) -> CaseOutcome:
    """A finished case's outcome (status ok) with the figures of its report; raises OSError
    or ValueError when the report cannot be read."""
    try:
        data = json.loads(Path(report).read_text(encoding="utf-8"))
        return CaseOutcome(str(data["case"]), str(data["input"]), "ok", "", data["nqm"], str(data["quality"]),
                           data["predicted_dice"], data["seconds"], data.get("thick_slices") or "",
                           caveats="; ".join(data.get("caveats") or []))
    except (KeyError, TypeError) as error:
        raise ValueError(f"{report}: not a case report ({error!r} missing or wrong)") from None


def _naming(message: str, path: Path, outdir: Path) -> str:
    """The message, prefixed with the input file unless it already names a file."""
    message = " ".join(message.split())
    if message.startswith((str(path), str(outdir))):
        return message
    return f"{path}: {message}"


def write_summary(outcomes: Sequence[CaseOutcome], outdir: Path) -> Path:
    """``summary.csv``: one row per case with its status and volume columns (``volumes.csv_columns``;
    a class's column where a case has one), written atomically."""
    buffer = io.StringIO()
    rows = []
    for outcome in outcomes:
        row = {key: value for key, value in asdict(outcome).items() if key != "volumes"}
        rows.append(dict(row, **csv_columns(outcome.volumes)))
    fields = list(rows[0]) if rows else [key for key in asdict(CaseOutcome("", "", "")) if key != "volumes"]
    fields += [key for row in rows for key in row if key not in fields]
    writer = csv.DictWriter(buffer, fieldnames=list(dict.fromkeys(fields)), restval="")
    writer.writeheader()
    for row in rows:
        writer.writerow(row)
    path = Path(outdir) / SUMMARY
    write_text(path, buffer.getvalue())
    return path


def rebuild_summary(outdir: Path) -> Path:
    """``summary.csv`` anew from the reports of the finished cases in ``outdir`` (status ok),
    e.g. after a run that was stopped before it wrote its summary; raises NCAError when there
    are none. The volume columns stay empty (a report's volumes are not read back yet)."""
    reports = sorted(p for p in Path(outdir).glob(f"*{REPORT_SUFFIX}") if is_done(p))
    if not reports:
        raise NCAError(f"{outdir}: no finished case (no *{REPORT_SUFFIX} listing its outputs)")
    outcomes = []
    for report in reports:
        try:
            outcomes.append(outcome_from_report(report))
        except (OSError, ValueError) as error:
            raise NCAError(str(error)) from None
    return write_summary(outcomes, outdir)
