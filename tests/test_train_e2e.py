"""The real CLI in a subprocess on real MNIST, with small step caps."""

import csv
import json
import tomllib

import pytest
from conftest import BACKEND

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
