"""Whole heads through the command line: the files, the report's registration and per-side
boxes, the preview (one row per side under the overall badge), the progress bar on a terminal,
the overall light as the worse side, and the scans that must be refused (issue 32).

The head is Colin 27 (``wholehead/ch2.nii.gz``) with its AAL outline (1 = left, 2 = right).
"""
from __future__ import annotations

import json
import os
import pty
import re
import select
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nca_core.space import locate
from nca_core.modelfile.registry import load
from nca_core.space.regions import SIDES
from nca_core.inference.wholehead import locate_regions

from nca_helpers import REPOSITORY, assert_same_geometry, preview_badges, run_cli

RUNS = 2
LEFT, RIGHT = 1, 2  # the AAL outline's values and the label map's


@pytest.fixture(scope="module")
def bundle():
    return load("hippocampus")


@pytest.fixture(scope="module")
def head(wholehead_dir):
    return sitk.ReadImage(str(wholehead_dir / "ch2.nii.gz"), sitk.sitkFloat32)


@pytest.fixture(scope="module")
def boxes(head, bundle):
    """Side -> the voxels of the head its hippocampus box covers (where the engine finds it)."""
    regions = locate_regions(head, bundle, SIDES).regions
    return {region.side: region.footprint(head) for region in regions}


def _changed(head, where, values) -> sitk.Image:
    """The head with the voxels ``where`` replaced by ``values(voxels, rng)``."""
    array = sitk.GetArrayFromImage(head).transpose(2, 1, 0).copy()
    array[where] = values(array[where], np.random.default_rng(0))
    image = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
    image.CopyInformation(head)
    return image


def _on_a_terminal(args, cwd: Path):
    """Run ``python -m nca_core ARGS`` with stderr on a pseudo-terminal (120 columns): (exit code,
    stdout, the terminal's text)."""
    import fcntl
    import struct
    import termios

    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    env = dict(os.environ, PYTHONPATH=str(REPOSITORY), OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"))
    process = subprocess.Popen([sys.executable, "-m", "nca_core", *map(str, args)], cwd=cwd, env=env,
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=terminal)
    os.close(terminal)
    chunks = []
    while True:
        ready, _, _ = select.select([controller], [], [], 300)
        if not ready:
            process.kill()
            raise AssertionError("no terminal output for 300 s")
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # the terminal closed: the process is gone
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(controller)
    stdout = process.stdout.read().decode()
    return process.wait(60), stdout, b"".join(chunks).decode(errors="replace")


@pytest.fixture(scope="module")
def head_run(wholehead_dir, tmp_path_factory):
    """``m3dnca segment ch2.nii.gz --preview`` run once with a terminal."""
    outdir = tmp_path_factory.mktemp("head") / "out"
    code, stdout, terminal = _on_a_terminal(
        ["segment", wholehead_dir / "ch2.nii.gz", "-o", outdir, "--runs", RUNS, "--preview"], outdir.parent)
    assert code == 0, terminal
    return outdir, stdout, terminal


def test_a_whole_head_writes_every_file_on_the_scans_grid(head_run, wholehead_dir):
    outdir, stdout, _ = head_run
    assert sorted(p.name for p in outdir.iterdir()) == [
        f"ch2_{suffix}" for suffix in ("preview.png", "report.json", "seg.nii.gz", "variance.nii.gz")]
    scan = sitk.ReadImage(str(wholehead_dir / "ch2.nii.gz"))
    for suffix in ("seg", "variance"):
        assert_same_geometry(sitk.ReadImage(str(outdir / f"ch2_{suffix}.nii.gz")), scan, suffix)
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(outdir / "ch2_seg.nii.gz")))
    outline = sitk.GetArrayFromImage(sitk.ReadImage(str(wholehead_dir / "ch2_hippocampus_aal.nii.gz")))
    for value in (LEFT, RIGHT):  # each side's label inside its own outline (see test_wholehead.py)
        found, truth = labels == value, outline == value
        assert 2 * np.count_nonzero(found & truth) / (found.sum() + truth.sum()) >= 0.5, value
    assert "ch2: NQM" in stdout


