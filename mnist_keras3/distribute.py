"""Data-parallel training, each backend on its own engine (`--distribute data-parallel`).

Every device holds the whole model and trains on its share of each global batch (cfg.batch_size, the
same batch one process would take); the framework averages the gradients:

- torch: torch.distributed + DistributedDataParallel, one process per device launched by torchrun;
  the native loop's traced step is what DDP wraps (backends/torch/loop.py).
- tensorflow: tf.distribute.MirroredStrategy over this host's devices (`--devices N` logical CPU
  devices to try it without GPUs), MultiWorkerMirroredStrategy when TF_CONFIG names several workers.
- jax: keras.distribution.DataParallel over every device jax sees; with KERAS_DISTRIBUTION_* set,
  over several processes (keras.distribution.initialize -> jax.distributed), each feeding its shard.

Each backend module's data_parallel(cfg) returns a Parallel (below); docs/distributed.md has the
commands. Rank 0 alone writes the run folder; the other processes write to a temporary folder that
is removed at the end.
"""

import contextlib
import dataclasses
import sys
import typing

from . import backends
from .errors import UsageError


@dataclasses.dataclass
class Parallel:
    """What a backend's data_parallel(cfg) sets up.

    info: metrics.json's "distribution": type, engine, world_size (devices that each take a share
    of every batch), device_count (the same number, the older key), per_device_batch, and what
    trim_to_devices drops. distribution: a keras.distribution.Distribution to make global (jax).
    scope: builds the context the model is built, compiled, trained and tested in (tensorflow's
    strategy.scope). rank, processes: this process among the processes (rank 0 writes the run
    folder); feeds_shard: each process is given only its shard of the data, and its share of the
    batch (jax over several processes). finish: tears the engine down at the end (torch's process group).
    lost: given an exception, the engine's own words for a process it lost (a peer that closed its
    connection, stopped its heartbeat or timed out in a collective), or None for any other exception.
    """

    info: dict
    distribution: object = None
    scope: typing.Callable = contextlib.nullcontext
    rank: int = 0
    processes: int = 1
    feeds_shard: bool = False
    finish: typing.Callable = lambda: None
    lost: typing.Callable = lambda error: None

    @property
    def world(self):
        return self.info.get("world_size", 1)


NONE = {"type": "none", "device_count": 1}


def setup(cfg):
    """(cfg, Parallel) for cfg.distribute, the engine started and, for jax, the Keras distribution
    made global (once, by the entry point, before any variable is created). A world of one device
    or process is a warning and a plain run: cfg comes back with distribute "none"."""
    if cfg.distribute == "none":
        return cfg, Parallel(dict(NONE))
    parallel = backends.backend_module(cfg.backend).data_parallel(cfg)
    world = parallel.world
    if world == 1:
        parallel.finish()
        why = parallel.info.get("alone", "only one device was found")
        print(f"warning: --distribute data-parallel over a world of 1 ({why}); training as one process.",
              file=sys.stderr)
        return cfg.replace(distribute="none", devices=0), Parallel({**NONE, "warning": f"world of 1: {why}"})
    for key in ("batch_size", "eval_batch_size"):
        if getattr(cfg, key) % world:
            parallel.finish()
            raise UsageError(f"Expected {key} divisible by the {world} devices of --distribute "
                             f"data-parallel. Received: {key}={getattr(cfg, key)}")
    parallel.info.update(device_count=world, per_device_batch=cfg.batch_size // world)
    if parallel.distribution is not None:
        import keras

        keras.distribution.set_distribution(parallel.distribution)
    if parallel.rank:  # rank 0 reports; the others would print the same lines again
        sys.stdout = open(__import__("os").devnull, "w")  # noqa: SIM115  (the process's stdout from here on)
    return cfg, parallel


def trim_to_devices(info, **splits):
    """Cut each (x, y) split to a multiple of the device count; return them in a dict.

    Every device takes an equal share of each batch, and the last batch of a split is whatever is
    left over; with batch sizes divisible by the device count (checked), a split whose length is
    too divides every batch. At most count - 1 examples go per split; `info` (metrics.json's
    "distribution") records how many.
    """
    n = info["device_count"]
    out, dropped = {}, {}
    for name, pair in splits.items():
        keep = len(pair[0]) - len(pair[0]) % n
        out[name], dropped[name] = (pair[0][:keep], pair[1][:keep]), len(pair[0]) - keep
    info["dropped_examples"] = dropped
    return out


def process_shard(parallel, pair):
    """This process's share of a trimmed (x, y) split when each process feeds its own data (jax over
    several processes): every `processes`-th example from `rank`; the whole split otherwise."""
    if not parallel.feeds_shard:
        return pair  # torch: every rank holds the data and takes its share of each batch itself
    return pair[0][parallel.rank::parallel.processes], pair[1][parallel.rank::parallel.processes]
