"""Prove it is one model: the same CNN compared across Keras backends, in four levels.

    python -m mnist_keras3.parity --backends torch,jax,tensorflow --epochs 10
    python -m mnist_keras3.parity --reuse --output-dir .tox/parity-results   # what tox envs left

A process has one Keras backend, so each backend's work runs in its own subprocess:
  1. `parity worker --backend B`: structure of every model, a training run via
     `python -m mnist_keras3.train`, its weights exported        -> <out>/B/worker.json
  2. `parity check --backend B`: the first backend's trained weights loaded into the model built
     from code (probabilities, loss, gradients), the same for every registered model with the
     first backend's initial weights, and every backend's model.keras loaded here
                                                                   -> <out>/B/check.json, .npz
  3. this process (no keras at all) compares them                  -> <out>/parity.md, parity.json
Exit status 1 when any check fails.

parity/worker.py is one backend's part (steps 1 and 2), parity/compare.py the comparisons (step 3),
this module the command; `python -m mnist_keras3.parity` runs main() (parity/__main__.py).
"""

import argparse
import os
import subprocess
import sys
from pathlib import Path

from .. import backends, runs
from ..errors import MnistKeras3Error, UsageError
from . import compare as pc

DEFAULT_OUTPUT = "runs/parity"


class ParityFailure(MnistKeras3Error):
    """At least one parity check failed (the report says which)."""


def add_training_args(p):
    p.add_argument("--config", metavar="TOML", help="a train config file (a recipe such as configs/fast.toml); the "
                   "flags below override it (default: none: train's defaults, the tutorial recipe)")
    p.add_argument("--model", help="model trained for levels 2-4 (default: the config's, else tutorial)")
    p.add_argument("--epochs", type=int, help="training epochs per backend (default: the config's, else 10)")
    p.add_argument("--seed", type=int, default=42, help="training seed, the same for every backend (default: 42)")
    p.add_argument("--seeds", default="", help="also train these seeds (comma-separated) under every backend; "
                   "each run must reach --accuracy-floor, so a backend that fails one seed fails the report "
                   "(default: none)")
    p.add_argument("--batch-size", type=int, help="training batch size (default: the config's, else 32)")
    p.add_argument("--max-steps-per-epoch", type=int,
                   help="cap on training steps per epoch, 0 for none (default: the config's, else 0)")
    p.add_argument("--data-dir", help="folder with the MNIST files (default: MNIST_KERAS3_DATA, then the cache)")
    p.add_argument("--output-dir", default=DEFAULT_OUTPUT, help=f"results folder (default: {DEFAULT_OUTPUT})")
    p.add_argument("--debug", action=argparse.BooleanOptionalAction, default=False, help="show tracebacks on errors")