def test_the_report_has_the_registration_and_a_box_per_side(head_run, wholehead_dir, bundle):
    outdir, _, _ = head_run
    report = json.loads((outdir / "ch2_report.json").read_text())
    registration = report["registration"]
    assert registration["correlation"] >= locate.MIN_CORRELATION
    low, high = locate.SCALE_RANGE
    assert len(registration["scales"]) == 3 and all(low <= s <= high for s in registration["scales"])
    assert [side["side"] for side in report["sides"]] == list(SIDES)
    assert report["labels"] == {"1": "left hippocampus", "2": "right hippocampus"}
    outline = sitk.ReadImage(str(wholehead_dir / "ch2_hippocampus_aal.nii.gz"))
    array = sitk.GetArrayFromImage(outline).transpose(2, 1, 0)
    sizes = set()
    for side, value in zip(report["sides"], (LEFT, RIGHT)):
        box = side["box"]
        assert box["mirrored"] == (side["side"] != bundle.preprocessing.side)  # the model learned one side
        sizes.add(tuple(box["size"]))
        centroid = outline.TransformContinuousIndexToPhysicalPoint(np.argwhere(array == value).mean(axis=0).tolist())
        distance = np.linalg.norm(np.subtract(box["centre_lps_mm"], centroid))
        assert distance < 15, f"{side['side']} box centre {distance:.1f} mm from the outline's centre"
        assert side["foreground_voxels"] > 1000 and side["label_values"] == [value]
        # the light is that of the side's NQM under the model's calibration
        assert side["quality"] == "green" and side["nqm"] < bundle.calibration.nqm_threshold
    assert len(sizes) == 1, "the two boxes differ in size"
    assert report["quality"] == "green"


def test_the_preview_has_the_overall_badge_and_one_row_per_side(head_run):
    outdir, _, _ = head_run
    assert preview_badges(outdir / "ch2_preview.png") == ["green", "green", "green"]  # overall, left, right


def test_the_progress_bar_names_registration_and_counts_each_sides_runs(head_run):
    _, _, terminal = head_run
    frames = [frame.strip() for frame in re.split(r"[\r\n]", terminal) if frame.strip()]
    assert any(frame.startswith("ch2: finding the hippocampi") for frame in frames), frames[:5]
    totals = {}
    for frame in frames:
        match = re.match(r"ch2: (left|right) hippocampus:.*?(\d+)/(\d+) \[", frame)
        if match:
            totals.setdefault(match.group(1), set()).add(int(match.group(3)))
    assert totals == {"left": {RUNS}, "right": {2 * RUNS}}, totals  # the second side adds its runs


def test_the_overall_light_is_the_worse_side(head, boxes, bundle, tmp_path, capsys):
    """Noise in the right box: that side's runs disagree beyond the calibrated threshold, the
    left stays green, and the overall light (report, stdout, preview badge) is the right's."""
    noisy = _changed(head, boxes["right"], lambda box, rng: rng.uniform(box.min(), box.max(), box.shape))
    sitk.WriteImage(noisy, str(tmp_path / "noisy.nii.gz"))
    code, out, err = run_cli(capsys, "segment", tmp_path / "noisy.nii.gz", "-o", tmp_path / "out", "--runs", RUNS,
                             "--preview")
    assert code == 0, err
    report = json.loads((tmp_path / "out" / "noisy_report.json").read_text())
    left, right = report["sides"]
    threshold = bundle.calibration.nqm_threshold
    assert left["quality"] == "green" and left["nqm"] < threshold
    assert right["quality"] != "green" and right["nqm"] > threshold, right
    assert report["quality"] == right["quality"] and report["predicted_dice"] == right["predicted_dice"]
    assert f"noisy: NQM" in out and right["quality"] in out
    assert preview_badges(tmp_path / "out" / "noisy_preview.png") == [right["quality"], "green", right["quality"]]


