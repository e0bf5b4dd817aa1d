"""The tools after train work on every dataset train accepts. Real MNIST digits, tinted and
padded into a small RGB 32x32 class-per-folder tree (built here, offline), and a 28x28 grayscale
tree of ten named classes, go through the real CLIs: train -> evaluate, the record beside each
model, pictures with the class names, and one-line errors for a model and data that do not fit."""

import json

import numpy as np
import PIL.Image
import pytest
from conftest import run_module
from test_datasets import NAMES, write_tree

from mnist_keras3 import runs

pytestmark = pytest.mark.e2e

COLOURS = ["circle", "square", "wave"]  # three class names that are not digits


def write_rgb_tree(root, images, labels, names, seed=0):
    """uint8 (N, 28, 28) digits -> root/<name>/<i>.png, RGB 32x32: each digit padded by 2 pixels and
    tinted a random colour (so colour says nothing of the class) on a grey-blue background."""
    rng = np.random.default_rng(seed)
    for name in names:
        (root / name).mkdir(parents=True, exist_ok=True)
    for i, (img, label) in enumerate(zip(images, labels, strict=False)):
        ink = np.pad(img, 2).astype(np.float32)[..., None] / 255.0  # (32, 32, 1)
        tint = rng.uniform(0.3, 1.0, size=3)
        background = np.array([40.0, 50.0, 70.0])
        rgb = (1 - ink) * background + ink * tint * 255.0
        PIL.Image.fromarray(rgb.round().astype(np.uint8), "RGB").save(root / names[label] / f"{i:05d}.png")
    return root


def train(data, out, *extra):
    done = run_module("train", "--dataset", f"folder:{data}", "--epochs", 1, "--max-steps-per-epoch", 30,
                      "--batch-size", 32, "--output-dir", out, *extra)
    assert done.returncode == 0, done.stderr[-3000:]
    (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
    return run_dir


def one_line_error(done):
    assert done.returncode == 2, (done.returncode, done.stderr[-2000:])
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    lines = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, done.stderr[-2000:]
    return lines[0]


@pytest.fixture(scope="module")
def rgb_data(mnist, tmp_path_factory):
    (x, y), (xt, yt) = mnist
    root = tmp_path_factory.mktemp("rgb")
    keep, keep_t = y[:600] < 3, yt[:150] < 3
    write_rgb_tree(root / "train", x[:600][keep], y[:600][keep], COLOURS)
    write_rgb_tree(root / "test", xt[:150][keep_t], yt[:150][keep_t], COLOURS, seed=1)
    return root, int(keep_t.sum())


@pytest.fixture(scope="module")
def rgb_run(rgb_data, tmp_path_factory):
    return train(rgb_data[0], tmp_path_factory.mktemp("rgb-runs"))


@pytest.fixture(scope="module")
def gray_data(mnist, tmp_path_factory):
    """28x28 grayscale digits under ten word names, no train/test split: the seeded 20% is the test."""
    (x, y), _ = mnist
    return write_tree(tmp_path_factory.mktemp("gray"), x[:400], y[:400])


@pytest.fixture(scope="module")
def gray_run(gray_data, tmp_path_factory):
    return train(gray_data, tmp_path_factory.mktemp("gray-runs"), "--seed", 3)


def test_every_model_file_carries_its_record(rgb_run, rgb_data):
    expected = {"dataset": f"folder:{rgb_data[0]}", "class_names": COLOURS, "input_shape": [32, 32, 3],
                "channels": 3, "preprocessing": "resize"}
    for name in ("model.keras", "checkpoint.keras"):
        record = json.loads((rgb_run / f"{name}.json").read_text())
        assert {k: record[k] for k in expected} == expected, record
    metrics = json.loads((rgb_run / "metrics.json").read_text())["dataset"]
    assert metrics["class_names"] == COLOURS and metrics["channels"] == 3 and metrics["preprocessing"] == "resize"


def test_a_lone_model_with_its_record_and_old_models_without_one(rgb_run, tmp_path):
    lone = tmp_path / "lone.keras"
    lone.write_bytes((rgb_run / "model.keras").read_bytes())
    assert runs.read_record(lone)[0]["dataset"] == "mnist"  # no record, no run folder: an MNIST model
    runs.sidecar(lone).write_bytes((rgb_run / "model.keras.json").read_bytes())
    assert runs.read_record(lone)[0]["class_names"] == COLOURS
    # A run from before the sidecar: metrics.json's dataset is the record.
    old = tmp_path / "old"
    old.mkdir()
    (old / "model.keras").write_bytes(b"")
    (old / "metrics.json").write_text(json.dumps({"dataset": {"name": "cifar10", "class_names": list("abc"),
                                                              "input_shape": [32, 32, 3]}}))
    record, source = runs.read_record(old / "model.keras")
    assert record["dataset"] == "cifar10" and record["channels"] == 3 and source.endswith("metrics.json")


def test_training_pictures_show_rgb_images_with_class_names(rgb_run):
    for name in ("curves.png", "samples.png"):
        with PIL.Image.open(rgb_run / name) as im:
            assert im.format == "PNG"


def test_evaluate_scores_the_rgb_model_on_its_own_data(rgb_run, rgb_data, tmp_path):
    done = run_module("evaluate", rgb_run / "model.keras", "--output", tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "evaluation.json").read_text())
    assert report["dataset"] == f"folder:{rgb_data[0]}" and report["class_names"] == COLOURS
    assert report["test_images"] == rgb_data[1]
    assert [c["name"] for c in report["per_class"]] == COLOURS
    assert np.array(report["confusion_matrix"]).shape == (3, 3)
    for name in COLOURS:
        assert name in done.stdout
    metrics = json.loads((rgb_run / "metrics.json").read_text())
    assert report["accuracy"] == pytest.approx(metrics["test"]["accuracy"], abs=1e-4)
    for name in ("confusion_matrix.png", "misclassified.png"):
        with PIL.Image.open(tmp_path / name) as im:
            assert im.format == "PNG"


