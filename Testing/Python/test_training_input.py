"""Bad input to train, evaluate and calibrate: one error line, no traceback, nothing written."""
from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pytest
import SimpleITK as sitk
import torch

from nca_core.cli.main import main
from nca_core.network.config import NCAConfig, preset
from nca_core.errors import ModelFileError
from nca_core.training.trainer import CHECKPOINT, Trainer
from nca_helpers import hashes, model_file, quick_settings, run_cli, small_dataset, smooth_volume, write_volume


def write_json_file(path: Path, content) -> Path:
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def assert_one_error_line(code: int, err: list, *words: str) -> None:
    assert code == 1 and len(err) == 1, err
    assert err[0].startswith("m3dnca: error: ")
    for word in words:
        assert word in err[0], (word, err[0])


def assert_usage_error(capsys, args: list, words: str) -> None:
    """argparse refuses the option: exit 2, its last stderr line names it."""
    with pytest.raises(SystemExit) as raised:
        main([str(a) for a in args])
    err = capsys.readouterr().err.strip().splitlines()
    assert raised.value.code == 2
    assert words in err[-1], err


def case_names(data: Path) -> list:
    return sorted(p.name[: -len(".nii.gz")] for p in (data / "imagesTr").iterdir())


def train_args(data: Path, run: Path, *extra) -> list:
    return ["train", "--data", data, "-o", run, "--device", "cpu", *extra]


# ---- dataset.json ------------------------------------------------------------------
@pytest.mark.parametrize("content, words", [
    ("{not json", "not valid JSON"),
    ([1, 2], "a JSON object"),
    ({"training": "abc"}, "'training' must be a list"),
    ({"training": [{"img": "x"}]}, "training entry 0 needs 'image' and 'label'"),
    ({"training": [{"image": 3, "label": "y"}]}, "training entry 0 needs 'image' and 'label'"),
    ({"training": ["x"]}, "training entry 0 needs 'image' and 'label'"),
])
@pytest.mark.parametrize("command", ["train", "evaluate", "calibrate"])
def test_a_bad_dataset_json_stops_in_one_line(tmp_path, capsys, content, words, command):
    data = tmp_path / "data"
    data.mkdir()
    manifest = write_json_file(data / "dataset.json", content)
    before = manifest.read_bytes()
    output = tmp_path / "out"
    args = [command, "--data", data, "-o", output]
    if command != "train":
        args += ["--model", model_file(tmp_path / "model.m3dnca")]
    code, out, err = run_cli(capsys, *args)
    assert_one_error_line(code, err, str(manifest), words)
    assert not output.exists() and manifest.read_bytes() == before


# ---- no training cases -------------------------------------------------------------
def test_a_single_case_dataset_leaves_nothing_to_train_on(hippocampus_dir, tmp_path, capsys):
    data = small_dataset(hippocampus_dir, tmp_path / "data", 1)
    run = tmp_path / "run"
    code, out, err = run_cli(capsys, *train_args(data, run, "--iterations", "2"))
    assert_one_error_line(code, err, str(data), "1 case", "no case to train on", "validation_fraction")
    assert not run.exists()


def test_a_split_without_training_cases_is_refused_before_any_checkpoint(hippocampus_dir, tmp_path, capsys):
    data = small_dataset(hippocampus_dir, tmp_path / "data", 2)
    split = write_json_file(tmp_path / "split.json", {"train": [], "validation": case_names(data)})
    run = tmp_path / "run"
    for _ in range(2):  # a second try gives the same answer, not "holds a training run already"
        code, out, err = run_cli(capsys, *train_args(data, run, "--split", split, "--iterations", "2"))
        assert_one_error_line(code, err, str(split), "no case to train on")
        assert not run.exists()


# ---- without validation cases -----------------------------------------------------
def test_without_validation_cases_the_last_weights_are_saved_and_no_dice_is_claimed(hippocampus_dir, tmp_path,
                                                                                     capsys):
    data = small_dataset(hippocampus_dir, tmp_path / "data", 2)
    config = write_json_file(tmp_path / "config.json", {**quick_settings().to_dict(), "validation_fraction": 0})
    run = tmp_path / "run"
    code, out, err = run_cli(capsys, *train_args(data, run, "--config", config, "--iterations", "1"))
    assert code == 0 and (run / "best.m3dnca").is_file()
    assert "no validation cases" in out and "-1.0000" not in out


