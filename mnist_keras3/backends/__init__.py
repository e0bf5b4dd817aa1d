"""Per-backend code, one module per backend with the same function names (the contract):

- framework_version() -> str
- device_name() -> str: the accelerator Keras will use ("CPU" when none)
- configure_numerics() -> None: make float32 math exact where the backend defaults to TF32
- configure_serving() -> undo function: process settings for predicting one small image at a
  time (the web server), and a function that puts the previous ones back
- export_modules(fmt) -> list of module names Keras's model.export needs for fmt ("onnx",
  "savedmodel") under this backend, or None where this backend cannot export that format
- loss_and_grads(model, x, y) -> (loss, [gradient per trainable weight]): autodiff differs per backend
- set_threads(n) -> None: use n CPU threads for the math (n > 0); call before the first op
- data_parallel(cfg) -> (keras.distribution.Distribution, info dict for metrics.json), or a
  UsageError naming the backend's own tool where Keras has no distribution engine for it

Import only the module of the active backend: importing one imports its framework.
"""
