"""The location prior of field-of-view models: fitted to the training labels, stored in the model
file, read by every engine as a second input channel, and refused where it cannot work."""
from __future__ import annotations

import dataclasses
import json
import random

import numpy as np
import pytest
import SimpleITK as sitk

from nca_core.errors import ModelFileError, NCAError
from nca_core.inference.ensemble import run_ensemble
from nca_core.modelfile.bundle import ModelBundle, load_model, save_model
from nca_core.network.config import preset
from nca_core.space.preprocessing import Preprocessing, model_input
from nca_core.space.prior import fit_location_prior, jittered_prior, location_prior_map
from nca_core.training.settings import PROSTATE_GRID, TrainSettings
from nca_core.training.trainer import Trainer

from nca_helpers import every_parameter_matters, header_and_data, rewrite, run_cli, small_dataset
from prostate_helpers import case_paths, scanner_version, two_case_trainer

PRIOR = {"centre": [0.5, 0.45, 0.5], "spread": [0.1, 0.1, 0.2]}
SMALL_GRID = Preprocessing(grid_shape=[32, 32, 16], fov_fraction=[0.8, 0.8, 1.0], orientation="LPS",
                           location_prior=PRIOR)


def two_channel_model(preprocessing: Preprocessing = SMALL_GRID) -> ModelBundle:
    config = dataclasses.replace(preset("prostate"), input_channels=2, steps=[4, 4])
    return ModelBundle.from_model(every_parameter_matters(config), preprocessing=preprocessing)


def test_the_prior_fitted_to_labels_sits_at_their_centre_with_their_spread():
    first, second = np.zeros((20, 10, 10), np.uint8), np.zeros((20, 10, 10), np.uint8)
    first[4:8, 2:4, 5], second[12:16, 2:4, 5] = 1, 1  # x centres 6.5 and 14.5 voxels; y 2.5; z 5.5
    prior = fit_location_prior([first, second])
    assert prior["centre"] == pytest.approx([0.5, 0.3, 0.55])
    assert prior["spread"][0] == pytest.approx(np.std([4, 5, 6, 7, 12, 13, 14, 15]) / 20, abs=1e-4)
    assert prior["spread"][1] == pytest.approx(0.05) and prior["spread"][2] == pytest.approx(1e-3)  # flat: floored


def test_the_prior_map_is_one_at_its_centre_and_falls_as_a_gaussian():
    prior_map = location_prior_map([20, 20, 10], {"centre": [0.525, 0.525, 0.55], "spread": [0.1, 0.2, 0.5]})
    assert prior_map.shape == (20, 20, 10) and prior_map.max() == pytest.approx(1.0)
    assert np.unravel_index(prior_map.argmax(), prior_map.shape) == (10, 10, 5)
    assert prior_map[12, 10, 5] == pytest.approx(np.exp(-0.5), rel=1e-5)  # one spread (2 voxels) along x
    assert prior_map[10, 14, 5] == pytest.approx(np.exp(-0.5), rel=1e-5)  # one spread (4 voxels) along y


@pytest.mark.parametrize("prior, words", [
    (None, None),
    ({"centre": [0.5, 0.5, 0.5]}, "location_prior must be"),
    ({"centre": [0.5, 0.5, 1.5], "spread": [0.1, 0.1, 0.1]}, "centre must be 3 fractions"),
    ({"centre": [0.5, 0.5], "spread": [0.1, 0.1, 0.1]}, "centre must be 3 fractions"),
    ({"centre": [0.5, 0.5, 0.5], "spread": [0.1, 0.0, 0.1]}, "spread must be 3 fractions"),
    ({"centre": [0.5, 0.5, 0.5], "spread": [0.1, True, 0.1]}, "spread must be 3 fractions"),
])
def test_a_location_prior_that_cannot_work_is_refused(prior, words):
    fields = dict(SMALL_GRID.to_dict(), location_prior=prior)
    if words is None:
        assert Preprocessing.from_dict(fields).input_channels == 1
        return
    with pytest.raises(ModelFileError, match=words):
        Preprocessing.from_dict(fields)


def test_a_prior_needs_a_field_of_view_grid():
    with pytest.raises(ModelFileError, match="location_prior needs grid_shape"):
        Preprocessing.from_dict({"spacing": [1, 1, 1], "orientation": "RAS", "location_prior": PRIOR})