def test_a_named_28x28_model_is_evaluated_on_its_folder_never_mnist(gray_run, gray_data, tmp_path):
    record = json.loads((gray_run / "model.keras.json").read_text())
    assert record["class_names"] == sorted(NAMES) and record["input_shape"] == [28, 28, 1]
    assert record["preprocessing"] == "resize" and record["seed"] == 3
    done = run_module("evaluate", gray_run / "model.keras", "--output", tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "evaluation.json").read_text())
    assert report["dataset"] == f"folder:{gray_data}" and report["test_images"] == 80  # 20% of 400, not 10,000
    # The seeded split of the run: evaluate sees the test images training held out.
    metrics = json.loads((gray_run / "metrics.json").read_text())
    assert report["accuracy"] == pytest.approx(metrics["test"]["accuracy"], abs=1e-4)
    assert [c["name"] for c in report["per_class"]] == sorted(NAMES)


def test_a_model_and_data_that_do_not_fit_are_one_line(rgb_run, gray_run, rgb_data, mnist_dir, tmp_path):
    line = one_line_error(run_module("evaluate", rgb_run / "model.keras", "--dataset", "mnist",
                                     "--data-dir", mnist_dir, "--output", tmp_path))
    assert "(32, 32, 3)" in line and "(28, 28, 1)" in line and "dataset=mnist" in line, line
    # Same image shape, other classes: the 10-class grayscale model on MNIST fits (10 classes, 28x28x1),
    # the RGB tree does not.
    line = one_line_error(run_module("evaluate", gray_run / "model.keras", "--dataset", f"folder:{rgb_data[0]}",
                                     "--output", tmp_path))
    assert "10 classes" in line and "3 classes" in line, line
    line = one_line_error(run_module("evaluate", gray_run / "model.keras", "--dataset", "imagenet"))
    assert "dataset='imagenet'" in line


@pytest.fixture(scope="module")
def pictures(rgb_data, tmp_path_factory):
    """Three pictures a user has of the RGB model's classes: two RGB test PNGs (one enlarged to 64x48,
    the model must resize it) and one grayscale copy (the model must convert its colour)."""
    root, out = rgb_data[0], tmp_path_factory.mktemp("pictures")
    first = sorted((root / "test" / COLOURS[0]).glob("*.png"))[0]
    second = sorted((root / "test" / COLOURS[1]).glob("*.png"))[0]
    with PIL.Image.open(first) as im:
        im.save(out / "a.png")
        im.convert("L").save(out / "c_gray.png")
    with PIL.Image.open(second) as im:
        im.resize((64, 48)).save(out / "b_big.png")
    return out


def test_predict_names_the_classes_and_resizes_any_picture(rgb_run, pictures):
    done = run_module("predict", rgb_run / "model.keras", pictures, "--json", "--top", 2)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["class_names"] == COLOURS and len(report["results"]) == 3
    for r in report["results"]:
        assert r["label"] in COLOURS and r["label"] == COLOURS[r["class"]] and "digit" not in r
        assert r["preprocessing"] == "resize" and [t["label"] in COLOURS for t in r["top"]] == [True, True]
    text = run_module("predict", rgb_run / "model.keras", pictures / "a.png")
    assert text.returncode == 0 and any(f": {c} (probability" in text.stdout for c in COLOURS), text.stdout


