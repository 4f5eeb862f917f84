"""Reading cases ahead: a case's volume, and for a whole head its registration, on one
background thread while the command line loads the engine (the first case) or segments the
case before it. SimpleITK registers with the GIL released, so the two overlap in one process.

Without torch: ``m3dnca segment`` starts the first case before it imports the engine.
"""
from __future__ import annotations

import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from ..inference.route import locates_hippocampi
from ..space.atlas import HeadAtlas
from ..space.imaging import Volume, head_scan, read_volume
from ..space.locate import Registration, StepProgress, register
from ..space.preprocessing import Preprocessing


@dataclass
class ReadCase:
    """A case as read from disk, with its head's registration when it takes the whole-head route."""

    volume: Volume
    registration: Optional[Registration] = None


def read_case(path: Path, channel: Optional[int], locate: str, preprocessing: Preprocessing,
              progress: Optional[StepProgress] = None) -> ReadCase:
    """``path``'s volume (``channel`` of a 4D or vector image) and, when a model with this
    ``preprocessing`` locates its hippocampi (``locate``), its registration (reported to
    ``progress`` as the step "registration").

    Raises:
        NCAError: an unreadable file, or a scan that is no head for the whole-head route.
    """
    volume = read_volume(path, channel)
    if not locates_hippocampi(volume.reference, locate, preprocessing):
        return ReadCase(volume)
    return ReadCase(volume, register(head_scan(volume.reference), HeadAtlas.load(), progress))


class ReadAhead:
    """Reads the cases of a batch one after another on a background thread: ``take`` gives a
    case (waiting for it, or reading it then if it was not started) and starts the next one.
    A case's steps reach the ``progress`` of its ``take``: the latest one reached before, then
    each one while ``take`` waits."""

    def __init__(self, channel: Optional[int], locate: str, preprocessing: Preprocessing):
        self._options = (channel, locate, preprocessing)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="m3dnca-read-ahead")
        self._pending: Dict[Path, Future] = {}
        self._order: List[Path] = []
        self._lock = threading.Lock()  # guards the two dicts below and every call of a listener
        self._steps: Dict[Path, Tuple[str, int, int]] = {}  # each case's latest step
        self._listeners: Dict[Path, StepProgress] = {}  # the progress of a take that waits

    def follow(self, paths: Sequence[Path]) -> None:
        """The cases ``take`` will ask for, in order (those to be segmented, not the skipped ones)."""
        self._order = [Path(path) for path in paths]

    def start(self, path: Path) -> None:
        """Begin reading ``path`` once the cases started before it are read."""
        path = Path(path)
        if path not in self._pending:
            self._pending[path] = self._pool.submit(read_case, path, *self._options,
                                                    lambda *step: self._report(path, *step))

    def _report(self, path: Path, step: str, done: int, total: int) -> None:
        with self._lock:
            self._steps[path] = (step, done, total)
            listener = self._listeners.get(path)
            if listener is not None:
                listener(step, done, total)

    def take(self, path: Path, progress: Optional[StepProgress] = None) -> ReadCase:
        """``path``'s case, its steps shown on ``progress`` while it is waited for; raises what
        reading or registering it raised."""
        path = Path(path)
        future = self._pending.pop(path, None)
        following = self._order[self._order.index(path) + 1:] if path in self._order else []
        if following:
            self.start(following[0])
        if future is None:
            return read_case(path, *self._options, progress)
        if progress is not None:
            with self._lock:
                self._listeners[path] = progress
                if path in self._steps:
                    progress(*self._steps[path])  # the step reached before the wait began
        try:
            return future.result()
        finally:
            with self._lock:
                self._listeners.pop(path, None)
                self._steps.pop(path, None)

    def close(self) -> None:
        """Drop the cases not taken; one being read finishes on its own (the thread is not waited for)."""
        self._pending.clear()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> "ReadAhead":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
