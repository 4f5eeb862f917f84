"""The fused CPU engine (numba kernels) gives the torch path's results for the same seed and firing."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from nca_core.errors import NCAError
from nca_core.inference import fused
from nca_core.inference.ensemble import run_ensemble
from nca_core.inference.fastpath import fast_forward
from nca_core.inference.settings import SegmentSettings
from nca_core.network.config import NCAConfig
from nca_core.network.firing import fire_mask, stream_key
from nca_core.network.model import LevelPlan, M3DNCA
from nca_core.space.preprocessing import Preprocessing

from nca_helpers import every_parameter_matters

pytest.importorskip("numba", reason="the fused engine needs numba (pip install 'm3dnca[fast]')")

TOLERANCE = 1e-5  # relative to the largest state value


def _model(config: NCAConfig) -> M3DNCA:
    return every_parameter_matters(config)


def _image(shape, batch: int) -> torch.Tensor:
    torch.manual_seed(1)
    return torch.rand((1, 1) + tuple(shape)).expand(batch, -1, -1, -1, -1)


def _relative_error(found: torch.Tensor, expected: torch.Tensor) -> float:
    return float((found - expected).abs().max()) / max(1.0, float(expected.abs().max()))


def test_kernel_firing_equals_fire_mask():
    kernels = fused.kernels()
    keys = [stream_key(seed, run, level, step) for seed in (0, 9) for run in (0, 3) for level in (0, 1)
            for step in (0, 7)]
    cells = np.concatenate([np.arange(0, 4000), np.arange(2**31 - 100, 2**31 + 100), [2**33 + 5]])
    for rate in (0.25, 0.5, 0.9):
        threshold = int(rate * 2**32)
        expected = fire_mask(torch.tensor(keys), torch.from_numpy(cells), rate)[:, 0] > 0
        found = [[kernels.fires(key, int(cell), threshold) for cell in cells] for key in keys]
        assert np.array_equal(np.array(found), expected.numpy())


# kernel sizes 5 and 3 (the generic and the 3x3x3 pass), 7 and 3 (the 7-tap pass, as the presets)
@pytest.mark.parametrize("kernels, shape", [([5, 3], (12, 14, 10)), ([7, 3], (16, 18, 14))])
@pytest.mark.parametrize("per_sample", [True, False])
@pytest.mark.parametrize("fire_rate", [0.5, 0.0])
def test_fused_forward_equals_torch_fast_path(kernels, shape, per_sample, fire_rate):
    model = _model(NCAConfig(kernel_sizes=kernels, steps=[3, 4], downscale=2))
    plan = LevelPlan(steps=[3, 4], fire_rate=fire_rate, seed=3, runs=[0, 1, 5], per_sample_stats=per_sample)
    image = _image(shape, 3)
    expected = fast_forward(model, image, plan)
    found = fused.fused_forward(model, image, plan)
    assert found.shape == expected.shape
    assert float(expected[..., 1:].abs().max()) > 1.0  # the state moved: not a comparison of zeros
    assert _relative_error(found, expected) <= TOLERANCE


def test_runs_batched_or_alone_agree():
    """A run's result does not depend on which runs share its pass."""
    model = _model(NCAConfig(kernel_sizes=[5, 3], steps=[3, 4], downscale=2))
    plan = LevelPlan(steps=[3, 4], fire_rate=0.5, seed=2, runs=[4, 7])
    together = fused.fused_forward(model, _image((12, 14, 10), 2), plan)
    alone = fused.fused_forward(model, _image((12, 14, 10), 1), LevelPlan(steps=[3, 4], fire_rate=0.5, seed=2, runs=[7]))
    assert torch.equal(together[1:], alone)


