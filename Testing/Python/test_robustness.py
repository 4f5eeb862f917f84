"""Bad input, faults and data safety through the command line (issue 7).

Every bad input: exit code 1, exactly one error line naming the file, no output files
of that case; inputs are never modified; outputs appear only complete.

The model here is untrained (probability 0.5 everywhere, NQM 0): these tests are about input,
output and faults only, never about segmentation quality (the ``io_only`` ones segment with it).
"""
from __future__ import annotations

import csv
import errno
import json
import os
import re
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

import nca_core.atomic
import nca_core.cli.batch
import nca_core.cli.outputs
from nca_core.cli.main import main
from nca_core.modelfile.bundle import FORMAT_VERSION
from nca_core.network.config import MAX_STEPS

from nca_helpers import fast, hashes, model_file, rewrite, run_cli, smooth_volume, write_volume


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    """An untrained model: for I/O-only tests."""
    return model_file(tmp_path_factory.mktemp("model") / "untrained.m3dnca")


@pytest.fixture
def inputs(tmp_path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    write_volume(folder / "good.nii.gz", smooth_volume())
    return folder


def case_files(outdir: Path, case: str):
    """Every file (hidden temporaries included) of ``case`` in ``outdir``."""
    return sorted(p.name for p in outdir.glob(f"*{case}*")) if outdir.exists() else []


def bad_inputs(folder: Path):
    """(file, words of its error) for every kind of bad input built here."""
    good = write_volume(folder / "source.nii.gz", smooth_volume()).read_bytes()
    (folder / "empty.nii.gz").write_bytes(b"")
    (folder / "cut.nii.gz").write_bytes(good[: len(good) // 2])
    (folder / "text.nii.gz").write_text("not an image\n")
    sitk.WriteImage(sitk.GetImageFromArray(np.random.rand(20, 20).astype(np.float32)), str(folder / "flat.nii.gz"))
    sitk.WriteImage(sitk.GetImageFromArray(np.random.rand(2, 12, 14, 16).astype(np.float32), isVector=False),
                    str(folder / "fourd.nii.gz"))
    sitk.WriteImage(sitk.GetImageFromArray(np.random.rand(12, 14, 16, 3).astype(np.float32), isVector=True),
                    str(folder / "vector.nrrd"))
    nan = smooth_volume()
    nan[1, 1, 1] = np.nan
    write_volume(folder / "nan.nrrd", nan)
    write_volume(folder / "zero.nrrd", np.zeros((16, 14, 12), np.int16))
    write_volume(folder / "constant.nrrd", np.full((16, 14, 12), 3, np.uint8))
    write_volume(folder / "thin.nrrd", smooth_volume((16, 14, 2)))
    (folder / "source.nii.gz").unlink()
    return {
        "missing.nii.gz": "no such file or folder",
        "empty.nii.gz": "file is empty",
        "cut.nii.gz": "truncated",
        "text.nii.gz": "not gzip-compressed",
        "flat.nii.gz": "is 2D",
        "fourd.nii.gz": "choose one with --channel N",
        "vector.nrrd": "choose one with --channel N",
        "nan.nrrd": "NaN",
        "zero.nrrd": "all-zero image",
        "constant.nrrd": "every voxel has the value 3",
        "thin.nrrd": "too small for this model",
    }


def test_each_bad_input_gives_one_error_line_exit_1_and_no_outputs(tmp_path, capsys, model):
    folder = tmp_path / "bad"
    folder.mkdir()
    expected = bad_inputs(folder)
    before = hashes(folder)
    for name, words in expected.items():
        outdir = tmp_path / f"out_{name}"
        code, out, err = run_cli(capsys, "segment", folder / name, "-o", outdir, *fast(model))
        assert code == 1, name
        assert len(err) == 1, (name, err)
        assert err[0].startswith(f"m3dnca: error: {folder / name}: ") and words in err[0], err[0]
        assert case_files(outdir, name.split(".")[0]) == []
    assert hashes(folder) == before


def test_batch_reports_and_skips_failing_cases(tmp_path, capsys, model, inputs):
    expected = bad_inputs(inputs)
    outdir = tmp_path / "out"
    before = hashes(inputs)
    code, out, err = run_cli(capsys, "segment", inputs, "-o", outdir, *fast(model))
    assert code == 1
    assert "good: NQM" in out
    assert err[-1].startswith(f"m3dnca: {len(expected) - 1} of {len(expected)} cases failed")
    rows = {row["case"]: row for row in csv.DictReader((outdir / "summary.csv").open())}
    assert set(rows) == {"good"} | {n.split(".")[0] for n in expected if n != "missing.nii.gz"}
    assert rows["good"]["status"] == "ok" and rows["good"]["nqm"] != ""
    assert all(row["status"] == "failed" and row["message"].startswith(row["input"])
               for case, row in rows.items() if case != "good")
    assert sorted(p.name for p in outdir.iterdir()) == [
        "good_report.json", "good_seg.nii.gz", "good_variance.nii.gz", "summary.csv"]
    assert hashes(inputs) == before


def test_io_only_all_cases_ok_exits_0_and_summary_lists_them(tmp_path, capsys, model, inputs):
    """I/O only: the model is untrained (probability 0.5 everywhere, NQM 0), so this says nothing about segmentation quality."""
    write_volume(inputs / "second.nrrd", smooth_volume(seed=1))
    code, out, err = run_cli(capsys, "segment", inputs, "-o", tmp_path / "out", *fast(model))
    assert code == 0 and err == []
    rows = list(csv.DictReader((tmp_path / "out" / "summary.csv").open()))
    assert [(r["case"], r["status"]) for r in rows] == [("good", "ok"), ("second", "ok")]


def test_missing_input_among_good_ones(tmp_path, capsys, model, inputs):
    code, out, err = run_cli(capsys, "segment", inputs / "good.nii.gz", tmp_path / "gone.nrrd",
                             "-o", tmp_path / "out", *fast(model))
    assert code == 1
    assert err[0] == f"m3dnca: error: {tmp_path / 'gone.nrrd'}: no such file or folder"
    assert (tmp_path / "out" / "good_seg.nii.gz").exists()


def test_usage_errors_exit_2(tmp_path, model, inputs):
    for args in (["segment", str(inputs), "-o", str(tmp_path), "--runs", "0"],
                 ["segment", str(inputs)], ["segment", str(inputs), "-o", str(tmp_path), "--channel", "-1"],
                 ["segment", str(inputs), "-o", str(tmp_path), "--steps", f"{MAX_STEPS + 1},1"]):
        with pytest.raises(SystemExit) as raised:
            main(args)
        assert raised.value.code == 2


def test_wrong_step_count_is_refused_before_any_case(tmp_path, capsys, model, inputs):
    code, out, err = run_cli(capsys, "segment", inputs, "-o", tmp_path / "out", "--model", model, "--steps", "1,1,1")
    assert code == 1 and err == ["m3dnca: error: --steps needs 2 values, one per level"]
    assert not (tmp_path / "out").exists()


def test_io_only_channel_option_segments_one_channel_of_a_4d_image(tmp_path, capsys, model):
    """I/O only: the model is untrained (probability 0.5 everywhere, NQM 0), so this says nothing about segmentation quality."""
    path = tmp_path / "fourd.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.random.rand(2, 12, 14, 16).astype(np.float32), isVector=False), str(path))
    code, out, err = run_cli(capsys, "segment", path, "-o", tmp_path / "out", "--channel", "1", *fast(model))
    assert code == 0, err
    seg = sitk.ReadImage(str(tmp_path / "out" / "fourd_seg.nii.gz"))
    assert seg.GetSize() == (16, 14, 12) and seg.GetDimension() == 3
    code, out, err = run_cli(capsys, "segment", path, "-o", tmp_path / "out2", "--channel", "2", *fast(model))
    assert code == 1 and "--channel 2 is out of range (0 to 1)" in err[0]


@pytest.mark.parametrize("damage, words", [
    (lambda data: data[:-50], "corrupt model file"),
    (lambda data: data[:-5] + bytes([data[-5] ^ 1]) + data[-4:], "checksum mismatch"),
    (lambda data: b"garbage" * 10, "not an M3D-NCA model file"),
    (lambda data: re.sub(rb'"format_version":"\d+"', f'"format_version":"{FORMAT_VERSION + 1}"'.encode(), data),
     "newer than this M3DNCASegment"),
])
def test_bad_model_file_gives_one_line_and_no_outputs(tmp_path, capsys, model, inputs, damage, words):
    bad = tmp_path / "bad.m3dnca"
    bad.write_bytes(damage(model.read_bytes()))
    code, out, err = run_cli(capsys, "segment", inputs, "-o", tmp_path / "out", "--model", bad)
    assert code == 1 and len(err) == 1
    assert err[0].startswith(f"m3dnca: error: {bad}: ") and words in err[0]
    assert not (tmp_path / "out").exists()


def test_model_whose_channels_do_not_fit_its_preprocessing(tmp_path, capsys, inputs):
    from nca_core.network.config import preset
    from nca_core.network.model import M3DNCA
    from nca_core.modelfile.bundle import ModelBundle, save_model

    path = tmp_path / "two_inputs.m3dnca"
    save_model(ModelBundle.from_model(M3DNCA(preset("hippocampus"))), path)
    # two input channels shape no weight: only the config says so, and the preprocessing gives one
    rewrite(path, {"config": json.dumps(dict(preset("hippocampus").to_dict(), input_channels=2))})
    code, out, err = run_cli(capsys, "segment", inputs / "good.nii.gz", "-o", tmp_path / "out", "--model", path)
    assert code == 1 and len(err) == 1
    assert "the config reads 2 input channels, the preprocessing gives 1 (the image)" in err[0]
    assert case_files(tmp_path / "out", "good") == []


def test_volume_too_large_for_memory_is_refused_with_need_and_limit(tmp_path, capsys, model, inputs, monkeypatch):
    monkeypatch.setenv("M3DNCA_MEMORY_LIMIT", "200K")
    code, out, err = run_cli(capsys, "segment", inputs / "good.nii.gz", "-o", tmp_path / "out", *fast(model))
    assert code == 1 and len(err) == 1
    assert "volume 16x14x12 needs about" in err[0] and "the limit set by M3DNCA_MEMORY_LIMIT (200.0 KiB)" in err[0]
    assert case_files(tmp_path / "out", "good") == []


def test_a_bad_memory_limit_is_reported_once_not_per_case(tmp_path, capsys, model, inputs, monkeypatch):
    write_volume(inputs / "second.nii.gz", smooth_volume())
    monkeypatch.setenv("M3DNCA_MEMORY_LIMIT", "lots")
    code, out, err = run_cli(capsys, "segment", inputs, "-o", tmp_path / "out", *fast(model))
    assert code == 1 and err == ["m3dnca: error: M3DNCA_MEMORY_LIMIT='lots': not a size (e.g. 8G, 512M)"]
    assert not (tmp_path / "out").exists()


def test_output_folder_that_cannot_be_created(tmp_path, capsys, model, inputs):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, out, err = run_cli(capsys, "segment", inputs, "-o", blocker / "out" / "sub", *fast(model))
    assert code == 1 and err == [f"m3dnca: error: {blocker / 'out' / 'sub'}: output folder cannot be created: "
                                 f"{blocker} is not a folder"]
    code, out, err = run_cli(capsys, "segment", inputs, "-o", blocker, *fast(model))
    assert code == 1 and err == [f"m3dnca: error: {blocker}: output path exists and is not a folder"]


def test_output_folder_under_a_broken_link(tmp_path, capsys, model, inputs):
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "gone")
    code, out, err = run_cli(capsys, "segment", inputs, "-o", link / "out", *fast(model))
    assert code == 1 and err == [f"m3dnca: error: {link / 'out'}: output folder cannot be created: {link} is not a folder"]


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc, where no folder can be created")
def test_output_folder_whose_parent_cannot_be_created(tmp_path, capsys, model, inputs):
    outdir = Path("/proc/m3dnca-missing/out")
    code, out, err = run_cli(capsys, "segment", inputs, "-o", outdir, *fast(model))
    assert code == 1 and err == [f"m3dnca: error: {outdir}: output folder cannot be created: its parent folder "
                                 "/proc/m3dnca-missing does not exist and cannot be created (No such file or directory)"]


@pytest.mark.parametrize("kind", ["read-only", "sysfs"])
def test_output_folder_that_refuses_new_files(tmp_path, capsys, model, inputs, kind):
    """An existing folder in which no file can be created is refused once, before any case runs.
    Root ignores a folder's mode bits (CI runs as root), so a sysfs folder, where the kernel
    refuses new files to every user, covers that branch there."""
    if kind == "read-only":
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            pytest.skip("root ignores a folder's mode bits; the sysfs case covers root")
        outdir = tmp_path / "locked"
        outdir.mkdir()
        outdir.chmod(0o555)
    else:
        outdir = Path("/sys/kernel")
        if not outdir.is_dir():
            pytest.skip("no sysfs here (not Linux)")
    before = sorted(p.name for p in outdir.iterdir())
    try:
        code, out, err = run_cli(capsys, "segment", inputs, "-o", outdir, *fast(model))
    finally:
        if kind == "read-only":
            outdir.chmod(0o755)
    assert code == 1 and out == "" and len(err) == 1
    assert re.fullmatch(rf"m3dnca: error: {re.escape(str(outdir))}: output folder is not writable "
                        r"\((Permission denied|Read-only file system)\)", err[0]), err[0]
    assert sorted(p.name for p in outdir.iterdir()) == before


def failing_writer(monkeypatch, fail_on: int, error: BaseException):
    """Make the n-th image write leave a partial file and raise ``error``."""
    calls = []
    original = nca_core.cli.outputs.write_image

    def write(image, filename):
        calls.append(filename)
        if len(calls) == fail_on:
            Path(filename).write_bytes(b"partial")
            raise error
        original(image, filename)

    monkeypatch.setattr(nca_core.cli.outputs, "write_image", write)
    return calls


def test_full_disk_leaves_no_partial_files(tmp_path, capsys, model, inputs, monkeypatch):
    failing_writer(monkeypatch, 2, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    outdir = tmp_path / "out"
    code, out, err = run_cli(capsys, "segment", inputs / "good.nii.gz", "-o", outdir, *fast(model))
    assert code == 1 and len(err) == 1
    assert err[0] == f"m3dnca: error: {outdir / 'good_variance.nii.gz'}: cannot write output (No space left on device)"
    assert list(outdir.iterdir()) == []


def test_short_write_under_a_file_size_limit_is_caught(tmp_path, hippocampus_dir):
    """ITK's NIfTI writer only prints a short write; the output must still not be published."""
    def limit_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))

    outdir = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "nca_core", "segment", hippocampus_dir / "imagesTr" / "hippocampus_004.nii.gz",
                           "-o", outdir, "--runs", "2", "--device", "cpu"], capture_output=True, text=True,
                          preexec_fn=limit_file_size, timeout=300)
    errors = [line for line in done.stderr.splitlines() if line.startswith("m3dnca")]
    assert done.returncode == 1 and len(errors) == 1, done.stderr
    assert re.fullmatch(rf"m3dnca: error: {re.escape(str(outdir))}/hippocampus_004_\w+\.nii\.gz: cannot write output "
                        r"\(written incompletely \(disk full or file size limit\?\)\)", errors[0]), errors[0]
    assert list(outdir.iterdir()) == []


