#!/usr/bin/env python
"""Load test of the web server (`python -m mnist_keras3.serve`) on the loopback address: requests/s,
p50/p95/p99 latency, errors by status and the server's RSS before and after; the same as
`python -m mnist_keras3.loadtest` (see `--help`), runnable from a checkout without installing."""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from mnist_keras3.errors import run_cli  # noqa: E402
from mnist_keras3.loadtest import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(run_cli(main))
