"""``--cluster``: where the cases of ``m3dnca segment`` run, parsed without Dask (standard
library only) so that a wrong value is a usage error before anything loads.

- ``local``: a Dask ``LocalCluster`` on this machine, sized by ``local_size``;
  ``local:P`` P worker processes of one thread; ``local:PxT`` P processes of T threads.
- ``tcp://HOST:PORT`` (any Dask address): the scheduler of a running Dask cluster.
- ``FILE.yaml``: a job-queue cluster (SLURM, PBS, SGE, LSF, HTCondor) described by the file
  (see ``jobqueue.py``).

Each worker segments one case at a time with as many PyTorch threads as it has threads.
"""
from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Tuple

from ...inference.threads import usable_cores

LOCAL, ADDRESS, JOBQUEUE = "local", "address", "jobqueue"
ADDRESS_SCHEMES = ("tcp://", "tls://", "ucx://", "ws://", "wss://", "inproc://")
CONFIG_SUFFIXES = (".yaml", ".yml")
HEAD_WORKER_BYTES = 2 << 30  # memory a worker needs for one whole head, with margin (docs/scale.md)
_LOCAL = re.compile(r"local(?::(\d+)(?:x(\d+))?)?")


@dataclass(frozen=True)
class ClusterSpec:
    """What ``--cluster`` asked for: a local cluster (``processes`` x ``threads``, None =
    sized here), a scheduler ``address``, or a job-queue ``config`` file."""

    kind: str
    processes: Optional[int] = None
    threads: Optional[int] = None
    address: str = ""
    config: Optional[Path] = None

    def local_size(self) -> Tuple[int, int]:
        """(processes, threads) of a local cluster: as given, else processes of 2 threads, one per
        2 usable cores, as many as memory holds (1 x 2 measured ahead of 2 x 1 on a busy 2-core
        machine, docs/scale.md)."""
        if self.processes:
            return self.processes, self.threads or 1
        threads = min(2, usable_cores())
        return max(1, min(usable_cores() // threads, _physical_memory() // HEAD_WORKER_BYTES)), threads


def _physical_memory() -> int:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # Windows
        return HEAD_WORKER_BYTES * (os.cpu_count() or 1)


def cluster_spec(text: str) -> ClusterSpec:
    """argparse ``type=`` for ``--cluster``."""
    local = _LOCAL.fullmatch(text.strip())
    if local:
        processes, threads = (int(group) if group else None for group in local.groups())
        if processes == 0 or threads == 0:
            raise argparse.ArgumentTypeError("local:PxT needs at least 1 process and 1 thread")
        return ClusterSpec(LOCAL, processes, threads)
    if text.startswith(ADDRESS_SCHEMES):
        return ClusterSpec(ADDRESS, address=text)
    if text.lower().endswith(CONFIG_SUFFIXES):
        path = Path(text).expanduser()
        if not path.is_file():
            raise argparse.ArgumentTypeError(f"{text}: no such job-queue config file")
        return ClusterSpec(JOBQUEUE, config=path)
    raise argparse.ArgumentTypeError(
        f"{text!r} is not local, local:PxT (e.g. local:2x1), a scheduler address (tcp://host:8786) "
        "or a job-queue config (.yaml)")


def add_cluster_options(parser: argparse.ArgumentParser) -> None:
    """``--cluster`` and ``--worker-memory`` for ``m3dnca segment``."""
    parser.add_argument("--cluster", type=cluster_spec, default=None, metavar="WHERE",
                        help="run the cases on Dask workers (needs m3dnca[cluster]): local, local:PxT "
                             "(P processes of T threads), a scheduler address tcp://host:8786, or a "
                             "job-queue config FILE.yaml (SLURM ...); see docs/scale.md")
    parser.add_argument("--worker-memory", default="auto", metavar="SIZE",
                        help="a local cluster's memory per worker, e.g. 3GB (default: the machine's "
                             "memory shared by the workers); a worker above it is restarted and its "
                             "case rerun")
