"""Training settings, saved beside every run."""
from __future__ import annotations

import dataclasses
import json
import reprlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from ..network.config import NCAConfig, preset
from ..space.prior import input_channels
from ..errors import NCAError
from ..fields import checked_fields, json_object
from ..space.preprocessing import Preprocessing
from .augment import Augmentation


@dataclass
class TrainSettings:
    """How a model is trained. ``patch_sizes`` has one entry per level: None trains
    that level on the whole (downscaled) volume, [x, y, z] on a random patch.
    ``ema_decay`` > 0 validates and saves an exponential moving average of the weights
    (Polyak averaging) instead of the last weights; 0 turns it off. Each step trains on
    ``cases_per_step`` cases, each repeated ``batch_duplication`` times; cases of
    different sizes are zero-padded, and the padding is left out of the normalisation
    statistics and the loss. ``preprocessing`` (the model file's section, e.g. a field-of-view
    grid) is what the model is trained with; None: the training images' common spacing and
    orientation. ``foreground_patches`` is the share of patches placed to contain a random
    foreground voxel (nnU-Net's oversampling); the others lie anywhere. ``augmentation``
    sets the strengths of ``augment``'s changes (``Augmentation``'s fields; missing: defaults).
    ``location_prior`` fits where the labels lie on a field-of-view grid and gives it to the model
    as a second input channel (``space.prior``; the model's ``input_channels`` must then be 2);
    ``prior_jitter`` > 0 moves and resizes it at random in every training step
    (``space.prior.jittered_prior``), the model file keeping the fitted one.
    ``coarse_supervision`` > 0 adds, with that weight, the loss of every coarser level's output
    against the label averaged onto its cells, so the coarse level learns the whole structure
    rather than only what the finest level's patch holds.
    ``standardise_intensity`` fits histogram landmarks to the training images
    (``space.standardise``) and stores them in the model file, so every image, in training and
    inference, is standardised onto them before the percentile rescale."""

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
    preprocessing: Optional[Dict[str, Any]] = None
    foreground_patches: float = 0.0
    augmentation: Dict[str, float] = field(default_factory=dict)
    location_prior: bool = False
    prior_jitter: float = 0.0
    coarse_supervision: float = 0.0
    standardise_intensity: bool = False

    @property
    def config(self) -> NCAConfig:
        return NCAConfig.from_dict(self.model)

    @property
    def augmentation_strength(self) -> Augmentation:
        """How strong ``augment``'s changes are: ``augmentation``'s values over the defaults."""
        return Augmentation.from_dict(self.augmentation)

    @property
    def given_preprocessing(self) -> Optional[Preprocessing]:
        """The preprocessing these settings fix, or None (the trainer derives it from the data)."""
        return None if self.preprocessing is None else Preprocessing.from_dict(self.preprocessing)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> "TrainSettings":
        """Settings from a dict; NCAError names the first unknown, mistyped or out-of-range field."""
        return cls(**checked_fields(cls, data, "training settings", NCAError)).checked()

    def checked(self) -> "TrainSettings":
        """These settings, or NCAError naming the first one out of range."""
        for name, (is_valid, expected) in RULES.items():
            value = getattr(self, name)
            if not is_valid(value):
                raise NCAError(f"{name} must be {expected} (found {reprlib.repr(value)})")
        levels = self.config.levels
        if len(self.patch_sizes) != levels:
            raise NCAError(f"patch_sizes needs one entry per level ({levels})")
        given = self.given_preprocessing  # raises naming the bad preprocessing field
        if given is not None and given.location_prior is not None:
            raise NCAError("preprocessing.location_prior is fitted to the training labels; set \"location_prior\": "
                           "true instead of giving one")
        if given is not None and given.intensity_landmarks is not None:
            raise NCAError("preprocessing.intensity_landmarks are fitted to the training images; set "
                           "\"standardise_intensity\": true instead of giving them")
        if self.prior_jitter and not self.location_prior:
            raise NCAError("prior_jitter needs \"location_prior\": true (there is no prior to move)")
        inputs = input_channels(self.location_prior)
        if self.config.input_channels != inputs:
            raise NCAError(f"model.input_channels must be {inputs} "
                           f"{'with location_prior (the image and the prior)' if inputs == 2 else '(the image)'}, "
                           f"found {self.config.input_channels}")
        self.augmentation_strength  # noqa: B018 - raises naming the bad augmentation field
        return self

    @classmethod
    def from_file(cls, path: Path, base: Optional["TrainSettings"] = None) -> "TrainSettings":
        """Settings from a JSON file; with ``base``, the file's keys laid over ``base``'s settings.

        Raises:
            NCAError: naming the file, when it cannot be read or holds a wrong setting.
        """
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as error:
            raise NCAError(f"{path}: cannot read training settings ({error})") from None
        try:
            return cls.from_dict(data if base is None else {**base.to_dict(), **json_object(data, "training settings",
                                                                                            NCAError)})
        except NCAError as error:
            raise NCAError(f"{path}: {error}") from None

    @classmethod
    def for_preset(cls, name: str, **overrides: Any) -> "TrainSettings":
        config = preset(name)
        patches: List[Optional[List[int]]] = [None] + [[24, 24, 24]] * (config.levels - 1)
        if name == "prostate":
            # 32x32x16 patches: 1.06 s per step on 2 CPU threads against 3.9 s for 64x64x16.
            patches = [None] + [[32, 32, 16]] * (config.levels - 1)
            overrides.setdefault("preprocessing", PROSTATE_GRID.to_dict())
            # A random 32x32x16 patch of 128x128x32 mostly misses the gland (about 3% of the voxels).
            overrides.setdefault("foreground_patches", 0.5)
            # The gland lies mid-field, which a rule applied alike at every voxel cannot see: with the
            # prior the unseen hospital's Dice rose from 0.52 to 0.73 (docs/models/prostate-record.md).
            overrides.setdefault("location_prior", True)
            # The loss on the patch alone leaves the coarse level the gland's size to guess; with the
            # coarse level's whole output supervised too, held-out Dice rose from 0.752 to 0.767.
            overrides.setdefault("coarse_supervision", 1.0)
        if name.endswith("2class"):
            overrides.setdefault("merge_labels", False)
        model = dict(config.to_dict(), input_channels=input_channels(overrides.get("location_prior", False)))
        return cls.from_dict({"model": model, "patch_sizes": patches, **overrides})


