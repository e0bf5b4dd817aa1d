"""loading.py: a .keras file that is ours loads; anything else is a one-line error, safe_mode on."""

import zipfile

import numpy as np
import pytest

from mnist_keras3.errors import UsageError


@pytest.fixture(scope="module")
def saved(keras, tmp_path_factory):
    """An (untrained) tutorial model saved the way training.py saves it."""
    from mnist_keras3 import models, runs

    path = tmp_path_factory.mktemp("model") / "model.keras"
    model = models.build_model("tutorial")
    runs.save_model(model, path)
    return path, model


def load(path):
    from mnist_keras3.loading import load_model

    return load_model(path)


def test_our_model_loads_with_the_same_weights(saved, small_batch):
    path, model = saved
    loaded = load(path)
    x, _ = small_batch
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


@pytest.mark.parametrize("name, content, error, message", [
    ("missing.keras", None, UsageError, "Model file not found"),
    ("model.h5", b"x", UsageError, "Expected a .keras model file"),
    ("empty.keras", b"", None, "not a zip archive"),
    ("noise.keras", bytes(range(256)) * 8, None, "not a zip archive"),
])
def test_files_that_are_not_models(tmp_path, keras, name, content, error, message):
    from mnist_keras3.loading import ModelFileError

    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(error or ModelFileError, match=message) as info:
        load(path)
    assert "\n" not in str(info.value)


def test_a_run_folder_is_pointed_at_its_model(tmp_path, saved, keras):
    (tmp_path / "model.keras").write_bytes(saved[0].read_bytes())
    with pytest.raises(UsageError, match="a run folder"):
        load(tmp_path)


def test_truncated_and_bit_flipped_models_are_corrupt(tmp_path, saved, keras):
    from mnist_keras3.loading import ModelFileError

    raw = saved[0].read_bytes()
    (tmp_path / "cut.keras").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ModelFileError, match="corrupt|damaged"):
        load(tmp_path / "cut.keras")
    # Flip bytes inside the stored weights: only the zip's CRC notices before Keras reads them.
    with zipfile.ZipFile(saved[0]) as z:
        info = z.getinfo("model.weights.h5")
    flipped = bytearray(raw)
    start = info.header_offset + 30 + len(info.filename) + len(info.extra) + 200
    flipped[start:start + 8] = bytes(b ^ 0xFF for b in flipped[start:start + 8])
    (tmp_path / "flipped.keras").write_bytes(bytes(flipped))
    with pytest.raises(ModelFileError, match="corrupt"):
        load(tmp_path / "flipped.keras")


def test_a_zip_that_is_not_a_keras_model(tmp_path, keras):
    from mnist_keras3.loading import ModelFileError

    with zipfile.ZipFile(tmp_path / "photos.keras", "w") as z:
        z.writestr("holiday.txt", "not a model")
    with pytest.raises(ModelFileError, match="not a Keras 3 model file"):
        load(tmp_path / "photos.keras")


def test_an_unknown_layer_class_is_a_clean_error(tmp_path, saved, keras):
    from mnist_keras3.loading import ModelFileError

    with zipfile.ZipFile(saved[0]) as src, zipfile.ZipFile(tmp_path / "custom.keras", "w") as dst:
        for name in src.namelist():
            data = src.read(name)
            dst.writestr(name, data.replace(b'"Conv2D"', b'"MyConv2D"') if name == "config.json" else data)
    with pytest.raises(ModelFileError, match="could not be loaded as a Keras model"):
        load(tmp_path / "custom.keras")


def test_a_model_of_another_shape_is_not_ours(tmp_path, keras):
    from mnist_keras3.loading import ModelFileError

    inputs = keras.Input((32, 32, 3))
    outputs = keras.layers.Dense(5, activation="softmax")(keras.layers.Flatten()(inputs))
    keras.Model(inputs, outputs).save(tmp_path / "cifar.keras")
    with pytest.raises(ModelFileError, match=r"not an MNIST classifier.*input=\(None, 32, 32, 3\), output=\(None, 5\)"):
        load(tmp_path / "cifar.keras")


def test_a_lambda_layer_is_refused_and_its_code_never_runs(tmp_path, keras):
    from mnist_keras3.loading import ModelFileError

    marker = tmp_path / "code-ran"
    where = str(marker)  # a closure Keras can store
    inputs = keras.Input((28, 28, 1))
    # A Lambda's Python code is stored in the file; loading it unsafely would run it.
    x = keras.layers.Lambda(lambda t: (open(where, "w").close(), t)[1])(inputs)
    outputs = keras.layers.Dense(10, activation="softmax")(keras.layers.Flatten()(x))
    keras.Model(inputs, outputs).save(tmp_path / "lambda.keras")
    marker.unlink(missing_ok=True)  # building the model traced the lambda once
    with pytest.raises(ModelFileError, match="Lambda layer.*refused with safe_mode on"):
        load(tmp_path / "lambda.keras")
    assert not marker.exists()