def test_a_model_with_a_prior_is_format_5_and_its_channels_must_match(tmp_path):
    path = tmp_path / "prior.m3dnca"
    save_model(two_channel_model(), path)
    loaded = load_model(path)
    assert loaded.preprocessing.location_prior == PRIOR and loaded.config.input_channels == 2
    assert header_and_data(path)[0]["__metadata__"]["format_version"] == "5"
    with pytest.raises(ModelFileError, match="reads 2 input channels, the preprocessing gives 1"):
        two_channel_model(dataclasses.replace(SMALL_GRID, location_prior=None))
    rewrite(path, {"preprocessing": json.dumps(dataclasses.replace(SMALL_GRID, location_prior=None).to_dict())})
    with pytest.raises(ModelFileError, match="reads 2 input channels, the preprocessing gives 1"):
        load_model(path)


def test_the_model_reads_the_prior_and_every_engine_agrees():
    """The same image with the prior moved gives another result (the channel is read); the torch,
    fused and reference engines give the same probabilities on a two-channel model."""
    bundle = two_channel_model()
    model = bundle.build()
    image = np.random.default_rng(0).random((32, 32, 16)).astype(np.float32)
    inputs = model_input(image, SMALL_GRID)
    assert inputs.shape == (2, 32, 32, 16) and np.array_equal(inputs[1], location_prior_map([32, 32, 16], PRIOR))
    results = {engine: run_ensemble(model, image, SMALL_GRID, runs=2, seed=1, engine=engine).probability
               for engine in ("torch", "fused")}
    results["reference"] = run_ensemble(model, image, SMALL_GRID, runs=2, seed=1, reference=True).probability
    np.testing.assert_allclose(results["fused"], results["torch"], atol=1e-4)
    np.testing.assert_allclose(results["reference"], results["torch"], atol=1e-4)
    moved = dataclasses.replace(SMALL_GRID, location_prior={"centre": [0.2, 0.7, 0.5], "spread": PRIOR["spread"]})
    assert np.abs(run_ensemble(model, image, moved, runs=2, seed=1).probability - results["torch"]).max() > 0.05


def test_the_prostate_preset_trains_with_a_prior_and_the_channels_must_match():
    assert TrainSettings.for_preset("prostate").config.input_channels == 2
    assert TrainSettings.for_preset("prostate", location_prior=False).config.input_channels == 1
    assert not TrainSettings.for_preset("hippocampus").location_prior
    model = dict(preset("prostate").to_dict(), input_channels=1)
    with pytest.raises(NCAError, match="model.input_channels must be 2 with location_prior"):
        TrainSettings.for_preset("prostate", model=model)
    with pytest.raises(NCAError, match=r"model.input_channels must be 1 \(the image\)"):
        TrainSettings.for_preset("prostate", location_prior=False, model=dict(model, input_channels=2))


def test_a_prior_is_fitted_never_given_and_fine_tuning_keeps_the_channels(tmp_path):
    with pytest.raises(NCAError, match="preprocessing.location_prior is fitted to the training labels"):
        TrainSettings.for_preset("prostate", preprocessing=dict(PROSTATE_GRID.to_dict(), location_prior=PRIOR))
    one_channel = ModelBundle.from_model(every_parameter_matters(preset("prostate")), preprocessing=PROSTATE_GRID)
    with pytest.raises(NCAError, match="reads 1 input channel.*\"location_prior\": false and model.input_channels 1"):
        Trainer(tmp_path, tmp_path / "run", TrainSettings.for_preset("prostate"), device="cpu", initial=one_channel)


def test_a_prior_on_a_spacing_grid_is_refused_before_training(hippocampus_dir, tmp_path):
    model = dict(preset("hippocampus").to_dict(), input_channels=2)
    settings = TrainSettings.for_preset("hippocampus", location_prior=True, model=model, iterations=1)
    with pytest.raises(NCAError, match="location_prior needs a field-of-view grid"):
        Trainer(small_dataset(hippocampus_dir, tmp_path / "data", 4), tmp_path / "run", settings, device="cpu").load_data()


def test_training_the_prostate_preset_fits_the_prior_to_the_training_labels(prostate_dir, tmp_path):
    two_case_trainer(prostate_dir, tmp_path / "run", iterations=2).fit(log=False)
    saved = load_model(tmp_path / "run" / "best.m3dnca")
    labels = [np.transpose(sitk.GetArrayFromImage(sitk.ReadImage(str(case_paths(prostate_dir, n)[1])))) for n in (0, 13)]
    assert saved.preprocessing.location_prior == fit_location_prior(labels)
    assert dataclasses.replace(saved.preprocessing, location_prior=None) == PROSTATE_GRID
    assert 0.4 < saved.preprocessing.location_prior["centre"][0] < 0.6  # the gland lies mid-field


