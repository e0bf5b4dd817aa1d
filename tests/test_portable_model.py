"""model.keras is portable: a model trained under torch loads where torch is not installed.

Found by the parity report's first tox run (one backend per env): Keras names the torch-only
optimizer subclass in model.keras. runs.save_model names the public class instead.
"""

import os
import subprocess
import sys
import zipfile

import pytest

from mnist_keras3 import backends


def zipped_config(path):
    with zipfile.ZipFile(path) as zf:
        return zf.read("config.json").decode()


def test_only_torch_only_optimizer_modules_are_renamed():
    from mnist_keras3 import runs

    config = {"compile_config": {"optimizer": {"module": "keras.src.backend.torch.optimizers.torch_adam",
                                               "class_name": "Adam", "config": {"learning_rate": 0.001}},
                                 "loss": {"module": "keras.losses", "class_name": "CategoricalCrossentropy"}},
              "layers": [{"module": "keras.layers", "class_name": "Dense"}]}
    fixed = runs._public_optimizers(config)
    assert fixed["compile_config"]["optimizer"] == {"module": "keras.optimizers", "class_name": "Adam",
                                                    "config": {"learning_rate": 0.001}}
    assert fixed["compile_config"]["loss"] == config["compile_config"]["loss"] and fixed["layers"] == config["layers"]


@pytest.mark.torch
@pytest.mark.cross
def test_a_model_trained_under_torch_loads_where_torch_is_not_installed(keras, small_batch, tmp_path):
    """Plain model.save() fails to load without torch; runs.save_model loads, optimizer state kept."""
    from mnist_keras3 import models, runs

    other = next((b for b in ("jax", "tensorflow") if backends.is_installed(b)), None)
    if other is None:
        pytest.skip("needs jax or tensorflow installed beside torch")
    model = models.build_model("tutorial")
    model.compile(optimizer="adam", loss="categorical_crossentropy")
    model.fit(*small_batch, batch_size=32, epochs=1, verbose=0)  # 2 steps: the optimizer has state
    plain, portable = tmp_path / "plain.keras", tmp_path / "portable.keras"
    model.save(plain)
    runs.save_model(model, portable)
    assert "keras.src.backend.torch.optimizers" in zipped_config(plain)
    assert "keras.src.backend.torch" not in zipped_config(portable)

    # As if torch were not installed: `import torch` fails in the loading process.
    script = ("import sys; sys.modules['torch'] = None; import keras; "
              "print(int(keras.saving.load_model(sys.argv[1]).optimizer.iterations))")

    def load_without_torch(path):
        return subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True,
                              timeout=300, env={**os.environ, "KERAS_BACKEND": other})

    failed = load_without_torch(plain)
    assert failed.returncode != 0 and "torch_adam cannot be imported" in failed.stderr
    loaded = load_without_torch(portable)
    assert loaded.returncode == 0 and loaded.stdout.split()[-1] == "2", loaded.stderr[-2000:]
    again = keras.saving.load_model(portable)  # under torch: the torch optimizer, its state kept
    assert type(again.optimizer) is type(model.optimizer) and int(again.optimizer.iterations) == 2
