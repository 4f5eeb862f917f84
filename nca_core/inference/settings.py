"""One type for the options of a segmentation, with one meaning for every field, parsed from
text (the command line, the Slicer panel, the console, a job file) and checked against a model.

- ``model``: a shipped model name or a model file.
- ``runs``: pseudo-ensemble size, at least 1.
- ``seed``: the first run's seed.
- ``device``: auto | cpu | cuda (the Slicer names CPU and GPU are accepted).
- ``fire_rate``: None = the model's own rate; a number in [0, 1): 0 updates every cell every
  step (no randomness, so the light has no verdict).
- ``steps``: None = the model's own; one count per level, 0..MAX_STEPS ("10,10" as text).
- ``side``: auto | left | right; ``locate``: auto | head | none (see ``pipeline.segment_image``).
- ``engine``: auto | torch | fused: how each NCA step runs (``fused.choose_engine``); auto takes
  the fused CPU kernels where numba is installed and the model fits them, else torch.

Made once by the command line, the Slicer panel or console, the worker (from the job file) or
an API caller, checked where it is made, and handed whole to ``pipeline.segment_image``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional, Sequence, Union

from ..errors import NCAError
from ..modelfile.registry import DEFAULT_MODEL
from ..network.config import MAX_STEPS

DEVICE_CHOICES = ("auto", "cpu", "cuda")  # the engine's device names
PANEL_DEVICE_CHOICES = ("auto", "CPU", "GPU")  # the Slicer panel's names for the same devices
DEVICE_NAMES = {**{name: name for name in DEVICE_CHOICES}, "gpu": "cuda"}  # any case
SIDE_CHOICES = ("auto", "left", "right")
LOCATE_CHOICES = ("auto", "head", "none")
ENGINE_CHOICES = ("auto", "torch", "fused")  # fused.choose_engine says what each means


def check_side(side: str) -> str:
    if side not in SIDE_CHOICES:
        raise NCAError(f"--side must be one of {', '.join(SIDE_CHOICES)}, not {side!r}")
    return side


def check_locate(locate: str) -> str:
    if locate not in LOCATE_CHOICES:
        raise NCAError(f"--locate must be one of {', '.join(LOCATE_CHOICES)}, not {locate!r}")
    return locate


def check_engine(engine: str) -> str:
    if engine not in ENGINE_CHOICES:
        raise NCAError(f"--engine must be one of {', '.join(ENGINE_CHOICES)}, not {engine!r}")
    return engine


def parse_steps(value: Union[None, str, Sequence[int]]) -> Optional[List[int]]:
    """None or "" -> None (the model's steps); "10, 20", "10 20" or [10, 20] -> [10, 20]."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str):
        try:
            steps = [int(part) for part in value.replace(",", " ").split()]
        except ValueError:
            raise NCAError(f"--steps are whole numbers separated by commas, e.g. 10,10; got {value!r}") from None
    else:
        steps = [int(part) for part in value]
    if not steps or any(not 0 <= step <= MAX_STEPS for step in steps):
        raise NCAError(f"--steps must be between 0 and {MAX_STEPS} per level")
    return steps


def parse_device(value: Optional[str]) -> str:
    try:
        return DEVICE_NAMES[(value or "auto").strip().lower()]
    except KeyError:
        raise NCAError(f"unknown device {value!r}; choose auto, cpu (CPU) or cuda (GPU)") from None


@dataclass
class SegmentSettings:
    model: str = DEFAULT_MODEL
    runs: int = 10
    seed: int = 0
    device: str = "auto"
    fire_rate: Optional[float] = None
    steps: Optional[List[int]] = None
    side: str = "auto"
    locate: str = "auto"
    engine: str = "auto"

    def __post_init__(self) -> None:
        self.validate()  # checked where made: every holder of a SegmentSettings holds valid settings

    @classmethod
    def parse(cls, **values: Any) -> "SegmentSettings":
        """Settings from text or numbers (None keeps the default); checked, not yet against a model."""
        return cls(**{key: value for key, value in values.items() if value is not None})

    def validate(self) -> "SegmentSettings":
        """Numbers and names read and checked (text accepted); raises NCAError."""
        try:
            self.runs, self.seed = int(self.runs), int(self.seed)
            self.fire_rate = None if self.fire_rate is None else float(self.fire_rate)
        except (TypeError, ValueError):
            raise NCAError("--runs and --seed must be whole numbers, --fire-rate a number") from None
        if self.runs < 1:
            raise NCAError("--runs must be at least 1")
        if self.fire_rate is not None and not 0.0 <= self.fire_rate < 1.0:
            raise NCAError("--fire-rate must be in [0, 1)")
        self.device = parse_device(self.device)
        self.steps = parse_steps(self.steps)
        check_side(self.side)
        check_locate(self.locate)
        check_engine(self.engine)
        return self

    def check(self, levels: int) -> "SegmentSettings":
        """Against a model with ``levels`` levels (``ModelHeader.levels`` or ``NCAConfig.levels``)."""
        if self.steps is not None and levels and len(self.steps) != levels:
            raise NCAError(f"--steps needs {levels} values, one per level")
        return self

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "SegmentSettings":
        return cls.parse(**{key: data.get(key) for key in cls.__dataclass_fields__})