def test_a_scanner_size_scan_with_a_prior_model_comes_back_on_its_own_voxels(prostate_dir, tmp_path, capsys):
    grid = dataclasses.replace(PROSTATE_GRID, location_prior=PRIOR)
    save_model(two_channel_model(grid), tmp_path / "p.m3dnca")
    image_path, label_path = case_paths(prostate_dir, 26)
    scan = scanner_version(sitk.ReadImage(str(image_path)), sitk.ReadImage(str(label_path)), size=(256, 256, 20))[0]
    sitk.WriteImage(scan, str(tmp_path / "scan.nii.gz"))
    code, _, err = run_cli(capsys, "segment", tmp_path / "scan.nii.gz", "--model", tmp_path / "p.m3dnca",
                           "--runs", "1", "-o", tmp_path / "out")
    assert code == 0, err
    written = sitk.ReadImage(str(tmp_path / "out" / "scan_seg.nii.gz"))
    assert written.GetSize() == scan.GetSize() and written.GetDirection() == scan.GetDirection()
    code, out, _ = run_cli(capsys, "info", tmp_path / "p.m3dnca")
    assert "location prior: centre (0.50, 0.45, 0.50), spread (0.10, 0.10, 0.20)" in out


def test_a_jittered_prior_moves_and_resizes_within_its_strength():
    untouched = random.Random(1)
    assert jittered_prior(PRIOR, 0.0, untouched) is PRIOR
    assert untouched.getstate() == random.Random(1).getstate()  # a run without jitter draws as before
    edge = {"centre": [0.99, 0.01, 0.5], "spread": [0.1, 0.1, 0.9]}
    for seed in range(50):
        moved = jittered_prior(edge, 0.5, random.Random(seed))
        assert all(0 <= c <= 1 for c in moved["centre"]) and all(0 < s <= 1 for s in moved["spread"])
    draws = [jittered_prior(PRIOR, 0.5, random.Random(seed)) for seed in range(300)]
    assert draws[7] == jittered_prior(PRIOR, 0.5, random.Random(7))
    scales = []
    for draw in draws:
        factors = [new / old for new, old in zip(draw["spread"], PRIOR["spread"])]
        assert max(factors) - min(factors) < 1e-9, factors  # one size change for all axes
        scales.append(factors[0])
        for new, old, spread in zip(draw["centre"], PRIOR["centre"], PRIOR["spread"]):
            assert abs(new - old) <= 0.5 * spread + 1e-12
    assert 1 / 1.5 - 1e-9 <= min(scales) < 0.75 and 1.35 < max(scales) <= 1.5 + 1e-9
    shifts = [draw["centre"][2] - PRIOR["centre"][2] for draw in draws]
    assert min(shifts) < -0.08 and max(shifts) > 0.08  # up to half the z spread (0.1) either way


def test_prior_jitter_needs_a_prior_and_a_strength_of_zero_or_more():
    with pytest.raises(NCAError, match="prior_jitter needs \"location_prior\": true"):
        TrainSettings.for_preset("prostate", location_prior=False, prior_jitter=0.5)
    with pytest.raises(NCAError, match="prior_jitter must be a number >= 0"):
        TrainSettings.for_preset("prostate", prior_jitter=-0.1)


def test_training_with_prior_jitter_moves_the_inputs_prior_and_keeps_the_fitted_one(prostate_dir, tmp_path):
    priors = {}
    for jitter in (0.0, 0.5):
        trainer = two_case_trainer(prostate_dir, tmp_path / f"run{jitter}", prior_jitter=jitter)
        trainer.load_data()
        fitted = location_prior_map(PROSTATE_GRID.grid_shape, trainer.preprocessing.location_prior)
        priors[jitter] = [trainer._batch(random.Random(seed))[0][0, 1].numpy() for seed in (1, 2)]
        trainer.fit(log=False)
        saved = load_model(tmp_path / f"run{jitter}" / "best.m3dnca").preprocessing.location_prior
        assert np.array_equal(location_prior_map(PROSTATE_GRID.grid_shape, saved), fitted)
    assert all(np.array_equal(prior, fitted) for prior in priors[0.0])
    moved = priors[0.5]
    assert not np.allclose(moved[0], fitted) and not np.allclose(moved[1], fitted)
    assert not np.allclose(moved[0], moved[1])
