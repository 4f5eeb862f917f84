"""Import checkpoints trained with the reference MECLabTUDA/M3D-NCA code.

A reference run folder holds ``config.dt`` (JSON: a list whose first dict is the
experiment's settings) and, per saved epoch, ``model0.pth``, ``model1.pth``, ...: one
``BasicNCA3D`` state dict per level, coarsest first. This module maps those onto an
M3D-NCA model file that gives the reference inference path's logits (fire rate 0).

Conventions of the reference, and how they map here:

* Its state is channels-last ``(B, X, Y, Z, C)`` with X, Y, Z the NIfTI voxel axes
  (nibabel order, as ours). Its update transposes to ``(B, C, Y, Z, X)`` before the
  depthwise convolution, so the kernel's spatial axes are (Y, Z, X); ours are
  (X, Y, Z): ``ours = p0.weight.permute(0, 1, 4, 2, 3)``.
* Downscaling is a 2x max-pool repeated ``train_model * log2(scale_factor)`` times
  (a single ``scale_factor ** train_model`` max-pool here), upsampling is nearest by
  ``scale_factor``, and each finer level re-injects the image at its resolution.
* BatchNorm never tracks running statistics: every image is normalised with its own.
* Preprocessing: percentile rescale (0.5, 99.5) to [0, 1], zero-padding at the end
  of each axis to the last ``input_size`` when ``keep_original_scale``, then
  z-normalisation and the percentile rescale again. The z-normalisation is a positive
  affine map, which the percentile rescale cancels, so it is left out.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from .. import __version__
from ..network.config import NCAConfig
from ..errors import ModelFileError, NCAError
from ..network.model import M3DNCA
from .bundle import ModelBundle
from ..space.preprocessing import Preprocessing

REFERENCE = "MECLabTUDA/M3D-NCA"
PERCENTILES = [0.5, 99.5]
# Reference BasicNCA3D parameter -> NCARule parameter.
KEY_MAP = {
    "p0.weight": "perception.weight",
    "p0.bias": "perception.bias",
    "fc0.weight": "fc0.weight",
    "fc0.bias": "fc0.bias",
    "bn.weight": "norm.weight",
    "bn.bias": "norm.bias",
    "fc1.weight": "fc1.weight",
}
# Settings the reference fills in when config.dt lacks them (Experiment defaults).
REFERENCE_DEFAULTS = {
    "channel_n": 16,
    "cell_fire_rate": 0.5,
    "output_channels": 1,
    "keep_original_scale": False,
    "rescale": True,
    "scale_factor": 2,
}
NO_PADDING = [1, 1, 1]  # pad_to that never pads: normalise twice, as the reference


@dataclass(frozen=True)
class ReferenceSettings:
    """The parts of a reference ``config.dt`` that define inference."""

    channels: int
    hidden: Optional[int]
    input_channels: int
    output_channels: int
    levels: int
    steps: List[int]
    fire_rate: float
    scale_factor: int
    full_size: Optional[List[int]]
    keep_original_scale: bool
    resample: bool

    def summary(self) -> Dict[str, Any]:
        """The settings as reference config keys, for provenance."""
        return {
            "channel_n": self.channels, "hidden_size": self.hidden,
            "input_channels": self.input_channels, "output_channels": self.output_channels,
            "train_model": self.levels - 1, "inference_steps": self.steps,
            "cell_fire_rate": self.fire_rate, "scale_factor": self.scale_factor,
            "input_size": self.full_size, "keep_original_scale": self.keep_original_scale,
            "rescale": self.resample,
        }


# ---- config.dt ---------------------------------------------------------------------
def read_config(path: Path) -> Dict[str, Any]:
    """The first settings dict of a reference ``config.dt`` (JSON list of dicts)."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: reference config not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelFileError(f"{path}: not a reference config.dt (invalid JSON: {error})") from None
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not data or not isinstance(data[0], dict):
        raise ModelFileError(f"{path}: not a reference config.dt (expected a JSON list of settings dicts)")
    return dict(REFERENCE_DEFAULTS, **data[0])


def _integer(raw: Dict[str, Any], key: str, minimum: int) -> int:
    value = raw.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ModelFileError(f"config.dt: {key} must be an integer >= {minimum}, found {value!r}")
    return value


def _steps(raw: Dict[str, Any], levels: int) -> List[int]:
    value = raw.get("inference_steps")
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value] * levels
    if not isinstance(value, list) or len(value) < levels or not all(
        isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value[:levels]
    ):
        raise ModelFileError(
            f"config.dt: inference_steps must be a step count or a list of {levels} step counts, "
            f"found {value!r}"
        )
    return list(value[:levels])


def _full_size(raw: Dict[str, Any]) -> Optional[List[int]]:
    """The full-resolution ``input_size`` (the last entry of a list of sizes)."""
    value = raw.get("input_size")
    if value is None:
        return None
    if isinstance(value, list) and value and isinstance(value[0], (list, tuple)):
        value = value[-1]
    if isinstance(value, list) and len(value) == 2:
        raise ModelFileError(
            f"config.dt: input_size {raw.get('input_size')!r} is 2D (a Med-NCA run); only 3D M3D-NCA runs import"
        )
    if not isinstance(value, list) or len(value) != 3 or not all(
        isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value
    ):
        raise ModelFileError(f"config.dt: input_size must hold 3D sizes, found {raw.get('input_size')!r}")
    return list(value)


