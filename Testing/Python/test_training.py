"""Training, resume, evaluation and calibration on real hippocampus cases."""
from __future__ import annotations

import importlib.util
import json
import random
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from nca_core.errors import NCAError
from nca_core.modelfile.bundle import load_model
from nca_core.training.calibrate import fit_calibration
from nca_core.training.data import split_names
from nca_core.training.loss import dice_bce_loss
from nca_core.training.settings import TrainSettings
from nca_core.training.trainer import BEST_MODEL, CHECKPOINT, LAST_MODEL, Trainer
from nca_helpers import model_file, quick_settings, run_cli, small_dataset


def test_split_is_reproducible_and_disjoint():
    names = [f"case_{i:03d}" for i in range(50)]
    first, again = split_names(names, 0.2, seed=3), split_names(names, 0.2, seed=3)
    assert first == again
    assert len(first["validation"]) == 10
    assert not set(first["train"]) & set(first["validation"])
    assert split_names(names, 0.2, seed=4) != first


@pytest.mark.slow
def test_loss_falls_and_dice_rises(hippocampus_dir, tmp_path):
    data = small_dataset(hippocampus_dir, tmp_path / "data", 8)
    trainer = Trainer(data, tmp_path / "run", quick_settings(iterations=80), device="cpu")
    trainer.run_dir.mkdir()
    trainer.load_data()
    before = trainer.validate(runs=1)["dice_mean"]
    losses = [trainer.train_step() for _ in range(80)]
    after = trainer.validate(runs=1)["dice_mean"]
    assert np.mean(losses[-15:]) < 0.8 * np.mean(losses[:15])
    assert after > before + 0.3, (before, after)


@pytest.mark.parametrize("ema_decay", [0.0, 0.9])
def test_resume_reproduces_the_uninterrupted_run(hippocampus_dir, tmp_path, ema_decay):
    data = small_dataset(hippocampus_dir, tmp_path / "data", 5)
    settings = quick_settings(iterations=6, ema_decay=ema_decay)
    straight = Trainer(data, tmp_path / "straight", settings, device="cpu")
    straight.fit(log=False)
    interrupted = Trainer(data, tmp_path / "resumed", replace(settings, iterations=3), device="cpu")
    interrupted.fit(log=False)
    assert (tmp_path / "resumed" / CHECKPOINT).is_file()
    resumed = Trainer(data, tmp_path / "resumed", settings, device="cpu")
    resumed.fit(resume=True, log=False)
    assert resumed.iteration == straight.iteration == 6
    for name, tensor in straight.model.state_dict().items():
        assert torch.equal(tensor, resumed.model.state_dict()[name]), name
    for name, tensor in straight.result_model.state_dict().items():
        assert torch.equal(tensor, resumed.result_model.state_dict()[name]), name
    assert (tmp_path / "resumed" / BEST_MODEL).is_file()
    load_model(tmp_path / "resumed" / BEST_MODEL)


def test_fine_tuning_starts_from_the_model_and_reuses_the_split(hippocampus_dir, tmp_path):
    data = small_dataset(hippocampus_dir, tmp_path / "data", 5)
    first = Trainer(data, tmp_path / "first", quick_settings(iterations=2), device="cpu")
    first.fit(log=False)
    start = load_model(tmp_path / "first" / BEST_MODEL)
    tuned = Trainer(data, tmp_path / "tuned", quick_settings(iterations=1, seed=9), device="cpu",
                    initial=start, split_file=tmp_path / "first" / "split.json")
    for name, tensor in start.weights.items():
        assert torch.equal(tensor, tuned.model.state_dict()[name]), name
    tuned.fit(log=False)
    assert tuned.split["validation"] == first.split["validation"]
    assert load_model(tmp_path / "tuned" / BEST_MODEL).provenance["initialised_from"]
    resumed = Trainer(data, tmp_path / "tuned", quick_settings(iterations=2, seed=9), device="cpu")
    resumed.fit(resume=True, log=False)
    assert load_model(tmp_path / "tuned" / LAST_MODEL).provenance["initialised_from"]  # kept on resume
    other = quick_settings(model=TrainSettings.for_preset("hippocampus-2class").model)
    with pytest.raises(NCAError, match="config differs"):
        Trainer(data, tmp_path / "mismatch", other, device="cpu", initial=start)
    longer = replace(start.config, steps=[step + 2 for step in start.config.steps])  # steps may differ
    more_steps = Trainer(data, tmp_path / "longer", quick_settings(iterations=1, model=longer.to_dict()),
                         device="cpu", initial=start)
    more_steps.fit(log=False)
    assert load_model(tmp_path / "longer" / BEST_MODEL).config.steps == longer.steps


