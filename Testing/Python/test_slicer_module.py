"""The Slicer extension M3DNCASegment, checked without Slicer.

- pure helpers (M3DNCASegment/M3DNCASegmentLib): KJI<->IJK, RAS<->LPS, overlay thresholds,
  traffic-light text, options, model catalogue;
- the background job and its worker process, end to end on a tiny model;
- the batch script under plain Python;
- static checks against the real Slicer source: every slicer.util.X called exists in Slicer
  5.8's util.py (names in slicer_util_api.txt), the .ui widget names match the code, every
  shipped file is listed in CMake, every file parses as Python 3.9.
"""
from __future__ import annotations

import ast
import csv
import json
import math
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

REPOSITORY = Path(__file__).resolve().parents[2]
MODULE_DIR = REPOSITORY / "M3DNCASegment"
MODULE_FILE = MODULE_DIR / "M3DNCASegment.py"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "M3DNCASegment.ui"
PANEL_FILE = MODULE_DIR / "M3DNCASegmentLib" / "panel.py"
BATCH_SCRIPT = MODULE_DIR / "Scripts" / "m3dnca_batch.py"
API_LIST = Path(__file__).resolve().parent / "slicer_util_api.txt"

sys.path.insert(0, str(MODULE_DIR))
sys.path.insert(0, str(REPOSITORY))

from M3DNCASegmentLib import dependencies, display, geometry, options  # noqa: E402
from M3DNCASegmentLib.job import CANCELLED, FAILED, FINISHED, BackgroundJob  # noqa: E402
from nca_core.modelfile import registry  # noqa: E402
from nca_core.modelfile.header import read_model_header  # noqa: E402
from nca_core.quality.lights import LIGHT_COLORS  # noqa: E402


# --- geometry ------------------------------------------------------------------------------

def test_kji_ijk_round_trip_and_voxel_correspondence():
    kji = np.arange(2 * 3 * 4).reshape(2, 3, 4)  # K=2, J=3, I=4
    ijk = geometry.kji_to_ijk(kji)
    assert ijk.shape == (4, 3, 2)
    assert ijk.flags["C_CONTIGUOUS"]
    for i, j, k in [(0, 0, 0), (3, 2, 1), (1, 2, 0)]:
        assert ijk[i, j, k] == kji[k, j, i]
    assert np.array_equal(geometry.ijk_to_kji(ijk), kji)


def test_engine_input_is_a_float32_copy():
    kji = np.ones((2, 3, 4), dtype=np.int16)
    array = geometry.engine_input(kji)
    assert array.dtype == np.float32 and array.shape == (4, 3, 2)
    array[0, 0, 0] = 5
    assert kji[0, 0, 0] == 1


def test_kji_ijk_reject_non_3d():
    with pytest.raises(ValueError):
        geometry.kji_to_ijk(np.zeros((2, 3)))
    with pytest.raises(ValueError):
        geometry.ijk_to_kji(np.zeros((2, 3, 4, 5)))


def test_slicer_kji_matches_simpleitk_and_engine_order():
    sitk = pytest.importorskip("SimpleITK")
    xyz = np.random.default_rng(0).random((5, 6, 7)).astype(np.float32)  # engine (X, Y, Z)
    image = sitk.GetImageFromArray(geometry.ijk_to_kji(xyz))  # numpy view of ITK is (Z, Y, X)
    assert image.GetSize() == (5, 6, 7)
    assert image.GetPixel(4, 1, 2) == pytest.approx(float(xyz[4, 1, 2]))


def test_ras_lps_point_conversion():
    assert np.allclose(geometry.ras_to_lps_point([1, 2, 3]), [-1, -2, 3])
    assert np.allclose(geometry.lps_to_ras_point(geometry.ras_to_lps_point([4, -5, 6])), [4, -5, 6])


def test_ijk_to_ras_matches_simpleitk_physical_points():
    sitk = pytest.importorskip("SimpleITK")
    image = sitk.Image(4, 5, 6, sitk.sitkFloat32)
    image.SetOrigin((10.0, -20.0, 30.0))
    image.SetSpacing((0.5, 1.5, 2.0))
    angle = math.radians(30)
    image.SetDirection((math.cos(angle), -math.sin(angle), 0, math.sin(angle), math.cos(angle), 0, 0, 0, 1))
    matrix = geometry.ijk_to_ras_from_lps(image.GetOrigin(), image.GetSpacing(), image.GetDirection())
    for index in [(0, 0, 0), (3, 4, 5), (1, 2, 3)]:
        lps = image.TransformContinuousIndexToPhysicalPoint([float(v) for v in index])
        ras = matrix @ np.array(list(index) + [1.0])
        assert np.allclose(ras[:3], geometry.lps_to_ras_point(lps))
    origin, spacing, direction = geometry.lps_geometry_from_ijk_to_ras(matrix)
    assert np.allclose(origin, image.GetOrigin())
    assert np.allclose(spacing, image.GetSpacing())
    assert np.allclose(direction, image.GetDirection())


