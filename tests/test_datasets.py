"""--dataset: MNIST through the verified loader, Keras's fashion_mnist/cifar10 (offline: the
Keras cache or a clear error), and folder:PATH trees of real MNIST digits written as PNGs."""

import json

import numpy as np
import PIL.Image
import pytest
from conftest import BACKEND

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


def keras_cache(name):
    from mnist_keras3 import data

    missing = data.keras_cache_missing(name)
    if missing:
        pytest.skip(f"{name} is not in the Keras cache (missing {missing[0]}); it needs one online "
                    f"keras.datasets.{name}.load_data() first")


@pytest.mark.e2e
@pytest.mark.parametrize("name,floor", [("fashion_mnist", 0.5), ("cifar10", 0.2)])
def test_train_cli_on_real_keras_datasets(cli, tmp_path, name, floor):
    keras_cache(name)
    out = cli("train", "--dataset", name, "--model", "tutorial-bn", "--epochs", 1,
              "--max-steps-per-epoch", 200, "--batch-size", 64, "--output-dir", tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    metrics = json.loads((only_run(tmp_path) / "metrics.json").read_text())
    assert metrics["dataset"]["name"] == name and len(metrics["dataset"]["class_names"]) == 10
    assert metrics["test"]["accuracy"] > floor, metrics["test"]  # chance is 0.1


@pytest.mark.e2e
def test_keras_dataset_offline_and_absent_is_one_clear_line(cli, tmp_path):
    # An empty KERAS_HOME: no cached copy, and the tests run with MNIST_KERAS3_OFFLINE=1.
    out = cli("train", "--dataset", "cifar10", "--dry-run", "--output-dir", tmp_path / "runs",
              env={"KERAS_HOME": str(tmp_path / "keras_home")})
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert lines[-1].startswith("error: cifar10 is not in the Keras cache") and "MNIST_KERAS3_OFFLINE=1" in lines[-1]
    assert "Traceback" not in out.stderr and not (tmp_path / "runs").exists()


@pytest.mark.e2e
def test_fashion_mnist_reads_the_keras_cache_layout(cli, mnist_dir, tmp_path):
    # Plumbing only: real MNIST files placed where Keras keeps fashion-mnist (same IDX format),
    # so Keras's own loader reads them offline. The class names come from the fashion dataset.
    cache = tmp_path / "keras_home" / "datasets" / "fashion-mnist"
    cache.mkdir(parents=True)
    for f in ("train-labels-idx1-ubyte.gz", "train-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz",
              "t10k-images-idx3-ubyte.gz"):
        (cache / f).write_bytes((mnist_dir / f).read_bytes())
    out = cli("train", "--dataset", "fashion_mnist", "--dry-run", "--output-dir", tmp_path / "runs",
              env={"KERAS_HOME": str(tmp_path / "keras_home")})
    assert out.returncode == 0, out.stderr[-3000:]
    metrics = json.loads((only_run(tmp_path / "runs") / "metrics.json").read_text())
    assert metrics["dataset"]["class_names"][9] == "Ankle boot"
    assert metrics["dataset"]["train_examples"] == 60000 and metrics["backend"] == BACKEND
