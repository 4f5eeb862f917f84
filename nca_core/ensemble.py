"""Pseudo-ensemble inference: N stochastic runs, mean, standard deviation and NQM."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from .model import LevelPlan, M3DNCA
from .preprocessing import Preprocessing, prepare

# Rough bytes per voxel of one run's working set at the finest level (state, perception,
# hidden layer), used to batch several runs together without exceeding the budget.
BYTES_PER_VOXEL_PER_RUN = 4 * (16 + 32 + 32 + 64 + 16)
DEFAULT_MEMORY_BUDGET = 1 << 30

ProgressCallback = Callable[[int, int], None]  # (runs done, runs total)


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


def runs_per_batch(voxels: int, runs: int, budget: int = DEFAULT_MEMORY_BUDGET) -> int:
    return max(1, min(runs, budget // max(1, voxels * BYTES_PER_VOXEL_PER_RUN)))


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
) -> EnsembleResult:
    """Run the NCA ``runs`` times on a raw volume (X, Y, Z) and summarise."""
    started = time.perf_counter()
    config = model.config
    prepared = prepare(array, preprocessing, model.multiple)
    image = torch.from_numpy(prepared)[None, None].to(device)
    plan = LevelPlan(
        steps=list(steps or config.steps),
        fire_rate=config.fire_rate if fire_rate is None else fire_rate,
        seed=seed,
        on_step=_cancel_check(should_cancel),
    )
    crop = (slice(None),) + tuple(slice(0, s) for s in array.shape)
    total = torch.zeros((config.output_channels,) + array.shape, dtype=torch.float64)
    total_sq = torch.zeros_like(total)
    batch = runs_per_batch(int(np.prod(prepared.shape)), runs)
    model = model.to(device).eval()
    done = 0
    with torch.no_grad():
        while done < runs:
            count = min(batch, runs - done)
            plan.runs = list(range(done, done + count))
            state, _ = model(image.expand(count, -1, -1, -1, -1), plan)
            probability = torch.sigmoid(state[:, model.output_slice()]).double().cpu()
            probability = probability[(slice(None),) + crop]
            total += probability.sum(dim=0)
            total_sq += (probability * probability).sum(dim=0)
            done += count
            if progress is not None:
                progress(done, runs)
    mean = (total / runs).numpy()
    std = np.sqrt(np.clip((total_sq / runs).numpy() - mean * mean, 0, None))
    mean, std = mean.astype(np.float32), std.astype(np.float32)
    return EnsembleResult(
        probability=mean,
        std=std,
        labels=label_map(mean),
        nqm=nqm(mean, std),
        runs=runs,
        seconds=time.perf_counter() - started,
    )


def _cancel_check(should_cancel: Optional[Callable[[], bool]]):
    if should_cancel is None:
        return None

    def check() -> None:
        if should_cancel():
            raise Cancelled("segmentation cancelled")

    return check