def test_serve_api_gives_class_names_for_uploads_and_drawings(keras, rgb_run, pictures):
    pytest.importorskip("fastapi", reason="the serve extra is not installed")
    from fastapi.testclient import TestClient

    from mnist_keras3 import webapp

    with TestClient(webapp.create_app(rgb_run / "model.keras"), raise_server_exceptions=False) as client:
        info = client.get("/api/model").json()
        assert info["class_names"] == COLOURS and info["input_shape"] == [32, 32, 3]
        assert info["preprocessing"] == "resize"
        for name in ("a.png", "b_big.png", "c_gray.png"):
            got = client.post("/api/predict", files={"image": (name, (pictures / name).read_bytes(), "image/png")})
            assert got.status_code == 200, got.text
            body = got.json()
            assert body["label"] in COLOURS and "digit" not in body and len(body["probabilities"]) == 3
            assert np.array(body["input"]).shape == (32, 32, 3) and body["preprocessing"] == "resize"
        drawn = client.post("/api/predict", json={"pixels": [0] * 392 + [255] * 392})  # a drawing, 28x28
        assert drawn.status_code == 200 and drawn.json()["label"] in COLOURS, drawn.text
        # The page: an upload area beside the canvas (shown for this model) and the classes from /api/model.
        assert 'id="upload-card"' in client.get("/").text
        script = client.get("/static/app.js").text
        assert "info.class_names" in script and 'getElementById("upload-card").hidden = false' in script


def test_export_checks_on_the_models_own_test_images(keras, rgb_run, rgb_data, gray_run, gray_data):
    from mnist_keras3 import export, runs

    x, what = export.check_images(None, runs.read_record(rgb_run / "model.keras")[0])
    assert x.shape == (rgb_data[1], 32, 32, 3) and what == f"{rgb_data[1]} folder:{rgb_data[0]} test images"
    x, what = export.check_images(None, runs.read_record(gray_run / "model.keras")[0])
    assert x.shape == (80, 28, 28, 1) and "folder:" in what  # never MNIST's 10,000


def test_export_the_rgb_model_in_the_cheapest_format_that_works_here(rgb_run, rgb_data, tmp_path):
    """ONNX where its exporter and onnxruntime are installed, else a TF SavedModel under tensorflow;
    exit 0 means it was checked on the model's own test images."""
    import importlib.util

    from conftest import BACKEND

    from mnist_keras3 import backends

    def available(fmt):
        needed = backends.backend_module(BACKEND).export_modules(fmt)
        checker = "onnxruntime" if fmt == "onnx" else "tensorflow"
        return needed is not None and all(importlib.util.find_spec(m) for m in needed + [checker])

    fmt = next((f for f in ("onnx", "savedmodel") if available(f)), None)
    if fmt is None:
        pytest.skip(f"neither ONNX nor SavedModel export is installed under {BACKEND}")
    done = run_module("export", rgb_run / "model.keras", "--format", fmt, "--output", tmp_path / f"m.{fmt}")
    if done.returncode != 0 and BACKEND == "jax" and fmt == "onnx":  # jax2onnx's MaxPool (see test_tools_e2e)
        assert "Traceback" not in done.stderr
        return
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"same class for {rgb_data[1]}/{rgb_data[1]}" in done.stdout, done.stdout
    assert f"folder:{rgb_data[0]} test images" in done.stdout, done.stdout


def test_evaluation_pictures_name_the_classes(rgb_run, tmp_path):
    from mnist_keras3 import plots

    cm = np.array([[5, 1, 0], [0, 4, 2], [1, 0, 6]])
    probs = np.eye(3)[[1, 2, 0, 0]] * 0.9 + 0.03
    images = np.random.default_rng(0).random((4, 32, 32, 3), dtype=np.float32)
    for path in (plots.confusion(cm, tmp_path / "cm.png", class_names=COLOURS),
                 plots.misclassified(images, np.array([0, 1, 2, 0]), probs, tmp_path / "m.png",
                                     class_names=COLOURS),
                 plots.sample_predictions(images, np.array([0, 1, 2, 0]), probs, tmp_path / "s.png",
                                          class_names=COLOURS)):
        with PIL.Image.open(path) as im:
            assert im.format == "PNG" and im.size[0] > 100
