"""Model files: round trip, checksum and tamper rejection, versions, shapes."""
from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save as save_tensors

from nca_core.network.config import NCAConfig, preset
from nca_core.errors import ModelFileError
from nca_core.modelfile.bundle import FORMAT_VERSION, ModelBundle, digest, load_model, save_model
from nca_core.space.postprocessing import Postprocessing
from nca_core.space.preprocessing import Preprocessing
from nca_core.quality.nqm import Calibration

from nca_helpers import REPOSITORY, fast, header_and_data, random_model, rewrite, run_cli, smooth_volume, write_volume


def bundle(name: str = "hippocampus") -> ModelBundle:
    return ModelBundle.from_model(
        random_model(preset(name)),
        preprocessing=Preprocessing(percentiles=[1.0, 99.0]),
        postprocessing=Postprocessing(largest_component=True),
        calibration=Calibration(slope=-2.0, intercept=0.95, cases=12, r_squared=0.5),
        provenance={"data": "unit test", "metrics": {"dice": 0.5}},
    )


def test_round_trip_keeps_everything(tmp_path):
    saved = bundle()
    save_model(saved, tmp_path / "m.m3dnca")
    loaded = load_model(tmp_path / "m.m3dnca")
    assert loaded.config == saved.config
    assert loaded.preprocessing == saved.preprocessing
    assert loaded.postprocessing == saved.postprocessing
    assert loaded.calibration == saved.calibration
    assert loaded.provenance == saved.provenance
    assert set(loaded.weights) == set(saved.weights)
    assert all(torch.equal(loaded.weights[k], saved.weights[k]) for k in saved.weights)
    image = torch.rand(1, 1, 8, 8, 8)
    from nca_core.network.model import LevelPlan
    plan = LevelPlan(steps=[2, 2], fire_rate=0.0)
    with torch.no_grad():
        assert torch.equal(loaded.build()(image, plan)[0], saved.build()(image, plan)[0])


def test_flipped_weight_byte_fails_the_checksum(tmp_path):
    path = tmp_path / "m.m3dnca"
    save_model(bundle(), path)
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="checksum mismatch"):
        load_model(path)


def test_edited_metadata_fails_the_checksum(tmp_path):
    path = tmp_path / "m.m3dnca"
    save_model(bundle(), path)
    calibration = json.dumps({"slope": -1.0, "intercept": 1.0})
    rewrite(path, {"calibration": calibration}, rehash=False)
    with pytest.raises(ModelFileError, match="checksum mismatch"):
        load_model(path)


def test_newer_format_version_is_refused(tmp_path):
    path = tmp_path / "m.m3dnca"
    save_model(bundle(), path)
    rewrite(path, {"format_version": str(FORMAT_VERSION + 1)})
    with pytest.raises(ModelFileError, match="newer than this M3DNCASegment"):
        load_model(path)


def test_weights_that_do_not_fit_the_config_are_refused(tmp_path):
    path = tmp_path / "m.m3dnca"
    save_model(bundle("hippocampus"), path)
    other = ModelBundle.from_model(random_model(NCAConfig(hidden=32, kernel_sizes=[5, 3]))).weights
    rewrite(path, {}, weights=other)
    with pytest.raises(ModelFileError, match="weights do not match the config"):
        load_model(path)


def test_file_without_postprocessing_loads_with_none(tmp_path):
    """Files written before postprocessing existed (the same format version) still load."""
    path = tmp_path / "m.m3dnca"
    save_model(bundle(), path)
    header, _ = header_and_data(path)
    metadata = {k: v for k, v in header["__metadata__"].items() if k not in ("postprocessing", "sha256")}
    weights = load_model(path).weights
    path.write_bytes(save_tensors(weights, metadata=dict(metadata, sha256=digest(metadata, weights))))
    assert load_model(path).postprocessing == Postprocessing()