def test_weight_averaging_validates_and_saves_the_moving_average(hippocampus_dir, tmp_path):
    data = small_dataset(hippocampus_dir, tmp_path / "data", 4)
    decay = 0.75
    trainer = Trainer(data, tmp_path / "run", quick_settings(ema_decay=decay), device="cpu")
    trainer.run_dir.mkdir()
    trainer.load_data()
    expected = None
    for _ in range(3):
        trainer.train_step()
        current = {n: t.detach().clone() for n, t in trainer.model.named_parameters()}
        expected = current if expected is None else {
            n: decay * expected[n] + (1 - decay) * current[n] for n in current}
    averaged = dict(trainer.result_model.named_parameters())
    saved = trainer.bundle({}).weights
    changed = 0
    for name, value in expected.items():
        torch.testing.assert_close(averaged[name], value)
        torch.testing.assert_close(saved[name], value)
        changed += not torch.allclose(value, current[name])
    assert changed > 0  # the average is not simply the last weights
    with pytest.raises(NCAError, match="ema_decay"):
        TrainSettings.from_dict({**quick_settings().to_dict(), "ema_decay": 1.0})


def test_several_cases_per_step_are_padded_and_the_padding_is_masked(hippocampus_dir, tmp_path):
    data = small_dataset(hippocampus_dir, tmp_path / "data", 8)
    settings = quick_settings(cases_per_step=3, batch_duplication=2, patch_sizes=[None, None])
    settings = replace(settings, model={**settings.model, "steps": [2, 2]})  # full frames: few steps keep memory low
    trainer = Trainer(data, tmp_path / "run", settings, device="cpu")
    trainer.run_dir.mkdir()
    trainer.load_data()
    images, targets, extents = trainer._batch(random.Random(0))
    names = [trainer._case_for(i).name for i in range(3)]
    prepared = [trainer._prepared[name] for name in names]
    assert len(set(names)) == 3 and len({image.shape for image, _ in prepared}) > 1  # real sizes differ
    assert images.shape[:2] == (6, 1) and targets.shape[:2] == (6, 1)
    assert list(images.shape[2:]) == [max(s) for s in zip(*(image.shape for image, _ in prepared))]
    for index, (image, target) in enumerate(prepared):
        region = tuple(slice(0, size) for size in image.shape)
        for copy in (2 * index, 2 * index + 1):
            assert torch.equal(images[copy, 0][region], image)
            assert torch.equal(targets[copy][(slice(None),) + region], target)
            assert extents[copy] == list(image.shape)
        padding = images[2 * index, 0].clone()
        padding[region] = 0
        assert int(torch.count_nonzero(padding)) == 0  # the padding is zeros
    plans = []
    forward = trainer.model.forward
    trainer.model.forward = lambda image, plan: (plans.append(plan), forward(image, plan))[1]
    assert np.isfinite(trainer.train_step())
    assert plans[0].extents == extents  # the step masks each case's padding
    with pytest.raises(NCAError, match="cases_per_step"):
        TrainSettings.from_dict({**settings.to_dict(), "cases_per_step": 0})