def parse_seeds(text):
    try:
        seeds = [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        seeds = None
    if seeds is None or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise UsageError(f"Expected --seeds as distinct integers >= 0, comma-separated. Received: seeds={text!r}")
    return seeds


def training_args(args, seed=None):
    """The train flags of the parity run (with another seed for the --seeds sweep)."""
    out = ["--seed", str(args.seed if seed is None else seed)]
    for flag, value in (("--config", args.config), ("--model", args.model), ("--epochs", args.epochs),
                        ("--batch-size", args.batch_size), ("--max-steps-per-epoch", args.max_steps_per_epoch),
                        ("--data-dir", args.data_dir)):
        if value is not None:
            out += [flag, str(value)]
    return out


def parse_init_models(text, registered=None):
    """--init-models: model names, or [] for every registered model. The report's own process
    may have no backend (tox's parity env), so the names are checked against the models the
    reference worker recorded."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if registered is not None and n not in registered]
    if unknown:
        raise UsageError(f"Expected --init-models among {', '.join(sorted(registered))}. "
                         f"Received: init_models={text!r}")
    return names


def parse_backends(text):
    names = [b.strip().lower() for b in text.split(",") if b.strip()]
    bad = [b for b in names if b not in backends.BACKENDS]
    if bad or len(set(names)) != len(names) or len(names) < 2:
        raise UsageError(f"Expected two or more distinct backends among {', '.join(backends.BACKENDS)}, "
                         f"comma-separated. Received: backends={text!r}")
    return names


def auto_or_float(text):
    """An --accuracy-* value: a number, or `auto` (None: the default for the run's length)."""
    if text.strip().lower() == "auto":
        return None
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"Expected a number or auto. Received: {text!r}") from None


def planned_config(args):
    """The train config the workers will run (the flags over --config over train's defaults), so that
    what depends on it is checked before anything trains."""
    from ..config import build_config

    return vars(build_config(args.config, {"model": args.model, "epochs": args.epochs, "seed": args.seed,
                                           "batch_size": args.batch_size,
                                           "max_steps_per_epoch": args.max_steps_per_epoch}))


def check_installed(names, pythons):
    """UsageError, before any training, naming every backend this interpreter would run but lacks."""
    missing = [b for b in names if pythons[b] == sys.executable and not backends.is_installed(b)]
    if missing:
        raise UsageError(f"Expected every compared backend installed here: each trains and is checked in its own "
                         f"subprocess of this Python. Received: backends={','.join(names)}, of which "
                         f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not installed. Install "
                         f"them (pip install \"mnist-keras3[{','.join(missing)}]\"), compare fewer with --backends, "
                         f"or give each its own interpreter with --python BACKEND=PATH (tox -e {missing[0]} "
                         f"leaves one).")


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m mnist_keras3.parity", description=__doc__.split("\n")[0],
                                epilog="Subcommands run one backend's part: "
                                       "`parity worker --help`, `parity check --help`.")
    p.add_argument("--backends", default=",".join(backends.BACKENDS),
                   help=f"backends to compare; the first is the reference (default: {','.join(backends.BACKENDS)})")
    add_training_args(p)
    p.add_argument("--reuse", action=argparse.BooleanOptionalAction, default=False,
                   help="keep each backend's earlier worker result in --output-dir (and its interpreter, as "
                        "tox envs leave them); train only those missing")
    p.add_argument("--compare-only", action=argparse.BooleanOptionalAction, default=False,
                   help="only compare the worker and check results already in --output-dir")
    p.add_argument("--python", action="append", default=[], metavar="BACKEND=PATH",
                   help="interpreter for one backend's subprocesses (default: this one, or with --reuse the "
                        "one that made the worker result)")
    p.add_argument("--images", type=int, default=1000, help="test images for the numerics level (default: 1000)")
    p.add_argument("--grad-batch", type=int, default=128, help="batch for the loss and gradients (default: 128)")
    p.add_argument("--init-models", default="",
                   help="registered models (comma-separated) whose shared initial weights are compared at "
                        "level 2 (default: every registered model)")
    p.add_argument("--prob-tolerance", type=float, default=1e-5,
                   help="max |difference| of probabilities (default: 1e-05)")
    p.add_argument("--rel-tolerance", type=float, default=1e-4,
                   help="relative difference of loss and gradients (default: 0.0001)")
    p.add_argument("--accuracy-tolerance", type=auto_or_float, default=None, metavar="PP",
                   help="max spread of test accuracy in percentage points (default: auto: from the run's "
                        "training steps, docs/parity.md; a run too short to judge is refused)")
    p.add_argument("--accuracy-floor", type=auto_or_float, default=None, metavar="FRACTION",
                   help="test accuracy each backend's training run must reach, a fraction; 0 for none "
                        "(default: auto, as --accuracy-tolerance)")
    args = p.parse_args(argv)
    args.backends = parse_backends(args.backends)
    parse_seeds(args.seeds)
    if args.accuracy_floor is not None and not 0 <= args.accuracy_floor < 1:
        raise UsageError(f"Expected --accuracy-floor as a fraction in [0, 1), 0 for none. "
                         f"Received: accuracy_floor={args.accuracy_floor}")
    if not 1 <= args.images <= 10000 or not 1 <= args.grad_batch <= args.images:
        raise UsageError(f"Expected 1 <= --grad-batch <= --images <= 10000. Received: images={args.images}, "
                         f"grad_batch={args.grad_batch}")
    return args


def parse_sub_args(command, argv):
    p = argparse.ArgumentParser(prog=f"python -m mnist_keras3.parity {command}")
    p.add_argument("--backend", required=True, choices=backends.BACKENDS, help="the backend of this process")
    if command == "worker":
        add_training_args(p)
    else:
        p.add_argument("--sources", required=True,
                       help="comma-separated backends whose <out>/<backend>/model.keras to load here")
        p.add_argument("--weights", required=True, help="the shared .weights.h5 for the numerics level")
        p.add_argument("--init-dir", help="a folder of <model>.weights.h5 (initial weights of every model) "
                                          "to compare too (default: none)")
        p.add_argument("--init-models", default="", help="only these models of --init-dir (default: all)")
        p.add_argument("--images", type=int, default=1000, help="test images (default: 1000)")
        p.add_argument("--grad-batch", type=int, default=128, help="batch for loss and gradients (default: 128)")
        p.add_argument("--data-dir", help="folder with the MNIST files (default: MNIST_KERAS3_DATA, then the cache)")
        p.add_argument("--output-dir", default=DEFAULT_OUTPUT, help=f"results folder (default: {DEFAULT_OUTPUT})")
        p.add_argument("--no-isolate", action="store_true",
                       help="let this process import the other backends' frameworks (default: hidden, "
                            "as if only --backend were installed)")
        p.add_argument("--debug", action=argparse.BooleanOptionalAction, default=False,
                       help="show tracebacks on errors")
    return p.parse_args(argv)


