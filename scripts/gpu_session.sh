#!/usr/bin/env bash
# One prepared run on a lent GPU machine (the device tool's `run`), for issue 26's measurements and
# the GPU acceptance checks, in two phases that each fit one call:
#
#   scripts/gpu_session.sh speed   # --loops auto, fast.toml x 3 seeds, bench --profile (torch, jax)
#   scripts/gpu_session.sh check   # the mission's command timed, fast.toml in mixed-bf16, gpu_check.py, GPU tests
#
# A session gets 15 minutes of device time, the machine's start (a minute or two) and its idle
# waits included, so the two phases' step caps add up to under 12 minutes (speed 380 s, check 330 s),
# each phase's steps ordered by what issue 26 needs first: run `speed`, then `check` at once while
# the machine is warm (timeout_s 420 and 360). The caps are ceilings; a step cut short leaves its log.
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
speed)  # 380 s of caps
    command -v nvidia-smi >/dev/null && nvidia-smi -L
    step 130 loops "${bench[@]}" --loops auto --batch-sizes 64,256 --rounds 1 --no-tta --json "$OUT/loops-auto-gpu.json"
    step 170 fast "${bench[@]}" --recipe configs/fast.toml --seeds 3 --no-peer --json "$OUT/fast-recipe-3seeds-gpu.json"
    # Where the step's time goes, compiled torch (auto on a GPU) and jax, against plain PyTorch's.
    step 80 profile "${bench[@]}" --profile --batch-sizes 64,256 --rounds 1 --json "$OUT/profile-gpu.json"
    ;;
check)  # 330 s of caps
    # The mission's command: the tutorial, 10 epochs at batch 32 (issue 26: <= 5 s, >= 97%), whose
    # metrics.json says how the step ran (loop.step); both runs' files go into one log.
    step 80 mission-torch "$PY" -m mnist_keras3.train --backend torch --output-dir /tmp/mission
    step 50 mission-jax "$PY" -m mnist_keras3.train --backend jax --output-dir /tmp/mission
    [ -z "${DRY_RUN:-}" ] && for f in /tmp/mission/*/metrics.json; do echo "== $f"; cat "$f"; done >>"$OUT/mission-torch.log"
    # --precision mixed-bf16: its accuracy and speed beside float32's (the speed phase's fast rows).
    step 60 bf16 "${bench[@]}" --recipe configs/fast.toml --precision mixed-bf16 --seeds 1 --no-peer \
        --json "$OUT/fast-recipe-bf16-gpu.json"
    # The jobs a GPU's default paths take (the whole acceptance run does not fit a session's time).
    step 100 gpu-check "$PY" scripts/gpu_check.py --backends torch,jax --only tutorial-fit,tutorial-auto,fast,strong,tools \
        --json "$OUT/gpu-check.json"
    step 40 tests env KERAS_BACKEND=torch "$PY" -m pytest -v -p no:cacheprovider tests/test_device_paths.py \
        --junitxml "$OUT/tests-torch.xml"
    ;;
*)
    echo "error: expected the phase speed or check. Received: $phase" >&2
    exit 2
    ;;
esac
