"""Per-backend code, one module per backend with the same function names (the contract):

- framework_version() -> str
- device_name() -> str: the accelerator Keras will use ("CPU" when none)
- configure_numerics() -> None: make float32 math exact where the backend defaults to TF32
- set_threads(n) -> None: use n CPU threads for the math (n > 0); call before the first op

Import only the module of the active backend: importing one imports its framework.
"""
