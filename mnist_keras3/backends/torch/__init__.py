"""torch backend: device query, numerics, and data parallelism (DistributedDataParallel)."""

import datetime
import os
import re

import torch

from ...errors import UsageError


def framework_version():
    return torch.__version__


def device_name():
    # Keras's torch backend places tensors on CUDA whenever it is available.
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return "CPU"


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
    cuda = torch.cuda.is_available()
    if cuda:  # Keras's torch backend puts tensors on "cuda", the current device: this rank's own
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if cuda else "gloo", timeout=datetime.timedelta(seconds=TIMEOUT_SECONDS))
    rank = dist.get_rank()
    info.update(world_size=dist.get_world_size(), processes=dist.get_world_size(),
                process_group=dist.get_backend(), timeout_seconds=TIMEOUT_SECONDS)
    return Parallel(info, rank=rank, processes=dist.get_world_size(), finish=dist.destroy_process_group,
                    lost=lost_process)


def lost_process(error):
    """gloo's or nccl's report of a rank that went away (closed its connection) or hangs (a collective
    timed out after TIMEOUT_SECONDS), cut to its first sentence without the source path; None otherwise."""
    import torch.distributed as dist

    text = str(error)
    if not isinstance(error, (RuntimeError, dist.DistError)) or not re.search(r"gloo|nccl|c10d", text, re.I):
        return None
    text = re.sub(r"^\[[^\]]*\.(cc|cpp|h|hpp):\d+\]\s*", "", text.strip().splitlines()[0])
    return text.split(". ")[0].rstrip(".")
