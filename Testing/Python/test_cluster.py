"""``m3dnca segment --cluster`` (issue 29): the cases of a cohort on Dask workers give the
serial run's outputs; a worker killed mid-case, a bad input and a stopped run lose nothing."""
from __future__ import annotations

import argparse
import csv
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

distributed = pytest.importorskip("distributed", reason="the cluster extra (Dask distributed) is not installed")

from nca_core.cli.cluster.connect import require_distributed
from nca_core.cli.cluster.jobqueue import JobQueueConfig
from nca_core.cli.cluster.progress import CohortProgress
from nca_core.cli.cluster.spec import ADDRESS, JOBQUEUE, LOCAL, ClusterSpec, cluster_spec
from nca_core.errors import NCAError

from nca_helpers import run_cli

BASE_COLUMNS = ("case", "input", "status", "message", "nqm", "quality", "predicted_dice", "seconds", "note")
RUNS = "2"  # real crops, the shipped model, few runs: under a second a case on one thread


@pytest.fixture(scope="module")
def cohort(hippocampus_dir, tmp_path_factory) -> Path:
    """Three real hippocampus crops (copies: the inputs of these tests)."""
    folder = tmp_path_factory.mktemp("cohort")
    for source in sorted((hippocampus_dir / "imagesTr").glob("*.nii.gz"))[:3]:
        shutil.copy(source, folder / source.name)
    return folder


@pytest.fixture(scope="module", autouse=True)
def environment():
    """This process's environment back as it was: Dask's nanny sets OMP_NUM_THREADS=1,
    MKL_NUM_THREADS=1 ... in the process that spawns its workers."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="module")
def scheduler():
    """A LocalCluster of 2 single-thread worker processes, joined by address (``--cluster tcp://``)."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, memory_limit="2GB",
                                  dashboard_address=None, silence_logs=40) as cluster:
        yield cluster


