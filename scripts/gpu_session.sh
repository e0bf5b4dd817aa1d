#!/usr/bin/env bash
# One prepared run on a lent GPU machine (the device tool's `run`), for issue 26's measurements and
# the GPU acceptance checks, in two phases that each fit one call (10 minutes at most):
#
#   scripts/gpu_session.sh speed   # bench --profile (compiled and traced torch, jax), --loops auto, fast.toml x 3 seeds
#   scripts/gpu_session.sh check   # gpu_check.py, the mission's command timed, the loop tests on the GPU
#
# That machine has Python 3.12 with CUDA builds of torch and jax, and no keras, no internet: carry
# the wheels and MNIST, both git-ignored, in the call (carry: [".whl", ".mnist"]):
#   .whl/   pip download --no-deps --only-binary=:all: --python-version 3.12 ... keras namex optree tomli-w
#           fastapi starlette pydantic pydantic-core annotated-types typing-inspection uvicorn python-multipart
#   .mnist/ a copy of the MNIST IDX files (../shared/datasets/mnist does not travel)
# Every step runs under `timeout` and writes into $OUT as it goes (at most 8 files a phase: what the
# tool brings back), so a step cut short still leaves the others' files. DRY_RUN=1 prints the steps.
set -uo pipefail
cd "$(dirname "$0")/.."
phase=${1:?usage: scripts/gpu_session.sh speed|check}
OUT=${OUT:-runs/gpu-session}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 MNIST_KERAS3_DATA=${MNIST_KERAS3_DATA:-$PWD/.mnist}
if [ -d .whl ] && [ -z "${DRY_RUN:-}" ]; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || { echo "error: the carried wheels did not install" >&2; exit 1; }
    export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
fi

step() {  # step SECONDS NAME COMMAND...: one step, its output in $OUT/NAME.log, its exit code reported
    local seconds=$1 name=$2
    shift 2
    echo "== $name (at most ${seconds} s): $*"
    [ -n "${DRY_RUN:-}" ] && return 0
    local start=$SECONDS
    timeout "$seconds" "$@" >"$OUT/$name.log" 2>&1
    echo "== $name: exit $? after $((SECONDS - start)) s"
    tail -n 25 "$OUT/$name.log"
}

bench=("$PY" -m mnist_keras3.bench --backends torch,jax)
case $phase in
speed)
    command -v nvidia-smi >/dev/null && nvidia-smi -L
    step 150 profile "${bench[@]}" --profile --batch-sizes 64,256 --rounds 2 --json "$OUT/profile-gpu.json"
    step 80 profile-traced "$PY" -m mnist_keras3.bench --backends torch --jit-compile off --profile \
        --batch-sizes 64,256 --rounds 2 --json "$OUT/profile-torch-traced-gpu.json"
    step 150 loops "${bench[@]}" --loops auto --batch-sizes 64,256 --rounds 1 --no-tta --json "$OUT/loops-auto-gpu.json"
    step 180 fast "${bench[@]}" --recipe configs/fast.toml --seeds 3 --no-peer --json "$OUT/fast-recipe-3seeds-gpu.json"
    ;;
check)
    step 240 gpu-check "$PY" scripts/gpu_check.py --backends torch,jax --json "$OUT/gpu-check.json"
    # The mission's command: the tutorial, 10 epochs at batch 32 (issue 26: <= 5 s, >= 97%).
    step 120 mission "$PY" -m mnist_keras3.train --backend torch --output-dir /tmp/mission
    [ -z "${DRY_RUN:-}" ] && cp /tmp/mission/*/metrics.json "$OUT/mission-metrics.json"
    step 180 tests env KERAS_BACKEND=torch "$PY" -m pytest -q -p no:cacheprovider tests/test_loops.py \
        tests/test_device_paths.py tests/test_auto_loop.py --junitxml "$OUT/tests-torch.xml"
    ;;
*)
    echo "error: expected the phase speed or check. Received: $phase" >&2
    exit 2
    ;;
esac
