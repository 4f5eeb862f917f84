"""Progress over a cohort: cases done, failed and left, the rate and the time left. In a
terminal a tqdm bar on stderr; otherwise (a batch job's log) one line every ``LOG_INTERVAL``."""
from __future__ import annotations

import sys
import time
from typing import Callable, Optional

from tqdm import tqdm

LOG_INTERVAL = 60.0  # seconds between the status lines of a log


def duration_text(seconds: float) -> str:
    minutes = int(round(seconds / 60))
    if minutes < 1:
        return f"{seconds:.0f} s"
    return f"{minutes // 60} h {minutes % 60} min" if minutes >= 60 else f"{minutes} min"


class CohortProgress:
    """Counts the cases of one run as they finish; ``write`` puts lines above the bar."""

    def __init__(self, cases: int, terminal: Optional[bool] = None, clock: Callable[[], float] = time.monotonic):
        self.cases, self.done, self.failed = cases, 0, 0
        self.terminal = sys.stderr.isatty() if terminal is None else terminal
        self.clock = clock
        self.started = self.logged = clock()
        self.bar = tqdm(total=cases, unit="case", leave=False, disable=not self.terminal, file=sys.stderr,
                        smoothing=0.05)

    def __enter__(self) -> "CohortProgress":
        return self

    def __exit__(self, *exc_info) -> None:
        self.bar.close()

    @property
    def left(self) -> int:
        return self.cases - self.done - self.failed

    def count(self, failed: bool) -> None:
        """One case finished (``failed``: with an error)."""
        if failed:
            self.failed += 1
        else:
            self.done += 1
        self.bar.set_postfix_str(f"done {self.done}, failed {self.failed}, left {self.left}", refresh=False)
        self.bar.update(1)
        now = self.clock()
        if not self.terminal and (now - self.logged >= LOG_INTERVAL or not self.left):
            self.logged = now
            print(f"m3dnca: {self.status(now - self.started)}", file=sys.stderr, flush=True)

    def status(self, elapsed: float) -> str:
        """"12 of 20 cases finished (11 done, 1 failed), 8 left, 0.52 cases/s, about 15 s left"."""
        finished = self.done + self.failed
        text = (f"{finished} of {self.cases} cases finished ({self.done} done, {self.failed} failed), "
                f"{self.left} left")
        if finished and elapsed > 0:
            rate = finished / elapsed
            text += f", {rate:.2f} cases/s"
            if self.left:
                text += f", about {duration_text(self.left / rate)} left"
        return text

    def write(self, line: str, file=None) -> None:
        tqdm.write(line, file=file or sys.stderr)