def test_masked_loss_of_a_padded_case_equals_its_loss_alone():
    torch.manual_seed(0)
    logits, target = torch.randn(1, 2, 5, 6, 4), (torch.rand(1, 2, 5, 6, 4) < 0.3).float()
    padded_logits = torch.randn(1, 2, 7, 8, 6) * 4
    padded_logits[..., :5, :6, :4] = logits
    padded_target = torch.zeros(1, 2, 7, 8, 6)
    padded_target[..., :5, :6, :4] = target
    valid = torch.zeros(1, 1, 7, 8, 6)
    valid[..., :5, :6, :4] = 1
    alone = dice_bce_loss(logits, target)
    assert torch.allclose(dice_bce_loss(padded_logits, padded_target, valid), alone, atol=1e-6)
    assert not torch.allclose(dice_bce_loss(padded_logits, padded_target), alone, atol=1e-2)


def test_existing_run_needs_resume(hippocampus_dir, tmp_path):
    data = small_dataset(hippocampus_dir, tmp_path / "data", 4)
    Trainer(data, tmp_path / "run", quick_settings(iterations=1), device="cpu").fit(log=False)
    with pytest.raises(NCAError, match="--resume"):
        Trainer(data, tmp_path / "run", quick_settings(iterations=2), device="cpu").fit(log=False)


@pytest.mark.parametrize("missing, command", [
    ("tensorboard", ["train", "--preset", "hippocampus", "--iterations", "1"]),
    ("torchio", ["train", "--preset", "hippocampus", "--iterations", "1", "--augment"]),
    ("torchio", ["evaluate", "--model", "MODEL", "--artifacts", "--limit", "1"]),
    ("torchio", ["calibrate", "--model", "MODEL", "--limit", "1"]),
])
def test_missing_training_extras_stop_in_one_line_before_any_work(hippocampus_dir, tmp_path, capsys, monkeypatch,
                                                                   missing, command):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == missing else find_spec(name, *a))
    model = model_file(tmp_path / "model.m3dnca")
    output = tmp_path / "out"
    args = [str(model) if a == "MODEL" else a for a in command]
    code, out, err = run_cli(capsys, *args, "--data", hippocampus_dir, "-o", output)
    assert code == 1 and len(err) == 1 and missing in err[0] and "setup.sh train" in err[0]
    assert not output.exists()


def test_resuming_a_run_with_nothing_left_says_how_to_extend_it(hippocampus_dir, tmp_path):
    data = small_dataset(hippocampus_dir, tmp_path / "data", 4)
    timed = quick_settings(time_limit_minutes=1e-5)  # stops after the first iteration
    first = Trainer(data, tmp_path / "timed", timed, device="cpu").fit(log=False)
    assert first.iterations == 1
    with pytest.raises(NCAError, match="time limit .* used up.*--time-limit"):
        Trainer(data, tmp_path / "timed", timed, device="cpu").fit(resume=True, log=False)
    more = Trainer(data, tmp_path / "timed", replace(timed, iterations=2, time_limit_minutes=60), device="cpu")
    assert more.fit(resume=True, log=False).iterations == 2
    with pytest.raises(NCAError, match="all 2 iterations are done.*--iterations"):
        Trainer(data, tmp_path / "timed", replace(timed, iterations=2, time_limit_minutes=60),
                device="cpu").fit(resume=True, log=False)


def test_a_run_stopped_before_its_first_validation_names_no_missing_model(hippocampus_dir, tmp_path, capsys):
    data = small_dataset(hippocampus_dir, tmp_path / "data", 4)
    code, out, err = run_cli(capsys, "train", "--data", data, "--preset", "hippocampus", "-o", tmp_path / "run",
                             "--time-limit", "0.00001")
    assert code == 0 and not (tmp_path / "run" / BEST_MODEL).exists()
    assert "no model yet" in out and "--resume and a larger --time-limit" in out and "best.m3dnca" not in out


