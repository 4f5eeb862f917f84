"""Dice + binary cross-entropy, as the paper."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

SMOOTH = 1.0


def dice_bce_loss(logits: torch.Tensor, target: torch.Tensor, valid: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Soft Dice (per sample and class) plus BCE; tensors (B, K, X, Y, Z).

    ``valid`` (B, 1, X, Y, Z), 1 inside each case and 0 in its padding, leaves the
    padding out of both terms."""
    probability = torch.sigmoid(logits)
    cross_entropy = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    if valid is not None:
        probability = probability * valid
        cross_entropy = (cross_entropy * valid).sum() / (valid.sum() * logits.shape[1])
    else:
        cross_entropy = cross_entropy.mean()
    dims = (2, 3, 4)
    overlap = (probability * target).sum(dims)
    total = probability.sum(dims) + target.sum(dims)
    soft_dice = (2 * overlap + SMOOTH) / (total + SMOOTH)
    return (1 - soft_dice).mean() + cross_entropy
