"""Choose the Keras backend once, at an entry point, before keras is imported.

Precedence, highest first: the `--backend` flag, `backend = "..."` in the config file, the
`KERAS_BACKEND` environment variable, then the first of torch, jax, tensorflow that is installed.
Library modules never call this: entry points do, then import what needs keras. Importing this
package imports no framework and not keras.

Per-backend code: one package per backend (backends/<name>/) with the same function names in its
__init__.py (the contract):

- framework_version() -> str
- device_name() -> str: the accelerator Keras will use ("CPU" when none)
- configure_numerics() -> None: make float32 math exact where the backend defaults to TF32
- configure_compile_cache(folder) -> None: keep compiled programs in `folder` (None: do not) for
  later runs, where the framework does not already (common.compile_cache_dir picks the folder)
- configure_serving() -> undo function: process settings for predicting one small image at a
  time (the web server), and a function that puts the previous ones back
- export_modules(fmt) -> list of module names Keras's model.export needs for fmt ("onnx",
  "savedmodel") under this backend, or None where this backend cannot export that format
- loss_and_grads(model, x, y, from_logits=False) -> (loss, [gradient per trainable weight]): autodiff
  differs per backend
- is_out_of_memory(error) -> bool: whether an exception is the framework failing to allocate
  device memory (training.py turns it into one line naming the batch size and the memory)
- device_memory() -> bytes of the training device's memory (the host's RAM for the CPU), or None
- set_threads(n) -> None: use n CPU threads for the math (n > 0); call before the first op
Beside it, the same modules in each backend's folder:

- loop.py: the native loop (backends/loop.py has the contract: Trainer, DATA_PARALLEL,
  private_api_problem)
- distribute.py: prepare_data_parallel(devices), what --distribute data-parallel needs before the
  framework's first op (`devices` > 0 local devices: logical CPU devices where there is no
  accelerator; a UsageError under torch, where torchrun decides; jax's multi-process start), and
  data_parallel(cfg, loop) -> backends.parallel.Parallel, the backend's own engine started (torch
  DistributedDataParallel, tf.distribute, keras.distribution on jax)

activate() returns the Backend handle that holds them: the rest of a run passes it along, rather than
turning the name into modules again. Importing a backend's package imports its framework.
"""

import dataclasses
import importlib
import importlib.util
import os
import sys
import types

from ..errors import UsageError
from .common import compile_cache_dir

BACKENDS = ("torch", "jax", "tensorflow")  # default order when nothing is asked for


def is_installed(name):
    return importlib.util.find_spec(name) is not None


def installed_backends():
    return [b for b in BACKENDS if is_installed(b)]


def resolve_backend(flag=None, config=None, environ=None):
    """Return (backend name, where the choice came from). Raises UsageError on a bad name."""
    environ = os.environ if environ is None else environ
    for source, value in (
        ("--backend", flag),
        ("config file", config),
        ("KERAS_BACKEND", environ.get("KERAS_BACKEND")),
    ):
        if value:
            name = value.strip().lower()
            if name not in BACKENDS:
                raise UsageError(
                    f"Expected a backend among {', '.join(BACKENDS)}. "
                    f"Received: backend={value!r} (from {source})"
                )
            return name, source
    found = installed_backends()
    if not found:
        raise UsageError(
            "No Keras backend is installed. Install one: "
            'pip install "mnist-keras3[torch]" (or [jax], [tensorflow])'
        )
    return found[0], "default (first installed)"


def activate(name, threads=0, devices=0, distribute="none"):
    """Set KERAS_BACKEND to `name` and import keras under it; return the Backend handle that the
    rest of the run holds (the one place a backend name becomes its modules).

    threads > 0 sizes the backend's CPU thread pools (0 leaves the framework's default); with
    distribute "data-parallel", devices > 0 local devices (0: every device found) and what else
    the backend's engine needs before its first op, which is why both are set here.

    Refuses a keras that was already imported under another backend: Keras reads the backend
    once, at its first import, so a late switch would silently train on the wrong one.
    """
    if name not in BACKENDS:
        raise UsageError(f"Expected a backend among {', '.join(BACKENDS)}. Received: backend={name!r}")
    if not is_installed(name):
        raise UsageError(
            f"The {name} backend is not installed. Install it: pip install \"mnist-keras3[{name}]\" "
            f"(installed backends: {', '.join(installed_backends()) or 'none'})"
        )
    if "keras" in sys.modules:
        current = sys.modules["keras"].backend.backend()
        if current != name:
            raise UsageError(
                f"keras was already imported with the {current} backend, so it cannot switch to "
                f"{name}. Choose the backend before importing keras (set KERAS_BACKEND={name})."
            )
    os.environ["KERAS_BACKEND"] = name
    # Keras seeds tensorflow whenever it is installed, even under another backend: keep its C++
    # start-up chatter off the console unless the user asked for it.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    # Pin the layout: a stray ~/.keras/keras.json must not change shapes between backends.
    keras.config.set_image_data_format("channels_last")
    backend = Backend(name, keras, backend_module(name))
    if threads:  # first: jax fixes its thread pools when its client starts
        backend.module.set_threads(threads)
    if distribute != "none":
        backend.distribute.prepare_data_parallel(devices)
    backend.module.configure_numerics()
    backend.module.configure_compile_cache(compile_cache_dir(name))
    return backend


@dataclasses.dataclass(frozen=True)
class Backend:
    """The active backend, as activate() returns it: its keras, its contract module (device,
    numerics, memory, export, autodiff), its native loop and its data-parallel engine, so that the
    run holds one object rather than turning the backend's name into modules again at each use."""

    name: str
    keras: types.ModuleType
    module: types.ModuleType  # mnist_keras3/backends/<name>/__init__.py: the contract above

    def describe(self):
        """Backend, versions and device, for the console and metrics.json."""
        return {"backend": self.name, "backend_version": self.module.framework_version(),
                "keras_version": self.keras.__version__, "device": self.module.device_name()}

    @property
    def loop(self):
        """backends/<name>/loop.py: the native loop's Trainer and what it supports."""
        return importlib.import_module(f"mnist_keras3.backends.{self.name}.loop")

    @property
    def distribute(self):
        """backends/<name>/distribute.py: data_parallel(cfg, loop) on the framework's own engine."""
        return importlib.import_module(f"mnist_keras3.backends.{self.name}.distribute")


def active():
    """The Backend of the keras already imported (a library function called after an entry point
    activated one, e.g. the web app describing its model)."""
    import keras

    name = keras.backend.backend()
    return Backend(name, keras, importlib.import_module(f"mnist_keras3.backends.{name}"))


def describe(name=None):
    """Backend, versions and device of the keras already imported (`name`, if given, must be it)."""
    backend = active()
    if name is not None and name != backend.name:
        raise RuntimeError(f"keras runs the {backend.name} backend, not {name}")
    return backend.describe()


def backend_module(name):
    """backends/<name>/__init__.py without activating it: only its static facts (export_modules),
    for a command that compares backends before choosing one (export). Imports that framework."""
    return importlib.import_module(f"mnist_keras3.backends.{name}")
