"""Load a trained `.keras` file for evaluate, predict and export, with one-line errors.

Keras's own messages mislead here (a corrupt file reads "File not found"), so the file is checked
first: it exists, is a zip, holds a Keras v3 model. Loading keeps `safe_mode=True`: a Lambda layer
(pickled Python code) is refused, never run. The model must take the images its record names (records.py: the sidecar
beside it, else its run's metrics.json, else MNIST's (28, 28, 1)) and give one probability per
class of the record. Import after the backend is chosen (the loader imports keras).
"""

import zipfile
from pathlib import Path

from . import runs
from .errors import MnistKeras3Error, UsageError

KERAS_MEMBERS = ("config.json", "model.weights.h5")  # what Keras 3's model.save() writes


class ModelFileError(MnistKeras3Error):
    """A .keras file that exists but cannot be used: corrupt, unsafe, or not one of our models."""


def check_model_file(path):
    """The cheap checks, before keras reads anything. Returns the Path."""
    path = Path(path)
    if not path.exists():
        raise UsageError(f"Model file not found: {path}. Pass a model.keras written by mnist_keras3.train.")
    if not path.is_file():
        hint = " (a run folder? pass RUN/model.keras)" if (path / runs.MODEL).is_file() else ""
        raise UsageError(f"Expected a .keras model file. Received: a folder, {path}{hint}")
    if path.suffix != ".keras":
        raise UsageError(f"Expected a .keras model file (Keras 3 format). Received: {path}")
    if not zipfile.is_zipfile(path):
        raise ModelFileError(f"{path} is corrupt or not a Keras model file (not a zip archive). "
                             "Use a model.keras written by mnist_keras3.train.")
    try:
        with zipfile.ZipFile(path) as z:
            missing = [m for m in KERAS_MEMBERS if m not in z.namelist()]
            bad = z.testzip()  # CRC of every member: catches a file damaged after it was written
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise ModelFileError(f"{path} is a damaged zip archive ({e}). Use an intact model.keras.") from e
    if missing:
        raise ModelFileError(f"{path} is not a Keras 3 model file (no {', '.join(missing)} inside).")
    if bad is not None:
        raise ModelFileError(f"{path} is corrupt ({bad} fails its checksum). Use an intact model.keras.")
    return path


def read_keras_file(path, compile=False, hint=""):
    """check_model_file, then keras.saving.load_model with safe_mode on; whatever Keras raises
    becomes one ModelFileError line (ending with `hint`, what to do instead)."""
    import keras

    from . import models  # noqa: F401  registers the project's own layers (RandomShift) for loading

    path = check_model_file(path)
    try:
        return keras.saving.load_model(path, compile=compile, safe_mode=True)
    except Exception as e:
        text = " ".join(str(e).split())
        if "Lambda" in text and "safe_mode" in text:
            raise ModelFileError(f"{path} carries a Lambda layer (Python code that would run on load); "
                                 "refused with safe_mode on. Use a model.keras written by mnist_keras3.train.") from e
        raise ModelFileError(f"{path} could not be loaded as a Keras model ({type(e).__name__}: {text[:160]})."
                             + (f" {hint}" if hint else "")) from e


def load_model(path):
    """A checked, safely loaded classifier from a .keras file (any backend wrote it)."""
    return load_with_record(path)[0]


def load_with_record(path):
    """(model, record): the checked, safely loaded classifier and what it knows of its data
    (runs.read_record); a model that does not take the record's images or give its classes is refused."""
    import keras

    # compile=False: inference only; no optimizer or loss objects need rebuilding.
    model = read_keras_file(path)
    if not isinstance(model, keras.Model):
        raise ModelFileError(f"{path} holds a {type(model).__name__}, not a Keras model.")
    record, source = runs.read_record(path)
    want_in, want_out = (None, *record["input_shape"]), (None, len(record["class_names"]))
    got_in, got_out = _shape(model, "input_shape"), _shape(model, "output_shape")
    if got_in != want_in or got_out != want_out:
        what = "an MNIST classifier of this project" if source.startswith("default") else \
            f"the classifier its record {source} describes"
        raise ModelFileError(
            f"{path} is not {what}: expected input {want_in} and output {want_out}. "
            f"Received: input={got_in}, output={got_out}"
        )
    return model, record


def _shape(model, attr):
    try:
        shape = getattr(model, attr)
    except (AttributeError, ValueError, RuntimeError):  # several inputs or outputs, or never built
        return None
    return tuple(shape) if isinstance(shape, (tuple, list)) else shape
