"""``m3dnca bench``: wall time, peak memory and GFLOP/s of inference: the torch fast path,
the fused CPU engine (where numba is installed) and the plain reference formulation, each
workload in a fresh subprocess (peak RSS from ``getrusage``, which tracemalloc cannot see
for torch). ``--repeat N`` alternates the engines N times, so that load from other programs
falls on both alike, and prints the fused/torch time ratios."""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from .options import add_threads_option, positive_int

HIPPOCAMPUS_DIR = Path(__file__).resolve().parents[3] / "shared" / "data" / "hippocampus"


@dataclass(frozen=True)
class Workload:
    """One named measurement; the reference may run fewer runs/steps and be extrapolated."""

    name: str
    preset: str
    shape: Tuple[int, int, int]
    runs: int
    cases: int = 1
    real_hippocampus: bool = False  # real cases from ../shared/data/hippocampus if present
    reference_runs: int = 1
    reference_steps: Optional[int] = None  # per level; None: the full schedule
    fast_steps: Optional[int] = None  # the same for the fast path
    seconds_target: Optional[float] = None  # per case
    memory_target_mb: Optional[float] = None


WORKLOADS: Dict[str, Workload] = {
    "prostate-320x320x24": Workload("prostate-320x320x24", "prostate", (320, 320, 24), 10,
                                    reference_steps=2, seconds_target=20, memory_target_mb=1000),
    "hippocampus-batch": Workload("hippocampus-batch", "hippocampus", (36, 50, 36), 10, cases=8,
                                  real_hippocampus=True, reference_runs=10, seconds_target=0.3),
    "prostate-256x256x200": Workload("prostate-256x256x200", "prostate", (256, 256, 200), 1,
                                     reference_steps=1, fast_steps=4, memory_target_mb=2000),
}
QUICK_SHAPES = {"prostate-320x320x24": (64, 64, 16), "hippocampus-batch": (20, 24, 20),
                "prostate-256x256x200": (64, 64, 40)}


# ---- the measurement, in a worker process ---------------------------------------------
def _model(preset_name: str):
    """The shipped model of that name if installed, else the preset with seeded random
    (non-zero) fc1 weights so that the state evolves; with its location prior (or None)."""
    import torch

    from ..network.config import preset
    from ..network.model import M3DNCA
    from ..modelfile.bundle import load_model
    from ..modelfile.registry import shipped_models

    if preset_name in shipped_models():
        bundle = load_model(shipped_models()[preset_name])
        return bundle.build(), f"shipped model '{preset_name}'", bundle.preprocessing.location_prior
    torch.manual_seed(0)
    model = M3DNCA(preset(preset_name))
    with torch.no_grad():
        for rule in model.levels:
            rule.fc1.weight.normal_(0, 0.02)
    return model, f"untrained '{preset_name}' preset, random fc1", None


def _preprocessing(shape: Tuple[int, ...], location_prior: Optional[Dict]):
    """What the bench's volumes are taken as: the model's grid itself, with its prior if it has one."""
    from ..space.preprocessing import Preprocessing

    if location_prior is None:
        return Preprocessing()
    return Preprocessing(grid_shape=list(shape), orientation="LPS", location_prior=location_prior)


def _volumes(workload: Workload):
    import numpy as np

    files = sorted(HIPPOCAMPUS_DIR.glob("imagesTr/*.nii*")) if workload.real_hippocampus else []
    if len(files) >= workload.cases:
        from ..space.imaging import read_volume

        return [read_volume(f).array for f in files[: workload.cases]], f"real cases from {HIPPOCAMPUS_DIR}"
    rng = np.random.default_rng(0)
    arrays = [rng.random(workload.shape, dtype=np.float32) for _ in range(workload.cases)]
    return arrays, f"random volumes {'x'.join(map(str, workload.shape))}"


