"""tensorflow backend: device query, numerics, memory, export and autodiff (data parallelism: distribute.py)."""

import tensorflow as tf

from ..common import host_memory


def framework_version():
    return tf.__version__


def device_name():
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return "CPU"
    details = tf.config.experimental.get_device_details(gpus[0])
    return details.get("device_name", gpus[0].name)


def configure_numerics():
    tf.config.experimental.enable_tensor_float_32_execution(False)


def configure_compile_cache(folder):
    """Nothing to set: a tf.function's graph is built per process, and XLA's persistent cache is a
    TF_XLA_FLAGS setting read when TensorFlow starts, before a run could set it."""


def configure_serving():
    """Nothing to do: a traced predict on one image is already quick on the CPU (docs/serving.md)."""
    return lambda: None


def export_modules(fmt):
    """Python modules Keras needs to export `fmt` ("onnx", "savedmodel") under tensorflow: tf2onnx
    for ONNX; SavedModel is tensorflow's own format."""
    return {"onnx": ["tf2onnx", "onnx"], "savedmodel": []}[fmt]


def loss_and_grads(model, x, y, from_logits=False):
    """Categorical cross-entropy of model(x) against one-hot y (model(x) are logits when
    from_logits), and its gradient for every trainable weight (in model.trainable_weights order),
    as (float, [numpy arrays])."""
    import keras

    with tf.GradientTape() as tape:
        probs = model(tf.convert_to_tensor(x), training=False)  # (N, 10)
        loss = keras.losses.CategoricalCrossentropy(from_logits=from_logits)(tf.convert_to_tensor(y), probs)
    grads = tape.gradient(loss, model.trainable_weights)
    return float(loss), [g.numpy() for g in grads]


def is_out_of_memory(error):
    return isinstance(error, tf.errors.ResourceExhaustedError)


def device_memory():
    """Bytes of memory of the device Keras trains on: TensorFlow reports none for a GPU, so None
    there; the host's RAM for the CPU."""
    return None if tf.config.list_physical_devices("GPU") else host_memory()


def set_threads(n):
    # TensorFlow fixes its thread pools when its runtime starts: this must run before the first op.
    try:
        tf.config.threading.set_intra_op_parallelism_threads(n)
        tf.config.threading.set_inter_op_parallelism_threads(n)
    except RuntimeError as e:
        raise RuntimeError(f"TensorFlow has already started, so its threads cannot be set ({e}).") from e
