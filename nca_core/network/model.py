"""Multi-level M3D-NCA: coarse level on the downscaled image, finer levels after upsampling."""
from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .config import NCAConfig
from .firing import stream_key
from .rule import NCARule


@dataclass
class LevelPlan:
    """How one forward pass runs: steps per level, firing, randomness."""

    steps: Sequence[int]
    fire_rate: float
    seed: int = 0
    runs: Optional[Sequence[int]] = None  # one run id per batch element
    per_sample_stats: bool = True
    patch_sizes: Optional[Sequence[Optional[Sequence[int]]]] = None  # training only
    rng: Optional[random.Random] = None  # patch positions
    on_step: Optional[Callable[[], None]] = None  # called after every step (progress, cancel)
    reference: bool = False  # the plain formulation (NCARule.delta_reference), for comparisons
    # training only: per batch element, the full-resolution size of its case before
    # zero padding; each element's normalisation statistics then skip its padding
    extents: Optional[Sequence[Sequence[int]]] = None
    # training only: per batch element, a full-resolution voxel (e.g. of the foreground) that
    # every patch must contain, or None for a patch anywhere
    focus: Optional[Sequence[Optional[Sequence[int]]]] = None
    # training only: a list that collects every coarser level's final state and origins (in
    # that level's cells) before upsampling, for a loss on it; None collects nothing
    coarse_states: Optional[List[Tuple[torch.Tensor, torch.Tensor]]] = None