def test_a_resumed_run_goes_on_with_the_config_given_but_keeps_its_model(hippocampus_dir, tmp_path, capsys):
    """``--resume --config``: the run continues with the new settings (saved with it), naming what
    changed; a config that changes the model is refused in one line, before any training."""
    data = small_dataset(hippocampus_dir, tmp_path / "data", 4)
    run = tmp_path / "run"
    start = tmp_path / "start.json"
    start.write_text(json.dumps(quick_settings(iterations=1, patch_sizes=[None, [8, 8, 8]]).to_dict()))
    assert run_cli(capsys, "train", "--data", data, "--config", start, "-o", run)[0] == 0
    more = tmp_path / "more.json"
    more.write_text(json.dumps({"iterations": 2, "ema_decay": 0.99}))  # laid over the run's settings
    code, out, err = run_cli(capsys, "train", "--data", data, "--config", more, "-o", run, "--resume")
    assert code == 0, err
    assert "resuming with changed settings: iterations, ema_decay" in out
    saved = json.loads((run / "settings.json").read_text())
    assert saved["iterations"] == 2 and saved["ema_decay"] == 0.99 and saved["patch_sizes"] == [None, [8, 8, 8]]
    for change in ({"model": dict(saved["model"], hidden=32)}, {"learning_rate": 1e-4}, {"standardise_intensity": True}):
        more.write_text(json.dumps(dict(change, iterations=3)))
        code, _, err = run_cli(capsys, "train", "--data", data, "--config", more, "-o", run, "--resume")
        assert code == 1 and len(err) == 1 and f"--config changes {next(iter(change))}, which a resumed run keeps" \
            in err[0], err
    assert json.loads((run / "settings.json").read_text())["iterations"] == 2


def test_calibration_recovers_a_known_line():
    rng = np.random.default_rng(0)
    nqm = rng.uniform(0.02, 0.6, 300)
    dice = -1.2 * nqm + 0.98 + rng.normal(0, 0.02, nqm.size)
    calibration = fit_calibration(nqm, dice, target_dice=0.8)
    assert calibration.slope == pytest.approx(-1.2, abs=0.03)
    assert calibration.intercept == pytest.approx(0.98, abs=0.01)
    assert calibration.nqm_threshold == pytest.approx((0.8 - 0.98) / -1.2, abs=0.01)
    predicted = calibration.slope * nqm + calibration.intercept
    failures = dice < 0.8
    flagged = predicted < calibration.target_dice + calibration.margin
    assert flagged[failures].mean() >= 0.95


def test_calibration_judges_each_case_as_segment_shows_it():
    from nca_core.quality.nqm import Calibration
    from nca_core.training.calibrate import judge
    from nca_core.training.evaluate import CaseEvaluation

    calibration = Calibration(slope=-2.0, intercept=0.95)
    nothing_found = CaseEvaluation("c", "noise", 0.0, 0.01, 0.0, "", None, foreground_voxels=0)
    assert judge(nothing_found, calibration).quality == "red"  # NQM alone would say green
    assert judge(replace(nothing_found, foreground_voxels=500), calibration).quality == "green"


def test_calibration_refuses_degenerate_input():
    with pytest.raises(ValueError):
        fit_calibration([0.1, 0.1, 0.1], [0.9, 0.8, 0.7])


def test_cross_validated_rates_judge_each_case_once_on_held_out_fits():
    from nca_core.training.calibrate import cross_validated_rates
    from nca_core.training.evaluate import CaseEvaluation

    rng = np.random.default_rng(1)
    rows = []
    for index in range(30):
        for artifact in ("none", "noise"):
            value = rng.uniform(0.05, 0.6)
            dice = float(np.clip(-1.0 * value + 0.97 + rng.normal(0, 0.03), 0, 1))
            rows.append(CaseEvaluation(f"case{index}", artifact, dice, value, dice, "", None, 1000))
    rates = cross_validated_rates(rows, folds=5, target_dice=0.8)
    assert rates["failures"] + rates["good_cases"] == len(rows)
    assert rates["failures_flagged"] >= 0.9
    assert rates["good_cases_flagged"] < 0.5


