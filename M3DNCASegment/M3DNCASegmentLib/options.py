"""Panel options -> engine arguments, the model catalogue (without torch) and dependencies."""
from __future__ import annotations

import importlib.util
import json
import os
import struct
import sys
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

# --- devices -----------------------------------------------------------------------------

DEVICE_CHOICES = ("auto", "CPU", "GPU")
_ENGINE_DEVICES = {"auto": "auto", "cpu": "cpu", "gpu": "cuda", "cuda": "cuda"}


def engine_device(choice: str) -> str:
    """Panel device (auto/CPU/GPU, or the engine's own names) -> nca_core device name."""
    try:
        return _ENGINE_DEVICES[(choice or "auto").strip().lower()]
    except KeyError:
        raise ValueError(f"unknown device {choice!r}; choose auto, CPU or GPU") from None


# --- region and side (the engine's names; kept here so this file needs no nca_core import) ------

SIDE_CHOICES = ("auto", "left", "right")
LOCATE_CHOICES = ("auto", "head", "none")
# Panel region -> how the engine takes the volume: "auto" finds both hippocampi in a whole head
# (a crop-sized volume is taken as it is), "roi" cuts the volume to a markups ROI first, and
# "volume" takes the volume as one crop.
REGION_CHOICES = ("auto", "roi", "volume")
_REGION_LOCATE = {"auto": "auto", "roi": "none", "volume": "none"}


def region_locate(region: str) -> str:
    try:
        return _REGION_LOCATE[region]
    except KeyError:
        raise ValueError(f"region must be one of {', '.join(REGION_CHOICES)}, not {region!r}") from None


# --- advanced options ----------------------------------------------------------------------

def parse_steps(text: Optional[str], levels: Optional[int] = None) -> Optional[List[int]]:
    """"" -> None (the model's steps); "10, 20" -> [10, 20]. Checks the count when levels is given."""
    if text is None or not str(text).strip():
        return None
    parts = [p for p in str(text).replace(";", ",").replace(" ", ",").split(",") if p]
    try:
        steps = [int(p) for p in parts]
    except ValueError:
        raise ValueError(f"steps per level must be whole numbers separated by commas, got {text!r}") from None
    if any(s < 1 for s in steps):
        raise ValueError("steps per level must be at least 1")
    if levels is not None and len(steps) != levels:
        raise ValueError(f"this model has {levels} levels: give {levels} step counts (e.g. "
                         f"{','.join(['10'] * levels)}) or leave empty for the model's own")
    return steps


def fire_rate_option(value: Optional[float]) -> Optional[float]:
    """The panel's fire rate: 0 (shown as "model default") -> None; else a rate in (0, 1)."""
    if value is None or value <= 0:
        return None
    if value >= 1:
        raise ValueError("fire rate must be below 1")
    return float(value)


@dataclass
class RunOptions:
    """Everything one segmentation needs besides the volume."""

    model: str = "hippocampus"  # shipped model name or path to a .m3dnca file
    runs: int = 10
    seed: int = 0
    device: str = "auto"  # engine name: auto | cpu | cuda
    fire_rate: Optional[float] = None
    steps: Optional[List[int]] = None
    side: str = "auto"  # auto | left | right (nca_core.argtypes.SIDE_CHOICES)
    locate: str = "auto"  # auto | head | none (nca_core.argtypes.LOCATE_CHOICES)

    def validate(self) -> "RunOptions":
        if int(self.runs) < 1:
            raise ValueError("runs must be at least 1")
        self.runs = int(self.runs)
        self.seed = int(self.seed)
        self.device = engine_device(self.device)
        self.fire_rate = fire_rate_option(self.fire_rate)
        if self.side not in SIDE_CHOICES:
            raise ValueError(f"side must be one of {', '.join(SIDE_CHOICES)}, not {self.side!r}")
        if self.locate not in LOCATE_CHOICES:
            raise ValueError(f"locate must be one of {', '.join(LOCATE_CHOICES)}, not {self.locate!r}")
        return self

    def to_dict(self) -> Dict:
        return {"model": self.model, "runs": self.runs, "seed": self.seed, "device": self.device,
                "fire_rate": self.fire_rate, "steps": self.steps,
                "side": self.side, "locate": self.locate}


# --- where the engine is -------------------------------------------------------------------

def engine_root(module_dir: str) -> Optional[str]:
    """The folder holding ``nca_core``: the module folder itself once installed (the extension
    copies nca_core beside the module) or its parent in a source checkout."""
    module_dir = os.path.abspath(module_dir)
    for candidate in (module_dir, os.path.dirname(module_dir)):
        if os.path.isfile(os.path.join(candidate, "nca_core", "__init__.py")):
            return candidate
    return None


def ensure_engine_importable(module_dir: str) -> Optional[str]:
    """Put the engine's folder first on sys.path, so that Slicer and the worker use the same
    copy even if another nca_core is installed; returns it."""
    root = engine_root(module_dir)
    if root:
        if root in sys.path:
            sys.path.remove(root)
        sys.path.insert(0, root)
    return root


# --- model catalogue without torch -----------------------------------------------------------

MODEL_SUFFIX = ".m3dnca"


def model_name(model: str) -> str:
    """A shipped model's name, or a model file's name without folder and suffix."""
    base = os.path.basename(str(model))
    return base[: -len(MODEL_SUFFIX)] if base.endswith(MODEL_SUFFIX) else base


