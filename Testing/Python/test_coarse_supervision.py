"""Coarse supervision: a loss on the coarse level's whole-volume output against the label
averaged onto its cells, beside the finest level's loss on its patch."""
from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F

from nca_core.errors import NCAError
from nca_core.network.config import preset
from nca_core.network.model import LevelPlan
from nca_core.training.loss import dice_bce_loss
from nca_core.training.settings import TrainSettings
from nca_core.training.trainer import Trainer

from nca_helpers import random_model
from prostate_helpers import two_case_trainer
from test_model import record_steps


def prostate_trainer(prostate_dir, tmp_path, weight: float) -> Trainer:
    trainer = two_case_trainer(prostate_dir, tmp_path / f"run{weight}", coarse_supervision=weight)
    trainer.load_data()
    return trainer


def test_the_plan_collects_the_coarse_levels_last_state_before_upsampling():
    model = random_model(preset("prostate"))
    calls = record_steps(model)
    plan = LevelPlan(steps=[2, 1], fire_rate=0.5, coarse_states=[],
                     patch_sizes=[None, [8, 8, 8]], rng=random.Random(3))
    with torch.no_grad():
        model(torch.rand(2, 1, 32, 24, 16), plan)
    (state, origins), = plan.coarse_states
    assert torch.equal(state, [c for c in calls if c[0] == 0][-1][2])
    assert tuple(state.shape[2:]) == (8, 6, 4)  # the whole volume on the coarse cells
    assert torch.equal(origins, torch.zeros(2, 3, dtype=torch.long))


def test_the_coarse_loss_compares_with_the_label_averaged_onto_the_coarse_cells(prostate_dir, tmp_path):
    trainer = prostate_trainer(prostate_dir, tmp_path, 1.0)
    _, targets, _ = trainer._batch(random.Random(0))
    on_cells = F.avg_pool3d(targets, trainer.config.downscale)
    assert 0 < on_cells.sum() and ((on_cells > 0) & (on_cells < 1)).any()  # the gland's edge is soft
    state = torch.zeros((len(targets), trainer.config.channels) + tuple(on_cells.shape[2:]))
    origins = torch.zeros(len(targets), 3, dtype=torch.long)

    def loss_of(logits: torch.Tensor) -> float:
        state[:, trainer.model.output_slice()] = logits
        return float(trainer._level_loss(state, origins, targets, None, level=0))

    exact = torch.logit(on_cells.clamp(1e-4, 1 - 1e-4))
    assert loss_of(exact) < loss_of(20 * (on_cells > 0.5).float() - 10) < loss_of(-exact)
    assert loss_of(-exact) > 1.0
    logits = torch.randn(on_cells.shape)
    assert loss_of(logits) == pytest.approx(float(dice_bce_loss(logits, on_cells)))  # the mean, not the max
    assert loss_of(logits) != pytest.approx(float(dice_bce_loss(logits, F.max_pool3d(targets, trainer.config.downscale))))


def test_the_weight_adds_the_coarse_loss_to_the_step_and_its_gradient_to_the_coarse_level_only(prostate_dir, tmp_path):
    losses, gradients = {}, {}
    for weight in (0.0, 1.0, 2.5):
        trainer = prostate_trainer(prostate_dir, tmp_path, weight)
        losses[weight] = trainer.train_step()
        gradients[weight] = [torch.cat([p.grad.flatten() for p in level.parameters() if p.grad is not None])
                             for level in trainer.model.levels]
    coarse = losses[1.0] - losses[0.0]
    assert coarse > 0.05  # same weights and batch: the difference is the coarse level's loss
    assert losses[2.5] - losses[0.0] == pytest.approx(2.5 * coarse, rel=1e-4)
    assert not torch.allclose(gradients[1.0][0], gradients[0.0][0])  # it trains the coarse level
    assert torch.allclose(gradients[1.0][1], gradients[0.0][1])  # and leaves the fine level's gradient alone


def test_a_negative_coarse_supervision_is_refused():
    with pytest.raises(NCAError, match="coarse_supervision must be a number >= 0"):
        TrainSettings.for_preset("prostate", coarse_supervision=-1)
