"""Child process of M3DNCASegment: ``PythonSlicer worker.py JOBDIR``.

Reads ``job.json`` and ``input.nrrd`` (the volume with its geometry) from JOBDIR, runs
``nca_core.inference.pipeline.segment_image`` and writes ``progress.json`` as the engine's steps advance,
then ``result.npz`` and, last, ``result.json``. A user-facing problem goes to ``error.json``
with the exit code of ``nca_core.errors.exit_code``. Stops, and removes JOBDIR, when Slicer
is gone (its process id no longer the parent). Kept free of package-relative imports so it
runs as a plain script; importing ``M3DNCASegmentLib`` puts the engine on sys.path.
"""
import json
import os
import shutil
import sys
import traceback

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the module folder
import M3DNCASegmentLib  # noqa: E402,F401  (the engine, found once, first on sys.path)
from nca_core.errors import EXIT_CANCELLED, EXIT_FAILED, EXIT_MISSING_PACKAGE, EXIT_OK, EXIT_USAGE  # noqa: E402


def _write_json(path, data):
    temporary = path + ".tmp"
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(data, handle)
    os.replace(temporary, path)


def parent_alive(pid) -> bool:
    """Whether the process that started the worker still runs."""
    if not pid:
        return True
    if os.name == "nt":
        import ctypes

        handle = ctypes.windll.kernel32.OpenProcess(0x1000, False, int(pid))  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return False
        code = ctypes.c_ulong()
        ctypes.windll.kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
        ctypes.windll.kernel32.CloseHandle(handle)
        return code.value == 259  # STILL_ACTIVE
    # PythonSlicer may be a launcher between Slicer and this Python: look one level up too.
    parents = {os.getppid()}
    try:
        with open(f"/proc/{os.getppid()}/stat", encoding="ascii") as handle:
            parents.add(int(handle.read().rsplit(")", 1)[1].split()[1]))
    except (OSError, ValueError, IndexError):
        pass
    return int(pid) in parents


def main(argv):
    if len(argv) != 2:
        print("usage: worker.py JOBDIR", file=sys.stderr)
        return EXIT_USAGE
    jobdir = argv[1]
    with open(os.path.join(jobdir, "job.json"), encoding="utf-8") as handle:
        spec = json.load(handle)
    if spec.get("engine_dir"):
        sys.path.insert(0, spec["engine_dir"])
    try:
        from nca_core.inference.threads import use_threads

        use_threads()  # before torch loads: threads that sleep while Slicer or others keep cores busy
        import numpy as np
        import SimpleITK as sitk
        from nca_core.modelfile import registry
        from nca_core.inference.ensemble import Cancelled
        from nca_core.errors import exit_code, user_message
        from nca_core.inference.settings import SegmentSettings
        from nca_core.inference.pipeline import segment_image
    except ImportError as error:
        _write_json(os.path.join(jobdir, "error.json"),
                    {"message": f"a required Python package is missing: {error}"})
        return EXIT_MISSING_PACKAGE
    orphaned = []

    def progress(step, done, total):
        try:
            _write_json(os.path.join(jobdir, "progress.json"), {"step": step, "done": done, "total": total})
        except OSError:  # Windows refuses the replace while Slicer reads the file: the next one will do
            pass

    def cancelled():
        """Slicer removes the job folder on cancel; a Slicer that died leaves it: stop either way."""
        if not parent_alive(spec.get("parent_pid")):
            orphaned.append(True)
            return True
        return not os.path.exists(os.path.join(jobdir, "job.json"))

    try:
        settings = SegmentSettings.from_dict(spec)
        bundle = registry.load(settings.model)
        image = sitk.ReadImage(os.path.join(jobdir, "input.nrrd"))
        result = segment_image(image, bundle, settings, progress=progress, should_cancel=cancelled)
        outputs = os.path.join(jobdir, "result.npz")
        with open(outputs + ".tmp", "wb") as handle:
            np.savez(handle, labels=result.ensemble.labels, variance=result.ensemble.variance_map)
        os.replace(outputs + ".tmp", outputs)
        _write_json(os.path.join(jobdir, "result.json"), result.report())
    except Cancelled:
        if orphaned:
            shutil.rmtree(jobdir, ignore_errors=True)
        return EXIT_CANCELLED
    except Exception as error:  # one line to the user; an unexpected one keeps its traceback in the log
        code = exit_code(error)
        if code == EXIT_FAILED and not user_message(error):
            traceback.print_exc()
        _write_json(os.path.join(jobdir, "error.json"), {"message": user_message(error) or
                                                         f"unexpected error in the segmentation: "
                                                         f"{type(error).__name__}: {error}"})
        return code
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main(sys.argv))
