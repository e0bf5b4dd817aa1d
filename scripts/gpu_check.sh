#!/usr/bin/env bash
# One epoch of the tutorial model under each installed backend, with `fit` and the native loop,
# then one line each: backend, loop, device, training samples/s (of that one epoch, so compiling
# included), test accuracy. Made for a GPU
# machine (is the GPU used, and how fast?); on a CPU-only machine it reports CPU.
#
#   scripts/gpu_check.sh                       # every installed backend, a full epoch of batch 64
#   BACKENDS="jax torch" BATCH=256 scripts/gpu_check.sh
#   MAX_STEPS=20 scripts/gpu_check.sh          # a quick check that everything runs
#
# Settings (environment): PYTHON (default: python3), BACKENDS (default: the installed ones),
# LOOPS (default: "fit native"), BATCH (default: 64), MAX_STEPS (default: 0, the whole epoch),
# MNIST_KERAS3_DATA as for training.
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
BACKENDS=${BACKENDS:-$("$PYTHON" -c "from mnist_keras3.backends import installed_backends; print(' '.join(installed_backends()))")}
LOOPS=${LOOPS:-fit native}
BATCH=${BATCH:-64}
MAX_STEPS=${MAX_STEPS:-0}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
else
    echo "no nvidia-smi: expect device CPU"
fi

printf '%-11s %-7s %-28s %12s %9s\n' backend loop device samples/s accuracy
status=0
for backend in $BACKENDS; do
    for loop in $LOOPS; do
        dir="$OUT/$backend-$loop"
        if ! "$PYTHON" -m mnist_keras3.train --backend "$backend" --loop "$loop" --epochs 1 \
                --batch-size "$BATCH" --max-steps-per-epoch "$MAX_STEPS" --output-dir "$dir" \
                >"$dir.log" 2>&1; then
            printf '%-11s %-7s FAILED: %s\n' "$backend" "$loop" "$(tail -n 1 "$dir.log")"
            status=1
            continue
        fi
        "$PYTHON" - "$dir" "$backend" "$loop" <<'PY'
import json, pathlib, sys
run = next(pathlib.Path(sys.argv[1]).iterdir())
m = json.loads((run / "metrics.json").read_text())
print(f"{sys.argv[2]:<11} {sys.argv[3]:<7} {m['device'][:28]:<28} {m['train_samples_per_second']:>12,.0f} "
      f"{m['test']['accuracy']:>9.4f}")
PY
    done
done
exit $status