# --- display --------------------------------------------------------------------------------

def test_overlay_threshold_relative_to_peak():
    variance = np.zeros((4, 4, 4), np.float32)
    variance[0, 0, 0] = 0.4
    settings = display.overlay_settings(variance)
    assert settings.threshold == pytest.approx(0.4 * display.RELATIVE_THRESHOLD)
    assert settings.window_min == 0 and settings.window_max == pytest.approx(0.4)
    assert not settings.empty


def test_overlay_threshold_has_an_absolute_floor_and_flags_empty_maps():
    tiny = np.full((3, 3, 3), 0.001, np.float32)
    settings = display.overlay_settings(tiny)
    assert settings.threshold == display.ABSOLUTE_THRESHOLD
    assert settings.empty and settings.window_max > settings.threshold
    zero = display.overlay_settings(np.zeros((2, 2, 2)))
    assert zero.empty and zero.window_max > 0


def test_overlay_ignores_non_finite_values():
    variance = np.array([np.nan, np.inf, 0.2], np.float32).reshape(1, 1, 3)
    assert display.overlay_settings(variance).window_max == pytest.approx(0.2)


def test_opacity_is_clamped():
    assert display.clamp_opacity(1.7) == 1.0
    assert display.clamp_opacity(-1) == 0.0
    assert display.clamp_opacity(float("nan")) == display.DEFAULT_OVERLAY_OPACITY


def test_every_engine_light_has_a_colour_and_title():
    from nca_core.quality.nqm import EXPLANATIONS

    for light in EXPLANATIONS:
        assert re.fullmatch(r"#[0-9a-f]{6}", display.light_color(light))
        assert display.light_title(light)
        assert display.light_color(light) in display.light_stylesheet(light)
    assert len({display.light_color(light) for light in EXPLANATIONS}) == len(EXPLANATIONS)
    assert display.light_color("bogus") == LIGHT_COLORS["unknown"]
    assert "border" in display.light_stylesheet(None)


def test_light_text():
    assert display.format_nqm(0.12345) == "NQM: 0.1235"
    assert "empty" in display.format_nqm(math.inf)
    assert "empty" in display.format_nqm(None)
    assert display.format_predicted_dice(0.834) == "Predicted Dice: 0.83"
    assert display.format_predicted_dice(None) == "Predicted Dice: n/a"
    line = display.light_summary("red", 0.3, 0.5, "quality likely below the calibrated threshold: review carefully")
    assert line.startswith("Review carefully (red)") and "review carefully" in line and "\n" not in line
    assert display.progress_text(3, 10) == "Runs done: 3 / 10"
    assert display.progress_text(1, 3, "registration") == "Finding the hippocampi: stage 1 / 3"
    assert display.progress_text(2, 10, "left hippocampus") == "Left hippocampus: runs done 2 / 10"
    sides = display.side_summaries([{"side": "left", "quality": "green", "nqm": 0.03, "predicted_dice": 0.9},
                                    {"side": "right", "quality": "red", "nqm": None, "predicted_dice": None}])
    assert sides[0].startswith("Left: Good (green); NQM: 0.0300") and sides[1].startswith("Right: Review carefully (red)")


def test_segment_names_colours_and_terminology():
    specs = display.segment_specs(["anterior hippocampus", "posterior hippocampus"])
    assert [s[0] for s in specs] == [1, 2]
    assert [s[1] for s in specs] == ["Anterior hippocampus", "Posterior hippocampus"]
    assert specs[0][2] != specs[1][2]
    entry = specs[0][3]
    parts = entry.split("~")
    assert len(parts) == 7
    assert parts[2] == "SCT^5366008^Hippocampus" and parts[3] == "^^"
    assert display.terminology_entry("left hippocampus").split("~")[3] == "SCT^7771000^Left"
    assert display.terminology_entry("right posterior hippocampus").split("~")[3] == "SCT^24028007^Right"
    assert display.terminology_entry("foreground") is None
    named = display.segment_specs({"2": "right hippocampus", "1": "left hippocampus"})
    assert [(value, name) for value, name, _, _ in named] == [(1, "Left hippocampus"), (2, "Right hippocampus")]
    assert display.segment_name("") == "Segment"