class M3DNCA(nn.Module):
    """A stack of NCA rules, coarsest first."""

    def __init__(self, config: NCAConfig):
        super().__init__()
        self.config = config.validate()
        self.levels = nn.ModuleList(
            NCARule(config.channels, config.hidden, k, config.input_channels)
            for k in config.kernel_sizes
        )

    @property
    def multiple(self) -> int:
        """Spatial sizes must be divisible by this (total downscaling)."""
        return self.config.downscale ** (self.config.levels - 1)

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def output_slice(self) -> slice:
        start = self.config.input_channels
        return slice(start, start + self.config.output_channels)

    def level_factor(self, level: int) -> int:
        """How many full-resolution voxels one cell of ``level`` spans per axis."""
        return self.config.downscale ** (self.config.levels - 1 - level)

    def _image_at(self, image: torch.Tensor, level: int) -> torch.Tensor:
        factor = self.level_factor(level)
        return F.max_pool3d(image, factor) if factor > 1 else image

    def _keys(self, plan: LevelPlan, batch: int, level: int, device) -> List[Optional[torch.Tensor]]:
        if plan.fire_rate <= 0:
            return [None] * plan.steps[level]
        runs = list(plan.runs) if plan.runs is not None else list(range(batch))
        return [
            torch.tensor([stream_key(plan.seed, r, level, s) for r in runs], device=device)
            for s in range(plan.steps[level])
        ]

    def forward(self, image: torch.Tensor, plan: LevelPlan) -> Tuple[torch.Tensor, torch.Tensor]:
        """Run all levels on ``image`` (B, Cin, X, Y, Z), sizes divisible by ``multiple``.

        Returns the final state (B, C, ...) and, per batch element, the full-resolution
        origin (B, 3) of the region it covers: zeros unless ``plan.patch_sizes`` asks
        for random patches.
        """
        cfg = self.config
        batch = image.shape[0]
        coarse = self._image_at(image, 0)
        state = torch.zeros(
            (batch, cfg.channels) + tuple(coarse.shape[2:]), dtype=image.dtype, device=image.device
        )
        state[:, : cfg.input_channels] = coarse
        origins = torch.zeros((batch, 3), dtype=torch.long)
        for level, rule in enumerate(self.levels):
            if level > 0:
                if plan.coarse_states is not None:
                    plan.coarse_states.append((state, origins))
                state = F.interpolate(state, scale_factor=cfg.downscale, mode="nearest")
                origins = origins * cfg.downscale
                state, origins = self._crop_patches(state, origins, level, plan)
                level_image = self._image_at(image, level)
                state = torch.cat(
                    [self._gather(level_image, origins, state.shape[2:]), state[:, cfg.input_channels :]],
                    dim=1,
                )
            keys = self._keys(plan, batch, level, image.device)
            valid = None
            if plan.extents is not None:
                valid = self.valid_mask(plan.extents, origins, state.shape[2:], level).to(state).flatten(2)
            for step in range(plan.steps[level]):
                state = rule.step(state, keys[step], plan.fire_rate, plan.per_sample_stats,
                                  reference=plan.reference, valid=valid)
                if plan.on_step is not None:
                    plan.on_step()
        return state, origins

    def valid_mask(self, extents: Sequence[Sequence[int]], origins: torch.Tensor, shape,
                   level: int) -> torch.Tensor:
        """(B, 1, *shape) bool: true where a cell of ``level``, in the region at ``origins``,
        lies inside its case's full-resolution ``extents`` (a coarse cell if any of its voxels does)."""
        masks = []
        for extent, origin in zip(extents, origins.tolist()):
            axes = [(torch.arange(size) + start) < cells
                    for size, start, cells in zip(shape, origin, self._cells(extent, level))]
            masks.append(axes[0][:, None, None] & axes[1][None, :, None] & axes[2][None, None, :])
        return torch.stack(masks)[:, None]

    def _cells(self, extent: Sequence[int], level: int) -> List[int]:
        """Cells of ``level`` that a full-resolution ``extent`` covers, per axis."""
        factor = self.level_factor(level)
        return [-(-int(size) // factor) for size in extent]

    def _crop_patches(self, state, origins, level, plan: LevelPlan):
        if not plan.patch_sizes or plan.patch_sizes[level] is None:
            return state, origins
        rng = plan.rng or random.Random(plan.seed)
        patch = [min(p, s) for p, s in zip(plan.patch_sizes[level], state.shape[2:])]
        crops, new_origins = [], []
        for b in range(state.shape[0]):
            room = list(state.shape[2:])
            if plan.extents is not None:  # keep the patch on the case, not its padding
                room = [min(s, max(p, cells - o)) for s, p, cells, o in
                        zip(room, patch, self._cells(plan.extents[b], level), origins[b].tolist())]
            ranges = self._offset_ranges(room, patch, origins[b], level, plan, b)
            offset = [rng.randint(low, high) for low, high in ranges]
            crops.append(state[b, :, offset[0] : offset[0] + patch[0],
                               offset[1] : offset[1] + patch[1], offset[2] : offset[2] + patch[2]])
            new_origins.append([o + d for o, d in zip(origins[b].tolist(), offset)])
        return torch.stack(crops), torch.tensor(new_origins, dtype=torch.long)

    def _offset_ranges(self, room, patch, origin, level: int, plan: LevelPlan, b: int):
        """Per axis, the (lowest, highest) patch offset: anywhere in ``room``, or, with a focus
        voxel for element ``b``, only where the patch contains it."""
        anywhere = [(0, r - p) for r, p in zip(room, patch)]
        if plan.focus is None or plan.focus[b] is None:
            return anywhere
        factor = self.level_factor(level)
        cells = [f // factor - o for f, o in zip(plan.focus[b], origin.tolist())]  # in this patch's cells
        return [(min(max(low, c - p + 1), high), max(min(high, c), low))
                for (low, high), c, p in zip(anywhere, cells, patch)]

    @staticmethod
    def _gather(volume: torch.Tensor, origins: torch.Tensor, size) -> torch.Tensor:
        """Per batch element, the box at ``origins`` of ``size`` from ``volume``."""
        if int(origins.abs().sum()) == 0 and tuple(volume.shape[2:]) == tuple(size):
            return volume
        return torch.stack([
            volume[b, :, o[0] : o[0] + size[0], o[1] : o[1] + size[1], o[2] : o[2] + size[2]]
            for b, o in enumerate(origins.tolist())
        ])
