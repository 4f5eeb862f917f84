"""Reading cases ahead: a whole head's registration runs on a background thread while the
command line loads the engine (the first case) or segments the case before it. SimpleITK
registers with the GIL released, so the two overlap in one process.

Files are read where a case is started, on the caller's thread: reading captures the
process's stderr for ITK's messages, which must not catch another thread's output. Closing
the reader (an error, Ctrl+C) waits for the registration under way, about a second.
Without torch: ``m3dnca segment`` starts the first case before it imports the engine.
"""
from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

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
    volume, head = routed(path, channel, locate, preprocessing)
    return registered(volume, progress) if head else ReadCase(volume)


def routed(path: Path, channel: Optional[int], locate: str, preprocessing: Preprocessing) -> Tuple[Volume, bool]:
    """``path``'s volume and whether it takes the whole-head route (``route.locates_hippocampi``)."""
    volume = read_volume(path, channel)
    return volume, locates_hippocampi(volume.reference, locate, preprocessing)


def registered(volume: Volume, progress: Optional[StepProgress] = None) -> ReadCase:
    """``volume`` with its registration onto the head atlas."""
    return ReadCase(volume, register(head_scan(volume.reference), HeadAtlas.load(), progress))


class ReadAhead:
    """The cases of a batch, each read when started and its head registered on the background
    thread, one after another: ``take`` gives a case (started then if it was not) and starts
    the next one. A case's steps reach the ``progress`` of its ``take``: the latest one reached
    before, then each one while ``take`` waits."""

    def __init__(self, channel: Optional[int], locate: str, preprocessing: Preprocessing):
        self._options = (channel, locate, preprocessing)
        self._jobs: "queue.Queue[Optional[Tuple[Future, Callable[[], ReadCase]]]]" = queue.Queue()
        self._thread: Optional[threading.Thread] = None
        self._closed = False
        self._pending: Dict[Path, Future] = {}
        self._order: List[Path] = []
        self._lock = threading.Lock()  # guards the two dicts below and every call of a listener
        self._steps: Dict[Path, Tuple[str, int, int]] = {}  # each case's latest step
        self._listeners: Dict[Path, StepProgress] = {}  # the progress of a take that waits

    def follow(self, paths: Sequence[Path]) -> None:
        """The cases ``take`` will ask for, in order (those to be segmented, not the skipped
        ones); a case started that is not among them is dropped."""
        self._order = [Path(path) for path in paths]
        for path in [path for path in self._pending if path not in self._order]:
            self._pending.pop(path).cancel()

    def start(self, path: Path) -> None:
        """Read ``path`` now and queue its registration (a head's); what reading raises is
        raised by its ``take``."""
        path = Path(path)
        if self._closed:
            raise RuntimeError("ReadAhead.start after close")
        if path in self._pending:
            return
        future: Future = Future()
        self._pending[path] = future
        try:
            volume, head = routed(path, *self._options)
        except Exception as error:  # noqa: BLE001 - the case's own failure, reported when it is taken
            future.set_exception(error)
            return
        if not head:
            future.set_result(ReadCase(volume))
            return
        self._jobs.put((future, lambda: registered(volume, lambda *step: self._report(path, *step))))
        if self._thread is None:
            self._thread = threading.Thread(target=self._work, name="m3dnca-read-ahead", daemon=True)
            self._thread.start()

    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            future, task = job
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(task())
                except BaseException as error:  # noqa: BLE001 - handed to the caller by take
                    future.set_exception(error)

    def _report(self, path: Path, step: str, done: int, total: int) -> None:
        with self._lock:
            self._steps[path] = (step, done, total)
            listener = self._listeners.get(path)
            if listener is not None:
                listener(step, done, total)

    def take(self, path: Path, progress: Optional[StepProgress] = None) -> ReadCase:
        """``path``'s case, its steps shown on ``progress``; raises what reading or
        registering it raised."""
        path = Path(path)
        self.start(path)
        future = self._pending.pop(path)
        try:
            following = self._order[self._order.index(path) + 1:] if path in self._order else []
            if following:
                self.start(following[0])
            if progress is not None:
                with self._lock:
                    self._listeners[path] = progress
                    if path in self._steps:
                        progress(*self._steps[path])  # the step reached before the wait began
            return future.result()
        except BaseException:
            future.cancel()  # not registered after all when taking it was interrupted
            raise
        finally:
            with self._lock:
                self._listeners.pop(path, None)
                self._steps.pop(path, None)

    def close(self) -> None:
        """Drop the cases not taken and end the thread, waiting for the registration it is in
        (at most one head's: ITK's code cannot be stopped halfway, and a thread still in it
        when Python shuts down aborts the process)."""
        self._closed = True
        for future in self._pending.values():
            future.cancel()
        self._pending.clear()
        self._jobs.put(None)
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> "ReadAhead":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