# --- options --------------------------------------------------------------------------------

def test_panel_choices_become_the_engines_settings(tiny_model):
    from nca_core.inference.devices import DEVICE_CHOICES
    from nca_core.errors import NCAError

    for choice in options.DEVICE_CHOICES:
        assert options.SegmentSettings.parse(device=choice).device in DEVICE_CHOICES
    assert options.SegmentSettings.parse(device="GPU").device == "cuda"
    made = options.settings(str(tiny_model), runs=3, seed=2, device="CPU", fireRate=0.0, steps="2, 2", side="left",
                            region="roi")
    assert made.to_dict() == {"model": str(tiny_model), "runs": 3, "seed": 2, "device": "cpu", "fire_rate": None,
                              "steps": [2, 2], "side": "left", "locate": "none", "engine": "auto"}
    assert options.settings("hippocampus").model == "hippocampus"
    with pytest.raises(NCAError, match="one per level"):
        options.settings(str(tiny_model), steps="5")
    with pytest.raises(NCAError, match="unknown model"):
        options.settings("no-such-model")
    with pytest.raises(NCAError, match="--runs"):
        options.settings("hippocampus", runs=0)


def test_dependencies_message_lists_everything():
    assert dependencies.missing_pip_packages(lambda name: None) == list(dependencies.PIP_REQUIREMENTS.values())
    assert dependencies.missing_pip_packages(lambda name: object()) == []
    message = dependencies.install_message(True, ["safetensors>=0.4,<1"])
    assert "PyTorch" in message and "safetensors" in message
    # nothing heavy on the Slicer side, but everything a feature uses (--preview: matplotlib)
    assert not {"torchio", "tensorboard"} & set(dependencies.PIP_REQUIREMENTS)
    assert {"safetensors", "matplotlib", "tqdm"} <= set(dependencies.PIP_REQUIREMENTS)


def test_torch_older_than_2_needs_the_extension():
    present = lambda name: object()  # noqa: E731
    assert dependencies.torch_needs_install(lambda name: None, lambda name: None)
    assert dependencies.torch_needs_install(present, lambda name: "1.13.1+cu117")
    assert not dependencies.torch_needs_install(present, lambda name: "2.1.0")
    assert not dependencies.torch_needs_install(present, lambda name: None)  # a source build without metadata
    assert dependencies.pytorch_extension_missing(lambda name: None)
    assert not dependencies.pytorch_extension_missing(present)


def test_regions_map_to_the_engine_locate_choices():
    from nca_core.inference.settings import LOCATE_CHOICES, SIDE_CHOICES

    assert options.SIDE_CHOICES == SIDE_CHOICES and options.LOCATE_CHOICES == LOCATE_CHOICES
    assert [options.region_locate(region) for region in options.REGION_CHOICES] == ["auto", "none", "none"]
    with pytest.raises(options.NCAError):
        options.region_locate("head")


def test_engine_root_source_and_installed_layouts(tmp_path):
    import M3DNCASegmentLib

    assert M3DNCASegmentLib.engine_root(str(MODULE_DIR)) == str(REPOSITORY)
    installed = tmp_path / "qt-scripted-modules"
    (installed / "nca_core").mkdir(parents=True)
    (installed / "nca_core" / "__init__.py").write_text("")
    assert M3DNCASegmentLib.engine_root(str(installed)) == str(installed)
    assert M3DNCASegmentLib.engine_root(str(tmp_path / "nowhere")) is None


# --- model files (tiny model made with the engine) ---------------------------------------------

