"""Model files: safetensors weights plus JSON metadata (config, preprocessing,
postprocessing, calibration, provenance) and a SHA-256 checksum. Loading never runs code."""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from ..atomic import write_bytes
from ..network.config import NCAConfig
from ..errors import ModelFileError
from ..fields import json_object
from ..network.model import M3DNCA
from .header import parse_metadata
from ..space.postprocessing import Postprocessing
from ..space.preprocessing import Preprocessing
from ..space.prior import SHIFTS, SIZES
from ..quality.nqm import Calibration

FORMAT = "m3dnca"
# 2: preprocessing may record the training grid (spacing, orientation); 3: the side;
# 4: a field-of-view grid (grid_shape, fov_fraction); 5: a location prior (a second input channel);
# 6: the prior's sizes to probe; 7: the calibration's plausible volume range; 8: intensity
# standardisation landmarks; 9: the prior's shifts to probe. A model without them is written as the oldest version that holds
# it, which earlier versions still read.
FORMAT_VERSION = 9
VERSION_WITHOUT_FIELD_OF_VIEW = 3
VERSION_WITHOUT_LOCATION_PRIOR = 4
VERSION_WITHOUT_PRIOR_SIZES = 5
VERSION_WITHOUT_VOLUME_RANGE = 6
VERSION_WITHOUT_INTENSITY_LANDMARKS = 7
VERSION_WITHOUT_PRIOR_SHIFTS = 8


@dataclass
class ModelBundle:
    """Everything a model file holds."""

    config: NCAConfig
    weights: Dict[str, torch.Tensor]
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    postprocessing: Postprocessing = field(default_factory=Postprocessing)
    calibration: Optional[Calibration] = None
    provenance: Dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Refuse a config that reads another number of channels than the preprocessing gives."""
        given = self.preprocessing.input_channels
        if self.config.input_channels != given:
            raise ModelFileError(f"the config reads {self.config.input_channels} input channels, the preprocessing "
                                 f"gives {given} (the image{' and the location prior' if given == 2 else ''})")

    @classmethod
    def from_model(cls, model: M3DNCA, **kwargs) -> "ModelBundle":
        weights = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
        return cls(config=model.config, weights=weights, **kwargs)

    def build(self) -> M3DNCA:
        """A model with these weights (shapes were verified on load)."""
        model = M3DNCA(self.config)
        model.load_state_dict(self.weights)
        return model.eval()

    @property
    def description(self) -> str:
        return str(self.provenance.get("description", ""))

    @property
    def format_version(self) -> int:
        """The oldest format that holds this model (readers before a feature still read the rest)."""
        prior = self.preprocessing.location_prior
        if prior is not None and SHIFTS in prior:
            return FORMAT_VERSION
        if self.preprocessing.intensity_landmarks is not None:
            return VERSION_WITHOUT_PRIOR_SHIFTS
        if self.calibration is not None and self.calibration.volume_range_ml is not None:
            return VERSION_WITHOUT_INTENSITY_LANDMARKS
        if prior is not None:
            return VERSION_WITHOUT_VOLUME_RANGE if SIZES in prior else VERSION_WITHOUT_PRIOR_SIZES
        if self.preprocessing.relative_to_field_of_view:
            return VERSION_WITHOUT_LOCATION_PRIOR
        return VERSION_WITHOUT_FIELD_OF_VIEW

    def metadata(self) -> Dict[str, str]:
        return {
            "format": FORMAT,
            "format_version": str(self.format_version),
            "config": _canonical(self.config.to_dict()),
            "preprocessing": _canonical(self.preprocessing.to_dict()),
            "postprocessing": _canonical(self.postprocessing.to_dict()),
            "calibration": _canonical(self.calibration.to_dict() if self.calibration else None),
            "provenance": _canonical(self.provenance),
        }


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def digest(metadata: Dict[str, str], weights: Dict[str, torch.Tensor]) -> str:
    """SHA-256 over the metadata and every tensor's name, dtype, shape and bytes."""
    hasher = hashlib.sha256(_canonical(metadata).encode())
    for name in sorted(weights):
        tensor = weights[name].detach().cpu().contiguous()
        hasher.update(f"{name}|{tensor.dtype}|{list(tensor.shape)}".encode())
        hasher.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return hasher.hexdigest()


def save_model(bundle: ModelBundle, path: Path) -> None:
    """Write the model file atomically."""
    path = Path(path)
    metadata = bundle.metadata()
    metadata["sha256"] = digest(metadata, bundle.weights)
    write_bytes(path, save_tensors(bundle.weights, metadata=metadata))


def _read_metadata(data: bytes, path: Path) -> Dict[str, str]:
    return parse_metadata(data, path)


def load_model(path: Path) -> ModelBundle:
    """Read and verify a model file: format, version, checksum, every metadata section
    (structure, types, ranges) and the weights' shapes."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: model file not found")
    data = path.read_bytes()
    metadata = _read_metadata(data, path)
    version = metadata.get("format_version", "")
    if not version.isdigit():
        raise ModelFileError(f"{path}: model file has no valid format version")
    if int(version) > FORMAT_VERSION:
        raise ModelFileError(
            f"{path}: model file format {version} is newer than this M3DNCASegment "
            f"understands ({FORMAT_VERSION}); update M3DNCASegment"
        )
    try:
        weights = load_tensors(data)
    except SafetensorError as error:
        raise ModelFileError(f"{path}: corrupt model file ({error})") from None
    stored = metadata.pop("sha256", None)
    if stored != digest(metadata, weights):
        raise ModelFileError(f"{path}: checksum mismatch; the model file is corrupt or was modified")
    try:
        bundle = _bundle(metadata, weights)
    except ModelFileError as error:
        raise ModelFileError(f"{path}: {error}") from None
    _check_shapes(bundle, path)
    return bundle


def _bundle(metadata: Dict[str, str], weights: Dict[str, torch.Tensor]) -> ModelBundle:
    """The bundle described by verified metadata; ModelFileError names the bad section or field."""
    calibration = _section(metadata, "calibration")
    return ModelBundle(
        config=NCAConfig.from_dict(_section(metadata, "config")),
        weights=weights,
        preprocessing=Preprocessing.from_dict(_section(metadata, "preprocessing")),
        postprocessing=Postprocessing.from_dict(_section(metadata, "postprocessing", default="{}")),
        calibration=None if calibration is None else Calibration.from_dict(calibration),
        provenance=json_object(_section(metadata, "provenance"), "provenance"),
    )


def _section(metadata: Dict[str, str], name: str, default: Optional[str] = None) -> Any:
    """The parsed JSON of one metadata section."""
    text = metadata.get(name, default)
    if text is None:
        raise ModelFileError(f"model metadata is incomplete (no {name})")
    try:
        return json.loads(text)
    except (ValueError, RecursionError):
        raise ModelFileError(f"invalid {name}: not JSON") from None


def _check_shapes(bundle: ModelBundle, path: Path) -> None:
    with torch.device("meta"):  # shapes only: a config asking for huge sizes allocates nothing
        expected = {k: tuple(v.shape) for k, v in M3DNCA(bundle.config).state_dict().items()}
    found = {k: tuple(v.shape) for k, v in bundle.weights.items()}
    if expected != found:
        missing = sorted(set(expected) - set(found))
        extra = sorted(set(found) - set(expected))
        wrong = sorted(k for k in set(expected) & set(found) if expected[k] != found[k])
        raise ModelFileError(
            f"{path}: weights do not match the config (missing {missing}, unexpected {extra}, "
            f"wrong shape {wrong})"
        )