def _scale_factor(raw: Dict[str, Any], levels: int) -> int:
    if levels == 1:
        return 2  # a single level never rescales
    scale = raw.get("scale_factor")
    scale = 2 if scale is None else scale
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 2 or scale & (scale - 1):
        raise ModelFileError(f"config.dt: scale_factor must be a power of two >= 2, found {scale!r}")
    if levels > 2 and scale != 2:
        raise ModelFileError(
            f"config.dt: scale_factor {scale} with {levels} levels cannot run in the reference code "
            "(it re-injects the image at 2x steps); only scale_factor 2 supports more than 2 levels"
        )
    return scale


def parse_settings(raw: Dict[str, Any]) -> ReferenceSettings:
    """Check a reference settings dict and keep what inference needs."""
    levels = _integer(raw, "train_model", 0) + 1
    fire_rate = raw.get("cell_fire_rate")
    if isinstance(fire_rate, bool) or not isinstance(fire_rate, (int, float)) or not 0 <= fire_rate < 1:
        raise ModelFileError(f"config.dt: cell_fire_rate must be in [0, 1), found {fire_rate!r}")
    hidden = raw.get("hidden_size")
    settings = ReferenceSettings(
        channels=_integer(raw, "channel_n", 1),
        hidden=None if hidden is None else _integer(raw, "hidden_size", 1),
        input_channels=_integer(raw, "input_channels", 1),
        output_channels=_integer(raw, "output_channels", 1),
        levels=levels,
        steps=_steps(raw, levels),
        fire_rate=float(fire_rate),
        scale_factor=_scale_factor(raw, levels),
        full_size=_full_size(raw),
        keep_original_scale=bool(raw.get("keep_original_scale")),
        resample=bool(raw.get("rescale")),
    )
    if settings.input_channels != 1:
        raise ModelFileError(
            f"config.dt: input_channels is {settings.input_channels}; M3DNCASegment segments "
            "single-channel volumes (input_channels 1)"
        )
    if settings.input_channels + settings.output_channels > settings.channels:
        raise ModelFileError("config.dt: channel_n must be at least input_channels + output_channels")
    if settings.keep_original_scale and settings.full_size is None:
        raise ModelFileError("config.dt: keep_original_scale needs input_size (the padded volume size)")
    return settings


# ---- model<i>.pth ------------------------------------------------------------------
def load_state_dict(path: Path) -> Dict[str, torch.Tensor]:
    """A state dict from a ``.pth`` file, loaded without running pickled code."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: reference model file not found")
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises pickle, runtime and zip errors alike
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelFileError(
            f"{path}: cannot be read as a plain tensor state dict (weights only; no code is run): {first}"
        ) from None
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise ModelFileError(f"{path}: does not hold a state dict of tensors")
    return dict(state)


def _check_keys(state: Dict[str, torch.Tensor], path: Path) -> None:
    missing = sorted(set(KEY_MAP) - set(state))
    extra = sorted(set(state) - set(KEY_MAP))
    if missing or extra:
        hint = ""
        if "p0.weight" in state and state["p0.weight"].dim() == 4:
            hint = " (this looks like a 2D Med-NCA checkpoint; only 3D BasicNCA3D levels import)"
        raise ModelFileError(
            f"{path}: not a reference BasicNCA3D state dict: missing {missing}, unexpected {extra}{hint}"
        )


def level_shape(state: Dict[str, torch.Tensor], path: Path) -> Tuple[int, int, int]:
    """(channels, hidden, kernel size) of one reference level; raises on a bad layout."""
    _check_keys(state, path)
    weight = state["p0.weight"]
    if weight.dim() != 5 or weight.shape[1] != 1 or len(set(weight.shape[2:])) != 1:
        raise ModelFileError(
            f"{path}: p0.weight has shape {tuple(weight.shape)}; expected a depthwise cubic "
            "3D kernel (channels, 1, k, k, k)"
        )
    channels, kernel = weight.shape[0], weight.shape[2]
    hidden = state["fc0.weight"].shape[0] if state["fc0.weight"].dim() == 2 else 0
    expected = {
        "p0.bias": (channels,), "fc0.weight": (hidden, 2 * channels), "fc0.bias": (hidden,),
        "bn.weight": (hidden,), "bn.bias": (hidden,), "fc1.weight": (channels, hidden),
    }
    wrong = [f"{k} {tuple(state[k].shape)} (expected {s})" for k, s in expected.items()
             if tuple(state[k].shape) != s]
    if wrong:
        raise ModelFileError(f"{path}: inconsistent shapes: {', '.join(wrong)}")
    if not all(bool(torch.isfinite(t).all()) for t in state.values()):
        raise ModelFileError(f"{path}: holds NaN or infinite weights")
    if kernel % 2 == 0:
        raise ModelFileError(f"{path}: kernel size {kernel} is even; the reference pads (k-1)/2 per side")
    return channels, hidden, kernel


def convert_level(state: Dict[str, torch.Tensor], level: int) -> Dict[str, torch.Tensor]:
    """One reference level as ``levels.<level>.*`` weights of our model (float32).

    The kernel's spatial axes go from the reference's (Y, Z, X) to our (X, Y, Z).
    """
    converted = {}
    for reference_key, our_key in KEY_MAP.items():
        tensor = state[reference_key].detach().to(torch.float32)
        if reference_key == "p0.weight":
            tensor = tensor.permute(0, 1, 4, 2, 3)
        converted[f"levels.{level}.{our_key}"] = tensor.contiguous().clone()
    return converted


def model_paths(models_dir: Path, levels: int) -> List[Path]:
    """``model0.pth`` ... per level; a clear error for a missing folder or file."""
    models_dir = Path(models_dir)
    if not models_dir.is_dir():
        raise ModelFileError(f"{models_dir}: reference models folder not found")
    paths = [models_dir / f"model{level}.pth" for level in range(levels)]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        epochs = sorted(p.name for p in models_dir.glob("epoch_*") if p.is_dir())
        hint = f" (pick one epoch folder, e.g. {models_dir / epochs[-1]})" if epochs else ""
        raise ModelFileError(
            f"{models_dir}: missing {', '.join(missing)}; config.dt's train_model asks for "
            f"{levels} levels{hint}"
        )
    return paths


# ---- the whole import ----------------------------------------------------------------
def preprocessing_for(settings: ReferenceSettings) -> Preprocessing:
    """Our preprocessing spec that reproduces the reference dataset's."""
    if settings.keep_original_scale and not settings.resample:
        return Preprocessing(percentiles=list(PERCENTILES), pad_to=list(settings.full_size or []))
    return Preprocessing(percentiles=list(PERCENTILES), pad_to=list(NO_PADDING))


