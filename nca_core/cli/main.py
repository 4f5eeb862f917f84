"""The ``m3dnca`` command line (also ``python -m nca_core``)."""
from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional

from .. import __version__
from .options import add_engine_option, add_locate_option, add_side_option, add_threads_option, channel_index, fire_rate_option, positive_int, steps_list
from .cluster.spec import add_cluster_options
from ..errors import NCAError, exit_code, user_message
from ..inference.settings import DEVICE_CHOICES, SegmentSettings
from ..modelfile.registry import DEFAULT_MODEL
from ..space.grid import spacing_text
from ..space.prior import MOVE_GAIN, prior_shifts, prior_sizes
from ..space.standardise import LANDMARK_PERCENTILES
from ..inference.threads import use_threads

if TYPE_CHECKING:  # torch loads with it; ``segment`` imports it when it runs
    from .batch import SegmentOptions

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def cmd_segment(args: argparse.Namespace) -> int:
    """Segment every input; exit 0 when every case succeeded (or was skipped), 1 otherwise."""
    from ..space.imaging import require_input
    from ..modelfile.registry import load, resolve

    model_path = resolve(args.model)  # a wrong model name or a missing input is refused before torch loads
    if args.cluster is not None:
        from .cluster.connect import require_distributed

        require_distributed()
    if len(args.inputs) == 1:
        require_input(args.inputs[0])
    settings = SegmentSettings.parse(model=args.model, runs=args.runs, seed=args.seed, device=args.device,
                                     fire_rate=args.fire_rate, steps=args.steps, side=args.side, locate=args.locate,
                                     engine=args.engine)
    if args.cluster is not None:
        from .cluster.run import segment_on_cluster

        outcomes = segment_on_cluster(args.inputs, args.output, load(args.model), _segment_options(args, settings),
                                      args.cluster, args.worker_memory, report=_print_outcome)
    else:
        with _first_case_read_ahead(args, model_path, settings.locate) as ahead:
            from .batch import segment_inputs
            from .progress import BatchProgress

            bundle = load(args.model)  # torch loads while the first case is registered
            with BatchProgress(args.inputs, args.runs) as progress:
                outcomes = segment_inputs(args.inputs, args.output, bundle, _segment_options(args, settings),
                                          progress_for=progress.for_case, report=progress.reporting(_print_outcome),
                                          notify=progress.write, ahead=ahead)
    from .batch import is_batch, write_summary

    failed = [o for o in outcomes if o.status == "failed"]
    if is_batch(args.inputs):
        summary = write_summary(outcomes, args.output)
        if failed:
            print(f"m3dnca: {len(failed)} of {len(outcomes)} cases failed; see {summary}", file=sys.stderr)
    return EXIT_FAILED if failed else EXIT_OK


def _segment_options(args: argparse.Namespace, settings: SegmentSettings) -> "SegmentOptions":
    """What ``segment`` writes besides the segmentation's settings."""
    from .batch import SegmentOptions

    return SegmentOptions(settings, save_probability=args.save_probability, preview=args.preview,
                          overwrite=args.overwrite, channel=args.channel)


def _first_case_read_ahead(args: argparse.Namespace, model_path: Path, locate: str):
    """A ``ReadAhead`` (a context manager) that has read the first input and registers it (a
    head) while torch and the model load; a ``nullcontext`` of None when the first input is a
    folder of volumes, is done already (and not to be overwritten), or the model's header is
    unreadable (the model's load says why)."""
    from contextlib import nullcontext

    from .outputs import is_done, output_paths
    from .readahead import ReadAhead
    from ..errors import ModelFileError
    from ..modelfile.header import read_model_header
    from ..space.imaging import case_name, is_dicom_folder, is_volume_file
    from ..space.preprocessing import Preprocessing

    first = Path(args.inputs[0])
    if not (is_volume_file(first) or is_dicom_folder(first)) or (
            not args.overwrite and is_done(output_paths(Path(args.output), case_name(first))["report"])):
        return nullcontext()
    try:
        preprocessing = Preprocessing.from_dict(read_model_header(model_path).preprocessing)
    except ModelFileError:
        return nullcontext()
    ahead = ReadAhead(args.channel, locate, preprocessing)
    ahead.start(first)
    return ahead


def cmd_summary(args: argparse.Namespace) -> int:
    from .batch import rebuild_summary

    print(rebuild_summary(args.output))
    return EXIT_OK


