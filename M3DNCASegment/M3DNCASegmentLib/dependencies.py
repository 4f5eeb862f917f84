"""Python packages the module's features need, installed after one confirmation.

torch comes from Slicer's PyTorch extension (PyTorchUtils), the rest through pip. A missing
extension, or a torch older than 2.0 that the extension cannot replace, is said before asking.
"""
from __future__ import annotations

import importlib.util
from typing import List, Optional, Sequence

# torch comes from Slicer's PyTorch extension (PyTorchUtils); the rest through pip.
TORCH_REQUIREMENT = ">=2.0"
PIP_REQUIREMENTS = {
    # import name: pip requirement (everything a feature of the module or its batch script uses)
    "safetensors": "safetensors>=0.4,<1",
    "matplotlib": "matplotlib>=3.5",  # --preview of the batch script / m3dnca segment
    "tqdm": "tqdm>=4.60",  # progress bars of the command line the batch script runs
    "nibabel": "nibabel>=4.0",  # FreeSurfer .mgz/.mgh inputs of the batch script
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


def missing():
    """(torch absent or older than 2.0, missing pip requirements)."""
    return torch_needs_install(), missing_pip_packages()


def setupPythonRequirements(interactive: bool = True) -> bool:
    """True when everything is installed (after installing it). With ``interactive=False`` no
    dialog ever opens: raises RuntimeError saying what is missing. False when the user declines."""
    import slicer

    torchMissing, pipMissing = missing()
    if not torchMissing and not pipMissing:
        return True
    if torchMissing and pytorch_extension_missing():
        raise RuntimeError("M3DNCASegment needs PyTorch 2.0 or newer, which the PyTorch extension installs: "
                           "install the PyTorch extension from the Extensions Manager, restart Slicer, "
                           "and apply again.")
    message = install_message(torchMissing, pipMissing)
    if not interactive:
        raise RuntimeError(message.replace("Download and install now?",
                                           "Install them from the M3DNCASegment panel (Apply) first."))
    if not slicer.util.confirmOkCancelDisplay(message, windowTitle="Install Python packages"):
        return False
    with slicer.util.WaitCursor():
        if torchMissing:
            import PyTorchUtils

            torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(
                askConfirmation=False, torchVersionRequirement=TORCH_REQUIREMENT)
            if torch is None:
                raise RuntimeError("PyTorch could not be installed.")
        if pipMissing:
            slicer.util.pip_install(list(pipMissing))
    return True