def _compare_engines_on_cases(hippocampus_dir, limit=None, runs=10):
    """Per case: max |probability difference|, label voxels that differ, |NQM difference|."""
    from nca_core.modelfile.bundle import load_model
    from nca_core.modelfile.registry import shipped_models
    from nca_core.training.data import find_pairs, load_case

    if "hippocampus" not in shipped_models():
        pytest.skip("no shipped 'hippocampus' model")
    bundle = load_model(shipped_models()["hippocampus"])
    model = bundle.build()
    rows = []
    for image_path, label_path in find_pairs(hippocampus_dir)[:limit]:
        case = load_case(image_path, label_path, merge_labels=True)
        torch_result = run_ensemble(model, case.image, bundle.preprocessing, runs=runs, engine="torch")
        fused_result = run_ensemble(model, case.image, bundle.preprocessing, runs=runs, engine="fused")
        assert torch_result.labels.any()
        rows.append((float(np.abs(fused_result.probability - torch_result.probability).max()),
                     int(np.count_nonzero(fused_result.labels != torch_result.labels)),
                     abs(fused_result.nqm - torch_result.nqm)))
    return np.array(rows)


def test_ensemble_engines_agree_on_real_cases(hippocampus_dir):
    """The shipped model on a real crop: probabilities within 1e-5, the same labels and NQM."""
    rows = _compare_engines_on_cases(hippocampus_dir, limit=1, runs=4)
    assert rows[:, 0].max() <= 1e-5 and rows[:, 1].max() == 0 and rows[:, 2].max() <= 1e-5


@pytest.mark.slow
def test_ensemble_engines_agree_on_every_shared_case(hippocampus_dir):
    """Every shared case, 10 runs: probabilities within 1e-5, identical labels, NQM within 1e-5."""
    rows = _compare_engines_on_cases(hippocampus_dir)
    print(f"{len(rows)} cases: max |probability difference| {rows[:, 0].max():.2e}, label voxels differing "
          f"{int(rows[:, 1].sum())}, max |NQM difference| {rows[:, 2].max():.2e}")
    assert rows[:, 0].max() <= 1e-5 and rows[:, 1].max() == 0 and rows[:, 2].max() <= 1e-5


def test_engine_choice(monkeypatch):
    preset = NCAConfig(kernel_sizes=[7, 3], steps=[10, 10], downscale=2)
    assert fused.choose_engine("auto", "cpu", preset) == "fused"
    assert fused.choose_engine("auto", "cuda", preset) == "torch"
    assert fused.choose_engine("auto", "cpu", preset, reference=True) == "torch"
    assert fused.choose_engine("torch", "cpu", preset) == "torch"
    narrow = NCAConfig(channels=8, hidden=32, kernel_sizes=[3], steps=[2], downscale=2)
    assert fused.choose_engine("auto", "cpu", narrow) == "torch"
    with pytest.raises(NCAError, match="8 channels|16 channels"):
        fused.choose_engine("fused", "cpu", narrow)
    with pytest.raises(NCAError, match="CPU only"):
        fused.choose_engine("fused", "cuda", preset)
    monkeypatch.setattr(fused, "_KERNELS", [None])  # as without numba
    assert fused.choose_engine("auto", "cpu", preset) == "torch"
    with pytest.raises(NCAError, match="needs numba"):
        fused.choose_engine("fused", "cpu", preset)


def test_engine_setting_is_parsed_once():
    assert SegmentSettings.parse(engine="fused").engine == "fused"
    assert SegmentSettings().engine == "auto"
    assert SegmentSettings.from_dict(SegmentSettings(engine="torch").to_dict()).engine == "torch"  # job files
    with pytest.raises(NCAError, match="--engine"):
        SegmentSettings.parse(engine="gpu-magic")


def test_ensemble_engine_is_honoured():
    """engine='torch' and 'fused' take different code (float sums differ in the last bits)."""
    model = _model(NCAConfig(kernel_sizes=[5, 3], steps=[3, 4], downscale=2))
    array = np.random.default_rng(0).random((11, 14, 9), dtype=np.float32)
    torch_result = run_ensemble(model, array, Preprocessing(), runs=3, seed=1, engine="torch")
    fused_result = run_ensemble(model, array, Preprocessing(), runs=3, seed=1, engine="fused")
    assert not np.array_equal(torch_result.probability, fused_result.probability)
    assert np.abs(torch_result.probability - fused_result.probability).max() <= 1e-5