def _print_outcome(outcome) -> None:
    """Failed cases go to stderr as one error line each; the rest to stdout."""
    from .batch import describe

    if outcome.status == "failed":
        print(f"m3dnca: {describe(outcome)}", file=sys.stderr)
    else:
        print(describe(outcome))


def cmd_new_model(args: argparse.Namespace) -> int:
    from ..network.config import preset
    from ..network.model import M3DNCA
    from ..modelfile.bundle import ModelBundle, save_model
    from ..space.preprocessing import Preprocessing
    from ..training.settings import TrainSettings

    if args.output.exists() and not args.overwrite:
        raise NCAError(f"{args.output}: exists; pass --overwrite to replace it with an untrained model")
    model = M3DNCA(preset(args.preset))
    grid = TrainSettings.for_preset(args.preset).given_preprocessing  # the prostate preset's field of view
    provenance = {"description": f"untrained {args.preset} preset", "preset": args.preset,
                  "software": f"nca_core {__version__}"}
    save_model(ModelBundle.from_model(model, provenance=provenance, preprocessing=grid or Preprocessing()),
               args.output)
    print(f"{args.output}: untrained '{args.preset}' model, {model.parameter_count()} parameters")
    return EXIT_OK


def cmd_info(args: argparse.Namespace) -> int:
    from ..modelfile.registry import load, resolve

    path = resolve(args.model)
    bundle = load(args.model)
    info: Dict = {
        "file": str(path),
        "parameters": bundle.build().parameter_count(),
        "config": bundle.config.to_dict(),
        "preprocessing": bundle.preprocessing.to_dict(),
        "postprocessing": bundle.postprocessing.to_dict(),
        "calibration": bundle.calibration.to_dict() if bundle.calibration else None,
        "provenance": bundle.provenance,
    }
    if args.json:
        print(json.dumps(info, indent=2))
        return EXIT_OK
    print(f"{path}\n  parameters: {info['parameters']:,}")
    config = bundle.config
    print(f"  levels: {config.levels}, downscale {config.downscale}, kernels {config.kernel_sizes}, "
          f"steps {config.steps}, channels {config.channels}, hidden {config.hidden}, "
          f"fire rate {config.fire_rate}")
    print(f"  labels: {', '.join(config.labels)}")
    largest = bundle.postprocessing.largest_component
    preprocessing = bundle.preprocessing
    if preprocessing.spacing is not None:
        print(f"  input grid: {spacing_text(preprocessing.spacing)}, {preprocessing.orientation or 'any'} orientation "
              "(inputs are turned and resampled to it, results mapped back)")
    elif preprocessing.relative_to_field_of_view:
        kept = "x".join(f"{f:g}" for f in preprocessing.fov_fraction or (1, 1, 1))
        print(f"  input grid: {'x'.join(map(str, preprocessing.grid_shape))} voxels over the central {kept} of the "
              f"field of view, {preprocessing.orientation} orientation (no spacing: the whole scan is resampled "
              "to it, results mapped back)")
    else:
        print("  input grid: not recorded (inputs are used on their own voxel grid)")
    prior = preprocessing.location_prior
    if prior:
        print(f"  location prior: centre {_fractions(prior['centre'])}, spread {_fractions(prior['spread'])} "
              "of the grid (read as a second input channel)")
        if "shifts" in prior:
            moves = "; ".join(", ".join(f"{v:+g}" for v in shift) for shift in prior_shifts(prior))
            print(f"  prior shifts: centre moved by [{moves}] of the grid, each tried on every scan (a move is kept "
                  f"when its NQM is under {MOVE_GAIN:g}x the own place's; then the sizes at that place)")
        if "sizes" in prior:
            print(f"  prior sizes: spread x {', '.join(f'{f:g}' for f in prior_sizes(prior))}, each tried on every scan "
                  "(the lowest NQM wins)")
    if preprocessing.intensity_landmarks is not None:
        median = preprocessing.intensity_landmarks[LANDMARK_PERCENTILES.index(50)]
        print(f"  intensity: each scan's histogram standardised onto the training scans' (median at {median:.2f} "
              "of the 1st-99th percentile range)")
    if preprocessing.side:
        print(f"  side: trained on {preprocessing.side} crops (crops of the other side are mirrored for it)")
    print(f"  postprocessing: {'largest foreground component kept' if largest else 'none'}")
    calibration = bundle.calibration
    if calibration:
        print(f"  calibration: Dice = {calibration.slope:.3f} * NQM + {calibration.intercept:.3f} "
              f"({calibration.cases} cases), target Dice {calibration.target_dice}, "
              f"NQM threshold {calibration.nqm_threshold:.4f}, margin {calibration.margin:.3f}")
        if calibration.volume_range_ml is not None:
            low, high = calibration.volume_range_ml
            print(f"  plausible volume: {low:g}-{high:g} mL (an outline outside it is red)")
    else:
        print("  calibration: none (quality light shows 'unknown')")
    for key, value in bundle.provenance.items():
        if not isinstance(value, (dict, list)):
            print(f"  {key}: {value}")
    return EXIT_OK