def _cut_below_the_hippocampi(head, boxes):
    """The head without its lowest slices, 6 mm up into the hippocampus boxes (the brain above is
    whole, so the registration still fits)."""
    return head[:, :, min(box[2].start for box in boxes.values()) + 6:]


def _cut_through_the_hippocampi(head, boxes):
    """The head cut above the middle of both hippocampus boxes: most of each box is gone."""
    return head[:, :, max((box[2].start + box[2].stop) // 2 for box in boxes.values()) + 4:]


def _stretched(head, boxes):
    """The head 1.4 times taller than a head is (a wrong slice thickness in the header)."""
    image = sitk.Image(head)
    image.SetSpacing([s * f for s, f in zip(head.GetSpacing(), (1.0, 1.0, 1.4))])
    return image


def _left_box_emptied(head, boxes):
    return _changed(head, boxes["left"], lambda box, rng: np.zeros_like(box))


REFUSED_HEADS = {  # name -> (the scan made from the head, words of the refusal)
    "box-outside-the-scan": (_cut_through_the_hippocampi, "hippocampus lies outside the scanned field of view"),
    "empty-box": (_left_box_emptied, "the left hippocampus box is empty"),
}
DOUBTED_HEADS = {  # name -> (the scan made from the head, words of the doubt: any of them)
    "box-partly-outside-the-scan": (_cut_below_the_hippocampi, ("of the box lies outside the scan",)),
    "implausible-scales": (_stretched, ("unusually sized", "fits this scan poorly")),  # the fit strains or fails
}


def _one_refusal(capsys, path: Path, outdir: Path, words: str) -> str:
    code, out, err = run_cli(capsys, "segment", path, "-o", outdir, "--runs", RUNS)
    assert code == 1 and len(err) == 1, err
    assert err[0].startswith(f"m3dnca: error: {path}: ") and words in err[0], err[0]
    assert not outdir.exists() or not any(outdir.glob("*.nii.gz"))
    return err[0]


@pytest.mark.slow
@pytest.mark.parametrize("name", list(REFUSED_HEADS))
def test_heads_that_cannot_be_segmented_are_refused_in_one_line(head, boxes, tmp_path, capsys, name):
    make, words = REFUSED_HEADS[name]
    path = tmp_path / f"{name}.nii.gz"
    sitk.WriteImage(make(head, boxes), str(path))
    _one_refusal(capsys, path, tmp_path / "out", words)


@pytest.mark.slow
@pytest.mark.parametrize("name", list(DOUBTED_HEADS))
def test_doubted_heads_are_segmented_with_the_reason_and_never_green(head, boxes, tmp_path, capsys, name):
    """A head whose localisation is uncertain is no input error: it is segmented, and each
    doubted side says why in its report and explanation, its light at most yellow."""
    make, words = DOUBTED_HEADS[name]
    path = tmp_path / f"{name}.nii.gz"
    sitk.WriteImage(make(head, boxes), str(path))
    code, out, err = run_cli(capsys, "segment", path, "-o", tmp_path / "out", "--runs", RUNS)
    assert code == 0, err
    report = json.loads((tmp_path / "out" / f"{name}_report.json").read_text())
    doubted = [side for side in report["sides"] if side["box"]["doubt"]]
    assert doubted, report["sides"]
    for side in doubted:
        assert any(word in side["box"]["doubt"] for word in words), side["box"]["doubt"]
        assert side["explanation"].startswith(side["box"]["doubt"]) and side["caveats"][0] == side["box"]["doubt"]
        assert side["quality"] in ("yellow", "red"), side
    assert report["quality"] != "green"


@pytest.mark.parametrize("name", ["brain1_image.nrrd", "ct_dicom_series"])
def test_another_contrast_and_a_ct_series_are_refused(formats_dir, tmp_path, capsys, name):
    """docs/robustness.md: a 6.5 mm-slice brain MRI of another contrast, and the CT series."""
    words = "does not look like a T1-weighted MRI" if name == "brain1_image.nrrd" else "neither a hippocampus crop"
    _one_refusal(capsys, formats_dir / name, tmp_path / "out", words)