@dataclass
class ModelInfo:
    name: str
    path: str
    description: str = ""
    labels: List[str] = field(default_factory=list)
    levels: int = 0
    steps: List[int] = field(default_factory=list)
    fire_rate: Optional[float] = None
    calibrated: bool = False
    largest_component: bool = False

    def summary(self) -> str:
        parts = [self.description or "(no description)"]
        if self.labels:
            parts.append("labels: " + ", ".join(self.labels))
        if self.steps:
            parts.append(f"steps per level: {','.join(str(s) for s in self.steps)}")
        if self.largest_component:
            parts.append("keeps the largest connected component")
        parts.append("NQM calibrated" if self.calibrated else "no NQM calibration (light stays grey)")
        return "; ".join(parts)


def read_model_info(path: str, name: Optional[str] = None) -> ModelInfo:
    """Config, description and calibration status from a model file's safetensors header,
    without loading weights or torch. Raises ValueError for a file that is not a model."""
    path = str(path)
    with open(path, "rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            raise ValueError(f"{path}: not an M3D-NCA model file (too short)")
        (length,) = struct.unpack("<Q", head)
        if length > 100 * 1024 * 1024:
            raise ValueError(f"{path}: not an M3D-NCA model file (header too large)")
        raw = handle.read(length)
    try:
        header = json.loads(raw)
        metadata = header["__metadata__"]
        if metadata.get("format") != "m3dnca":
            raise KeyError("format")
        config = json.loads(metadata.get("config") or "{}")
        provenance = json.loads(metadata.get("provenance") or "{}") or {}
        calibration = json.loads(metadata.get("calibration") or "null")
        postprocessing = json.loads(metadata.get("postprocessing") or "{}") or {}
    except (ValueError, KeyError, TypeError, AttributeError):
        raise ValueError(f"{path}: not an M3D-NCA model file (no m3dnca metadata)") from None
    if name is None:
        base = os.path.basename(path)
        name = base[: -len(MODEL_SUFFIX)] if base.endswith(MODEL_SUFFIX) else base
    return ModelInfo(
        name=name,
        path=path,
        description=str(provenance.get("description", "")),
        labels=list(config.get("labels", ["foreground"])),
        levels=len(config.get("kernel_sizes", [])),
        steps=list(config.get("steps", [])),
        fire_rate=config.get("fire_rate"),
        calibrated=bool(calibration),
        largest_component=bool(postprocessing.get("largest_component", False)),
    )


def shipped_model_files() -> Dict[str, str]:
    """Name -> path of every shipped model (nca_core.registry lists them without torch)."""
    from nca_core import registry

    return {name: str(path) for name, path in registry.shipped_models().items()}


def model_catalog() -> List[ModelInfo]:
    """Every shipped model with its description; unreadable files are listed with the problem."""
    infos = []
    for name, path in sorted(shipped_model_files().items()):
        try:
            infos.append(read_model_info(path, name))
        except (OSError, ValueError) as error:
            infos.append(ModelInfo(name=name, path=path, description=f"unreadable: {error}"))
    return infos


# --- dependencies ------------------------------------------------------------------------

# torch comes from Slicer's PyTorch extension (PyTorchUtils); the rest through pip.
TORCH_REQUIREMENT = ">=2.0"
PIP_REQUIREMENTS = {
    # import name: pip requirement (everything a feature of the module or its batch script uses)
    "safetensors": "safetensors>=0.4,<1",
    "matplotlib": "matplotlib>=3.5",  # --preview of the batch script / m3dnca segment
    "tqdm": "tqdm>=4.60",  # progress bars of the command line the batch script runs
}
# SimpleITK and numpy ship with Slicer.


def missing_pip_packages(find_spec=importlib.util.find_spec) -> List[str]:
    """pip requirements whose module cannot be found."""
    return [req for module, req in PIP_REQUIREMENTS.items() if find_spec(module) is None]


def install_message(torch_missing: bool, pip_missing: Sequence[str]) -> str:
    """The single confirmation text listing everything that will be installed."""
    lines = ["M3DNCASegment needs these Python packages, which are not installed yet:", ""]
    if torch_missing:
        lines.append(f"  - PyTorch (torch{TORCH_REQUIREMENT}), through the PyTorch extension; "
                     "a GPU build is chosen when an NVIDIA GPU is present")
    for requirement in pip_missing:
        lines.append(f"  - {requirement}")
    lines += ["", "Download and install now? This can take several minutes and needs internet access."]
    return "\n".join(lines)


def installed_version(distribution: str) -> Optional[str]:
    try:
        from importlib.metadata import PackageNotFoundError, version
    except ImportError:  # pragma: no cover - Python < 3.8
        return None
    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def torch_needs_install(find_spec=importlib.util.find_spec, version_of=installed_version) -> bool:
    """True when torch is absent or older than 2.0 (TORCH_REQUIREMENT): both need the PyTorch
    extension to install a suitable one."""
    if find_spec("torch") is None:
        return True
    text = version_of("torch")
    if not text:
        return False  # importable but without metadata (a source build): take it as it is
    try:
        major = int(text.split(".")[0])
    except ValueError:
        return False
    return major < 2


def pytorch_extension_missing(find_spec=importlib.util.find_spec) -> bool:
    """Slicer's PyTorch extension (module PyTorchUtils) installs torch; without it nothing can."""
    return find_spec("PyTorchUtils") is None
