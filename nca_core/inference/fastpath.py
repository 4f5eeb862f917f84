"""Fast, memory-lean inference: the update of ``NCARule.delta_reference``, reorganised.

* The state is channels-last, (B, X, Y, Z, C), and is updated in place, slab by slab
  along X, so one step needs the state plus a few slab-sized temporaries.
* Each step makes two passes over the slabs. Pass 1 computes the perception (depthwise
  conv with reflect padding at the true volume borders only) and merges each slab's
  mean and 2C x 2C scatter matrix (Chan et al.), giving the exact global BatchNorm
  statistics per run. Pass 2 recomputes the perception (or reuses pass 1's
  when a level's whole perception fits in ``cache_bytes``), and for the cells that fire only
  (the same counter-based firing as the reference) applies fc0 with BatchNorm folded into
  a per-run scale and shift, ReLU and fc1.
* A slab's new values are written back once the next slab's input has been read, so
  in-place updating never feeds a neighbour a value from the same step.

Runs batch along B (per-run statistics when ``per_sample``); nothing is CPU-specific.
"""
from __future__ import annotations

import ctypes
import sys
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F

from ..network.firing import fire_mask_range
from ..network.model import LevelPlan, M3DNCA
from ..network.rule import BATCHNORM_EPS, NCARule

Moments = Tuple[float, torch.Tensor, torch.Tensor]  # (count, mean (B, 2C), scatter (B, 2C, 2C)), float64


@dataclass(frozen=True)
class FastOptions:
    """Tuning of the fast path; the defaults suit a 2-core CPU."""

    chunk_voxels: int = 1 << 15  # voxels per slab, summed over the batch
    bf16: bool = False  # dense layers in bfloat16 (approximate; fp32 equals the reference)
    min_slab_halos: int = 4  # slabs at least this many halo widths thick (>= 1 for correctness)
    cache_bytes: int = 400 << 20  # keep pass 1's perception for pass 2 when it fits in this


_ALLOCATOR_TUNED = False


def keep_freed_memory() -> None:
    """Let glibc reuse freed blocks up to 32 MiB instead of returning them to the OS.

    Every slab allocates temporaries of a few MiB; by default glibc maps and unmaps
    them, and the page faults on each fresh mapping cost more than the arithmetic
    (measured: 2.7x slower steps). Process-wide, once; a no-op off glibc.
    """
    global _ALLOCATOR_TUNED
    if _ALLOCATOR_TUNED or not sys.platform.startswith("linux"):
        return
    _ALLOCATOR_TUNED = True
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 32 << 20)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 256 << 20)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass


def _reflect(index: torch.Tensor, size: int) -> torch.Tensor:
    """Reflect-padding source index (no edge repeat) for indices in [-size+1, 2*size-2]."""
    index = index.abs()
    return torch.where(index >= size, 2 * (size - 1) - index, index)


