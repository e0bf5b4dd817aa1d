"""The strong model's pieces: shape adaptation, train-only augmentation, the LR schedule, the
new config keys and the time-to-accuracy figure."""

import numpy as np
import pytest

from mnist_keras3.config import TrainConfig, build_config
from mnist_keras3.errors import UsageError


@pytest.mark.parametrize("shape,classes", [((32, 32, 3), 10), ((20, 24, 1), 3)])
def test_strong_adapts_to_image_shape_and_classes(keras, shape, classes):
    from mnist_keras3 import models

    model = models.build_model("strong", shape, classes)
    x = np.random.default_rng(0).random((4, *shape), dtype=np.float32)
    probs = keras.ops.convert_to_numpy(model(x))
    assert probs.shape == (4, classes)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)
    # Only the first conv's kernel depends on the channels; nothing depends on height or width.
    conv1 = model.get_layer("conv1").kernel
    assert tuple(conv1.shape) == (3, 3, shape[2], 32)


def test_augmentation_is_active_only_in_training(keras, small_batch):
    from mnist_keras3 import models

    keras.utils.set_random_seed(0)
    model = models.build_model("strong")
    x, _ = small_batch
    augment = keras.Sequential([model.get_layer("rotate"), model.get_layer("shift")])
    moved = keras.ops.convert_to_numpy(augment(x, training=True))
    same = keras.ops.convert_to_numpy(augment(x, training=False))
    np.testing.assert_array_equal(same, x)  # inference sees the raw image
    changed = np.abs(moved - x).reshape(len(x), -1).max(1) > 0.1
    assert changed.mean() > 0.9, "training should shift/rotate (nearly) every image"
    # Ink is moved, not made: a <=10 degree turn and <=10% shift keep most of each digit.
    assert np.all(moved.sum((1, 2, 3)) > 0.5 * x.sum((1, 2, 3)))
    # predict() is deterministic: no augmentation at inference.
    p1, p2 = model.predict(x, verbose=0), model.predict(x, verbose=0)
    np.testing.assert_array_equal(p1, p2)


def test_noaug_variant_is_the_same_network_without_augmentation(keras):
    from mnist_keras3 import models

    strong, noaug = models.build_model("strong"), models.build_model("strong-noaug")
    assert [la.name for la in strong.layers if la.name not in ("rotate", "shift")] == [la.name for la in noaug.layers]
    assert not any(type(la).__name__.startswith("Random") for la in noaug.layers)


def test_cosine_schedule_decays_from_lr_to_zero(keras):
    from mnist_keras3 import optimizers

    cfg = TrainConfig(epochs=4, lr=0.002, lr_schedule="cosine", optimizer="adamw").validate()
    opt = optimizers.build_optimizer(cfg, steps=50)
    assert type(opt).__name__ == "AdamW"
    schedule = opt.learning_rate if callable(opt.learning_rate) else opt._learning_rate
    lr = [float(keras.ops.convert_to_numpy(schedule(s))) for s in (0, 100, 200)]
    np.testing.assert_allclose(lr, [0.002, 0.001, 0.0], atol=1e-7)


def test_no_schedule_is_a_constant_rate(keras):
    from mnist_keras3 import optimizers

    opt = optimizers.build_optimizer(TrainConfig(lr=0.01).validate(), steps=10)
    assert type(opt).__name__ == "Adam"
    np.testing.assert_allclose(float(keras.ops.convert_to_numpy(opt.learning_rate)), 0.01, rtol=1e-6)


@pytest.mark.parametrize("n,max_steps,expected", [(60000, 0, 469), (60000, 50, 50), (100, 0, 1)])
def test_steps_per_epoch(n, max_steps, expected):
    from mnist_keras3.optimizers import steps_per_epoch

    assert steps_per_epoch(n, TrainConfig(batch_size=128, max_steps_per_epoch=max_steps)) == expected


@pytest.mark.parametrize("overrides,match", [
    ({"lr_schedule": "step"}, r"Expected lr_schedule among none, cosine, onecycle. Received: lr_schedule='step'"),
    ({"dataset": "svhn"},
     r"Expected dataset among mnist, fashion_mnist, cifar10 or folder:PATH. Received: dataset='svhn'"),
    ({"dataset": "folder:"}, r"Received: dataset='folder:'"),
    ({"distribute": "ddp"}, r"Expected distribute among none, data-parallel. Received: distribute='ddp'"),
])
def test_new_keys_are_validated(overrides, match):
    with pytest.raises(UsageError, match=match):
        build_config(None, overrides)


