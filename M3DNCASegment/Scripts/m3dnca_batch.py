"""Batch segmentation with Slicer's Python: ``m3dnca segment`` with the same options and files.

    Slicer --no-main-window --python-script m3dnca_batch.py CASE.nii.gz|FOLDER ... -o OUTDIR [options]
    Slicer --no-main-window --python-script m3dnca_batch.py --usage   (Slicer itself takes --help)

Exit code as the command line's: 0 when every case is ok or skipped, 1 when one failed, 2 for
a usage error. Also runs under plain ``PythonSlicer`` (or any Python with the engine).
"""
import os
import sys


def run(argv) -> int:
    module_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sys.path.insert(0, module_dir)  # importing M3DNCASegmentLib puts the engine first on sys.path
    try:
        import M3DNCASegmentLib  # noqa: F401
        from nca_core.cli.main import main
        from nca_core.errors import exit_code
    except ImportError as error:
        print(f"m3dnca_batch: missing Python package ({error}); open the M3DNCASegment module once "
              "to install its dependencies", file=sys.stderr)
        return 2
    argv = ["--help" if arg == "--usage" else arg for arg in argv]
    try:
        return main(["segment", *argv])
    except SystemExit as stop:  # argparse: --help (0) or a usage error (2)
        return exit_code(stop)
    except Exception as error:  # e.g. torch missing: one line, and Slicer still exits
        print(f"m3dnca_batch: error: {type(error).__name__}: {error}", file=sys.stderr)
        return exit_code(error)


if __name__ == "__main__":
    code = run(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        import slicer.util
        from slicer import app  # noqa: F401  (absent under plain PythonSlicer)
    except ImportError:
        sys.exit(code)
    slicer.util.exit(code)
