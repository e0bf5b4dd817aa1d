"""tensorflow backend: device query and numerics."""

import tensorflow as tf


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


def set_threads(n):
    # TensorFlow fixes its thread pools when its runtime starts: this must run before the first op.
    try:
        tf.config.threading.set_intra_op_parallelism_threads(n)
        tf.config.threading.set_inter_op_parallelism_threads(n)
    except RuntimeError as e:
        raise RuntimeError(f"TensorFlow has already started, so its threads cannot be set ({e}).")
