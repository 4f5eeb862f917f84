"""The location prior's sizes: stored in the model file, probed on every scan (the size whose
runs agree most wins, its probe runs kept as the ensemble's first ones), refused where they
cannot work."""
from __future__ import annotations


import dataclasses

import numpy as np
import pytest
import SimpleITK as sitk

from nca_core.errors import ModelFileError, NCAError
from nca_core.inference.pipeline import segment_array
from nca_core.inference.priorsize import at_prior, choose_prior, with_prior_probes
from nca_core.inference.settings import SegmentSettings
from nca_core.inference.sides import PROBE_RUNS
from nca_core.modelfile.bundle import load_model, save_model
from nca_core.modelfile.registry import load
from nca_core.quality.metrics import dice
from nca_core.space.preprocessing import Preprocessing

from nca_helpers import header_and_data, run_cli
from prostate_helpers import case_paths, xyz
from test_location_prior import PRIOR, SMALL_GRID, two_channel_model


@pytest.mark.parametrize("sizes", [[], [0], [1.0, 1.0], [5], "1", [True, 1.2], [[1.0]],
                                   [1 + i / 10 for i in range(9)]])
def test_sizes_that_cannot_be_probed_are_refused(sizes):
    with pytest.raises(ModelFileError, match="sizes must be 1 to 8 different spread factors"):
        Preprocessing.from_dict(dict(SMALL_GRID.to_dict(), location_prior=dict(PRIOR, sizes=sizes)))


def test_a_prior_with_an_unknown_key_is_refused():
    with pytest.raises(ModelFileError, match="optionally \"sizes\""):
        Preprocessing.from_dict(dict(SMALL_GRID.to_dict(), location_prior=dict(PRIOR, size=[1.0])))


def test_a_model_with_prior_sizes_is_format_6_and_one_size_is_none(tmp_path):
    sized = with_prior_probes(two_channel_model(), [1.0, 1.3])
    save_model(sized, tmp_path / "sized.m3dnca")
    assert load_model(tmp_path / "sized.m3dnca").preprocessing.location_prior == dict(PRIOR, sizes=[1.0, 1.3])
    assert header_and_data(tmp_path / "sized.m3dnca")[0]["__metadata__"]["format_version"] == "6"
    plain = with_prior_probes(sized, [1])
    assert plain.preprocessing.location_prior == PRIOR and plain.format_version == 5
    with pytest.raises(NCAError, match="sizes must be"):
        with_prior_probes(sized, [1.0, -1.0])


def test_sizes_need_a_prior_and_a_model_without_a_side(tmp_path, capsys):
    with pytest.raises(NCAError, match="need a model with a location prior"):
        with_prior_probes(load("hippocampus"), [1.0, 1.2])
    code, _, err = run_cli(capsys, "evaluate", "--data", tmp_path, "--model", "hippocampus", "--prior-sizes",
                           "1,1.2", "-o", tmp_path / "out")
    assert code != 0 and len(err) == 1 and "need a model with a location prior" in err[0]
    with pytest.raises(SystemExit):
        run_cli(capsys, "calibrate", "--data", tmp_path, "--model", "prostate", "--prior-sizes", "1,big",
                "-o", tmp_path / "c.m3dnca")
    assert "sizes are numbers separated by commas" in capsys.readouterr().err
    fields = dict(SMALL_GRID.to_dict(), side="left", location_prior=dict(PRIOR, sizes=[1.0, 1.2]))
    with pytest.raises(ModelFileError, match="a model with a side cannot have them"):
        Preprocessing.from_dict(fields)
    with pytest.raises(NCAError, match="need a model without a side"):
        with_prior_probes(two_channel_model(dataclasses.replace(SMALL_GRID, side="left")), [1.0, 1.2])


@pytest.mark.parametrize("runs", [1, 2, 3])
def test_progress_counts_every_run_and_two_runs_are_the_chosen_probe(runs):
    """With 3 sizes: 2 probe runs each; the chosen probe's runs are the ensemble's first (with 2
    runs, the whole ensemble), so the total is runs + 4 (runs + 6 for a single run)."""
    bundle = with_prior_probes(two_channel_model(), [1.0, 1.3, 1.6])
    image = np.random.default_rng(3).random((32, 32, 16)).astype(np.float32)
    reported = []
    result = segment_array(image, bundle, SegmentSettings(runs=runs),
                           progress=lambda done, total: reported.append((done, total)))
    total = runs + 2 * PROBE_RUNS + (PROBE_RUNS if runs < PROBE_RUNS else 0)
    assert reported[-1] == (total, total) and all(t == total for _, t in reported)
    alone = segment_array(image, at_prior(bundle, result.prior.factor), SegmentSettings(runs=runs))
    np.testing.assert_allclose(result.ensemble.probability, alone.ensemble.probability, atol=1e-6)


