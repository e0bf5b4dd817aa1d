"""`--loop auto`, the default: the backend's native loop where it supports the run, else fit, with
the reason said; and the private framework APIs the native loops rely on, checked loudly."""

import json

import pytest
from conftest import BACKEND

from mnist_keras3 import backends
from mnist_keras3.backends import loop
from mnist_keras3.config import TrainConfig
from mnist_keras3.errors import UsageError


def test_auto_is_the_default_and_picks_the_native_loop(keras):
    cfg = TrainConfig(backend=BACKEND)
    assert cfg.loop == "auto"
    assert loop.choose(cfg, backends.active().loop) == ("native", None)
    assert loop.choose(cfg.replace(loop="fit"), backends.active().loop) == ("fit", None)
    assert loop.choose(cfg.replace(loop="native"), backends.active().loop) == ("native", None)


def test_private_framework_apis_the_native_loop_uses_are_there(keras):
    """Fails loudly, naming what is missing, when a framework upgrade removes or changes a private
    API the native loop relies on (torch's fused Adam and jit graph passes, jax's jaxpr internals,
    Keras's optimizer internals). `--loop auto` then trains with fit instead (next test)."""
    problem = backends.active().loop.private_api_problem()
    assert problem is None, f"the {BACKEND} native loop cannot run on these versions: {problem}"


def test_a_missing_private_api_falls_back_to_fit_with_the_reason(keras, monkeypatch):
    module = backends.active().loop
    monkeypatch.setattr(module, "private_api_problem", lambda: "framework 9.9 lacks some._private_api")
    cfg = TrainConfig(backend=BACKEND)
    ran, why = loop.choose(cfg, backends.active().loop)
    assert ran == "fit" and "some._private_api" in why and "native loop is off" in why
    with pytest.raises(UsageError, match="Expected settings the native loop supports for --loop native"):
        loop.choose(cfg.replace(loop="native"), backends.active().loop)


def test_data_parallel_falls_back_to_fit_and_native_says_to_use_fit(keras):
    cfg = TrainConfig(backend=BACKEND, distribute="data-parallel")
    ran, why = loop.choose(cfg, backends.active().loop)
    if BACKEND == "torch":  # DDP wraps the native loop's step (tests/test_distribute.py)
        assert (ran, why) == ("native", None)
        return
    assert ran == "fit" and why == (f"the {BACKEND} native loop does not run --distribute data-parallel; "
                                    "Keras's fit does")
    with pytest.raises(UsageError, match="Use --loop fit"):
        loop.choose(cfg.replace(loop="native"), backends.active().loop)


@pytest.mark.e2e
def test_default_run_says_which_loop_ran_and_records_it(cli, mnist_dir, tmp_path):
    out = cli("train", "--epochs", 1, "--max-steps-per-epoch", 20, "--output-dir", tmp_path, "--data-dir", mnist_dir)
    assert out.returncode == 0, out.stderr[-3000:]
    first = out.stdout.splitlines()[0]
    assert first.startswith(f"backend {BACKEND}") and first.endswith("| loop native (auto)"), first
    (run,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    metrics = json.loads((run / "metrics.json").read_text())
    step = metrics["loop"].pop("step")  # how the native loop ran its step (Trainer.step_kind)
    assert metrics["loop"] == {"requested": "auto", "ran": "native", "fallback_reason": None}
    # On the CPU "auto" traces torch's step (a GPU compiles it); jax scans its steps, XLA:CPU-tuned.
    assert step == {"torch": "torch.jit.trace; fused kernel Adam",
                    "jax": "jax.jit, lax.scan of several steps a call, XLA:CPU kernel rewrites; Keras's Adam",
                    "tensorflow": "tf.function, several steps a call; fused kernel Adam"}[BACKEND], step


@pytest.mark.e2e
@pytest.mark.jax
def test_auto_falls_back_to_fit_for_data_parallel_and_says_why(cli, mnist_dir, tmp_path):
    out = cli("train", "--epochs", 1, "--max-steps-per-epoch", 10, "--batch-size", 64, "--distribute",
              "data-parallel", "--devices", 2, "--output-dir", tmp_path, "--data-dir", mnist_dir)
    assert out.returncode == 0, out.stderr[-3000:]
    first = out.stdout.splitlines()[0]
    assert first.endswith("| loop fit (auto: the jax native loop does not run --distribute data-parallel; "
                          "Keras's fit does)")
    (run,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    loop = json.loads((run / "metrics.json").read_text())["loop"]
    assert loop["ran"] == "fit" and loop["step"].startswith("Keras's fit (jit_compile="), loop
