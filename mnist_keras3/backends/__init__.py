"""Per-backend code, one module per backend with the same function names (the contract):

- framework_version() -> str
- device_name() -> str: the accelerator Keras will use ("CPU" when none)
- configure_numerics() -> None: make float32 math exact where the backend defaults to TF32
- data_parallel(cfg) -> (keras.distribution.Distribution, info dict for metrics.json), or a
  UsageError naming the backend's own tool where Keras has no distribution engine for it

Import only the module of the active backend: importing one imports its framework.
"""
