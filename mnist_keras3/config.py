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
ADAM_FAMILY = ("adam", "adamw", "nadam")  # the optimizers beta_1 and beta_2 apply to
# "auto": the backend's native loop where it supports the run's settings, else Keras's model.fit;
# "fit": model.fit; "native": the backend's own compiled loop (mnist_keras3/backends/<name>/loop.py).
LOOPS = ("auto", "fit", "native")
LR_SCHEDULES = ("none", "cosine", "onecycle")
DATASETS = ("mnist", "fashion_mnist", "cifar10")  # and "folder:PATH"
DISTRIBUTIONS = ("none", "data-parallel")
# The model's dtype policy: float32 throughout, or Keras's mixed_bfloat16 (bfloat16 math, float32 weights).
PRECISIONS = {"float32": "float32", "mixed-bf16": "mixed_bfloat16"}
# Whether the training step is compiled: "on"/"off" force it, "auto" leaves it to the backend
# (torch: torch.compile with CUDA graphs off the CPU, the traced step on it; tensorflow: XLA as
# Keras's "auto" decides, with a GPU; jax: always). What model.compile's jit_compile gets: JIT_COMPILE.
JIT_COMPILE = {"auto": "auto", "on": True, "off": False}


def setting(default, help, fixed_on_resume=False, flag=True):
    """A TrainConfig field: its default, its --flag's help, and whether --resume may change it
    (the checkpoint carries the model, optimizer and schedule: a changed recipe would be ignored)."""
    return dataclasses.field(default=default, metadata={"help": help, "fixed": fixed_on_resume, "flag": flag})


@dataclasses.dataclass
class TrainConfig:
    """Every training setting: a key of the TOML config file and a --flag of train (flags win).
    The fields are the one source of both, of their help and of what --resume may change."""

    backend: str | None = setting(None, "torch, jax or tensorflow (default: config file, then "
                                  "KERAS_BACKEND, then the first installed of torch, jax, tensorflow)", flag=False)
    model: str = setting("tutorial", "model name from the registry (models.py)", True)
    epochs: int = setting(10, "epochs to train")
    batch_size: int = setting(32, "training batch size", True)
    lr: float = setting(1e-3, "learning rate (the peak of a onecycle schedule)", True)
    optimizer: str = setting("adam", f"one of {', '.join(OPTIMIZERS)}", True)
    beta_1: float = setting(0.9, f"Adam's first-moment decay ({', '.join(ADAM_FAMILY)})", True)
    beta_2: float = setting(0.999, f"Adam's second-moment decay ({', '.join(ADAM_FAMILY)})", True)
    lr_schedule: str = setting("none", f"one of {', '.join(LR_SCHEDULES)}: cosine decays lr to 0 over "
                               "all steps; onecycle rises linearly from 0 to lr over warmup_fraction of "
                               "the steps, then decays along a half cosine to 0", True)
    warmup_fraction: float = setting(0.25, "onecycle: the fraction of all steps spent warming up", True)
    label_smoothing: float = setting(0.0, "cross-entropy label smoothing, in [0, 1)", True)
    # 0: no hold-out; the per-epoch validation figures are then measured on the test set, as the
    # tutorial did. >0: that fraction of the training set (its end) is held out instead.
    validation_split: float = setting(0.0, "fraction of the training set held out for validation; 0 "
                                      "validates on the test set, as the tutorial did", True)
    seed: int = setting(42, "random seed", True)
    output_dir: str = setting("runs", "where run folders are made", True)
    data_dir: str | None = setting(None, "folder with the MNIST IDX files or mnist.npz (default: "
                                   "MNIST_KERAS3_DATA, the cache, then download)")
    max_steps_per_epoch: int = setting(0, "cap on steps per epoch, 0 for none", True)
    eval_batch_size: int = setting(1000, "batch size for validation and test")
    loop: str = setting("auto", f"one of {', '.join(LOOPS)}: the backend's own compiled loop where it "
                        "supports the run's settings (auto), Keras's model.fit, or the native loop")
    threads: int = setting(0, "CPU threads for the backend's math, 0 for the framework's default")
    precision: str = setting("float32", f"one of {', '.join(PRECISIONS)}: mixed-bf16 computes in bfloat16 on "
                             "float32 weights (Keras's mixed_bfloat16 policy), for GPUs with bfloat16 units", True)
    jit_compile: str = setting("auto", f"one of {', '.join(JIT_COMPILE)}: compile the training step (torch: "
                               "torch.compile, with CUDA graphs on a GPU, auto off the CPU only; tensorflow: XLA, "
                               "auto with a GPU; jax: always, off runs Keras's fit eagerly)")
    dataset: str = setting("mnist", f"one of {', '.join(DATASETS)}, or folder:PATH with one sub-folder "
                           "of images per class", True)
    distribute: str = setting("none", f"one of {', '.join(DISTRIBUTIONS)}: data-parallel on the backend's own "
                              "engine (torch: run under torchrun; docs/distributed.md)")
    devices: int = setting(0, "--distribute data-parallel over this many local devices (tensorflow, jax: "
                           "logical CPU devices when there is no accelerator); 0 for every device found")
    tensorboard: bool = setting(False, "write TensorBoard logs to <run>/tensorboard")
    # Monitor a held-out split (validation_split > 0), not the test set.
    early_stopping: int = setting(0, "stop when val_loss has not improved for this many epochs and keep "
                                  "the best epoch's weights (keras.callbacks.EarlyStopping); 0 for off")

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
            "devices": self.devices >= 0,
            "early_stopping": self.early_stopping >= 0,
            "beta_1": 0.0 <= self.beta_1 < 1.0,
            "beta_2": 0.0 <= self.beta_2 < 1.0,
            "warmup_fraction": 0.0 < self.warmup_fraction < 1.0,
            "label_smoothing": 0.0 <= self.label_smoothing < 1.0,
            "model": bool(self.model),
            "output_dir": bool(self.output_dir),
        }
        for key, ok in checks.items():
            if not ok:
                raise UsageError(f"Invalid value for {key}: {getattr(self, key)!r} ({_RULES[key]})")
        for key, allowed in (("lr_schedule", LR_SCHEDULES), ("distribute", DISTRIBUTIONS), ("precision", PRECISIONS),
                             ("jit_compile", JIT_COMPILE)):
            if getattr(self, key) not in allowed:
                raise UsageError(f"Expected {key} among {', '.join(allowed)}. "
                                 f"Received: {key}={getattr(self, key)!r}")
        if self.devices and self.distribute == "none":
            raise UsageError(f"Expected --distribute data-parallel with --devices. Received: devices={self.devices}, "
                             "distribute='none'")
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
    "devices": "expected an integer >= 0; 0 means every device found",
    "early_stopping": "expected an integer >= 0: epochs without improvement; 0 turns it off",
    "beta_1": "expected a number in [0, 1)",
    "beta_2": "expected a number in [0, 1)",
    "warmup_fraction": "expected a number in (0, 1)",
    "label_smoothing": "expected a number in [0, 1)",
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


def fixed_on_resume():
    """The keys --resume may not change: the checkpoint carries what they made."""
    return [f.name for f in dataclasses.fields(TrainConfig) if f.metadata["fixed"]]


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
