"""jax backend: device query, numerics, memory, export and autodiff (data parallelism: distribute.py)."""

import os

import jax

from ..common import host_memory


def framework_version():
    return jax.__version__


def device_name():
    dev = jax.devices()[0]
    if dev.platform == "cpu":
        return "CPU"
    return getattr(dev, "device_kind", dev.platform)


def configure_numerics(platform=None):
    """float32 math in float32. XLA on accelerators may run float32 matmuls and convolutions in
    TF32/bf16 passes by default, so there the precision is set to "highest". Not on the CPU
    platform, where XLA computes float32 exactly anyway and "highest" only made the step slower
    (docs/speed.md). `platform` (default: jax's) lets a CPU test take the accelerator's path. This
    starts jax's client: call after set_threads."""
    exact_already = (platform or jax.default_backend()) == "cpu"
    jax.config.update("jax_default_matmul_precision", None if exact_already else "highest")


def configure_compile_cache(folder):
    """jax's persistent compilation cache in `folder` (None: none): a later run loads what an earlier
    one compiled (jax keys each program by itself, the compile options, jax's version and the
    device), so only a new program compiles. Every program is kept, however quick its compile (jax
    keeps only those over a second by default, and this model's are mostly quicker)."""
    if folder is None:
        return
    jax.config.update("jax_compilation_cache_dir", str(folder))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


def configure_serving():
    """Nothing to do: a jitted predict on one image is already quick on the CPU (docs/serving.md)."""
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


def is_out_of_memory(error):
    """Whether `error` is XLA failing to allocate: its runtime error with status RESOURCE_EXHAUSTED."""
    return type(error).__name__ in ("XlaRuntimeError", "JaxRuntimeError") and "RESOURCE_EXHAUSTED" in str(error)


def device_memory():
    """Bytes of memory of jax's first device (its allocator's limit; the host's RAM for the CPU)."""
    stats = jax.devices()[0].memory_stats() or {}
    return stats.get("bytes_limit") or host_memory()


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
