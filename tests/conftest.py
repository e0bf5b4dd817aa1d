"""Shared test set-up: one backend per session, real MNIST found as train finds it, then offline.

The backend is chosen here the way an entry point chooses it (KERAS_BACKEND, else the first
installed) before any test imports keras. Tests marked with another backend's name are skipped
with the tox env that runs them; tox gives each backend its own env.

MNIST, once per session (find_mnist): the folder MNIST_KERAS3_DATA names, in any layout train
accepts; else train's cache; else a verified download into that cache (not under
MNIST_KERAS3_OFFLINE=1). The tests then read it as a folder of the four gzipped IDX files, named by
MNIST_KERAS3_DATA for their subprocesses, and never touch the network or the user's cache.
"""

import atexit
import gzip
import importlib.abc
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# On a GPU this process holds the device (the `keras` fixture) while CLI subprocesses start beside
# it: jax and tensorflow must not take most of its memory up front (they inherit these too).
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")

from mnist_keras3 import backends  # noqa: E402  (never imports keras)
from mnist_keras3.data import mnist as mnist_data  # noqa: E402  (never imports keras)
from mnist_keras3.errors import DataError  # noqa: E402

BACKEND, _ = backends.resolve_backend()
os.environ["KERAS_BACKEND"] = BACKEND

# Fetches through the loader in a child process: its Keras source imports keras, which this process
# must not import before a test asks for it. DataError (nothing found, nothing fetched) is one line.
FETCH = ("import sys\nfrom mnist_keras3.data import mnist\nfrom mnist_keras3.errors import DataError\n"
         "try:\n    mnist.load_mnist(verbose=True)\nexcept DataError as e:\n    sys.exit(str(e))\n")


def gz_copy(splits):
    """The verified arrays as the four gzipped IDX files, in a folder removed when the session ends."""
    folder = Path(tempfile.mkdtemp(prefix="mnist-keras3-mnist-"))
    atexit.register(shutil.rmtree, folder, True)
    (x_train, y_train), (x_test, y_test) = splits
    for name, array in zip(mnist_data.FILES, (x_train, y_train, x_test, y_test), strict=True):
        (folder / f"{name}.gz").write_bytes(gzip.compress(mnist_data.idx_bytes(array), compresslevel=1, mtime=0))
    return folder


def find_mnist():
    """(a folder holding the four gzipped IDX files, where it came from) or (None, why not)."""
    named = os.environ.get(mnist_data.ENV_DATA)
    if named:  # as train: a folder named explicitly must be good, and nothing else is tried
        if all((Path(named) / f"{n}.gz").is_file() for n in mnist_data.FILES):
            return Path(named), f"{mnist_data.ENV_DATA}={named}"  # verified where read
        try:
            return gz_copy(mnist_data.read_folder(named)), f"{mnist_data.ENV_DATA}={named}"
        except DataError as e:
            return None, f"MNIST from {mnist_data.ENV_DATA}={named}: {e}"
    cached, how = mnist_data.cache_dir() / "mnist.npz", "the cache"
    if not cached.is_file():
        done = subprocess.run([sys.executable, "-c", FETCH], capture_output=True, text=True, timeout=900)
        if done.returncode:
            return None, (done.stderr.strip().splitlines() or [f"exit {done.returncode}"])[-1]
        how = "a verified download into the cache"
    try:
        return gz_copy(mnist_data.read_npz(cached)), f"{how} {cached}"
    except DataError as e:
        return None, str(e)


MNIST_DIR, MNIST_SOURCE = find_mnist()
if MNIST_DIR is not None:
    os.environ[mnist_data.ENV_DATA] = str(MNIST_DIR)  # the tests' subprocesses read this folder
os.environ[mnist_data.ENV_OFFLINE] = "1"  # from here on, tests never touch the network
os.environ[mnist_data.ENV_CACHE] = tempfile.mkdtemp(prefix="mnist-keras3-cache-")  # nor the user's cache


def load_script(name):
    """scripts/<name>.py as a module: the tools there are scripts, not part of the package."""
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pytest_report_header(config):
    mnist = f"{MNIST_DIR} (from {MNIST_SOURCE})" if MNIST_DIR else f"not found: {MNIST_SOURCE}"
    return f"keras backend: {BACKEND} (installed: {', '.join(backends.installed_backends())}); MNIST: {mnist}"


CROSS_SKIP = "needs torch, jax and tensorflow installed together: runs in `tox -e cross` (pytest -m cross)"


ONCE_ENV = os.environ.get("MNIST_KERAS3_ONCE_ENV")  # tox: the one env that runs `once` tests (torch)


def _once_reason(item):
    """The reason= of a test's `once` marker: why a test that runs keras is the same under every backend."""
    marker = item.get_closest_marker("once")
    return marker.kwargs.get("reason") if marker else None