# ---- training settings -------------------------------------------------------------
BAD_SETTINGS = [
    ({"iterations": "two"}, "iterations"),
    ({"iterations": True}, "iterations"),
    ({"patch_sizes": [None, [24, 24]]}, "patch_sizes"),
    ({"patch_sizes": [None]}, "patch_sizes"),
    ({"patch_sizes": "none"}, "patch_sizes"),
    ({"validate_every": 0}, "validate_every"),
    ({"checkpoint_every": 0}, "checkpoint_every"),
    ({"validation_runs": 0}, "validation_runs"),
    ({"learning_rate": -1}, "learning_rate"),
    ({"learning_rate": 10 ** 400}, "learning_rate"),  # beyond float: refused, not an OverflowError
    ({"learning_rate": "fast"}, "learning_rate"),
    ({"betas": [0.5]}, "betas"),
    ({"betas": [0.5, 1.5]}, "betas"),
    ({"lr_gamma": 0}, "lr_gamma"),
    ({"merge_labels": "yes"}, "merge_labels"),
    ({"augment": 1}, "augment"),
    ({"validation_fraction": 1.0}, "validation_fraction"),
    ({"seed": -1}, "seed"),
    ({"time_limit_minutes": 0}, "time_limit_minutes"),
    ({"ema_decay": 1.0}, "ema_decay"),
    ({"cases_per_step": 0}, "cases_per_step"),
    ({"model": "hippocampus"}, "model"),
    ({"model": {**preset("hippocampus").to_dict(), "channels": "x"}}, "channels"),
    ({"model": {**preset("hippocampus").to_dict(), "kernel_sizes": [7, "3"]}}, "kernel_sizes"),
    ({"model": {**preset("hippocampus").to_dict(), "kernel_sizes": []}}, "kernel_sizes"),
    ({"model": {**preset("hippocampus").to_dict(), "steps": [10, -1]}}, "steps"),
    ({"model": {**preset("hippocampus").to_dict(), "hidden": 0}}, "hidden"),
    ({"model": {**preset("hippocampus").to_dict(), "labels": [1]}}, "labels"),
    ({"model": {**preset("hippocampus").to_dict(), "fire_rate": "half"}}, "fire_rate"),
    ({"model": {**preset("hippocampus").to_dict(), "extra": 1}}, "extra"),
]


@pytest.mark.parametrize("change, field", BAD_SETTINGS)
def test_a_malformed_training_config_names_the_file_and_the_field(tmp_path, capsys, change, field):
    config = write_json_file(tmp_path / "config.json", {**quick_settings().to_dict(), **change})
    run = tmp_path / "run"
    code, out, err = run_cli(capsys, *train_args(tmp_path, run, "--config", config))
    assert_one_error_line(code, err, str(config), field)
    assert not run.exists()


def test_a_training_config_that_is_not_an_object_is_refused(tmp_path, capsys):
    config = write_json_file(tmp_path / "config.json", [1, 2])
    code, out, err = run_cli(capsys, *train_args(tmp_path, tmp_path / "run", "--config", config))
    assert_one_error_line(code, err, str(config), "JSON object")


@pytest.mark.parametrize("change", [{"channels": "x"}, {"channels": 16.5}, {"steps": "10"}, {"labels": "fg"},
                                    {"downscale": None}, {"input_channels": 0}, {"output_channels": 0, "labels": []}])
def test_model_configs_of_the_wrong_type_are_model_file_errors(change):
    with pytest.raises(ModelFileError, match="invalid model config"):
        NCAConfig.from_dict({**preset("hippocampus").to_dict(), **change})


# ---- corrupt checkpoints -----------------------------------------------------------
class NotAllowed:
    """A class a weights-only load refuses to rebuild."""


def truncated(checkpoint: Path) -> None:
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])


@pytest.mark.parametrize("corrupt", [
    truncated,
    lambda checkpoint: checkpoint.write_bytes(b"junk" * 100),
    lambda checkpoint: torch.save({"model": {}}, checkpoint),
    lambda checkpoint: checkpoint.write_bytes(pickle.dumps(NotAllowed())),
    lambda checkpoint: torch.save([1, 2], checkpoint),
], ids=["truncated", "junk", "no-state", "pickle", "list"])
def test_a_corrupt_checkpoint_on_resume_is_one_line(tmp_path, capsys, recwarn, corrupt):
    run = tmp_path / "run"
    run.mkdir()
    Trainer(tmp_path, run, quick_settings(), device="cpu").save_checkpoint()
    write_json_file(run / "settings.json", quick_settings().to_dict())
    corrupt(run / CHECKPOINT)
    before = hashes(run)
    code, out, err = run_cli(capsys, *train_args(tmp_path, run, "--resume"))
    assert_one_error_line(code, err, f"{run / CHECKPOINT}: corrupt or not a checkpoint of this run (")
    assert not [w for w in recwarn if "pickle" in str(w.message)]  # a warning would be a second line
    assert hashes(run) == before