def test_evaluation_summary_names_dice_per_artifact_readably():
    from nca_core.training.evaluate import CaseEvaluation, summarise

    rows = [CaseEvaluation("a", artifact, dice, 0.1, dice, "green", 0.9, 100)
            for artifact, dice in (("none", 0.9), ("noise", 0.5), ("spike", 0.4), ("ghosting", 0.3))]
    summary = summarise(rows, target_dice=0.8)
    assert summary["dice_clean"] == {"mean": 0.9, "std": 0.0, "n": 1}
    assert [summary[f"dice_with_{kind}"]["mean"] for kind in ("noise", "spike", "ghosting")] == [0.5, 0.4, 0.3]
    assert not any(key in summary for key in ("dice_none", "dice_noise"))


def test_calibration_refuses_a_rising_line():
    with pytest.raises(ValueError, match="does not fall"):
        fit_calibration([0.1, 0.2, 0.3, 0.4], [0.5, 0.6, 0.7, 0.8])


def test_augmentation_moves_image_and_label_together():
    import random

    from nca_core.training.augment import augmenter

    target = torch.zeros(1, 40, 56, 40)
    target[0, 10:30, 15:40, 12:28] = 1
    image = 0.2 + 0.6 * target[0]
    augment = augmenter()
    moved = 0
    for seed in range(8):
        augmented, label = augment(image, target, random.Random(seed))
        again, _ = augment(image, target, random.Random(seed))
        assert torch.equal(augmented, again)  # reproducible from the iteration's generator
        assert augmented.shape == image.shape and label.shape == target.shape
        assert set(torch.unique(label).tolist()) <= {0.0, 1.0}
        assert augmented.min() >= 0 and augmented.max() <= 1
        bright = (augmented > 0.5).float()
        overlap = 2 * float((bright * label[0]).sum()) / float(bright.sum() + label[0].sum())
        assert overlap > 0.95, seed  # an unmoved label would overlap about 0.88 after a rotation
        moved += not torch.equal(label, target)
    assert moved > 0  # the affine did act on some draws


def test_augmentation_strengths_come_from_the_settings():
    """Zero strengths leave every image as it was; the defaults change it; a wrong key or a
    negative strength is refused naming it."""
    import random

    from nca_core.training.augment import augmenter

    target = torch.zeros(1, 24, 24, 24)
    target[0, 6:18, 6:18, 6:18] = 1
    image = 0.1 + 0.5 * target[0] + 0.02 * torch.arange(24.0)[:, None, None] / 24
    still = TrainSettings.for_preset("hippocampus", augment=True, augmentation=dict.fromkeys(
        ["scales", "degrees", "log_gamma", "bias_field", "noise_std"], 0.0))
    unchanged = augmenter(still.augmentation_strength)
    default = augmenter(TrainSettings.for_preset("hippocampus").augmentation_strength)
    changed = 0
    for seed in range(8):
        augmented, label = unchanged(image, target, random.Random(seed))
        assert torch.allclose(augmented, image, atol=1e-5) and torch.equal(label, target), seed
        changed += not torch.allclose(default(image, target, random.Random(seed))[0], image, atol=1e-3)
    assert changed > 0
    with pytest.raises(NCAError, match="unknown keys \\['scale'\\]"):
        TrainSettings.for_preset("hippocampus", augmentation={"scale": 0.2})
    with pytest.raises(NCAError, match="augmentation log_gamma must be a number >= 0"):
        TrainSettings.for_preset("hippocampus", augmentation={"log_gamma": -0.1})


def test_a_fold_that_cannot_be_fitted_keeps_the_calibration_and_says_why(capsys):
    """Held-out rates need every fold's own line; when one has none (Dice rising with NQM, as on a
    weak model's cases) the calibration is still written and the report names the reason."""
    from nca_core.cli.training import _held_out_rates
    from nca_core.training.evaluate import CaseEvaluation

    rows = [CaseEvaluation(f"case{i}", "none", 0.3 + 0.05 * i, 0.1 + 0.02 * i, 0.3, "", None, 1000) for i in range(6)]
    held_out = _held_out_rates(rows, 3, 0.7)
    assert held_out["folds"] == 3 and "Dice does not fall with NQM" in held_out["failed"]
    assert "m3dnca: warning: cross-validation with 3 folds failed" in capsys.readouterr().err
