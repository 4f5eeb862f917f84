"""Dice + binary cross-entropy, as the paper."""
from __future__ import annotations

import torch
import torch.nn.functional as F

SMOOTH = 1.0


def dice_bce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Soft Dice (per sample and class) plus BCE; tensors (B, K, X, Y, Z)."""
    probability = torch.sigmoid(logits)
    dims = (2, 3, 4)
    overlap = (probability * target).sum(dims)
    total = probability.sum(dims) + target.sum(dims)
    soft_dice = (2 * overlap + SMOOTH) / (total + SMOOTH)
    return (1 - soft_dice).mean() + F.binary_cross_entropy_with_logits(logits, target)