@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A small untrained model: for I/O-only tests (its probability is 0.5 everywhere)."""
    pytest.importorskip("torch")
    from nca_core.network.config import NCAConfig
    from nca_core.network.model import M3DNCA
    from nca_core.modelfile.bundle import ModelBundle, save_model

    config = NCAConfig(channels=8, hidden=16, kernel_sizes=[3, 3], steps=[2, 2], downscale=2)
    bundle = ModelBundle.from_model(M3DNCA(config), provenance={"description": "tiny test model"})
    path = tmp_path_factory.mktemp("models") / "tiny.m3dnca"
    save_model(bundle, path)
    return path


def test_read_model_header_without_torch(tiny_model):
    script = ("import sys; from nca_core.modelfile.header import read_model_header; "
              f"h = read_model_header({str(tiny_model)!r}); print(h.levels, 'torch' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=str(REPOSITORY), timeout=60)
    assert proc.stdout.split() == ["2", "False"], proc.stderr
    info = read_model_header(str(tiny_model))
    assert info.name == "tiny" and info.description == "tiny test model"
    assert info.labels == ["foreground"] and info.levels == 2 and info.steps == [2, 2]
    assert not info.calibrated and not info.largest_component
    assert "no NQM calibration" in info.summary()


def test_read_model_header_shows_largest_component_postprocessing_and_side(tmp_path):
    pytest.importorskip("torch")
    from nca_core.modelfile.bundle import load_model, save_model
    from nca_core.space.postprocessing import Postprocessing
    from nca_core.modelfile.registry import resolve

    bundle = load_model(resolve("hippocampus"))
    bundle.postprocessing = Postprocessing(largest_component=True)
    save_model(bundle, tmp_path / "lcc.m3dnca")
    info = read_model_header(str(tmp_path / "lcc.m3dnca"))
    assert info.largest_component and "largest connected component" in info.summary()
    assert info.side == bundle.preprocessing.side == "left"


def test_read_model_header_rejects_other_files_as_load_model_does(tmp_path):
    from nca_core.errors import ModelFileError
    from nca_core.modelfile.bundle import load_model

    bad = tmp_path / "bad.m3dnca"
    bad.write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00{}   ")
    short = tmp_path / "short.m3dnca"
    short.write_bytes(b"abc")
    huge = tmp_path / "huge.m3dnca"
    huge.write_bytes(b"\xff" * 8 + b"{}")
    for path, words in ((bad, "no m3dnca metadata"), (short, "too short"), (huge, "truncated")):
        with pytest.raises(ModelFileError, match=words) as header_error:
            read_model_header(str(path))
        with pytest.raises(ModelFileError) as load_error:
            load_model(path)
        assert str(header_error.value) == str(load_error.value)


def test_model_catalog_lists_models_in_model_dir(tiny_model, monkeypatch):
    monkeypatch.setenv(registry.MODEL_DIR_VARIABLE, str(tiny_model.parent))
    catalog = {info.name: info for info in options.model_catalog()}
    assert "tiny" in catalog and catalog["tiny"].description == "tiny test model"


# --- background job and worker ---------------------------------------------------------------

def _volume():
    rng = np.random.default_rng(1)
    array = rng.normal(0, 1, (12, 14, 10)).astype(np.float32)
    array[3:8, 4:10, 2:7] += 4
    return array


def _image(array=None):
    """A SimpleITK image of ``array`` (K, J, I), as the panel hands a volume to the job."""
    return sitk.GetImageFromArray(_volume() if array is None else array)


def test_io_only_background_job_runs_to_completion(tiny_model):
    """The job's files, states and result arrays. I/O only: the model is untrained (probability 0.5 everywhere, NQM 0), so this says nothing about segmentation quality."""
    image = _image()
    run = options.SegmentSettings.parse(model=str(tiny_model), runs=2, device="cpu", locate="none")
    job = BackgroundJob(image, run, str(REPOSITORY))
    job.start()
    try:
        status = job.wait(240)
        assert status.state == FINISHED, status.message
        assert (status.done, status.total, status.step) == (2, 2, "segmentation")
        result = job.result()
        assert result.labels.shape == image.GetSize() and result.labels.dtype == np.uint8
        assert result.variance.shape == image.GetSize() and result.variance.dtype == np.float32
        assert result.report["runs"] == 2 and result.report["quality"] == "unknown"
        assert result.label_names == {"1": "foreground"}
    finally:
        job.cleanup()
    assert not Path(job.workdir).exists()


