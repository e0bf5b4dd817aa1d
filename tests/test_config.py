import math

import pytest

from mnist_keras3.config import TrainConfig, build_config, load_toml
from mnist_keras3.errors import UsageError


def write(tmp_path, text):
    p = tmp_path / "c.toml"
    p.write_text(text)
    return p


def test_defaults_reproduce_the_tutorial():
    c = TrainConfig().validate()
    assert (c.model, c.epochs, c.batch_size, c.lr, c.optimizer) == ("tutorial", 10, 32, 1e-3, "adam")


def test_file_then_flags(tmp_path):
    p = write(tmp_path, 'backend = "jax"\nepochs = 3\nbatch_size = 64\nlr = 1\n')
    c = build_config(p, {"epochs": 5, "batch_size": None})
    assert (c.backend, c.epochs, c.batch_size, c.lr) == ("jax", 5, 64, 1.0)


def test_round_trip_through_toml(tmp_path):
    c = TrainConfig(epochs=2, data_dir="/x").validate()
    assert build_config(write(tmp_path, c.to_toml())) == c


@pytest.mark.parametrize("text,match", [
    ("epoch = 3\n", r"Unknown key 'epoch'.*Valid keys: backend, model, epochs"),
    ('epochs = "3"\n', r"Expected epochs to be of type int. Received: epochs='3'"),
    ("epochs = 0\n", r"Invalid value for epochs: 0"),
    ("batch_size = -1\n", r"Invalid value for batch_size: -1"),
    ("lr = nan\n", r"Invalid value for lr: nan"),
    ("lr = -0.1\n", r"Invalid value for lr"),
    ("validation_split = 1.0\n", r"Invalid value for validation_split"),
    ("epochs = true\n", r"Expected epochs to be of type int"),
    ('optimizer = "adamm"\n', r"Expected optimizer among adam.*Received: optimizer='adamm'"),
    ("epochs = [\n", r"is not valid TOML"),
])
def test_bad_config_names_the_key(tmp_path, text, match):
    with pytest.raises(UsageError, match=match):
        build_config(write(tmp_path, text))


def test_missing_config_file(tmp_path):
    with pytest.raises(UsageError, match="Config file not found"):
        load_toml(tmp_path / "nope.toml")


def test_bad_flag_value_is_usage_error():
    with pytest.raises(UsageError, match="lr"):
        build_config(None, {"lr": math.inf})


def test_cli_print_config_shows_resolved_values(cli, tmp_path):
    p = write(tmp_path, 'backend = "jax"\nepochs = 3\n')
    out = cli("train", "--config", p, "--backend", "tensorflow", "--batch-size", "64", "--print-config")
    assert out.returncode == 0, out.stderr
    assert 'backend = "tensorflow"' in out.stdout and "epochs = 3" in out.stdout and "batch_size = 64" in out.stdout


def test_cli_bad_config_exit_2_one_line(cli, tmp_path):
    out = cli("train", "--config", write(tmp_path, "epochs = 0\n"))
    assert out.returncode == 2 and out.stderr.strip().count("\n") == 0
    assert "epochs" in out.stderr and "Traceback" not in out.stderr
