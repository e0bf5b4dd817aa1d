"""--tensorboard and --early-stopping: the callbacks training.py adds, on a tiny model and data."""

import importlib.util

import numpy as np
import pytest

from mnist_keras3.config import TrainConfig


def _tiny(keras, n=64, seed=0):
    """The tutorial CNN compiled as training.py does, and n random images with one-hot labels."""
    from mnist_keras3 import training

    model = training.build_compiled(TrainConfig(lr=0.01, seed=seed))
    rng = np.random.default_rng(seed)
    x = rng.random((n, 28, 28, 1), dtype=np.float32)
    labels = rng.integers(0, 10, n)
    return model, x, labels


def _read_scalars(run_dir):
    """{tag: [(step, value)]} from the event files in run_dir, read with TensorBoard's own reader."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util import tensor_util

    acc = EventAccumulator(str(run_dir), size_guidance={"tensors": 0})
    acc.Reload()
    return {tag: [(e.step, float(tensor_util.make_ndarray(e.tensor_proto))) for e in acc.Tensors(tag)]
            for tag in acc.Tags()["tensors"]}


@pytest.mark.parametrize("prefer_keras", [True, False], ids=["keras-tensorboard", "tensorboard-writer"])
def test_tensorboard_logs_the_epoch_figures_fit_reports(keras, tmp_path, prefer_keras):
    from mnist_keras3 import callbacks

    if importlib.util.find_spec("tensorboard") is None:
        pytest.skip("the tensorboard package (to read the logs back) is not installed")
    if prefer_keras and importlib.util.find_spec("tensorflow") is None:
        pytest.skip("Keras's TensorBoard callback writes through tensorflow, which is not installed here")
    model, x, labels = _tiny(keras)
    y = keras.utils.to_categorical(labels, 10)
    cb = callbacks.tensorboard(tmp_path / "tb", prefer_keras=prefer_keras)
    assert isinstance(cb, keras.callbacks.TensorBoard) == prefer_keras
    history = model.fit(x, y, batch_size=16, epochs=2, validation_data=(x, y), verbose=0, callbacks=[cb]).history

    train, val = _read_scalars(tmp_path / "tb" / "train"), _read_scalars(tmp_path / "tb" / "validation")
    for key, logged in (("loss", train), ("accuracy", train), ("val_loss", val), ("val_accuracy", val)):
        tag = "epoch_" + key.removeprefix("val_")
        assert [s for s, _ in logged[tag]] == [0, 1], (tag, logged[tag])
        assert [v for _, v in logged[tag]] == pytest.approx(history[key], rel=1e-6), tag
    assert [v for _, v in train["epoch_learning_rate"]] == pytest.approx([0.01, 0.01])


@pytest.mark.cross
def test_keras_tensorboard_writer_under_a_backend_other_than_tensorflow(keras, tmp_path):
    """With tensorflow installed beside torch or jax, Keras's own TensorBoard callback is used
    (it writes through tensorflow) while another backend trains: never the case in the
    one-backend envs."""
    from conftest import BACKEND

    if BACKEND == "tensorflow":
        pytest.skip("the point is a backend other than tensorflow; `tox -e cross` trains under torch")
    test_tensorboard_logs_the_epoch_figures_fit_reports(keras, tmp_path, prefer_keras=True)


def test_tensorboard_without_tensorflow_or_tensorboard_says_what_to_install(keras, tmp_path, monkeypatch):
    from mnist_keras3 import callbacks
    from mnist_keras3.errors import UsageError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("tensorflow", "tensorboard") else real(name, *a))
    with pytest.raises(UsageError, match="pip install tensorboard"):
        callbacks.tensorboard(tmp_path / "tb")


def test_early_stopping_stops_and_keeps_the_best_epochs_weights(keras):
    from mnist_keras3 import training

    model, x, labels = _tiny(keras)
    y = keras.utils.to_categorical(labels, 10)
    # Validation labels that contradict the training ones: every epoch that fits y raises val_loss.
    y_val = keras.utils.to_categorical((labels + 1) % 10, 10)
    early = training.early_stopping(TrainConfig(early_stopping=2))
    history = model.fit(x, y, batch_size=16, epochs=10, validation_data=(x, y_val), verbose=0,
                        callbacks=[early]).history
    val_loss = history["val_loss"]
    best = int(np.argmin(val_loss))
    assert early.stopped_epoch > 0 and len(val_loss) == best + 3 < 10, val_loss  # patience 2
    kept = model.evaluate(x, y_val, batch_size=64, verbose=0, return_dict=True)["loss"]
    assert kept == pytest.approx(val_loss[best], rel=1e-4)  # the best epoch's weights, not the last
    assert training.early_stopping(TrainConfig()) is None


def test_resumed_early_stopping_counts_the_epochs_before_the_checkpoint(keras):
    from mnist_keras3 import training

    model, x, labels = _tiny(keras)
    y = keras.utils.to_categorical(labels, 10)
    before = [w.copy() for w in model.get_weights()]
    # 3 epochs already run; the best val_loss (0.001, unreachable here) was epoch 2, and epoch 3 did
    # not improve on it: patience 2 allows one more epoch, as in an uninterrupted run, then stops,
    # keeping the checkpoint's weights (the only ones on disk).
    early = training.early_stopping(TrainConfig(early_stopping=2), {"val_loss": [1.0, 0.001, 5.0]})
    history = model.fit(x, y, batch_size=16, epochs=10, initial_epoch=3, validation_data=(x, y), verbose=0,
                        callbacks=[early]).history
    assert len(history["val_loss"]) == 1 and early.stopped_epoch == 3 and early.best_epoch == 2
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=False))
