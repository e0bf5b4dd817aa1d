"""Every model, written once in Keras 3: the same code builds it under torch, jax and tensorflow.

`build_model(name)` looks a builder up in the registry; a new model is one decorated function.
Import this module only after the backend is chosen (it imports keras).
"""

import math

import keras
from keras import layers, ops

from .errors import UsageError

REGISTRY = {}


def register(name):
    def add(builder):
        REGISTRY[name] = builder
        return builder
    return add


def build_model(name, input_shape=(28, 28, 1), num_classes=10):
    if name not in REGISTRY:
        raise UsageError(f"Expected a model among {', '.join(sorted(REGISTRY))}. Received: model={name!r}")
    return REGISTRY[name](input_shape, num_classes)


@register("tutorial")
def tutorial(input_shape, num_classes):
    """The tutorial's TensorFlow CNN: 1,198 parameters on MNIST."""
    inputs = keras.Input(shape=input_shape, name="image")          # (N, 28, 28, 1)
    x = layers.Conv2D(4, 3, activation="relu", name="conv1")(inputs)  # (N, 26, 26, 4)
    x = layers.MaxPooling2D(2, name="pool1")(x)                      # (N, 13, 13, 4)
    x = layers.Conv2D(4, 3, activation="relu", name="conv2")(x)      # (N, 11, 11, 4)
    x = layers.MaxPooling2D(2, name="pool2")(x)                      # (N, 5, 5, 4)
    x = layers.Flatten(name="flatten")(x)                            # (N, 100)
    outputs = layers.Dense(num_classes, activation="softmax", name="probs")(x)  # (N, 10)
    return keras.Model(inputs, outputs, name="tutorial")


@register("tutorial-bn")
def tutorial_bn(input_shape, num_classes):
    """The tutorial's PyTorch CNN: [conv4-BN-ReLU-pool] x 2, linear 196 -> 10; 2,190 parameters."""
    inputs = keras.Input(shape=input_shape, name="image")  # (N, 28, 28, 1)
    x = inputs
    for i in (1, 2):
        x = layers.Conv2D(4, 3, padding="same", name=f"conv{i}")(x)
        x = layers.BatchNormalization(name=f"bn{i}")(x)
        x = layers.ReLU(name=f"relu{i}")(x)
        x = layers.MaxPooling2D(2, name=f"pool{i}")(x)  # (N, 14, 14, 4), then (N, 7, 7, 4)
    x = layers.Flatten(name="flatten")(x)  # (N, 196)
    outputs = layers.Dense(num_classes, activation="softmax", name="probs")(x)  # (N, 10)
    return keras.Model(inputs, outputs, name="tutorial_bn")


@register("strong")
def strong(input_shape, num_classes):
    """A small modern CNN for >= 99.5% on MNIST: augmentation, 4 x [conv-BN-ReLU], dropout.

    The augmentation layers are part of the model, so every backend trains on the same pipeline;
    Keras runs them only when training=True (fit), so evaluate/predict/serving see the raw image.
    For CPU cost, only one conv runs at full resolution, and it has a single input channel.
    """
    return _bn_cnn(input_shape, num_classes, augment=True, name="strong")


@register("strong-noaug")
def strong_noaug(input_shape, num_classes):
    """The strong CNN without augmentation: it fits faster, for the time-to-99% recipe (fast.toml)."""
    return _bn_cnn(input_shape, num_classes, augment=False, name="strong_noaug")


def _bn_cnn(input_shape, num_classes, augment, name):
    inputs = keras.Input(shape=input_shape, name="image")  # (N, H, W, C); MNIST (N, 28, 28, 1)
    x = inputs
    if augment:
        # Small rotations and shifts, per image: digits stay legible; fill with 0, MNIST's background.
        x = layers.RandomRotation(10 / 360, fill_mode="constant", name="rotate")(x)
        x = layers.RandomTranslation(0.1, 0.1, fill_mode="constant", name="shift")(x)
    for i, filters in enumerate((32, 64, 64, 128), 1):
        # No conv bias: BatchNorm's beta does the same job.
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False, name=f"conv{i}")(x)
        x = layers.BatchNormalization(name=f"bn{i}")(x)
        x = layers.ReLU(name=f"relu{i}")(x)
        if i != 2:  # MNIST: (N, 14, 14, 32), then (N, 7, 7, 64), then (N, 3, 3, 128)
            x = layers.MaxPooling2D(2, name=f"pool{i}")(x)
    x = layers.Flatten(name="flatten")(x)  # (N, 1152) on MNIST; sized from the input shape
    x = layers.Dropout(0.3, name="dropout")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="probs")(x)  # (N, num_classes)
    return keras.Model(inputs, outputs, name=name)


