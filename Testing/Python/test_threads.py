"""Early error exits without torch, the long-run notice (issue 21)."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from nca_core.config import preset
from nca_core.limits import long_run_notice
from nca_core.preprocessing import Preprocessing

from nca_helpers import REPOSITORY


def python_c(code: str, **env: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter (torch not yet imported) from the repository root."""
    environment = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    environment.update(PYTHONPATH=str(REPOSITORY), **env)
    return subprocess.run([sys.executable, "-c", code], cwd=REPOSITORY, env=environment,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("args", [["segment", "{tmp}/absent.nii.gz", "-o", "{tmp}/out"],
                                  ["segment", "{tmp}/absent.nii.gz", "-o", "{tmp}/out", "--model", "nope"],
                                  ["evaluate", "--data", "{tmp}", "--model", "hippocampus", "-o", "{tmp}/out",
                                   "--runs", "0"]])
def test_errors_that_need_no_model_exit_before_torch_loads(tmp_path, args):
    code = ("import sys\n"
            "from nca_core.cli import main\n"
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


def test_a_whole_head_for_the_hippocampus_model_is_announced_with_its_time():
    config, grid = preset("hippocampus"), Preprocessing(spacing=[1.0, 1.0, 1.0])
    notice = long_run_notice((256, 256, 180), (1.0, 1.0, 1.0), config, grid, runs=10, steps=None, threads=1)
    assert notice is not None and notice.startswith("large input (256x256x180 voxels, 11.8 million")
    assert notice.endswith("10 runs will take about 6 min on 1 CPU thread(s)")
    assert long_run_notice((36, 50, 36), (1.0, 1.0, 1.0), config, grid, runs=10, steps=None, threads=1) is None
    # a finely sampled scan has fewer voxels on the model's 1 mm grid than in its file
    assert long_run_notice((256, 256, 180), (0.5, 0.5, 0.5), config, grid, runs=10, steps=None, threads=1) is None
