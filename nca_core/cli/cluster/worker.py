"""What runs on a Dask worker: the plugin that prepares it (threads before torch loads, one case
at a time) and the task that segments one case into the shared output folder.

Nothing large travels with a task: the input is read by the worker from the shared file
system, the model is loaded and verified once per worker (cached by path and checksum), and
the outputs are written by the worker, atomically (``outputs.write_outputs``). Torch is not
imported here at module level, so that the plugin can set the threads first.
"""
from __future__ import annotations

import glob
import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Dict

from distributed import WorkerPlugin, get_worker

from ...inference.threads import use_threads

if TYPE_CHECKING:
    from ..batch import CaseOutcome, SegmentOptions
    from ...modelfile.bundle import ModelBundle

CASE_RESOURCE = "m3dnca-case"  # every worker has one: it runs one case at a time
PLUGIN_NAME = "m3dnca-case-worker"
logger = logging.getLogger("nca_core.cluster")


@dataclass(frozen=True)
class ModelRef:
    """A model file by name, path and SHA-256 of its bytes (computed once by the client)."""

    name: str
    path: str
    sha256: str

    @classmethod
    def of(cls, model: str) -> "ModelRef":
        from ...modelfile.registry import resolve

        path = resolve(model).resolve()
        return cls(model, str(path), file_sha256(path))


@dataclass(frozen=True)
class CaseJob:
    """What every case's task needs besides its input."""

    outdir: str
    model: ModelRef
    options: "SegmentOptions"


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


class CaseWorker(WorkerPlugin):
    """Worker plugin: PyTorch's and ITK's threads = the worker's threads (torch's set before it
    loads), and the resource that lets the scheduler give the worker one case at a time."""

    name = PLUGIN_NAME

    async def setup(self, worker) -> None:
        import SimpleITK as sitk

        os.environ["MKL_NUM_THREADS"] = str(worker.state.nthreads)  # Dask's nanny sets 1; torch reads it too
        use_threads(worker.state.nthreads)
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(worker.state.nthreads)  # head localisation
        await worker.set_resources(**{CASE_RESOURCE: 1})


_bundles: Dict[ModelRef, "ModelBundle"] = {}


def worker_bundle(model: ModelRef) -> "ModelBundle":
    """The model, read and verified on the first case of this worker process. Where the
    client's path is not on this machine a shipped model is found by name; either way its
    bytes must be the client's (same SHA-256). Raises NCAError."""
    if model not in _bundles:
        from ...errors import ModelFileError
        from ...modelfile.bundle import load_model
        from ...modelfile.registry import resolve

        path = Path(model.path) if Path(model.path).is_file() else resolve(model.name)
        if file_sha256(path) != model.sha256:
            raise ModelFileError(f"{path}: not the model file the cohort was started with (checksum differs)")
        _bundles[model] = load_model(path)
    return _bundles[model]


def remove_stale_temporaries(outdir: Path, case: str) -> None:
    """Hidden temporaries of ``case``'s outputs left by a worker killed while writing them."""
    from ..outputs import output_paths

    for target in output_paths(outdir, case).values():
        for stale in glob.glob(os.path.join(glob.escape(str(outdir)), f".{glob.escape(target.name)}.*")):
            try:
                os.remove(stale)
            except FileNotFoundError:
                pass


def segment_on_worker(path: str, job: CaseJob) -> "CaseOutcome":
    """One case on a worker; a failure is returned as a failed outcome. A case whose outputs
    are complete (an earlier try of this cohort finished it before its worker died) is not redone."""
    from ..batch import CaseOutcome, outcome_from_report, segment_case

    use_threads(get_worker().state.nthreads)  # torch is loaded now: its threads set directly
    from ...errors import NCAError
    from ...space.imaging import case_name
    from ..outputs import is_done, output_paths

    source, outdir = Path(path), Path(job.outdir)
    report = output_paths(outdir, case_name(source))["report"]
    if not job.options.overwrite and is_done(report):
        return outcome_from_report(report)
    remove_stale_temporaries(outdir, case_name(source))
    try:
        bundle = worker_bundle(job.model)
    except NCAError as error:
        return CaseOutcome(case_name(source), path, "failed", str(error))
    return segment_case(source, outdir, bundle, job.options, notify=logger.warning)
