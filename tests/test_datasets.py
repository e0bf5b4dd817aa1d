"""--dataset: MNIST through the verified loader, Keras's fashion_mnist/cifar10 (offline: the
Keras cache or a clear error), and folder:PATH trees of real MNIST digits written as PNGs."""

import json

import numpy as np
import PIL.Image
import pytest

NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]


def write_tree(root, images, labels, names=NAMES, size=None, rgb=False):
    """Save uint8 (N, 28, 28) images as root/<class name>/<i>.png; returns root."""
    for name in names:
        (root / name).mkdir(parents=True, exist_ok=True)
    for i, (img, label) in enumerate(zip(images, labels, strict=False)):
        pic = PIL.Image.fromarray(img)
        if rgb:
            pic = pic.convert("RGB")
        if size:
            pic = pic.resize(size)
        pic.save(root / names[label] / f"{i:05d}.png")
    return root


def only_run(out_dir):
    runs = [p for p in out_dir.iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


def test_mnist_dataset_is_the_verified_loader(keras, mnist_dir):
    from mnist_keras3 import data

    ds = data.load("mnist", mnist_dir)
    (_, _), (x_test, y_test) = data.mnist.read_folder(mnist_dir)
    x_ref, y_ref = data.preprocess(x_test, y_test)
    np.testing.assert_array_equal(ds.x_test, x_ref)
    np.testing.assert_array_equal(ds.y_test, y_ref)
    assert ds.input_shape == (28, 28, 1) and ds.class_names == [str(d) for d in range(10)]


def test_folder_reads_classes_shape_and_a_seeded_split(keras, mnist, tmp_path):
    from mnist_keras3 import data

    (_, _), (x, y) = mnist
    write_tree(tmp_path, x[:200], y[:200])
    a = data.load(f"folder:{tmp_path}", seed=1)
    b = data.load(f"folder:{tmp_path}", seed=1)
    assert a.class_names == sorted(NAMES)  # sorted folder names, as image_dataset_from_directory
    assert a.input_shape == (28, 28, 1) and len(a.x_train) == 160 and len(a.x_test) == 40
    np.testing.assert_array_equal(a.x_test, b.x_test)  # same seed, same split
    # Every image round-trips exactly (PNG is lossless) with the label of its folder.
    lookup = {x[i].tobytes(): NAMES[y[i]] for i in range(200)}
    for img, onehot in zip(a.x_train, a.y_train, strict=False):
        raw = np.round(img[..., 0] * 255).astype(np.uint8).tobytes()
        assert lookup[raw] == a.class_names[int(onehot.argmax())]


def test_folder_with_train_and_test_rgb_resized(keras, mnist, tmp_path):
    from mnist_keras3 import data, models

    (x, y), (xt, yt) = mnist
    names = ["a", "b", "c"]
    keep, keep_t = y[:300] < 3, yt[:100] < 3
    write_tree(tmp_path / "train", x[:300][keep], y[:300][keep], names, size=(32, 32), rgb=True)
    write_tree(tmp_path / "test", xt[:100][keep_t], yt[:100][keep_t], names, size=(40, 36), rgb=True)
    ds = data.load(f"folder:{tmp_path}")
    assert ds.input_shape == (32, 32, 3) and ds.x_test.shape[1:] == (32, 32, 3)  # test resized
    assert ds.class_names == names and ds.y_train.shape == (keep.sum(), 3)
    assert ds.describe()["test_examples"] == keep_t.sum()
    probs = models.build_model("strong", ds.input_shape, ds.num_classes).predict(ds.x_test[:4], verbose=0)
    assert probs.shape == (4, 3)


@pytest.mark.parametrize("layout,match", [
    ("missing", "does not exist"),
    ("one-class", "1 class sub-folder"),
    ("mismatch", "has classes"),
])
def test_folder_errors(keras, mnist, tmp_path, layout, match):
    from mnist_keras3 import data
    from mnist_keras3.errors import DataError

    (_, _), (x, y) = mnist
    if layout == "one-class":
        write_tree(tmp_path, x[:5], np.zeros(5, int), ["only"])
    if layout == "mismatch":
        write_tree(tmp_path / "train", x[:10], y[:10] % 2, ["a", "b"])
        write_tree(tmp_path / "test", x[:10], y[:10] % 2, ["a", "c"])
    with pytest.raises(DataError, match=match):
        data.load(f"folder:{tmp_path / 'nope' if layout == 'missing' else tmp_path}")


@pytest.mark.e2e
def test_train_cli_on_a_folder_of_mnist_pngs(cli, mnist, tmp_path):
    (x, y), (_, _) = mnist
    write_tree(tmp_path / "digits", x[:3000], y[:3000])
    out = cli("train", "--dataset", f"folder:{tmp_path / 'digits'}", "--model", "tutorial-bn",
              "--epochs", 3, "--batch-size", 32, "--output-dir", tmp_path / "runs")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "data folder:" in out.stdout
    assert "2,400 train, 600 test images of shape (28, 28, 1), 10 classes" in out.stdout
    metrics = json.loads((only_run(tmp_path / "runs") / "metrics.json").read_text())
    assert metrics["dataset"]["class_names"] == sorted(NAMES)
    assert metrics["dataset"]["input_shape"] == [28, 28, 1]
    # 3 epochs on 2,400 digits with a 2k-parameter CNN: far above chance (10%), short of MNIST's 97%.
    assert metrics["test"]["accuracy"] > 0.6, metrics["test"]


def learnable_images(n, shape, seed):
    """uint8 images of 10 classes that a small CNN tells apart: class c is a bright square at the
    c-th place of a 4 x 3 grid, on noise. -> (images (n, *shape), labels (n,))."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    images = rng.integers(0, 60, size=(n, *shape), dtype=np.uint8)
    side = shape[0] // 4
    for i, c in enumerate(labels):
        row, col = divmod(int(c), 4)
        images[i, row * side + 1:(row + 1) * side - 1, col * side + 1:(col + 1) * side - 1] = 250
    return images, labels.astype(np.uint8)


def write_fashion_mnist_cache(keras_home, n_train=800, n_test=200):
    """A small fashion_mnist in Keras's cache layout (<keras home>/datasets/fashion-mnist/*.gz,
    gzipped IDX files), made here: keras.datasets.fashion_mnist.load_data() reads it offline."""
    import gzip

    from mnist_keras3.data import mnist as mnist_data

    folder = keras_home / "datasets" / "fashion-mnist"
    folder.mkdir(parents=True)
    for split, n, seed in (("train", n_train, 1), ("t10k", n_test, 2)):
        x, y = learnable_images(n, (28, 28), seed)
        for kind, array in (("images-idx3", x), ("labels-idx1", y)):
            (folder / f"{split}-{kind}-ubyte.gz").write_bytes(gzip.compress(mnist_data.idx_bytes(array)))


@pytest.mark.e2e
def test_train_cli_on_fashion_mnist_from_the_keras_cache_layout(cli, tmp_path):
    """train --dataset fashion_mnist, offline, through Keras's own loader, on a small copy in
    Keras's cache layout: the run records fashion_mnist's classes and learns the images."""
    write_fashion_mnist_cache(tmp_path / "keras_home")
    # The tutorial model: no BatchNorm, whose moving statistics are still far from settled after
    # these few steps (tutorial-bn's test accuracy then depends on the backend's first batches).
    out = cli("train", "--dataset", "fashion_mnist", "--model", "tutorial", "--epochs", 4, "--batch-size", 32,
              "--output-dir", tmp_path / "runs", env={"KERAS_HOME": str(tmp_path / "keras_home")})
    assert out.returncode == 0, out.stderr[-3000:]
    assert "800 train, 200 test images of shape (28, 28, 1), 10 classes" in out.stdout
    metrics = json.loads((only_run(tmp_path / "runs") / "metrics.json").read_text())
    assert metrics["dataset"]["name"] == "fashion_mnist" and metrics["dataset"]["class_names"][9] == "Ankle boot"
    assert metrics["test"]["accuracy"] > 0.5, metrics["test"]  # chance is 0.1


@pytest.mark.once(reason="Keras's cifar10 reader is numpy, the same under every backend")
def test_cifar10_reads_the_keras_cache_layout(keras, tmp_path, monkeypatch):
    """--dataset cifar10 from a copy in Keras's cache layout, made here (<keras home>/datasets/
    cifar-10-batches-py-target/cifar-10-batches-py/: five pickled training batches of 10,000 rows
    of 3 x 32 x 32 bytes, and test_batch), read by Keras's own load_data offline. Only its download
    step is replaced: get_file checks the archive's SHA-256, which no file made here can match."""
    import pickle

    from keras.src.datasets import cifar10

    from mnist_keras3 import data

    home = tmp_path / "keras_home"
    root = home / "datasets" / "cifar-10-batches-py-target"
    (root / "cifar-10-batches-py").mkdir(parents=True)
    (home / "datasets" / "cifar-10-batches-py-target_archive").write_bytes(b"")  # the cache check's marker
    # Pixel (channel c) of image i: a byte made of its label and channel, so the layout is checkable.
    for name, n in [*((f"data_batch_{i}", 10000) for i in range(1, 6)), ("test_batch", 10000)]:
        labels = np.arange(n) % 10
        pixels = (labels[:, None, None] * 20 + np.arange(3)[None, :, None]).astype(np.uint8)  # (n, 3, 1)
        rows = np.broadcast_to(pixels, (n, 3, 1024)).reshape(n, 3072)
        with open(root / "cifar-10-batches-py" / name, "wb") as fh:
            pickle.dump({b"data": np.ascontiguousarray(rows), b"labels": labels.tolist()}, fh, protocol=4)
    monkeypatch.setenv("KERAS_HOME", str(home))
    monkeypatch.setattr(cifar10, "get_file", lambda fname, **kwargs: str(home / "datasets" / fname))

    (x_train, y_train), (x_test, y_test) = data.load_keras_dataset("cifar10")
    assert x_train.shape == (50000, 32, 32, 3) and x_test.shape == (10000, 32, 32, 3)  # channels last
    for x, y in ((x_train, y_train), (x_test, y_test)):
        y = np.ravel(y)
        assert y[:12].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
        np.testing.assert_array_equal(x[:, 5, 7, :], y[:, None] * 20 + np.arange(3)[None, :])
    assert data.CLASS_NAMES["cifar10"][y_test[3, 0]] == "cat"


@pytest.mark.e2e
def test_keras_dataset_offline_and_absent_is_one_clear_line(cli, tmp_path):
    # An empty KERAS_HOME: no cached copy, and the tests run with MNIST_KERAS3_OFFLINE=1.
    out = cli("train", "--dataset", "cifar10", "--dry-run", "--output-dir", tmp_path / "runs",
              env={"KERAS_HOME": str(tmp_path / "keras_home")})
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert lines[-1].startswith("error: cifar10 is not in the Keras cache") and "MNIST_KERAS3_OFFLINE=1" in lines[-1]
    assert "Traceback" not in out.stderr and not (tmp_path / "runs").exists()
