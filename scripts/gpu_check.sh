#!/usr/bin/env bash
# The GPU acceptance run (scripts/gpu_check.py): every backend, loop and recipe for one epoch, data-parallel
# over every GPU, a CPU-only run, a bad --devices, and evaluate / predict / export on one model; one row
# each, a JSON file, exit 1 on any failure. Arguments go to the script, e.g.
#   scripts/gpu_check.sh --backends torch,jax --json gpu-check.json
#   PYTHON=.venv/bin/python scripts/gpu_check.sh --max-steps 5     # a quick look, on a CPU too
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python3}" scripts/gpu_check.py "$@"
