"""The demo as a user runs it: ``bash scripts/demo.sh`` sets up .venv, takes the mean whole-head
T1 out of the pydeface wheel on PyPI, and segments and judges both hippocampi (slow: it installs
and downloads). The README says: both sides found and green, a preview with one row per side."""
from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest
import SimpleITK as sitk

from nca_core.modelfile.registry import load

from nca_helpers import REPOSITORY, preview_badges

pytestmark = pytest.mark.slow


def test_demo_finds_both_sides_and_previews_one_row_per_side():
    inputs, outputs = REPOSITORY / "demo-input", REPOSITORY / "demo-output"
    for folder in (inputs, outputs):  # the demo's own folders (ignored by git): nothing stale can pass
        shutil.rmtree(folder, ignore_errors=True)
    done = subprocess.run(["bash", str(REPOSITORY / "scripts" / "demo.sh")], cwd=REPOSITORY, capture_output=True,
                          text=True, timeout=1800, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in outputs.iterdir()) == [
        f"mean_head_t1_{suffix}" for suffix in ("preview.png", "report.json", "seg.nii.gz", "variance.nii.gz")]
    report = json.loads((outputs / "mean_head_t1_report.json").read_text())
    threshold = load("hippocampus").calibration.nqm_threshold
    assert [side["side"] for side in report["sides"]] == ["left", "right"]
    for side in report["sides"]:  # README: both sides green on the demo head
        assert side["box"] is not None and side["foreground_voxels"] > 1000, side
        assert side["quality"] == "green" and side["nqm"] < threshold, side
    assert report["quality"] == "green"
    seg = sitk.ReadImage(str(outputs / "mean_head_t1_seg.nii.gz"))
    labels = sitk.GetArrayFromImage(seg).transpose(2, 1, 0)
    for value, sign in ((1, 1), (2, -1)):  # LPS: +x is the patient's left
        centre = seg.TransformContinuousIndexToPhysicalPoint(np.argwhere(labels == value).mean(axis=0).tolist())
        assert sign * centre[0] > 10, f"label {value} at x = {centre[0]:.1f} mm (LPS)"
    assert preview_badges(outputs / "mean_head_t1_preview.png") == ["green"] * 3  # overall, then a row per side
