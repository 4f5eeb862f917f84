"""Shared fixtures: the real data beside the repository, when present."""
from __future__ import annotations

from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[2]
SHARED_DATA = REPOSITORY.parent / "shared" / "data"


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data not available: {path} is absent (it sits beside the repository on dev/CI machines)")
    return path


@pytest.fixture(scope="session")
def hippocampus_dir() -> Path:
    return _require(SHARED_DATA / "hippocampus")


@pytest.fixture(scope="session")
def formats_dir() -> Path:
    return _require(SHARED_DATA / "formats")


@pytest.fixture(scope="session")
def wholehead_dir() -> Path:
    return _require(SHARED_DATA / "wholehead")
