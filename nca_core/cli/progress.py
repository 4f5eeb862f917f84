"""``m3dnca segment``'s progress: one bar over every run of every case (each side of a whole
head counts its runs), with the step and the time left, on stderr when it is a terminal
(nothing otherwise)."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, List, Sequence

from tqdm import tqdm


class BatchProgress:
    """Advances by runs as cases progress; the lines printed meanwhile go above the bar."""

    def __init__(self, inputs: Sequence[Path], runs: int):
        enabled = sys.stderr.isatty()
        cases = 0
        if enabled:
            from .batch import unique_cases
            from ..space.imaging import list_inputs

            cases = len(unique_cases(list_inputs(list(inputs))))
        self.runs = runs
        self.finished = 0  # runs of the cases reported so far
        self.case_steps: List[str] = []  # the current case's steps that count runs
        self.bar = tqdm(total=cases * runs, unit="run", leave=False, disable=not enabled, file=sys.stderr)

    def __enter__(self) -> "BatchProgress":
        return self

    def __exit__(self, *exc_info) -> None:
        self.bar.close()

    def for_case(self, case: str) -> Callable[[str, int, int], None]:
        """The case's ``progress(step, done, total)``: registration names itself; each side's
        runs after the first side's add ``runs`` to the bar's total."""
        self.bar.set_description(case)
        steps = self.case_steps = []

        def update(step: str, done: int, total: int) -> None:
            if step == "registration":
                self.bar.set_description(f"{case}: finding the hippocampi")
                return
            if step not in steps:
                steps.append(step)
                if len(steps) > 1:
                    self.bar.total += self.runs
                self.bar.set_description(case if step == "segmentation" else f"{case}: {step}")
            self.bar.update(self.finished + (len(steps) - 1) * self.runs + done - self.bar.n)

        return update

    def reporting(self, report: Callable) -> Callable:
        """``report``, counting the case as done (skipped and failed ones too)."""
        def reported(outcome) -> None:
            self.finished += self.runs * max(1, len(self.case_steps))
            self.bar.update(self.finished - self.bar.n)
            with tqdm.external_write_mode(file=sys.stdout):
                report(outcome)

        return reported

    def write(self, line: str) -> None:
        tqdm.write(line, file=sys.stderr)
