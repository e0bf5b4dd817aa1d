"""Every model, written once in Keras 3: the same code builds it under torch, jax and tensorflow.

`build_model(name)` looks a builder up in the registry; a new model is one decorated function.
Import this module only after the backend is chosen (it imports keras).
"""

import math

import keras
from keras import layers

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


def parameter_counts(model):
    trainable = sum(math.prod(w.shape) for w in model.trainable_weights)
    total = model.count_params()
    return {"total": int(total), "trainable": int(trainable), "non_trainable": int(total - trainable)}
