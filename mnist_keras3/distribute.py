"""Data-parallel training, each backend on its own engine (`--distribute data-parallel`).

Every device holds the whole model and trains on its share of each global batch (cfg.batch_size, the
same batch one process would take); the framework averages the gradients:

- torch: torch.distributed + DistributedDataParallel, one process per device launched by torchrun;
  the native loop's traced step is what DDP wraps (backends/torch/loop.py).
- tensorflow: tf.distribute.MirroredStrategy over this host's devices (`--devices N` logical CPU
  devices to try it without GPUs), MultiWorkerMirroredStrategy when TF_CONFIG names several workers.
- jax: keras.distribution.DataParallel over every device jax sees; with KERAS_DISTRIBUTION_* set,
  over several processes (keras.distribution.initialize -> jax.distributed), each feeding its shard.

Each backend's backends/<name>/distribute.py data_parallel(cfg, loop) returns a Parallel
(backends/parallel.py); docs/distributed.md has the commands. Rank 0 alone writes the run folder;
the other processes write to a temporary folder that is removed at the end.
"""

import sys

from .backends.parallel import NONE, Parallel, share
from .errors import UsageError


def setup(cfg, backend, loop):
    """(cfg, Parallel) for cfg.distribute on `backend` (the Backend handle) with `loop` (the run's
    loop choice, backends.loop.choose), the engine started and, for jax, the Keras distribution
    made global (once, by the entry point, before any variable is created). A world of one device
    or process is a warning and a plain run: cfg comes back with distribute "none"."""
    if cfg.distribute == "none":
        return cfg, Parallel(dict(NONE))
    parallel = backend.distribute.data_parallel(cfg, loop)
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
    return tuple(share(a[None], parallel.rank, parallel.processes)[0] for a in pair)
