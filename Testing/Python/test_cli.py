"""The m3dnca command line end to end: segment a real case, info, new-model, python -m."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nca_core.cli.main import main
from nca_core.inference import fused
from nca_core.network.config import preset
from nca_core.modelfile.bundle import load_model

from nca_helpers import REPOSITORY, assert_same_geometry, fast, model_file, run_cli, smooth_volume, write_volume

REPORT_KEYS = {"nqm", "quality", "predicted_dice", "runs", "model", "seconds"}


def python_m(*args: str) -> subprocess.CompletedProcess:
    """``python -m nca_core ...`` from the repository root."""
    env = dict(os.environ, PYTHONPATH=str(REPOSITORY))
    return subprocess.run([sys.executable, "-m", "nca_core", *map(str, args)], cwd=REPOSITORY, env=env,
                          capture_output=True, text=True, timeout=300)


def test_io_only_segment_writes_every_output_of_a_real_case(hippocampus_dir, tmp_path):
    """Every output file with the case's geometry, the report's fields. I/O only: the model is untrained (probability 0.5 everywhere, NQM 0), so this says nothing about segmentation quality."""
    case = hippocampus_dir / "imagesTr" / "hippocampus_001.nii.gz"
    model = model_file(tmp_path / "untrained.m3dnca")
    outdir = tmp_path / "out"
    result = python_m("segment", case, "-o", outdir, "--model", model, "--runs", "2", "--steps", "2,2",
                      "--save-probability", "--preview")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in outdir.iterdir()) == [
        f"hippocampus_001_{s}" for s in ("preview.png", "prob.nii.gz", "report.json", "seg.nii.gz", "variance.nii.gz")]
    original = sitk.ReadImage(str(case))
    for name, pixel in (("seg", sitk.sitkUInt8), ("variance", sitk.sitkFloat32), ("prob", sitk.sitkFloat32)):
        image = sitk.ReadImage(str(outdir / f"hippocampus_001_{name}.nii.gz"))
        assert image.GetPixelID() == pixel, name
        assert_same_geometry(image, original, name)
    probability = sitk.GetArrayFromImage(sitk.ReadImage(str(outdir / "hippocampus_001_prob.nii.gz")))
    assert np.allclose(probability, 0.5)  # fc1 is zero: logits stay 0
    assert (outdir / "hippocampus_001_preview.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads((outdir / "hippocampus_001_report.json").read_text())
    assert REPORT_KEYS <= set(report)
    assert report["runs"] == 2 and report["model"] == str(model)
    assert report["quality"] == "unknown" and report["predicted_dice"] is None  # uncalibrated model
    assert report["nqm"] == 0.0  # identical runs: no spread
    assert isinstance(report["seconds"], float) and report["seconds"] > 0
    assert "hippocampus_001: NQM" in result.stdout


@pytest.mark.parametrize("options, light, empty", [
    (["--runs", "1"], "unknown", False),
    (["--runs", "2", "--fire-rate", "0"], "unknown", False),
    (["--runs", "2", "--steps", "0,0"], "red", True),  # nothing found: red even though the runs agree
    (["--runs", "3"], "green", False),
])
def test_light_is_not_green_when_the_runs_cannot_disagree(hippocampus_dir, tmp_path, capsys, options, light, empty):
    case = hippocampus_dir / "imagesTr" / "hippocampus_001.nii.gz"
    code, out, err = run_cli(capsys, "segment", case, "-o", tmp_path, "--model", "hippocampus", *options)
    report = json.loads((tmp_path / "hippocampus_001_report.json").read_text())
    assert code == 0 and report["quality"] == light and report["empty_segmentation"] is empty
    assert (report["foreground_voxels"] == 0) is empty
    if light == "unknown":
        assert report["predicted_dice"] is None and "cannot disagree" in report["explanation"]


def test_report_of_a_calibrated_model_predicts_dice(tmp_path, capsys):
    from dataclasses import replace

    from nca_core.modelfile.bundle import save_model
    from nca_core.quality.nqm import Calibration
    from nca_core.modelfile.registry import load

    path = tmp_path / "calibrated.m3dnca"
    calibration = Calibration(slope=-0.1, intercept=0.99)
    save_model(replace(load("hippocampus"), calibration=calibration), path)
    sample = REPOSITORY / "Resources" / "SampleData" / "mni152_hippocampus_right.nii.gz"
    code, out, err = run_cli(capsys, "segment", sample, "-o", tmp_path / "out", "--model", path, "--runs", "2")
    assert code == 0, err
    report = json.loads((tmp_path / "out" / "mni152_hippocampus_right_report.json").read_text())
    assert report["nqm"] > 0 and report["foreground_voxels"] > 0
    assert report["predicted_dice"] == pytest.approx(calibration.predicted_dice(report["nqm"]), abs=1e-4)
    assert report["quality"] == "green"  # predicted 0.99 - 0.1 * NQM >= target 0.8 + margin 0.05


def test_new_model_writes_a_loadable_untrained_model(tmp_path, capsys):
    path = tmp_path / "p.m3dnca"
    code, out, err = run_cli(capsys, "new-model", "--preset", "prostate", "-o", path)
    assert code == 0 and "12480 parameters" in out
    bundle = load_model(path)
    assert bundle.config == preset("prostate") and bundle.calibration is None
    code, out, err = run_cli(capsys, "new-model", "--preset", "nonsense", "-o", tmp_path / "x.m3dnca")
    assert code == 1 and err == ["m3dnca: error: unknown preset 'nonsense'; known presets: "
                                 + ", ".join(sorted(["prostate", "hippocampus", "hippocampus-2class"]))]
    assert not (tmp_path / "x.m3dnca").exists()


def test_new_model_keeps_an_existing_file_and_names_the_target_in_errors(tmp_path, capsys):
    trained = model_file(tmp_path / "trained.m3dnca", trained_like=True)
    before = trained.read_bytes()
    code, out, err = run_cli(capsys, "new-model", "--preset", "hippocampus", "-o", trained)
    assert code == 1 and err == [f"m3dnca: error: {trained}: exists; pass --overwrite to replace it with an untrained model"]
    assert trained.read_bytes() == before
    assert run_cli(capsys, "new-model", "--preset", "hippocampus", "-o", trained, "--overwrite")[0] == 0
    assert trained.read_bytes() != before
    for target, reason in [(tmp_path / "no-folder" / "x.m3dnca", "No such file or directory"),
                           (tmp_path, "Is a directory")]:
        code, out, err = run_cli(capsys, "new-model", "--preset", "hippocampus", "-o", target, "--overwrite")
        assert code == 1 and err == [f"m3dnca: error: {target}: {reason}"]  # not the temporary's name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trained.m3dnca"]


def test_info_json(tmp_path, capsys):
    path = model_file(tmp_path / "h.m3dnca")
    code, out, err = run_cli(capsys, "info", path, "--json")
    assert code == 0
    info = json.loads(out)
    assert info["parameters"] == 12_480
    assert info["config"] == preset("hippocampus").to_dict()
    assert info["calibration"] is None and info["provenance"] == {"description": "test"}
    assert info["file"] == str(path)
    code, out, err = run_cli(capsys, "info", path)
    assert code == 0 and "parameters: 12,480" in out and "calibration: none" in out


def test_info_of_a_missing_model(tmp_path, capsys):
    code, out, err = run_cli(capsys, "info", tmp_path / "no.m3dnca")
    assert code == 1 and err == [f"m3dnca: error: {tmp_path / 'no.m3dnca'}: model file not found"]


def test_python_m_equals_the_m3dnca_command(tmp_path, capsys):
    path = model_file(tmp_path / "h.m3dnca")
    code, in_process, _ = run_cli(capsys, "info", path, "--json")
    module = python_m("info", path, "--json")
    assert module.returncode == code == 0 and module.stdout == in_process
    scripts = (REPOSITORY / "pyproject.toml").read_text()
    assert 'm3dnca = "nca_core.cli.main:main"' in scripts  # the console script is this same main()
    # the installed console script sits beside this interpreter (a venv's bin/ is often not on PATH)
    installed = Path(sys.executable).parent / ("m3dnca.exe" if os.name == "nt" else "m3dnca")
    assert installed.is_file(), f"{installed}: no console script; install the package (bash scripts/setup.sh test)"
    command = subprocess.run([str(installed), "info", str(path), "--json"], capture_output=True, text=True,
                             timeout=300, env=dict(os.environ, PYTHONPATH=str(REPOSITORY)))
    assert command.returncode == 0 and command.stdout == module.stdout
    failing = python_m("info", tmp_path / "absent.m3dnca")
    assert failing.returncode == 1 and failing.stderr.strip().endswith("model file not found")


def test_help_lists_the_contract_commands(capsys):
    with pytest.raises(SystemExit) as raised:
        run_cli(capsys, "--help")
    assert raised.value.code == 0
    text = capsys.readouterr().out
    assert all(name in text for name in ("segment", "new-model", "info"))


def test_quick_bench_names_its_small_volumes_and_judges_no_target(capsys):
    code, out, err = run_cli(capsys, "bench", "--quick", "--workload", "hippocampus-batch", "--runs", "1")
    rows = [line for line in out.splitlines() if line.startswith("quick-hippocampus-20x24x20")]
    engines = ["torch", "fused"] if fused.available() else ["torch"]
    assert code == 0 and not err and [row.split()[1] for row in rows] == engines + ["reference"]
    assert not re.search(r"\bmet\b|MISSED", out)
    assert "extrapolated from 1 run(s) x 1 case(s)" in out  # never more runs than asked for


@pytest.mark.parametrize("option", ["--runs", "--fast-steps", "--threads", "--chunk-voxels"])
@pytest.mark.parametrize("value", ["0", "-1"])
def test_bench_refuses_counts_below_one(capsys, option, value):
    with pytest.raises(SystemExit) as raised:
        main(["bench", "--quick", option, value])
    assert raised.value.code == 2 and option in capsys.readouterr().err


def test_thick_slices_get_a_note_line_and_a_report_field(tmp_path, capsys):
    model = model_file(tmp_path / "m.m3dnca")
    for name, spacing in (("thick", (0.9, 0.9, 4.5)), ("thin", (0.9, 0.9, 1.2))):
        write_volume(tmp_path / f"{name}.nii.gz", smooth_volume(), spacing)
    code, out, errors = run_cli(capsys, "segment", tmp_path / "thick.nii.gz", tmp_path / "thin.nii.gz",
                                "-o", tmp_path / "out", *fast(model))
    assert code == 0, errors
    notes = [line for line in out.splitlines() if ": note: " in line]
    assert notes == ["thick: note: thick slices (4.5 mm, over 3 mm): the hippocampus is poorly sampled; "
                     "a 1 mm 3D T1 is more reliable"]
    reports = {name: json.loads((tmp_path / "out" / f"{name}_report.json").read_text()) for name in ("thick", "thin")}
    assert reports["thick"]["largest_spacing_mm"] == 4.5 and reports["thick"]["thick_slices"] == notes[0][len("thick: note: "):]
    assert reports["thin"]["largest_spacing_mm"] == 1.2 and reports["thin"]["thick_slices"] is None
