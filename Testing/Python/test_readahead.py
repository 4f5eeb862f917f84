"""Reading cases ahead (``cli/readahead``): a head registered on the background thread lands
where the main thread puts it, files are read on the main thread only (reading captures the
process's stderr), errors and progress reach the caller that takes the case, a batch reads each
next case (never a skipped one) before the one before it is segmented, and ``m3dnca segment``
starts the first head before it loads the engine."""
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

from nca_helpers import run_cli


@pytest.fixture(scope="module")
def bundle():
    return load("hippocampus")


@pytest.fixture
def threads_of(monkeypatch):
    """Records, per call of ``read_volume`` and ``register`` in ``readahead``, the file or step
    and whether it ran on the main thread and on a daemon thread."""
    calls = []

    def recording(name, original, label):
        def wrapper(*args, **kwargs):
            thread = threading.current_thread()
            calls.append((name, label(*args), thread is threading.main_thread(), thread.daemon))
            return original(*args, **kwargs)
        monkeypatch.setattr(readahead, name, wrapper)

    recording("read_volume", readahead.read_volume, lambda path, *rest: Path(path).name)
    recording("register", readahead.register, lambda *args: "")
    return calls


def _centres(registration) -> np.ndarray:
    atlas = HeadAtlas.load()
    return np.array([registration.transform.TransformPoint(atlas.centres[side]) for side in ("left", "right")])


def test_the_header_gives_the_preprocessing_the_model_loads_with(bundle):
    stored = read_model_header(resolve("hippocampus")).preprocessing
    assert Preprocessing.from_dict(stored) == bundle.preprocessing


def test_a_head_registered_ahead_lands_where_the_main_thread_puts_it(wholehead_dir, bundle, threads_of):
    head = wholehead_dir / "ch2.nii.gz"
    steps = []
    with ReadAhead(None, "auto", bundle.preprocessing) as ahead:
        ahead.start(head)
        ahead_case = ahead.take(head, lambda *step: steps.append(step))
    assert threads_of == [("read_volume", "ch2.nii.gz", True, False), ("register", "", False, True)]
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
            ahead.take(not_t1)  # started by the take before it, registered on the thread


def test_a_batch_reads_each_next_case_before_segmenting_and_never_a_skipped_one(hippocampus_dir, tmp_path, bundle,
                                                                                monkeypatch, threads_of):
    crops = sorted((hippocampus_dir / "imagesTr").glob("*.nii.gz"))[:3]
    options = batch.SegmentOptions(SegmentSettings(model="hippocampus", runs=1, steps=[1, 1], device="cpu"))
    batch.segment_inputs(crops[1:2], tmp_path, bundle, options, report=lambda outcome: None)
    segment_image = batch.segment_image
    monkeypatch.setattr(batch, "segment_image", lambda image, *args, **kwargs: (
        threads_of.append(("segment_image", image.GetSize(), True, False)), segment_image(image, *args, **kwargs))[1])
    threads_of.clear()
    outcomes = batch.segment_inputs(crops, tmp_path, bundle, options, report=lambda outcome: None)
    assert [outcome.status for outcome in outcomes] == ["ok", "skipped", "ok"]
    sizes = [read_volume(crop).reference.GetSize() for crop in crops]
    assert threads_of == [("read_volume", crops[0].name, True, False), ("read_volume", crops[2].name, True, False),
                          ("segment_image", sizes[0], True, False), ("segment_image", sizes[2], True, False)]


def test_segment_registers_the_first_head_on_the_thread_and_skips_a_finished_one(wholehead_dir, tmp_path, capsys,
                                                                                  threads_of):
    head = wholehead_dir / "ch2.nii.gz"
    options = ["-o", tmp_path, "--runs", "1", "--steps", "1,1"]
    code, _, err = run_cli(capsys, "segment", head, *options)
    assert code == 0, err
    assert threads_of == [("read_volume", "ch2.nii.gz", True, False), ("register", "", False, True)]
    threads_of.clear()
    code, out, err = run_cli(capsys, "segment", head, *options)
    assert code == 0 and "skipped" in out, (out, err)
    assert threads_of == []  # a finished case is neither read nor registered again


def test_closing_waits_for_the_registration_under_way(wholehead_dir, bundle, monkeypatch):
    """An interrupt while a head registers: closing the reader waits for the thread, which must
    not be left inside ITK when Python shuts down (that aborted the process)."""
    started = threading.Event()
    register = readahead.register
    monkeypatch.setattr(readahead, "register", lambda *args: (started.set(), register(*args))[1])
    with pytest.raises(KeyboardInterrupt):
        with ReadAhead(None, "auto", bundle.preprocessing) as ahead:
            ahead.start(wholehead_dir / "ch2.nii.gz")
            assert started.wait(30)
            raise KeyboardInterrupt
    assert "m3dnca-read-ahead" not in [thread.name for thread in threading.enumerate()]
    with pytest.raises(RuntimeError, match="after close"):
        ahead.start(wholehead_dir / "ch2.nii.gz")
