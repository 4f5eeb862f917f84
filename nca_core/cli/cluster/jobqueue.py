"""A job-queue cluster (dask-jobqueue) from a small YAML file: ``--cluster slurm.yaml``.

The file's keys are the cluster class's own arguments (``cores``, ``processes``, ``memory``,
``walltime``, ``queue``, ``account``, ``job_extra_directives``, ``worker_extra_args`` ...), plus:

- ``system``: slurm (default), pbs, sge, lsf, htcondor, oar, moab;
- ``jobs``: how many jobs to start (default 1), or ``adapt: {minimum_jobs: 0, maximum_jobs: 50}``
  to let Dask start and stop jobs as the queue of cases needs.

Example (docs/scale.md)::

    system: slurm
    queue: cpu
    account: my-lab
    cores: 32            # per job
    processes: 16        # Dask workers per job: 16 workers of 2 threads
    memory: 64GB         # per job: 4 GB per worker
    walltime: "02:00:00"
    jobs: 10
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional

from ...errors import NCAError

SYSTEMS = {"slurm": "SLURMCluster", "pbs": "PBSCluster", "sge": "SGECluster", "lsf": "LSFCluster",
           "htcondor": "HTCondorCluster", "oar": "OARCluster", "moab": "MoabCluster"}


@dataclass
class JobQueueConfig:
    """A parsed config: the cluster class, its arguments, and how many jobs."""

    system: str
    arguments: Dict[str, Any] = field(default_factory=dict)
    jobs: int = 1
    adapt: Optional[Dict[str, int]] = None

    @classmethod
    def read(cls, path: Path) -> "JobQueueConfig":
        """Raises NCAError naming the file and the problem."""
        import yaml

        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
            raise NCAError(f"{path}: cannot read the job-queue config ({' '.join(str(error).split())})") from None
        if not isinstance(data, dict):
            raise NCAError(f"{path}: a job-queue config is a YAML mapping (cores: 32, memory: 64GB, ...)")
        arguments = dict(data)
        system = str(arguments.pop("system", "slurm")).lower()
        if system not in SYSTEMS:
            raise NCAError(f"{path}: system {system!r} is not one of {', '.join(SYSTEMS)}")
        jobs, adapt = arguments.pop("jobs", 1), arguments.pop("adapt", None)
        if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 1:
            raise NCAError(f"{path}: jobs must be a whole number of at least 1, not {jobs!r}")
        if adapt is not None and not (isinstance(adapt, dict) and set(adapt) <= {"minimum_jobs", "maximum_jobs"}):
            raise NCAError(f"{path}: adapt takes minimum_jobs and maximum_jobs, e.g. adapt: {{maximum_jobs: 50}}")
        return cls(system, arguments, jobs, adapt)

    def start(self, path: Path):
        """The cluster, its jobs submitted (or adaptive); raises NCAError."""
        try:
            import dask_jobqueue
        except ImportError:
            raise NCAError("a job-queue cluster needs dask-jobqueue: pip install 'm3dnca[cluster]'") from None
        cluster_class = getattr(dask_jobqueue, SYSTEMS[self.system])
        try:
            cluster = cluster_class(**self.arguments)
        except (TypeError, ValueError) as error:
            raise NCAError(f"{path}: {SYSTEMS[self.system]}: {error}") from None
        try:
            if self.adapt is not None:
                cluster.adapt(**self.adapt)
            else:
                cluster.scale(jobs=self.jobs)
        except Exception as error:  # noqa: BLE001 - sbatch missing, refused, ...: one line
            cluster.close()
            raise NCAError(f"{path}: cannot submit the worker jobs ({' '.join(str(error).split())})") from None
        return cluster
