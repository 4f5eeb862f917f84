"""Optional training augmentation with TorchIO (intensity only; anatomy keeps its orientation)."""
from __future__ import annotations

import random
from typing import Callable, Tuple

import torch

Pair = Tuple[torch.Tensor, torch.Tensor]


def augmenter() -> Callable[[torch.Tensor, torch.Tensor, random.Random], Pair]:
    """Random gamma, bias field and noise on the normalised image; the label is untouched."""
    import torchio as tio

    transform = tio.Compose([
        tio.RandomGamma(log_gamma=(-0.3, 0.3), p=0.5),
        tio.RandomBiasField(coefficients=0.3, p=0.3),
        tio.RandomNoise(std=(0, 0.05), p=0.3),
    ])

    def apply(image: torch.Tensor, target: torch.Tensor, rng: random.Random) -> Pair:
        torch.manual_seed(rng.getrandbits(31))
        augmented = transform(image[None].float())[0]
        return augmented.clamp(0, 1), target

    return apply
