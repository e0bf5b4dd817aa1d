"""Shared test set-up: one backend per session, real MNIST from shared/, never the network.

The backend is chosen here the way an entry point chooses it (KERAS_BACKEND, else the first
installed) before any test imports keras. Tests marked with another backend's name are skipped
with the tox env that runs them; tox gives each backend its own env.
"""

import importlib.abc
import importlib.util
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
MNIST_DIR = Path(os.environ.get("MNIST_KERAS3_DATA") or REPO.parent / "shared" / "datasets" / "mnist")

os.environ["MNIST_KERAS3_OFFLINE"] = "1"  # tests never touch the network
os.environ.setdefault("MNIST_KERAS3_CACHE", tempfile.mkdtemp(prefix="mnist-keras3-cache-"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from mnist_keras3 import backends  # noqa: E402  (never imports keras)

BACKEND, _ = backends.resolve_backend()
os.environ["KERAS_BACKEND"] = BACKEND


def load_script(name):
    """scripts/<name>.py as a module: the tools there are scripts, not part of the package."""
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pytest_report_header(config):
    return f"keras backend: {BACKEND} (installed: {', '.join(backends.installed_backends())}); MNIST: {MNIST_DIR}"


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
    if not (MNIST_DIR / "train-images-idx3-ubyte.gz").is_file():
        if os.environ.get("CI"):
            pytest.fail(f"real MNIST is missing at {MNIST_DIR}; CI must provide it (MNIST_KERAS3_DATA)")
        pytest.skip(f"real MNIST not found at {MNIST_DIR}; set MNIST_KERAS3_DATA")
    return MNIST_DIR


@pytest.fixture(scope="session")
def mnist(mnist_dir):
    """The real MNIST arrays, verified: (x_train, y_train), (x_test, y_test), uint8."""
    from mnist_keras3 import data

    return data.mnist.read_folder(mnist_dir)


@pytest.fixture(scope="session")
def keras():
    """keras under the session's backend (activated the way entry points do it)."""
    return backends.activate(BACKEND)


@pytest.fixture(scope="session")
def device(keras):
    """The device the session's backend reports ("CPU", or a GPU's name): what a subprocess under
    the same backend reports too, so the suite passes on a GPU machine (scripts/gpu_check.sh)."""
    return backends.describe(BACKEND)["device"]


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
