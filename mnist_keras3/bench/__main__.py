"""`python -m mnist_keras3.bench`: the training-speed benchmark (report.py)."""

import sys

from ..errors import run_cli
from .report import main

if __name__ == "__main__":
    sys.exit(run_cli(main))
