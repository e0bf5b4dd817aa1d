"""Data-parallel training on Keras's own distribution engine (keras.distribution).

`--distribute data-parallel` replicates the model on every device and splits each batch across
them (keras.distribution.DataParallel); gradients are averaged by the backend's collectives.
Keras implements this for the jax backend; each backend module's data_parallel() says what it
supports, so the other backends answer with one line naming their own tool.
"""

from . import backend as backends


def setup(cfg):
    """Make cfg.distribute the active Keras distribution; return what metrics.json records."""
    if cfg.distribute == "none":
        return {"type": "none", "device_count": 1}
    import keras

    distribution, info = backends.backend_module(cfg.backend).data_parallel(cfg)
    # Global Keras state, set once by the entry point before any variable is created.
    keras.distribution.set_distribution(distribution)
    return info
