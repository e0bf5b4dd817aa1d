"""jax: data parallelism through keras.distribution (jax.distributed over several processes)."""

import functools
import os
import re

import jax

from ..common import take_devices
from ..parallel import Parallel


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


def data_parallel(cfg, loop):
    """keras.distribution.DataParallel over every device JAX sees (cfg.devices: the first that many),
    on this host or, after keras.distribution.initialize (prepare_data_parallel), on every process.

    GPUs/TPUs as found; on CPU, --devices N (or XLA_FLAGS=--xla_force_host_platform_device_count=N)
    makes N host devices. Each batch is split along its first axis, one slice per device; over
    several processes each process feeds its shard of the data and its share of every batch.
    """
    import keras


    devices = keras.distribution.list_devices()
    if jax.process_count() == 1:
        devices = take_devices(devices, cfg.devices, f"{jax.default_backend()} devices jax sees on this host")
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
