"""jax backend: device query, numerics and data parallelism."""

import jax

from ..errors import UsageError


def framework_version():
    return jax.__version__


def device_name():
    dev = jax.devices()[0]
    if dev.platform == "cpu":
        return "CPU"
    return getattr(dev, "device_kind", dev.platform)


def configure_numerics():
    # XLA on GPU may use TF32/bf16 passes for float32 matmuls and convolutions by default.
    jax.config.update("jax_default_matmul_precision", "highest")


def data_parallel(cfg):
    """keras.distribution.DataParallel over every device JAX sees on this host.

    GPUs/TPUs as found; on CPU, XLA_FLAGS=--xla_force_host_platform_device_count=N makes N host
    devices. Each batch is split along its first axis, one slice per device, so the batch sizes
    must divide evenly. (Multi-host is Keras's keras.distribution.initialize(), see the README.)
    """
    import keras

    devices = keras.distribution.list_devices()
    for key in ("batch_size", "eval_batch_size"):
        if getattr(cfg, key) % len(devices):
            raise UsageError(f"Expected {key} divisible by the {len(devices)} devices of --distribute "
                             f"data-parallel. Received: {key}={getattr(cfg, key)}")
    distribution = keras.distribution.DataParallel(devices=devices)
    return distribution, {
        "type": "DataParallel",
        "device_count": len(devices),
        "devices": devices,
        "mesh_shape": [int(d) for d in distribution.device_mesh.shape],
        "batch_axis": distribution.batch_dim_name,
    }
