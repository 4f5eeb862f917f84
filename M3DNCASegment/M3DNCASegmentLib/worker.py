"""Child process of M3DNCASegment: ``PythonSlicer worker.py JOBDIR``.

Reads ``job.json`` and ``input.npy`` from JOBDIR, runs ``nca_core.pipeline.segment_array`` and
writes ``progress.json`` as runs finish, then ``result.npz`` and, last, ``result.json``. A
user-facing problem (``NCAError``) goes to ``error.json`` with exit code 2. Kept free of
package-relative imports so it runs as a plain script.
"""
import json
import os
import sys
import traceback


def _write_json(path, data):
    temporary = path + ".tmp"
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(data, handle)
    os.replace(temporary, path)


def main(argv):
    if len(argv) != 2:
        print("usage: worker.py JOBDIR", file=sys.stderr)
        return 64
    jobdir = argv[1]
    with open(os.path.join(jobdir, "job.json"), encoding="utf-8") as handle:
        spec = json.load(handle)
    if spec.get("engine_dir"):
        sys.path.insert(0, spec["engine_dir"])
    try:
        from nca_core.threads import use_threads

        use_threads()  # before torch loads: threads that sleep while Slicer or others keep cores busy
        import numpy as np
        from nca_core import registry
        from nca_core.ensemble import Cancelled
        from nca_core.errors import NCAError
        from nca_core.pipeline import segment_array
    except ImportError as error:
        _write_json(os.path.join(jobdir, "error.json"),
                    {"message": f"a required Python package is missing: {error}"})
        return 3

    def progress(done, total):
        try:
            _write_json(os.path.join(jobdir, "progress.json"), {"done": done, "total": total})
        except OSError:  # Windows refuses the replace while Slicer reads the file: the next one will do
            pass

    def cancelled():
        """Slicer removes the job folder on cancel: stop at the next step even if orphaned."""
        return not os.path.exists(os.path.join(jobdir, "job.json"))

    try:
        model = spec["model"]
        bundle = registry.load(model)
        name = os.path.basename(model)
        if name.endswith(".m3dnca"):
            name = name[: -len(".m3dnca")]
        array = np.load(os.path.join(jobdir, "input.npy"))
        result = segment_array(
            array, bundle, name, runs=int(spec["runs"]), seed=int(spec.get("seed", 0)),
            device=spec.get("device", "auto"), fire_rate=spec.get("fire_rate"),
            steps=spec.get("steps"), progress=progress, should_cancel=cancelled,
            spacing=spec.get("spacing"), direction=spec.get("direction"),
        )
        outputs = os.path.join(jobdir, "result.npz")
        with open(outputs + ".tmp", "wb") as handle:
            np.savez(handle, labels=result.ensemble.labels, variance=result.ensemble.variance_map)
        os.replace(outputs + ".tmp", outputs)
        report = result.report()
        report["labels"] = list(bundle.config.labels)
        _write_json(os.path.join(jobdir, "result.json"), report)
    except Cancelled:
        return 4
    except NCAError as error:
        _write_json(os.path.join(jobdir, "error.json"), {"message": str(error)})
        return 2
    except MemoryError:
        _write_json(os.path.join(jobdir, "error.json"),
                    {"message": "not enough memory for this volume; try fewer runs or the CPU"})
        return 2
    except Exception as error:  # unexpected: keep the traceback in the log, one line to the user
        traceback.print_exc()
        _write_json(os.path.join(jobdir, "error.json"),
                    {"message": f"unexpected error in the segmentation: {type(error).__name__}: {error}"})
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