@pytest.mark.parametrize("seed", [0, 7])
def test_background_job_equals_the_engine_for_the_same_seed(hippocampus_dir, seed):
    """A real case stored with LPS axes: the worker's labels, variance and NQM are the engine's
    for the same seed (and a different seed gives a different variance)."""
    pytest.importorskip("torch")
    from nca_core.quality.metrics import mean_foreground_dice
    from nca_core.inference.pipeline import segment_image
    from nca_core.inference.settings import SegmentSettings

    case = sitk.ReadImage(str(hippocampus_dir / "imagesTr" / "hippocampus_011.nii.gz"), sitk.sitkFloat32)
    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(hippocampus_dir / "labelsTr" / "hippocampus_011.nii.gz")))
    lps = sitk.Flip(case, [True, True, False])  # the same anatomy stored left-posterior first
    run = options.SegmentSettings.parse(model="hippocampus", runs=2, seed=seed, device="cpu", side="left",
                             locate="none")
    job = BackgroundJob(lps, run, str(REPOSITORY))
    job.start()
    try:
        status = job.wait(240)
        assert status.state == FINISHED, status.message
        result = job.result()
    finally:
        job.cleanup()
    direct = segment_image(lps, registry.load("hippocampus"), SegmentSettings(model="hippocampus", runs=2, seed=seed,
                                                                              device="cpu", side="left", locate="none"))
    assert result.report["grid"]["reoriented"]
    assert direct.ensemble.labels.any()
    assert np.array_equal(result.labels, direct.ensemble.labels)
    assert np.array_equal(result.variance, direct.ensemble.variance_map)
    assert result.report["nqm"] == direct.report()["nqm"] and result.report["quality"] == direct.quality.light
    other = segment_image(lps, registry.load("hippocampus"), SegmentSettings(model="hippocampus", runs=2, seed=seed + 1,
                                                                             device="cpu", side="left", locate="none"))
    assert not np.array_equal(result.variance, other.ensemble.variance_map)
    unflipped = result.labels.transpose(2, 1, 0)[:, ::-1, ::-1]  # (K, J, I) of the case as stored
    assert mean_foreground_dice(unflipped, (truth > 0).astype(np.uint8), 1) > 0.85


def test_background_job_cancel_is_immediate_and_leaves_nothing(tiny_model):
    run = options.SegmentSettings.parse(model=str(tiny_model), runs=200, device="cpu", locate="none")
    job = BackgroundJob(_image(), run, str(REPOSITORY))
    job.start()
    job.cancel()
    assert job.process.poll() is not None
    assert job.poll().state == CANCELLED
    with pytest.raises(RuntimeError):
        job.result()
    job.cleanup()
    assert not Path(job.workdir).exists()


