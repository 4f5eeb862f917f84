"""Model configuration and the named presets."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, List

from ..errors import ModelFileError, NCAError
from ..fields import checked_fields

MAX_STEPS = 1000  # per level: 25 times the presets' longest schedule, still finishes
MAX_LEVELS = 8
MAX_SIZE = 4096  # channels, hidden units and kernel size: far above any M3D-NCA


@dataclass(frozen=True)
class NCAConfig:
    """Architecture of a multi-level M3D-NCA.

    Level 0 is the coarsest (the image downscaled by ``downscale ** (levels - 1)``);
    the last level runs at full resolution. ``kernel_sizes`` and ``steps`` have one
    entry per level, coarsest first.
    """

    channels: int = 16
    hidden: int = 64
    input_channels: int = 1
    output_channels: int = 1
    kernel_sizes: List[int] = field(default_factory=lambda: [7, 3])
    steps: List[int] = field(default_factory=lambda: [20, 40])
    downscale: int = 4
    fire_rate: float = 0.5
    labels: List[str] = field(default_factory=lambda: ["foreground"])

    @property
    def levels(self) -> int:
        return len(self.kernel_sizes)

    def validate(self) -> "NCAConfig":
        """Raise ModelFileError when the numbers cannot form a model."""
        problems = []
        if not 1 <= self.levels <= MAX_LEVELS:
            problems.append(f"kernel_sizes needs 1 to {MAX_LEVELS} entries, one per level")
        if len(self.steps) != self.levels:
            problems.append("steps and kernel_sizes need one entry per level")
        if any(not 0 <= s <= MAX_STEPS for s in self.steps):
            problems.append(f"steps must be between 0 and {MAX_STEPS}")
        if any(not 1 <= k <= MAX_SIZE or k % 2 == 0 for k in self.kernel_sizes):
            problems.append(f"kernel sizes must be odd, 1 to {MAX_SIZE}")
        widths = {"channels": self.channels, "hidden": self.hidden,
                  "input_channels": self.input_channels, "output_channels": self.output_channels}
        problems.extend(f"{name} must be 1 to {MAX_SIZE}" for name, n in widths.items() if not 1 <= n <= MAX_SIZE)
        if self.input_channels + self.output_channels >= self.channels + 1:
            problems.append("channels must exceed input_channels + output_channels")
        if self.downscale < 1:
            problems.append("downscale must be >= 1")
        if not 0.0 <= self.fire_rate < 1.0:
            problems.append("fire_rate must be in [0, 1)")
        if len(self.labels) != self.output_channels:
            problems.append("labels need one name per output channel")
        if problems:
            raise ModelFileError("invalid model config: " + "; ".join(problems))
        return self

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> "NCAConfig":
        """A checked config from JSON data; raises ModelFileError naming the bad field."""
        return cls(**checked_fields(cls, data, "model config")).validate()


PRESETS: Dict[str, NCAConfig] = {
    # The paper's prostate model: 2 levels, downscale 4, k 7 then 3: 12,480 parameters.
    "prostate": NCAConfig(kernel_sizes=[7, 3], steps=[20, 40], downscale=4, labels=["prostate"]),
    # Hippocampus crops are small (about 35x50x35 voxels): downscale 2 keeps the coarse
    # level at about 18x25x18, where 10 steps of a 7^3 kernel (radius 30) see the whole
    # crop; 10 steps of 3^3 at full resolution refine the boundary.
    "hippocampus": NCAConfig(kernel_sizes=[7, 3], steps=[10, 10], downscale=2),
    # Anterior and posterior hippocampus as two classes.
    "hippocampus-2class": NCAConfig(
        kernel_sizes=[7, 3], steps=[10, 10], downscale=2, output_channels=2,
        labels=["anterior hippocampus", "posterior hippocampus"],
    ),
}


def preset(name: str) -> NCAConfig:
    """Return the named preset or raise with the list of known names."""
    try:
        return PRESETS[name]
    except KeyError:
        raise NCAError(
            f"unknown preset {name!r}; known presets: {', '.join(sorted(PRESETS))}"
        ) from None
