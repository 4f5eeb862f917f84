"""How PyTorch's CPU threads behave beside other programs (issue 21).

PyTorch's OpenMP threads meet at a barrier after every operation, and by default a thread
that arrives first spins for ~3 ms before it sleeps. On an idle machine that is the fastest;
when another program holds a core, the spinning takes the time the late thread needs and a
batch ran 3-13x slower. ``OMP_WAIT_POLICY=PASSIVE`` (waiting threads sleep at once) removed
that slowdown but made an idle machine ~40 % slower. So: one thread per usable core, and
passive waiting when other programs want a core at start (docs/performance.md, "Threads under
load"). OpenMP reads these settings when torch loads, so call ``use_threads`` before it is
imported. Standard library only, so that the CLI and the Slicer worker can call it first.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Optional

THREADS_VARIABLE = "OMP_NUM_THREADS"  # set by the user: their choice wins over the automatic one
WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")  # likewise


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def busy_cores(samples: int = 5, interval: float = 0.01) -> float:
    """Cores that other programs want now: on Linux the runnable tasks other than this one
    (median of a few samples of ``/proc/loadavg``), elsewhere the 1-minute load average."""
    try:
        counts = []
        for index in range(samples):
            if index:
                time.sleep(interval)
            with open("/proc/loadavg", encoding="ascii") as handle:
                counts.append(int(handle.read().split()[3].split("/")[0]) - 1)
        return float(sorted(counts)[len(counts) // 2])
    except (OSError, ValueError, IndexError):
        try:
            return os.getloadavg()[0]
        except (AttributeError, OSError):  # Windows
            return 0.0


def waits_passively(busy: float) -> bool:
    """Whether threads should sleep at once: when other programs want at least half a core."""
    return busy >= 0.5


def use_threads(requested: Optional[int] = None) -> int:
    """Apply ``requested`` threads (at most the usable cores), else ``$OMP_NUM_THREADS`` when
    set, else one per usable core; wait passively when cores are busy, unless the user chose a
    wait policy. Before torch is imported this goes through the environment; once it is (an
    in-process caller such as the tests), only a requested count changes anything."""
    requested = requested and min(requested, usable_cores())
    torch = sys.modules.get("torch")
    if torch is not None:
        if requested:
            torch.set_num_threads(requested)
        return torch.get_num_threads()
    user = os.environ.get(THREADS_VARIABLE, "")
    threads = requested or (int(user) if user.isdigit() and int(user) > 0 else usable_cores())
    os.environ[THREADS_VARIABLE] = str(threads)
    if threads > 1 and not any(name in os.environ for name in WAIT_VARIABLES) and waits_passively(busy_cores()):
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return threads
