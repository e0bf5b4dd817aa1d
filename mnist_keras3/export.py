"""Export a trained model for serving: ONNX or TF SavedModel, through Keras's own model.export.

    python -m mnist_keras3.export runs/<run>/model.keras --format onnx
    python -m mnist_keras3.export runs/<run>/model.keras --format savedmodel --backend tensorflow

The export is checked before it is kept: ONNX in onnxruntime, SavedModel in tensorflow, on the
10,000 MNIST test images, against the Keras model (same class for every image, probabilities
within 1e-4). What each backend can export is in backends/<name>/ (export_modules).
"""

import argparse
import contextlib
import importlib.util
import io
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from . import backends, runs
from .errors import DataError, MnistKeras3Error, UsageError, run_cli

FORMATS = {"onnx": "onnx", "savedmodel": "tf_saved_model"}  # ours -> Keras's format name
CHECKERS = {"onnx": "onnxruntime", "savedmodel": "tensorflow"}
TOLERANCE = 1e-4  # |probability difference| allowed between the export and the Keras model


class ExportError(MnistKeras3Error):
    """The export ran but its result is missing or disagrees with the Keras model."""


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m mnist_keras3.export", description=__doc__.split("\n")[0])
    p.add_argument("model", help="a model.keras written by mnist_keras3.train (any backend)")
    p.add_argument("--format", required=True, choices=sorted(FORMATS), help="onnx (a file) or savedmodel (a folder)")
    p.add_argument("--output", metavar="PATH", help="where to write it (default: beside the model, "
                   "model.onnx or model_savedmodel/)")
    p.add_argument("--backend", help="torch, jax or tensorflow: the backend that exports "
                   "(default: KERAS_BACKEND, then the first installed)")
    p.add_argument("--data-dir", help="MNIST for the check of an MNIST model (default: MNIST_KERAS3_DATA, the "
                   "cache, then download); every model is checked on the test set of its own data (its record)")
    p.add_argument("--no-verify", action="store_true", help="keep the export without checking it")
    p.add_argument("--debug", action=argparse.BooleanOptionalAction, default=False, help="show tracebacks on errors")
    return p.parse_args(argv)


def check_available(fmt, name, verify):
    """UsageError, before anything is loaded, where `fmt` cannot be exported (or checked) here."""
    needed = backends.backend_module(name).export_modules(fmt)
    label = "ONNX" if fmt == "onnx" else "TF SavedModel"
    if needed is None:
        others = [b for b in backends.installed_backends()
                  if b != name and backends.backend_module(b).export_modules(fmt) is not None]
        raise UsageError(f"{label} export is not available under the {name} backend. Run it with "
                         f"--backend {' or --backend '.join(others or ['tensorflow'])} "
                         "(a .keras file loads under any backend).")
    missing = [m for m in needed + ([CHECKERS[fmt]] if verify else []) if importlib.util.find_spec(m) is None]
    if missing:
        extra = "export" if name == "torch" else f"export-{name}"
        raise UsageError(f"{label} export under {name} needs {', '.join(missing)}, not installed. Install: "
                         f'pip install "mnist-keras3[{extra}]"' + (" (or pass --no-verify)" if verify else ""))


def default_output(model_path, fmt):
    model_path = Path(model_path)
    return model_path.with_suffix(".onnx") if fmt == "onnx" else model_path.with_name(f"{model_path.stem}_savedmodel")


def output_path(args):
    """Where the export goes; never a folder that is not a SavedModel we may replace."""
    out = Path(args.output) if args.output else default_output(args.model, args.format)
    if args.format == "onnx" and out.is_dir():
        out = out / f"{Path(args.model).stem}.onnx"
    if args.format == "onnx" and out.exists() and not out.is_file():
        raise UsageError(f"{out} exists and is not a file. Pass another --output.")
    if args.format == "savedmodel" and out.exists() and not (out / "saved_model.pb").is_file():
        raise UsageError(f"{out} exists and is not a SavedModel folder; refusing to replace it. Pass another --output.")
    runs.writable_folder(out.parent, "--output")
    return out


