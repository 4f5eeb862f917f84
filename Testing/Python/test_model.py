"""Level plumbing: coarse level on the downscaled image, upsampling, re-injection,
padding of sizes that are not multiples of the downscaling and cropping back."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nca_core.network.config import preset
from nca_core.inference.ensemble import run_ensemble
from nca_core.network.model import LevelPlan
from nca_core.space.preprocessing import Preprocessing, prepare, prepared_shape

from nca_helpers import random_model


def record_steps(model):
    """Wrap every level's ``step`` to record (level, state in, state out)."""
    calls = []
    for level, rule in enumerate(model.levels):
        original = rule.step

        def step(state, *args, _level=level, _original=original, **kwargs):
            result = _original(state, *args, **kwargs)
            calls.append((_level, state.clone(), result.clone()))
            return result

        rule.step = step
    return calls


@pytest.mark.parametrize("name", ["prostate", "hippocampus"])
def test_coarse_level_runs_on_the_downscaled_image(name):
    config = preset(name)
    model = random_model(config)
    calls = record_steps(model)
    image = torch.rand(1, 1, 32, 24, 16)
    with torch.no_grad():
        state, _ = model(image, LevelPlan(steps=[2, 1], fire_rate=0.5))
    coarse_in = [c for c in calls if c[0] == 0][0][1]
    fine_in = [c for c in calls if c[0] == 1][0][1]
    factor = config.downscale
    assert tuple(coarse_in.shape[2:]) == (32 // factor, 24 // factor, 16 // factor)
    assert torch.equal(coarse_in[:, :1], F.max_pool3d(image, factor))
    assert tuple(fine_in.shape[2:]) == (32, 24, 16)
    assert torch.equal(fine_in[:, :1], image)  # full-resolution image re-injected
    coarse_out = [c for c in calls if c[0] == 0][-1][2]
    upsampled = F.interpolate(coarse_out, scale_factor=factor, mode="nearest")
    assert torch.equal(fine_in[:, 1:], upsampled[:, 1:])
    assert state.shape == (1, config.channels, 32, 24, 16)


def test_each_level_runs_its_own_step_count():
    model = random_model(preset("hippocampus"))
    calls = record_steps(model)
    with torch.no_grad():
        model(torch.rand(1, 1, 8, 8, 8), LevelPlan(steps=[3, 5], fire_rate=0.5))
    assert [c[0] for c in calls] == [0] * 3 + [1] * 5


@pytest.mark.parametrize("shape", [(13, 10, 7), (16, 16, 16), (9, 31, 14)])
def test_prepare_pads_to_a_multiple(shape):
    array = np.random.default_rng(0).random(shape).astype(np.float32)
    prepared = prepare(array, Preprocessing(), 4)
    assert prepared.shape == prepared_shape(shape, Preprocessing(), 4)
    assert all(p % 4 == 0 and 0 <= p - s < 4 for p, s in zip(prepared.shape, shape))
    assert np.count_nonzero(prepared[shape[0]:]) == 0


def test_non_divisible_input_is_padded_and_cropped_back():
    config = preset("prostate")
    model = random_model(config)
    shape = (21, 18, 13)
    array = np.random.default_rng(1).random(shape).astype(np.float32) * 50
    result = run_ensemble(model, array, Preprocessing(), runs=1, steps=[2, 2], fire_rate=0.0)
    assert result.probability.shape == (1,) + shape
    assert result.labels.shape == shape and result.std.shape == (1,) + shape
    prepared = torch.from_numpy(prepare(array, Preprocessing(), model.multiple))[None, None]
    with torch.no_grad():
        state, _ = model(prepared, LevelPlan(steps=[2, 2], fire_rate=0.0, runs=[0]))
    expected = torch.sigmoid(state[0, model.output_slice(), : shape[0], : shape[1], : shape[2]]).numpy()
    assert np.allclose(result.probability, expected, atol=1e-5)


def test_two_class_model_gives_two_probability_volumes():
    model = random_model(preset("hippocampus-2class"))
    result = run_ensemble(model, np.random.default_rng(2).random((10, 12, 8)).astype(np.float32),
                          Preprocessing(), runs=2, steps=[1, 1])
    assert result.probability.shape == (2, 10, 12, 8)
    assert set(np.unique(result.labels)) <= {0, 1, 2}


def test_patches_with_a_focus_contain_it_and_the_others_lie_anywhere():
    import random

    model = random_model(preset("prostate"), scale=0.3)
    image = torch.rand(4, 1, 64, 64, 16)
    starts = {True: set(), False: set()}
    for seed in range(12):
        rng = random.Random(seed)
        focus = [[rng.randrange(64), rng.randrange(64), rng.randrange(16)] for _ in range(2)] + [None, None]
        plan = LevelPlan(steps=[1, 1], fire_rate=0.5, seed=seed, patch_sizes=[[8, 8, 4], [16, 16, 8]], rng=rng,
                         focus=focus)
        with torch.no_grad():
            state, origins = model(image, plan)
        assert tuple(state.shape[2:]) == (16, 16, 8)
        for b, origin in enumerate(origins.tolist()):
            if focus[b] is not None:
                assert all(o <= f < o + p for o, f, p in zip(origin, focus[b], (16, 16, 8))), (focus[b], origin)
            starts[focus[b] is None].add(tuple(origin))
    assert len(starts[True]) > 12  # unfocused patches still move about
