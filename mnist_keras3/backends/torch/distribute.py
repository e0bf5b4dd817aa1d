"""torch: data parallelism on torch.distributed (DistributedDataParallel around the native loop)."""

import datetime
import os
import re

import torch

from ...errors import UsageError
from ..parallel import Parallel


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


def data_parallel(cfg, loop):
    """DistributedDataParallel across the processes torchrun started (WORLD_SIZE, RANK, LOCAL_RANK,
    MASTER_ADDR/PORT in the environment): gloo on CPU, nccl with one GPU per process. Keras's fit
    does not run under DDP, so the native loop trains (backends/torch/loop.py wraps its traced step);
    every rank holds the data and takes its share of each global batch. `loop`: the run's (loop that
    runs, why auto fell back), backends.loop.choose's answer."""
    import torch.distributed as dist

    from . import device_type

    info = {"type": "DistributedDataParallel", "engine": "DistributedDataParallel"}
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        alone = "not started by torchrun" if "WORLD_SIZE" not in os.environ else "torchrun started 1 process"
        return Parallel({**info, "world_size": 1, "alone": alone})
    ran, why = loop
    if ran != "native":
        raise UsageError("Expected --loop native or auto for --distribute data-parallel under torch (DDP wraps "
                         f"the native loop's step; Keras's fit does not run under DDP). Received: loop={cfg.loop!r}"
                         + (f" ({why})" if why else ""))
    group, index = process_group_plan(device_type(), int(os.environ.get("LOCAL_RANK", "0")),
                                      torch.accelerator.device_count())
    if index is not None:  # Keras's torch backend puts tensors on the current device: this rank's own
        torch.accelerator.set_device_index(index)
    dist.init_process_group(group, timeout=datetime.timedelta(seconds=TIMEOUT_SECONDS))
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