def _processes_mentioning(text: str) -> list:
    """PIDs whose command line contains ``text`` (Linux /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and text in (entry / "cmdline").read_bytes().decode(errors="replace"):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs Linux /proc")
def test_cancel_also_ends_a_worker_started_through_a_launcher(tiny_model, tmp_path):
    """PythonSlicer is a launcher that starts the real Python as its child; cancel must end both."""
    launcher = tmp_path / "launcher.sh"
    launcher.write_text(f'#!/bin/sh\n"{sys.executable}" "$@"\nexit $?\n')
    launcher.chmod(0o755)
    run = options.SegmentSettings.parse(model=str(tiny_model), runs=1000, device="cpu", locate="none")
    volume = np.random.default_rng(0).normal(0, 1, (64, 64, 64)).astype(np.float32)  # minutes of work
    job = BackgroundJob(_image(volume), run, str(REPOSITORY), python=str(launcher))
    job.start()
    try:
        deadline = time.time() + 120
        while not Path(job.path("progress.json")).exists() and time.time() < deadline:
            time.sleep(0.1)  # the real Python is running under the launcher
        assert len(_processes_mentioning(job.workdir)) == 2
        job.cancel()
        time.sleep(0.5)
        assert _processes_mentioning(job.workdir) == []
    finally:
        job.cleanup()


def test_a_job_that_cannot_start_leaves_no_folder(tiny_model, tmp_path):
    run = options.SegmentSettings.parse(model=str(tiny_model), runs=1, device="cpu")
    job = BackgroundJob(_image(), run, str(REPOSITORY), python=str(tmp_path / "no-such-python"))
    with pytest.raises(OSError):
        job.start()
    assert not Path(job.workdir).exists()


def test_background_job_reports_engine_errors_in_one_line(tmp_path):
    run = options.SegmentSettings.parse(model=str(tmp_path / "missing.m3dnca"), runs=1, device="cpu")
    job = BackgroundJob(_image(), run, str(REPOSITORY))
    job.start()
    try:
        status = job.wait(240)
        assert status.state == FAILED
        assert "model file not found" in status.message and "\n" not in status.message
    finally:
        job.cleanup()


def test_a_failed_job_keeps_its_log(tiny_model, tmp_path):
    run = options.SegmentSettings.parse(model=str(tiny_model), runs=1, device="cpu")
    job = BackgroundJob(_image(), run, str(REPOSITORY), python=sys.executable)
    job.command = lambda: [sys.executable, "-c", "import sys; print('first line'); print('last line'); sys.exit(5)"]
    job.start()
    try:
        status = job.wait(60)
        assert status.state == FAILED and "exit code 5" in status.message
        assert job.kept_log and job.kept_log in status.message
    finally:
        job.cleanup()
    assert not Path(job.workdir).exists()
    assert Path(job.kept_log).read_text().splitlines() == ["first line", "last line"]


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_the_worker_stops_and_removes_its_folder_when_slicer_is_gone(tiny_model, tmp_path):
    """Slicer dies mid-job (here: the job records as its starter a process that has ended): the
    worker notices, stops at the next step, and removes the job folder."""
    import subprocess
    run = options.SegmentSettings.parse(model=str(tiny_model), runs=1000, device="cpu", locate="none")
    volume = np.random.default_rng(0).normal(0, 1, (48, 48, 48)).astype(np.float32)
    job = BackgroundJob(_image(volume), run, str(REPOSITORY))
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    job.parent_pid = gone.pid  # the "Slicer" that started the worker, already dead
    job.start()
    try:
        status = job.wait(120)
        assert status.state in (FAILED, CANCELLED)
        assert job.process.returncode == 4
        assert not Path(job.workdir).exists(), "the orphaned worker left its folder"
    finally:
        job.cleanup()


# --- batch script ------------------------------------------------------------------------------

def test_io_only_batch_script_writes_outputs_and_summary(tiny_model, tmp_path):
    """I/O only: the model is untrained (probability 0.5 everywhere, NQM 0), so this says nothing about segmentation quality."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    sitk.WriteImage(sitk.GetImageFromArray(_volume()), str(inputs / "case1.nii.gz"))
    (inputs / "broken.nii.gz").write_bytes(b"not an image")
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(BATCH_SCRIPT), str(inputs), "-o", str(out), "--model", str(tiny_model), "--runs", "2",
         "--device", "cpu", "--locate", "none", "--preview"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr  # one case failed, the other ran
    rows = {row["case"]: row for row in csv.DictReader(open(out / "summary.csv"))}
    assert rows["case1"]["status"] == "ok" and rows["broken"]["status"] == "failed"
    for suffix in ("seg.nii.gz", "variance.nii.gz", "report.json", "preview.png"):
        assert (out / f"case1_{suffix}").is_file()
    assert json.loads((out / "case1_report.json").read_text())["runs"] == 2


def _batch_and_cli(args, tmp_path):
    batch = subprocess.run([sys.executable, str(BATCH_SCRIPT), *args], capture_output=True, text=True, timeout=120)
    cli = subprocess.run([sys.executable, "-m", "nca_core", "segment", *args], capture_output=True, text=True,
                         timeout=120, cwd=str(REPOSITORY))
    return batch, cli


def test_batch_script_usage_is_the_command_lines(tmp_path):
    batch = subprocess.run([sys.executable, str(BATCH_SCRIPT), "--usage"], capture_output=True, text=True, timeout=120)
    cli = subprocess.run([sys.executable, "-m", "nca_core", "segment", "--help"], capture_output=True, text=True,
                         timeout=120, cwd=str(REPOSITORY))
    assert batch.returncode == 0 and batch.stdout == cli.stdout
    assert "--side" in batch.stdout and "--locate" in batch.stdout and "--channel" in batch.stdout


def test_batch_script_usage_error_exits_2_like_the_command_line(tmp_path):
    batch, cli = _batch_and_cli(["-o", str(tmp_path)], tmp_path)
    assert batch.returncode == cli.returncode == 2 and batch.stderr == cli.stderr


@pytest.mark.parametrize("option, value", [("--runs", "0"), ("--fire-rate", "1.5"), ("--steps", "2000,1"),
                                           ("--side", "middle")])
def test_batch_script_checks_options_as_the_command_line_does(tiny_model, tmp_path, option, value):
    image = tmp_path / "in.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.random.default_rng(0).random((12, 14, 16), dtype=np.float32)), str(image))
    batch, cli = _batch_and_cli([str(image), "-o", str(tmp_path / "out"), "--model", str(tiny_model), option, value],
                                tmp_path)
    assert batch.returncode == cli.returncode == 2
    assert batch.stderr == cli.stderr and option in batch.stderr
    assert not (tmp_path / "out").exists()


# --- static checks against Slicer's real API ------------------------------------------------------