class _Hide:
    """Wraps one meta path finder so that it does not find these top-level packages (nor their
    submodules): `import tensorflow` fails and importlib.util.find_spec returns None, exactly as
    where the package is not installed."""

    def __init__(self, finder, names):
        self.finder, self.names = finder, tuple(names)

    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in self.names:
            return None
        return self.finder.find_spec(fullname, path, target)

    def __getattr__(self, name):  # invalidate_caches, find_distributions, ...
        return getattr(self.finder, name)


def sub_main(command, argv):
    """One backend's part, in this process: pick the backend first, then import keras code."""
    args = parse_sub_args(command, argv)
    if command == "check" and not args.no_isolate:
        # Load as a process with only this backend installed would: a model.keras that needs
        # another backend's framework to load must fail here too, not only under tox.
        # Not sys.modules[name] = None: Keras tests `"tensorflow" in sys.modules` (its
        # preprocessing layers do), which must stay False as in a real single-backend install.
        hidden = [b for b in backends.BACKENDS if b != args.backend and b not in sys.modules]
        sys.meta_path[:] = [_Hide(f, hidden) if hasattr(f, "find_spec") else f for f in sys.meta_path]
    backends.activate(args.backend)
    from . import worker  # imports keras: only now that the backend is set

    if command == "worker":
        sweep = {seed: training_args(args, seed) for seed in parse_seeds(args.seeds)}
        worker.worker(args.backend, args.output_dir, training_args(args), args.seed, sweep)
    else:
        worker.check(args.backend, args.output_dir, args.sources.split(","), args.weights,
                            args.data_dir, args.images, args.grad_batch, args.init_dir,
                     parse_init_models(args.init_models))
    return 0


def interpreters(args, out):
    """The python that runs each backend's subprocesses."""
    chosen = {}
    for item in args.python:
        name, sep, path = item.partition("=")
        if not sep or name not in args.backends:
            raise UsageError(f"Expected --python BACKEND=PATH for one of {', '.join(args.backends)}. "
                             f"Received: --python {item!r}")
        chosen[name] = path
    for b in args.backends:
        recorded = out / b / "worker.json"
        if b not in chosen and args.reuse and recorded.is_file():
            python = runs.read_json(recorded).get("python")
            if python and Path(python).is_file():
                chosen[b] = python
        chosen.setdefault(b, sys.executable)
    return chosen


def run_step(python, command, backend, args):
    cmd = [python, "-m", "mnist_keras3.parity", command, "--backend", backend, *args]
    env = {**os.environ, "KERAS_BACKEND": backend, "PYTHONUNBUFFERED": "1"}
    done = subprocess.run(cmd, env=env)
    if done.returncode != 0:
        raise MnistKeras3Error(f"the parity {command} for {backend} failed (exit {done.returncode}); its "
                               f"output is above. Command: {' '.join(cmd)}")


def test_curve(folder, worker):
    """Test accuracy after each epoch, when the run validated on the test set (validation_split 0)."""
    m = runs.read_metrics(folder / worker["training"]["run_dir"])
    if m is None:
        return None
    return m["history"].get("val_accuracy") if m.get("validation_source") == "test set" else None


