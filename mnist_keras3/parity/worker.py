"""What one backend's parity subprocess measures; the report (compare.py) compares them.

Import only after the backend is chosen (it imports keras). Two steps, each a subcommand of
`python -m mnist_keras3.parity`:

- worker: the structure of every registered model and its initial weights (seeded; the reference
  backend's are shared in the check), then a training run through
  `python -m mnist_keras3.train` (the one training path), whose weights it also exports as
  model.weights.h5. Writes <out>/<backend>/worker.json.
- check: the shared weights (one backend's model.weights.h5) loaded into the model built from code:
  probabilities on real test images, the loss and gradients of one batch; then every backend's
  model.keras loaded here and its classes on the whole test set; then every registered model (the
  strong one too) with the reference's initial weights, through the same numerics. Writes
  check.json + check.npz.
"""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np

from .. import backends, data, models, runs
from ..errors import TrainingError


def structure_of(model):
    """What must not depend on the backend: parameter counts, layer types and output shapes,
    and every weight's path, shape and trainability."""
    return {
        "parameters": models.parameter_counts(model),
        "layers": [[layer.name, type(layer).__name__, list(layer.output.shape)] for layer in model.layers],
        "weights": [[w.path, list(w.shape), bool(w.trainable)] for w in model.weights],
    }


def all_structures():
    return {name: structure_of(models.build_model(name)) for name in sorted(models.REGISTRY)}


def train_run(backend, train_dir, train_args, timeout=None):
    """Train with `python -m mnist_keras3.train` in a subprocess; return the new run folder."""
    train_dir.mkdir(parents=True, exist_ok=True)
    before = {p.name for p in train_dir.iterdir()}
    cmd = [sys.executable, "-m", "mnist_keras3.train", "--backend", backend, "--output-dir", str(train_dir),
           *train_args]
    print(f"[{backend}] {' '.join(cmd[1:])}", flush=True)
    done = subprocess.run(cmd, env={**os.environ, "PYTHONUNBUFFERED": "1"}, timeout=timeout)
    new = sorted(p for p in train_dir.iterdir() if p.name not in before and p.is_dir())
    if done.returncode != 0 or len(new) != 1 or not (new[0] / runs.MODEL).is_file():
        raise TrainingError(f"training under {backend} failed (exit {done.returncode}); its output is above. "
                            f"Run the printed train command alone to see why.")
    return new[0]


def save_initial_weights(folder, seed):
    """Every registered model as built with `seed`: <folder>/<name>.weights.h5. Untrained weights
    are enough to compare numerics, so models too slow to train in CI are compared too."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    for name in sorted(models.REGISTRY):
        keras.utils.set_random_seed(seed)
        runs.save_weights(models.build_model(name), Path(folder) / f"{name}.weights.h5")


def worker(backend, out, train_args, seed=42, sweep=None):
    """Phase 1 for one backend: structure + initial weights + training + exported weights,
    into out/<backend>/; then one more training run per seed of `sweep` ({seed: train args})."""
    here = Path(out) / backend
    here.mkdir(parents=True, exist_ok=True)
    structures = all_structures()
    save_initial_weights(here / "init", seed)
    run_dir = train_run(backend, here / "train", train_args)
    metrics = runs.read_metrics(run_dir)
    model = keras.saving.load_model(run_dir / runs.MODEL)
    runs.save_weights(model, here / "model.weights.h5")
    record = {
        "backend": backend,
        "info": backends.describe(backend),
        "python": sys.executable,  # the report runs this backend's check with the same interpreter
        "structure": structures,
        "training": {
            "run_dir": os.path.relpath(run_dir, here),
            "model": os.path.relpath(run_dir / runs.MODEL, here),
            "weights": "model.weights.h5",
            "config": metrics["config"],
            "test": metrics["test"],
            "train_seconds": metrics["train_seconds_this_session"],
            "seed_sweep": {str(s): runs.read_metrics(train_run(backend, here / "train", args))["test"]
                           for s, args in (sweep or {}).items()},
        },
    }
    runs.write_json(here / "worker.json", record)
    return record


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def numerics(model_name, weights, x, y, batch):
    """The model built from code with the shared weights: probabilities of x, loss + gradients
    of its first `batch` images (backend-specific autodiff in backends/<name>/)."""
    model = models.build_model(model_name)
    model.load_weights(weights)
    probs = model.predict(x, batch_size=len(x), verbose=0)  # (N, 10)
    loss, grads = backends.active().module.loss_and_grads(model, x[:batch], y[:batch])
    return {"probs": np.asarray(probs, np.float32), "loss": float(loss), "batch": batch,
            "grads": [np.asarray(g, np.float32) for g in grads],
            "grad_names": [w.path for w in model.trainable_weights]}


def predict_classes(model_path, x):
    model = keras.saving.load_model(model_path)
    return np.asarray(model.predict(x, batch_size=1000, verbose=0)).argmax(1).astype(np.int8)  # (N,)


def check(backend, out, sources, weights, data_dir=None, images=1000, batch=128, init_dir=None, only=()):
    """Phase 2 for one backend: numerics on the shared weights; every source's model.keras loaded;
    numerics of every model in init_dir (<name>.weights.h5, from save_initial_weights), or of
    those named in `only`."""
    out = Path(out)
    here = out / backend
    here.mkdir(parents=True, exist_ok=True)
    (_, _), (x_test, y_test) = data.mnist.load_mnist(data_dir)
    x_test, y_test = data.preprocess(x_test, y_test)  # (10000, 28, 28, 1) float32, (10000, 10)

    model_name = runs.read_json(out / sources[0] / "worker.json")["training"]["config"]["model"]
    num = numerics(model_name, weights, x_test[:images], y_test[:images], batch)
    arrays = {"probs": num["probs"], "loss": np.float64(num["loss"])}
    arrays.update({f"grad_{i}": g for i, g in enumerate(num["grads"])})
    load_errors = {}
    for source in sources:
        record = runs.read_json(out / source / "worker.json")
        path = out / source / record["training"]["model"]
        try:
            arrays[f"classes_from_{source}"] = predict_classes(path, x_test)
        except Exception as e:  # any failure to load or run is the finding, not a crash
            load_errors[source] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
    init_models = {}
    for path in sorted(Path(init_dir).glob("*.weights.h5")) if init_dir else ():
        name = path.name[: -len(".weights.h5")]
        if only and name not in only:
            continue
        got = numerics(name, path, x_test[:images], y_test[:images], batch)
        arrays.update({f"init/{name}/probs": got["probs"], f"init/{name}/loss": np.float64(got["loss"])})
        arrays.update({f"init/{name}/grad_{i}": g for i, g in enumerate(got["grads"])})
        init_models[name] = {"grad_names": got["grad_names"], "weights_sha256": sha256(path)}
    runs.write_npz(here / "check.npz", arrays)
    result = {
        "backend": backend,
        "info": backends.describe(backend),
        "python": sys.executable,
        "model": model_name,
        "weights": str(weights),
        "weights_sha256": sha256(weights),
        "images": len(num["probs"]),
        "batch": batch,
        "grad_names": num["grad_names"],
        "sources": list(sources),
        "load_errors": load_errors,
        "init_models": init_models,
    }
    runs.write_json(here / "check.json", result)
    return result