def test_unknown_postprocessing_is_refused(tmp_path):
    path = tmp_path / "m.m3dnca"
    save_model(bundle(), path)
    rewrite(path, {"postprocessing": json.dumps({"smooth": True})})
    with pytest.raises(ModelFileError, match="invalid postprocessing: unknown keys \\['smooth'\\]"):
        load_model(path)


def test_invalid_config_is_refused(tmp_path):
    path = tmp_path / "m.m3dnca"
    save_model(bundle(), path)
    config = dict(preset("hippocampus").to_dict(), fire_rate=1.5)
    rewrite(path, {"config": json.dumps(config)})
    with pytest.raises(ModelFileError, match="fire_rate"):
        load_model(path)


CONFIG = preset("hippocampus").to_dict()
CALIBRATION = bundle().calibration.to_dict()
PREPROCESSING = Preprocessing().to_dict()

# id: (metadata section, its new value, the error after the file name); text is written as is
BAD_METADATA = {
    "calibration-list": ("calibration", [1, 2], "invalid calibration: expected a JSON object"),
    "calibration-no-slope": ("calibration", {"intercept": 1}, "invalid calibration: slope is missing"),
    "calibration-text-slope": ("calibration", dict(CALIBRATION, slope="x"),
                               "invalid calibration: slope must be float, found 'x'"),
    "calibration-nan-slope": ("calibration", dict(CALIBRATION, slope=float("nan")), "invalid calibration: slope"),
    "calibration-huge-int": ("calibration", dict(CALIBRATION, intercept=10**400), "invalid calibration: intercept"),
    "calibration-target": ("calibration", dict(CALIBRATION, target_dice=2), "invalid calibration: target_dice"),
    "calibration-margin": ("calibration", dict(CALIBRATION, margin=-0.1), "invalid calibration: margin"),
    "calibration-unknown": ("calibration", dict(CALIBRATION, tilt=1), "invalid calibration: unknown keys"),
    "provenance-list": ("provenance", [1, 2], "invalid provenance: expected a JSON object"),
    "provenance-deep": ("provenance", "[" * 100_000 + "]" * 100_000, "invalid provenance: not JSON"),
    "config-not-json": ("config", "{", "invalid config: not JSON"),
    "config-list": ("config", [1, 2], "invalid model config: expected a JSON object"),
    "config-negative-steps": ("config", dict(CONFIG, steps=[-5, 10]), "invalid model config: steps"),
    "config-huge-steps": ("config", dict(CONFIG, steps=[10**9, 10]), "invalid model config: steps"),
    "config-float-steps": ("config", dict(CONFIG, steps=[1.5, 10]), "invalid model config: steps"),
    "config-float-channels": ("config", dict(CONFIG, channels=16.5), "invalid model config: channels"),
    "config-bool-hidden": ("config", dict(CONFIG, hidden=True), "invalid model config: hidden"),
    "config-huge-hidden": ("config", dict(CONFIG, hidden=2**62), "invalid model config: hidden"),
    "config-no-levels": ("config", dict(CONFIG, kernel_sizes=[], steps=[]), "invalid model config: kernel_sizes"),
    "config-label-number": ("config", dict(CONFIG, labels=[1]), "invalid model config: labels"),
    "percentiles-200": ("preprocessing", dict(PREPROCESSING, percentiles=[0, 200]),
                        "invalid preprocessing: percentiles"),
    "percentiles-one": ("preprocessing", dict(PREPROCESSING, percentiles=[1]), "invalid preprocessing: percentiles"),
    "percentiles-text": ("preprocessing", dict(PREPROCESSING, percentiles="0,100"),
                         "invalid preprocessing: percentiles"),
    "pad-to-zero": ("preprocessing", dict(PREPROCESSING, pad_to=[0, 8, 8]), "invalid preprocessing: pad_to"),
    "largest-component-text": ("postprocessing", {"largest_component": "no"},
                               "invalid postprocessing: largest_component must be bool"),
}