class LevelStepper:
    """Applies one rule's steps in place to a channels-last state of fixed shape."""

    def __init__(self, rule: NCARule, shape: torch.Size, options: FastOptions, per_sample: bool):
        batch, self.nx, self.ny, self.nz, _ = shape
        self.rule, self.per_sample, self.batch = rule, per_sample, batch
        self.pad = rule.kernel_size // 2
        device = rule.fc0.weight.device
        plane = self.ny * self.nz
        rows = max(1, options.min_slab_halos * self.pad, options.chunk_voxels // max(1, plane * batch))
        self.slabs = [(x, min(x + rows, self.nx)) for x in range(0, self.nx, rows)]
        if len(self.slabs) > 1 and self.slabs[-1][1] - self.slabs[-1][0] < self.pad:
            self.slabs[-2:] = [(self.slabs[-2][0], self.nx)]
        iy = _reflect(torch.arange(-self.pad, self.ny + self.pad, device=device), self.ny)
        iz = _reflect(torch.arange(-self.pad, self.nz + self.pad, device=device), self.nz)
        self._plane_index = (iy[:, None] * self.nz + iz[None, :]).reshape(-1)
        dtype = torch.bfloat16 if options.bf16 else rule.fc0.weight.dtype
        self.dtype = dtype
        w1t = rule.fc1.weight.t().clone()
        w1t[:, : rule.input_channels] = 0  # image channels stay pinned: exact zero update
        self.w1t = w1t.to(dtype).contiguous()
        width = 2 * shape[-1] * torch.finfo(rule.fc0.weight.dtype).bits // 8
        self.caching = batch * self.nx * plane * width <= options.cache_bytes
        self._buffers: Dict[Tuple[str, int], torch.Tensor] = {}

    # ---- perception of one slab --------------------------------------------------
    def _padded(self, flat: torch.Tensor, x0: int, x1: int) -> torch.Tensor:
        """(B, rows+2p, Y+2p, Z+2p, C) copy of the slab with its halo (reflect at borders)."""
        ix = _reflect(torch.arange(x0 - self.pad, x1 + self.pad, device=flat.device), self.nx)
        index = (ix[:, None] * (self.ny * self.nz) + self._plane_index[None, :]).reshape(-1)
        p = self.pad
        out = self._reusable(("padded", 0), (self.batch, index.numel(), flat.shape[-1]), flat)
        torch.index_select(flat, 1, index, out=out)
        return out.view(self.batch, x1 - x0 + 2 * p, self.ny + 2 * p, self.nz + 2 * p, -1)

    def _perceive(self, state: torch.Tensor, x0: int, x1: int) -> torch.Tensor:
        """(B, n, 2C): own state, then the depthwise-filtered state, for slab x0:x1; kept
        in that slab's buffer for pass 2 when caching."""
        flat = state.view(self.batch, self.nx * self.ny * self.nz, -1)
        padded = self._padded(flat, x0, x1) if self.pad else state[:, x0:x1]
        conv = self.rule.perception
        filtered = F.conv3d(padded.permute(0, 4, 1, 2, 3), conv.weight, conv.bias, groups=conv.groups)
        filtered = filtered.permute(0, 2, 3, 4, 1)
        own = state[:, x0:x1]
        out = self._reusable(("perception", x0 if self.caching else 0), own.shape[:-1] + (2 * own.shape[-1],), own)
        torch.cat([own, filtered], dim=-1, out=out)
        return out.view(self.batch, -1, out.shape[-1])

    def _reusable(self, key: Tuple[str, int], shape: Tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        """A buffer of ``shape`` kept across slabs and steps: fresh allocations page-fault."""
        size = torch.Size(shape).numel()
        buffer = self._buffers.get(key)
        if buffer is None or buffer.numel() < size:
            buffer = self._buffers[key] = torch.empty(size, dtype=like.dtype, device=like.device)
        return buffer[:size].view(shape)

    # ---- BatchNorm statistics ------------------------------------------------------
    def _moments(self, state: torch.Tensor) -> Moments:
        total: Optional[Moments] = None
        for x0, x1 in self.slabs:
            perceived = self._perceive(state, x0, x1)
            mean = perceived.mean(dim=1, keepdim=True)
            centred = self._reusable(("centred", 0), perceived.shape, perceived)
            torch.sub(perceived, mean, out=centred)
            scatter = torch.bmm(centred.transpose(1, 2), centred)
            part = (float(perceived.shape[1]), mean[:, 0].double(), scatter.double())
            total = part if total is None else _merge(total, part)
        assert total is not None
        return total

    def _folding(self, state: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per run: perception mean (B, 2C), fc0 weights with the BN scale folded in
        (B, 2C, H), and the BN shift (B, H), for centred (bf16) or raw (fp32) input."""
        count, mean, scatter = self._moments(state)
        if not self.per_sample:
            count, mean, scatter = _pool(count, mean, scatter)
        cov = scatter / count
        weight = self.rule.fc0.weight.double()
        var = torch.einsum("bij,hi,hj->bh", cov, weight, weight)
        scale = self.rule.norm.weight.double()[None] * torch.rsqrt(var + BATCHNORM_EPS)
        folded = weight.t()[None] * scale[:, None, :]
        shift = self.rule.norm.bias.double()[None].expand_as(scale)
        if self.dtype != torch.bfloat16:  # fold the centring into the shift
            shift = shift - torch.bmm(mean[:, None, :], folded)[:, 0]
        return mean.float(), folded.to(self.dtype), shift.to(self.dtype)

    # ---- one step ------------------------------------------------------------------
    def step(self, state: torch.Tensor, keys: Optional[torch.Tensor], fire_rate: float) -> None:
        """Advance ``state`` (B, X, Y, Z, C), contiguous, by one step in place."""
        mean, folded, shift = self._folding(state)
        pending: Optional[Tuple[int, int, Optional[torch.Tensor], torch.Tensor]] = None
        plane = self.ny * self.nz
        for x0, x1 in self.slabs:
            if self.caching:  # pass 1 left this slab's perception in its buffer
                perceived = self._buffers[("perception", x0)].view(self.batch, -1, 2 * state.shape[-1])
            else:
                perceived = self._perceive(state, x0, x1)
            update = self._delta(perceived, mean, folded, shift, keys, fire_rate, x0 * plane)
            if pending is not None:
                self._apply(state, *pending)
            pending = (x0, x1) + update
        if pending is not None:
            self._apply(state, *pending)

    def _apply(self, state, x0: int, x1: int, fires: Optional[torch.Tensor], delta: torch.Tensor) -> None:
        """Add slab x0:x1's updates (rows ``fires`` of the (B * n) slab cells, or all)."""
        slab = state[:, x0:x1]
        if fires is None:
            slab += delta.view(slab.shape)
            return
        plane, voxels = self.ny * self.nz, self.nx * self.ny * self.nz
        n = (x1 - x0) * plane
        rows = fires + (fires // n) * (voxels - n) + x0 * plane  # (b, i) -> b * V + x0 * plane + i
        state.view(-1, state.shape[-1]).index_add_(0, rows, delta)

    def _delta(self, perceived, mean, folded, shift, keys, fire_rate, start):
        """(rows of the slab that fire, or None for all; their updates): fc0 with BN
        folded, ReLU, fc1."""
        batch, n, width = perceived.shape
        if self.dtype == torch.bfloat16:
            rows = torch.empty((batch, n, width), dtype=self.dtype, device=perceived.device)
            torch.sub(perceived, mean[:, None, :], out=rows)
        else:
            rows = perceived
        rows = rows.view(batch * n, width)
        fires: Optional[torch.Tensor] = None
        counts = [n] * batch
        if fire_rate > 0:
            mask = fire_mask_range(keys, start, n, fire_rate)
            fires = mask.view(-1).nonzero().squeeze(1)
            selected = self._reusable(("selected", 0), (fires.numel(), width), rows)
            rows = torch.index_select(rows, 0, fires, out=selected)
            counts = mask.sum(dim=1).tolist() if batch > 1 else [rows.shape[0]]
        hidden = self._reusable(("hidden", 0), (rows.shape[0], folded.shape[2]), folded)
        offset = 0
        for b, count in enumerate(counts):
            part = slice(offset, offset + count)
            torch.addmm(shift[b], rows[part], folded[b], out=hidden[part])
            offset += count
        delta = torch.mm(hidden.relu_(), self.w1t).to(perceived.dtype)
        return fires, delta


def _merge(a: Moments, b: Moments) -> Moments:
    """Chan's parallel merge of counts, means and scatter matrices."""
    count = a[0] + b[0]
    delta = b[1] - a[1]
    mean = a[1] + delta * (b[0] / count)
    scatter = a[2] + b[2] + delta[:, :, None] * delta[:, None, :] * (a[0] * b[0] / count)
    return count, mean, scatter


def _pool(count: float, mean: torch.Tensor, scatter: torch.Tensor) -> Moments:
    """Statistics over the whole batch, repeated for every element."""
    total: Optional[Moments] = None
    for b in range(mean.shape[0]):
        part = (count, mean[b : b + 1], scatter[b : b + 1])
        total = part if total is None else _merge(total, part)
    assert total is not None
    batch = mean.shape[0]
    return total[0], total[1].expand(batch, -1), total[2].expand(batch, -1, -1)


def _upsample(state: torch.Tensor, factor: int) -> torch.Tensor:
    """Nearest-neighbour upsampling of a channels-last state, one copy."""
    b, x, y, z, c = state.shape
    grown = state[:, :, None, :, None, :, None, :].expand(b, x, factor, y, factor, z, factor, c)
    return grown.reshape(b, x * factor, y * factor, z * factor, c)


def fast_forward(
    model: M3DNCA, image: torch.Tensor, plan: LevelPlan, options: Optional[FastOptions] = None
) -> torch.Tensor:
    """``model(image, plan)[0]`` without patches, as a channels-last (B, X, Y, Z, C) state.

    ``image`` is (B, Cin, X, Y, Z); every batch element may be the same expanded image.
    Runs under ``torch.no_grad``.
    """
    if plan.patch_sizes and any(p is not None for p in plan.patch_sizes):
        raise ValueError("the fast path runs whole volumes; patches are for training")
    options = options or FastOptions()
    keep_freed_memory()
    cfg = model.config
    batch, cin = image.shape[0], cfg.input_channels
    same_image = image.stride(0) == 0 or batch == 1
    source = image[:1] if same_image else image
    with torch.no_grad():
        state: Optional[torch.Tensor] = None
        for level, rule in enumerate(model.levels):
            level_image = model._image_at(source, level).permute(0, 2, 3, 4, 1)
            if state is None:
                state = torch.zeros((batch,) + tuple(level_image.shape[1:4]) + (cfg.channels,),
                                    dtype=image.dtype, device=image.device)
            else:
                state = _upsample(state, cfg.downscale)
            state[..., :cin] = level_image
            stepper = LevelStepper(rule, state.shape, options, plan.per_sample_stats)
            keys: List[Optional[torch.Tensor]] = model._keys(plan, batch, level, image.device)
            for step in range(plan.steps[level]):
                stepper.step(state, keys[step], plan.fire_rate)
                if plan.on_step is not None:
                    plan.on_step()
    assert state is not None
    return state