def test_failed_overwrite_keeps_the_previous_outputs(tmp_path, capsys, model, inputs, monkeypatch):
    outdir = tmp_path / "out"
    assert run_cli(capsys, "segment", inputs, "-o", outdir, *fast(model))[0] == 0
    before = hashes(outdir)
    failing_writer(monkeypatch, 1, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    code, out, err = run_cli(capsys, "segment", inputs / "good.nii.gz", "-o", outdir, "--overwrite", *fast(model))
    assert code == 1 and "No space left on device" in err[0]
    assert hashes(outdir) == before


def inodes(folder: Path):
    """Every file's inode: a file renamed over another, even with equal content, shows."""
    return {p.name: p.stat().st_ino for p in sorted(folder.iterdir())}


def failing_rename(monkeypatch, target_name: str, error: BaseException):
    """Make the rename of a finished temporary onto ``target_name`` fail once with ``error``."""
    original = os.replace
    failed = []

    def replace(source, target, *args, **kwargs):
        if not failed and Path(target).name == target_name:
            failed.append(source)
            raise error
        return original(source, target, *args, **kwargs)

    monkeypatch.setattr(nca_core.atomic.os, "replace", replace)
    return failed


@pytest.mark.parametrize("error, links", [(OSError(errno.EIO, os.strerror(errno.EIO)), True),
                                          (KeyboardInterrupt(), True),
                                          (OSError(errno.EIO, os.strerror(errno.EIO)), False)],
                         ids=["io-error", "interrupt", "io-error-without-hard-links"])
def test_failure_while_renaming_keeps_the_previous_outputs(tmp_path, capsys, model, inputs, monkeypatch, error, links):
    """The segmentation was renamed into place, the variance map's rename fails: every old
    file is as it was (not a new segmentation beside an old report) and nothing else is left."""
    outdir = tmp_path / "out"
    assert run_cli(capsys, "segment", inputs, "-o", outdir, *fast(model))[0] == 0
    before = hashes(outdir), inodes(outdir)
    if not links:  # a file system without hard links: the previous files are kept as copies
        def no_link(source, target, *args, **kwargs):
            raise OSError(errno.EPERM, os.strerror(errno.EPERM))

        monkeypatch.setattr(nca_core.atomic.os, "link", no_link)
        before = before[0], inodes(outdir).keys()
    failed = failing_rename(monkeypatch, "good_variance.nii.gz", error)
    code, out, err = run_cli(capsys, "segment", inputs / "good.nii.gz", "-o", outdir, "--overwrite", *fast(model))
    assert failed, "the rename phase was not reached"
    if isinstance(error, KeyboardInterrupt):
        assert code == 130 and err == ["m3dnca: interrupted"]
    else:
        assert code == 1 and err == [f"m3dnca: error: {outdir / 'good_variance.nii.gz'}: cannot write output "
                                     "(Input/output error)"]
    after = inodes(outdir)
    assert (hashes(outdir), after if links else after.keys()) == before  # the same files; nothing else left


@pytest.mark.parametrize("earlier_run", [True, False], ids=["overwrite", "first-write"])
def test_interrupt_just_after_a_rename_is_rolled_back_too(tmp_path, capsys, model, inputs, monkeypatch, earlier_run):
    """Ctrl+C lands right after the segmentation's rename succeeded, before the next file's:
    that replacement is undone as well, so the folder is exactly as before (the old files, same
    inodes; or nothing on a first write)."""
    outdir = tmp_path / "out"
    outdir.mkdir()
    if earlier_run:
        assert run_cli(capsys, "segment", inputs, "-o", outdir, *fast(model))[0] == 0
    before = hashes(outdir), inodes(outdir)
    original = os.replace
    interrupted = []

    def replace(source, target, *args, **kwargs):
        original(source, target, *args, **kwargs)
        if not interrupted and Path(target).name == "good_seg.nii.gz":
            interrupted.append(target)
            raise KeyboardInterrupt

    monkeypatch.setattr(nca_core.atomic.os, "replace", replace)
    code, out, err = run_cli(capsys, "segment", inputs / "good.nii.gz", "-o", outdir, "--overwrite", *fast(model))
    assert interrupted, "the rename phase was not reached"
    assert code == 130 and err == ["m3dnca: interrupted"]
    assert (hashes(outdir), inodes(outdir)) == before


def test_failure_while_renaming_a_first_write_leaves_nothing(tmp_path, capsys, model, inputs, monkeypatch):
    outdir = tmp_path / "out"
    failing_rename(monkeypatch, "good_report.json", OSError(errno.EIO, os.strerror(errno.EIO)))
    code, out, err = run_cli(capsys, "segment", inputs / "good.nii.gz", "-o", outdir, *fast(model))
    assert code == 1 and len(err) == 1 and "good_report.json: cannot write output" in err[0]
    assert list(outdir.iterdir()) == []


def test_replacing_a_set_takes_the_old_marker_away_first(tmp_path, monkeypatch):
    """While a set replaces its old files the old marker (the report) is absent, so a crash part
    way leaves a case that a rerun redoes, not a mixed set that looks finished."""
    first, marker = tmp_path / "a_seg", tmp_path / "a_report"
    first.write_text("old seg")
    marker.write_text("old report")
    seen = []
    original = os.replace

    def replace(source, target, *args, **kwargs):
        seen.append((Path(target).name, marker.exists()))
        return original(source, target, *args, **kwargs)

    monkeypatch.setattr(nca_core.atomic.os, "replace", replace)
    with nca_core.atomic.atomic_group() as stage:
        Path(stage(first)).write_text("new seg")
        Path(stage(marker)).write_text("new report")
    assert seen == [("a_seg", False), ("a_report", False)]
    assert (first.read_text(), marker.read_text()) == ("new seg", "new report")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_report", "a_seg"]


def test_interrupt_while_writing_leaves_nothing(tmp_path, capsys, model, inputs, monkeypatch):
    failing_writer(monkeypatch, 2, KeyboardInterrupt())
    code, out, err = run_cli(capsys, "segment", inputs / "good.nii.gz", "-o", tmp_path / "out", *fast(model))
    assert code == 130
    assert list((tmp_path / "out").iterdir()) == []


def test_termination_while_writing_leaves_nothing(tmp_path, capsys, model, inputs, monkeypatch):
    import signal

    original = nca_core.cli.outputs.write_image

    def terminated(image, filename):
        Path(filename).write_bytes(b"partial")
        os.kill(os.getpid(), signal.SIGTERM)  # as `kill` or a batch scheduler would
        original(image, filename)

    monkeypatch.setattr(nca_core.cli.outputs, "write_image", terminated)
    ignored = []  # without the command's own handler the run would go on, and this test fail

    def record(signum, frame):
        ignored.append(signum)

    previous = signal.signal(signal.SIGTERM, record)
    try:
        code, out, err = run_cli(capsys, "segment", inputs / "good.nii.gz", "-o", tmp_path / "out", *fast(model))
        assert signal.getsignal(signal.SIGTERM) is record  # the caller's handler is back
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert code == 130 and err == ["m3dnca: interrupted"] and not ignored
    assert list((tmp_path / "out").iterdir()) == []


def test_output_equal_to_an_input_is_refused(tmp_path, capsys, model, inputs):
    shutil.copy(inputs / "good.nii.gz", inputs / "good_seg.nii.gz")
    before = hashes(inputs)
    code, out, err = run_cli(capsys, "segment", inputs / "good.nii.gz", inputs / "good_seg.nii.gz",
                             "-o", inputs, *fast(model))
    assert code == 1
    assert err == [f"m3dnca: error: {inputs / 'good_seg.nii.gz'}: output would overwrite an input; "
                   "choose another output folder"]
    code, out, err = run_cli(capsys, "segment", inputs, "-o", inputs, *fast(model))
    assert code == 1 and "output folder is an input folder" in err[0]
    assert hashes(inputs) == before


def test_inputs_whose_outputs_would_collide_are_refused(tmp_path, capsys, model, inputs):
    write_volume(inputs / "good.nrrd", smooth_volume())
    (tmp_path / "other").mkdir()
    shutil.copy(inputs / "good.nii.gz", tmp_path / "other" / "good.nii.gz")
    for given in ([inputs], [inputs / "good.nii.gz", tmp_path / "other" / "good.nii.gz"]):
        code, out, err = run_cli(capsys, "segment", *given, "-o", tmp_path / "out", "--overwrite", *fast(model))
        assert code == 1 and len(err) == 1 and "both would write the outputs of case 'good'" in err[0]
        assert not (tmp_path / "out").exists()
    code, out, err = run_cli(capsys, "segment", tmp_path / "other", tmp_path / "other" / "good.nii.gz",
                             "-o", tmp_path / "out", *fast(model))
    assert code == 0 and not err and out.count("good:") == 1  # the same file given twice is segmented once


def test_rerun_skips_and_overwrite_redoes(tmp_path, capsys, model, inputs):
    outdir = tmp_path / "out"
    assert run_cli(capsys, "segment", inputs, "-o", outdir, *fast(model))[0] == 0
    seg = outdir / "good_seg.nii.gz"
    first = seg.stat().st_ino, hashes(outdir)
    code, out, err = run_cli(capsys, "segment", inputs, "-o", outdir, *fast(model))
    assert code == 0 and "good: skipped: outputs exist" in out and "--overwrite" in out
    assert seg.stat().st_ino == first[0]
    code, out, err = run_cli(capsys, "segment", inputs, "-o", outdir, "--overwrite", *fast(model))
    assert code == 0 and "good: NQM" in out
    assert seg.stat().st_ino != first[0]
    assert oct(seg.stat().st_mode & 0o777) != oct(0o600)  # temporaries do not keep mkstemp's mode


def _no_report(outdir: Path, case: str) -> None:  # a crash before the report was renamed into place
    (outdir / f"{case}_report.json").unlink()


def _cut_report(outdir: Path, case: str) -> None:
    report = outdir / f"{case}_report.json"
    report.write_bytes(report.read_bytes()[:40])


def _listed_output_gone(outdir: Path, case: str) -> None:
    (outdir / f"{case}_variance.nii.gz").unlink()


@pytest.mark.parametrize("damage", [_no_report, _cut_report, _listed_output_gone],
                         ids=["no-report", "cut-report", "listed-output-missing"])
def test_resume_redoes_unfinished_cases_and_skips_finished_ones(tmp_path, capsys, model, inputs, damage):
    """A case counts as done when its report (written last) parses and lists outputs that all exist;
    a rerun without --overwrite redoes every other case instead of skipping it for ever."""
    write_volume(inputs / "second.nii.gz", smooth_volume(seed=2))
    outdir = tmp_path / "out"
    assert run_cli(capsys, "segment", inputs, "-o", outdir, *fast(model))[0] == 0
    done = {p.name: p.stat().st_ino for p in outdir.glob("good_*")}
    damage(outdir, "second")
    code, out, err = run_cli(capsys, "segment", inputs, "-o", outdir, *fast(model))
    assert code == 0 and not err
    assert "good: skipped: outputs exist" in out and "second: NQM" in out
    assert {p.name: p.stat().st_ino for p in outdir.glob("good_*")} == done
    assert sorted(p.name for p in outdir.glob("second_*")) == [
        "second_report.json", "second_seg.nii.gz", "second_variance.nii.gz"]
    report = json.loads((outdir / "second_report.json").read_text())
    assert all(Path(listed).exists() for listed in report["outputs"].values())
    with open(outdir / "summary.csv", newline="") as handle:
        assert {row["case"]: row["status"] for row in csv.DictReader(handle)} == {"good": "skipped", "second": "ok"}
    code, out, err = run_cli(capsys, "segment", inputs, "-o", outdir, *fast(model))
    assert code == 0 and out.count("skipped: outputs exist") == 2  # now both are done


def test_unexpected_error_in_one_case_does_not_stop_the_batch(tmp_path, capsys, model, inputs, monkeypatch):
    write_volume(inputs / "second.nrrd", smooth_volume(seed=2))
    original = nca_core.cli.batch.segment_image

    def flaky(image, *args, **kwargs):
        array = sitk.GetArrayFromImage(image).transpose(2, 1, 0)
        if array.shape == (16, 14, 12) and float(array[0, 0, 0]) == float(smooth_volume()[0, 0, 0]):
            raise ValueError("boom")
        return original(image, *args, **kwargs)

    monkeypatch.setattr(nca_core.cli.batch, "segment_image", flaky)
    code, out, err = run_cli(capsys, "segment", inputs, "-o", tmp_path / "out", *fast(model))
    assert code == 1
    assert err[0] == f"m3dnca: error: {inputs / 'good.nii.gz'}: unexpected ValueError: boom (please report this)"
    assert (tmp_path / "out" / "second_seg.nii.gz").exists()


def test_dicom_series_with_a_broken_slice_is_refused(tmp_path, capsys, model, formats_dir):
    series = tmp_path / "series"
    shutil.copytree(formats_dir / "ct_dicom_series", series)
    victim = sorted(series.iterdir())[5]
    victim.write_bytes(victim.read_bytes()[:1000])
    code, out, err = run_cli(capsys, "segment", series, "-o", tmp_path / "out", *fast(model))
    assert code == 1 and len(err) == 1
    assert err[0] == (f"m3dnca: error: {series}: DICOM series has missing or unreadable slices "
                      "(uneven slice spacing); check that every slice file is complete")


def test_io_only_int64_and_huge_range_inputs_are_segmented(tmp_path, capsys, model):
    """I/O only: the model is untrained (probability 0.5 everywhere, NQM 0), so this says nothing about segmentation quality."""
    folder = tmp_path / "in"
    folder.mkdir()
    write_volume(folder / "int64.nrrd", (smooth_volume() * 1000).astype(np.int64))
    write_volume(folder / "huge.nrrd", smooth_volume().astype(np.float64) * 1e300)
    code, out, err = run_cli(capsys, "segment", folder, "-o", tmp_path / "out", *fast(model))
    assert code == 0, err
    for case in ("int64", "huge"):
        variance = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out" / f"{case}_variance.nii.gz")))
        assert np.isfinite(variance).all()
