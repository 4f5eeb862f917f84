"""Model configuration and the named presets."""
from __future__ import annotations

import dataclasses
import math
import numbers
import reprlib
from dataclasses import dataclass, field
from typing import Any, Dict, List

from .errors import ModelFileError, NCAError


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
        """Raise ModelFileError when the values cannot form a model."""
        problems = self._type_problems() or self._range_problems()
        if problems:
            raise ModelFileError("invalid model config: " + "; ".join(problems))
        return self

    def _type_problems(self) -> List[str]:
        problems = [f"{name} must be a whole number (found {reprlib.repr(getattr(self, name))})"
                    for name in WHOLE_NUMBER_FIELDS if not is_whole_number(getattr(self, name))]
        for name in ("kernel_sizes", "steps"):
            value = getattr(self, name)
            if not (isinstance(value, (list, tuple)) and value and all(map(is_whole_number, value))):
                problems.append(f"{name} must be a list of whole numbers, one per level (found {reprlib.repr(value)})")
        if not is_real_number(self.fire_rate):
            problems.append(f"fire_rate must be a number (found {reprlib.repr(self.fire_rate)})")
        if not (isinstance(self.labels, (list, tuple)) and all(isinstance(label, str) for label in self.labels)):
            problems.append(f"labels must be a list of names (found {reprlib.repr(self.labels)})")
        return problems

    def _range_problems(self) -> List[str]:
        problems = []
        if len(self.steps) != self.levels:
            problems.append("steps and kernel_sizes need one entry per level")
        if any(k < 1 or k % 2 == 0 for k in self.kernel_sizes):
            problems.append("kernel sizes must be odd and positive")
        if any(step < 0 for step in self.steps):
            problems.append("steps must not be negative")
        if min(self.hidden, self.input_channels, self.output_channels) < 1:
            problems.append("hidden, input_channels and output_channels must be at least 1")
        if self.input_channels + self.output_channels >= self.channels + 1:
            problems.append("channels must exceed input_channels + output_channels")
        if self.downscale < 1:
            problems.append("downscale must be >= 1")
        if not 0.0 <= self.fire_rate < 1.0:
            problems.append("fire_rate must be in [0, 1)")
        if len(self.labels) != self.output_channels:
            problems.append("labels need one name per output channel")
        return problems

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "NCAConfig":
        if not isinstance(data, dict):
            raise ModelFileError(f"invalid model config: must be a JSON object (found {reprlib.repr(data)})")
        unknown = unknown_fields(cls, data)
        if unknown:
            raise ModelFileError(f"unknown config keys: {unknown}")
        return cls(**data).validate()


WHOLE_NUMBER_FIELDS = ("channels", "hidden", "input_channels", "output_channels", "downscale")


def is_whole_number(value: Any) -> bool:
    """An int (numpy's too), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def is_real_number(value: Any) -> bool:
    """A finite int or float (numpy's too), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def unknown_fields(cls: type, data: Dict[str, Any]) -> List[str]:
    """Keys of ``data`` that are not fields of the dataclass ``cls``."""
    return sorted(set(data) - {f.name for f in dataclasses.fields(cls)})


PRESETS: Dict[str, NCAConfig] = {
    # The paper's prostate model: 2 levels, downscale 4, k 7 then 3: 12,480 parameters.
    "prostate": NCAConfig(kernel_sizes=[7, 3], steps=[20, 40], downscale=4),
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
