"""The fused CPU engine: the whole NCA step in two numba sweeps over the cells.

``fused_forward`` returns what ``fastpath.fast_forward`` returns (the final channels-last
state) for the same model, image and plan: the same counter-based firing keys
(``M3DNCA._keys``), the same exact whole-volume BatchNorm statistics per run (per-plane
means and centred scatter matrices merged in float64, Chan et al.), the same folding of
BatchNorm into fc0. Only the order of floating-point sums differs.

numba is optional (the ``fast`` extra): without it, or on a GPU, the torch fast path runs.
The kernels are compiled once and cached on disk beside ``fusedkernels.py``
(``__pycache__``), or, where that folder is read-only, in numba's per-user cache
(``NUMBA_CACHE_DIR`` overrides both); ``python -m nca_core.inference.fused`` compiles them ahead.
"""
from __future__ import annotations

import time
from types import ModuleType
from typing import List, Optional, Tuple

import numpy as np
import torch

from ..errors import NCAError
from ..network.config import NCAConfig
from ..network.model import LevelPlan, M3DNCA
from ..network.rule import BATCHNORM_EPS, NCARule
from .settings import ENGINE_CHOICES

ENGINES = ENGINE_CHOICES
_KERNELS: List[Optional[ModuleType]] = []  # [module] once loaded, [None] if numba is unusable


def kernels() -> Optional[ModuleType]:
    """The compiled kernel module, or None where numba is missing or cannot compile."""
    if not _KERNELS:
        try:
            from . import fusedkernels
        except Exception:  # ImportError, or numba failing to compile / find a cache folder
            fusedkernels = None
        _KERNELS.append(fusedkernels)
    return _KERNELS[0]


def available() -> bool:
    return kernels() is not None


def fits(config: NCAConfig) -> bool:
    """Whether the kernels' compiled widths match the model (every preset's: 16 channels, 64 hidden)."""
    module = kernels()
    return module is not None and config.channels == module.CHANNELS and config.hidden == module.HIDDEN


