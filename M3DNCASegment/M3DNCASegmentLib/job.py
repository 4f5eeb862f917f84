"""Segmentation in a separate Python process, so Slicer stays responsive.

The module writes the input volume (``input.nrrd``: voxels and geometry) to a temporary folder,
starts ``worker.py`` with Slicer's Python (``PythonSlicer``) and polls the folder from a QTimer:
``progress.json`` (step, done, total), then ``result.npz`` + ``result.json`` or ``error.json``.
Cancelling kills the process at once; nothing reaches the scene until the result is complete.
A failed job's ``worker.log`` is kept (``kept_log``). Pure Python: tested without Slicer.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import numpy as np
from nca_core.errors import EXIT_OK

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "worker.py")

RUNNING, FINISHED, FAILED, CANCELLED = "running", "finished", "failed", "cancelled"


@dataclass
class JobStatus:
    state: str
    done: int = 0
    total: int = 0
    message: str = ""
    step: str = ""  # the engine's step: "registration", "segmentation", "left", "right", ...


@dataclass
class JobResult:
    """Engine outputs in (X, Y, Z) order plus the report (``SegmentationResult.report()``)."""

    labels: np.ndarray
    variance: np.ndarray
    report: Dict[str, Any] = field(default_factory=dict)

    @property
    def label_names(self):
        """The engine's {label value: name} (a list of names, value k = class k, from older reports)."""
        labels = self.report.get("labels") or ["foreground"]
        return dict(labels) if isinstance(labels, dict) else list(labels)


def read_json(path: str) -> Optional[Dict[str, Any]]:
    """The file's JSON, or None while it is missing or half-written."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return None


def write_json_atomic(path: str, data: Dict[str, Any]) -> None:
    temporary = path + ".tmp"
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(data, handle)
    os.replace(temporary, path)


class BackgroundJob:
    """One segmentation running in a child process. Call ``start``, then ``poll`` until the
    state is not ``running``; ``result`` once finished; ``cleanup`` always."""

    def __init__(self, image, options, engine_dir: str,
                 python: Optional[str] = None, workdir: Optional[str] = None):
        """``image``: the volume as a SimpleITK image (voxels with their LPS geometry);
        ``options``: ``nca_core.inference.settings.SegmentSettings``."""
        self.options = options
        self.engine_dir = engine_dir
        self.python = python or sys.executable
        self.workdir = workdir or tempfile.mkdtemp(prefix="m3dnca-job-")
        self._image = image
        self.process: Optional[subprocess.Popen] = None
        self._log = None
        self.state = RUNNING
        self.kept_log = ""  # where a failed job's worker.log was kept
        self.parent_pid = os.getpid()  # the worker stops when this process is gone

    def path(self, name: str) -> str:
        return os.path.join(self.workdir, name)

    def command(self) -> List[str]:
        return [self.python, WORKER, self.workdir]

    def start(self) -> None:
        """Write the input and start the worker; on failure nothing is left behind."""
        try:
            import SimpleITK as sitk

            sitk.WriteImage(self._image, self.path("input.nrrd"))
            self._image = None
            spec = dict(self.options.to_dict(), engine_dir=self.engine_dir, parent_pid=self.parent_pid)
            write_json_atomic(self.path("job.json"), spec)
            self._log = open(self.path("worker.log"), "w", encoding="utf-8")
            self.process = subprocess.Popen(self.command(), stdout=self._log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, cwd=self.workdir, **_own_process_group())
        except BaseException:
            self.cleanup()
            raise

    def poll(self) -> JobStatus:
        progress = read_json(self.path("progress.json")) or {}
        done = int(progress.get("done", 0))
        total = int(progress.get("total", self.options.runs))
        step = str(progress.get("step", ""))
        if self.state == CANCELLED:
            return JobStatus(CANCELLED, done, total, "cancelled", step)
        if self.process is None:
            return JobStatus(FAILED, 0, total, "the segmentation process was not started", step)
        code = self.process.poll()
        if code is None:
            return JobStatus(RUNNING, done, total, "", step)
        self._close_log()
        if code == EXIT_OK and os.path.exists(self.path("result.json")):
            self.state = FINISHED
            return JobStatus(FINISHED, total, total, "", step)
        if self.state != FAILED:
            self.state = FAILED
            self.kept_log = self.keep_log()
        return JobStatus(FAILED, done, total, self.failure_message(code), step)

    def keep_log(self) -> str:
        """Copy worker.log out of the job folder (which cleanup removes); returns its new path."""
        source = self.path("worker.log")
        if not os.path.exists(source):
            return ""
        target = os.path.join(tempfile.gettempdir(), "m3dnca-worker-last-failure.log")
        try:
            shutil.copyfile(source, target)
        except OSError:
            return ""
        return target

    def failure_message(self, code: int) -> str:
        error = read_json(self.path("error.json"))
        if error and error.get("message"):
            return str(error["message"])
        tail = self.log_tail()
        where = f" (full log: {self.kept_log})" if self.kept_log else ""
        return f"the segmentation process stopped (exit code {code})" + (f": {tail}" if tail else "") + where

    def log_tail(self, lines: int = 1) -> str:
        try:
            with open(self.path("worker.log"), encoding="utf-8", errors="replace") as handle:
                text = [line.strip() for line in handle if line.strip()]
        except OSError:
            return ""
        return " | ".join(text[-lines:])

    def wait(self, timeout: Optional[float] = None) -> JobStatus:
        """Block until the process ends (console use and tests)."""
        if self.process is not None:
            self.process.wait(timeout)
        return self.poll()

    def cancel(self) -> None:
        """Stop at once: kill the process; its partial files are removed by ``cleanup``."""
        self.state = CANCELLED
        if self.process is not None and self.process.poll() is None:
            _kill_tree(self.process)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                pass
        self._close_log()

    def result(self) -> JobResult:
        if self.state != FINISHED:
            raise RuntimeError("the segmentation has not finished")
        report = read_json(self.path("result.json")) or {}
        with np.load(self.path("result.npz")) as data:
            return JobResult(labels=data["labels"].copy(), variance=data["variance"].copy(), report=report)

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def cleanup(self) -> None:
        self._close_log()
        shutil.rmtree(self.workdir, ignore_errors=True)


def _own_process_group() -> Dict[str, Any]:
    """Popen options that start the worker in a process group of its own, so that cancel
    also ends the Python that Slicer's PythonSlicer launcher starts as its child."""
    if os.name == "nt":
        return {"creationflags": 0x08000000 | 0x00000200}  # CREATE_NO_WINDOW | CREATE_NEW_PROCESS_GROUP
    return {"start_new_session": True}


def _kill_tree(process: subprocess.Popen) -> None:
    """Kill the worker and every process it started."""
    if os.name == "nt":
        subprocess.run(["taskkill", "/F", "/T", "/PID", str(process.pid)], capture_output=True,
                       creationflags=0x08000000)
        process.kill()  # should taskkill itself fail
    else:
        try:
            os.killpg(process.pid, signal.SIGKILL)  # its own session: the group is the worker and its children
        except ProcessLookupError:
            pass
