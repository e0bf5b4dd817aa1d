import numpy as np
import pytest

EXPECTED = {  # name: (total, trainable)
    "tutorial": (1198, 1198),
    "tutorial-bn": (2190, 2174),
    "strong": (141994, 141418),
    "strong-noaug": (141994, 141418),
    "fast": (109066, 108970),
    "shift-cnn": (432810, 432106),
    "shift-cnn-deep": (322474, 321642),
    "kerasio-convnet": (34826, 34826),  # keras-io's examples/vision/mnist_convnet.py says 34,826
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_parameter_counts(keras, name):
    from mnist_keras3 import models

    counts = models.parameter_counts(models.build_model(name))
    assert (counts["total"], counts["trainable"]) == EXPECTED[name]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_outputs_are_probabilities(keras, name, small_batch):
    from mnist_keras3 import models

    x, _ = small_batch
    probs = np.asarray(keras.ops.convert_to_numpy(models.build_model(name)(x)))
    assert probs.shape == (64, 10)
    np.testing.assert_allclose(probs.sum(1), 1.0, rtol=1e-5)


def _conv(x, k, padding):
    """NHWC x HWIO convolution, stride 1, in numpy (float64)."""
    kh, kw = k.shape[:2]
    if padding == "same":
        x = np.pad(x, ((0, 0), (kh // 2, (kh - 1) // 2), (kw // 2, (kw - 1) // 2), (0, 0)))
    h, w = x.shape[1] - kh + 1, x.shape[2] - kw + 1
    return sum(np.einsum("nhwc,cf->nhwf", x[:, i:i + h, j:j + w], k[i, j]) for i in range(kh) for j in range(kw))


def _max_pool(x):
    n, h, w, c = x.shape
    return x[:, :h // 2 * 2, :w // 2 * 2].reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _tutorial_numpy(x, w):
    """The tutorial CNN written out: [conv 3x3 - ReLU - max pool 2] x 2, dense, softmax."""
    k1, b1, k2, b2, wd, bd = w
    h = _max_pool(np.maximum(_conv(x, k1, "valid") + b1, 0))
    h = _max_pool(np.maximum(_conv(h, k2, "valid") + b2, 0))
    return _softmax(h.reshape(len(x), -1) @ wd + bd)


def _tutorial_bn_numpy(x, w, eps=1e-3):
    """tutorial-bn written out, inference mode: [conv 3x3 same - BatchNorm (moving statistics) -
    ReLU - max pool 2] x 2, dense, softmax."""
    h = x
    for i in (0, 6):
        k, b, gamma, beta, mean, var = w[i:i + 6]
        h = _conv(h, k, "same") + b
        h = _max_pool(np.maximum(gamma * (h - mean) / np.sqrt(var + eps) + beta, 0))
    return _softmax(h.reshape(len(x), -1) @ w[12] + w[13])


@pytest.mark.parametrize("name, reference", [("tutorial", _tutorial_numpy), ("tutorial-bn", _tutorial_bn_numpy)])
def test_model_outputs_match_the_model_written_in_numpy(keras, small_batch, name, reference):
    """The model with set random weights (BatchNorm statistics too) gives the probabilities the
    same layers written in numpy give, on real digits."""
    from mnist_keras3 import models

    x, _ = small_batch
    model = models.build_model(name)
    rng = np.random.default_rng(0)
    weights = [rng.uniform(0.5, 1.5, size=w.shape) if "variance" in w.path else rng.normal(0, 0.5, size=w.shape)
               for w in model.weights]
    model.set_weights([w.astype("float32") for w in weights])
    probs = keras.ops.convert_to_numpy(model(x, training=False))
    expected = reference(np.asarray(x, dtype=np.float64), weights)
    assert expected.argmax(1).tolist() != [expected.argmax(1)[0]] * len(x)  # the digits get different answers
    np.testing.assert_allclose(probs, expected, rtol=1e-4, atol=1e-5)


def test_registry_rejects_unknown_names(keras):
    from mnist_keras3 import models
    from mnist_keras3.errors import UsageError

    expected = ("Expected a model among fast, kerasio-convnet, shift-cnn, shift-cnn-deep, strong, strong-noaug, "
                "tutorial, tutorial-bn. Received: model='lenet'")
    with pytest.raises(UsageError, match=expected):
        models.build_model("lenet")


def test_every_model_trains_on_its_logits(keras, small_batch):
    """logits_model shares the model's variables in order, and its softmax is the model's output."""
    from mnist_keras3 import models

    x, _ = small_batch
    for name in models.REGISTRY:
        model = models.build_model(name)
        view = models.logits_model(model)
        assert [id(v) for v in view.trainable_variables] == [id(v) for v in model.trainable_variables]
        probs = keras.ops.convert_to_numpy(model(x, training=False))
        from_logits = keras.ops.convert_to_numpy(keras.ops.softmax(view(x, training=False)))
        np.testing.assert_allclose(from_logits, probs, atol=1e-6, err_msg=name)


def test_logits_loss_matches_keras_loss_and_gradients_where_both_are_finite(keras, small_batch):
    """The cross-entropy from the logits gives Keras's cross-entropy on the probabilities, and the same
    gradients, within the parity tolerance (1e-4 relative) on real digits with untrained weights."""
    from mnist_keras3 import backends, models

    x, y = small_batch
    model = models.build_model("tutorial")
    loss, grads = backends.active().module.loss_and_grads(model, x, y)
    view_loss, view_grads = backends.active().module.loss_and_grads(models.logits_model(model), x, y, from_logits=True)
    np.testing.assert_allclose(view_loss, loss, rtol=1e-4)
    for g, h in zip(grads, view_grads, strict=True):
        np.testing.assert_allclose(h, g, rtol=1e-4, atol=1e-4 * np.abs(g).max())


def test_logits_loss_keeps_a_gradient_where_clipped_probabilities_have_none(keras):
    """Why training uses the logits (a torch seed of fast.toml once stalled): an answer confidently wrong
    beyond Keras's 1e-7 clip gets no gradient from the probabilities, but gets one from the logits."""
    from keras import ops

    logits = ops.convert_to_tensor(np.array([[30.0, 0.0, 0.0]], dtype="float32"))  # p(true class 2) ~ 1e-13
    y = ops.convert_to_tensor(np.array([[0.0, 0.0, 1.0]], dtype="float32"))
    stable = float(ops.convert_to_numpy(keras.losses.categorical_crossentropy(y, logits, from_logits=True)[0]))
    assert stable == pytest.approx(30.0, rel=1e-4)  # -log softmax = 30 + log(1 + 2e-13)
    clipped = float(ops.convert_to_numpy(keras.losses.categorical_crossentropy(y, ops.softmax(logits))[0]))
    if keras.backend.backend() != "tensorflow":  # tensorflow's own loss already uses the logits
        assert clipped == pytest.approx(-np.log(1e-7), rel=1e-3)
