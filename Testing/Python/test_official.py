"""``m3dnca import-official``: reference MECLabTUDA/M3D-NCA checkpoints to model files.

The reference inference maths is re-implemented here, test-locally and channels-last
(B, X, Y, Z, C) as the reference keeps its state, so that the axis conventions of the
import are checked against an independent computation.
"""
from __future__ import annotations

import json
import math
import pickle
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nca_core.cli.main import main
from nca_core.errors import ModelFileError, NCAError
from nca_core.network.model import LevelPlan
from nca_core.modelfile.bundle import load_model
from nca_core.modelfile.official import import_official
from nca_core.space.preprocessing import prepare

torchio = pytest.importorskip("torchio")

TOLERANCE = 1e-4


# ---- reference-layout checkpoints ----------------------------------------------------
def reference_state(channels: int, hidden: int, kernel: int, generator: torch.Generator) -> Dict[str, torch.Tensor]:
    """Random weights in the reference BasicNCA3D key layout (trained-looking, not zero)."""
    def rand(*shape: int, scale: float = 0.3) -> torch.Tensor:
        return torch.randn(*shape, generator=generator) * scale

    return {
        "fc0.weight": rand(hidden, 2 * channels),
        "fc0.bias": rand(hidden),
        "fc1.weight": rand(channels, hidden, scale=0.15),
        "p0.weight": rand(channels, 1, kernel, kernel, kernel),
        "p0.bias": rand(channels),
        "bn.weight": 1.0 + rand(hidden, scale=0.1),
        "bn.bias": rand(hidden, scale=0.1),
    }


def reference_config(**overrides: Any) -> Dict[str, Any]:
    config = {
        "img_path": "imagesTr", "label_path": "labelsTr", "model_path": "run", "device": "cuda:0",
        "n_epoch": 1000, "batch_size": 4, "lr": 16e-4, "channel_n": 16, "hidden_size": 64,
        "input_channels": 1, "output_channels": 1, "inference_steps": [4, 5], "cell_fire_rate": 0.5,
        "train_model": 1, "scale_factor": 2, "input_size": [[8, 10, 6], [16, 20, 12]],
        "keep_original_scale": True, "rescale": False, "Persistence": False, "batch_duplication": 1,
    }
    config.update(overrides)
    return config


def write_run(folder: Path, config: Dict[str, Any], states: Sequence[Dict[str, torch.Tensor]]) -> Dict[str, Path]:
    """A reference run folder: config.dt and models/epoch_10/model<i>.pth."""
    models = folder / "models" / "epoch_10"
    models.mkdir(parents=True, exist_ok=True)
    (folder / "config.dt").write_text(json.dumps([config]))
    for level, state in enumerate(states):
        torch.save(state, models / f"model{level}.pth")
    return {"config": folder / "config.dt", "models": models}


def make_run(folder: Path, kernels: Sequence[int], seed: int = 0, **overrides: Any):
    config = reference_config(train_model=len(kernels) - 1, **overrides)
    generator = torch.Generator().manual_seed(seed)
    states = [reference_state(config["channel_n"], config["hidden_size"], k, generator) for k in kernels]
    return config, states, write_run(folder, config, states)


# ---- the reference maths, channels-last -----------------------------------------------
def reference_preprocess(array: np.ndarray, pad_to: Optional[List[int]]) -> np.ndarray:
    """TorchIO percentile rescale, zero padding to ``pad_to``, z-normalisation, rescale."""
    rescale = torchio.RescaleIntensity(out_min_max=(0, 1), percentiles=(0.5, 99.5))
    volume = rescale(array[None].astype(np.float64))[0]
    if pad_to is not None:
        padded = np.zeros(pad_to)
        padded[: volume.shape[0], : volume.shape[1], : volume.shape[2]] = volume
        volume = padded
    volume = torchio.ZNormalization()(volume[None])
    return np.asarray(rescale(volume))[0].astype(np.float32)


def _spatial(x: torch.Tensor, op) -> torch.Tensor:
    """Apply a channels-first spatial op to a channels-last (B, X, Y, Z, C) tensor."""
    return op(x.permute(0, 4, 1, 2, 3)).permute(0, 2, 3, 4, 1)


