"""Property-based tests: the model-file loader and the image reader never fail with
anything but their own clear errors, whatever bytes or shapes they are given."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nca_core.network.config import preset
from nca_core.errors import InputImageError, ModelFileError
from nca_core.space.imaging import Volume, read_volume
from nca_core.modelfile.bundle import ModelBundle, load_model, save_model

from nca_helpers import random_model

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def valid_model(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("model") / "m.m3dnca"
    save_model(ModelBundle.from_model(random_model(preset("hippocampus"))), path)
    return path.read_bytes()


def load_bytes(folder: Path, data: bytes):
    path = folder / "candidate.m3dnca"
    path.write_bytes(data)
    return load_model(path)


@SETTINGS
@given(data=st.binary(max_size=4096))
def test_random_bytes_are_never_a_model(tmp_path, data):
    with pytest.raises(ModelFileError):
        load_bytes(tmp_path, data)


@st.composite
def mutations(draw, size: int):
    """A list of (kind, position, byte) edits: flip, insert, delete, or truncate."""
    edits = draw(st.lists(st.tuples(st.sampled_from(["flip", "insert", "delete", "truncate"]),
                                    st.integers(0, size - 1), st.integers(1, 255)), min_size=1, max_size=4))
    return edits


def mutate(data: bytes, edits) -> bytes:
    out = bytearray(data)
    for kind, position, value in edits:
        position = min(position, max(0, len(out) - 1))
        if kind == "flip" and out:
            out[position] ^= value
        elif kind == "insert":
            out.insert(position, value)
        elif kind == "delete" and out:
            del out[position]
        elif kind == "truncate":
            del out[position:]
    return bytes(out)


@SETTINGS
@given(edits=mutations(60_000))
def test_mutated_model_file_loads_identically_or_raises_model_file_error(tmp_path, valid_model, edits):
    mutated = mutate(valid_model, edits)
    try:
        bundle = load_bytes(tmp_path, mutated)
    except ModelFileError:
        return
    # only a change that keeps the content (e.g. whitespace in the JSON header) may load
    original = load_bytes(tmp_path, valid_model)
    assert bundle.config == original.config and bundle.provenance == original.provenance
    assert all(torch.equal(bundle.weights[k], original.weights[k]) for k in original.weights)


def check_read(path: Path) -> None:
    """The reader's contract: a float32 3D Volume, or InputImageError naming the file."""
    try:
        volume = read_volume(path)
    except InputImageError as error:
        assert str(error).startswith(f"{path}: ") and "\n" not in str(error)
        return
    assert isinstance(volume, Volume)
    assert volume.array.ndim == 3 and volume.array.dtype == np.float32
    assert np.isfinite(volume.array).all()


@SETTINGS
@given(data=st.binary(min_size=1, max_size=2048), suffix=st.sampled_from([".nii.gz", ".nii", ".nrrd", ".mha"]),
       compress=st.booleans())
def test_random_bytes_as_an_image_file(tmp_path, data, suffix, compress):
    path = tmp_path / f"random{suffix}"
    path.write_bytes(gzip.compress(data) if compress else data)
    check_read(path)


@SETTINGS
@given(data=st.binary(min_size=0, max_size=512), dims=st.lists(st.integers(1, 9), min_size=3, max_size=3))
def test_nrrd_header_with_random_data(tmp_path, data, dims):
    header = ("NRRD0004\ntype: float\ndimension: 3\nsizes: " + " ".join(map(str, dims))
              + "\nendian: little\nencoding: raw\n\n").encode()
    path = tmp_path / "header.nrrd"
    path.write_bytes(header + data)
    check_read(path)


DTYPES = [np.uint8, np.int8, np.uint16, np.int16, np.uint32, np.int32, np.int64, np.uint64, np.float32, np.float64]


@st.composite
def images(draw):
    shape = tuple(draw(st.lists(st.integers(1, 6), min_size=2, max_size=4)))
    dtype = draw(st.sampled_from(DTYPES))
    vector = draw(st.booleans()) and len(shape) >= 3
    values = draw(st.sampled_from(["random", "zeros", "extreme", "nan"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    if values == "extreme":
        info = np.finfo(dtype) if np.issubdtype(dtype, np.floating) else np.iinfo(dtype)
        array = rng.choice(np.array([info.min, info.max, 0], dtype=dtype), size=shape)
    elif values == "zeros":
        array = np.zeros(shape, dtype)
    else:
        array = (rng.random(shape) * 100).astype(dtype)
        if values == "nan" and np.issubdtype(dtype, np.floating):
            array.flat[0] = np.nan
    return array, vector, draw(st.sampled_from([".nii.gz", ".nrrd", ".mha"]))


@SETTINGS
@given(image=images())
def test_random_shapes_and_dtypes_written_by_simpleitk(tmp_path, image):
    array, vector, suffix = image
    try:
        written = sitk.GetImageFromArray(array, isVector=vector)
        path = tmp_path / f"image{suffix}"
        sitk.WriteImage(written, str(path))
    except RuntimeError:
        return  # a combination the format cannot store is not the reader's business
    check_read(path)