@pytest.mark.parametrize("section, value, words", BAD_METADATA.values(), ids=BAD_METADATA.keys())
def test_bad_metadata_with_a_matching_checksum_is_refused(tmp_path, section, value, words):
    """Anyone can recompute the checksum: the metadata itself is checked, field by field."""
    path = tmp_path / "m.m3dnca"
    save_model(bundle(), path)
    rewrite(path, {section: value if isinstance(value, str) else json.dumps(value)})
    with pytest.raises(ModelFileError) as raised:
        load_model(path)
    assert str(raised.value).startswith(f"{path}: {words}")


def test_config_asking_for_huge_weights_allocates_nothing(tmp_path):
    path = tmp_path / "m.m3dnca"
    save_model(bundle(), path)
    rewrite(path, {"config": json.dumps(dict(CONFIG, kernel_sizes=[4095, 3]))})  # 4.4 TB
    with pytest.raises(ModelFileError, match="weights do not match the config"):
        load_model(path)


@pytest.mark.parametrize("command", ["info", "segment"])
def test_bad_metadata_is_one_error_line_in_every_command(tmp_path, capsys, command):
    path = tmp_path / "m.m3dnca"
    save_model(bundle(), path)
    rewrite(path, {"calibration": "[1, 2]"})
    volume = write_volume(tmp_path / "v.nii.gz", smooth_volume())
    arguments = [path] if command == "info" else [volume, "-o", tmp_path / "out", *fast(path)]
    code, _, err = run_cli(capsys, command, *arguments)
    assert code == 1
    assert err == [f"m3dnca: error: {path}: invalid calibration: expected a JSON object, found [1, 2]"]


@pytest.mark.parametrize("name", ["hippocampus", "hippocampus-2class", "prostate"])
def test_shipped_models_pass_verification_unchanged(name):
    """Loading keeps every metadata section as stored (only the checksum is left out)."""
    path = REPOSITORY / "Resources" / "Models" / f"{name}.m3dnca"
    header, _ = header_and_data(path)
    stored = {k: v for k, v in header["__metadata__"].items() if k != "sha256"}
    assert load_model(path).metadata() == stored


@pytest.mark.parametrize("content, words", [
    (b"", "too short"),
    (b"hello world, not a model", "truncated or not safetensors"),
    (struct.pack("<Q", 2) + b"{}", "no m3dnca metadata"),
    (struct.pack("<Q", 4) + b"\xff\xfe{}", "unreadable header"),
    (struct.pack("<Q", 200_000) + b"[" * 100_000 + b"]" * 100_000, "unreadable header"),
])
def test_not_a_model_file(tmp_path, content, words):
    path = tmp_path / "bad.m3dnca"
    path.write_bytes(content)
    with pytest.raises(ModelFileError, match=words) as raised:
        load_model(path)
    assert str(raised.value).startswith(str(path))


def test_truncated_model_file(tmp_path):
    path = tmp_path / "m.m3dnca"
    save_model(bundle(), path)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ModelFileError, match="corrupt model file"):
        load_model(path)


def test_missing_model_file(tmp_path):
    with pytest.raises(ModelFileError, match="model file not found"):
        load_model(tmp_path / "nothing.m3dnca")


def test_file_is_plain_safetensors_json_and_tensors(tmp_path):
    path = tmp_path / "m.m3dnca"
    saved = bundle()
    save_model(saved, path)
    header, _ = header_and_data(path)
    assert header["__metadata__"]["format"] == "m3dnca"
    assert set(header) - {"__metadata__"} == set(saved.weights)
    assert {entry["dtype"] for k, entry in header.items() if k != "__metadata__"} == {"F32"}


def test_metadata_with_non_text_values_is_refused(tmp_path):
    header = json.dumps({"__metadata__": {"format": "m3dnca", "format_version": 1}}).encode()
    path = tmp_path / "odd.m3dnca"
    path.write_bytes(struct.pack("<Q", len(header)) + header)
    with pytest.raises(ModelFileError, match="metadata values must be text"):
        load_model(path)
