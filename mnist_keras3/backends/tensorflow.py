"""tensorflow backend: device query, numerics, and (not) data parallelism."""

import tensorflow as tf

from ..errors import UsageError


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


def data_parallel(cfg):
    # keras.distribution has no tensorflow implementation in Keras 3: say what to use instead.
    raise UsageError(f"Expected backend jax for --distribute data-parallel (Keras's DataParallel runs on "
                     f"jax). Received: backend={cfg.backend!r}. Use --backend jax, or for tensorflow use "
                     "a tf.distribute strategy (tf.distribute.MirroredStrategy) in your own script.")
