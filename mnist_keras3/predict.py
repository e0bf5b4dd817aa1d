"""Predict the class of each of your images with a trained model.

    python -m mnist_keras3.predict runs/<run>/model.keras my_digit.png scan.jpg
    python -m mnist_keras3.predict runs/<run>/model.keras photos/ --json
    cat digit.png | python -m mnist_keras3.predict runs/<run>/model.keras -

Each image is made like the model's data first (images.py): MNIST-like for digit models, else
converted to the model's channels and resized to its input (the model's record, records.py). Every
result names its class (`label`); digit models give `digit` too. A file that cannot be used gets its own
error line and the others are still predicted; the exit code is 1 if any file failed.
"""

import argparse
import json
import sys

import numpy as np

from . import backends, images
from .errors import UsageError, run_cli


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m mnist_keras3.predict", description=__doc__.split("\n")[0])
    p.add_argument("model", help="a model.keras written by mnist_keras3.train")
    p.add_argument("files", nargs="+", metavar="FILE",
                   help="PNG, JPEG or BMP images, folders of them, or - for one image on stdin")
    p.add_argument("--json", action=argparse.BooleanOptionalAction, default=False,
                   help="print one JSON document instead of text (default: text)")
    p.add_argument("--top", type=int, default=3, help="how many likeliest classes to list (default: 3)")
    p.add_argument("--backend", help="torch, jax or tensorflow (default: KERAS_BACKEND, then the first installed)")
    p.add_argument("--debug", action=argparse.BooleanOptionalAction, default=False, help="show tracebacks on errors")
    args = p.parse_args(argv)
    if args.top < 1:
        raise UsageError(f"Expected --top of at least 1. Received: top={args.top}")
    if args.files.count("-") > 1:
        raise UsageError("Expected stdin (-) at most once: it holds one image.")
    return args


def prepare_all(sources, record=None):
    """Each source -> a result dict; `prepared` holds the arrays of the usable ones, in order."""
    results, prepared = [], []
    for source in images.expand(sources):
        name = "<stdin>" if source == "-" else source
        entry = {"file": name, "warnings": []}
        try:
            item = images.prepare(sys.stdin.buffer if source == "-" else source, name, record)
        except images.BlankImage as e:
            entry["warnings"].append(str(e))
        except images.ImageError as e:
            entry["error"] = str(e)
        else:
            entry.update(warnings=item.warnings, inverted=item.inverted, size=list(item.size),
                         preprocessing=item.preprocessing)
            prepared.append((entry, item.array))
        results.append(entry)
    return results, prepared


def main(argv=None):
    args = parse_args(argv)
    name, _ = backends.resolve_backend(args.backend)
    backends.activate(name)
    from .loading import load_with_record

    model, record = load_with_record(args.model)
    names, digits = record["class_names"], record["preprocessing"] == "mnist-digit"
    results, prepared = prepare_all(args.files, record)
    if prepared:
        batch = np.stack([a for _, a in prepared])  # (N, H, W, C)
        probs = np.asarray(model.predict(batch, verbose=0), dtype=np.float64)  # (N, K)
        for (entry, _), p in zip(prepared, probs, strict=False):
            order = np.argsort(-p)[:args.top]
            if digits:  # kept for MNIST models: scripts read `digit`
                entry["digit"] = int(order[0])
            entry["class"], entry["label"] = int(order[0]), names[order[0]]
            entry["probability"] = round(float(p[order[0]]), 6)
            entry["top"] = [{**({"digit": int(d)} if digits else {}), "class": int(d), "label": names[d],
                             "probability": round(float(p[d]), 6)} for d in order]

    failed = sum(1 for r in results if "error" in r)
    if args.json:
        print(json.dumps({"model": str(args.model), "backend": name, "dataset": record["dataset"],
                          "class_names": names, "results": results,
                          "failed": failed}, indent=2))
    for r in results:
        for w in r["warnings"]:
            print(f"warning: {w}", file=sys.stderr)
        if "error" in r:
            print(f"error: {r['error']}", file=sys.stderr)
        elif "label" in r and not args.json:
            top = ", ".join(f"{t['label']} {t['probability']:.3f}" for t in r["top"])
            print(f"{r['file']}: {r['label']} (probability {r['probability']:.3f}) | top-{args.top}: {top}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
