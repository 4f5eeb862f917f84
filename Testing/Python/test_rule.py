"""The M3D-NCA rule: parameter counts, pinned image channels, zero-init, firing."""
from __future__ import annotations

import pytest
import torch

from nca_core.network.config import preset
from nca_core.network.firing import fire_mask, stream_key
from nca_core.network.model import LevelPlan, M3DNCA
from nca_core.network.rule import NCARule

from nca_helpers import random_model


def expected_parameters(channels: int, hidden: int, kernels) -> int:
    """Per level: depthwise conv (c k^3 + c), fc0 (2c h + h), BatchNorm (2h), fc1 (h c)."""
    return sum(channels * k**3 + channels + 2 * channels * hidden + hidden + 2 * hidden + hidden * channels
               for k in kernels)


@pytest.mark.parametrize("name", ["prostate", "hippocampus"])
def test_parameter_count_is_12480(name):
    config = preset(name)
    model = M3DNCA(config)
    assert model.parameter_count() == 12_480
    assert model.parameter_count() == expected_parameters(config.channels, config.hidden, config.kernel_sizes)


def test_prostate_preset_is_the_papers():
    config = preset("prostate")
    assert (config.levels, config.downscale, config.kernel_sizes, config.channels, config.hidden, config.steps) == (
        2, 4, [7, 3], 16, 64, [20, 40])


def test_fc1_starts_at_zero_and_an_untrained_model_leaves_the_state_unchanged():
    model = M3DNCA(preset("hippocampus"))
    assert all(int(torch.count_nonzero(rule.fc1.weight)) == 0 for rule in model.levels)
    image = torch.rand(1, 1, 8, 10, 12)
    state, _ = model(image, LevelPlan(steps=[3, 3], fire_rate=0.5))
    assert torch.equal(state[:, :1], image)
    assert torch.count_nonzero(state[:, 1:]) == 0


def test_image_channels_stay_pinned_over_steps():
    model = random_model(preset("hippocampus"))
    rule = model.levels[1]
    image = torch.rand(2, 1, 6, 6, 6)
    state = torch.cat([image, torch.rand(2, 15, 6, 6, 6)], dim=1)
    keys = torch.tensor([stream_key(0, r, 1, 0) for r in range(2)])
    for _ in range(5):
        new = rule.step(state, keys, 0.5, per_sample=True)
        assert torch.equal(new[:, :1], image)
        assert not torch.equal(new[:, 1:], state[:, 1:])
        state = new


def test_non_firing_cells_keep_their_state():
    model = random_model(preset("hippocampus"))
    rule = model.levels[1]
    state = torch.rand(1, 16, 6, 5, 4)
    keys = torch.tensor([stream_key(3, 0, 1, 0)])
    new = rule.step(state, keys, 0.5, per_sample=True)
    mask = fire_mask(keys, torch.arange(6 * 5 * 4), 0.5).reshape(1, 1, 6, 5, 4).bool()
    changed = (new != state).any(dim=1, keepdim=True)
    assert 0 < int(mask.sum()) < mask.numel()
    assert not bool((changed & ~mask).any())
    assert bool(changed[mask].all())


@pytest.mark.parametrize("per_sample", [True, False])
def test_folded_batchnorm_equals_the_literal_rule(per_sample):
    model = random_model(preset("prostate"), scale=0.3)
    rule = model.levels[0]
    state = torch.rand(3, 16, 9, 8, 7, dtype=torch.float64)
    rule = rule.double()
    assert torch.allclose(rule.delta(state, per_sample), rule.delta_reference(state, per_sample), atol=1e-10)


def test_masked_statistics_fold_like_the_literal_rule_and_all_valid_changes_nothing():
    rule = random_model(preset("prostate"), scale=0.3).levels[0].double()
    state = torch.rand(2, 16, 9, 8, 7, dtype=torch.float64)
    valid = (torch.rand(2, 1, 9 * 8 * 7) < 0.6).double()
    assert torch.allclose(rule.delta(state, True, valid), rule.delta_reference(state, True, valid), atol=1e-10)
    everywhere = torch.ones_like(valid)
    assert torch.allclose(rule.delta(state, True, everywhere), rule.delta(state, True), atol=1e-10)
    with pytest.raises(ValueError, match="per-sample"):
        rule.delta(state, False, valid)