def reference_step(x: torch.Tensor, state: Dict[str, torch.Tensor], input_channels: int) -> torch.Tensor:
    """One reference update of channels-last ``x``: the depthwise filter runs on the
    (B, C, Y, Z, X) view (a transpose of axes 1 and 4), with reflect padding."""
    swapped = x.transpose(1, 4)
    pad = state["p0.weight"].shape[-1] // 2
    filtered = F.conv3d(F.pad(swapped, (pad,) * 6, mode="reflect"), state["p0.weight"], state["p0.bias"],
                        groups=x.shape[-1])
    perceived = torch.cat([swapped, filtered], dim=1).transpose(1, 4)  # (B, X, Y, Z, 2C)
    hidden = torch.einsum("bxyzi,hi->bxyzh", perceived, state["fc0.weight"]) + state["fc0.bias"]
    mean = hidden.mean(dim=(0, 1, 2, 3))
    var = hidden.var(dim=(0, 1, 2, 3), unbiased=False)
    hidden = (hidden - mean) / torch.sqrt(var + 1e-5) * state["bn.weight"] + state["bn.bias"]
    update = torch.einsum("bxyzh,ch->bxyzc", torch.relu(hidden), state["fc1.weight"])
    moved = x + update
    return torch.cat([x[..., :input_channels], moved[..., input_channels:]], dim=-1)


def reference_logits(image: np.ndarray, states: Sequence[Dict[str, torch.Tensor]], config: Dict[str, Any]) -> np.ndarray:
    """The reference's full-image inference (fire rate 0): logits (X, Y, Z) of channel 1."""
    channels, scale, top = config["channel_n"], config["scale_factor"], config["train_model"]
    steps = config["inference_steps"]
    steps = steps if isinstance(steps, list) else [steps] * (top + 1)
    seed = torch.zeros((1,) + image.shape + (channels,), dtype=torch.from_numpy(image).dtype)
    seed[..., 0] = torch.from_numpy(image)

    def pooled(times: int) -> torch.Tensor:
        out = seed
        for _ in range(times):
            out = _spatial(out, lambda t: F.max_pool3d(t, 2))
        return out

    x = pooled(top * int(math.log2(scale)))
    for level, state in enumerate(states):
        if level > 0:
            up = _spatial(x, lambda t: F.interpolate(t, scale_factor=scale, mode="nearest"))
            x = torch.cat([pooled(top - level)[..., :1], up[..., 1:]], dim=-1)
        for _ in range(steps[level]):
            x = reference_step(x, state, config["input_channels"])
    return x[0, ..., 1].numpy()


def our_logits(bundle, image: np.ndarray) -> np.ndarray:
    model = bundle.build().to(torch.from_numpy(image).dtype)
    with torch.no_grad():
        state, _ = model(torch.from_numpy(image)[None, None], LevelPlan(steps=bundle.config.steps, fire_rate=0.0))
    return state[0, model.output_slice()][0].numpy()


def raw_volume(shape: Sequence[int], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 300, shape[0])[:, None, None] + np.linspace(0, 80, shape[2])[None, None, :]
    return (rng.gamma(2.0, 100.0, size=tuple(shape)) + ramp).astype(np.float32)


