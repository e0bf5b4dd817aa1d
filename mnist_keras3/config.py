"""One typed settings object for training: TOML file in, command-line flags over it.

Every key of the TOML file is a field of `TrainConfig`; an unknown key, a wrong type or a bad
value is a one-line UsageError that names the key and the value.
"""

import dataclasses
import math
import tomllib
import typing

import tomli_w

from .errors import UsageError

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop", "nadam")
LOOPS = ("fit", "native")  # Keras's model.fit, or the backend's own loop (mnist_keras3/backends/<name>/loop.py)
LR_SCHEDULES = ("none", "cosine")
DATASETS = ("mnist", "fashion_mnist", "cifar10")  # and "folder:PATH"
DISTRIBUTIONS = ("none", "data-parallel")


@dataclasses.dataclass
class TrainConfig:
    backend: str | None = None  # None: KERAS_BACKEND, then the first installed
    model: str = "tutorial"
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    optimizer: str = "adam"
    # 0: no hold-out; the per-epoch validation figures are then measured on the test set, as the
    # tutorial did. >0: that fraction of the training set (its end) is held out instead.
    validation_split: float = 0.0
    seed: int = 42
    output_dir: str = "runs"
    data_dir: str | None = None
    max_steps_per_epoch: int = 0  # 0: no cap
    eval_batch_size: int = 1000
    # "fit": model.fit. "native": the same model and optimizer driven by the backend's own
    # compiled loop (mnist_keras3/backends/<backend>/loop.py); same run folder, same history keys.
    loop: str = "fit"
    threads: int = 0  # CPU threads for the backend's math; 0: the framework's default
    lr_schedule: str = "none"  # "cosine": cosine decay from lr to 0 over all training steps
    dataset: str = "mnist"  # mnist, fashion_mnist, cifar10 or folder:PATH (one sub-folder per class)
    distribute: str = "none"  # "data-parallel": keras.distribution.DataParallel (jax backend)
    tensorboard: bool = False  # TensorBoard logs in <run>/tensorboard
    # >0: stop when val_loss has not improved for this many epochs, keep the best epoch's weights
    # (keras.callbacks.EarlyStopping). Monitor a held-out split (validation_split > 0), not the test set.
    early_stopping: int = 0

    def validate(self):
        """Check every value; raise UsageError naming the first bad key."""
        for f in dataclasses.fields(self):
            _check_type(f.name, getattr(self, f.name), f.type)
        checks = {
            "epochs": self.epochs >= 1,
            "batch_size": self.batch_size >= 1,
            "eval_batch_size": self.eval_batch_size >= 1,
            "lr": math.isfinite(self.lr) and self.lr > 0,
            "validation_split": 0.0 <= self.validation_split < 1.0,
            "max_steps_per_epoch": self.max_steps_per_epoch >= 0,
            "seed": self.seed >= 0,
            "threads": self.threads >= 0,
            "early_stopping": self.early_stopping >= 0,
            "model": bool(self.model),
            "output_dir": bool(self.output_dir),
        }
        for key, ok in checks.items():
            if not ok:
                raise UsageError(f"Invalid value for {key}: {getattr(self, key)!r} ({_RULES[key]})")
        for key, allowed in (("lr_schedule", LR_SCHEDULES), ("distribute", DISTRIBUTIONS)):
            if getattr(self, key) not in allowed:
                raise UsageError(f"Expected {key} among {', '.join(allowed)}. "
                                 f"Received: {key}={getattr(self, key)!r}")
        if self.dataset not in DATASETS and not (self.dataset.startswith("folder:") and self.dataset[7:]):
            raise UsageError(f"Expected dataset among {', '.join(DATASETS)} or folder:PATH. "
                             f"Received: dataset={self.dataset!r}")
        if self.optimizer not in OPTIMIZERS:
            raise UsageError(
                f"Expected optimizer among {', '.join(OPTIMIZERS)}. Received: optimizer={self.optimizer!r}"
            )
        if self.loop not in LOOPS:
            raise UsageError(f"Expected loop among {', '.join(LOOPS)}. Received: loop={self.loop!r}")
        return self

    def to_toml(self):
        # TOML has no null: unset optional keys are left out, and read back as None.
        return tomli_w.dumps({k: v for k, v in dataclasses.asdict(self).items() if v is not None})

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)


_RULES = {
    "epochs": "expected an integer >= 1",
    "batch_size": "expected an integer >= 1",
    "eval_batch_size": "expected an integer >= 1",
    "lr": "expected a finite number > 0",
    "validation_split": "expected a number in [0, 1)",
    "max_steps_per_epoch": "expected an integer >= 0; 0 means no cap",
    "seed": "expected an integer >= 0",
    "threads": "expected an integer >= 0; 0 means the framework's default",
    "early_stopping": "expected an integer >= 0: epochs without improvement; 0 turns it off",
    "model": "expected a model name",
    "output_dir": "expected a folder path",
}


def _check_type(key, value, annotation):
    allowed = typing.get_args(annotation) or (annotation,)
    if value is None and type(None) in allowed:
        return
    if float in allowed and isinstance(value, int) and not isinstance(value, bool):
        return  # TOML `lr = 1` is a fine float
    if not any(isinstance(value, t) and not (t is int and isinstance(value, bool))
               for t in allowed if t is not type(None)):
        names = "/".join(t.__name__ for t in allowed if t is not type(None))
        raise UsageError(
            f"Expected {key} to be of type {names}. Received: {key}={value!r} ({type(value).__name__})"
        )


def field_names():
    return [f.name for f in dataclasses.fields(TrainConfig)]


def load_toml(path):
    """Read a TOML config file into a dict of known keys (not yet validated)."""
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError as err:
        raise UsageError(f"Config file not found: {path}. Pass an existing TOML file to --config.") from err
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"Config file {path} is not valid TOML: {e}") from e
    unknown = sorted(set(data) - set(field_names()))
    if unknown:
        raise UsageError(
            f"Unknown key {unknown[0]!r} in config file {path}. Valid keys: {', '.join(field_names())}"
        )
    return data


def build_config(config_path=None, overrides=None):
    """TrainConfig from defaults < config file < overrides (flags that were given), validated."""
    values = load_toml(config_path) if config_path else {}
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    for key, value in values.items():
        _check_type(key, value, TrainConfig.__dataclass_fields__[key].type)
    return TrainConfig(**values).validate()
