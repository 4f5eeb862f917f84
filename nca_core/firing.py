"""Counter-based random cell firing.

Whether a cell fires at a step is a pure function of (seed, run, level, step, cell
index), so the result does not depend on batching, chunking or the device.
"""
from __future__ import annotations

import torch

_MASK32 = 0xFFFFFFFF


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash (lowbias32) evaluated in int64 arithmetic."""
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _MASK32
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & _MASK32
    return x ^ (x >> 16)


def stream_key(seed: int, run: int, level: int, step: int) -> int:
    """One 32-bit key per (seed, run, level, step)."""
    key = torch.tensor(seed & _MASK32, dtype=torch.int64)
    for part in (run, level, step):
        key = _mix32(key ^ _mix32(torch.tensor(part & _MASK32, dtype=torch.int64) + 0x9E3779B9))
    return int(key)


def fire_mask(
    keys: torch.Tensor, cell_index: torch.Tensor, fire_rate: float
) -> torch.Tensor:
    """Float mask (B, 1, V): 1 where a cell fires (probability 1 - fire_rate).

    ``keys`` holds one stream key per batch element (int64, shape B);
    ``cell_index`` the linear index of each cell in its level's full grid (int64, V).
    """
    hashed = _mix32(_mix32(cell_index[None, :] ^ keys[:, None]) ^ (cell_index[None, :] >> 32))
    threshold = int(fire_rate * 2**32)
    return (hashed >= threshold).to(torch.float32).unsqueeze(1)
