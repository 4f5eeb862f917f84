"""A model file's header without torch or the weights: name, labels, levels, steps, calibration,
grid, side and field-of-view grid. The Slicer module fills its model list with it; ``bundle`` reads the same
header (with the same limits) before it verifies the whole file."""
from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from ..errors import ModelFileError

FORMAT = "m3dnca"
MODEL_SUFFIX = ".m3dnca"


def model_name(model) -> str:
    """A shipped model's name, or a model file's name without folder and suffix."""
    base = os.path.basename(str(model))
    return base[: -len(MODEL_SUFFIX)] if base.endswith(MODEL_SUFFIX) else base


def parse_metadata(data: bytes, path, length_limit: Optional[int] = None) -> Dict[str, str]:
    """The m3dnca metadata of a safetensors file's first bytes (``data`` holds at least the
    header). Raises ModelFileError for anything that is not an M3D-NCA model file."""
    if len(data) < 8:
        raise ModelFileError(f"{path}: not an M3D-NCA model file (too short)")
    (length,) = struct.unpack("<Q", data[:8])
    if length > (len(data) - 8 if length_limit is None else length_limit):
        raise ModelFileError(f"{path}: not an M3D-NCA model file (truncated or not safetensors)")
    try:
        header = json.loads(data[8 : 8 + length])
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise ModelFileError(f"{path}: not an M3D-NCA model file (unreadable header)") from None
    metadata = header.get("__metadata__") if isinstance(header, dict) else None
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise ModelFileError(f"{path}: not an M3D-NCA model file (no m3dnca metadata)")
    if not all(isinstance(value, str) for value in metadata.values()):
        raise ModelFileError(f"{path}: corrupt model file (metadata values must be text)")
    return metadata


@dataclass
class ModelHeader:
    name: str
    path: str
    description: str = ""
    labels: List[str] = field(default_factory=list)
    levels: int = 0
    steps: List[int] = field(default_factory=list)
    fire_rate: Optional[float] = None
    calibrated: bool = False
    largest_component: bool = False
    side: Optional[str] = None  # the side every training crop shows
    grid_shape: Optional[List[int]] = None  # a field-of-view model's grid: it takes the whole scan
    preprocessing: Dict[str, Any] = field(default_factory=dict)  # the section as stored (unchecked)

    def summary(self) -> str:
        parts = [self.description or "(no description)"]
        if self.labels:
            parts.append("labels: " + ", ".join(self.labels))
        if self.steps:
            parts.append(f"steps per level: {','.join(str(s) for s in self.steps)}")
        if self.grid_shape:
            parts.append("segments the whole field of view (no head localisation)")
        if self.largest_component:
            parts.append("keeps the largest connected component")
        parts.append("NQM calibrated" if self.calibrated else "no NQM calibration (light stays grey)")
        return "; ".join(parts)


def read_model_header(path, name: Optional[str] = None) -> ModelHeader:
    """The header of a model file, reading only its first bytes. Raises ModelFileError (an
    NCAError and a ValueError-free one-liner) for a file that is not a model."""
    path = str(path)
    if not os.path.isfile(path):
        raise ModelFileError(f"{path}: model file not found")
    with open(path, "rb") as handle:
        head = handle.read(8)
        size = os.path.getsize(path)
        length = struct.unpack("<Q", head)[0] if len(head) == 8 else 0
        data = head + (handle.read(length) if len(head) == 8 and 0 < length <= size - 8 else b"")
    metadata = parse_metadata(data, path)
    try:
        config = json.loads(metadata.get("config") or "{}")
        provenance = json.loads(metadata.get("provenance") or "{}") or {}
        calibration = json.loads(metadata.get("calibration") or "null")
        postprocessing = json.loads(metadata.get("postprocessing") or "{}") or {}
        preprocessing = json.loads(metadata.get("preprocessing") or "{}") or {}
        return ModelHeader(
            name=model_name(path) if name is None else name,
            path=path,
            description=str(provenance.get("description", "")),
            labels=[str(label) for label in config.get("labels", ["foreground"])],
            levels=len(config.get("kernel_sizes", [])),
            steps=[int(step) for step in config.get("steps", [])],
            fire_rate=config.get("fire_rate"),
            calibrated=bool(calibration),
            largest_component=bool(postprocessing.get("largest_component", False)),
            side=preprocessing.get("side"),
            grid_shape=preprocessing.get("grid_shape"),
            preprocessing=preprocessing,
        )
    except (ValueError, TypeError, AttributeError):
        raise ModelFileError(f"{path}: corrupt model file (unreadable metadata)") from None