# ---------------------------------------------------------------- time to accuracy (configs/*.toml)

# MNIST's pixel mean and standard deviation on [0, 1]: a Rescaling layer standardises inside the
# model, so evaluate, predict, serve and export feed it the same [0, 1] images as any other model.
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


@keras.saving.register_keras_serializable(package="mnist_keras3")
class RandomShift(layers.Layer):
    """Shift each training image by a random whole number of pixels, up to `max_shift` each way,
    filling with zeros (MNIST's background); the identity outside training.

    Written once with keras.ops: a one-hot shift matrix per image and axis, and one einsum. It costs
    a few percent of a convolution, where the bilinear RandomRotation + RandomTranslation of the
    `strong` model cost about 40% of its step.
    """

    def __init__(self, max_shift=2, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.max_shift, self.seed = int(max_shift), seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, x, training=None):
        if not training or not self.max_shift:
            return x
        n, h, w = ops.shape(x)[0], x.shape[1], x.shape[2]
        d = keras.random.randint((2, n), -self.max_shift, self.max_shift + 1, seed=self.seed_generator)
        rows, cols = ops.arange(h), ops.arange(w)
        # sy[b, i, j] = 1 where output row i reads input row j = i - dy[b]; rows from outside are zeros.
        sy = ops.cast(ops.equal(rows[None, None, :], rows[None, :, None] - d[0][:, None, None]), x.dtype)  # (N, H, H)
        sx = ops.cast(ops.equal(cols[None, None, :], cols[None, :, None] - d[1][:, None, None]), x.dtype)  # (N, W, W)
        return ops.einsum("bij,bjkc,blk->bilc", sy, x, sx)  # (N, H, W, C)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "max_shift": self.max_shift, "seed": self.seed}


def _standardised(inputs, shift=0):
    x = RandomShift(shift, name="shift")(inputs) if shift else inputs  # on raw pixels: 0 is background
    return layers.Rescaling(1 / MNIST_STD, offset=-MNIST_MEAN / MNIST_STD, name="standardise")(x)


def _probabilities(x, num_classes):
    """Dense logits, then a Softmax layer of its own: training takes the loss from the logits
    (logits_model below), evaluate/predict/serve/export get the probabilities."""
    logits = layers.Dense(num_classes, name="logits")(x)  # (N, num_classes)
    return layers.Softmax(name="probs")(logits)


def _conv_pool_bn(x, filters, size, i):
    """Conv -> max pool -> BatchNorm -> ReLU: pooling first, so BatchNorm and ReLU touch 4x fewer values."""
    x = layers.Conv2D(filters, size, name=f"conv{i}")(x)
    x = layers.MaxPooling2D(2, name=f"pool{i}")(x)
    return layers.ReLU(name=f"relu{i}")(layers.BatchNormalization(name=f"bn{i}")(x))


@register("fast")
def fast(input_shape, num_classes):
    """The time-to-99% CNN (configs/fast.toml): two conv-pool-BN-ReLU blocks and a dense layer of
    128, after tuomaso/train_mnist_fast."""
    inputs = keras.Input(shape=input_shape, name="image")  # (N, 28, 28, 1)
    x = _conv_pool_bn(_standardised(inputs), 16, 5, 1)      # (N, 12, 12, 16)
    x = _conv_pool_bn(x, 32, 3, 2)                          # (N, 5, 5, 32)
    x = layers.Flatten(name="flatten")(x)                   # (N, 800)
    x = layers.Dense(128, activation="relu", name="dense")(x)
    return keras.Model(inputs, _probabilities(x, num_classes), name="fast")


def _shift_cnn(input_shape, num_classes, blocks, name):
    """Random shifts of up to 2 pixels, then conv-BN-ReLU blocks without conv biases (BatchNorm's
    beta does that job), each `(filters, size, pool)`, then a BN'd dense layer of 256 and dropout.
    Layer i of the blocks is conv{i}, bn{i}, relu{i}, pool{i}; the dense layer's BN and ReLU take
    the next number. The names are the saved models' and the parity report's: keep them."""
    inputs = keras.Input(shape=input_shape, name="image")  # (N, 28, 28, 1)
    x = _standardised(inputs, shift=2)
    for i, (filters, size, pool) in enumerate(blocks, 1):
        x = layers.Conv2D(filters, size, use_bias=False, name=f"conv{i}")(x)
        x = layers.ReLU(name=f"relu{i}")(layers.BatchNormalization(name=f"bn{i}")(x))
        if pool:
            x = layers.MaxPooling2D(2, name=f"pool{i}")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(256, use_bias=False, name="dense")(x)
    n = len(blocks) + 1
    x = layers.ReLU(name=f"relu{n}")(layers.BatchNormalization(name=f"bn{n}")(x))
    x = layers.Dropout(0.25, name="dropout")(x)
    return keras.Model(inputs, _probabilities(x, num_classes), name=name)