@pytest.fixture
def one_thread():
    """The serial run in this process on one thread, as each worker; restored afterwards."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def rows(outdir: Path):
    with open(outdir / "summary.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def image(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def test_two_single_thread_workers_give_the_serial_outputs(cohort, tmp_path, capsys, one_thread):
    code, _, _ = run_cli(capsys, "segment", cohort, "-o", tmp_path / "serial", "--runs", RUNS, "--threads", "1")
    assert code == 0
    environment = dict(os.environ)
    code, out, err = run_cli(capsys, "segment", cohort, "-o", tmp_path / "cluster", "--runs", RUNS,
                             "--cluster", "local:2x1")
    assert code == 0, err
    assert dict(os.environ) == environment  # the command leaves this process's environment as it was
    assert err[0].startswith("m3dnca: 3 cases on a local Dask cluster of 2 x 1 thread (processes x threads), ")
    serial, cluster = rows(tmp_path / "serial"), rows(tmp_path / "cluster")
    drop = ("seconds",)
    assert [{k: v for k, v in r.items() if k not in drop} for r in cluster] == \
           [{k: v for k, v in r.items() if k not in drop} for r in serial]
    for row in serial:
        for output in ("seg", "variance"):
            ours, theirs = (image(tmp_path / run / f"{row['case']}_{output}.nii.gz") for run in ("cluster", "serial"))
            assert np.array_equal(ours, theirs), f"{row['case']} {output}: not bit-for-bit (same thread count)"
    assert sorted(line.split(":")[0] for line in out.splitlines()) == [row["case"] for row in serial]


class KillOnce(distributed.WorkerPlugin):
    """Test fault: the worker writing ``case``'s variance (its segmentation already staged)
    kills itself with SIGKILL, once per cohort (``marker`` records it)."""

    name = "test-kill-once"

    def __init__(self, case: str, marker: str):
        self.case, self.marker = case, marker

    def setup(self, worker) -> None:
        import nca_core.cli.outputs as outputs

        original = self.original = outputs.write_image

        def write_image(image, filename):
            if Path(filename).name.startswith(f".{self.case}_variance") and not os.path.exists(self.marker):
                Path(self.marker).write_text(f"killed worker {os.getpid()} writing {filename}\n")
                os.kill(os.getpid(), signal.SIGKILL)
            return original(image, filename)

        outputs.write_image = write_image

    def teardown(self, worker) -> None:
        import nca_core.cli.outputs as outputs

        outputs.write_image = self.original


def test_a_worker_killed_mid_case_loses_nothing(cohort, scheduler, tmp_path, capsys):
    case = sorted(p.name for p in cohort.iterdir())[1].split(".")[0]
    marker = tmp_path / "killed.txt"
    client = distributed.Client(scheduler)
    client.register_plugin(KillOnce(case, str(marker)))
    try:
        code, out, err = run_cli(capsys, "segment", cohort, "-o", tmp_path / "out", "--runs", RUNS,
                                 "--cluster", scheduler.scheduler_address)
    finally:
        client.unregister_worker_plugin(KillOnce.name)
        client.close()
    print(marker.read_text() if marker.exists() else "no kill", out, "\n".join(err), sep="\n")  # the log (-s)
    assert marker.exists(), "the fault was not injected"
    assert code == 0
    summary = rows(tmp_path / "out")
    assert sorted(r["case"] for r in summary) == sorted(p.name.split(".")[0] for p in cohort.iterdir())
    assert all(r["status"] == "ok" for r in summary)
    assert sorted(line.split(":")[0] for line in out.splitlines()) == sorted(r["case"] for r in summary)
    leftovers = [p.name for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]
    assert leftovers == [], "a temporary of the killed try is left"
    assert image(tmp_path / "out" / f"{case}_variance.nii.gz").shape == image(cohort / f"{case}.nii.gz").shape


def test_a_bad_input_is_recorded_and_the_rest_go_on(cohort, scheduler, tmp_path, capsys):
    folder, outdir = tmp_path / "in", tmp_path / "out"
    shutil.copytree(cohort, folder)
    (folder / "broken.nii.gz").write_bytes(b"not a volume at all")
    code, out, err = run_cli(capsys, "segment", folder, "-o", outdir, "--runs", RUNS,
                             "--cluster", scheduler.scheduler_address)
    assert code == 1
    failed = [line for line in err if "broken" in line]
    assert len(failed) == 1 and failed[0].startswith(f"m3dnca: error: {(folder / 'broken.nii.gz').resolve()}: ")
    assert err[-1] == f"m3dnca: 1 of 4 cases failed; see {outdir / 'summary.csv'}"
    written = rows(outdir)
    assert [(r["case"], r["status"]) for r in written] == [("broken", "failed")] + [
        (p.name.split(".")[0], "ok") for p in sorted(cohort.iterdir())]
    assert not list(outdir.glob("broken*"))
    (outdir / "summary.csv").unlink()  # as if the run had been stopped before writing it
    code, out, err = run_cli(capsys, "summary", outdir)
    assert code == 0 and out.strip() == str(outdir / "summary.csv")
    rebuilt = rows(outdir)  # the finished cases from their reports (volume columns: not rebuilt yet)
    assert [{k: row[k] for k in BASE_COLUMNS} for row in rebuilt] == [{k: row[k] for k in BASE_COLUMNS}
                                                                       for row in written[1:]]


def test_a_stopped_cohort_resumes_with_only_its_unfinished_cases(cohort, scheduler, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    for index, source in enumerate(sorted(cohort.iterdir()) * 2):  # 6 cases: time to stop it midway
        shutil.copy(source, folder / f"case{index}.nii.gz")
    outdir = tmp_path / "out"
    command = [sys.executable, "-m", "nca_core", "segment", str(folder), "-o", str(outdir), "--runs", RUNS,
               "--cluster", scheduler.scheduler_address]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(outdir.glob("*_report.json")) and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, stopped_err = process.communicate(timeout=60)
    assert process.returncode == 130, stopped_err
    assert "m3dnca: interrupted" in stopped_err and not (outdir / "summary.csv").exists()
    time.sleep(3)  # the cases that were running when the client stopped finish on their workers
    done = {p.name[: -len("_report.json")] for p in outdir.glob("*_report.json")}
    assert 0 < len(done) < 6, "the run was not stopped midway"
    code, out, err = run_cli(capsys, "segment", folder, "-o", outdir, "--runs", RUNS,
                             "--cluster", scheduler.scheduler_address)
    assert code == 0
    assert err[0] == f"m3dnca: {len(done)} of 6 cases are done already (their outputs exist; --overwrite redoes them)"
    assert sorted(line.split(":")[0] for line in out.splitlines()) == sorted({f"case{i}" for i in range(6)} - done)
    summary = {r["case"]: r["status"] for r in rows(outdir)}
    assert summary == {f"case{i}": "skipped" if f"case{i}" in done else "ok" for i in range(6)}


WORKER_THREADS = """
import asyncio, os, types
os.environ.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")  # what Dask's nanny gives a worker process
from nca_core.cli.cluster.worker import CaseWorker
async def set_resources(**resources): pass
worker = types.SimpleNamespace(state=types.SimpleNamespace(nthreads=2), set_resources=set_resources)
asyncio.run(CaseWorker().setup(worker))
import torch, SimpleITK
print(torch.get_num_threads(), SimpleITK.ProcessObject.GetGlobalDefaultNumberOfThreads())
"""


def test_a_worker_of_two_threads_runs_torch_and_itk_on_two_threads():
    expected = min(2, len(os.sched_getaffinity(0))) if hasattr(os, "sched_getaffinity") else 2
    result = subprocess.run([sys.executable, "-c", WORKER_THREADS], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(expected), "2"]


def test_cluster_option_values():
    assert cluster_spec("local") == ClusterSpec(LOCAL)
    assert cluster_spec("local:3") == ClusterSpec(LOCAL, 3)
    assert cluster_spec("local:2x4").local_size() == (2, 4)
    assert cluster_spec("tcp://head:8786") == ClusterSpec(ADDRESS, address="tcp://head:8786")
    processes, threads = cluster_spec("local").local_size()
    assert processes >= 1 and processes * threads <= max(2, os.cpu_count())
    for bad in ("local:0", "local:2x0", "remote", "missing.yaml"):
        with pytest.raises(argparse.ArgumentTypeError):
            cluster_spec(bad)


def test_without_dask_the_option_says_what_to_install(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "distributed" else real(name, *a))
    with pytest.raises(NCAError, match=r"pip install 'm3dnca\[cluster\]'"):
        require_distributed()


def test_the_documented_slurm_config_becomes_its_job_script(tmp_path):
    """The ``slurm.yaml`` of docs/scale.md, read as ``--cluster slurm.yaml`` reads it."""
    pytest.importorskip("dask_jobqueue")
    import dask_jobqueue

    from conftest import REPOSITORY

    doc = (REPOSITORY / "docs" / "scale.md").read_text(encoding="utf-8")
    config = tmp_path / "slurm.yaml"
    config.write_text(doc.split("```yaml\n")[1].split("```")[0])
    assert cluster_spec(str(config)) == ClusterSpec(JOBQUEUE, config=config)
    read = JobQueueConfig.read(config)
    assert (read.system, read.adapt) == ("slurm", {"minimum_jobs": 0, "maximum_jobs": 20})
    with dask_jobqueue.SLURMCluster(**read.arguments, scheduler_options={"dashboard_address": ":0"}) as cluster:
        script = cluster.job_script()
    for line in ("#SBATCH -p cpu", "#SBATCH -A my-lab", "#SBATCH -t 04:00:00", "--nworkers 16", "--nthreads 2",
                 "--lifetime 3h50m", "source /shared/m3dnca/.venv/bin/activate"):
        assert line in script
    for text, problem in (("jobs: 0\n", "jobs must be"), ("system: cloud\n", "system 'cloud'"), ("- a\n", "mapping")):
        config.write_text(text)
        with pytest.raises(NCAError, match=problem):
            JobQueueConfig.read(config)


def test_progress_lines_in_a_log(capsys):
    clock = iter([0.0, 30.0, 61.0, 90.0]).__next__
    with CohortProgress(4, terminal=False, clock=clock) as progress:
        progress.count(failed=False)  # at 30 s: no line yet
        progress.count(failed=True)  # at 61 s
        progress.count(failed=False)  # at 90 s: no line (30 s after the last)
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["m3dnca: 2 of 4 cases finished (1 done, 1 failed), 2 left, 0.03 cases/s, about 1 min left"]