def _module_python_files():
    files = sorted(p for p in MODULE_DIR.rglob("*.py") if "__pycache__" not in p.parts)
    assert MODULE_FILE in files
    return files


def _slicer_util_api():
    names = set()
    for line in API_LIST.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            names.add(line)
    return names


def _slicer_util_uses(path: Path):
    tree = ast.parse(path.read_text())
    used = set()
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
                and node.value.attr == "util" and isinstance(node.value.value, ast.Name)
                and node.value.value.id == "slicer"):
            used.add(node.attr)
        if isinstance(node, ast.ImportFrom) and node.module == "slicer.util":
            used.update(alias.name for alias in node.names)
    return used


def test_slicer_util_api_list_is_from_slicer_58():
    header = API_LIST.read_text()
    assert "v5.8.1" in header and "util.py" in header
    assert {"arrayFromVolume", "pip_install", "exit", "tryWithErrorDisplay"} <= _slicer_util_api()


def test_every_slicer_util_call_exists_in_slicer_58():
    api = _slicer_util_api()
    used = set()
    for path in _module_python_files():
        missing = _slicer_util_uses(path) - api
        assert not missing, f"{path.name} uses slicer.util names absent from Slicer 5.8: {sorted(missing)}"
        used |= _slicer_util_uses(path)
    assert {"loadUI", "childWidgetVariables", "arrayFromVolume", "addVolumeFromArray",
            "setSliceViewerLayers", "exit", "tryWithErrorDisplay"} <= used


def _ui_widgets():
    root = ElementTree.parse(UI_FILE).getroot()
    widgets = {w.get("name"): w.get("class") for w in root.iter("widget")}
    parameters = {}
    for w in root.iter("widget"):
        for prop in w.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                parameters[prop.find("string").text] = w.get("name")
    return widgets, parameters


def test_ui_widget_names_match_the_code():
    widgets, _ = _ui_widgets()
    tree = ast.parse(PANEL_FILE.read_text())
    used = {node.attr for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
            and node.value.attr == "ui"}
    assert used, "the module uses no self.ui widgets?"
    missing = used - set(widgets)
    assert not missing, f"code uses widgets absent from the .ui: {sorted(missing)}"


def _parameter_fields():
    tree = ast.parse(MODULE_FILE.read_text())
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == "M3DNCASegmentParameterNode":
            return {item.target.id: ast.unparse(item.annotation) for item in node.body
                    if isinstance(item, ast.AnnAssign)}
    raise AssertionError("no parameter node class")


def test_ui_parameter_names_are_parameter_node_fields_of_a_connectable_type():
    widgets, parameters = _ui_widgets()
    fields = _parameter_fields()
    assert set(parameters) <= set(fields)
    # widget classes the parameterNodeWrapper GUI connectors accept for each type (guiConnectors.py)
    accepted = {"int": {"QSpinBox", "QSlider"}, "float": {"QDoubleSpinBox", "ctkSliderWidget"},
                "str": {"QLineEdit", "QComboBox", "QLabel"}, "bool": {"QCheckBox"}, "vtkMRML": {"qMRMLNodeComboBox"}}
    for name, widget in parameters.items():
        annotation = fields[name]
        kind = next(k for k in ("vtkMRML", "int", "float", "str", "bool") if k in annotation)
        assert widgets[widget] in accepted[kind], (name, widgets[widget], annotation)
        if widgets[widget] == "QComboBox":
            assert "Choice" in annotation  # QComboBoxToStringableConnector needs Choice


def test_ui_has_the_template_structure():
    root = ElementTree.parse(UI_FILE).getroot()
    top = root.find("widget")
    assert top.get("class") == "qMRMLWidget" and top.get("name") == "M3DNCASegment"
    assert root.find("class").text == "M3DNCASegment"


def _parse_for_39(path: Path):
    source = path.read_text()
    tree = ast.parse(source, filename=str(path), feature_version=(3, 9))
    postponed = "from __future__ import annotations" in source
    if not postponed:  # X | Y in an annotation would be evaluated at runtime on 3.9
        for node in ast.walk(tree):
            annotations = []
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                annotations = [a.annotation for a in node.args.args + node.args.kwonlyargs if a.annotation]
                annotations += [node.returns] if node.returns else []
            elif isinstance(node, ast.AnnAssign):
                annotations = [node.annotation]
            for annotation in annotations:
                for sub in ast.walk(annotation):
                    assert not (isinstance(sub, ast.BinOp) and isinstance(sub.op, ast.BitOr)), \
                        f"{path}:{sub.lineno}: 'X | Y' annotation needs Python 3.10"
    return tree


