"""The run folder: where a training run leaves everything, written so nothing is half-written.

runs/<YYYYmmdd-HHMMSS>-<backend>-<model>/
    config.toml      the resolved config (what --resume reads back)
    metrics.json     versions, device, parameter counts, per-epoch figures, test figures, speed
    history.csv      one row per epoch (history_csv)
    checkpoint.keras the last complete epoch (model + optimizer state), with checkpoint.json
    model.keras      the final model
    *.keras.json     beside each model: its dataset, class names, input shape (records.py says
                     what it holds; this module writes and reads it)

This module is the run folder's only owner: the file names are here, and every other module
writes and reads a run's files through the functions below.

Every file is written to a temporary name in the same folder, then renamed over the target
(atomic_write, which every module that writes uses): a crash or a full disk leaves the old file
or none, never a torn one.
"""

import csv
import io
import json
import os
import shutil
import tempfile
import time
import zipfile
from pathlib import Path

from . import records
from .errors import UsageError

CONFIG = "config.toml"
METRICS = "metrics.json"
HISTORY = "history.csv"
CHECKPOINT = "checkpoint.keras"
CHECKPOINT_STATE = "checkpoint.json"
MODEL = "model.keras"


def atomic_write(path, write):
    """Call write(tmp) to make a file, or a folder, at a temporary path beside `path`, then rename
    it over `path` (a folder replaces a folder); returns `path`. If write raises, `path` is left as
    it was and the temporary is removed.

    tmp has path's own name, inside a hidden folder `.<name>.tmp-*` beside `path`, so writers that
    insist on a suffix (Keras's .keras and .weights.h5) are satisfied and the file gets the usual
    mode. A file is flushed to disk before the rename makes it visible.
    """
    path = Path(path)
    tmp_dir = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-"))
    tmp = tmp_dir / path.name
    try:
        write(tmp)
        if tmp.is_file():
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        elif path.is_dir():
            shutil.rmtree(path)  # os.replace cannot put a folder over a non-empty one
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return path


def writable_folder(folder, flag):
    """Create `folder` (and its parents) when missing and check that files can be made in it;
    a UsageError naming `flag`, the option that chose it, otherwise. Returns it as a Path."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"Cannot create the output folder {folder}: {e.strerror}. Pass a writable {flag}.") from e
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"The output folder {folder} is not writable. Pass a writable {flag}.")
    return folder


def write_text(path, text):
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
    return atomic_write(path, write)


def write_json(path, obj):
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path):
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def save_model(model, path, record=None):
    """model.save() to a temp .keras file, made portable, then renamed: never a half-written file.
    `record` (records.make: the model's dataset, classes, input) goes to the sidecar <path>.json,
    after the model, so a sidecar never describes a model that is not on disk yet."""
    def write(tmp):
        model.save(tmp, overwrite=True)  # Keras insists on the .keras suffix, which tmp keeps
        make_portable(tmp)
    atomic_write(path, write)
    if record is not None:
        write_json(sidecar(path), record)
    return Path(path)


def sidecar(model_path):
    """The record file of a .keras file: its own name plus .json."""
    model_path = Path(model_path)
    return model_path.with_name(model_path.name + ".json")


def read_record(model_path):
    """The record of the model at `model_path` (records.py): its sidecar, else its run's
    metrics.json, else MNIST's. The second element says where it came from."""
    model_path = Path(model_path)
    path = sidecar(model_path)
    if path.is_file():
        try:
            return records.checked(read_json(path), path), str(path)
        except (ValueError, OSError) as e:
            raise UsageError(f"Expected a readable JSON record beside the model. Received: {path} ({e})") from e
    metrics_path = model_path.parent / METRICS
    found = records.from_metrics(read_metrics(model_path.parent)) if metrics_path.is_file() else None
    if found is not None:
        return found, str(metrics_path)
    return dict(records.MNIST), "default (no record: an MNIST model)"


def write_config(run_dir, toml_text):
    return write_text(Path(run_dir) / CONFIG, toml_text)


def write_metrics(run_dir, metrics):
    return write_json(Path(run_dir) / METRICS, metrics)


def read_metrics(run_dir, errors=None):
    """The run's metrics.json as a dict; None when it is missing or unreadable (an interrupted run,
    a model copied out of its folder). `errors`, a list, gets a line for an unreadable one."""
    path = Path(run_dir) / METRICS
    if not path.is_file():
        return None
    try:
        metrics = read_json(path)
        if not isinstance(metrics, dict):
            raise ValueError(f"a JSON {type(metrics).__name__}, not an object")
        return metrics
    except (OSError, ValueError) as e:
        if errors is not None:
            errors.append(f"{path}: unreadable ({type(e).__name__})")
        return None


def write_checkpoint(run_dir, model, epoch, history, record=None, state=None):
    """checkpoint.keras (model + optimizer state, with its record), then checkpoint.json (the
    epoch and the history so far) and history.csv, each atomically; checkpoint.json after the
    model, so it never names an epoch whose model is not on disk."""
    run_dir = Path(run_dir)
    save_model(model, run_dir / CHECKPOINT, record)
    write_json(run_dir / CHECKPOINT_STATE, {"epoch": epoch, "history": history, **(state or {})})
    write_text(run_dir / HISTORY, history_csv(history))


def checkpoint_state(run_dir):
    """{"epoch", "history"} of the run's last complete epoch; None when no epoch was saved."""
    path = Path(run_dir) / CHECKPOINT_STATE
    return read_json(path) if path.is_file() else None


def history_csv(history):
    keys = list(history)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["epoch", *keys])
    for i in range(len(history[keys[0]]) if keys else 0):
        writer.writerow([i + 1, *(f"{history[k][i]:.6g}" for k in keys)])
    return out.getvalue()


