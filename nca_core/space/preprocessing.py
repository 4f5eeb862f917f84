"""Intensity normalisation and padding, stored in the model file and shared by
training and inference."""
from __future__ import annotations

import dataclasses
import math
import reprlib
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ..errors import InputImageError, ModelFileError
from ..fields import checked_fields
from .prior import SHIFTS, SIZES, input_channels, location_prior_map, location_prior_problem
from .standardise import landmarks_problem, standardise


# Left out of the file when unset, so files without them stay readable by versions before them.
OPTIONAL_KEYS = ("grid_shape", "fov_fraction", "location_prior", "intensity_landmarks")
MAX_GRID_VOXELS = 1 << 27  # 512^3: far above any field-of-view grid a model is trained on


@dataclass(frozen=True)
class Preprocessing:
    """Percentile clip and rescale to [0, 1] (TorchIO's ``RescaleIntensity`` maths).

    ``pad_to`` reproduces the reference code's fixed-size zero padding (imported
    models): normalise, zero-pad to ``pad_to``, normalise again. Without it the
    normalised volume is zero-padded only up to a multiple of the model's downscaling.

    ``spacing`` (mm per axis) and ``orientation`` (ITK code, e.g. ``RAS``) are the grid the
    model was trained on: inputs are brought to it first (``grid.ModelGrid``). None keeps
    the input's own grid (models from before they were recorded, imported models).

    ``side`` (``left`` or ``right``) is the body side that every training crop shows; crops of
    the other side are mirrored left-right on the model's grid. None: unknown, never mirrored.

    ``grid_shape`` (voxels) makes the grid relative to the field of view instead of a spacing:
    the central ``fov_fraction`` of each axis (e.g. 0.8 = 10% cut from either end) is resampled
    to ``grid_shape``, in ``orientation``. For data whose spacing was lost (PROMISE12's teaching
    copy); such a model maps the whole scan and is never routed through head localisation.

    ``location_prior`` (a field-of-view grid only; ``prior.location_prior_problem``) is where the
    structure usually lies on that grid; the model then reads it as a second input channel.

    ``intensity_landmarks`` (``standardise.landmarks_problem``) standardise the image's histogram
    before the percentile rescale, so scans from other scanners look like the training scans'.
    """

    percentiles: List[float] = field(default_factory=lambda: [0.5, 99.5])
    pad_to: Optional[List[int]] = None
    spacing: Optional[List[float]] = None
    orientation: Optional[str] = None
    side: Optional[str] = None
    grid_shape: Optional[List[int]] = None
    fov_fraction: Optional[List[float]] = None
    location_prior: Optional[Dict[str, Any]] = None
    intensity_landmarks: Optional[List[float]] = None

    @property
    def relative_to_field_of_view(self) -> bool:
        """Whether the model's grid is the scan's field of view (``grid_shape``), not a spacing."""
        return self.grid_shape is not None

    @property
    def input_channels(self) -> int:
        """How many channels the model reads: the image, and the location prior when there is one."""
        return input_channels(self.location_prior is not None)

    def to_dict(self) -> Dict[str, Any]:
        """The fields as JSON data; the ``OPTIONAL_KEYS`` only when set."""
        data = dataclasses.asdict(self)
        return {key: value for key, value in data.items() if value is not None or key not in OPTIONAL_KEYS}

    def validate(self) -> "Preprocessing":
        """Raise ModelFileError when the percentiles or padding cannot be used."""
        if len(self.percentiles) != 2 or not 0 <= self.percentiles[0] < self.percentiles[1] <= 100:
            raise ModelFileError(f"invalid preprocessing: percentiles must be [low, high] with "
                                 f"0 <= low < high <= 100, found {reprlib.repr(self.percentiles)}")
        if self.pad_to is not None and (len(self.pad_to) != 3 or min(self.pad_to) < 1):
            raise ModelFileError(f"invalid preprocessing: pad_to must be 3 positive sizes, "
                                 f"found {reprlib.repr(self.pad_to)}")
        if self.spacing is not None and (len(self.spacing) != 3 or not all(0 < s < math.inf for s in self.spacing)):
            raise ModelFileError(f"invalid preprocessing: spacing must be 3 positive sizes in mm, "
                                 f"found {reprlib.repr(self.spacing)}")
        if self.orientation is not None and not is_orientation_code(self.orientation):
            raise ModelFileError(f"invalid preprocessing: orientation must be a code such as RAS or LPS, "
                                 f"found {reprlib.repr(self.orientation)}")
        if self.side is not None and self.side not in ("left", "right"):
            raise ModelFileError(f"invalid preprocessing: side must be left or right, found {reprlib.repr(self.side)}")
        if self.side is not None and not self.orientation:
            raise ModelFileError("invalid preprocessing: side needs the orientation of the training grid")
        problem = "" if self.intensity_landmarks is None else landmarks_problem(self.intensity_landmarks)
        if problem:
            raise ModelFileError(f"invalid preprocessing: intensity_landmarks {problem}")
        self._validate_field_of_view()
        return self

    def _validate_field_of_view(self) -> None:
        """Raise ModelFileError unless ``grid_shape`` and ``fov_fraction`` form a field-of-view grid."""
        for name in ("fov_fraction", "location_prior"):
            if getattr(self, name) is not None and self.grid_shape is None:
                raise ModelFileError(f"invalid preprocessing: {name} needs grid_shape")
        if self.grid_shape is None:
            return
        if len(self.grid_shape) != 3 or min(self.grid_shape) < 1 or math.prod(self.grid_shape) > MAX_GRID_VOXELS:
            raise ModelFileError(f"invalid preprocessing: grid_shape must be 3 positive sizes, at most "
                                 f"{MAX_GRID_VOXELS:,} voxels in all, found {reprlib.repr(self.grid_shape)}")
        fraction = self.fov_fraction
        if fraction is not None and (len(fraction) != 3 or not all(0 < f <= 1 for f in fraction)):
            raise ModelFileError(f"invalid preprocessing: fov_fraction must be 3 numbers in (0, 1], "
                                 f"found {reprlib.repr(fraction)}")
        if self.spacing is not None or not self.orientation:
            raise ModelFileError("invalid preprocessing: a grid_shape (field-of-view grid) needs an orientation "
                                 "and no spacing")
        problem = "" if self.location_prior is None else location_prior_problem(self.location_prior)
        if problem:
            raise ModelFileError(f"invalid preprocessing: location_prior {problem}")
        if self.side is not None and self.location_prior is not None and {SIZES, SHIFTS} & set(self.location_prior):
            raise ModelFileError("invalid preprocessing: a location prior's sizes and shifts are probed on the scan "
                                 "as stored; a model with a side cannot have them")

    @classmethod
    def from_dict(cls, data: Any) -> "Preprocessing":
        """Checked preprocessing from JSON data; raises ModelFileError naming the bad field."""
        return cls(**checked_fields(cls, data, "preprocessing")).validate()


