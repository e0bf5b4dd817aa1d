import subprocess
import sys

import pytest
from conftest import BACKEND

from mnist_keras3 import backends
from mnist_keras3.errors import UsageError


def test_flag_beats_config_beats_env():
    env = {"KERAS_BACKEND": "tensorflow"}
    assert backends.resolve_backend("jax", "torch", env) == ("jax", "--backend")
    assert backends.resolve_backend(None, "torch", env) == ("torch", "config file")
    assert backends.resolve_backend(None, None, env) == ("tensorflow", "KERAS_BACKEND")


def test_default_is_first_installed_of_torch_jax_tensorflow(monkeypatch):
    monkeypatch.setattr(backends, "is_installed", lambda name: name in ("tensorflow", "jax"))
    assert backends.resolve_backend(None, None, {}) == ("jax", "default (first installed)")
    monkeypatch.setattr(backends, "is_installed", lambda name: False)
    with pytest.raises(UsageError, match=r'pip install "mnist-keras3\[torch\]"'):
        backends.resolve_backend(None, None, {})


def test_unknown_backend_names_the_valid_ones():
    with pytest.raises(UsageError, match="torch, jax, tensorflow.*backend='thenao'.*from --backend"):
        backends.resolve_backend("thenao", None, {})
    with pytest.raises(UsageError, match="KERAS_BACKEND"):
        backends.resolve_backend(None, None, {"KERAS_BACKEND": "numpyy"})


def test_backend_not_installed_names_the_extra(monkeypatch):
    monkeypatch.setattr(backends, "is_installed", lambda name: name == "torch")
    with pytest.raises(UsageError, match=r'The jax backend is not installed.*pip install "mnist-keras3\[jax\]"'):
        backends.activate("jax")


def activate_after_keras(other):
    """A process that imported keras under the session's backend, then activates `other`."""
    code = (
        f"import os, sys; os.environ['KERAS_BACKEND'] = {BACKEND!r}; import keras\n"
        "from mnist_keras3 import backends\n"
        "from mnist_keras3.errors import UsageError\n"
        f"try:\n    backends.activate({other!r})\nexcept UsageError as e:\n    print(e); sys.exit(3)\n"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


@pytest.mark.cross
def test_keras_already_imported_under_another_backend_fails_loudly():
    other = next(b for b in backends.BACKENDS if b != BACKEND)  # installed: the cross env has all three
    out = activate_after_keras(other)
    assert out.returncode == 3, out.stderr
    assert f"already imported with the {BACKEND} backend" in out.stdout
    assert other in out.stdout


def test_another_backend_that_is_not_installed_is_a_clean_error_after_keras():
    other = next((b for b in backends.BACKENDS if b != BACKEND and not backends.is_installed(b)), None)
    if other is None:
        pytest.skip("every backend is installed here: the one-backend tox envs run this")
    out = activate_after_keras(other)  # the not-installed check comes first: a clean error naming the extra
    assert out.returncode == 3 and f"mnist-keras3[{other}]" in out.stdout, out.stdout + out.stderr


def test_importing_the_package_does_not_import_keras():
    code = ("import sys, mnist_keras3, mnist_keras3.train, mnist_keras3.config, mnist_keras3.backends\n"
            "print('keras' in sys.modules, [m for m in ('torch', 'jax', 'tensorflow') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False []", out.stderr


def test_cli_unknown_backend_is_one_line_and_exit_2(cli):
    out = cli("train", "--backend", "mxnet")
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Expected a backend among torch, jax, tensorflow" in lines[0]
    assert "Traceback" not in out.stderr


def test_describe_reports_versions_and_device(keras):
    info = backends.describe()
    assert info["backend"] == keras.backend.backend()
    assert info["keras_version"] == keras.__version__
    assert info["backend_version"] and info["device"]