# ---- equivalence ---------------------------------------------------------------------
CASES = {
    "scale2": dict(kernels=[7, 3], full=[16, 20, 12], native=[13, 18, 10], scale=2, steps=[4, 5]),
    "scale4": dict(kernels=[7, 3], full=[32, 24, 16], native=[30, 24, 13], scale=4, steps=[3, 4]),
    "scale2-3levels": dict(kernels=[3, 5, 3], full=[16, 24, 16], native=[16, 21, 15], scale=2, steps=[3, 2, 2]),
    "single-level": dict(kernels=[5], full=[10, 12, 8], native=[9, 12, 7], scale=2, steps=[4]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_logits_match_reference(tmp_path: Path, name: str) -> None:
    case = CASES[name]
    levels = len(case["kernels"])
    sizes = [[s // case["scale"] ** (levels - 1 - m) for s in case["full"]] for m in range(levels)]
    config, states, run = make_run(tmp_path, case["kernels"], seed=levels + case["scale"],
                                   scale_factor=case["scale"], input_size=sizes, inference_steps=case["steps"])
    bundle = import_official(run["config"], run["models"])
    raw = raw_volume(case["native"], seed=case["scale"])

    ours_input = prepare(raw, bundle.preprocessing, bundle.build().multiple)
    reference_input = reference_preprocess(raw, case["full"])
    assert ours_input.shape == tuple(case["full"])
    assert np.abs(ours_input - reference_input).max() < 1e-5

    expected = reference_logits(reference_input, states, config)
    found = our_logits(bundle, ours_input)
    difference = float(np.abs(found - expected).max())
    print(f"{name}: max |logit difference| = {difference:.2e} (logits in [{expected.min():.1f}, {expected.max():.1f}])")
    assert np.abs(expected).max() > 1.0  # the comparison is not trivially between zeros
    assert difference < TOLERANCE

    # In float64 the two computations agree to rounding: the float32 gap above is
    # float32 arithmetic (the reference maths is as far from its own float64 result).
    doubles = [{k: v.double() for k, v in state.items()} for state in states]
    exact = reference_logits(ours_input.astype(np.float64), doubles, config)
    assert np.abs(our_logits(bundle, ours_input.astype(np.float64)) - exact).max() < 1e-9


def test_wrong_kernel_orientation_is_detected(tmp_path: Path) -> None:
    """The test maths is sensitive to the kernel's axis order (guards the permutation)."""
    config, states, run = make_run(tmp_path, [7, 3], seed=3)
    bundle = import_official(run["config"], run["models"])
    image = reference_preprocess(raw_volume([16, 20, 12]), [16, 20, 12])
    for level in range(2):
        key = f"levels.{level}.perception.weight"
        bundle.weights[key] = states[level]["p0.weight"].clone()  # no permutation
    assert np.abs(our_logits(bundle, image) - reference_logits(image, states, config)).max() > 1e-2


@pytest.mark.parametrize("keep", [True, False])
def test_preprocessing_matches_torchio(tmp_path: Path, keep: bool) -> None:
    _, _, run = make_run(tmp_path, [7, 3], keep_original_scale=keep)
    bundle = import_official(run["config"], run["models"])
    raw = raw_volume([13, 18, 10] if keep else [16, 20, 12], seed=5)
    expected = reference_preprocess(raw, [16, 20, 12] if keep else None)
    found = prepare(raw, bundle.preprocessing, bundle.build().multiple)
    assert found.shape == expected.shape == (16, 20, 12)
    assert np.abs(found - expected).max() < 1e-5


def test_imported_settings(tmp_path: Path) -> None:
    _, states, run = make_run(tmp_path, [7, 3], scale_factor=4, cell_fire_rate=0.25, inference_steps=[20, 40, 99],
                              input_size=[[4, 5, 3], [16, 20, 12]])
    bundle = import_official(run["config"], run["models"])
    config = bundle.config
    assert (config.channels, config.hidden, config.kernel_sizes, config.steps) == (16, 64, [7, 3], [20, 40])
    assert (config.downscale, config.fire_rate, config.labels) == (4, 0.25, ["foreground"])
    assert bundle.preprocessing.pad_to == [16, 20, 12]
    assert bundle.provenance["imported_from"] == "MECLabTUDA/M3D-NCA"
    assert bundle.provenance["description"].endswith(f"{tmp_path.name}/epoch_10")
    assert set(bundle.provenance["reference_models"]) == {"model0.pth", "model1.pth"}
    assert bundle.build().parameter_count() == sum(t.numel() for s in states for t in s.values())


def test_single_step_count_applies_to_every_level(tmp_path: Path) -> None:
    _, _, run = make_run(tmp_path, [7, 3], inference_steps=16)
    assert import_official(run["config"], run["models"]).config.steps == [16, 16]


def test_resampled_training_needs_opt_in(tmp_path: Path) -> None:
    _, _, run = make_run(tmp_path, [7, 3], rescale=True)
    with pytest.raises(ModelFileError, match="native-resolution"):
        import_official(run["config"], run["models"])
    bundle = import_official(run["config"], run["models"], native_resolution=True)
    assert bundle.provenance["native_resolution"] is True


# ---- command line ------------------------------------------------------------------
def test_cli_end_to_end(tmp_path: Path, capsys) -> None:
    config, states, run = make_run(tmp_path, [7, 3], seed=11)
    output = tmp_path / "imported.m3dnca"
    code = main(["import-official", "--config", str(run["config"]), "--models", str(run["models"]),
                 "-o", str(output), "--labels", "hippocampus"])
    assert code == 0, capsys.readouterr().err
    assert "imported" in capsys.readouterr().out
    bundle = load_model(output)
    assert bundle.config.labels == ["hippocampus"]
    image = prepare(raw_volume([15, 20, 11]), bundle.preprocessing, bundle.build().multiple)
    assert np.abs(our_logits(bundle, image) - reference_logits(image, states, config)).max() < TOLERANCE
    assert main(["info", str(output), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["provenance"]["imported_from"] == "MECLabTUDA/M3D-NCA"


def _cli_error(run: Dict[str, Path], tmp_path: Path, capsys) -> str:
    code = main(["import-official", "--config", str(run["config"]), "--models", str(run["models"]),
                 "-o", str(tmp_path / "out.m3dnca")])
    err = capsys.readouterr().err.strip()
    assert code == 1 and not (tmp_path / "out.m3dnca").exists()
    assert err.startswith("m3dnca: error: ") and "\n" not in err
    return err


def test_cli_missing_level_file(tmp_path: Path, capsys) -> None:
    _, _, run = make_run(tmp_path, [7, 3])
    (run["models"] / "model1.pth").unlink()
    assert "missing model1.pth" in _cli_error(run, tmp_path, capsys)


def test_cli_points_to_epoch_folder(tmp_path: Path, capsys) -> None:
    _, _, run = make_run(tmp_path, [7, 3])
    run = dict(run, models=tmp_path / "models")
    assert "epoch_10" in _cli_error(run, tmp_path, capsys)


# ---- rejected inputs -----------------------------------------------------------------
def test_wrong_keys(tmp_path: Path) -> None:
    _, states, run = make_run(tmp_path, [7, 3])
    states[1]["norm.weight"] = states[1].pop("bn.weight")
    torch.save(states[1], run["models"] / "model1.pth")
    with pytest.raises(ModelFileError, match=r"missing \['bn.weight'\], unexpected \['norm.weight'\]"):
        import_official(run["config"], run["models"])


def test_2d_checkpoint(tmp_path: Path) -> None:
    _, states, run = make_run(tmp_path, [7, 3])
    states[0]["p0.weight"] = states[0]["p0.weight"][..., 0]
    states[0]["p1.weight"] = states[0]["p0.weight"].clone()
    torch.save(states[0], run["models"] / "model0.pth")
    with pytest.raises(ModelFileError, match="2D Med-NCA"):
        import_official(run["config"], run["models"])


def test_channel_mismatch(tmp_path: Path) -> None:
    _, _, run = make_run(tmp_path, [7, 3])
    config = json.loads(run["config"].read_text())
    config[0]["channel_n"] = 24
    run["config"].write_text(json.dumps(config))
    with pytest.raises(ModelFileError, match="channel_n is 24"):
        import_official(run["config"], run["models"])


def test_inconsistent_shapes(tmp_path: Path) -> None:
    _, states, run = make_run(tmp_path, [7, 3])
    states[1]["fc1.weight"] = states[1]["fc1.weight"][:, :32]
    torch.save(states[1], run["models"] / "model1.pth")
    with pytest.raises(ModelFileError, match="fc1.weight"):
        import_official(run["config"], run["models"])


def test_non_finite_weights(tmp_path: Path) -> None:
    _, states, run = make_run(tmp_path, [7, 3])
    states[0]["bn.bias"][3] = float("nan")
    torch.save(states[0], run["models"] / "model0.pth")
    with pytest.raises(ModelFileError, match="NaN"):
        import_official(run["config"], run["models"])


class _NotTensors:
    """Anything that is not a plain tensor must not be unpickled."""


def test_pickled_code_is_refused(tmp_path: Path) -> None:
    _, _, run = make_run(tmp_path, [7, 3])
    with open(run["models"] / "model0.pth", "wb") as handle:
        pickle.dump({"p0.weight": _NotTensors()}, handle, protocol=2)
    with pytest.raises(ModelFileError, match="weights only"):
        import_official(run["config"], run["models"])


@pytest.mark.parametrize("text, message", [
    ("not json", "invalid JSON"),
    ("[]", "expected a JSON list"),
    (json.dumps([reference_config(train_model=None)]), "train_model"),
    (json.dumps([reference_config(inference_steps=[10])]), "inference_steps"),
    (json.dumps([reference_config(input_channels=2)]), "single-channel"),
    (json.dumps([reference_config(scale_factor=3)]), "power of two"),
    (json.dumps([reference_config(train_model=2, scale_factor=4, inference_steps=[1, 1, 1])]), "cannot run in the reference"),
    (json.dumps([reference_config(cell_fire_rate=1.5)]), "cell_fire_rate"),
    (json.dumps([reference_config(input_size=[[8, 10], [16, 20]])]), "2D"),
    (json.dumps([reference_config(input_size=[[8, 10, 6], [16, 20, 0]])]), "input_size"),
], ids=["not-json", "empty", "no-train_model", "few-steps", "two-inputs", "scale-3", "scale-4-3-levels",
        "fire-rate", "2d-size", "zero-size"])
def test_bad_config(tmp_path: Path, text: str, message: str) -> None:
    _, _, run = make_run(tmp_path, [7, 3])
    run["config"].write_text(text)
    with pytest.raises(ModelFileError, match=message):
        import_official(run["config"], run["models"])


def test_missing_config_and_folder(tmp_path: Path) -> None:
    _, _, run = make_run(tmp_path, [7, 3])
    with pytest.raises(ModelFileError, match="reference config not found"):
        import_official(tmp_path / "nope.dt", run["models"])
    with pytest.raises(ModelFileError, match="models folder not found"):
        import_official(run["config"], tmp_path / "nope")


def test_label_count_checked(tmp_path: Path) -> None:
    _, _, run = make_run(tmp_path, [7, 3])
    with pytest.raises(NCAError, match="--labels needs 1"):
        import_official(run["config"], run["models"], labels=["a", "b"])


def test_cli_missing_output_folder(tmp_path: Path, capsys) -> None:
    _, _, run = make_run(tmp_path, [7, 3])
    code = main(["import-official", "--config", str(run["config"]), "--models", str(run["models"]),
                 "-o", str(tmp_path / "nope" / "out.m3dnca")])
    assert code == 1 and "output folder does not exist" in capsys.readouterr().err
