"""Random bytes and random small arrays into the MNIST readers: only clean DataErrors come out."""

import gzip
import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mnist_keras3.data import mnist as mnist_data
from mnist_keras3.errors import DataError

pytestmark = pytest.mark.once  # never imports keras (tests/conftest.py holds it to that)

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(st.binary(max_size=2048))
def test_parse_idx_on_random_bytes(blob):
    try:
        a = mnist_data.parse_idx(blob)
    except DataError:
        return
    # Whatever parses must be what its header declared.
    assert a.dtype == np.uint8 and a.size == len(blob) - 4 - 4 * blob[3]


@FUZZ
@given(header=st.lists(st.integers(0, 300), min_size=1, max_size=3), extra=st.integers(-3, 3))
def test_parse_idx_on_headers_that_lie(header, extra):
    declared = int(np.prod(header))
    body = bytes(max(0, declared + extra))
    blob = bytes([0, 0, 8, len(header)]) + b"".join(d.to_bytes(4, "big") for d in header) + body
    try:
        a = mnist_data.parse_idx(blob)
    except DataError:
        assert len(body) != declared
        return
    assert len(body) == declared and a.shape == tuple(header)


@FUZZ
@given(st.binary(max_size=4096), st.booleans())
def test_read_folder_on_random_files(tmp_path_factory, blob, gz):
    folder = tmp_path_factory.mktemp("fuzz")
    for name in mnist_data.FILES:
        content = gzip.compress(blob) if gz else blob
        (folder / (f"{name}.gz" if gz else name)).write_bytes(content)
    try:
        mnist_data.read_folder(folder)
    except DataError:
        return
    raise AssertionError("random bytes were accepted as MNIST")


@FUZZ
@given(st.binary(max_size=4096))
def test_read_npz_on_random_bytes(tmp_path_factory, blob):
    path = tmp_path_factory.mktemp("fuzz") / "mnist.npz"
    path.write_bytes(blob)
    try:
        mnist_data.read_npz(path)
    except DataError:
        return
    raise AssertionError("random bytes were accepted as an npz of MNIST")


@FUZZ
@given(st.dictionaries(st.sampled_from(["x_train", "y_train", "x_test", "y_test", "other"]),
                       st.lists(st.integers(0, 255), max_size=20), min_size=0, max_size=5),
       st.sampled_from([np.uint8, np.int64, np.float32]))
def test_read_npz_on_random_small_arrays(tmp_path_factory, arrays, dtype):
    path = tmp_path_factory.mktemp("fuzz") / "mnist.npz"
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v, dtype=dtype) for k, v in arrays.items()})
    path.write_bytes(buf.getvalue())
    try:
        mnist_data.read_npz(path)
    except DataError:
        return
    raise AssertionError("small random arrays were accepted as MNIST")
