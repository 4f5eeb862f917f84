"""Choosing the torch device."""
from __future__ import annotations

import torch

from ..errors import NCAError
from .settings import DEVICE_CHOICES


def pick_device(device: str) -> str:
    """``auto`` means CUDA when PyTorch sees a GPU, else the CPU."""
    if device not in DEVICE_CHOICES:
        raise NCAError(f"unknown device {device!r}; choose one of {', '.join(DEVICE_CHOICES)}")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise NCAError("--device cuda was asked for, but PyTorch sees no CUDA device")
    return device