# ---- calibrate ---------------------------------------------------------------------
def test_calibrating_on_too_few_cases_for_cross_validation_is_one_line(hippocampus_dir, tmp_path, capsys):
    output = tmp_path / "calibrated.m3dnca"
    code, out, err = run_cli(capsys, "calibrate", "--data", hippocampus_dir, "--model", "hippocampus",
                             "--limit", "1", "--runs", "2", "--device", "cpu", "-o", output)
    progress = [line for line in err if line.startswith("evaluating:")]
    assert_one_error_line(code, [line for line in err if line not in progress], "cross-validation",
                          "--cross-validate")
    assert err[-1].startswith("m3dnca: error: ")
    assert not output.exists() and not (tmp_path / "calibrated.m3dnca.calibration").exists()


def test_calibrate_refuses_to_overwrite_its_input_model(tmp_path, capsys):
    model = model_file(tmp_path / "model.m3dnca")
    (tmp_path / "link.m3dnca").symlink_to(model)
    before = model.read_bytes()
    for output in (model, tmp_path / "link.m3dnca", Path(os.path.join(str(tmp_path), ".", "model.m3dnca"))):
        code, out, err = run_cli(capsys, "calibrate", "--data", tmp_path / "absent", "--model", model, "-o", output)
        assert_one_error_line(code, err, str(output), "is the input model")
    assert model.read_bytes() == before


# ---- option ranges -----------------------------------------------------------------
@pytest.mark.parametrize("command, option, value, words", [
    ("evaluate", "--runs", "0", "argument --runs: must be at least 1"),
    ("evaluate", "--runs", "-1", "argument --runs: must be at least 1"),
    ("calibrate", "--runs", "0", "argument --runs: must be at least 1"),
    ("evaluate", "--limit", "-1", "argument --limit: must be at least 1"),
    ("calibrate", "--limit", "0", "argument --limit: must be at least 1"),
    ("calibrate", "--target-dice", "5", "argument --target-dice: must be in (0, 1)"),
    ("calibrate", "--target-dice", "-1", "argument --target-dice: must be in (0, 1)"),
    ("calibrate", "--target-dice", "1", "argument --target-dice: must be in (0, 1)"),
    ("train", "--iterations", "0", "argument --iterations: must be at least 1"),
    ("train", "--iterations", "-1", "argument --iterations: must be at least 1"),
    ("train", "--time-limit", "0", "argument --time-limit: must be a number greater than 0"),
    ("train", "--time-limit", "-1", "argument --time-limit: must be a number greater than 0"),
    ("train", "--time-limit", "nan", "argument --time-limit: must be a number greater than 0"),
])
def test_out_of_range_options_are_usage_errors(tmp_path, capsys, command, option, value, words):
    output = tmp_path / "out"
    args = [command, "--data", tmp_path, "-o", output, option, value]
    if command != "train":
        args += ["--model", "hippocampus"]
    assert_usage_error(capsys, args, words)
    assert not output.exists()


# ---- split files -------------------------------------------------------------------
def test_evaluate_names_the_cases_of_a_split_that_are_missing(hippocampus_dir, tmp_path, capsys):
    data = small_dataset(hippocampus_dir, tmp_path / "data", 2)
    first, second = case_names(data)
    split = write_json_file(tmp_path / "split.json", {"train": [first], "validation": [second, "hippocampus_999"]})
    output = tmp_path / "out"
    code, out, err = run_cli(capsys, "evaluate", "--data", data, "--model", "hippocampus", "--split", split,
                             "-o", output)
    assert_one_error_line(code, err, str(split), "cases not found", "hippocampus_999")
    assert not output.exists()


@pytest.mark.parametrize("content", [
    {"train": "hippocampus_001", "validation": "hippocampus_003"},
    {"train": [1], "validation": []},
    {"train": []},
    ["hippocampus_001"],
    "{not json",
])
@pytest.mark.parametrize("command", ["train", "evaluate"])
def test_a_malformed_split_is_refused_naming_the_file(hippocampus_dir, tmp_path, capsys, content, command):
    data = small_dataset(hippocampus_dir, tmp_path / "data", 2)
    split = write_json_file(tmp_path / "split.json", content)
    output = tmp_path / "out"
    args = [command, "--data", data, "--split", split, "-o", output]
    if command == "evaluate":
        args += ["--model", "hippocampus"]
    code, out, err = run_cli(capsys, *args)
    assert_one_error_line(code, err, str(split), "not a split file")
    assert not output.exists()