# Keras (3.15) saves an optimizer compiled under torch as its torch-only subclass, e.g. module
# "keras.src.backend.torch.optimizers.torch_adam", and no process without torch can load that
# file ("Could not deserialize class 'Adam' because its parent module ... cannot be imported").
# The class is keras.optimizers.Adam with torch update code, swapped in whenever Adam is built
# under torch, so naming the public class loads the same optimizer under torch and a portable one
# elsewhere. The parity report's portability level (tox: one backend per env) checks this.
TORCH_ONLY_MODULES = "keras.src.backend.torch.optimizers."


def _public_optimizers(node):
    if isinstance(node, list):
        return [_public_optimizers(v) for v in node]
    if not isinstance(node, dict):
        return node
    node = {k: _public_optimizers(v) for k, v in node.items()}
    if str(node.get("module", "")).startswith(TORCH_ONLY_MODULES) and "class_name" in node:
        node["module"] = "keras.optimizers"
    return node


def make_portable(keras_file):
    """Rewrite config.json inside a .keras zip so it names public optimizer classes only."""
    with zipfile.ZipFile(keras_file) as zf:
        config = json.loads(zf.read("config.json"))
        portable = _public_optimizers(config)
        if portable == config:
            return False
        entries = [(info, zf.read(info)) for info in zf.infolist()]
    with zipfile.ZipFile(keras_file, "w") as zf:  # same entries, same order and compression
        for info, data in entries:
            zf.writestr(info, json.dumps(portable) if info.filename == "config.json" else data)
    return True


def write_npz(path, arrays):
    import numpy as np

    return atomic_write(path, lambda tmp: np.savez(tmp, **arrays))


def save_weights(model, path):
    """model.save_weights() atomically; Keras insists on the .weights.h5 suffix, which the temp keeps."""
    return atomic_write(path, lambda tmp: model.save_weights(tmp, overwrite=True))


def new_run_dir(output_dir, backend, model_name, now=None):
    """Create a fresh, uniquely named run folder; two runs started together get two folders."""
    output = writable_folder(output_dir, "--output-dir")
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    base = f"{stamp}-{backend}-{model_name}"
    for i in range(1000):
        run_dir = output / (base if i == 0 else f"{base}-{i + 1}")
        try:
            run_dir.mkdir()  # atomic: exactly one process wins a name
            return run_dir
        except FileExistsError:
            continue
        except OSError as e:
            raise UsageError(f"Cannot create a run folder in {output}: {e.strerror}. "
                             "Pass a writable --output-dir.") from e
    raise UsageError(f"Too many runs named {base}* in {output}.")


def relative_path(path, start=None):
    """`path` as recorded in a file meant to be shared (metrics.json, a benchmark's JSON): relative
    to `start` (default: the working directory), so no file carries the layout of the machine that
    wrote it. Relative paths come back unchanged; a path on another drive keeps its last part only."""
    if path is None or not os.path.isabs(path):
        return None if path is None else str(path)
    try:
        return os.path.relpath(path, start)
    except ValueError:  # Windows: another drive than `start`
        return Path(path).name


def relative_arg(arg):
    """One command-line argument as a shared result records it: an absolute path (alone or after
    `--flag=`) made relative to the working directory (relative_path); anything else unchanged."""
    flag, eq, value = arg.partition("=") if arg.startswith("--") else ("", "", arg)
    return flag + eq + relative_path(value) if os.path.isabs(value) else arg
