"""``m3dnca segment --cluster``: the cases of a cohort as Dask tasks, one per unfinished case.

The client plans the cohort as the serial run does (``batch.plan_cases``), skips the cases
already done (the resume rule, ``outputs.is_done``), sends the rest to the workers
(``worker.segment_on_worker``) and gathers their outcomes as they finish; the caller writes
``summary.csv`` once at the end. A worker that dies mid-case (killed, out of memory, its
job ended) loses nothing: the scheduler reruns the case on another worker, up to Dask's
``distributed.scheduler.allowed-failures`` times, after which the case is recorded as failed.
"""
from __future__ import annotations

import sys
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Callable, Dict, List, Sequence

from ..batch import CaseOutcome, SegmentOptions, describe, plan_cases, skipped_outcome
from ..outputs import is_done
from ...space.imaging import case_name
from ...modelfile.bundle import ModelBundle
from ..outputs import output_paths
from .connect import connect
from .progress import CohortProgress
from .spec import ClusterSpec
from .worker import CASE_RESOURCE, CaseJob, CaseWorker, ModelRef, segment_on_worker


def segment_on_cluster(
    inputs: Sequence[Path],
    outdir: Path,
    bundle: ModelBundle,
    options: SegmentOptions,
    spec: ClusterSpec,
    worker_memory: str = "auto",
    report: Callable[[CaseOutcome], None] = lambda outcome: print(describe(outcome)),
) -> List[CaseOutcome]:
    """Segment every input on the cluster of ``spec``; one outcome per case, in input order.

    Problems common to all cases raise NCAError (as ``batch.segment_inputs``), as does a
    cluster that cannot be reached; a case that fails is reported and the rest go on.
    """
    outdir = Path(outdir)
    paths = plan_cases(inputs, outdir, bundle, options)
    outcomes: Dict[Path, CaseOutcome] = {}
    for path in paths:
        done = output_paths(outdir, case_name(path))["report"]
        if not options.overwrite and is_done(done):
            outcomes[path] = skipped_outcome(done, path)
    todo = [path for path in paths if path not in outcomes]
    if outcomes:
        print(f"m3dnca: {len(outcomes)} of {len(paths)} cases are done already (their outputs exist; "
              "--overwrite redoes them)", file=sys.stderr)
    if todo:
        job = CaseJob(str(outdir.resolve()), ModelRef.of(options.settings.model), options)
        with connect(spec, worker_memory) as connection:
            _tell(f"{len(todo)} cases on {connection.description}", connection.dashboard)
            outcomes.update(_run(connection.client, todo, job, report))
    return [outcomes[path] for path in paths]


def _tell(line: str, dashboard) -> None:
    print(f"m3dnca: {line}", file=sys.stderr)
    if dashboard:
        print(f"m3dnca: Dask dashboard: {dashboard}", file=sys.stderr)


def _run(client, todo: List[Path], job: CaseJob, report: Callable[[CaseOutcome], None]) -> Dict[Path, CaseOutcome]:
    """Submit a task per case and gather the outcomes as they come."""
    from distributed import as_completed

    client.register_plugin(CaseWorker(), name=CaseWorker.name)
    run = uuid.uuid4().hex[:8]
    keys = {f"m3dnca-{case_name(path)}-{run}": path for path in todo}
    futures = client.map(segment_on_worker, [str(path.resolve()) for path in todo], job=job, key=list(keys),
                         resources={CASE_RESOURCE: 1}, pure=False)
    outcomes: Dict[Path, CaseOutcome] = {}
    with CohortProgress(len(todo)) as progress:
        for future in as_completed(futures):
            path = keys[future.key]
            outcome = _outcome(future, path)
            outcomes[path] = outcome
            progress.count(outcome.status == "failed")
            with progress.bar.external_write_mode(file=sys.stdout):
                report(outcome)
            future.release()
    return outcomes


def _outcome(future, path: Path) -> CaseOutcome:
    """The task's outcome; a task that never finished (its workers died, e.g. out of memory) is a
    failed case with one line."""
    from distributed import KilledWorker

    try:
        outcome = future.result()
    except KilledWorker:
        return CaseOutcome(case_name(path), str(path), "failed",
                           f"{path}: the Dask workers running this case died each time it was tried "
                           "(out of memory? see the workers' logs); not segmented")
    except Exception as error:  # noqa: BLE001 - e.g. a worker that cannot import m3dnca: one line per case
        return CaseOutcome(case_name(path), str(path), "failed",
                           f"{path}: the Dask task failed: {type(error).__name__}: {' '.join(str(error).split())}")
    return replace(outcome, input=str(path))  # as given (the worker was sent the absolute path)
