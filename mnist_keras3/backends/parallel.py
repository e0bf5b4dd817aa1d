"""What each backend's data-parallel engine (backends/<name>/distribute.py) hands the run: a leaf
module, imported by the backends and by mnist_keras3/distribute.py alike, importing neither."""

import contextlib
import dataclasses
import typing


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


# How a global batch is split between processes, in one place. Every device takes an equal share of
# each global batch (cfg.batch_size, what one process would take); Keras's fit splits a process's
# batch over its own devices (tensorflow's strategies, jax's DataParallel). Between processes:


def share(rows, rank, processes):
    """Process `rank`'s share of each row of `rows`: every `processes`-th element from `rank`, so
    (k, B) sample indices -> (k, B / processes). The torch loop, whose ranks all hold the data, takes
    its share of each batch this way."""
    return rows[:, rank::processes]


def local_batches(cfg, parallel):
    """cfg with the batch sizes one process feeds: its share of the global ones where each process
    feeds only its shard of the data (parallel.feeds_shard: jax over several processes), else cfg."""
    if not parallel.feeds_shard:
        return cfg
    return cfg.replace(batch_size=cfg.batch_size // parallel.processes,
                       eval_batch_size=cfg.eval_batch_size // parallel.processes)
