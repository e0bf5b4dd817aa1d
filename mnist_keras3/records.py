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
was. This module computes records and never touches a file: runs.py writes and reads them
(runs.save_model, runs.read_record). Nothing here imports keras.
"""

from .errors import UsageError

DIGIT_DATASETS = ("mnist",)
MNIST = {"dataset": "mnist", "seed": 0, "class_names": [str(d) for d in range(10)], "input_shape": [28, 28, 1],
         "channels": 1, "preprocessing": "mnist-digit"}


def make(dataset, class_names, input_shape, seed=0):
    """The record of a model trained on `dataset` (a Dataset's name, as train --dataset took it)."""
    shape = [int(d) for d in input_shape]
    return {"dataset": dataset, "seed": int(seed), "class_names": [str(c) for c in class_names],
            "input_shape": shape, "channels": shape[-1],
            "preprocessing": "mnist-digit" if dataset in DIGIT_DATASETS else "resize"}


def checked(record, where):
    """A record as read from a sidecar (`where`, for the message), completed; UsageError if it lacks
    what every record has."""
    keys = ("dataset", "class_names", "input_shape")
    if not isinstance(record, dict) or any(k not in record for k in keys):
        raise UsageError(f"Expected a model record with {', '.join(keys)}. Received: {where}")
    return make(record["dataset"], record["class_names"], record["input_shape"], record.get("seed", 0)) | {
        k: v for k, v in record.items() if k == "preprocessing"}


def from_metrics(metrics):
    """The record a run's metrics.json implies (runs from before the sidecar); None when it names no
    dataset with classes and an input shape."""
    ds = metrics.get("dataset") if isinstance(metrics, dict) else None
    if not (isinstance(ds, dict) and ds.get("class_names") and ds.get("input_shape")):
        return None
    seed = (metrics.get("config") or {}).get("seed", 0)
    return make(ds.get("name", "mnist"), ds["class_names"], ds["input_shape"], seed)
