"""Optional training augmentation with TorchIO: a small affine and intensity changes.

No flips: the anatomy keeps its orientation. The label follows the affine with
nearest-neighbour interpolation; intensity transforms touch the image only.
"""
from __future__ import annotations

import random
from typing import Callable, Tuple

import torch

Pair = Tuple[torch.Tensor, torch.Tensor]


def augmenter() -> Callable[[torch.Tensor, torch.Tensor, random.Random], Pair]:
    """Random rotation (±10°) and scaling (±10%), gamma, bias field and noise."""
    import torchio as tio

    transform = tio.Compose([
        tio.RandomAffine(scales=0.1, degrees=10, default_pad_value=0, p=0.5),
        tio.RandomGamma(log_gamma=(-0.3, 0.3), p=0.5),
        tio.RandomBiasField(coefficients=0.3, p=0.3),
        tio.RandomNoise(std=(0, 0.05), p=0.3),
    ])

    def apply(image: torch.Tensor, target: torch.Tensor, rng: random.Random) -> Pair:
        """``image`` (X, Y, Z) in [0, 1] and its one-hot ``target`` (K, X, Y, Z), transformed alike."""
        torch.manual_seed(rng.getrandbits(31))
        subject = transform(tio.Subject(
            image=tio.ScalarImage(tensor=image[None].float()),
            target=tio.LabelMap(tensor=target),
        ))
        return subject["image"].data[0].clamp(0, 1), subject["target"].data.to(target.dtype)

    return apply
