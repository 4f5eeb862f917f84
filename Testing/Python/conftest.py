"""Shared fixtures: the real data beside the repository, when present; under ``CI=true`` the
skips that mean "CI lacks something it must have" (the shared data, slicer-core, a shipped model) fail instead."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[2]
SHARED_DATA = REPOSITORY.parent / "shared" / "data"
DATA_MISSING = "real data not available"
# Skip reasons (their start) that CI must never see: a test CI is expected to run did not run.
REQUIRED_IN_CI = (DATA_MISSING, "slicer-core", "no shipped")


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{DATA_MISSING}: {path} is absent (it sits beside the repository on dev/CI machines)")
    return path


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def _skip_reason(report) -> str:
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return reason[len("Skipped: "):] if reason.startswith("Skipped: ") else reason


def _fail_required_skip(report) -> None:
    """Under CI=true, a skip for missing shared data or slicer-core becomes a failure."""
    if not (_in_ci() and report.skipped and not hasattr(report, "wasxfail")):
        return
    reason = _skip_reason(report)
    if reason.startswith(REQUIRED_IN_CI):
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true, where this test must run: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    _fail_required_skip(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    outcome = yield
    _fail_required_skip(outcome.get_result())


@pytest.fixture(scope="session")
def hippocampus_dir() -> Path:
    return _require(SHARED_DATA / "hippocampus")


@pytest.fixture(scope="session")
def formats_dir() -> Path:
    return _require(SHARED_DATA / "formats")


@pytest.fixture(scope="session")
def wholehead_dir() -> Path:
    return _require(SHARED_DATA / "wholehead")


@pytest.fixture(scope="session")
def realheads_dir() -> Path:
    return _require(SHARED_DATA / "realheads")


@pytest.fixture(scope="session")
def prostate_dir() -> Path:
    return _require(SHARED_DATA / "prostate")


# --- real MRML (slicer-core) for the Slicer module's tests --------------------------------------

class _Module:
    """``slicer.modules.<name>`` of the application (a Qt module object in Slicer): only ``logic()``."""

    __slots__ = ("_logic",)

    def __init__(self, logic):
        self._logic = logic

    def logic(self):
        return self._logic


class _Modules:
    __slots__ = ("volumes", "segmentations", "colors")


@pytest.fixture(scope="module")
def app():
    """A real MRML scene with Slicer's application, colors, volumes and segmentations logic,
    made the ``slicer.mrmlScene`` of ``slicer.util`` (needs slicer-core)."""
    import slicer

    scene = slicer.vtkMRMLScene()
    appLogic = slicer.vtkSlicerApplicationLogic()
    appLogic.SetMRMLScene(scene)
    modules = _Modules()
    for name, logic in (("colors", slicer.vtkSlicerColorLogic()),
                        ("volumes", slicer.vtkSlicerVolumesLogic()),
                        ("segmentations", slicer.vtkSlicerSegmentationsModuleLogic())):
        logic.SetMRMLScene(scene)
        logic.SetMRMLApplicationLogic(appLogic)
        appLogic.SetModuleLogic(name.capitalize(), logic)  # as Slicer registers its modules' logic
        setattr(modules, name, _Module(logic))
    saved = {name: getattr(slicer, name, None) for name in ("mrmlScene", "modules")}
    slicer.mrmlScene, slicer.modules = scene, modules
    yield scene
    for name, value in saved.items():
        if value is None:
            delattr(slicer, name)
        else:
            setattr(slicer, name, value)


@pytest.fixture
def scene(app):
    """The scene emptied, with the composite nodes of three slice views."""
    import slicer

    app.Clear(0)
    for view in ("Red", "Yellow", "Green"):
        composite = slicer.vtkMRMLSliceCompositeNode()
        composite.SetLayoutName(view)
        app.AddNode(composite)
    return app