def nominal_flops(config, shapes: List[Tuple[int, ...]], steps: List[int], runs: int) -> float:
    """FLOPs of the plain formulation: per voxel and step, depthwise conv 2k^3C, fc0 2(2C)H,
    fc1 2HC (BatchNorm, ReLU and firing not counted), over every level of every case."""
    total = 0.0
    c, h = config.channels, config.hidden
    for shape in shapes:
        padded = [-(-s // (config.downscale ** (config.levels - 1))) * config.downscale ** (config.levels - 1)
                  for s in shape]
        for level, (k, n) in enumerate(zip(config.kernel_sizes, steps)):
            factor = config.downscale ** (config.levels - 1 - level)
            voxels = (padded[0] // factor) * (padded[1] // factor) * (padded[2] // factor)
            total += voxels * n * runs * (2 * k ** 3 * c + 4 * c * h + 2 * h * c)
    return total


def _measure(spec: Dict) -> Dict:
    """Run one workload in this process; returns timings and peak RSS."""
    import torch

    from ..inference.ensemble import run_ensemble
    from ..inference.fastpath import FastOptions

    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    workload = Workload(**{**spec["workload"], "shape": tuple(spec["workload"]["shape"])})
    model, model_note, location_prior = _model(workload.preset)
    arrays, data_note = _volumes(workload)
    options = FastOptions(bf16=spec["bf16"])
    if spec["chunk_voxels"]:
        options = replace(options, chunk_voxels=spec["chunk_voxels"])
    reference = spec["impl"] == "reference"
    engine = "fused" if spec["impl"] == "fused" else "torch"
    if engine == "fused":  # load (or compile) the kernels before the clock starts, as a batch does
        from ..inference.fused import kernels

        kernels()
    full_steps = list(model.config.steps)
    runs = workload.reference_runs if reference else workload.runs
    cases = arrays[:1] if reference else arrays
    baseline = _peak_mb()
    measure_steps = workload.reference_steps if reference else workload.fast_steps

    def timed(array, steps=None) -> Tuple[float, float, float]:
        """Wall seconds, CPU seconds and NQM of one ensemble."""
        cpu, started = _cpu_seconds(), time.perf_counter()
        nqm = run_ensemble(model, array, _preprocessing(array.shape, location_prior), runs=runs, steps=steps,
                           options=options, reference=reference, engine=engine).nqm
        return time.perf_counter() - started, _cpu_seconds() - cpu, nqm

    seconds = cpu_seconds = measured = 0.0
    nqms = []
    if measure_steps is not None:
        # one timed pass per level with only that level stepping, scaled to the full schedule
        for level, steps in enumerate(full_steps):
            reduced = [measure_steps if i == level else 0 for i in range(len(full_steps))]
            wall, cpu, _ = timed(cases[0], reduced)
            measured += wall
            seconds += wall * steps / measure_steps
            cpu_seconds += cpu * steps / measure_steps
    else:
        for array in cases:
            wall, cpu, nqm = timed(array)
            seconds, cpu_seconds = seconds + wall, cpu_seconds + cpu
            nqms.append(nqm)
        measured = seconds
    nqm = sum(nqms) / len(nqms) if nqms else float("nan")
    measured_cases = 1 if measure_steps is not None else len(cases)
    scale = (workload.runs / runs) * (len(arrays) / measured_cases)
    flops = nominal_flops(model.config, [a.shape for a in arrays], full_steps, workload.runs)
    return {
        "seconds": seconds * scale, "measured_seconds": measured, "cpu_seconds": cpu_seconds * scale,
        "extrapolated": scale != 1 or measure_steps is not None, "measure_steps": measure_steps,
        "runs_measured": runs, "cases": len(arrays), "cases_measured": measured_cases,
        "peak_mb": _peak_mb(), "baseline_mb": baseline, "gflops": flops / (seconds * scale) / 1e9,
        "nqm": nqm, "model": model_note, "data": data_note, "threads": torch.get_num_threads(),
    }


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _peak_mb() -> float:
    """Peak resident set size of this process (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024


# ---- the command ----------------------------------------------------------------------
def _run_worker(spec: Dict) -> Dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[2])]
                                                     + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    done = subprocess.run([sys.executable, "-m", "nca_core.cli.bench", json.dumps(spec)],
                          capture_output=True, text=True, env=env)
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["worker failed"])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    import torch

    return (f"{cpu}, {cores} cores available, torch {torch.__version__}, Python {platform.python_version()}, "
            f"load average {load:.2f} at start")


def cmd_bench(args: argparse.Namespace) -> int:
    names = args.workload or list(WORKLOADS)
    print(f"machine: {_machine()}")
    print("GFLOP/s are nominal: FLOPs of the plain formulation (conv 2k^3C + fc0 4CH + fc1 2HC per voxel-step)"
          " over wall time, for both implementations. CPU s: user+system time of the worker (all threads).")
    header = f"{'workload':26} {'impl':10} {'runs x cases':>12} {'wall s':>9} {'s/case':>8} " \
             f"{'CPU s':>8} {'peak MB':>8} {'GFLOP/s':>8}  target"
    print(header)
    print("-" * len(header))
    failed = False
    ratios: Dict[str, List[Tuple[float, float]]] = {}  # per workload: (wall, CPU) fused / torch
    for name in names:
        workload = WORKLOADS[name]
        if args.quick:  # a smoke test: named by its own size, judged against no target
            shape = QUICK_SHAPES[name]
            workload = replace(workload, name=f"quick-{workload.preset}-{'x'.join(map(str, shape))}", shape=shape,
                               cases=min(workload.cases, 2), real_hippocampus=False,
                               seconds_target=None, memory_target_mb=None)
        if args.runs:
            workload = replace(workload, runs=args.runs, reference_runs=min(workload.reference_runs, args.runs))
        if args.fast_steps:
            workload = replace(workload, fast_steps=args.fast_steps)
        engines = [e for e in (args.engine or ["torch", "fused"]) if e != "fused" or _fused_available()]
        seconds: Dict[str, Tuple[float, float]] = {}
        for _ in range(args.repeat):
            for impl in engines:
                spec = {"workload": asdict(workload), "impl": impl, "threads": args.threads,
                        "chunk_voxels": args.chunk_voxels, "bf16": args.bf16}
                result = _run_worker(spec)
                if "error" in result:
                    print(f"{name:26} {impl:10} failed: {result['error']}")
                    failed = True
                    continue
                seconds[impl] = (result["seconds"], result["cpu_seconds"])
                print(_row(workload, impl, result))
                for note in _notes(workload, impl, result):
                    print(f"{'':38}{note}")
            if {"torch", "fused"} <= set(seconds):
                ratios.setdefault(workload.name, []).append(
                    (seconds["fused"][0] / seconds["torch"][0], seconds["fused"][1] / seconds["torch"][1]))
        if not args.no_reference:
            result = _run_worker({"workload": asdict(workload), "impl": "reference", "threads": args.threads,
                                  "chunk_voxels": args.chunk_voxels, "bf16": args.bf16})
            if "error" in result:
                print(f"{name:26} reference  failed: {result['error']}")
                failed = True
            else:
                print(_row(workload, "reference", result))
                for note in _notes(workload, "reference", result):
                    print(f"{'':38}{note}")
    for name, values in ratios.items():
        walls, cpus = [v[0] for v in values], [v[1] for v in values]
        print(f"fused / torch on {name}: wall time {', '.join(f'{v:.2f}' for v in walls)} (median "
              f"{statistics.median(walls):.2f}); CPU time {', '.join(f'{v:.2f}' for v in cpus)} (median "
              f"{statistics.median(cpus):.2f}); load average now {os.getloadavg()[0]:.2f}")
    return 1 if failed else 0


def _fused_available() -> bool:
    from ..inference.fused import available

    return available()


def _row(workload: Workload, impl: str, r: Dict) -> str:
    per_case = r["seconds"] / r["cases"]
    target = []
    if workload.seconds_target is not None:
        target.append(f"<= {workload.seconds_target:g} s/case {'met' if per_case <= workload.seconds_target else 'MISSED'}")
    if workload.memory_target_mb is not None:
        target.append(f"<= {workload.memory_target_mb:g} MB {'met' if r['peak_mb'] <= workload.memory_target_mb else 'MISSED'}")
    mark = "~" if r["extrapolated"] else " "
    label = f"{workload.runs} x {r['cases']}"
    return (f"{workload.name:26} {impl:10} {label:>12} {mark}{r['seconds']:8.2f} {per_case:8.3f} "
            f"{r['cpu_seconds']:8.1f} {r['peak_mb']:8.0f} {r['gflops']:8.1f}  {'; '.join(target) if impl != 'reference' else ''}")


def _notes(workload: Workload, impl: str, r: Dict) -> List[str]:
    notes = []
    if r["extrapolated"]:
        steps = f"{r['measure_steps']} step(s) per level, " if r["measure_steps"] is not None else ""
        notes.append(f"~ extrapolated from {steps}{r['runs_measured']} run(s) x {r['cases_measured']} case(s) "
                     f"measured in {r['measured_seconds']:.1f} s; peak MB is of that smaller run")
    if impl != "reference":
        notes.append(f"{r['model']}; {r['data']}; {r['threads']} threads; "
                     f"RSS before the run {r['baseline_mb']:.0f} MB; mean NQM {r['nqm']:.4f}")
    return notes


def add_bench_command(commands) -> None:
    bench = commands.add_parser("bench", help="time inference: torch fast path, fused engine, plain reference")
    bench.add_argument("--workload", action="append", choices=sorted(WORKLOADS),
                       help="measure only this workload (repeatable; default: all)")
    bench.add_argument("--runs", type=positive_int, default=None, help="runs per case instead of the workload's")
    bench.add_argument("--fast-steps", type=positive_int, default=None,
                       help="time the fast path over this many steps per level and extrapolate")
    bench.add_argument("--quick", action="store_true", help="small volumes: a smoke test")
    add_threads_option(bench)
    bench.add_argument("--chunk-voxels", type=positive_int, default=None, help="fast path slab size (default: its own)")
    bench.add_argument("--bf16", action="store_true", help="fast path dense layers in bfloat16")
    bench.add_argument("--no-reference", action="store_true", help="skip the reference implementation")
    bench.add_argument("--engine", action="append", choices=["torch", "fused"],
                       help="time only this engine (repeatable; default: torch and, with numba, fused)")
    bench.add_argument("--repeat", type=positive_int, default=1,
                       help="alternate the engines this many times and print the fused/torch ratios")
    bench.set_defaults(run=cmd_bench)


if __name__ == "__main__":
    print(json.dumps(_measure(json.loads(sys.argv[1]))))
