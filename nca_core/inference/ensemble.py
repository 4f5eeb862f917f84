"""Pseudo-ensemble inference: N stochastic runs, mean, standard deviation and NQM."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from .fastpath import FastOptions, fast_forward
from ..network.model import LevelPlan, M3DNCA
from .fused import choose_engine, fused_forward
from ..space.postprocessing import Postprocessing
from ..space.preprocessing import Preprocessing, model_input, prepare

# Runs are batched while their finest-level working sets fit the budget. The fast path
# keeps only the state per run (4 bytes x channels per voxel; slab temporaries are
# small); the reference formulation also holds the perception and hidden layer.
REFERENCE_FLOATS_PER_CHANNEL = 10  # state, perception (2), hidden (4), output, copies
DEFAULT_MEMORY_BUDGET = 256 << 20

ProgressCallback = Callable[[int, int], None]  # (runs done, runs total)
# One run's probabilities (K, X, Y, Z) on the model's grid -> its voxel count per class on the
# input's voxels (see ``volumes``): the runs' own volumes without keeping their maps.
RunCounter = Callable[[np.ndarray], np.ndarray]


class Cancelled(Exception):
    """Raised inside a run when the caller asked to stop."""


@dataclass
class EnsembleResult:
    """Per-voxel outputs of the pseudo-ensemble, arrays in (X, Y, Z) order."""

    probability: np.ndarray  # (K, X, Y, Z) mean foreground probability per class
    std: np.ndarray  # (K, X, Y, Z) population standard deviation over the runs
    labels: np.ndarray  # (X, Y, Z) uint8, 0 = background, k = class k
    nqm: float  # sum(std) / sum(mean) over the probability volumes; inf if empty
    runs: int
    seconds: float
    run_counts: Optional[np.ndarray] = None  # (runs, K) each run's voxels per class, if counted

    @property
    def variance_map(self) -> np.ndarray:
        """One float32 volume: the standard deviation summed over classes."""
        return self.std.sum(axis=0).astype(np.float32)

    @property
    def foreground_probability(self) -> np.ndarray:
        return self.probability.sum(axis=0).clip(0, 1).astype(np.float32)


def nqm(mean: np.ndarray, std: np.ndarray) -> float:
    """NCA quality metric, paper eq. (1): sum of std over sum of mean probability."""
    total = float(mean.sum(dtype=np.float64))
    if total <= 0:
        return math.inf
    return float(std.sum(dtype=np.float64)) / total


def label_map(probability: np.ndarray) -> np.ndarray:
    """0.5 threshold for one class; for several, the most probable class above 0.5."""
    best = probability.argmax(axis=0)
    foreground = probability.max(axis=0) > 0.5
    return np.where(foreground, best + 1, 0).astype(np.uint8)


def runs_per_batch(
    voxels: int, runs: int, channels: int, reference: bool = False, budget: int = DEFAULT_MEMORY_BUDGET
) -> int:
    """How many runs to advance together within ``budget`` bytes of working set."""
    per_voxel = 4 * channels * (REFERENCE_FLOATS_PER_CHANNEL if reference else 1)
    return max(1, min(runs, budget // max(1, voxels * per_voxel)))


class RunTally:
    """Progress over several ensembles of one segmentation (probes and the rest) as one count of
    ``total`` runs: ``next_part()`` is the next ensemble's callback, counting on from the last."""

    def __init__(self, progress: Optional[ProgressCallback], total: int) -> None:
        self.progress, self.total, self.done = progress, total, 0

    def next_part(self) -> Optional[ProgressCallback]:
        if self.progress is None:
            return None
        start = self.done

        def report(done: int, _count: int) -> None:
            self.done = start + done
            self.progress(min(self.done, self.total), self.total)
        return report