def test_the_lowest_nqm_wins_the_first_on_a_tie_and_one_size_is_not_probed():
    """The probe here is a stand-in for the runs (it returns given NQMs; control flow only)."""
    nqms = {1.0: 0.12, 1.3: 0.09, 1.5: 0.09}
    probed = []

    def stand_in_probe(shift, factor: float) -> float:
        assert shift == (0.0, 0.0, 0.0)
        probed.append(factor)
        return nqms[factor]

    choice = choose_prior(with_prior_probes(two_channel_model(), list(nqms)), stand_in_probe)
    assert choice.factor == 1.3 and probed == [1.0, 1.3, 1.5]
    assert "1: 0.120, 1.3: 0.090, 1.5: 0.090" in choice.reason
    assert choose_prior(two_channel_model(), stand_in_probe).factor == 1.0 and len(probed) == 3
    assert choose_prior(load("hippocampus"), stand_in_probe) is None


def test_a_scaled_prior_widens_every_spread_up_to_the_whole_axis():
    wide = at_prior(two_channel_model(), 6.0).preprocessing.location_prior
    assert wide["centre"] == PRIOR["centre"] and wide["spread"] == pytest.approx([0.6, 0.6, 1.0])


def test_a_large_gland_is_segmented_at_the_size_whose_runs_agree_most(prostate_dir):
    """The shipped prostate model probing two sizes on a held-out case with a large gland (06):
    the size chosen is the one whose two runs have the lower NQM, the result is that size's
    ensemble with the probe's runs as its first ones, progress counts every run, and the
    wider prior outlines more than the model's own."""
    image_path, label_path = case_paths(prostate_dir, 6)
    image, label = sitk.ReadImage(str(image_path)), xyz(sitk.ReadImage(str(label_path))) > 0
    array, geometry = xyz(image), dict(spacing=image.GetSpacing(), direction=image.GetDirection())
    shipped = load("prostate")
    bundle, sizes, runs = with_prior_probes(shipped, [1.0, 1.5], [[0, 0, 0]]), [1.0, 1.5], 3  # sizes alone
    settings = SegmentSettings(runs=runs)
    reported = []
    result = segment_array(array, bundle, settings, progress=lambda done, total: reported.append((done, total)),
                           **geometry)
    probe_nqms = [segment_array(array, at_prior(bundle, f), SegmentSettings(runs=PROBE_RUNS), **geometry).nqm
                  for f in sizes]
    assert result.prior.factor == sizes[int(np.argmin(probe_nqms))]
    assert result.report()["prior"]["factor"] == result.prior.factor
    alone = segment_array(array, at_prior(bundle, result.prior.factor), settings, **geometry)
    assert alone.prior.reason.startswith("the model's prior, its spread x 1 (one size")
    assert np.array_equal(result.ensemble.labels, alone.ensemble.labels) and result.ensemble.runs == runs
    np.testing.assert_allclose(result.nqm, alone.nqm, rtol=1e-6)
    total = runs + PROBE_RUNS * (len(sizes) - 1)
    assert reported[-1] == (total, total) and [d for d, _ in reported] == sorted(d for d, _ in reported)
    own = segment_array(array, at_prior(shipped, 1.0), settings, **geometry).ensemble.labels
    wide = segment_array(array, at_prior(shipped, 1.5), settings, **geometry).ensemble.labels
    assert np.count_nonzero(wide) > 1.1 * np.count_nonzero(own)
    if result.prior.factor > 1:  # this gland is larger than the prior's: a wider prior outlines more of it
        assert dice(result.ensemble.labels > 0, label) > dice(own > 0, label)


def test_info_lists_the_sizes(tmp_path, capsys):
    save_model(with_prior_probes(two_channel_model(), [1.0, 1.25]), tmp_path / "sized.m3dnca")
    code, out, _ = run_cli(capsys, "info", tmp_path / "sized.m3dnca")
    assert code == 0 and "prior sizes: spread x 1, 1.25, each tried on every scan" in out
