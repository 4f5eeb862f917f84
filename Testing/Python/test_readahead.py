"""Reading cases ahead (``cli/readahead``): a head registered on the background thread lands
where the main thread puts it, errors and progress reach the caller that takes the case, and a
batch reads each next case (never a skipped one) while the one before is segmented."""
from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from nca_core.cli import batch, readahead
from nca_core.cli.readahead import ReadAhead, read_case
from nca_core.errors import InputImageError, NCAError
from nca_core.inference.settings import SegmentSettings
from nca_core.modelfile.header import read_model_header
from nca_core.modelfile.registry import load, resolve
from nca_core.space.atlas import HeadAtlas
from nca_core.space.imaging import read_volume
from nca_core.space.preprocessing import Preprocessing


@pytest.fixture(scope="module")
def bundle():
    return load("hippocampus")


def _centres(registration) -> np.ndarray:
    atlas = HeadAtlas.load()
    return np.array([registration.transform.TransformPoint(atlas.centres[side]) for side in ("left", "right")])


def test_the_header_gives_the_preprocessing_the_model_loads_with(bundle):
    stored = read_model_header(resolve("hippocampus")).preprocessing
    assert Preprocessing.from_dict(stored) == bundle.preprocessing


def test_a_head_registered_ahead_lands_where_the_main_thread_puts_it(wholehead_dir, bundle):
    head = wholehead_dir / "ch2.nii.gz"
    steps = []
    with ReadAhead(None, "auto", bundle.preprocessing) as ahead:
        ahead.start(head)
        ahead_case = ahead.take(head, lambda *step: steps.append(step))
    here = read_case(head, None, "auto", bundle.preprocessing)
    assert np.allclose(_centres(ahead_case.registration), _centres(here.registration), atol=0.5)
    assert ahead_case.registration.seconds > 0
    assert ("registration", 2, 2) in steps  # the bar names the registration even when it ended first
    assert np.array_equal(ahead_case.volume.array, read_volume(head).array)


def test_a_crop_is_read_without_a_registration(hippocampus_dir, bundle):
    crop = sorted((hippocampus_dir / "imagesTr").glob("*.nii.gz"))[0]
    case = read_case(crop, None, "auto", bundle.preprocessing)
    assert case.registration is None and case.volume.array.shape == read_volume(crop).array.shape


def test_what_reading_ahead_raised_is_raised_by_take(formats_dir, tmp_path, bundle):
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"not a volume")
    not_t1 = formats_dir / "brain1_image.nrrd"
    with ReadAhead(None, "auto", bundle.preprocessing) as ahead:
        ahead.follow([broken, not_t1])
        ahead.start(broken)
        with pytest.raises(NCAError, match="broken.nii.gz"):
            ahead.take(broken)
        with pytest.raises(InputImageError, match="T1-weighted"):
            ahead.take(not_t1)  # started by the take before it


def test_a_batch_reads_each_next_case_ahead_and_never_a_skipped_one(hippocampus_dir, tmp_path, bundle,
                                                                       monkeypatch):
    crops = sorted((hippocampus_dir / "imagesTr").glob("*.nii.gz"))[:3]
    options = batch.SegmentOptions(SegmentSettings(model="hippocampus", runs=1, steps=[1, 1], device="cpu"))
    batch.segment_inputs(crops[1:2], tmp_path, bundle, options, report=lambda outcome: None)
    reads = []

    def recording(path, *args):
        reads.append((Path(path).name, threading.current_thread() is threading.main_thread()))
        return read_case(path, *args)

    monkeypatch.setattr(readahead, "read_case", recording)
    outcomes = batch.segment_inputs(crops, tmp_path, bundle, options, report=lambda outcome: None)
    assert [outcome.status for outcome in outcomes] == ["ok", "skipped", "ok"]
    # the first case read where it is segmented (nothing was read ahead), the third ahead meanwhile
    assert sorted(reads) == [(crops[0].name, True), (crops[2].name, False)]
