"""Connect to the Dask cluster that ``--cluster`` names: start a local one, join a running
scheduler, or submit job-queue workers; closed again (what this command started) on exit."""
from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
from dataclasses import dataclass
from typing import Any, Dict, Iterator, Optional

from ...errors import NCAError
from .jobqueue import JobQueueConfig
from .spec import ADDRESS, LOCAL, ClusterSpec

CONNECT_TIMEOUT = "30s"


@dataclass
class Connection:
    """A client and what the user is told about it."""

    client: Any  # distributed.Client
    description: str
    dashboard: Optional[str]  # the dashboard's link; None when the scheduler serves none


def require_distributed() -> None:
    if importlib.util.find_spec("distributed") is None:
        raise NCAError("--cluster needs Dask distributed: pip install 'm3dnca[cluster]' "
                       "(or bash scripts/setup.sh cluster)")


@contextlib.contextmanager
def connect(spec: ClusterSpec, worker_memory: str = "auto") -> Iterator[Connection]:
    """Yield a Connection to the cluster of ``spec``; raises NCAError when there is none."""
    require_distributed()
    from distributed import Client

    with contextlib.ExitStack() as stack:
        stack.callback(_restore, dict(os.environ))  # Dask's nanny sets OMP/MKL_NUM_THREADS=1 here as it spawns
        if spec.kind == ADDRESS:
            try:
                client = Client(spec.address, timeout=CONNECT_TIMEOUT)
            except (OSError, TimeoutError, ValueError) as error:
                raise NCAError(f"--cluster {spec.address}: cannot reach the scheduler ({error})") from None
            description = f"the Dask scheduler at {spec.address}"
        else:
            cluster, description = (_local(spec, worker_memory) if spec.kind == LOCAL
                                    else (JobQueueConfig.read(spec.config).start(spec.config),
                                          f"the job-queue cluster of {spec.config}"))
            stack.callback(cluster.close)
            client = Client(cluster)
        stack.callback(client.close)
        yield Connection(client, description, _dashboard(client))


def _restore(environment: Dict[str, str]) -> None:
    """This process's environment as it was (callers of the API and later torch imports see theirs)."""
    os.environ.clear()
    os.environ.update(environment)


def _local(spec: ClusterSpec, worker_memory: str):
    """A LocalCluster of worker processes, each of ``threads`` threads and ``worker_memory``."""
    from dask.utils import format_bytes, parse_bytes
    from distributed import LocalCluster
    from distributed.system import MEMORY_LIMIT

    processes, threads = spec.local_size()
    try:
        memory = MEMORY_LIMIT // processes if worker_memory == "auto" else parse_bytes(worker_memory)
    except ValueError:
        raise NCAError(f"--worker-memory {worker_memory!r}: not a size (e.g. 3GB, 1500MB)") from None
    dashboard = ":8787" if importlib.util.find_spec("bokeh") else ":0"  # without bokeh: only its HTTP server
    cluster = LocalCluster(n_workers=processes, threads_per_worker=threads, processes=True, memory_limit=memory,
                           dashboard_address=dashboard, silence_logs=logging.ERROR)
    thread_text = "thread" if threads == 1 else "threads"
    return cluster, (f"a local Dask cluster of {processes} x {threads} {thread_text} (processes x threads), "
                     f"{format_bytes(memory)} per worker")


def _dashboard(client) -> Optional[str]:
    """The dashboard link when the scheduler serves one (its HTTP server runs without bokeh,
    the dashboard's pages need it)."""
    try:
        served = "dashboard" in client.scheduler_info().get("services", {})
        return client.dashboard_link if served and client.run_on_scheduler(_has_bokeh) else None
    except Exception:  # noqa: BLE001 - no link, no error
        return None


def _has_bokeh() -> bool:
    return importlib.util.find_spec("bokeh") is not None
