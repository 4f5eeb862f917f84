"""Python packages the module's features need, installed after one confirmation.

torch comes from Slicer's PyTorch extension (PyTorchUtils), the rest through pip. A missing
extension, or a torch older than 2.0 that the extension cannot replace, is said before asking.
"""
from __future__ import annotations

import slicer

from . import options


def missing():
    """(torch absent or older than 2.0, missing pip requirements)."""
    return options.torch_needs_install(), options.missing_pip_packages()


def setupPythonRequirements(interactive: bool = True) -> bool:
    """True when everything is installed (after installing it). With ``interactive=False`` no
    dialog ever opens: raises RuntimeError saying what is missing. False when the user declines."""
    torchMissing, pipMissing = missing()
    if not torchMissing and not pipMissing:
        return True
    if torchMissing and options.pytorch_extension_missing():
        raise RuntimeError("M3DNCASegment needs PyTorch 2.0 or newer, which the PyTorch extension installs: "
                           "install the PyTorch extension from the Extensions Manager, restart Slicer, "
                           "and apply again.")
    message = options.install_message(torchMissing, pipMissing)
    if not interactive:
        raise RuntimeError(message.replace("Download and install now?",
                                           "Install them from the M3DNCASegment panel (Apply) first."))
    if not slicer.util.confirmOkCancelDisplay(message, windowTitle="Install Python packages"):
        return False
    with slicer.util.WaitCursor():
        if torchMissing:
            import PyTorchUtils

            torch = PyTorchUtils.PyTorchUtilsLogic().installTorch(
                askConfirmation=False, torchVersionRequirement=options.TORCH_REQUIREMENT)
            if torch is None:
                raise RuntimeError("PyTorch could not be installed.")
        if pipMissing:
            slicer.util.pip_install(list(pipMissing))
    return True
