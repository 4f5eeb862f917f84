"""Threads beside other programs, early error exits without torch, the long-run notice (issue 21)."""
from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time

import pytest

from nca_core.cli.main import main
from nca_core.inference.limits import long_run_notice
from nca_core.inference.threads import busy_cores, usable_cores
from nca_core.network.config import preset
from nca_core.space.preprocessing import Preprocessing

from nca_helpers import REPOSITORY


def python_c(code: str, **env: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter (torch not yet imported) from the repository root."""
    unset = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
    environment = {k: v for k, v in os.environ.items() if k not in unset}
    environment.update(PYTHONPATH=str(REPOSITORY), **env)
    return subprocess.run([sys.executable, "-c", code], cwd=REPOSITORY, env=environment,
                          capture_output=True, text=True, timeout=300)


CHOSEN = ("import os\n"
          "import nca_core.inference.threads as threads\n"
          "{cores}{load}"
          "chosen = threads.use_threads({requested})\n"
          "{torch}"
          "print(chosen, os.environ['OMP_NUM_THREADS'], os.environ.get('OMP_WAIT_POLICY'), {used})")
CORES = 4


def chosen(requested=None, busy=None, **env: str) -> list:
    """(threads chosen, $OMP_NUM_THREADS as torch will find it, OMP_WAIT_POLICY) in a fresh interpreter
    on a machine of CORES cores (injected, so that a 1-core runner checks the several-threads branch
    too); ``busy``: the cores other programs want, injected (None: measured, the real load)."""
    code = CHOSEN.format(cores=f"threads.usable_cores = lambda: {CORES}\n",
                         load="" if busy is None else f"threads.busy_cores = lambda: {busy}\n", requested=requested,
                         torch="", used="''")
    result = python_c(code, **env)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()[:3]


def test_threads_chosen_before_torch_loads_are_the_ones_torch_uses():
    result = python_c(CHOSEN.format(cores="", load="threads.busy_cores = lambda: 0.0\n", requested=None,
                                    torch="import torch\n", used="torch.get_num_threads()"))
    threads, variable, _, used = result.stdout.split()
    assert threads == variable == used == str(usable_cores()), result.stderr


@contextlib.contextmanager
def busy_programs(count: int = 2):
    """Programs that keep ``count`` cores busy (spinning at the lowest priority) meanwhile."""
    spinners = [subprocess.Popen([sys.executable, "-c", "import os\nos.nice(19)\nwhile True: pass"])
                for _ in range(count)]
    try:
        time.sleep(0.3)  # running
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


def test_other_programs_running_are_counted_as_busy_cores():
    with busy_programs(2):
        assert busy_cores() >= 1.0


def test_a_fresh_interpreter_beside_busy_programs_waits_passively():
    """Real load (two spinning programs), measured by the interpreter itself: all cores, and
    threads that sleep at once instead of spinning."""
    with busy_programs(2):
        assert chosen() == [str(CORES), str(CORES), "PASSIVE"]
        assert chosen(10_000) == [str(CORES), str(CORES), "PASSIVE"]  # never more threads than cores
        assert chosen(1) == ["1", "1", "None"]  # one thread waits for no one


def test_a_fresh_interpreter_on_an_idle_machine_keeps_the_default_wait():
    assert chosen(busy=0.0) == [str(CORES), str(CORES), "None"]
    assert chosen(2, busy=0.0) == ["2", "2", "None"]


def test_the_users_thread_and_wait_settings_win():
    assert chosen(busy=0.0, OMP_NUM_THREADS="1") == ["1", "1", "None"]
    assert chosen(busy=3.0, GOMP_SPINCOUNT="1000")[2] == "None"
    assert chosen(busy=3.0, OMP_WAIT_POLICY="ACTIVE")[2] == "ACTIVE"


@pytest.mark.parametrize("args", [["segment", "{tmp}/absent.nii.gz", "-o", "{tmp}/out"],
                                  ["segment", "{tmp}/absent.nii.gz", "-o", "{tmp}/out", "--model", "nope"],
                                  ["segment", "{tmp}/absent.nii.gz", "-o", "{tmp}/out", "--threads", "0"],
                                  ["evaluate", "--data", "{tmp}", "--model", "hippocampus", "-o", "{tmp}/out",
                                   "--runs", "0"]])
def test_errors_that_need_no_model_exit_before_torch_loads(tmp_path, args):
    code = ("import sys\n"
            "from nca_core.cli.main import main\n"
            "try:\n"
            f"    code = main({[a.format(tmp=tmp_path) for a in args]!r})\n"
            "except SystemExit as exit:\n"
            "    code = exit.code\n"
            "print(code, 'torch' in sys.modules)")
    result = python_c(code)
    assert result.stdout.split()[-1] == "False", result.stderr
    assert int(result.stdout.split()[0]) in (1, 2)
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_threads_below_one_are_refused_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as raised:
        main(["segment", str(tmp_path / "a.nii.gz"), "-o", str(tmp_path / "out"), "--threads", "0"])
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert raised.value.code == 2 and errors == ["m3dnca segment: error: argument --threads: must be at least 1"]


def _minutes(shape, spacing=(1.0, 1.0, 1.0), runs=10, threads=1):
    """The minutes the long-run notice announces, or None without a notice."""
    notice = long_run_notice(shape, spacing, preset("hippocampus"), Preprocessing(spacing=[1.0, 1.0, 1.0]),
                             runs=runs, steps=None, threads=threads)
    if notice is None:
        return None
    match = re.fullmatch(rf"large input \({'x'.join(map(str, shape))} voxels, ([\d.]+) million on the model's grid\): "
                         rf"{runs} runs will take about (\d+) min on {threads} CPU thread\(s\)", notice)
    assert match, notice
    return int(match.group(2))


def test_a_whole_head_is_announced_with_a_time_that_grows_with_the_work():
    head = (256, 256, 180)
    ten = _minutes(head)
    assert ten is not None and _minutes((36, 50, 36)) is None  # a training-sized crop: no notice
    assert abs(_minutes(head, runs=20) - 2 * ten) <= 1  # twice the runs, twice the time (whole minutes)
    assert _minutes(head, threads=4) < ten
    # a finely sampled scan has fewer voxels on the model's 1 mm grid than in its file
    fine = _minutes(head, spacing=(0.5, 0.5, 0.5), runs=80)
    assert fine is not None and abs(fine - ten) <= 1  # an eighth of the voxels, eight times the runs