def pytest_collection_modifyitems(config, items):
    everything = len(backends.installed_backends()) == len(backends.BACKENDS)
    for item in items:
        runs_keras = "keras" in item.fixturenames or "e2e" in item.keywords
        if "once" in item.keywords and runs_keras and not _once_reason(item):
            raise pytest.UsageError(f"Expected @pytest.mark.once(reason=...) on a test that runs keras (the keras "
                                    f"fixture, or a CLI subprocess), saying why no backend changes its outcome. "
                                    f"Received: {item.nodeid} marked once without a reason")
        if "once" in item.keywords and ONCE_ENV and ONCE_ENV != BACKEND:
            item.add_marker(pytest.mark.skip(reason=f"the same under every backend: runs once, in `tox -e {ONCE_ENV}`"))
        if "cross" in item.keywords and not everything:
            item.add_marker(pytest.mark.skip(reason=CROSS_SKIP))
        for name in backends.BACKENDS:
            if name in item.keywords and name != BACKEND:
                item.add_marker(pytest.mark.skip(reason=f"needs the {name} backend: runs in `tox -e {name}`"))


class _NoKeras(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "keras" or name.startswith("keras."):
            raise ImportError(f"Expected a test marked once (without a reason) never to import keras. Received: "
                              f"an import of {name}")
        return None


@pytest.fixture(autouse=True)
def _plain_once_tests_never_import_keras(request):
    """A test marked plain `once` runs with keras out of sys.modules and its import refused: a test
    that imports keras, directly or through a package module not loaded before it, fails."""
    if "once" not in request.keywords or _once_reason(request.node):
        yield
        return
    hidden = {name: sys.modules.pop(name) for name in list(sys.modules) if name == "keras" or name.startswith("keras.")}
    finder = _NoKeras()
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)
        sys.modules.update(hidden)


@pytest.fixture(scope="session")
def mnist_dir():
    """A folder of the four gzipped IDX files of real MNIST (find_mnist)."""
    if MNIST_DIR is None:
        if os.environ.get("CI"):
            pytest.fail(f"real MNIST is missing; CI must provide it (MNIST_KERAS3_DATA): {MNIST_SOURCE}")
        pytest.skip(f"real MNIST not found: {MNIST_SOURCE}")
    return MNIST_DIR


@pytest.fixture(scope="session")
def mnist(mnist_dir):
    """The real MNIST arrays, verified: (x_train, y_train), (x_test, y_test), uint8."""
    from mnist_keras3 import data

    return data.mnist.read_folder(mnist_dir)


@pytest.fixture(scope="session")
def keras():
    """keras under the session's backend (activated the way entry points do it)."""
    return backends.activate(BACKEND).keras


@pytest.fixture(scope="session")
def device(keras):
    """The device the session's backend reports ("CPU", or a GPU's name): what a subprocess under
    the same backend reports too, so the suite passes on a GPU machine (scripts/gpu_check.sh)."""
    return backends.describe(BACKEND)["device"]


# The data-parallel tests are about each framework's engine over several CPU devices or processes: on
# a GPU machine too their subprocesses see no GPU (one GPU would be fewer devices than they need; the
# GPU acceptance run, scripts/gpu_check.py, trains data-parallel over the GPUs there are).
CPU_ONLY = {"CUDA_VISIBLE_DEVICES": "", "JAX_PLATFORMS": "cpu"}


def replay_tolerance(device):
    """(relative tolerance of losses, absolute one of an accuracy) within which a resumed run replays
    an uninterrupted one on `device`. The CPU kernels are deterministic: the same figures to float32
    rounding. A GPU's are not: cuDNN's convolution gradients and XLA's reductions add in an order
    that varies from run to run, a last-bit difference a step that grows over an epoch's steps; the
    replay then agrees to about 1e-3, far from the 1e-1-sized change a lost optimizer state or a
    different shuffle makes (tests/test_faults.py)."""
    return (1e-5, 1e-4) if device == "CPU" else (1e-3, 2e-3)


@pytest.fixture
def small_batch(mnist):
    """64 real test images, preprocessed, with one-hot labels."""
    from mnist_keras3 import data

    (_, _), (x_test, y_test) = mnist
    return data.preprocess(x_test[:64], y_test[:64])


def run_module(module, *args, env=None, timeout=600, cwd=None):
    """Run `python -m mnist_keras3.<module> args...` in a subprocess, as a user would."""
    full_env = {**os.environ, "KERAS_BACKEND": BACKEND, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", f"mnist_keras3.{module}", *map(str, args)],
        capture_output=True, text=True, timeout=timeout, env=full_env, cwd=cwd,
    )


@pytest.fixture
def cli():
    return run_module


_TRAINED_RUN = {}


def train_once(tmp_path_factory, mnist_dir):
    """The run folder of one short run of the train CLI (300 steps of 64: about 0.9 test accuracy),
    made once per session and shared by every test that only needs a trained run (tools, serving)."""
    if "run" not in _TRAINED_RUN:
        out = tmp_path_factory.mktemp("trained-run")
        done = run_module("train", "--epochs", 1, "--max-steps-per-epoch", 300, "--batch-size", 64,
                          "--output-dir", out, "--data-dir", mnist_dir)
        assert done.returncode == 0, done.stderr[-3000:]
        (run_dir,) = [p for p in out.iterdir() if p.is_dir()]
        _TRAINED_RUN["run"] = run_dir
    return _TRAINED_RUN["run"]


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, mnist_dir):
    """One short trained run for the session (see train_once); tests may add files beside its
    model (evaluate, export) but must not change model.keras, config.toml or metrics.json."""
    return train_once(tmp_path_factory, mnist_dir)


@pytest.fixture
def rng():
    return np.random.default_rng(0)