def check_images(data_dir, record=None):
    """The test images of the model's own data (its record, records.py: MNIST's 10,000 for an MNIST
    model), or (when they cannot be had) 256 random images of its input shape, and a note."""
    from . import data, records

    record = record or records.MNIST
    try:
        ds = data.load(record["dataset"], data_dir, record.get("seed", 0))
        if ds.input_shape != tuple(record["input_shape"]):  # a folder changed since training
            raise DataError(f"its images are now {ds.input_shape}, the model takes {tuple(record['input_shape'])}")
        return ds.x_test, f"{len(ds.x_test):,} {record['dataset']} test images"  # (N, H, W, C)
    except DataError as e:
        print(f"warning: {record['dataset']} not available for the check ({str(e)[:120]}...); checking on "
              "random images", file=sys.stderr)
        shape = tuple(record["input_shape"])
        return np.random.default_rng(0).random((256, *shape), dtype=np.float32), "256 random images"


def run_export(fmt, path):
    """Run the exported artifact at `path` on a batch: returns a function x -> probabilities."""
    if fmt == "onnx":
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.log_severity_level = 4  # its failures come back as exceptions, reported once by us
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        input_name = session.get_inputs()[0].name
        return lambda x: session.run(None, {input_name: x})[0]
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))
    return lambda x: loaded.serve(tf.constant(x)).numpy()


def compare(expected, got, what, name):
    """Raise ExportError unless `got` gives the same classes as `expected` (a disagreement is
    allowed only on a near-tie) and the probabilities agree within TOLERANCE."""
    if got.shape != expected.shape:
        raise ExportError(f"the {what} gives shape {got.shape}, the Keras model {expected.shape}.")
    diff = float(np.abs(got - expected).max())
    top2 = np.sort(expected, axis=1)[:, -2:]
    disagree = np.flatnonzero(got.argmax(1) != expected.argmax(1))
    real = [i for i in disagree if top2[i, 1] - top2[i, 0] > TOLERANCE]
    if diff > TOLERANCE or real:
        raise ExportError(f"the {what} disagrees with the Keras model: {len(disagree)} different classes, "
                          f"max |probability difference| {diff:.2g} (allowed {TOLERANCE:g}). Export under "
                          f"another backend than {name}.")
    return len(expected) - len(disagree), diff


def main(argv=None):
    args = parse_args(argv)
    name, _ = backends.resolve_backend(args.backend)
    backends.activate(name)
    check_available(args.format, name, not args.no_verify)
    from .loading import load_with_record

    model, record = load_with_record(args.model)
    out = output_path(args)
    model(np.zeros((1, *record["input_shape"]), dtype=np.float32))  # ONNX export needs a model that was called once

    # Export to a temporary name beside the target, check it, then rename (runs.atomic_write): a
    # failed or wrong export never replaces a good one.
    done = {}

    def write(tmp):
        started = time.perf_counter()
        quiet = io.StringIO()
        try:
            with warnings.catch_warnings(), contextlib.redirect_stdout(quiet):
                warnings.simplefilter("ignore")  # exporters' tracing chatter, not the user's concern
                model.export(str(tmp), format=FORMATS[args.format], verbose=False)
        except Exception as e:
            text = " ".join(str(e).split())
            raise ExportError(f"Keras could not export {args.format} under {name}: "
                              f"{type(e).__name__}: {text[:200]}") from e
        done["seconds"] = time.perf_counter() - started
        if not tmp.exists():
            raise ExportError(f"Keras reported no error but wrote nothing at {tmp}.")
        checked = "not checked (--no-verify)"
        if not args.no_verify:
            x, what = check_images(args.data_dir, record)
            expected = np.asarray(model.predict(x, batch_size=1000, verbose=0))
            runtime = CHECKERS[args.format]
            try:
                run = run_export(args.format, tmp)
                got = np.concatenate([run(x[i:i + 1000]) for i in range(0, len(x), 1000)])  # (N, K)
            except Exception as e:
                text = " ".join(str(e).split())
                raise ExportError(f"the {args.format} export written under {name} does not run in {runtime} "
                                  f"({type(e).__name__}: {text[:220]}). Export under another backend, e.g. --backend "
                                  f"{'torch' if name != 'torch' else 'tensorflow'}; the .keras file loads under "
                                  "any.") from e
            same, diff = compare(expected, got, f"{args.format} export in {runtime}", name)
            checked = f"checked in {runtime} on {what}: same class for {same:,}/{len(x):,}, max |Δp| {diff:.1e}"
        done["checked"] = checked

    runs.atomic_write(out, write)

    size = out.stat().st_size if out.is_file() else sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"wrote {out} ({args.format}, {size / 1024:.1f} KiB) under {name} in {done['seconds']:.1f} s | "
          f"{done['checked']}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
