"""Threads beside other programs, early error exits without torch, the long-run notice (issue 21)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from nca_core.cli.main import main
from nca_core.network.config import preset
from nca_core.inference.limits import long_run_notice
from nca_core.space.preprocessing import Preprocessing
from nca_core.inference.threads import usable_cores, waits_passively

from nca_helpers import REPOSITORY


def python_c(code: str, **env: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter (torch not yet imported) from the repository root."""
    unset = ("OMP_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
    environment = {k: v for k, v in os.environ.items() if k not in unset}
    environment.update(PYTHONPATH=str(REPOSITORY), **env)
    return subprocess.run([sys.executable, "-c", code], cwd=REPOSITORY, env=environment,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("busy, passive", [(0.0, False), (0.4, False), (1.0, True), (3.0, True)])
def test_threads_wait_passively_when_other_programs_want_a_core(busy, passive):
    assert waits_passively(busy) is passive


def test_threads_chosen_before_torch_loads_are_the_ones_torch_uses():
    code = ("import os\n"
            "import nca_core.inference.threads as threads\n"
            "threads.busy_cores = lambda: {busy}\n"
            "chosen = threads.use_threads({requested})\n"
            "import torch\n"
            "print(chosen, torch.get_num_threads(), os.environ.get('OMP_WAIT_POLICY'))")
    cores = str(usable_cores())
    several = "PASSIVE" if usable_cores() > 1 else "None"
    assert python_c(code.format(busy=0.0, requested=None)).stdout.split() == [cores, cores, "None"]
    assert python_c(code.format(busy=1.0, requested=None)).stdout.split() == [cores, cores, several]
    assert python_c(code.format(busy=1.0, requested=1)).stdout.split() == ["1", "1", "None"]  # no one to wait for
    assert python_c(code.format(busy=1.0, requested=10_000)).stdout.split() == [cores, cores, several]
    # the user's settings win
    assert python_c(code.format(busy=0.0, requested=None), OMP_NUM_THREADS="1").stdout.split() == ["1", "1", "None"]
    assert python_c(code.format(busy=1.0, requested=None), GOMP_SPINCOUNT="1000").stdout.split()[2] == "None"


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


def test_a_whole_head_for_the_hippocampus_model_is_announced_with_its_time():
    config, grid = preset("hippocampus"), Preprocessing(spacing=[1.0, 1.0, 1.0])
    notice = long_run_notice((256, 256, 180), (1.0, 1.0, 1.0), config, grid, runs=10, steps=None, threads=1)
    assert notice is not None and notice.startswith("large input (256x256x180 voxels, 11.8 million")
    assert notice.endswith("10 runs will take about 6 min on 1 CPU thread(s)")
    assert long_run_notice((36, 50, 36), (1.0, 1.0, 1.0), config, grid, runs=10, steps=None, threads=1) is None
    # a finely sampled scan has fewer voxels on the model's 1 mm grid than in its file
    assert long_run_notice((256, 256, 180), (0.5, 0.5, 0.5), config, grid, runs=10, steps=None, threads=1) is None
