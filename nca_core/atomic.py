"""Atomic output: write to a temporary name in the target folder, then rename."""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator, List, Tuple


@contextlib.contextmanager
def _errors_naming(path: Path) -> Iterator[None]:
    """OS errors on a temporary file name the file the user asked for instead."""
    try:
        yield
    except OSError as error:
        raise OSError(error.errno, error.strerror, str(path)) from None


def _temporary_beside(path: Path, suffix: str) -> str:
    """A new empty file beside ``path`` with the permissions a plain ``open`` would give."""
    with _errors_naming(path):
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(handle)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temporary, 0o666 & ~umask)
    return temporary


@contextlib.contextmanager
def atomic_path(path: Path, suffix: str = "") -> Iterator[str]:
    """Yield a temporary file name beside ``path``; on success it replaces ``path``.

    On any error the temporary file is removed and ``path`` is left as it was.
    """
    temporary = _temporary_beside(Path(path), suffix)
    try:
        yield temporary
        with _errors_naming(path):
            os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


@contextlib.contextmanager
def atomic_group() -> Iterator[Callable[[Path, str], str]]:
    """Stage several files: ``stage(path, suffix)`` gives a temporary name beside ``path``.

    When the block succeeds every temporary replaces its target, in staging order (stage
    the file that marks a complete set last); on any error all temporaries are removed
    and no target is touched.
    """
    staged: List[Tuple[str, Path]] = []

    def stage(path: Path, suffix: str = "") -> str:
        path = Path(path)
        temporary = _temporary_beside(path, suffix)
        staged.append((temporary, path))
        return temporary

    try:
        yield stage
        for temporary, path in staged:
            with _errors_naming(path):
                os.replace(temporary, path)
    finally:
        for temporary, _ in staged:
            if os.path.exists(temporary):
                os.remove(temporary)


def write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as temporary:
        Path(temporary).write_bytes(data)


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2))