# PROMISE12's teaching copy: the central 80% of each slice's field of view at 128x128, 32 slices,
# axes towards the patient's left, posterior, superior (its README); its spacing was lost.
PROSTATE_GRID = Preprocessing(grid_shape=[128, 128, 32], fov_fraction=[0.8, 0.8, 1.0], orientation="LPS")


# The types are checked against the fields first (``checked_fields``); these are the ranges.
def _at_least_one(value: Any) -> bool:
    return value >= 1


def _not_negative(value: Any) -> bool:
    return value >= 0


def _positive(value: Any) -> bool:
    return value > 0


def _below_one(value: Any) -> bool:
    """A number in [0, 1)."""
    return 0 <= value < 1


def _share(value: Any) -> bool:
    """A number in [0, 1]."""
    return 0 <= value <= 1


def _decay_rate(value: Any) -> bool:
    """A number in (0, 1]."""
    return 0 < value <= 1


def _betas(value: Any) -> bool:
    return len(value) == 2 and all(map(_below_one, value))


def _patch_sizes(value: Any) -> bool:
    return all(patch is None or (len(patch) == 3 and all(map(_at_least_one, patch))) for patch in value)


def _no_limit_or_positive(value: Any) -> bool:
    return value is None or value > 0


RULES: Dict[str, Tuple[Callable[[Any], bool], str]] = {
    "iterations": (_at_least_one, "a whole number >= 1"),
    "batch_duplication": (_at_least_one, "a whole number >= 1"),
    "cases_per_step": (_at_least_one, "a whole number >= 1"),
    "learning_rate": (_positive, "a number > 0"),
    "betas": (_betas, "two numbers in [0, 1), e.g. [0.5, 0.5]"),
    "lr_gamma": (_decay_rate, "a number in (0, 1]"),
    "patch_sizes": (_patch_sizes, "a list with, per level, null (whole volume) or [x, y, z] (whole numbers >= 1)"),
    "validation_fraction": (_below_one, "a number in [0, 1)"),
    "seed": (_not_negative, "a whole number >= 0"),
    "validate_every": (_at_least_one, "a whole number >= 1"),
    "validation_runs": (_at_least_one, "a whole number >= 1"),
    "checkpoint_every": (_at_least_one, "a whole number >= 1"),
    "ema_decay": (_below_one, "a number in [0, 1)"),
    "time_limit_minutes": (_no_limit_or_positive, "null (no limit) or a number > 0"),
    "foreground_patches": (_share, "a number in [0, 1]"),
    "prior_jitter": (_not_negative, "a number >= 0"),
    "coarse_supervision": (_not_negative, "a number >= 0"),
}
