"""Atomic output: write to a temporary name in the target folder, then rename."""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator, List, Optional, Tuple


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
    the file that marks a complete set last). On any error, in the block or while
    replacing (an interrupt included), all temporaries are removed and every target is
    as it was: replaced ones get their previous file back, new ones are removed. The
    marker's previous version is moved aside first, so a crash while replacing leaves
    no marker beside a mixed set.
    """
    staged: List[Tuple[str, Path]] = []

    def stage(path: Path, suffix: str = "") -> str:
        path = Path(path)
        temporary = _temporary_beside(path, suffix)
        staged.append((temporary, path))
        return temporary

    try:
        yield stage
        _replace_all(staged)
    finally:
        for temporary, _ in staged:
            if os.path.exists(temporary):
                os.remove(temporary)


def _replace_all(staged: List[Tuple[str, Path]]) -> None:
    """Replace each target by its temporary; on any error undo the replacements made."""
    if not staged:
        return
    marker = staged[-1][1]
    undo: List[Tuple[Path, Optional[str]]] = []  # (target, backup of its previous file or None), as done
    backups: List[str] = []
    try:
        marker_backup = _backup(marker)
        if marker_backup is not None:  # the marker is away until the whole set is in place
            backups.append(marker_backup)
            os.remove(marker)
            undo.append((marker, marker_backup))
        for temporary, path in staged:
            if path != marker:  # recorded first: undoing a replacement not yet made is harmless
                backup = _backup(path)
                if backup is not None:
                    backups.append(backup)
                undo.append((path, backup))
            with _errors_naming(path):
                os.replace(temporary, path)
    except BaseException:
        for path, backup in reversed(undo):
            with contextlib.suppress(OSError):
                if backup is not None:
                    os.replace(backup, path)
                else:
                    os.remove(path)
        raise
    finally:
        for backup in backups:
            with contextlib.suppress(OSError):
                if os.path.lexists(backup):
                    os.remove(backup)


def _backup(path: Path) -> Optional[str]:
    """A hard link (or, where links are not possible, a copy) of ``path`` beside it; None if
    there is no file."""
    if not os.path.isfile(path):
        return None
    while True:
        backup = str(path.parent / f".{path.name}.{uuid.uuid4().hex[:12]}.previous")
        try:
            os.link(path, backup)
            return backup
        except FileExistsError:
            continue
        except OSError:  # a file system without hard links
            with _errors_naming(path):
                shutil.copy2(path, backup)
            return backup


def write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as temporary:
        Path(temporary).write_bytes(data)


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(data, indent=2))
