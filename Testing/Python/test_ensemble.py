"""The pseudo-ensemble's statistics on real cases with the shipped models: runs split
across memory batches, and NQM and the variance map over several classes."""
from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
import torch

import nca_core.inference.ensemble
from nca_core.inference.ensemble import run_ensemble, runs_per_batch
from nca_core.inference.fastpath import fast_forward
from nca_core.space.imaging import read_volume
from nca_core.network.model import LevelPlan
from nca_core.cli.outputs import write_outputs
from nca_core.inference.pipeline import segment_array
from nca_core.inference.settings import SegmentSettings
from nca_core.space.preprocessing import prepare
from nca_core.modelfile.registry import load, shipped_models

CASE = "hippocampus_004.nii.gz"


def _shipped(name: str):
    if name not in shipped_models():
        pytest.skip(f"no shipped '{name}' model (Resources/Models/{name}.m3dnca)")
    return load(name)


def _case(hippocampus_dir):
    return read_volume(hippocampus_dir / "imagesTr" / CASE)


def test_runs_per_batch_fills_the_budget():
    voxels, channels = 1000, 16
    per_run = voxels * 4 * channels
    assert runs_per_batch(voxels, 7, channels, budget=3 * per_run) == 3
    assert runs_per_batch(voxels, 7, channels, budget=3 * per_run - 1) == 2
    assert runs_per_batch(voxels, 2, channels, budget=3 * per_run) == 2  # never more than asked for
    assert runs_per_batch(voxels, 7, channels, budget=1) == 1  # at least one
    assert runs_per_batch(voxels, 7, channels, reference=True, budget=30 * per_run) == 3  # the reference holds 10x


def test_runs_in_batches_of_three_equal_one_batch_of_seven(hippocampus_dir, monkeypatch):
    """Splitting the runs over memory batches must not change which runs are made."""
    bundle = _shipped("hippocampus")
    volume = _case(hippocampus_dir)
    model = bundle.build()

    def ensemble():
        done = []
        result = run_ensemble(model, volume.array, bundle.preprocessing, runs=7, seed=5,
                              progress=lambda finished, total: done.append(finished))
        return result, done

    whole, batches = ensemble()
    assert batches == [7]  # this small case fits one batch under the default budget
    original = nca_core.inference.ensemble.runs_per_batch
    monkeypatch.setattr(nca_core.inference.ensemble, "runs_per_batch",
                        lambda voxels, runs, *args, **kwargs: min(3, original(voxels, runs, *args, **kwargs)))
    split, batches = ensemble()
    assert batches == [3, 6, 7]

    # The runs must differ from each other, or runs repeated across batches would go unnoticed.
    foreground = whole.probability[0] > 0.5
    assert foreground.sum() > 100
    assert float(whole.std[0][foreground].mean()) > 1e-3 and whole.nqm > 1e-3
    np.testing.assert_allclose(split.probability, whole.probability, rtol=0, atol=1e-5)
    np.testing.assert_allclose(split.std, whole.std, rtol=0, atol=1e-5)
    assert split.nqm == pytest.approx(whole.nqm, rel=1e-5)
    assert np.array_equal(split.labels, whole.labels)


def _per_run_probabilities(bundle, array: np.ndarray, runs: int, seed: int) -> np.ndarray:
    """(runs, K, X, Y, Z) foreground probabilities, each run computed on its own."""
    model = bundle.build().eval()
    config = bundle.config
    image = torch.from_numpy(prepare(array, bundle.preprocessing, model.multiple))[None, None]
    crop = tuple(slice(0, s) for s in array.shape)
    out = []
    with torch.no_grad():
        for run in range(runs):
            plan = LevelPlan(steps=list(config.steps), fire_rate=config.fire_rate, seed=seed, runs=[run])
            logits = fast_forward(model, image, plan)[0][..., model.output_slice()]
            probability = torch.sigmoid(logits.double()).numpy()  # (X, Y, Z, K) padded
            out.append(np.moveaxis(probability[crop], -1, 0))
    return np.stack(out)


def test_two_class_nqm_and_variance_map_cover_both_classes(hippocampus_dir, tmp_path):
    """NQM = sum over both class channels of std / of mean; the variance map is the per-voxel
    sum of the class stds, in the result and in the written file."""
    bundle = _shipped("hippocampus-2class")
    assert bundle.config.output_channels == 2
    volume = _case(hippocampus_dir)
    runs, seed = 5, 3
    per_run = _per_run_probabilities(bundle, volume.array, runs, seed)
    mean, std = per_run.mean(axis=0), per_run.std(axis=0)  # population std, as the ensemble's
    expected_nqm = std.sum() / mean.sum()

    result = segment_array(volume.array, bundle,
                           SegmentSettings(model="hippocampus-2class", runs=runs, seed=seed, device="cpu"))
    ensemble = result.ensemble
    np.testing.assert_allclose(ensemble.probability, mean, rtol=0, atol=1e-5)
    np.testing.assert_allclose(ensemble.std, std, rtol=0, atol=1e-5)
    assert ensemble.nqm == pytest.approx(expected_nqm, rel=1e-5)
    np.testing.assert_allclose(ensemble.variance_map, std.sum(axis=0), rtol=0, atol=1e-5)

    # Both classes matter here, so NQM or the map of one class alone, or a max over classes, would be caught.
    for k in range(2):
        assert (ensemble.labels == k + 1).sum() > 50 and std[k].sum() > 0.1 * std.sum()
        assert abs(std[k].sum() / mean[k].sum() - expected_nqm) > 1e-3 * expected_nqm
    assert np.abs(std.sum(axis=0) - std.max(axis=0)).max() > 0.01

    paths = write_outputs(volume, result, tmp_path)
    written = sitk.GetArrayFromImage(sitk.ReadImage(str(paths["variance"]))).transpose(2, 1, 0)
    np.testing.assert_allclose(written, std.sum(axis=0), rtol=0, atol=1e-5)
    report = json.loads(paths["report"].read_text())
    assert report["nqm"] == pytest.approx(expected_nqm, abs=2e-6)
