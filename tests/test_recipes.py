"""Every recipe in configs/ trains a few steps under the session's backend (tox runs all three)
with the loop a user gets by default; the full recipes are timed by the benchmark, not in CI."""

import json

import pytest
from conftest import BACKEND, REPO

RECIPES = sorted(p.name for p in (REPO / "configs").glob("*.toml"))


@pytest.mark.e2e
@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_trains_a_few_steps(cli, mnist_dir, tmp_path, recipe):
    out = cli("train", "--config", REPO / "configs" / recipe, "--epochs", 1, "--max-steps-per-epoch", 3,
              "--eval-batch-size", 2000, "--output-dir", tmp_path, "--data-dir", mnist_dir)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.splitlines()[0].endswith("| loop native (auto)"), out.stdout.splitlines()[0]
    (run,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["backend"] == BACKEND and metrics["loop"]["ran"] == "native"
    assert len(metrics["history"]["loss"]) == 1 and metrics["history"]["loss"][0] > 0
    assert 0.0 <= metrics["test"]["accuracy"] <= 1.0 and (run / "model.keras").is_file()