def choose_engine(engine: str, device: str, config: NCAConfig, reference: bool = False) -> str:
    """``torch`` or ``fused`` for a requested ``engine`` (auto | torch | fused) on ``device``.

    auto takes the fused engine on the CPU when numba is there and the model fits the
    kernels (measured faster there: docs/performance.md). ``reference`` always runs torch.
    Raises NCAError when ``fused`` is asked for where it cannot run.
    """
    if engine not in ENGINES:
        raise NCAError(f"--engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    if engine == "torch" or reference:
        return "torch"
    on_cpu = str(device).startswith("cpu")
    if engine == "fused" and not (on_cpu and fits(config)):
        why = ("runs on the CPU only" if not on_cpu else "needs numba (pip install 'm3dnca[fast]'): missing, or it could not compile here"
               if not available() else f"needs a model of {kernels().CHANNELS} channels and "
               f"{kernels().HIDDEN} hidden units")
        raise NCAError(f"the fused engine {why}")
    return "fused" if on_cpu and fits(config) else "torch"


def _reflect_table(size: int, pad: int) -> np.ndarray:
    """Source index of each padded coordinate -pad .. size+pad-1 (reflect, no edge repeat)."""
    index = np.abs(np.arange(-pad, size + pad))
    index = np.where(index >= size, 2 * (size - 1) - index, index)
    if index.min() < 0:
        raise ValueError(f"a level of size {size} is too small for a kernel of radius {pad}")
    return index.astype(np.int64)


class _Level:
    """One rule's weights as the kernels take them, and its steps on a state double buffer."""

    def __init__(self, rule: NCARule, shape: Tuple[int, ...], per_sample: bool):
        self.rule, self.per_sample = rule, per_sample
        pad = rule.kernel_size // 2
        _, nx, _, ny, nz = shape
        self.tables = [_reflect_table(n, pad) for n in (nx, ny, nz)]
        conv = rule.perception
        self.weight = np.ascontiguousarray(conv.weight.detach()[:, 0].numpy(), np.float32)
        self.bias = np.ascontiguousarray(conv.bias.detach().numpy(), np.float32)
        w1t = rule.fc1.weight.detach().t().clone()
        w1t[:, : rule.input_channels] = 0  # image channels stay pinned: an exact zero update
        self.w1t = np.ascontiguousarray(w1t.numpy(), np.float32)
        self.fc0 = rule.fc0.weight.detach().double().numpy()
        self.gamma = rule.norm.weight.detach().double().numpy()
        self.beta = rule.norm.bias.detach().double().numpy()
        runs, width = shape[0], 2 * shape[2]
        self.means = np.empty((runs * nx, width), np.float64)
        self.scatters = np.empty((runs * nx, width, width), np.float64)
        # consecutive planes per task (each source plane padded once), yet 8+ tasks per thread
        self.planes_per_task = int(max(1, min(8, runs * nx // (8 * _threads()))))

    def folding(self, state: np.ndarray, parked: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Per run: fc0 with BatchNorm folded in (R, 2C, H) and the shift (R, H), float32;
        the filtered perception is left in ``parked``."""
        k = kernels()
        k.plane_moments(state, parked, *self.tables, self.weight, self.bias, self.planes_per_task, self.means,
                        self.scatters)
        runs, nx = state.shape[0], state.shape[1]
        cells = state.shape[3] * state.shape[4]
        means = self.means.reshape(runs, nx, -1)
        scatters = self.scatters.reshape(runs, nx, means.shape[2], -1)
        if not self.per_sample:  # one pool of statistics over the whole batch
            means = means.reshape(1, runs * nx, -1)
            scatters = scatters.reshape(1, runs * nx, *scatters.shape[2:])
        mean = means.mean(axis=1)
        offsets = means - mean[:, None]  # each plane's mean about the total (equal counts)
        scatter = scatters.sum(axis=1) + cells * np.einsum("rpi,rpj->rij", offsets, offsets)
        cov = scatter / (cells * means.shape[1])
        var = np.einsum("rij,hi,hj->rh", cov, self.fc0, self.fc0)
        scale = self.gamma[None] / np.sqrt(var + BATCHNORM_EPS)
        folded = self.fc0.T[None] * scale[:, None, :]
        shift = self.beta[None] - np.einsum("ri,rih->rh", mean, folded)
        if not self.per_sample:
            folded, shift = np.repeat(folded, runs, 0), np.repeat(shift, runs, 0)
        return np.ascontiguousarray(folded, np.float32), np.ascontiguousarray(shift, np.float32)

    def step(self, state: np.ndarray, out: np.ndarray, keys: np.ndarray, threshold: int) -> None:
        """Write ``state`` advanced by one step to ``out``."""
        folded, shift = self.folding(state, out)
        kernels().plane_update(state, out, folded, shift, self.w1t, keys, threshold)


def _level_keys(model: M3DNCA, plan: LevelPlan, batch: int, level: int) -> List[np.ndarray]:
    """The firing keys of every step of ``level``, exactly as the torch paths draw them."""
    keys = model._keys(plan, batch, level, "cpu")
    return [np.zeros(batch, np.int64) if k is None else k.numpy().astype(np.int64) for k in keys]


def fused_forward(model: M3DNCA, image: torch.Tensor, plan: LevelPlan) -> torch.Tensor:
    """``fastpath.fast_forward(model, image, plan)`` on the fused kernels: the final state
    (B, X, Y, Z, C), channels-last; ``image`` (B, Cin, X, Y, Z) on the CPU."""
    from .fastpath import _upsample, keep_freed_memory

    if kernels() is None:
        raise RuntimeError("the fused engine needs numba")
    if plan.patch_sizes and any(p is not None for p in plan.patch_sizes):
        raise ValueError("the fused engine runs whole volumes; patches are for training")
    _match_threads()
    keep_freed_memory()  # the tasks' plane buffers (100s of KB) would otherwise be mmap'd afresh
    cfg = model.config
    batch, cin = image.shape[0], cfg.input_channels
    source = image[:1] if image.stride(0) == 0 or batch == 1 else image
    threshold = int(plan.fire_rate * 2**32) if plan.fire_rate > 0 else 0
    state: Optional[torch.Tensor] = None
    with torch.no_grad():
        for level, rule in enumerate(model.levels):
            level_image = model._image_at(source, level).permute(0, 2, 3, 4, 1)
            if state is None:
                state = torch.zeros((batch,) + tuple(level_image.shape[1:4]) + (cfg.channels,), dtype=torch.float32)
            else:
                state = _upsample(state, cfg.downscale)
            state[..., :cin] = level_image
            current = state.permute(0, 1, 4, 2, 3).contiguous().numpy()  # (B, X, C, Y, Z)
            spare = np.empty_like(current)
            stepper = _Level(rule, current.shape, plan.per_sample_stats)
            for keys in _level_keys(model, plan, batch, level):
                stepper.step(current, spare, keys, threshold)
                current, spare = spare, current
                if plan.on_step is not None:
                    plan.on_step()
            state = torch.from_numpy(current).permute(0, 1, 3, 4, 2)
    assert state is not None
    return state


def _match_threads() -> None:
    """numba's threads follow torch's (the thread policy in ``threads.py`` sets those)."""
    import numba

    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))


def _threads() -> int:
    import numba

    return numba.get_num_threads()


def main() -> int:
    """Compile (or load) the kernels and say how long it took and where they are cached."""
    started = time.perf_counter()
    module = kernels()
    if module is None:
        print("fused engine unavailable: numba is not installed or cannot compile here")
        return 1
    import numba

    print(f"fused kernels ready in {time.perf_counter() - started:.1f} s (numba {numba.__version__}; "
          f"cache folder {module.plane_update._cache._cache_path})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
