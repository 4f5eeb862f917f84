"""Panel choices -> the engine's options (``nca_core.inference.settings.SegmentSettings``), the model list
(torch-free headers, ``nca_core.modelfile.header``) and the module's Python dependencies."""
from __future__ import annotations

import importlib.util
import os
from typing import List, Optional, Sequence

from nca_core.inference.settings import LOCATE_CHOICES, SIDE_CHOICES  # noqa: F401  (the panel's side choices)
from nca_core.errors import NCAError  # noqa: F401
from nca_core.modelfile.header import ModelHeader, find_header, model_name, read_model_header, shipped_headers  # noqa: F401
from nca_core.inference.settings import SegmentSettings

DEVICE_CHOICES = ("auto", "CPU", "GPU")  # the panel's names; SegmentSettings reads them as auto, cpu, cuda
# Panel region -> how the engine takes the volume: "auto" finds both hippocampi in a whole head
# (a crop-sized volume is taken as it is), "roi" cuts the volume to a markups ROI first, and
# "volume" takes the volume as one crop.
REGION_CHOICES = ("auto", "roi", "volume")
_REGION_LOCATE = {"auto": "auto", "roi": "none", "volume": "none"}


def region_locate(region: str) -> str:
    try:
        return _REGION_LOCATE[region]
    except KeyError:
        raise NCAError(f"region must be one of {', '.join(REGION_CHOICES)}, not {region!r}") from None


def settings(model: str, runs=10, seed=0, device="auto", fireRate: Optional[float] = None, steps=None,
             side: str = "auto", region: str = "auto") -> SegmentSettings:
    """The engine's options from the panel's or the console's values, checked against the model.
    ``fireRate`` 0 or None: the model's own rate (the panel's spin box shows 0 as "model's own")."""
    header = find_header(model)
    return SegmentSettings.parse(
        model=header.path if os.path.isfile(model) else header.name, runs=runs, seed=seed, device=device,
        fire_rate=fireRate or None, steps=steps, side=side, locate=region_locate(region)).check(header.levels)


def model_catalog() -> List[ModelHeader]:
    return shipped_headers()


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