def default_labels(output_channels: int) -> List[str]:
    if output_channels == 1:
        return ["foreground"]
    return [f"class {k}" for k in range(1, output_channels + 1)]


def _run_name(config_path: Path, models_dir: Path) -> str:
    """``run/epoch_N``: the reference run folder and the epoch folder."""
    return f"{config_path.resolve().parent.name}/{Path(models_dir).resolve().name}"


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _model_config(settings: ReferenceSettings, shapes: Sequence[Tuple[int, int, int]],
                  labels: List[str], paths: Sequence[Path]) -> NCAConfig:
    channels, hidden = shapes[0][0], shapes[0][1]
    for (c, h, _), path in zip(shapes, paths):
        if c != settings.channels:
            raise ModelFileError(f"{path}: has {c} channels but config.dt's channel_n is {settings.channels}")
        if settings.hidden is not None and h != settings.hidden:
            raise ModelFileError(f"{path}: has hidden size {h} but config.dt's hidden_size is {settings.hidden}")
        if h != hidden:
            raise ModelFileError(f"{path}: hidden size {h} differs from level 0's {hidden}")
    if len(labels) != settings.output_channels:
        raise NCAError(f"--labels needs {settings.output_channels} names, one per output channel")
    return NCAConfig(
        channels=channels, hidden=hidden, input_channels=settings.input_channels,
        output_channels=settings.output_channels, kernel_sizes=[k for _, _, k in shapes],
        steps=list(settings.steps), downscale=settings.scale_factor,
        fire_rate=settings.fire_rate, labels=list(labels),
    ).validate()


def import_official(
    config_path: Path,
    models_dir: Path,
    labels: Optional[List[str]] = None,
    description: Optional[str] = None,
    native_resolution: bool = False,
) -> ModelBundle:
    """Convert a reference run (config.dt + model<i>.pth) into a model bundle."""
    config_path = Path(config_path)
    settings = parse_settings(read_config(config_path))
    if settings.resample and not native_resolution:
        raise ModelFileError(
            f"{config_path}: the reference resized every image to input_size (config 'rescale': true), "
            "which M3DNCASegment does not do; pass --native-resolution to import anyway "
            "(the model then runs at the image's own resolution and its outputs differ from the reference's)"
        )
    paths = model_paths(models_dir, settings.levels)
    states = [load_state_dict(p) for p in paths]
    shapes = [level_shape(s, p) for s, p in zip(states, paths)]
    config = _model_config(settings, shapes, labels or default_labels(settings.output_channels), paths)
    weights: Dict[str, torch.Tensor] = {}
    for level, state in enumerate(states):
        weights.update(convert_level(state, level))
    M3DNCA(config).load_state_dict(weights)  # shapes agree with the config
    provenance = {
        "description": description or f"{REFERENCE} checkpoint {_run_name(config_path, models_dir)}",
        "imported_from": REFERENCE,
        "reference_config": str(config_path.resolve()),
        "reference_models": {p.name: _sha256(p) for p in paths},
        "reference_settings": settings.summary(),
        "native_resolution": bool(settings.resample),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "software": f"nca_core {__version__}, torch {torch.__version__}",
    }
    return ModelBundle(config=config, weights=weights, preprocessing=preprocessing_for(settings),
                       provenance=provenance)