def test_masked_statistics_ignore_what_the_padding_holds():
    # With a 1^3 kernel a cell sees only itself, so a case padded into a larger volume
    # must update exactly as the case alone, whatever the padding holds.
    rule = NCARule(16, 64, 1, 1).double()
    torch.manual_seed(0)
    for parameter in rule.parameters():
        parameter.data.normal_(0, 0.3)
    case = torch.rand(1, 16, 5, 6, 4, dtype=torch.float64)
    padded = torch.rand(1, 16, 8, 7, 6, dtype=torch.float64) * 5
    padded[:, :, :5, :6, :4] = case
    valid = torch.zeros(1, 1, 8, 7, 6, dtype=torch.float64)
    valid[:, :, :5, :6, :4] = 1
    alone = rule.delta(case, True).reshape(1, 16, 5, 6, 4)
    inside = rule.delta(padded, True, valid.flatten(2)).reshape(1, 16, 8, 7, 6)[:, :, :5, :6, :4]
    assert torch.allclose(inside, alone, atol=1e-10)
    unmasked = rule.delta(padded, True).reshape(1, 16, 8, 7, 6)[:, :, :5, :6, :4]
    assert not torch.allclose(unmasked, alone, atol=1e-3)


def test_valid_mask_marks_each_case_at_every_level():
    model = M3DNCA(preset("hippocampus"))  # downscale 2
    origins = torch.tensor([[0, 0, 0], [2, 1, 0]])
    fine = model.valid_mask([[5, 6, 4], [5, 6, 4]], origins, (6, 6, 4), level=1)
    assert fine.shape == (2, 1, 6, 6, 4) and fine.dtype == torch.bool
    assert int(fine[0].sum()) == 5 * 6 * 4 and bool(fine[0, 0, :5, :6, :4].all())
    assert int(fine[1].sum()) == 3 * 5 * 4  # the patch starts at (2, 1, 0)
    coarse = model.valid_mask([[5, 6, 4]], torch.zeros(1, 3, dtype=torch.long), (4, 4, 3), level=0)
    assert int(coarse.sum()) == 3 * 3 * 2  # a coarse cell counts when any of its voxels does


def test_patches_of_a_padded_case_stay_on_the_case():
    model = M3DNCA(preset("hippocampus"))
    extents = [[40, 40, 40], [10, 30, 12]]  # the second case is padded to 40^3
    image = torch.rand(2, 1, 40, 40, 40)
    for seed in range(20):
        plan = LevelPlan(steps=[1, 1], fire_rate=0.5, seed=seed, patch_sizes=[None, [16, 16, 16]],
                         extents=extents)
        state, origins = model(image, plan)
        assert state.shape[2:] == (16, 16, 16)
        assert origins[1].tolist()[0] == 0 and origins[1].tolist()[2] == 0  # smaller than the patch
        assert 0 <= origins[1].tolist()[1] <= 30 - 16
        assert model.valid_mask(extents, origins, (16, 16, 16), level=1)[1].any()


@pytest.mark.parametrize("fire_rate", [0.25, 0.5, 0.75])
def test_share_of_firing_cells_is_one_minus_fire_rate(fire_rate):
    cells = 200_000
    keys = torch.tensor([stream_key(1, run, 0, 0) for run in range(4)])
    share = fire_mask(keys, torch.arange(cells), fire_rate).mean(dim=(1, 2))
    # binomial std at 200k cells is about 0.001
    assert torch.allclose(share, torch.full_like(share, 1 - fire_rate), atol=0.006)


def test_firing_is_independent_of_batching_and_chunking():
    cells = torch.arange(5000)
    keys = torch.tensor([stream_key(7, run, 1, 2) for run in range(3)])
    together = fire_mask(keys, cells, 0.5)
    alone = torch.cat([fire_mask(keys[i : i + 1], cells, 0.5) for i in range(3)])
    chunks = torch.cat([fire_mask(keys, cells[:1234], 0.5), fire_mask(keys, cells[1234:], 0.5)], dim=2)
    assert torch.equal(together, alone)
    assert torch.equal(together, chunks)
    assert not torch.equal(together[0], together[1])


def test_runs_give_the_same_result_batched_or_one_by_one():
    model = random_model(preset("hippocampus"))
    image = torch.rand(1, 1, 8, 8, 10)
    plan = LevelPlan(steps=[2, 2], fire_rate=0.5, seed=5, runs=[0, 1, 2])
    with torch.no_grad():
        together, _ = model(image.expand(3, -1, -1, -1, -1), plan)
        alone = []
        for run in range(3):
            state, _ = model(image, LevelPlan(steps=[2, 2], fire_rate=0.5, seed=5, runs=[run]))
            alone.append(state)
    assert torch.allclose(together, torch.cat(alone), atol=1e-5)
    assert not torch.allclose(together[0], together[1])


def test_state_layout_image_then_outputs_then_hidden():
    config = preset("hippocampus-2class")
    model = M3DNCA(config)
    assert model.output_slice() == slice(1, 3)
    rule = NCARule(config.channels, config.hidden, 3, config.input_channels)
    assert rule.fc1.weight.shape == (config.channels, config.hidden)