def is_orientation_code(code: str) -> bool:
    """Whether ``code`` is an ITK orientation code: one of R/L, A/P and S/I each, in any order."""
    axes = {"R": 0, "L": 0, "A": 1, "P": 1, "S": 2, "I": 2}
    return isinstance(code, str) and len(code) == 3 and sorted(axes.get(c, -1) for c in code) == [0, 1, 2]


def rescale_percentiles(array: np.ndarray, percentiles: List[float]) -> np.ndarray:
    """Clip to the given percentiles and map that range linearly onto [0, 1].

    When the percentiles coincide (a mostly uniform image with a few other voxels)
    the full minimum-maximum range is used instead; a constant image is refused.
    """
    low, high = np.percentile(array, percentiles)
    if not high > low:
        low, high = float(array.min()), float(array.max())
    if not high > low:
        raise InputImageError("the image has constant intensity; nothing to segment")
    clipped = np.clip(array.astype(np.float32), low, high)
    return ((clipped - low) / (high - low)).astype(np.float32)


def pad_end(array: np.ndarray, shape: Tuple[int, ...]) -> np.ndarray:
    """Zero-pad at the end of each axis up to ``shape``."""
    widths = [(0, max(0, s - a)) for a, s in zip(array.shape, shape)]
    return np.pad(array, widths) if any(w[1] for w in widths) else array


def prepared_shape(shape: Tuple[int, ...], spec: Preprocessing, multiple: int) -> Tuple[int, ...]:
    """The shape ``prepare`` gives a volume of ``shape`` (padding only, no data)."""
    if spec.pad_to is not None:
        shape = tuple(max(p, s) for p, s in zip(spec.pad_to, shape))
    return tuple(-(-int(s) // multiple) * multiple for s in shape)


def prepare(array: np.ndarray, spec: Preprocessing, multiple: int) -> np.ndarray:
    """Standardised (when ``spec`` has landmarks), normalised, padded volume (X, Y, Z) ready for
    the model; crop back with ``array[:X, :Y, :Z]``."""
    if spec.intensity_landmarks is not None:
        array = standardise(array, spec.intensity_landmarks)
    normalised = rescale_percentiles(array, spec.percentiles)
    if spec.pad_to is not None:
        target = tuple(max(p, s) for p, s in zip(spec.pad_to, array.shape))
        normalised = rescale_percentiles(pad_end(normalised, target), spec.percentiles)
    rounded = tuple(-(-s // multiple) * multiple for s in normalised.shape)
    return pad_end(normalised, rounded)


def model_input(prepared: np.ndarray, spec: Preprocessing) -> np.ndarray:
    """The channels the model reads (C, X, Y, Z): the prepared image (``prepare``) and, when
    ``spec`` has one, the location prior on the model's grid (zero in the padding)."""
    if spec.location_prior is None:
        return prepared[None]
    prior = pad_end(location_prior_map(spec.grid_shape, spec.location_prior), prepared.shape)
    return np.stack([prepared, prior[tuple(slice(0, s) for s in prepared.shape)]])