def compare(out, names, args):
    """Level by level, from the files in `out`; returns (checks, markdown, json-able summary)."""
    missing = [str(out / b / f) for b in names for f in ("worker.json", "check.json", "check.npz")
               if not (out / b / f).is_file()]
    if missing:
        raise UsageError(f"Missing parity results: {', '.join(missing)}. Run the report without --compare-only "
                         "(or `tox -e <backend>` for the backend).")
    workers = {b: runs.read_json(out / b / "worker.json") for b in names}
    tolerance, floor = pc.training_tolerances(workers[names[0]]["training"]["config"], args.accuracy_tolerance,
                                              args.accuracy_floor)
    checks_read = {b: pc.read_check(out / b) for b in names}

    checks = pc.compare_structure({b: w["structure"] for b, w in workers.items()})
    digests = {b: m["weights_sha256"] for b, (m, _, _, _) in checks_read.items()}
    num = pc.compare_numerics({b: o for b, (_, o, _, _) in checks_read.items()}, args.prob_tolerance,
                              args.rel_tolerance)
    if len(set(digests.values())) != 1:  # the premise of level 2: one weight file for all
        num.insert(0, pc.check(2, "the same weight file in every backend", False,
                               f"{len(set(digests.values()))} different files", "one file", str(digests)))
    checks += num
    checks += pc.compare_init_models({b: init for b, (_, _, _, init) in checks_read.items()}, args.prob_tolerance,
                                     args.rel_tolerance)
    predictions = {(src, b): classes for b, (_, _, got, _) in checks_read.items() for src, classes in got.items()}
    errors = {(src, b): msg for b, (m, _, _, _) in checks_read.items() for src, msg in m["load_errors"].items()}
    port, matrix = pc.compare_portability(predictions, errors)
    checks += port
    checks += pc.compare_training({b: {"accuracy": w["training"]["test"]["accuracy"],
                                       "config": w["training"]["config"],
                                       "test_curve": test_curve(out / b, w)} for b, w in workers.items()},
                                  tolerance, floor)
    checks += pc.compare_seeds({b: w["training"].get("seed_sweep") or {} for b, w in workers.items()}, floor)
    infos = {b: {**w["info"], "accuracy": w["training"]["test"]["accuracy"],
                 "train_seconds": w["training"]["train_seconds"]} for b, w in workers.items()}
    md = pc.markdown(checks, names, matrix, infos)
    summary = {
        "passed": all(c["passed"] for c in checks),
        "backends": names,
        "reference": names[0],
        "weights": checks_read[names[0]][0]["weights"],
        "tolerances": {"probabilities": args.prob_tolerance, "relative": args.rel_tolerance,
                       "accuracy_pp": tolerance, "accuracy_floor": floor},
        "checks": checks,
        "portability": {f"{a}->{b}": v for (a, b), v in matrix.items()},
        "backend_info": infos,
        "interpreters": {b: checks_read[b][0]["python"] for b in names},
    }
    return checks, md, summary


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in ("worker", "check"):
        return sub_main(argv[0], argv[1:])
    args = parse_args(argv)
    out = Path(args.output_dir)
    names = args.backends
    if not args.compare_only:
        # Everything that can refuse the run does so before the first backend trains.
        if not (args.reuse and all((out / b / "worker.json").is_file() for b in names)):
            pc.training_tolerances(planned_config(args), args.accuracy_tolerance, args.accuracy_floor)
        pythons = interpreters(args, out)
        check_installed(names, pythons)
        out.mkdir(parents=True, exist_ok=True)
        for b in names:  # one at a time: training runs get the machine to themselves
            if args.reuse and (out / b / "worker.json").is_file():
                print(f"[{b}] reusing {out / b / 'worker.json'}", flush=True)
                continue
            run_step(pythons[b], "worker", b,
                     [*training_args(args), "--seeds", args.seeds, "--output-dir", str(out)])
        weights = out / names[0] / "model.weights.h5"  # the reference backend's trained weights
        init_dir = out / names[0] / "init"  # and its initial weights of every registered model
        parse_init_models(args.init_models, runs.read_json(out / names[0] / "worker.json")["structure"])
        for b in names:
            run_step(pythons[b], "check", b, [*(["--init-dir", str(init_dir)] if init_dir.is_dir() else []),
                "--sources", ",".join(names), "--weights", str(weights), "--images", str(args.images),
                "--grad-batch", str(args.grad_batch), "--init-models", args.init_models, "--output-dir", str(out),
                *(["--data-dir", args.data_dir] if args.data_dir else [])])
    checks, md, summary = compare(out, names, args)
    title = f"# Parity: {', '.join(names)} (reference {names[0]})\n\n"
    runs.write_text(out / "parity.md", title + md)
    runs.write_json(out / "parity.json", summary)
    print("\n" + title + md, flush=True)
    print(f"report: {out / 'parity.md'}, {out / 'parity.json'}")
    failed = [c for c in checks if not c["passed"]]
    if failed:
        raise ParityFailure(f"{len(failed)} of {len(checks)} parity checks failed: "
                            f"{', '.join(c['area'] + ': ' + c['name'] for c in failed)}. See {out / 'parity.md'}")
    return 0
