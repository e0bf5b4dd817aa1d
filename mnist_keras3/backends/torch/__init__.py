"""torch backend: device query, numerics, and data parallelism (DistributedDataParallel)."""

import datetime
import os

import torch

from ...errors import UsageError
from .. import host_memory


def framework_version():
    return torch.__version__


def device_type():
    """The device type Keras's torch backend puts new tensors on ("cuda", "mps", "cpu", ...): its own
    choice (an accelerator when torch finds one, unless KERAS_TORCH_DEVICE says otherwise), read off
    a tensor it makes rather than guessed again here."""
    import keras

    return keras.ops.convert_to_tensor(0.0).device.type


def device_name():
    kind = device_type()  # torch.cuda and the other accelerators' modules name their device; torch.cpu does not
    return getattr(torch.get_device_module(kind), "get_device_name", kind.upper)()


def configure_numerics():
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def configure_serving():
    """The web server predicts one 28x28 image at a time: one CPU thread does that in about 5 ms,
    while torch's default pool spins on busy cores (measured 127 ms a digit, 2 shared cores).
    Returns a function that puts the previous setting back."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    return lambda: torch.set_num_threads(previous)


def export_modules(fmt):
    """Python modules Keras needs to export `fmt` ("onnx", "savedmodel") under torch; None where
    Keras cannot: its SavedModel path under torch needs torch_xla, and with Keras 3.15.1 and
    torch 2.13 it fails before that, inside torch.export (measured)."""
    return {"onnx": ["onnx", "onnxscript"], "savedmodel": None}[fmt]


def loss_and_grads(model, x, y, from_logits=False):
    """Categorical cross-entropy of model(x) against one-hot y (model(x) are logits when
    from_logits), and its gradient for every trainable weight (in model.trainable_weights order),
    as (float, [numpy arrays])."""
    import keras

    model.zero_grad()
    probs = model(keras.ops.convert_to_tensor(x), training=False)  # (N, 10)
    loss = keras.losses.CategoricalCrossentropy(from_logits=from_logits)(keras.ops.convert_to_tensor(y), probs)
    loss.backward()  # Keras variables are torch Parameters: autograd fills .value.grad
    grads = [w.value.grad.detach().cpu().numpy() for w in model.trainable_weights]
    return float(loss.detach().cpu()), grads


def is_out_of_memory(error):
    """Whether `error` is torch failing to allocate (an accelerator's OutOfMemoryError, or the CPU
    allocator's RuntimeError)."""
    return isinstance(error, torch.OutOfMemoryError) or (
        isinstance(error, RuntimeError) and "can't allocate memory" in str(error))


def device_memory():
    """Bytes of memory of the device Keras trains on (the host's RAM for the CPU), or None."""
    kind = device_type()
    if kind == "cpu":
        return host_memory()
    props = getattr(torch.get_device_module(kind), "get_device_properties", None)
    return getattr(props(), "total_memory", None) if props else None


def set_threads(n):
    # Intra-op threads only: the inter-op pool can be sized once per process and is idle here.
    torch.set_num_threads(n)


def prepare_data_parallel(devices):
    if devices:
        raise UsageError(f"Expected no --devices under torch: torchrun starts one process per device "
                         f"(--nproc-per-node). Received: devices={devices}")


# How long a rank waits in a collective (DDP's gradient all-reduce, the epoch's figures) for the others:
# a rank that died or hangs then stops the rest with an error instead of leaving them waiting forever.
# torchrun itself stops the other ranks when one exits with an error; this is for the ranks it cannot see.
TIMEOUT_SECONDS = float(os.environ.get("MNIST_KERAS3_DIST_TIMEOUT", 300))


def process_group_plan(device_type, local_rank, device_count):
    """(torch.distributed backend, device index or None) for a rank on a host with `device_count`
    accelerators of `device_type` ("cpu" when there is none): one accelerator per process (nccl for
    CUDA), else gloo on the CPU. More processes on a host than it has accelerators is a UsageError
    naming how many there are (CPU tests pass any device_type and count)."""
    if device_type == "cpu":
        return "gloo", None
    if local_rank >= device_count:
        raise UsageError(f"Expected at most one process per {device_type} device: this host has {device_count}. "
                         f"Received: LOCAL_RANK={local_rank} (torchrun --nproc-per-node {local_rank + 1} or more). "
                         f"Use --nproc-per-node {device_count}, or CUDA_VISIBLE_DEVICES= to train on the CPU.")
    return torch.distributed.get_default_backend_for_device(device_type), local_rank


def data_parallel(cfg):
    """DistributedDataParallel across the processes torchrun started (WORLD_SIZE, RANK, LOCAL_RANK,
    MASTER_ADDR/PORT in the environment): gloo on CPU, nccl with one GPU per process. Keras's fit
    does not run under DDP, so the native loop trains (backends/torch/loop.py wraps its traced step);
    every rank holds the data and takes its share of each global batch."""
    import torch.distributed as dist

    from ...distribute import Parallel
    from .. import loop

    info = {"type": "DistributedDataParallel", "engine": "DistributedDataParallel"}
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        alone = "not started by torchrun" if "WORLD_SIZE" not in os.environ else "torchrun started 1 process"
        return Parallel({**info, "world_size": 1, "alone": alone})
    if loop.choose(cfg)[0] != "native":
        raise UsageError("Expected --loop native or auto for --distribute data-parallel under torch (DDP wraps "
                         f"the native loop's step; Keras's fit does not run under DDP). Received: loop={cfg.loop!r}"
                         + (f" ({loop.unsupported(cfg)})" if cfg.loop != "fit" else ""))
    group, index = process_group_plan(device_type(), int(os.environ.get("LOCAL_RANK", "0")),
                                      torch.accelerator.device_count())
    if index is not None:  # Keras's torch backend puts tensors on the current device: this rank's own
        torch.accelerator.set_device_index(index)
    dist.init_process_group(group, timeout=datetime.timedelta(seconds=TIMEOUT_SECONDS))
    rank = dist.get_rank()
    info.update(world_size=dist.get_world_size(), processes=dist.get_world_size(),
                process_group=dist.get_backend(), timeout_seconds=TIMEOUT_SECONDS)
    return Parallel(info, rank=rank, processes=dist.get_world_size(), finish=dist.destroy_process_group)
