"""Batch segmentation with Slicer's Python, without a window or a dialog.

    Slicer --no-main-window --python-script /path/to/m3dnca_batch.py \
        --input CASE.nii.gz|FOLDER [--input ...] --output OUTDIR [--model hippocampus] [--runs 10]

Writes the same files as ``m3dnca segment`` (CASE_seg.nii.gz, CASE_variance.nii.gz,
CASE_report.json, ...) plus OUTDIR/summary.csv, using nca_core.batch. One failing case does not
stop the others. Exit code: 0 when every case is ok or skipped, 1 when a case failed, 2 for a
usage or setup error. Also runs under plain ``PythonSlicer`` (or any Python with the engine).
"""
import argparse
import os
import sys

EXIT_OK, EXIT_CASE_FAILED, EXIT_ERROR = 0, 1, 2


def _engine_on_path() -> None:
    """nca_core lies beside the module (installed extension) or in the checkout root."""
    here = os.path.dirname(os.path.abspath(__file__))
    for candidate in (os.path.dirname(here), os.path.dirname(os.path.dirname(here))):
        if os.path.isfile(os.path.join(candidate, "nca_core", "__init__.py")):
            if candidate not in sys.path:
                sys.path.insert(0, candidate)
            return


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="m3dnca_batch.py", description="M3D-NCA batch segmentation in Slicer")
    parser.add_argument("--input", action="append", required=True, metavar="FILE|DIR",
                        help="volume file, DICOM folder or folder of volumes (repeatable)")
    parser.add_argument("--output", required=True, metavar="OUTDIR")
    parser.add_argument("--model", default="hippocampus", help="shipped model name or .m3dnca file")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--fire-rate", type=float, default=None)
    parser.add_argument("--steps", default=None, help="steps per level, e.g. 10,10")
    parser.add_argument("--save-probability", action="store_true")
    parser.add_argument("--preview", action="store_true")
    parser.add_argument("--overwrite", action="store_true")
    return parser.parse_args(argv)


def run(argv) -> int:
    try:
        args = parse_args(argv)
    except SystemExit as stop:  # argparse: usage error (2) or --help (0)
        return EXIT_OK if stop.code in (0, None) else EXIT_ERROR
    _engine_on_path()
    try:
        from nca_core import registry
        from nca_core.batch import SegmentOptions, segment_inputs, write_summary
        from nca_core.errors import NCAError
    except ImportError as error:
        print(f"m3dnca_batch: missing Python package ({error}); open the M3DNCASegment module once "
              "to install its dependencies", file=sys.stderr)
        return EXIT_ERROR
    try:
        steps = None
        if args.steps:
            try:
                steps = [int(s) for s in args.steps.split(",") if s.strip()]
            except ValueError:
                raise NCAError(f"--steps must be whole numbers separated by commas, got {args.steps!r}") from None
        bundle = registry.load(args.model)
        name = os.path.basename(args.model)
        name = name[: -len(".m3dnca")] if name.endswith(".m3dnca") else name
        options = SegmentOptions(runs=args.runs, seed=args.seed, device=args.device, fire_rate=args.fire_rate,
                                 steps=steps, save_probability=args.save_probability, preview=args.preview,
                                 overwrite=args.overwrite)
        # nca_core prints one line per case (its default ``report``).
        outcomes = segment_inputs(args.input, args.output, bundle, name, options)
        summary = write_summary(outcomes, args.output)
    except NCAError as error:
        print(f"m3dnca_batch: error: {error}", file=sys.stderr)
        return EXIT_ERROR
    failed = sum(1 for o in outcomes if o.status == "failed")
    print(f"m3dnca_batch: {len(outcomes)} case(s), {failed} failed; summary: {summary}", flush=True)
    sys.stderr.flush()
    return EXIT_CASE_FAILED if failed else EXIT_OK


def main() -> None:
    code = EXIT_ERROR
    try:
        code = run(sys.argv[1:])
    except Exception:  # never leave Slicer hanging on an unexpected error
        import traceback

        traceback.print_exc()
        code = EXIT_ERROR
    finally:
        try:
            import slicer.util  # inside Slicer: exit the application with the code
            from slicer import app  # noqa: F401  (fails under plain PythonSlicer)
        except ImportError:
            sys.exit(code)
        else:
            slicer.util.exit(code)


if __name__ == "__main__":
    main()
