"""Will a volume fit a model and the machine? Checks made before inference starts.

``inference_bytes`` is the one place that estimates the memory of a segmentation;
adjust it when the inference path (``ensemble``/``fastpath``) changes.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Optional, Sequence, Tuple

from ..network.config import NCAConfig
from ..errors import InputImageError, NCAError
from ..space.preprocessing import Preprocessing, prepared_shape

MEMORY_LIMIT_VARIABLE = "M3DNCA_MEMORY_LIMIT"  # bytes, or with a K/M/G/T suffix
_UNITS = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def shape_text(shape: Sequence[int]) -> str:
    return "x".join(str(int(s)) for s in shape)


def size_text(count: float) -> str:
    """Bytes as a short human-readable size."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024:
            return f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TiB"


def inference_bytes(shape: Sequence[int], config: NCAConfig, preprocessing: Preprocessing) -> int:
    """Estimated peak memory of segmenting a volume of ``shape`` (X, Y, Z) on the fast path.

    Per padded voxel: the channels-last state and the copy made between levels (2c floats)
    and the image's raw, normalised and padded copies; per voxel and output channel the
    float64 sums, the run's probability and the float32 results; plus the ensemble's
    batching budget (runs advance together up to it); plus the fast path's perception cache
    when one run's finest level fits it. Measured peaks are about half this.
    """
    from .ensemble import DEFAULT_MEMORY_BUDGET
    from .fastpath import FastOptions

    padded = math.prod(prepared_shape(shape, preprocessing, _multiple(config)))
    voxels = math.prod(int(s) for s in shape)
    per_padded = 4 * (2 * config.channels + 3)
    per_output = 3 * 8 + 3 * 4
    cache = FastOptions.cache_bytes if padded * 4 * 2 * config.channels <= FastOptions.cache_bytes else 0
    return padded * per_padded + voxels * per_output * config.output_channels + DEFAULT_MEMORY_BUDGET + cache


def _multiple(config: NCAConfig) -> int:
    return config.downscale ** (config.levels - 1)


def memory_limit(device: str) -> Tuple[int, str]:
    """(bytes, description) of the memory a segmentation may use on ``device``."""
    override = os.environ.get(MEMORY_LIMIT_VARIABLE)
    if override:
        return _parse_bytes(override), f"the limit set by {MEMORY_LIMIT_VARIABLE}"
    if device.startswith("cuda"):
        import torch

        return int(torch.cuda.mem_get_info()[1]), "the GPU's memory"
    physical = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    group = _cgroup_limit()
    if group is not None and group < physical:
        return group, "this container's memory limit"
    return physical, "this machine's memory"


def _parse_bytes(given: str) -> int:
    text = given.strip().upper().rstrip("B").rstrip("I")
    try:
        size = int(float(text[:-1]) * _UNITS[text[-1]]) if text and text[-1] in _UNITS else int(float(text))
    except (ValueError, OverflowError):  # not a number, or inf
        size = 0
    if size <= 0:
        raise NCAError(f"{MEMORY_LIMIT_VARIABLE}={given!r}: not a size (e.g. 8G, 512M)")
    return size


def _cgroup_limit() -> Optional[int]:
    for name in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            value = Path(name).read_text().strip()
        except OSError:
            continue
        if value.isdigit() and int(value) < 1 << 60:
            return int(value)
    return None


def check_memory(shape: Sequence[int], config: NCAConfig, preprocessing: Preprocessing, device: str) -> None:
    """Refuse a volume whose estimated need exceeds the memory limit."""
    need = inference_bytes(shape, config, preprocessing)
    limit, what = memory_limit(device)
    if need > limit:
        raise InputImageError(
            f"volume {shape_text(shape)} needs about {size_text(need)} of memory to segment, "
            f"more than {what} ({size_text(limit)}); crop or downsample it, or use a larger machine"
        )


def minimum_size(config: NCAConfig, preprocessing: Preprocessing) -> int:
    """The smallest side length every level's reflect padding can handle."""
    for side in range(1, 1 << 12):
        padded = prepared_shape((side,), preprocessing, _multiple(config))[0]
        sizes = [padded // config.downscale ** (config.levels - 1 - level) for level in range(config.levels)]
        if all(size > k // 2 for size, k in zip(sizes, config.kernel_sizes)):
            return side
    raise NCAError("model kernels are too large for any volume")


def check_fits(shape: Sequence[int], config: NCAConfig, preprocessing: Preprocessing) -> None:
    """Refuse inputs the model cannot take: not 3D, too small a volume. (A model's input channels
    are checked against its preprocessing when the model is loaded: ``ModelBundle``.)"""
    if len(shape) != 3:
        raise InputImageError(f"volume has shape {shape_text(shape)}; a 3D volume (X, Y, Z) is needed")
    smallest = minimum_size(config, preprocessing)
    if min(shape) < smallest:
        raise InputImageError(
            f"volume {shape_text(shape)} is too small for this model: every side needs at least {smallest} voxels"
        )


SECONDS_PER_VOXEL_STEP = 2.5e-7  # fast path, one run on one thread (docs/performance.md)
LONG_RUN_SECONDS = 60.0


def estimated_seconds(voxels: float, config: NCAConfig, runs: int, steps: Optional[Sequence[int]],
                      threads: int) -> float:
    """Rough CPU time of segmenting ``voxels`` voxels of the model's grid (2 threads: ~1.5x faster)."""
    steps = config.steps if steps is None else steps
    per_run = sum(voxels / config.downscale ** (3 * (config.levels - 1 - level)) * count
                  for level, count in enumerate(steps))
    return per_run * runs * SECONDS_PER_VOXEL_STEP / max(1, threads) ** 0.6


def long_run_notice(shape: Sequence[int], spacing: Optional[Sequence[float]], config: NCAConfig,
                    preprocessing: Preprocessing, runs: int, steps: Optional[Sequence[int]],
                    threads: int) -> Optional[str]:
    """A line on a CPU segmentation of ``runs`` runs (its probes' included) expected to take over
    a minute, else None: a volume far larger than a training crop, such as a whole head for the
    hippocampus model, or many runs on a field-of-view model's grid (the same for every scan)."""
    if preprocessing.relative_to_field_of_view:
        voxels = float(math.prod(preprocessing.grid_shape))
        what = f"{runs} runs on the model's {shape_text(preprocessing.grid_shape)} grid"
    else:
        voxels = float(math.prod(shape))
        if spacing is not None and preprocessing.spacing:
            voxels *= math.prod(spacing) / math.prod(preprocessing.spacing)
        what = (f"large input ({shape_text(shape)} voxels, {voxels / 1e6:.1f} million on the model's grid): "
                f"{runs} runs")
    seconds = estimated_seconds(voxels, config, runs, steps, threads)
    if seconds < LONG_RUN_SECONDS:
        return None
    return f"{what} will take about {math.ceil(seconds / 60)} min on {threads} CPU thread(s)"
