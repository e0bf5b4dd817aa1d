"""The real CLI in a subprocess on real MNIST, with small step caps."""

import csv
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from conftest import BACKEND, REPO

pytestmark = pytest.mark.e2e


def only_run(out_dir):
    runs = [p for p in out_dir.iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


def test_train_cli_learns_and_writes_a_complete_run(cli, mnist_dir, tmp_path, keras, device):
    out = cli("train", "--epochs", 2, "--max-steps-per-epoch", 150, "--batch-size", 64,
              "--output-dir", tmp_path, "--data-dir", mnist_dir)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"backend {BACKEND}" in out.stdout and f"device {device}" in out.stdout

    run = only_run(tmp_path)
    assert run.name.endswith(f"-{BACKEND}-tutorial")
    metrics = json.loads((run / "metrics.json").read_text())
    # 300 steps of batch 64 is ~1/3 of an epoch: far above chance (10%), well short of converged.
    assert metrics["test"]["accuracy"] > 0.80, metrics["test"]
    assert metrics["backend"] == BACKEND and metrics["keras_version"] == keras.__version__
    assert metrics["parameters"]["total"] == 1198
    assert len(metrics["history"]["loss"]) == 2 and metrics["train_samples_per_second"] > 0
    assert metrics["device"] == device
    # Shareable: the run folder and --output-dir relative to the working directory, not absolute.
    assert not os.path.isabs(metrics["run_dir"]) and (Path.cwd() / metrics["run_dir"]).resolve() == run.resolve()
    assert not os.path.isabs(metrics["config"]["output_dir"]) and not os.path.isabs(metrics["config"]["data_dir"])

    cfg = tomllib.loads((run / "config.toml").read_text())
    assert cfg["backend"] == BACKEND and cfg["epochs"] == 2 and cfg["batch_size"] == 64
    rows = list(csv.DictReader((run / "history.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"] and float(rows[1]["val_accuracy"]) > 0.8

    model = keras.saving.load_model(run / "model.keras")
    assert model.count_params() == 1198
    assert not list(run.glob(".*tmp*")), "temporary files left behind"


def test_dry_run_bn_model_and_config_file(cli, mnist_dir, tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'model = "tutorial-bn"\nbatch_size = 64\noutput_dir = "{tmp_path / "out"}"\n')
    out = cli("train", "--config", cfg, "--dry-run", "--data-dir", mnist_dir, "--tensorboard", "--early-stopping", 3)
    assert out.returncode == 0, out.stderr[-3000:]
    run = only_run(tmp_path / "out")
    metrics = json.loads((run / "metrics.json").read_text())
    assert "early stopping (patience 3): ran every epoch; the model keeps epoch 1's weights" in out.stdout
    assert metrics["status"] == "complete" and metrics["early_stopping"]["kept_epoch"] == 1
    for part in ("train", "validation"):  # read back in tests/test_callbacks.py
        assert list((run / "tensorboard" / part).glob("events.out.tfevents.*")), part
    assert metrics["model"] == "tutorial-bn"
    assert metrics["parameters"] == {"total": 2190, "trainable": 2174, "non_trainable": 16}
    assert metrics["config"]["epochs"] == 1 and metrics["config"]["max_steps_per_epoch"] == 5


def validation_loss(model, x_val, y_val):
    """Mean cross-entropy of the probability model on the validation split, in float64."""
    import numpy as np

    probs = np.asarray(model.predict(x_val, batch_size=1000, verbose=0), dtype=np.float64)
    return float(-np.mean(np.log(np.maximum(probs[np.arange(len(y_val)), y_val.argmax(1)], 1e-12))))


def test_early_stopping_keeps_the_best_epoch_and_the_run_is_finished(cli, mnist_dir, tmp_path, keras):
    # An lr of 0.1 makes the tiny CNN stall near chance after the first steps, so val_loss stops
    # improving within a few epochs (under torch: epoch 2 is worse than epoch 1). Up to 15 epochs of 5
    # steps: in one CI run under tensorflow val_loss improved 6 epochs running.
    out = cli("train", "--lr", 0.1, "--early-stopping", 1, "--epochs", 15, "--max-steps-per-epoch", 5,
              "--batch-size", 64, "--validation-split", 0.1, "--output-dir", tmp_path, "--data-dir", mnist_dir)
    assert out.returncode == 0, out.stderr[-3000:]
    run = only_run(tmp_path)
    metrics = json.loads((run / "metrics.json").read_text())
    early, val_losses = metrics["early_stopping"], metrics["history"]["val_loss"]
    assert metrics["status"] == "early-stopped", (metrics["status"], val_losses)
    assert early["stopped_early"] is True and early["patience"] == 1
    done = early["epochs_completed"]
    assert done == len(val_losses) < 15
    best = min(range(done), key=val_losses.__getitem__)
    assert early["kept_epoch"] == best + 1 and early["kept_val_loss"] == val_losses[best]
    assert done == best + 2  # patience 1: stopped at the first epoch that did not improve
    assert (f"early stopping (patience 1): val_loss stopped improving, stopped after epoch {done}; "
            f"the model keeps epoch {best + 1}'s weights (val_loss {val_losses[best]:.4f})") in out.stdout

    # model.keras holds the kept epoch's weights; checkpoint.keras the last epoch's (what --resume reads).
    from mnist_keras3 import data

    ds = data.load("mnist", mnist_dir)
    _, (x_val, y_val) = data.split_validation(ds.x_train, ds.y_train, 0.1)
    kept = validation_loss(keras.saving.load_model(run / "model.keras"), x_val, y_val)
    assert kept == pytest.approx(val_losses[best], rel=1e-4)
    last = validation_loss(keras.saving.load_model(run / "checkpoint.keras"), x_val, y_val)
    assert last == pytest.approx(val_losses[-1], rel=1e-4) and last > kept

    # Finished: --resume refuses in one line rather than train on and replace model.keras.
    model_bytes = (run / "model.keras").read_bytes()
    again = cli("train", "--resume", run, "--data-dir", mnist_dir)
    assert again.returncode == 2, again.stderr[-2000:]
    assert "Traceback" not in again.stderr
    assert again.stderr.strip().splitlines()[-1] == (
        f"error: Expected a run that stopped before its last epoch. Received: {run}, which early stopping "
        f"finished after epoch {done} (its model.keras keeps epoch {best + 1}). Start a new run to train more.")
    assert (run / "model.keras").read_bytes() == model_bytes


@pytest.mark.once(reason="the CLI wrapper, not the backend")
def test_debug_shows_the_traceback_of_an_error(cli, tmp_path):
    plain = cli("train", "--resume", tmp_path)
    debug = cli("train", "--resume", tmp_path, "--debug")
    message = f"{tmp_path} is not a run folder (no config.toml). Pass a folder made by train."
    assert plain.returncode == 2 and plain.stderr.strip() == f"error: {message}"
    assert debug.returncode == 1, debug.stderr[-2000:]  # the exception escapes: Python's own exit code
    assert "Traceback (most recent call last)" in debug.stderr and "error: " not in debug.stderr
    assert debug.stderr.strip().splitlines()[-1] == f"mnist_keras3.errors.UsageError: {message}"
    assert "resolve_config" in debug.stderr  # where it was raised


@pytest.mark.once(reason="the CLI wrapper, not the backend")
def test_the_console_script_trains(mnist_dir, tmp_path):
    script = Path(sys.executable).parent / "mnist-keras3-train"
    if not script.is_file():
        pytest.skip(f"the console script is not installed at {script} (pip install -e .)")
    # PYTHONPATH: the script's `import mnist_keras3` finds this checkout, whatever install made the script.
    env = {**os.environ, "KERAS_BACKEND": BACKEND, "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    helped = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120, env=env)
    assert helped.returncode == 0 and "--resume RUN_DIR" in helped.stdout and "--early-stopping" in helped.stdout
    done = subprocess.run([str(script), "--dry-run", "--output-dir", str(tmp_path), "--data-dir", str(mnist_dir)],
                          capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((only_run(tmp_path) / "metrics.json").read_text())
    assert metrics["status"] == "complete" and metrics["backend"] == BACKEND
    assert metrics["config"]["epochs"] == 1 and metrics["config"]["max_steps_per_epoch"] == 5