def test_recipe_files_parse():
    from conftest import REPO

    strong = build_config(REPO / "configs" / "strong.toml")
    fast = build_config(REPO / "configs" / "fast.toml")
    kerasio = build_config(REPO / "configs" / "kerasio.toml")
    assert strong.model == "shift-cnn" and strong.lr_schedule == "onecycle" and strong.label_smoothing > 0
    assert fast.model == "fast" and fast.epochs < strong.epochs and (fast.beta_1, fast.beta_2) == (0.7, 0.9)
    assert kerasio.model == "kerasio-convnet" and kerasio.validation_split == 0.1 and kerasio.epochs == 15


def test_time_to_accuracy(keras):
    from mnist_keras3.callbacks import time_to_accuracy

    history = {"val_accuracy": [0.97, 0.991, 0.994, 0.996]}
    out = time_to_accuracy(history, [10.0, 11.0, 12.0, 13.0])
    assert out == {"0.99": {"epoch": 2, "train_seconds": 21.0}, "0.995": {"epoch": 4, "train_seconds": 46.0}}
    assert time_to_accuracy({"val_accuracy": [0.5]}, [1.0]) == {"0.99": None, "0.995": None}
    assert time_to_accuracy(history, [1.0], initial_epoch=3) is None  # resumed: not timed here


def test_onecycle_warms_up_linearly_then_decays_to_zero(keras):
    from mnist_keras3.optimizers import learning_rate

    cfg = TrainConfig(lr=0.01, lr_schedule="onecycle", warmup_fraction=0.25).validate()
    schedule = learning_rate(cfg, total_steps=100)
    lr = [float(keras.ops.convert_to_numpy(schedule(step))) for step in (0, 10, 25, 62, 100)]
    assert lr[0] == 0.0 and lr[1] == pytest.approx(0.004) and lr[2] == pytest.approx(0.01)
    assert lr[3] == pytest.approx(0.005, rel=0.05) and lr[4] == pytest.approx(0.0, abs=1e-9)


def test_adam_betas_and_label_smoothing_reach_keras(keras):
    from mnist_keras3.training import build_compiled, training_view

    cfg = TrainConfig(beta_1=0.7, beta_2=0.9, label_smoothing=0.1).validate()
    model = build_compiled(cfg)
    assert (model.optimizer.beta_1, model.optimizer.beta_2) == (0.7, 0.9)
    view = training_view(model, cfg)
    assert view.optimizer is model.optimizer and view.loss.get_config()["label_smoothing"] == 0.1
    assert view.loss.get_config()["from_logits"] is True


@pytest.mark.parametrize("overrides,match", [
    ({"beta_1": 1.0}, r"Invalid value for beta_1: 1.0 \(expected a number in \[0, 1\)\)"),
    ({"warmup_fraction": 0.0}, r"Invalid value for warmup_fraction: 0.0"),
    ({"label_smoothing": -0.1}, r"Invalid value for label_smoothing: -0.1"),
    ({"label_smoothing": "0.1"}, r"Expected label_smoothing to be of type float. Received: label_smoothing='0.1'"),
])
def test_recipe_keys_are_validated(overrides, match):
    with pytest.raises(UsageError, match=match):
        build_config(None, overrides)


def test_unknown_recipe_key_names_the_valid_ones(tmp_path):
    p = tmp_path / "r.toml"
    p.write_text('model = "fast"\nlabel_smothing = 0.1\n')
    with pytest.raises(UsageError, match=r"Unknown key 'label_smothing' in config .*Valid keys: .*label_smoothing"):
        build_config(p)


def test_random_shift_moves_whole_pixels_in_training_only(keras):
    from mnist_keras3.models import RandomShift

    x = np.zeros((64, 28, 28, 1), "float32")
    x[:, 10:18, 10:18, 0] = 1.0  # a square of ink, well inside the frame
    layer = RandomShift(2, seed=1)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer(x, training=False)), x)
    out = keras.ops.convert_to_numpy(layer(x, training=True))
    assert out.sum() == x.sum() and set(np.unique(out)) <= {0.0, 1.0}  # moved, not blurred or cut
    rows = [np.nonzero(o[:, :, 0].any(1))[0][0] - 10 for o in out]
    cols = [np.nonzero(o[:, :, 0].any(0))[0][0] - 10 for o in out]
    assert set(rows) <= set(range(-2, 3)) and set(cols) <= set(range(-2, 3))
    assert len(set(zip(rows, cols, strict=True))) > 5  # per image, not one shift for the batch
