"""jax backend: device query, numerics and data parallelism."""

import functools
import os
import re

import jax

from ...errors import UsageError


def framework_version():
    return jax.__version__


def device_name():
    dev = jax.devices()[0]
    if dev.platform == "cpu":
        return "CPU"
    return getattr(dev, "device_kind", dev.platform)


def configure_numerics():
    # XLA on GPU may use TF32/bf16 passes for float32 matmuls and convolutions by default. Not on
    # CPU, where "highest" gave the same values to the bit and cost 40 -> 67 ms a training step of
    # the fast model (docs/speed.md). This starts jax's client: call after set_threads.
    if jax.default_backend() != "cpu":
        jax.config.update("jax_default_matmul_precision", "highest")


def configure_serving():
    """Nothing to do: a jitted predict on one image takes about 1 ms on CPU (measured)."""
    return lambda: None


def export_modules(fmt):
    """Python modules Keras needs to export `fmt` ("onnx", "savedmodel") under jax: jax2onnx for
    ONNX; SavedModel goes through jax2tf, so tensorflow must be installed too."""
    return {"onnx": ["jax2onnx", "onnx"], "savedmodel": ["tensorflow"]}[fmt]


def loss_and_grads(model, x, y, from_logits=False):
    """Categorical cross-entropy of model(x) against one-hot y (model(x) are logits when
    from_logits), and its gradient for every trainable weight (in model.trainable_weights order),
    as (float, [numpy arrays])."""
    import keras
    import numpy as np

    loss_fn = keras.losses.CategoricalCrossentropy(from_logits=from_logits)
    # variables, not weights: the random layers' seed states are non-trainable variables too
    non_trainable = [v.value for v in model.non_trainable_variables]

    def loss_of(trainable):
        # jax differentiates pure functions: the weights go in as arguments (stateless_call).
        probs, _ = model.stateless_call(trainable, non_trainable, x, training=False)  # (N, 10)
        return loss_fn(y, probs)

    loss, grads = jax.value_and_grad(loss_of)([v.value for v in model.trainable_variables])
    return float(loss), [np.asarray(g) for g in grads]


def set_threads(n):
    """XLA:CPU sizes its thread pools from the CPUs the process may run on, when its client
    starts (the first op): so this restricts the process to n of its CPUs (Linux), and sets the
    XLA flags for Eigen's pool too. Flags alone left XNNPACK's pool at every core."""
    from jax._src import xla_bridge

    if xla_bridge.backends_are_initialized():
        raise RuntimeError("jax has already started its CPU client, so its threads cannot be set.")
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:n])
    flags = os.environ.get("XLA_FLAGS", "")
    os.environ["XLA_FLAGS"] = f"{flags} --xla_cpu_multi_thread_eigen={str(n > 1).lower()} " \
                              f"intra_op_parallelism_threads={n}".strip()


def prepare_data_parallel(devices):
    """Before jax's client starts: `devices` host devices on CPU (XLA's flag; with accelerators,
    data_parallel takes the first `devices`), and with KERAS_DISTRIBUTION_NUM_PROCESSES > 1 this
    process joins the others through keras.distribution.initialize (jax.distributed.initialize with
    the coordinator KERAS_DISTRIBUTION_JOB_ADDRESSES and KERAS_DISTRIBUTION_PROCESS_ID). On CPU,
    jax's cross-process collectives are gloo (jax 0.10's default, set here so an older default of
    none fails no later than this)."""
    from jax._src import xla_bridge

    if xla_bridge.backends_are_initialized():
        raise RuntimeError("jax has already started its client, so its devices cannot be set.")
    if devices:
        flags = os.environ.get("XLA_FLAGS", "")
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={devices}".strip()
    if int(os.environ.get("KERAS_DISTRIBUTION_NUM_PROCESSES") or 1) > 1:
        import keras

        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        # Keras's initialize reads KERAS_DISTRIBUTION_* and seeds every process alike, but passes jax
        # no timeouts: jax's defaults would wait 100 s for a lost process's heartbeat, and as long
        # again at exit for it to reach the shutdown barrier. MNIST_KERAS3_DIST_TIMEOUT bounds them.
        real = jax.distributed.initialize
        jax.distributed.initialize = functools.partial(real, initialization_timeout=TIMEOUT_SECONDS,
                                                       heartbeat_timeout_seconds=TIMEOUT_SECONDS,
                                                       shutdown_timeout_seconds=TIMEOUT_SECONDS)
        try:
            keras.distribution.initialize()
        finally:
            jax.distributed.initialize = real


# How long jax.distributed waits for a process that stopped answering (its heartbeat, the start and
# the shutdown of the processes), as torch's collectives do: a lost host stops the others.
TIMEOUT_SECONDS = int(float(os.environ.get("MNIST_KERAS3_DIST_TIMEOUT", 300)))


def lost_process(error):
    """jax's report of a process that went away: its gloo (CPU) or nccl collective failed, cut to its
    first line without the source path; None for any other exception."""
    text = str(error).strip()
    if not isinstance(error, jax.errors.JaxRuntimeError) or not re.search(r"gloo|nccl|heartbeat", text, re.I):
        return None
    text = re.sub(r"\[[^\]]*\.(cc|cpp|h):\d+\]\s*", "", text.splitlines()[0])
    return text.split(". ")[0].rstrip(".")


def data_parallel(cfg):
    """keras.distribution.DataParallel over every device JAX sees (cfg.devices: the first that many),
    on this host or, after keras.distribution.initialize (prepare_data_parallel), on every process.

    GPUs/TPUs as found; on CPU, --devices N (or XLA_FLAGS=--xla_force_host_platform_device_count=N)
    makes N host devices. Each batch is split along its first axis, one slice per device; over
    several processes each process feeds its shard of the data and its share of every batch.
    """
    import keras

    from ...distribute import Parallel

    devices = keras.distribution.list_devices()
    if cfg.devices and jax.process_count() == 1:
        if cfg.devices > len(devices):
            raise UsageError(f"Expected --devices at most the {len(devices)} devices jax sees. "
                             f"Received: devices={cfg.devices}")
        devices = devices[:cfg.devices]
    # Over several processes each one is given its own shard (training.load_splits): Keras's
    # auto-sharding is for tf.data datasets, and refuses the arrays fit is given here.
    distribution = keras.distribution.DataParallel(devices=devices, auto_shard_dataset=jax.process_count() == 1)
    return Parallel({
        "type": "DataParallel",
        "engine": "keras.distribution.DataParallel" + (" + jax.distributed" if jax.process_count() > 1 else ""),
        "world_size": len(devices),
        "processes": jax.process_count(),
        "devices": devices,
        "mesh_shape": [int(d) for d in distribution.device_mesh.shape],
        "batch_axis": distribution.batch_dim_name,
        **({"timeout_seconds": TIMEOUT_SECONDS} if jax.process_count() > 1 else {}),
    }, distribution=distribution, rank=jax.process_index(), processes=jax.process_count(),
        feeds_shard=jax.process_count() > 1, lost=lost_process)
