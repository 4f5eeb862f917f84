"""Image artifacts (TorchIO) that spread the NQM range for calibration, as in the paper."""
from __future__ import annotations

from typing import Callable, Dict

import numpy as np
import torch

from ..space.preprocessing import rescale_percentiles

# The paper's settings: noise std 0.5, spike intensity 5, ghosting 6 ghosts of intensity 2.5,
# applied to the image normalised to [0, 1].
ARTIFACTS = ("noise", "spike", "ghosting")


def _transforms() -> Dict[str, Callable]:
    import torchio as tio

    return {
        "noise": tio.RandomNoise(mean=0.0, std=(0.5, 0.5)),
        "spike": tio.RandomSpike(num_spikes=1, intensity=(5.0, 5.0)),
        "ghosting": tio.RandomGhosting(num_ghosts=(6, 6), intensity=(2.5, 2.5)),
    }


def degrade(image: np.ndarray, artifact: str, seed: int) -> np.ndarray:
    """The image (X, Y, Z) with one artifact; reproducible for a seed."""
    if artifact not in ARTIFACTS:
        raise ValueError(f"unknown artifact {artifact!r}")
    torch.manual_seed(seed)
    normalised = torch.from_numpy(rescale_percentiles(image, [0.5, 99.5]))[None]
    return _transforms()[artifact](normalised)[0].numpy().astype(np.float32)
