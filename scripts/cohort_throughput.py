"""Throughput of ``m3dnca segment`` over a cohort: serial against local Dask clusters, each
variant a fresh command on the same inputs, the variants alternated round by round (so that
a shared machine's load falls on all of them alike), with the peak memory of each process.

    python scripts/cohort_throughput.py ../shared/data/realheads/images --rounds 2
    python scripts/cohort_throughput.py CASES --variants serial:1 local:2x1 -- --runs 10

Prints one line per command (wall time, CPU time of all its processes, cases ok/failed, peak
RSS of the client and of the largest worker) and, per variant, the median wall time, its ratio
to the first variant, and the CPU seconds per case (what a loaded machine distorts least).
Needs the cluster extra (psutil comes with Dask). Arguments after ``--`` go to every command.
"""
from __future__ import annotations

import argparse
import csv
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Dict, List

import psutil

VARIANTS = ("serial:2", "local:1x2", "local:2x1")


def command(variant: str, inputs: Path, outdir: Path, extra: List[str]) -> List[str]:
    """``serial`` (threads: one per core), ``serial:T`` (T threads), else a ``--cluster`` value."""
    base = [sys.executable, "-m", "nca_core", "segment", str(inputs), "-o", str(outdir), *extra]
    if variant.startswith("serial"):
        return base + (["--threads", variant.split(":")[1]] if ":" in variant else [])
    return [*base, "--cluster", variant]


def peak_memory(process: subprocess.Popen, peaks: Dict[int, int], stop: threading.Event) -> None:
    """Sample the RSS of the command and of every process under it until ``stop``."""
    root = psutil.Process(process.pid)
    while not stop.is_set():
        try:
            for each in [root, *root.children(recursive=True)]:
                peaks[each.pid] = max(peaks.get(each.pid, 0), each.memory_info().rss)
        except psutil.Error:
            pass
        time.sleep(0.2)


def _children_cpu() -> float:
    """CPU seconds (user + system) of the finished processes started from here, their own
    children (the Dask workers) included."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(variant: str, inputs: Path, extra: List[str]) -> Dict:
    with tempfile.TemporaryDirectory() as folder:
        outdir = Path(folder) / "out"
        peaks: Dict[int, int] = {}
        stop = threading.Event()
        started, cpu_before = time.perf_counter(), _children_cpu()
        process = subprocess.Popen(command(variant, inputs, outdir, extra), stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, text=True)
        sampler = threading.Thread(target=peak_memory, args=(process, peaks, stop))
        sampler.start()
        _, err = process.communicate()
        wall, cpu = time.perf_counter() - started, _children_cpu() - cpu_before
        stop.set()
        sampler.join()
        if not (outdir / "summary.csv").exists():
            raise SystemExit(f"{' '.join(command(variant, inputs, outdir, extra))} failed: {err.strip()}")
        with open(outdir / "summary.csv", newline="") as handle:
            rows = list(csv.DictReader(handle))
    client = peaks.pop(process.pid, 0)
    ok = [float(r["seconds"]) for r in rows if r["status"] == "ok"]
    return {"variant": variant, "wall": wall, "cpu": cpu, "ok": len(ok), "failed": len(rows) - len(ok),
            "segment_s": sum(ok), "client_mb": client / 2 ** 20,
            "worker_mb": max(peaks.values(), default=0) / 2 ** 20, "exit": process.returncode,
            "load": os.getloadavg()[0], "error": err.strip().splitlines()[-1:] if process.returncode > 1 else []}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("inputs", type=Path, help="a folder of volumes (or a DICOM folder, a file)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS))
    argv = sys.argv[1:]
    split = argv.index("--") if "--" in argv else len(argv)
    args, extra = parser.parse_args(argv[:split]), argv[split + 1:]  # after --: options for every command
    results: List[Dict] = []
    print(f"{'variant':<12} {'wall s':>7} {'CPU s':>6} {'ok':>3} {'failed':>6} {'sum of case s':>13} "
          f"{'client MB':>9} {'worker MB':>9} {'load':>5}")
    for index in range(args.rounds):
        order = args.variants if index % 2 == 0 else list(reversed(args.variants))
        for variant in order:
            r = measure(variant, args.inputs, extra)
            results.append(r)
            print(f"{variant:<12} {r['wall']:7.1f} {r['cpu']:6.1f} {r['ok']:3d} {r['failed']:6d} {r['segment_s']:13.1f} "
                  f"{r['client_mb']:9.0f} {r['worker_mb']:9.0f} {r['load']:5.1f} {' '.join(r['error'])}", flush=True)
    first = statistics.median(r["wall"] for r in results if r["variant"] == args.variants[0])
    print("\nmedians per variant: wall time (throughput against the first), CPU seconds per case:")
    for variant in args.variants:
        mine = [r for r in results if r["variant"] == variant]
        median = statistics.median(r["wall"] for r in mine)
        cpu = statistics.median(r["cpu"] / (r["ok"] + r["failed"]) for r in mine)
        print(f"  {variant:<12} {median:7.1f} s  x{first / median:.2f} throughput  {cpu:6.2f} CPU s per case")
    return 0


if __name__ == "__main__":
    sys.exit(main())