@register("shift-cnn")
def shift_cnn(input_shape, num_classes):
    """The time-to-99.5% CNN (configs/strong.toml): two wider conv-BN-ReLU-pool blocks."""
    # (N, 24, 24, 32) -> pool (N, 12, 12, 32); (N, 10, 10, 64) -> pool (N, 5, 5, 64); flatten 1600
    return _shift_cnn(input_shape, num_classes, ((32, 5, True), (64, 3, True)), "shift_cnn")


@register("shift-cnn-deep")
def shift_cnn_deep(input_shape, num_classes):
    """The best-accuracy CNN (configs/best.toml): shift-cnn with a second 3x3 convolution in its
    second block, so the features before the dense layer see more of the digit (a 4x4 grid)."""
    # (N, 24, 24, 32) -> pool (N, 12, 12, 32); (N, 10, 10, 64); (N, 8, 8, 64) -> pool (N, 4, 4, 64);
    # flatten 1024
    return _shift_cnn(input_shape, num_classes, ((32, 5, True), (64, 3, False), (64, 3, True)), "shift_cnn_deep")


@register("kerasio-convnet")
def kerasio_convnet(input_shape, num_classes):
    """keras-io's examples/vision/mnist_convnet.py, unchanged: 34,826 parameters on MNIST; the peer
    that configs/kerasio.toml trains as keras-io does."""
    inputs = keras.Input(shape=input_shape, name="image")
    x = layers.Conv2D(32, kernel_size=(3, 3), activation="relu", name="conv1")(inputs)  # (N, 26, 26, 32)
    x = layers.MaxPooling2D(pool_size=(2, 2), name="pool1")(x)                          # (N, 13, 13, 32)
    x = layers.Conv2D(64, kernel_size=(3, 3), activation="relu", name="conv2")(x)       # (N, 11, 11, 64)
    x = layers.MaxPooling2D(pool_size=(2, 2), name="pool2")(x)                          # (N, 5, 5, 64)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dropout(0.5, name="dropout")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="probs")(x)
    return keras.Model(inputs, outputs, name="kerasio_convnet")


# ---------------------------------------------------------------- training on logits

class DenseLogits(layers.Layer):
    """The pre-activation of a Dense layer, on that layer's own kernel and bias (no copy)."""

    def __init__(self, dense, **kwargs):
        super().__init__(name=f"{dense.name}_logits", **kwargs)
        self.dense = dense

    def call(self, x):
        y = ops.matmul(x, self.dense.kernel)
        return ops.add(y, self.dense.bias) if self.dense.use_bias else y


def _is_softmax(fn):
    return fn is keras.activations.softmax or getattr(fn, "__name__", "") == "softmax"


def logits_model(model):
    """The model up to its softmax: a Functional model over the same layers and variables whose
    output is the logits, so that training computes the cross-entropy from them (from_logits=True),
    which is numerically stable under every backend. Keras's own categorical cross-entropy on
    probabilities does that only under tensorflow (from the logits its softmax keeps); under torch and
    jax it clips the probabilities to [1e-7, 1 - 1e-7], so a confidently wrong answer gives no
    gradient at all and a run can stall (a torch seed of fast.toml did, far below 99%).

    The last layer is a Softmax (or Activation("softmax")) layer, whose input is the logits, or a
    Dense(activation="softmax") layer, whose pre-activation DenseLogits computes on its weights.
    The two models share every variable, in the same order, so one optimizer steps both.
    """
    last = model.layers[-1]
    if isinstance(last, layers.Softmax) or (isinstance(last, layers.Activation) and _is_softmax(last.activation)):
        logits = last.input
    elif isinstance(last, layers.Dense) and _is_softmax(last.activation):
        logits = DenseLogits(last)(last.input)
    else:
        raise UsageError(f"Expected a model whose last layer is a softmax (a Softmax layer or a Dense layer "
                         f"with activation='softmax'). Received: last layer {last.name!r} ({type(last).__name__})")
    view = keras.Model(model.inputs, logits, name=f"{model.name}_logits")
    if [id(v) for v in view.trainable_variables] != [id(v) for v in model.trainable_variables]:
        raise RuntimeError(f"logits_model({model.name}) does not hold the model's variables in its order.")
    return view


def parameter_counts(model):
    trainable = sum(math.prod(w.shape) for w in model.trainable_weights)
    total = model.count_params()
    return {"total": int(total), "trainable": int(trainable), "non_trainable": int(total - trainable)}