def _fractions(values: List[float]) -> str:
    """Fractions of a grid's axes as text, e.g. (0.51, 0.47, 0.50)."""
    return "(" + ", ".join(f"{value:.2f}" for value in values) + ")"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="m3dnca", description="M3D-NCA segmentation with NCA quality metric.",
                                     fromfile_prefix_chars="@", epilog="@FILE stands for the arguments in FILE, "
                                     "one a line (e.g. a cohort's inputs: m3dnca segment @cases.txt -o OUT)")
    parser.convert_arg_line_to_args = _list_file_line
    parser.add_argument("--version", action="version", version=f"m3dnca {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    segment = commands.add_parser("segment", help="segment volumes (files, DICOM folders, folders of volumes)")
    segment.add_argument("inputs", nargs="+", type=Path, metavar="INPUT")
    segment.add_argument("-o", "--output", type=Path, required=True, metavar="OUTDIR")
    segment.add_argument("--model", default=DEFAULT_MODEL, help="shipped model name or model file")
    segment.add_argument("--runs", type=positive_int, default=10, help="pseudo-ensemble size (default 10)")
    segment.add_argument("--seed", type=int, default=0)
    segment.add_argument("--device", choices=DEVICE_CHOICES, default="auto")
    segment.add_argument("--fire-rate", type=fire_rate_option, default=None, help="default: the model's")
    segment.add_argument("--steps", type=steps_list, default=None, help="steps per level, e.g. 10,10")
    segment.add_argument("--save-probability", action="store_true")
    segment.add_argument("--preview", action="store_true", help="write a PNG: the most segmented slice, the light")
    segment.add_argument("--overwrite", action="store_true", help="redo cases whose outputs exist")
    segment.add_argument("--channel", type=channel_index, default=None, metavar="N",
                         help="channel (0-based) of a 4D or vector image to segment")
    add_side_option(segment)
    add_locate_option(segment)
    add_engine_option(segment)
    add_threads_option(segment)
    add_cluster_options(segment)
    segment.set_defaults(run=cmd_segment)

    summary = commands.add_parser("summary", help="write OUTDIR/summary.csv anew from the reports of its finished cases")
    summary.add_argument("output", type=Path, metavar="OUTDIR")
    summary.set_defaults(run=cmd_summary)

    new_model = commands.add_parser("new-model", help="write an untrained model file from a preset")
    new_model.add_argument("--preset", required=True)
    new_model.add_argument("-o", "--output", type=Path, required=True)
    new_model.add_argument("--overwrite", action="store_true", help="replace an existing file")
    new_model.set_defaults(run=cmd_new_model)

    info = commands.add_parser("info", help="describe a model file or shipped model")
    info.add_argument("model")
    info.add_argument("--json", action="store_true")
    info.set_defaults(run=cmd_info)

    from .bench import add_bench_command
    from .official_command import add_import_command
    from .training import add_training_commands

    add_training_commands(commands)
    add_bench_command(commands)
    add_import_command(commands)
    return parser


def _list_file_line(line: str) -> List[str]:
    """A line of an @FILE: one argument (spaces kept); blank lines are skipped."""
    return [line.rstrip("\r\n")] if line.strip() else []


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def main(argv: Optional[List[str]] = None) -> int:
    previous = signal.signal(signal.SIGTERM, _interrupt)  # a killed command cleans up like Ctrl+C
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if getattr(args, "cluster", None) is not None and args.threads is not None:
            parser.error("--threads is for a run in this process; a local cluster's threads are --cluster local:PxT")
        threads = use_threads(getattr(args, "threads", None))  # before torch loads
        if getattr(args, "threads", None) is not None:
            import SimpleITK as sitk

            sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)  # registration keeps to them too
        return args.run(args)
    except (NCAError, OSError, MemoryError) as error:
        print(f"m3dnca: error: {user_message(error)}", file=sys.stderr)
        return exit_code(error)
    except KeyboardInterrupt as error:
        print("m3dnca: interrupted", file=sys.stderr)
        return exit_code(error)
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
