"""Training settings, saved beside every run."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from ..config import NCAConfig, preset
from ..errors import NCAError
from ..fields import unknown_fields


@dataclass
class TrainSettings:
    """How a model is trained. ``patch_sizes`` has one entry per level: None trains
    that level on the whole (downscaled) volume, [x, y, z] on a random patch.
    ``ema_decay`` > 0 validates and saves an exponential moving average of the weights
    (Polyak averaging) instead of the last weights; 0 turns it off. Each step trains on
    ``cases_per_step`` cases, each repeated ``batch_duplication`` times; cases of
    different sizes are zero-padded, and the padding is left out of the normalisation
    statistics and the loss."""

    model: Dict[str, Any] = field(default_factory=lambda: preset("hippocampus").to_dict())
    iterations: int = 4000
    batch_duplication: int = 2
    cases_per_step: int = 1
    learning_rate: float = 16e-4
    betas: List[float] = field(default_factory=lambda: [0.5, 0.5])
    lr_gamma: float = 0.9995
    patch_sizes: List[Optional[List[int]]] = field(default_factory=lambda: [None, [24, 24, 24]])
    merge_labels: bool = True
    validation_fraction: float = 0.2
    seed: int = 0
    validate_every: int = 200
    validation_runs: int = 2
    checkpoint_every: int = 50
    augment: bool = False
    ema_decay: float = 0.0
    time_limit_minutes: Optional[float] = None

    @property
    def config(self) -> NCAConfig:
        return NCAConfig.from_dict(self.model)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "TrainSettings":
        unknown = unknown_fields(cls, data)
        if unknown:
            raise NCAError(f"unknown training settings: {unknown}")
        settings = cls(**data)
        if len(settings.patch_sizes) != settings.config.levels:
            raise NCAError("patch_sizes needs one entry per level")
        if settings.cases_per_step < 1 or settings.batch_duplication < 1:
            raise NCAError("cases_per_step and batch_duplication must be at least 1")
        if not 0.0 <= settings.ema_decay < 1.0:
            raise NCAError("ema_decay must be in [0, 1)")
        return settings

    @classmethod
    def from_file(cls, path: Path) -> "TrainSettings":
        try:
            return cls.from_dict(json.loads(Path(path).read_text()))
        except (OSError, ValueError) as error:
            raise NCAError(f"{path}: cannot read training settings ({error})") from None

    @classmethod
    def for_preset(cls, name: str, **overrides: Any) -> "TrainSettings":
        config = preset(name)
        patches: List[Optional[List[int]]] = [None] + [[24, 24, 24]] * (config.levels - 1)
        if name == "prostate":
            patches = [None] + [[64, 64, 16]] * (config.levels - 1)
        if name.endswith("2class"):
            overrides.setdefault("merge_labels", False)
        return cls.from_dict({"model": config.to_dict(), "patch_sizes": patches, **overrides})
