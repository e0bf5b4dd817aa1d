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
import dataclasses
import os
import sys
import typing
from pathlib import Path

from . import backends, runs, training
from .config import TrainConfig, build_config, field_names, fixed_on_resume
from .errors import UsageError, run_cli


def parse_args(argv=None):
    """One --flag per TrainConfig field (its help and default from the field), plus the actions."""
    p = argparse.ArgumentParser(prog="python -m mnist_keras3.train", description=__doc__.split("\n")[0])
    p.add_argument("--backend", help=TrainConfig.__dataclass_fields__["backend"].metadata["help"])
    p.add_argument("--config", metavar="TOML", help="a TOML file of settings; flags override it")
    for f in dataclasses.fields(TrainConfig):
        if not f.metadata["flag"]:
            continue
        flag, help = "--" + f.name.replace("_", "-"), f"{f.metadata['help']} (default: {f.default})"
        if f.type is bool:  # a switch: given means on; absent leaves the config file's value
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help)
        else:
            kind = next(t for t in (typing.get_args(f.type) or (f.type,)) if t is not type(None))
            p.add_argument(flag, type=kind, help=help)
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last complete epoch")
    p.add_argument("--dry-run", action=argparse.BooleanOptionalAction, default=False,
                   help="1 epoch of 5 steps: a quick check that everything runs")
    p.add_argument("--print-config", action=argparse.BooleanOptionalAction, default=False,
                   help="print the resolved config as TOML and exit")
    p.add_argument("--debug", action=argparse.BooleanOptionalAction, default=False, help="show tracebacks on errors")
    return p.parse_args(argv)


def resolve_config(args):
    """Flags > config file (or the resumed run's config.toml) > defaults; then the backend."""
    config_path = args.config
    if args.resume:
        config_path = Path(args.resume) / runs.CONFIG
        if not config_path.is_file():
            raise UsageError(f"{args.resume} is not a run folder (no config.toml). Pass a folder made by train.")
    overrides = {k: getattr(args, k) for k in field_names() if k != "backend"}
    if args.resume:
        # The checkpoint carries the model and optimizer: a changed recipe would be silently ignored.
        fixed = [k for k in fixed_on_resume() if overrides[k] is not None]
        if fixed:
            may = [f"--{k.replace('_', '-')}" for k in field_names() if k not in fixed_on_resume() and k != "backend"]
            raise UsageError(f"--resume continues the run with its own config; --{fixed[0].replace('_', '-')} "
                             f"cannot change. Only {', '.join(may[:-1])} and {may[-1]} may be given.")
    cfg = build_config(config_path, overrides)
    name, source = backends.resolve_backend(args.backend, cfg.backend)
    cfg = cfg.replace(backend=name)
    if args.dry_run:
        cfg = cfg.replace(epochs=1, max_steps_per_epoch=min(cfg.max_steps_per_epoch or 5, 5))
    return cfg, source


def refuse_early_stopped(run_dir):
    """A run that early stopping ended is finished: resuming it would train on from its last epoch
    and replace model.keras (the kept best epoch). A UsageError saying so, before anything loads."""
    metrics = runs.read_metrics(run_dir)
    if metrics is None:
        return  # no (readable) metrics.json: an interrupted run, which resume_state checks
    early = metrics.get("early_stopping") or {}
    if metrics.get("status") == "early-stopped":
        raise UsageError(f"Expected a run that stopped before its last epoch. Received: {run_dir}, which early "
                         f"stopping finished after epoch {early.get('epochs_completed', '?')} (its model.keras "
                         f"keeps epoch {early.get('kept_epoch', '?')}). Start a new run to train more.")


def main(argv=None):
    args = parse_args(argv)
    cfg, source = resolve_config(args)
    if args.resume:
        refuse_early_stopped(args.resume)
    if args.print_config:
        print(cfg.to_toml(), end="")
        return 0
    if "TORCHELASTIC_RUN_ID" in os.environ and cfg.distribute == "none":  # set by torchrun in each process
        raise UsageError("Expected --distribute data-parallel under torchrun (each of its processes would "
                         "otherwise train alone and write a run of its own). Received: distribute='none'")
    backend = backends.activate(cfg.backend, cfg.threads, cfg.devices, cfg.distribute)
    training.run(cfg, source, backend, resume=args.resume)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
