"""Train a model on MNIST under any Keras backend.

    python -m mnist_keras3.train                         # tutorial CNN, default backend, 10 epochs
    python -m mnist_keras3.train --backend jax --epochs 3
    python -m mnist_keras3.train --config configs/tutorial.toml --backend torch
    python -m mnist_keras3.train --resume runs/<run>      # continue an interrupted run

argparse -> config -> backend, here; then training.run (training.py): data -> model -> fit -> run
folder (see runs.py). `--loop native` trains the same model with the backend's own compiled loop
(mnist_keras3/backends/<name>/loop.py).
"""

import argparse
import sys
from pathlib import Path

from . import backends, training
from .config import DATASETS, DISTRIBUTIONS, LOOPS, LR_SCHEDULES, OPTIMIZERS, TrainConfig, build_config
from .errors import UsageError, run_cli


def parse_args(argv=None):
    d = TrainConfig()
    p = argparse.ArgumentParser(prog="python -m mnist_keras3.train", description=__doc__.split("\n")[0])
    p.add_argument("--backend", help="torch, jax or tensorflow (default: config file, then KERAS_BACKEND, "
                   "then the first installed of torch, jax, tensorflow)")
    p.add_argument("--config", metavar="TOML", help="a TOML file of settings; flags override it")
    p.add_argument("--model", help=f"model name from the registry (default: {d.model})")
    p.add_argument("--epochs", type=int, help=f"epochs to train (default: {d.epochs})")
    p.add_argument("--batch-size", type=int, help=f"training batch size (default: {d.batch_size})")
    p.add_argument("--lr", type=float, help=f"learning rate (default: {d.lr})")
    p.add_argument("--optimizer", help=f"one of {', '.join(OPTIMIZERS)} (default: {d.optimizer})")
    p.add_argument("--validation-split", type=float, help="fraction of the training set held out for "
                   f"validation; 0 validates on the test set, as the tutorial did (default: {d.validation_split})")
    p.add_argument("--seed", type=int, help=f"random seed (default: {d.seed})")
    p.add_argument("--output-dir", help=f"where run folders are made (default: {d.output_dir})")
    p.add_argument("--data-dir", help="folder with the MNIST IDX files or mnist.npz (default: "
                   "MNIST_KERAS3_DATA, the cache, then download)")
    p.add_argument("--max-steps-per-epoch", type=int,
                   help=f"cap on steps per epoch, 0 for none (default: {d.max_steps_per_epoch})")
    p.add_argument("--eval-batch-size", type=int,
                   help=f"batch size for validation and test (default: {d.eval_batch_size})")
    p.add_argument("--loop", help=f"one of {', '.join(LOOPS)}: Keras's model.fit, or the backend's own "
                   f"compiled loop over the same model (default: {d.loop})")
    p.add_argument("--threads", type=int, help="CPU threads for the backend's math, 0 for the "
                   f"framework's default (default: {d.threads})")
    p.add_argument("--lr-schedule", help=f"one of {', '.join(LR_SCHEDULES)} (default: {d.lr_schedule})")
    p.add_argument("--dataset", help=f"one of {', '.join(DATASETS)}, or folder:PATH with one sub-folder "
                   f"of images per class (default: {d.dataset})")
    p.add_argument("--distribute", help=f"one of {', '.join(DISTRIBUTIONS)}; data-parallel needs the jax "
                   f"backend (default: {d.distribute})")
    p.add_argument("--tensorboard", action="store_true", default=None,
                   help="write TensorBoard logs to <run>/tensorboard (default: off)")
    p.add_argument("--early-stopping", type=int, metavar="PATIENCE", help="stop when val_loss has not "
                   "improved for PATIENCE epochs and keep the best epoch's weights; 0 for off (default: "
                   f"{d.early_stopping})")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last complete epoch")
    p.add_argument("--dry-run", action="store_true", help="1 epoch of 5 steps: a quick check that everything runs")
    p.add_argument("--print-config", action="store_true", help="print the resolved config as TOML and exit")
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    return p.parse_args(argv)


RESUME_FIXED = ("model", "batch_size", "lr", "optimizer", "validation_split", "seed", "output_dir",
                "max_steps_per_epoch", "lr_schedule", "dataset")


def resolve_config(args):
    """Flags > config file (or the resumed run's config.toml) > defaults; then the backend."""
    config_path = args.config
    if args.resume:
        config_path = Path(args.resume) / "config.toml"
        if not config_path.is_file():
            raise UsageError(f"{args.resume} is not a run folder (no config.toml). Pass a folder made by train.")
    overrides = {k: getattr(args, k) for k in (
        "model", "epochs", "batch_size", "lr", "optimizer", "validation_split", "seed",
        "output_dir", "data_dir", "max_steps_per_epoch", "eval_batch_size", "loop", "threads",
        "lr_schedule", "dataset", "distribute", "tensorboard", "early_stopping")}
    if args.resume:
        # The checkpoint carries the model and optimizer: a changed recipe would be silently ignored.
        fixed = [k for k in RESUME_FIXED if overrides[k] is not None]
        if fixed:
            raise UsageError(f"--resume continues the run with its own config; --{fixed[0].replace('_', '-')} "
                             "cannot change. Only --epochs, --data-dir, --eval-batch-size, --loop, --threads, "
                             "--distribute, --tensorboard and --early-stopping may be given.")
    cfg = build_config(config_path, overrides)
    name, source = backends.resolve_backend(args.backend, cfg.backend)
    cfg = cfg.replace(backend=name)
    if args.dry_run:
        cfg = cfg.replace(epochs=1, max_steps_per_epoch=min(cfg.max_steps_per_epoch or 5, 5))
    return cfg, source


def main(argv=None):
    args = parse_args(argv)
    cfg, source = resolve_config(args)
    if args.print_config:
        print(cfg.to_toml(), end="")
        return 0
    backends.activate(cfg.backend, cfg.threads)
    training.run(cfg, source, resume=args.resume)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