def run_ensemble(
    model: M3DNCA,
    array: np.ndarray,
    preprocessing: Preprocessing,
    runs: int = 10,
    seed: int = 0,
    fire_rate: Optional[float] = None,
    steps: Optional[Sequence[int]] = None,
    device: str = "cpu",
    progress: Optional[ProgressCallback] = None,
    should_cancel: Optional[Callable[[], bool]] = None,
    options: Optional[FastOptions] = None,
    reference: bool = False,
    postprocessing: Optional[Postprocessing] = None,
    first_run: int = 0,
    count_run: Optional[RunCounter] = None,
    engine: str = "auto",
) -> EnsembleResult:
    """Run the NCA ``runs`` times on a raw volume (X, Y, Z) and summarise.

    Uses the fast path (``options`` tunes it); ``reference`` runs the plain formulation.
    ``postprocessing`` cleans the label map (NQM is of the probabilities, before it).
    The runs are numbered from ``first_run`` (each run's random firing follows its number),
    so runs 0-1 and then 2-9 merged with ``combine`` are the runs 0-9 of one call.
    ``count_run`` counts each run's own label map as its batch is done (``run_counts``).
    ``engine`` (auto | torch | fused, see ``fused.choose_engine``) picks the step's implementation.
    """
    started = time.perf_counter()
    config = model.config
    prepared = prepare(array, preprocessing, model.multiple)
    inputs = model_input(prepared, preprocessing)
    if len(inputs) != config.input_channels:
        raise ValueError(f"the model reads {config.input_channels} input channels, the preprocessing gives {len(inputs)}")
    image = torch.from_numpy(inputs)[None].to(device)
    plan = LevelPlan(
        steps=list(steps or config.steps),
        fire_rate=config.fire_rate if fire_rate is None else fire_rate,
        seed=seed,
        on_step=_cancel_check(should_cancel),
        reference=reference,
    )
    crop = (slice(None),) + tuple(slice(0, s) for s in array.shape)
    total = torch.zeros((config.output_channels,) + array.shape, dtype=torch.float64)
    total_sq = torch.zeros_like(total)
    chosen = choose_engine(engine, device, config, reference)
    buffers = 2 if chosen == "fused" else 1  # the fused engine double-buffers the state
    batch = runs_per_batch(int(np.prod(prepared.shape)), runs, config.channels * buffers, reference)
    model = model.to(device).eval()
    done = 0
    counts = []
    with torch.no_grad():
        while done < runs:
            count = min(batch, runs - done)
            plan.runs = list(range(first_run + done, first_run + done + count))
            images = image.expand(count, -1, -1, -1, -1)
            if reference:
                logits = model(images, plan)[0][:, model.output_slice()]
            else:
                forward = fused_forward(model, images, plan) if chosen == "fused" else \
                    fast_forward(model, images, plan, options)
                logits = forward[..., model.output_slice()]
                logits = logits.permute(0, 4, 1, 2, 3)
            probability = torch.sigmoid(logits).double().cpu()
            del logits
            probability = probability[(slice(None),) + crop]
            total += probability.sum(dim=0)
            total_sq += (probability * probability).sum(dim=0)
            if count_run is not None:
                counts += [count_run(run.numpy()) for run in probability]
            done += count
            if progress is not None:
                progress(done, runs)
    return _summary(total.numpy(), total_sq.numpy(), runs, postprocessing, time.perf_counter() - started,
                    np.stack(counts) if counts else None)


def combine(first: EnsembleResult, second: EnsembleResult,
            postprocessing: Optional[Postprocessing] = None) -> EnsembleResult:
    """One ensemble of both ensembles' runs (their sums rebuilt from mean and deviation)."""
    total = np.zeros(first.probability.shape, np.float64)
    total_sq = np.zeros_like(total)
    for part in (first, second):
        mean = part.probability.astype(np.float64)
        total += mean * part.runs
        total_sq += (part.std.astype(np.float64) ** 2 + mean * mean) * part.runs
    counted = first.run_counts is not None and second.run_counts is not None
    return _summary(total, total_sq, first.runs + second.runs, postprocessing, first.seconds + second.seconds,
                    np.concatenate([first.run_counts, second.run_counts]) if counted else None)


def _summary(total: np.ndarray, total_sq: np.ndarray, runs: int, postprocessing: Optional[Postprocessing],
             seconds: float, run_counts: Optional[np.ndarray] = None) -> EnsembleResult:
    """Mean, population deviation, labels and NQM from the runs' sums (float64)."""
    mean = total / runs
    std = np.sqrt(np.clip(total_sq / runs - mean * mean, 0, None))
    mean, std = mean.astype(np.float32), std.astype(np.float32)
    return EnsembleResult(
        probability=mean,
        std=std,
        labels=(postprocessing or Postprocessing()).apply(label_map(mean)),
        nqm=nqm(mean, std),
        runs=runs,
        seconds=seconds,
        run_counts=run_counts,
    )


def _cancel_check(should_cancel: Optional[Callable[[], bool]]):
    if should_cancel is None:
        return None

    def check() -> None:
        if should_cancel():
            raise Cancelled("segmentation cancelled")

    return check
