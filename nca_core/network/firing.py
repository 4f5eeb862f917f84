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


_INT32_MIN = -(2**31)
_MUL1 = 0x7FEB352D
_MUL2 = 0x846CA68B - 2**32  # the same bits as a signed 32-bit integer


def _mix32_int32(x: torch.Tensor) -> torch.Tensor:
    """``_mix32`` on int32 bit patterns (wrapping multiply, logical shifts), in place."""
    x ^= (x >> 16) & 0xFFFF
    x *= _MUL1
    x ^= (x >> 15) & 0x1FFFF
    x *= _MUL2
    x ^= (x >> 16) & 0xFFFF
    return x


def fire_mask_range(keys: torch.Tensor, start: int, count: int, fire_rate: float) -> torch.Tensor:
    """Bool mask (B, count) equal to ``fire_mask`` for cell indices ``start .. start+count-1``.

    Works on int32 bit patterns, several times cheaper than the int64 form; needs
    indices below 2**31 (the high word that ``fire_mask`` mixes in is then zero).
    """
    if start < 0 or start + count > 2**31:
        raise ValueError("fire_mask_range needs cell indices in [0, 2**31)")
    signed_keys = torch.where(keys >= 2**31, keys - 2**32, keys).to(torch.int32)
    index = torch.arange(start, start + count, dtype=torch.int32, device=keys.device)
    hashed = _mix32_int32(_mix32_int32(index[None, :] ^ signed_keys[:, None]))
    threshold = int(fire_rate * 2**32) + _INT32_MIN  # unsigned compare via flipped sign bit
    return (hashed ^ _INT32_MIN) >= threshold
