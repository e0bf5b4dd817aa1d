"""`mnist-keras3 COMMAND ...`: every command of the project behind one console script.

    mnist-keras3 train --config configs/fast.toml --backend jax
    mnist-keras3 evaluate runs/<run>/model.keras
    mnist-keras3 COMMAND --help

Each subcommand is exactly `python -m mnist_keras3.<command>`: the same main(argv), run under the
same error handler (errors.run_cli), so flags, messages and exit codes are the same either way.
A command's module is imported only when it runs, so `mnist-keras3 --help` imports no framework.
"""

import argparse
import importlib
import sys

from . import __version__
from .errors import run_cli

# name -> (module whose main(argv) it runs, one line for --help)
COMMANDS = {
    "train": ("mnist_keras3.train", "train a model; writes runs/<time>-<backend>-<model>/"),
    "evaluate": ("mnist_keras3.evaluate", "test accuracy, per-class report, confusion matrix, worst mistakes"),
    "predict": ("mnist_keras3.predict", "the digit in your own pictures (PNG/JPEG/BMP, folders, stdin)"),
    "export": ("mnist_keras3.export", "ONNX or TF SavedModel, checked on the test set (extra: export)"),
    "serve": ("mnist_keras3.serve", "a drawing page and an HTTP API that batches predictions (extra: serve)"),
    "bench": ("mnist_keras3.bench.report", "samples/s and time to accuracy per backend, against plain PyTorch"),
    "parity": ("mnist_keras3.parity.report", "the same model under every backend: structure, numerics, "
               "portability, training"),
}


def parser():
    p = argparse.ArgumentParser(
        prog="mnist-keras3", description="One Keras 3 MNIST CNN under torch, jax or tensorflow: train it, "
                                         "evaluate, predict, export, serve, benchmark, compare the backends.",
        epilog="`mnist-keras3 COMMAND --help` shows a command's flags; `python -m mnist_keras3.COMMAND` "
               "is the same command.")
    p.add_argument("--version", action="version", version=f"mnist-keras3 {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (_, help) in COMMANDS.items():
        sub.add_parser(name, help=help, add_help=False)
    return p


def main(argv=None):
    """Run one subcommand; the process's exit status. --help, --version and a missing or unknown
    command are argparse's (exit 0, 0 and 2)."""
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    if not argv or argv[0] not in COMMANDS:
        parser().parse_args(argv)  # exits: help, version, or the usage error
    module = importlib.import_module(COMMANDS[argv[0]][0])
    return run_cli(module.main, argv[1:])


def train():
    """The older `mnist-keras3-train` script: `mnist-keras3 train`, under the same error handler."""
    from . import train as command

    return run_cli(command.main)


if __name__ == "__main__":
    sys.exit(main())
