#!/usr/bin/env python
"""Training speed of every installed backend against a plain PyTorch loop, or with --recipe FILE
--seeds N a recipe's seconds to 99.0% and 99.5% test accuracy beside a plain PyTorch loop and
keras-io's convnet: the same as `python -m mnist_keras3.bench` (see `--help`), runnable from a
checkout without installing."""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from mnist_keras3.bench.report import main  # noqa: E402
from mnist_keras3.errors import run_cli  # noqa: E402

if __name__ == "__main__":
    sys.exit(run_cli(main))
