"""The fast inference path equals the plain reference formulation."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from nca_core.network.config import NCAConfig
from nca_core.inference.ensemble import run_ensemble
from nca_core.inference.fastpath import FastOptions, LevelStepper, fast_forward
from nca_core.network.firing import fire_mask, fire_mask_range, stream_key
from nca_core.network.model import LevelPlan, M3DNCA
from nca_core.space.preprocessing import Preprocessing

from nca_helpers import every_parameter_matters

CONFIG = NCAConfig(kernel_sizes=[5, 3], steps=[3, 4], downscale=2)
SHAPE = (12, 14, 10)
TOLERANCE = 1e-4


def _model(config: NCAConfig = CONFIG) -> M3DNCA:
    return every_parameter_matters(config)


def _image(batch: int = 1) -> torch.Tensor:
    torch.manual_seed(1)
    return torch.rand((1, 1) + SHAPE).expand(batch, -1, -1, -1, -1)


def _reference(model: M3DNCA, image: torch.Tensor, plan: LevelPlan) -> torch.Tensor:
    with torch.no_grad():
        state, _ = model(image, LevelPlan(**{**plan.__dict__, "reference": True}))
    return state.permute(0, 2, 3, 4, 1)


def _close(a: torch.Tensor, b: torch.Tensor, tolerance: float = TOLERANCE) -> bool:
    return float((a - b).abs().max()) <= tolerance * max(1.0, float(b.abs().max()))


def test_int32_firing_equals_int64_firing():
    keys = torch.tensor([stream_key(seed, run, 1, step) for seed in (0, 7) for run in range(3) for step in range(4)])
    for rate in (0.0, 0.25, 0.5, 0.9):
        for start, count in ((0, 3000), (98_765, 4321), (2**31 - 500, 500)):
            expected = fire_mask(keys, torch.arange(start, start + count), rate)[:, 0] > 0
            assert torch.equal(fire_mask_range(keys, start, count, rate), expected)


def test_folded_delta_equals_reference_delta():
    rule = _model().levels[1]
    state = torch.randn(2, 16, 6, 7, 5) * 3 + 1
    for per_sample in (True, False):
        with torch.no_grad():
            assert _close(rule.delta(state, per_sample), rule.delta_reference(state, per_sample))


@pytest.mark.parametrize("fire_rate", [0.0, 0.5])
@pytest.mark.parametrize("per_sample", [True, False])
def test_fast_path_equals_reference(fire_rate, per_sample):
    model = _model()
    plan = LevelPlan(steps=CONFIG.steps, fire_rate=fire_rate, seed=3, runs=[0, 1, 2], per_sample_stats=per_sample)
    expected = _reference(model, _image(3), plan)
    assert _close(fast_forward(model, _image(3), plan), expected)


@pytest.mark.parametrize("fire_rate", [0.0, 0.5])
@pytest.mark.parametrize("cache_bytes", [0, 1 << 30], ids=["recomputed", "cached"])
def test_chunked_equals_unchunked(fire_rate, cache_bytes):
    model = _model()
    plan = LevelPlan(steps=CONFIG.steps, fire_rate=fire_rate, seed=5, runs=[4, 9])
    whole = fast_forward(model, _image(2), plan, FastOptions(chunk_voxels=1 << 30))
    for chunk in (1, 150, 700):  # one X row (the halo spans slabs), a few rows, uneven tail
        options = FastOptions(chunk_voxels=chunk, min_slab_halos=1, cache_bytes=cache_bytes)
        assert LevelStepper(model.levels[1], torch.Size((2, *SHAPE, 16)), options, True).caching == bool(cache_bytes)
        assert _close(fast_forward(model, _image(2), plan, options), whole, 1e-5)


def test_chunked_batchnorm_statistics_are_exact():
    rule = _model().levels[1]
    torch.manual_seed(2)
    state = (torch.randn(2, *SHAPE, 16) * 2 + 5).contiguous()  # a large mean tests the merge
    whole = LevelStepper(rule, state.shape, FastOptions(chunk_voxels=1 << 30), True)
    sliced = LevelStepper(rule, state.shape, FastOptions(chunk_voxels=1, min_slab_halos=1), True)
    assert len(whole.slabs) == 1 and len(sliced.slabs) == SHAPE[0]
    with torch.no_grad():
        count, mean, scatter = sliced._moments(state)
        foldings = whole._folding(state), sliced._folding(state)
    perceived = rule.perceive(state.permute(0, 4, 1, 2, 3)).flatten(2).double().detach()
    expected_mean = perceived.mean(dim=2)
    centred = perceived - expected_mean[:, :, None]
    assert count == perceived.shape[2]
    assert torch.allclose(mean, expected_mean, atol=1e-5)
    assert torch.allclose(scatter / count, centred @ centred.transpose(1, 2) / count, atol=1e-4)
    for a, b in zip(*foldings):
        assert _close(a, b, 1e-5)


def test_batched_runs_equal_separate_runs():
    model = _model()
    plan = LevelPlan(steps=CONFIG.steps, fire_rate=0.5, seed=11, runs=[0, 1, 2])
    together = fast_forward(model, _image(3), plan)
    for index, run in enumerate(plan.runs):
        alone = fast_forward(model, _image(1), LevelPlan(steps=CONFIG.steps, fire_rate=0.5, seed=11, runs=[run]))
        assert _close(together[index : index + 1], alone, 1e-5)


def test_bf16_path_stays_close():
    """bf16 rounds the dense layers (the output moves by far more than fp32's run-to-run
    noise, which is none), yet stays close to fp32."""
    model = _model()
    plan = LevelPlan(steps=CONFIG.steps, fire_rate=0.5, seed=3, runs=[0])
    exact = torch.sigmoid(fast_forward(model, _image(), plan)[..., 1])
    again = torch.sigmoid(fast_forward(model, _image(), plan)[..., 1])
    approximate = torch.sigmoid(fast_forward(model, _image(), plan, FastOptions(bf16=True))[..., 1])
    assert torch.equal(exact, again)  # so any difference below is the flag's
    error = (exact - approximate).abs()
    assert float(error.max()) > 1e-4  # bfloat16 keeps 8 bits of mantissa: an ignored flag shows
    assert float(error.mean()) < 0.01


def test_ensemble_fast_equals_reference():
    model = _model()
    array = np.random.default_rng(0).random((11, 14, 9), dtype=np.float32)  # padded to even sizes
    fast = run_ensemble(model, array, Preprocessing(), runs=4, seed=2, engine="torch")
    reference = run_ensemble(model, array, Preprocessing(), runs=4, seed=2, reference=True)
    assert np.allclose(fast.probability, reference.probability, atol=1e-4)
    assert fast.nqm == pytest.approx(reference.nqm, rel=1e-3)


def test_training_still_backpropagates():
    model = _model().train()
    image = _image(2)
    plan = LevelPlan(steps=[2, 2], fire_rate=0.5, seed=1, per_sample_stats=True,
                     patch_sizes=[None, [8, 8, 8]])
    state, _ = model(image, plan)
    state[:, model.output_slice()].sigmoid().mean().backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]  # fc0.bias cancels under BN
    assert all(torch.isfinite(g).all() for g in grads)
    assert all(float(rule.fc1.weight.grad.abs().sum()) > 0 for rule in model.levels)


def _shipped_hippocampus():
    from nca_core.modelfile.registry import shipped_models

    models = shipped_models()
    if "hippocampus" not in models:
        pytest.skip("no shipped 'hippocampus' model (Resources/Models/hippocampus.m3dnca) to check accuracy with")
    from nca_core.modelfile.bundle import load_model

    return load_model(models["hippocampus"])


def test_real_cases_nqm_and_dice_unchanged(hippocampus_dir):
    """fp32 fast path = reference; bf16 moves NQM and Dice less than a change of seed."""
    from nca_core.quality.metrics import mean_foreground_dice
    from nca_core.training.data import find_pairs, load_case

    bundle = _shipped_hippocampus()
    model, classes = bundle.build(), bundle.config.output_channels
    for index, (image_path, label_path) in enumerate(find_pairs(hippocampus_dir)[:2]):
        case = load_case(image_path, label_path, merge_labels=classes == 1)

        def ensemble(runs=10, seed=0, bf16=False, reference=False):
            result = run_ensemble(model, case.image, bundle.preprocessing, runs=runs, seed=seed,
                                  options=FastOptions(bf16=bf16), reference=reference, engine="torch")
            return result.nqm, mean_foreground_dice(result.labels, case.label, classes), result

        if index == 0:  # the reference is slow: two runs on one case
            _, _, fast = ensemble(runs=2)
            _, _, reference = ensemble(runs=2, reference=True)
            assert np.allclose(fast.probability, reference.probability, atol=1e-4)
        nqm, dice, _ = ensemble()
        nqm_seed, dice_seed, _ = ensemble(seed=1)
        nqm_bf16, dice_bf16, _ = ensemble(bf16=True)
        assert nqm_bf16 != nqm  # the flag took effect
        assert abs(nqm_bf16 - nqm) <= max(3 * abs(nqm_seed - nqm), 0.05 * nqm)
        assert abs(dice_bf16 - dice) <= max(3 * abs(dice_seed - dice), 0.01)