def test_train_checks_the_users_split_before_copying_it(hippocampus_dir, tmp_path, capsys):
    data = small_dataset(hippocampus_dir, tmp_path / "data", 2)
    first, second = case_names(data)
    bad = write_json_file(tmp_path / "bad.json", {"train": [first], "validation": ["hippocampus_999"]})
    run = tmp_path / "run"
    code, out, err = run_cli(capsys, *train_args(data, run, "--split", bad, "--iterations", "1"))
    assert_one_error_line(code, err, str(bad), "cases not found", "hippocampus_999")
    assert not run.exists()
    good = write_json_file(tmp_path / "good.json", {"train": [first], "validation": [second]})
    code, out, err = run_cli(capsys, *train_args(data, run, "--split", good, "--iterations", "1"))
    assert code == 0, err
    assert json.loads((run / "split.json").read_text())["validation"] == [second]


# ---- multi-channel training data ---------------------------------------------------
@pytest.mark.parametrize("four_d", ["image", "label"])
def test_a_4d_training_volume_suggests_no_missing_option(tmp_path, capsys, four_d):
    data = tmp_path / "data"
    for sub in ("imagesTr", "labelsTr"):
        (data / sub).mkdir(parents=True)
    volume = smooth_volume()
    image = write_volume(data / "imagesTr" / "case.nii.gz", volume)
    label = write_volume(data / "labelsTr" / "case.nii.gz", (volume > 50).astype("uint8"))
    path = image if four_d == "image" else label
    single = sitk.ReadImage(str(path))
    sitk.WriteImage(sitk.JoinSeries([single, single]), str(path))
    run = tmp_path / "run"
    code, out, err = run_cli(capsys, *train_args(data, run))
    assert_one_error_line(code, err, str(path), "is 4D with 2 channels", "single-channel 3D")
    assert "--channel" not in err[0]
    assert not run.exists()


@pytest.mark.parametrize("label_values, words", [
    ("image", "fractions included"),      # the image given as its own label
    ("negative", "found -1 to 1, all whole"),
    ("large", "found 0 to 300, all whole"),  # would wrap around in uint8
])
def test_a_label_that_is_no_label_map_is_refused(tmp_path, capsys, label_values, words):
    data = tmp_path / "data"
    for sub in ("imagesTr", "labelsTr"):
        (data / sub).mkdir(parents=True)
    volume = smooth_volume()
    write_volume(data / "imagesTr" / "case.nii.gz", volume)
    labels = {"image": volume, "negative": (volume > 50).astype("int16") * 2 - 1,
              "large": (volume > 50).astype("int16") * 300}
    label = write_volume(data / "labelsTr" / "case.nii.gz", labels[label_values])
    run = tmp_path / "run"
    code, out, err = run_cli(capsys, *train_args(data, run))
    assert_one_error_line(code, err, str(label), "not a label map", words)
    assert not run.exists()


@pytest.mark.parametrize("command, output, words", [
    ("evaluate", "a-file", "output path exists and is not a folder"),
    ("calibrate", "a-folder", "is a folder; give the calibrated model's file name"),
    ("calibrate", "a-file/model.m3dnca", "output path exists and is not a folder"),
])
def test_an_unusable_output_is_refused_before_the_evaluation(hippocampus_dir, tmp_path, capsys, monkeypatch,
                                                             command, output, words):
    import nca_core.training.evaluate

    (tmp_path / "a-file").write_text("mine")
    (tmp_path / "a-folder").mkdir()
    monkeypatch.setattr(nca_core.training.evaluate, "evaluate_cases",
                        lambda *a, **k: pytest.fail("evaluated before checking the output"))
    code, out, err = run_cli(capsys, command, "--data", hippocampus_dir, "--model", "hippocampus", "--limit", "1",
                             "-o", tmp_path / output)
    assert_one_error_line(code, err, words)
    assert (tmp_path / "a-file").read_text() == "mine" and not any((tmp_path / "a-folder").iterdir())


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("command, output", [("evaluate", "out"), ("calibrate", "out/model.m3dnca")])
def test_an_unavailable_device_leaves_no_output_folder(hippocampus_dir, tmp_path, capsys, command, output):
    code, out, err = run_cli(capsys, command, "--data", hippocampus_dir, "--model", "hippocampus", "--limit", "1",
                             "--device", "cuda", "-o", tmp_path / output)
    assert_one_error_line(code, err, "--device cuda")
    assert not (tmp_path / "out").exists()
