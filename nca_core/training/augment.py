"""Optional training augmentation with TorchIO: an affine and intensity changes.

No flips: the anatomy keeps its orientation. The label follows the affine with
nearest-neighbour interpolation; intensity transforms touch the image only.
"""
from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Callable, Dict, Tuple

from ..errors import NCAError
from ..fields import checked_fields

if TYPE_CHECKING:  # torch is imported by the trainer, not by the settings that name this
    import torch

Pair = Tuple["torch.Tensor", "torch.Tensor"]


@dataclass(frozen=True)
class Augmentation:
    """How strong each random change is (TorchIO's parameters): scaling by ±``scales``, rotation
    by ±``degrees``, gamma exp(±``log_gamma``), a bias field of ``bias_field`` coefficients and
    noise up to ``noise_std``. The defaults are the hippocampus models' small changes."""

    scales: float = 0.1
    degrees: float = 10.0
    log_gamma: float = 0.3
    bias_field: float = 0.3
    noise_std: float = 0.05

    @classmethod
    def from_dict(cls, data: Any) -> "Augmentation":
        """Strengths from a JSON object (missing keys keep their defaults).

        Raises:
            NCAError: an unknown key, a non-number or a negative strength.
        """
        values = cls(**checked_fields(cls, data, "augmentation", NCAError))
        negative = [name for name, value in asdict(values).items() if value < 0]
        if negative:
            raise NCAError(f"augmentation {negative[0]} must be a number >= 0")
        return values

    def to_dict(self) -> Dict[str, float]:
        return asdict(self)


def augmenter(strength: Augmentation = Augmentation()) -> Callable[[torch.Tensor, torch.Tensor, random.Random], Pair]:
    """Random rotation and scaling, gamma, bias field and noise, as strong as ``strength``."""
    import torch
    import torchio as tio

    transform = tio.Compose([
        tio.RandomAffine(scales=strength.scales, degrees=strength.degrees, default_pad_value=0, p=0.5),
        tio.RandomGamma(log_gamma=(-strength.log_gamma, strength.log_gamma), p=0.5),
        tio.RandomBiasField(coefficients=strength.bias_field, p=0.3),
        tio.RandomNoise(std=(0, strength.noise_std), p=0.3),
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
