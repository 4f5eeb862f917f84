"""How PyTorch's CPU threads behave beside other programs (issue 21).

PyTorch's OpenMP threads meet at a barrier after every operation, and by default a thread
that arrives first spins for ~3 ms before it sleeps. When another program holds a core,
that spinning takes the time the late thread needs: a batch ran 3-13x slower beside a busy
process. With ``OMP_WAIT_POLICY=PASSIVE`` a waiting thread sleeps at once; measured on a
2-core machine under load, that removed the slowdown, and one thread per usable core then
beat fewer threads (docs/performance.md, "Threads under load"). OpenMP reads these settings
when torch loads, so call ``use_threads`` before it is imported. Standard library only, so
that the CLI and the Slicer worker can call it first.
"""
from __future__ import annotations

import os
import sys
from typing import Optional

THREADS_VARIABLE = "OMP_NUM_THREADS"  # set by the user: their choice wins over the automatic one
WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")  # likewise


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def use_threads(requested: Optional[int] = None) -> int:
    """Apply ``requested`` threads (at most the usable cores), else ``$OMP_NUM_THREADS`` when
    set, else one per usable core; idle threads sleep unless the user chose a wait policy.
    Before torch is imported this goes through the environment; once it is (an in-process
    caller such as the tests), only a requested count changes anything."""
    requested = requested and min(requested, usable_cores())
    torch = sys.modules.get("torch")
    if torch is not None:
        if requested:
            torch.set_num_threads(requested)
        return torch.get_num_threads()
    user = os.environ.get(THREADS_VARIABLE, "")
    threads = requested or (int(user) if user.isdigit() and int(user) > 0 else usable_cores())
    os.environ[THREADS_VARIABLE] = str(threads)
    if not any(name in os.environ for name in WAIT_VARIABLES):
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return threads
