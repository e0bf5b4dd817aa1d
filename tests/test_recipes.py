"""Every recipe in configs/ trains a few steps under the session's backend (tox runs all three)
with the loop a user gets by default; the full recipes are timed by the benchmark, not in CI.

In process, on 2,000 real training images: the train CLI's own path for a config file (build_config,
build_compiled, fit_model, the loop `auto` picks) without a subprocess and a test-set evaluation per
recipe; tests/test_train_e2e.py and test_loops.py run the CLI itself."""

import numpy as np
import pytest
from conftest import BACKEND, REPO

RECIPES = sorted(p.name for p in (REPO / "configs").glob("*.toml"))


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_trains_a_few_steps(keras, mnist, recipe):
    from mnist_keras3 import backends, data, models
    from mnist_keras3.backends import loop
    from mnist_keras3.callbacks import Reseed
    from mnist_keras3.config import build_config
    from mnist_keras3.training import build_compiled, fit_model

    cfg = build_config(REPO / "configs" / recipe,
                       {"backend": BACKEND, "epochs": 1, "max_steps_per_epoch": 3, "validation_split": 0.0})
    assert loop.choose(cfg, backends.active().loop) == ("native", None)  # the loop a user gets: the backend's own
    (x_train, y_train), _ = mnist
    x, y = data.preprocess(x_train[:2000], y_train[:2000])
    model = build_compiled(cfg)
    before = [w.copy() for w in model.get_weights()]
    trainer = backends.active().loop.Trainer
    seen, real = [], trainer.run

    def spy(self, batches, *args):  # what the native loop trained on, and its loss
        out = real(self, batches, *args)
        seen.append((float(out[0]), int(out[1]), out[2]))
        return out

    trainer.run = spy
    try:
        fit_model(model, cfg, (x, y), None, [Reseed(cfg.seed)])
    finally:
        trainer.run = real
    assert sum(s[2] for s in seen) == 3 * cfg.batch_size, seen  # 3 steps of the recipe's batch size
    assert all(np.isfinite(s[0]) and s[0] > 0 for s in seen), seen
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))
    assert models.parameter_counts(model)["total"] > 0 and model.output_shape == (None, 10)
