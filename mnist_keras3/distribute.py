"""Data-parallel training on Keras's own distribution engine (keras.distribution).

`--distribute data-parallel` replicates the model on every device and splits each batch across
them (keras.distribution.DataParallel); gradients are averaged by the backend's collectives.
Keras implements this for the jax backend; each backend module's data_parallel() says what it
supports, so the other backends answer with one line naming their own tool.
"""

from . import backends


def setup(cfg):
    """Make cfg.distribute the active Keras distribution; return what metrics.json records."""
    if cfg.distribute == "none":
        return {"type": "none", "device_count": 1}
    import keras

    distribution, info = backends.backend_module(cfg.backend).data_parallel(cfg)
    # Global Keras state, set once by the entry point before any variable is created.
    keras.distribution.set_distribution(distribution)
    return info


def trim_to_devices(info, **splits):
    """Cut each (x, y) split to a multiple of the device count; return them in a dict.

    DataParallel gives every device an equal slice of each batch, and Keras's last batch of a
    split is whatever is left over; with batch sizes divisible by the device count (checked),
    a split whose length is too divides every batch. At most count - 1 examples go per split;
    `info` (metrics.json's "distribution") records how many.
    """
    n = info["device_count"]
    out, dropped = {}, {}
    for name, pair in splits.items():
        keep = len(pair[0]) - len(pair[0]) % n
        out[name], dropped[name] = (pair[0][:keep], pair[1][:keep]), len(pair[0]) - keep
    info["dropped_examples"] = dropped
    return out
