"""What a trained model knows about its data: the sidecar written beside every .keras file.

    runs/<run>/model.keras        runs/<run>/model.keras.json
    runs/<run>/checkpoint.keras   runs/<run>/checkpoint.keras.json

A sidecar (`<file>.keras.json`, written atomically right after the model) holds:

    dataset        "mnist", "fashion_mnist", "cifar10" or "folder:PATH" (what train --dataset took)
    seed           the run's seed: a folder without train/ and test/ is split by it, so evaluate
                   finds the same test images the run held out
    class_names    one name per output unit, in output order
    input_shape    [H, W, C] the model takes
    channels       C (1 grayscale, 3 RGB)
    preprocessing  "mnist-digit" for models of MNIST digits (a drawn or photographed digit is
                   inverted, boxed to 20x20 and centred by mass, as MNIST was made); "resize" for
                   every other model (the picture is resized and its colour converted, nothing more)

The record beside the file wins; a model without one (a run from before the sidecar, or a copied
model.keras) falls back to its run folder's metrics.json, then to MNIST, what every older model
was. Nothing here imports keras.
"""

from pathlib import Path

from . import runs
from .errors import UsageError

DIGIT_DATASETS = ("mnist",)
MNIST = {"dataset": "mnist", "seed": 0, "class_names": [str(d) for d in range(10)], "input_shape": [28, 28, 1],
         "channels": 1, "preprocessing": "mnist-digit"}


def sidecar(model_path):
    """The record file of a .keras file: its own name plus .json."""
    model_path = Path(model_path)
    return model_path.with_name(model_path.name + ".json")


def make(dataset, class_names, input_shape, seed=0):
    """The record of a model trained on `dataset` (a Dataset's name, as train --dataset took it)."""
    shape = [int(d) for d in input_shape]
    return {"dataset": dataset, "seed": int(seed), "class_names": [str(c) for c in class_names],
            "input_shape": shape, "channels": shape[-1],
            "preprocessing": "mnist-digit" if dataset in DIGIT_DATASETS else "resize"}


def write(model_path, record):
    return runs.write_json(sidecar(model_path), record)


def read(model_path):
    """The record of the model at `model_path`: its sidecar, else its run's metrics.json, else MNIST.
    The second element says where it came from."""
    model_path = Path(model_path)
    path = sidecar(model_path)
    if path.is_file():
        try:
            record = runs.read_json(path)
            return _checked(record, path), str(path)
        except (ValueError, OSError) as e:
            raise UsageError(f"Expected a readable JSON record beside the model. Received: {path} ({e})") from e
    metrics = model_path.parent / "metrics.json"
    if metrics.is_file():
        try:
            found = runs.read_json(metrics)
        except (ValueError, OSError):
            found = {}
        ds = found.get("dataset") if isinstance(found, dict) else None
        if isinstance(ds, dict) and ds.get("class_names") and ds.get("input_shape"):
            seed = (found.get("config") or {}).get("seed", 0)
            return make(ds.get("name", "mnist"), ds["class_names"], ds["input_shape"], seed), str(metrics)
    return dict(MNIST), "default (no record: an MNIST model)"


def _checked(record, path):
    keys = ("dataset", "class_names", "input_shape")
    if not isinstance(record, dict) or any(k not in record for k in keys):
        raise UsageError(f"Expected a model record with {', '.join(keys)}. Received: {path}")
    return make(record["dataset"], record["class_names"], record["input_shape"], record.get("seed", 0)) | {
        k: v for k, v in record.items() if k == "preprocessing"}
