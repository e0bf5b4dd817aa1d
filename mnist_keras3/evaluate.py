"""Evaluate a trained model on the test set of the data it was trained on, under any backend.

    python -m mnist_keras3.evaluate runs/<run>/model.keras --backend jax
    python -m mnist_keras3.evaluate runs/<run>/model.keras --dataset folder:more-photos

The data is the model's record (records.py: model.keras.json, else the run's metrics.json, else
MNIST); --dataset picks another one with the same image shape and number of classes.

Prints accuracy, loss, per-class precision/recall/F1 and the most confused pairs; writes
evaluation.json, confusion_matrix.png and misclassified.png (default: next to the model).
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from . import backends, runs
from .errors import UsageError, run_cli


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m mnist_keras3.evaluate", description=__doc__.split("\n")[0])
    p.add_argument("model", help="a model.keras written by mnist_keras3.train (any backend)")
    p.add_argument("--backend", help="torch, jax or tensorflow (default: KERAS_BACKEND, then the first installed)")
    p.add_argument("--output", metavar="DIR", help="where the report and pictures go (default: the model's folder)")
    p.add_argument("--dataset", help="mnist, fashion_mnist, cifar10 or folder:PATH (default: the dataset the "
                   "model was trained on, from its record)")
    p.add_argument("--data-dir", help="folder with the MNIST IDX files or mnist.npz (default: "
                   "MNIST_KERAS3_DATA, the cache, then download)")
    p.add_argument("--batch-size", type=int, default=1000, help="prediction batch size (default: 1000)")
    p.add_argument("--top-confusions", type=int, default=5, help="confused pairs to list (default: 5)")
    p.add_argument("--debug", action=argparse.BooleanOptionalAction, default=False, help="show tracebacks on errors")
    args = p.parse_args(argv)
    if args.batch_size < 1:
        raise UsageError(f"Expected --batch-size >= 1. Received: batch_size={args.batch_size}")
    if args.top_confusions < 0:
        raise UsageError(f"Expected --top-confusions >= 0. Received: top_confusions={args.top_confusions}")
    return args


def confusion_matrix(labels, pred, k=10):
    """(k, k) counts: row = true class, column = predicted class."""
    return np.bincount(labels * k + pred, minlength=k * k).reshape(k, k)


def per_class(cm, class_names=None):
    """Precision, recall, F1 and support per class from a confusion matrix (0 where undefined)."""
    tp = np.diag(cm).astype(np.float64)
    predicted, support = cm.sum(axis=0), cm.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    named = (lambda c: {"name": str(class_names[c])}) if class_names else (lambda c: {})
    return [{"class": c, **named(c), "precision": round(float(precision[c]), 4), "recall": round(float(recall[c]), 4),
             "f1": round(float(f1[c]), 4), "support": int(support[c])} for c in range(len(cm))]


def most_confused(cm, n, class_names=None):
    off = cm.copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(-off, axis=None)[:n]
    named = (lambda c: {"true_name": str(class_names[c // len(cm)]), "predicted_name": str(class_names[c % len(cm)])}
             ) if class_names else (lambda c: {})
    return [{"true": int(i // len(cm)), "predicted": int(i % len(cm)), **named(int(i)), "count": int(off.flat[i])}
            for i in order if off.flat[i] > 0]


def load_data(args, record):
    """The dataset to score on (--dataset, else the record's), checked against the model: the same
    image shape and number of classes, else a UsageError naming both."""
    from . import data
    from .config import DATASETS

    name = args.dataset or record["dataset"]
    if name not in DATASETS and not (name.startswith(data.FOLDER_PREFIX) and name[len(data.FOLDER_PREFIX):]):
        raise UsageError(f"Expected --dataset among {', '.join(DATASETS)} or folder:PATH. Received: dataset={name!r}")
    ds = data.load(name, args.data_dir, record.get("seed", 0))
    want = (tuple(record["input_shape"]), len(record["class_names"]))
    if (ds.input_shape, ds.num_classes) != want:
        raise UsageError(f"Expected a dataset of {want[0]} images in {want[1]} classes, what the model "
                         f"{args.model} (trained on {record['dataset']}) takes. Received: dataset={name} with "
                         f"{ds.input_shape} images in {ds.num_classes} classes")
    return ds


def output_dir(args):
    return runs.writable_folder(args.output or Path(args.model).resolve().parent, "--output")


def main(argv=None):
    args = parse_args(argv)
    name, source = backends.resolve_backend(args.backend)
    backend = backends.activate(name)
    keras = backend.keras
    from . import plots
    from .loading import load_with_record

    out = output_dir(args)  # before the slow part: a bad folder is known at once
    model, record = load_with_record(args.model)
    info = backend.describe()
    print(f"backend {info['backend']} {info['backend_version']} ({source}) | keras {info['keras_version']} "
          f"| device {info['device']} | model {args.model} ({model.count_params():,} parameters)")

    ds = load_data(args, record)
    names = record["class_names"]
    x, onehot = ds.x_test, ds.y_test  # float32 (N, H, W, C), one-hot (N, K)
    labels = onehot.argmax(axis=1).astype(np.int64)
    print(f"data {ds.name}: {len(x):,} test images of shape {ds.input_shape}, classes {', '.join(names)}")
    started = time.perf_counter()
    probs = np.asarray(model.predict(x, batch_size=args.batch_size, verbose=0))  # (10000, 10)
    seconds = time.perf_counter() - started
    # Keras's own loss, the one training reports (it clips probabilities to [1e-7, 1 - 1e-7]).
    loss = float(keras.ops.convert_to_numpy(keras.losses.categorical_crossentropy(onehot, probs)).mean())
    pred = probs.argmax(axis=1)
    accuracy = float((pred == labels).mean())
    cm = confusion_matrix(labels, pred, len(names))
    classes = per_class(cm, names)
    confused = most_confused(cm, args.top_confusions, names)

    print(f"test accuracy {accuracy:.4f}, loss {loss:.4f} on {len(labels):,} images "
          f"({seconds:.2f} s, {len(labels) / seconds:,.0f} images/s)")
    width = max(5, *(len(n) for n in names))
    print(f"{'class':>{width}}  precision  recall      f1  support")
    for c in classes:
        print(f"{c['name']:>{width}}  {c['precision']:9.4f}  {c['recall']:6.4f}  {c['f1']:6.4f}  {c['support']:7d}")
    print("most confused (true -> predicted): " +
          (", ".join(f"{p['true_name']}->{p['predicted_name']} x{p['count']}" for p in confused) or "none"))

    report = {
        "model": str(args.model),
        **info,
        "dataset": ds.name,
        "class_names": names,
        "test_images": len(labels),
        "accuracy": round(accuracy, 6),
        "loss": round(loss, 6),
        "misclassified": int((pred != labels).sum()),
        "per_class": classes,
        "most_confused": confused,
        "confusion_matrix": cm.tolist(),
        "predict_seconds": round(seconds, 3),
    }
    written = [
        runs.write_json(out / "evaluation.json", report),
        plots.confusion(cm, out / "confusion_matrix.png",
                        title=f"confusion matrix: accuracy {accuracy:.4f} ({info['backend']})", class_names=names),
        plots.misclassified(x, labels, probs, out / "misclassified.png", class_names=names),
    ]
    print("wrote " + ", ".join(p.name for p in written) + f" in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