# nca_core runs under Python 3.9 in CI (scripts/test39.sh, test_modules.py); the module's files
# need Slicer to import, so their 3.9 syntax is checked by parsing.
@pytest.mark.parametrize("path", sorted(p for p in MODULE_DIR.rglob("*.py") if "__pycache__" not in p.parts),
                         ids=lambda p: str(p.relative_to(REPOSITORY)))
def test_python_39_syntax(path):
    _parse_for_39(path)


def _cmake_list(path: Path, variable: str, substitutions=None):
    text = path.read_text()
    match = re.search(r"set\(\s*" + variable + r"\s+(.*?)\)", text, re.S)
    assert match, f"{variable} not set in {path}"
    items = [line.strip() for line in match.group(1).splitlines() if line.strip() and not line.strip().startswith("#")]
    for key, value in (substitutions or {}).items():
        items = [item.replace("${" + key + "}", value) for item in items]
    return items


def test_module_cmake_lists_every_module_file():
    cmake = MODULE_DIR / "CMakeLists.txt"
    subs = {"MODULE_NAME": "M3DNCASegment"}
    scripts = _cmake_list(cmake, "MODULE_PYTHON_SCRIPTS", subs)
    resources = _cmake_list(cmake, "MODULE_PYTHON_RESOURCES", subs)
    on_disk_py = {str(p.relative_to(MODULE_DIR)) for p in _module_python_files()}
    assert set(scripts) == on_disk_py
    on_disk_resources = {str(p.relative_to(MODULE_DIR)) for p in (MODULE_DIR / "Resources").rglob("*") if p.is_file()}
    assert set(resources) == on_disk_resources
    assert "slicerMacroBuildScriptedModule" in cmake.read_text()


def test_top_level_cmake_ships_engine_and_models():
    cmake = REPOSITORY / "CMakeLists.txt"
    text = cmake.read_text()
    engine = _cmake_list(cmake, "M3DNCA_ENGINE_SCRIPTS")
    on_disk = {str(p.relative_to(REPOSITORY)) for p in (REPOSITORY / "nca_core").rglob("*.py") if "__pycache__" not in p.parts}
    assert set(engine) >= on_disk, f"add to M3DNCA_ENGINE_SCRIPTS: {sorted(on_disk - set(engine))}"
    assert set(engine) <= on_disk, f"listed but absent (CMake would fail): {sorted(set(engine) - on_disk)}"
    models = _cmake_list(cmake, "M3DNCA_MODEL_FILES")
    shipped = {str(p.relative_to(REPOSITORY)) for p in (REPOSITORY / "Resources" / "Models").glob("*.m3dnca")}
    assert shipped, "no shipped model in Resources/Models"
    shipped |= {str(p.relative_to(REPOSITORY)) for p in (REPOSITORY / "Resources" / "Templates").iterdir()}
    assert set(models) == shipped, f"M3DNCA_MODEL_FILES must list exactly {sorted(shipped)}"
    assert 'set(EXTENSION_DEPENDS "PyTorch")' in text
    assert 'set(EXTENSION_CATEGORY "Segmentation")' in text
    assert "add_subdirectory(M3DNCASegment)" in text
    assert "Slicer_EXTENSION_GENERATE_CONFIG" in text and "Slicer_EXTENSION_CPACK" in text


def test_icon_is_a_png():
    data = (MODULE_DIR / "Resources" / "Icons" / "M3DNCASegment.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_module_file_and_batch_script_stay_thin():
    assert len(MODULE_FILE.read_text().splitlines()) <= 300
    assert len(BATCH_SCRIPT.read_text().splitlines()) <= 60
    batch = BATCH_SCRIPT.read_text()
    assert "import argparse" not in batch and "add_argument" not in batch  # the command line parses


def test_batch_script_without_torch_exits_with_one_line(tmp_path):
    """Slicer's Python before the module installed torch: one line and an exit code, no hang."""
    image = tmp_path / "in.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(_volume()), str(image))
    script = ("import runpy, sys; sys.modules['torch'] = None; "
              f"sys.argv = [{str(BATCH_SCRIPT)!r}, {str(image)!r}, '-o', {str(tmp_path / 'out')!r}]; "
              f"runpy.run_path({str(BATCH_SCRIPT)!r}, run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1].startswith("m3dnca_batch: error:")
    assert "Traceback" not in proc.stderr
