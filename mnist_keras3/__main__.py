"""`python -m mnist_keras3 COMMAND ...`: the `mnist-keras3` console script (cli.py)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
