"""Histogram standardisation: landmarks fitted to the training images, stored in the model file
(format 8), applied before the percentile rescale in training and inference, and refused where
they cannot work. Real PROMISE12 scans from two hospitals where the data is there."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import SimpleITK as sitk

from nca_core.errors import InputImageError, ModelFileError, NCAError
from nca_core.modelfile.bundle import ModelBundle, load_model, save_model
from nca_core.network.config import preset
from nca_core.space.preprocessing import Preprocessing, prepare
from nca_core.space.standardise import LANDMARK_PERCENTILES, fit_landmarks, image_landmarks, standardise
from nca_core.training.settings import PROSTATE_GRID, TrainSettings
from nca_core.training.trainer import Trainer

from nca_helpers import every_parameter_matters, header_and_data, run_cli
from prostate_helpers import case_paths, two_case_trainer


def scan(prostate_dir, number: int) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(case_paths(prostate_dir, number)[0]))).astype(np.float32)


def synthetic(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).gamma(2.0, 100.0, (16, 32, 32)).astype(np.float32)


@pytest.mark.parametrize("landmarks", [
    [0, 1], [0.1] + [0.5] * 11 + [1.0], [0.0] + [0.5] * 11 + [0.9],
    [0.0, 0.6, 0.5] + [0.7] * 9 + [1.0], [0.0] + [float("nan")] * 11 + [1.0], [0.0] + [True] * 11 + [1.0], "flat",
])
def test_landmarks_that_cannot_work_are_refused_naming_the_field(landmarks):
    with pytest.raises(ModelFileError, match="invalid preprocessing: intensity_landmarks must be"):
        Preprocessing.from_dict({"intensity_landmarks": landmarks})


@pytest.mark.parametrize("landmarks", [[0.0, 0.6, 0.5] + [0.7] * 9 + [1.0], [0.0] + [0.5] * 11 + [1.5],
                                       [0.0] + [np.nan] * 11 + [1.0], (0.0,) + (0.5,) * 11 + (1.0,)])
def test_the_landmarks_own_check_refuses_what_the_field_types_let_through(landmarks):
    """Objects built in code skip the file's type check: numpy NaN, a tuple, falling or overshooting values."""
    with pytest.raises(ModelFileError, match="intensity_landmarks must be 13 numbers rising from 0 to 1"):
        Preprocessing(intensity_landmarks=landmarks).validate()
    assert Preprocessing(intensity_landmarks=[0.0] * 12 + [1.0]).validate()  # flat stretches are allowed


def test_an_image_is_moved_onto_the_landmarks_and_its_gain_and_offset_do_not_matter():
    image = synthetic()
    target = fit_landmarks([np.sqrt(synthetic(1))])  # another histogram shape
    moved = standardise(image, target)
    np.testing.assert_allclose(image_landmarks(moved), target, atol=1e-5)
    np.testing.assert_allclose(standardise(3.0 * image + 250.0, target), moved, atol=1e-5)
    assert np.all(np.diff(moved.ravel()[np.argsort(image.ravel())]) >= 0)  # the intensities keep their order


def test_a_nonlinear_scanner_difference_is_undone_where_the_rescale_alone_keeps_it():
    image = synthetic()
    other_scanner = image ** 0.5  # the same anatomy, another contrast curve
    landmarks = fit_landmarks([image])
    plain, standardised = Preprocessing(), Preprocessing(intensity_landmarks=landmarks)
    before = np.abs(prepare(other_scanner, plain, 1) - prepare(image, plain, 1)).mean()
    after = np.abs(prepare(other_scanner, standardised, 1) - prepare(image, standardised, 1)).mean()
    assert after < 0.2 * before


def test_an_image_mostly_of_one_value_keeps_its_order_and_a_constant_one_is_refused():
    image = np.zeros((8, 16, 16), np.float32)
    image[2:6, 4:12, 4:12] = synthetic()[:4, :8, :8]  # 25% of the voxels are not background
    moved = standardise(image, fit_landmarks([synthetic()]))
    assert np.isfinite(moved).all() and np.all(np.diff(moved.ravel()[np.argsort(image.ravel(), kind="stable")]) >= 0)
    with pytest.raises(InputImageError, match="constant intensity"):
        prepare(np.full((8, 8, 8), 7.0, np.float32), Preprocessing(intensity_landmarks=fit_landmarks([synthetic()])), 1)
    with pytest.raises(InputImageError, match="barely vary"):
        fit_landmarks([np.full((8, 8, 8), 7.0, np.float32)])


def test_a_model_with_landmarks_is_format_8_and_reads_them_back(tmp_path, capsys):
    landmarks = fit_landmarks([synthetic()])
    grid = dataclasses.replace(PROSTATE_GRID, intensity_landmarks=landmarks)
    config = dataclasses.replace(preset("prostate"), steps=[2, 2])
    save_model(ModelBundle.from_model(every_parameter_matters(config), preprocessing=grid), tmp_path / "s.m3dnca")
    save_model(ModelBundle.from_model(every_parameter_matters(config), preprocessing=PROSTATE_GRID), tmp_path / "p.m3dnca")
    assert header_and_data(tmp_path / "s.m3dnca")[0]["__metadata__"]["format_version"] == "8"
    assert load_model(tmp_path / "s.m3dnca").preprocessing.intensity_landmarks == landmarks
    plain = header_and_data(tmp_path / "p.m3dnca")[0]["__metadata__"]
    assert plain["format_version"] == "4" and "intensity_landmarks" not in json.loads(plain["preprocessing"])
    code, out, _ = run_cli(capsys, "info", tmp_path / "s.m3dnca")
    median = landmarks[LANDMARK_PERCENTILES.index(50)]
    assert code == 0 and f"histogram standardised onto the training scans' (median at {median:.2f}" in out


def test_landmarks_are_fitted_never_given_and_fine_tuning_keeps_the_setting(tmp_path):
    landmarks = fit_landmarks([synthetic()])
    with pytest.raises(NCAError, match="intensity_landmarks are fitted to the training images"):
        TrainSettings.for_preset("prostate", preprocessing=dict(PROSTATE_GRID.to_dict(), intensity_landmarks=landmarks))
    config = dataclasses.replace(preset("prostate"), input_channels=2)
    prior = {"centre": [0.5, 0.5, 0.5], "spread": [0.1, 0.1, 0.2]}
    for with_landmarks in (True, False):
        grid = dataclasses.replace(PROSTATE_GRID, location_prior=prior,
                                   intensity_landmarks=landmarks if with_landmarks else None)
        initial = ModelBundle.from_model(every_parameter_matters(config), preprocessing=grid)
        settings = TrainSettings.for_preset("prostate", standardise_intensity=not with_landmarks)
        with pytest.raises(NCAError, match=f"trained {'with' if with_landmarks else 'without'} intensity "
                                           f"standardisation; fine-tune it with \"standardise_intensity\": "
                                           f"{str(with_landmarks).lower()}"):
            Trainer(tmp_path, tmp_path / "run", settings, device="cpu", initial=initial)


def test_real_coil_scans_take_the_other_hospitals_histogram(prostate_dir):
    runmc = fit_landmarks(scan(prostate_dir, n) for n in (13, 14, 15))
    coil = scan(prostate_dir, 5)  # BIDMC: endorectal coil, its bright rim darkens the rest
    median = LANDMARK_PERCENTILES.index(50)
    assert image_landmarks(coil)[median] < runmc[median] - 0.1
    np.testing.assert_allclose(image_landmarks(standardise(coil, runmc)), runmc, atol=1e-4)


def test_training_fits_the_landmarks_to_the_training_images_and_trains_on_standardised_ones(prostate_dir, tmp_path):
    trainer = two_case_trainer(prostate_dir, tmp_path / "run", iterations=2, standardise_intensity=True)
    trainer.fit(log=False)
    saved = load_model(tmp_path / "run" / "best.m3dnca")
    on_grid = [case.image for case in trainer.train_cases]
    assert saved.preprocessing.intensity_landmarks == fit_landmarks(on_grid)
    assert saved.preprocessing.intensity_landmarks != fit_landmarks([on_grid[0]])  # both hospitals count
    standardised = prepare(on_grid[0], saved.preprocessing, trainer.model.multiple)
    assert np.array_equal(trainer._prepared["promise12_00"][0].numpy(), standardised)
