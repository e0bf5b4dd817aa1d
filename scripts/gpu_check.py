"""The GPU acceptance run: every job a GPU machine must pass, one row each, a JSON file, exit 1 on any failure.

    python scripts/gpu_check.py                              # every installed backend, one epoch a job
    python scripts/gpu_check.py --backends jax,torch --json gpu-check.json
    python scripts/gpu_check.py --max-steps 5 --only tutorial-auto,tools   # a quick look (CPU too)

Per installed backend: the tutorial model (its constant learning rate) through every loop (fit,
native, auto); configs/fast.toml and configs/strong.toml (scheduled rates, BatchNorm, augmentation)
for one epoch; --distribute data-parallel over every GPU present (torchrun, one process per GPU,
under torch); the same command with CUDA_VISIBLE_DEVICES="" (it must train on the CPU); --devices
one more than there are (a one-line error, exit 2). Then evaluate, predict and export --format onnx
on the first backend's tutorial model. Each job is the real CLI in a subprocess, as a user runs it.
Row: backend, job, device, loop that ran, samples/s (of the one epoch: compiling included),
test accuracy, pass/fail with the reason, and how the native loop ran its step (metrics.json's
loop.step: torch.compile with CUDA graphs, say).
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from mnist_keras3.backends import installed_backends  # noqa: E402  (imports no framework)

JOBS = ("tutorial-fit", "tutorial-native", "tutorial-auto", "fast", "strong", "data-parallel", "cpu-only",
        "too-many-devices")
TOOLS = ("evaluate", "predict", "export-onnx")  # "tools" in --only: all three


def gpu_count():
    """GPUs the driver shows (nvidia-smi), 0 without one: no framework is imported here."""
    if os.environ.get("CUDA_VISIBLE_DEVICES") == "" or not shutil.which("nvidia-smi"):
        return 0
    out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True)
    names = [n for n in out.stdout.splitlines() if n.strip()] if out.returncode == 0 else []
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return len(visible.split(",")) if visible and names else len(names)


def train_command(python, backend, job, gpus):
    """(argv, extra environment, expected exit code) of one job."""
    train = [python, "-m", "mnist_keras3.train", "--backend", backend, "--epochs", "1"]
    if job.startswith("tutorial-"):
        return train + ["--loop", job.split("-", 1)[1]], {}, 0
    if job in ("fast", "strong"):
        return train + ["--config", str(REPO / "configs" / f"{job}.toml")], {}, 0
    if job == "cpu-only":
        return train, {"CUDA_VISIBLE_DEVICES": ""}, 0
    parallel = ["--distribute", "data-parallel", "--batch-size", "64"]
    if job == "too-many-devices":
        if backend == "torch":  # torchrun decides the processes: one more than there are GPUs
            return [python, "-m", "torch.distributed.run", "--nproc-per-node", str(gpus + 1), *train[1:], *parallel], \
                {}, (2 if gpus else None)
        return train + parallel + ["--devices", str(max(gpus, 1) + 1 if gpus else 0)], {}, (2 if gpus else None)
    if backend == "torch":
        return [python, "-m", "torch.distributed.run", "--nproc-per-node", str(max(gpus, 1)), *train[1:],
                *parallel], {}, 0
    return train + parallel, {}, 0


def run_job(cmd, env, out_dir, max_steps, timeout):
    extra = ["--output-dir", str(out_dir)] + (["--max-steps-per-epoch", str(max_steps)] if max_steps else [])
    started = time.time()
    try:
        done = subprocess.run(cmd + extra, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "PYTHONPATH": str(REPO), **env})
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout} s", time.time() - started
    return done, None, time.time() - started


def last_error(done):
    lines = [x for x in (done.stderr or "").splitlines() if x.startswith("error: ")]
    return lines[-1] if lines else ((done.stderr or done.stdout).strip().splitlines() or ["(no output)"])[-1]


# The torch loop's one-line warnings when its step is not in the form a GPU should run (tests/test_bench.py
# checks them against backends/torch/loop.py): compiled -> traced, traced -> eager, CUDA graphs skipped.
FALLBACKS = ("warning: torch.compile could not compile", "warning: torch.jit.trace could not follow",
             "warning: torch.compile ran this model's training step without CUDA graphs")


def step_fallback(stderr):
    """The warning a run printed when its torch step fell back (compiled -> traced, traced -> eager,
    CUDA graphs skipped), or None: training carried on, but not in the form this machine should take."""
    return next((line for line in (stderr or "").splitlines() if line.startswith(FALLBACKS)), None)


def check_training(backend, job, cmd, env, expect, args, gpus, work):
    row = {"backend": backend, "job": job, "command": " ".join(cmd[1:]), "device": None, "loop": None,
           "samples_per_second": None, "accuracy": None}
    if expect is None:
        return {**row, "result": "skipped", "why": "no GPU: asking for more devices than exist needs some"}
    out_dir = work / f"{backend}-{job}"
    done, problem, seconds = run_job(cmd, env, out_dir, args.max_steps, args.timeout)
    row["seconds"] = round(seconds, 1)
    if problem:
        return {**row, "result": "fail", "why": problem}
    if expect:
        err = last_error(done)
        ok = done.returncode == expect and err.startswith("error: ") and "Traceback" not in done.stderr
        return {**row, "result": "pass" if ok else "fail", "exit_code": done.returncode, "why": err}
    if done.returncode != 0:
        return {**row, "result": "fail", "exit_code": done.returncode, "why": last_error(done)}
    runs = [p for p in out_dir.iterdir() if (p / "metrics.json").is_file()]
    if len(runs) != 1:
        return {**row, "result": "fail", "why": f"expected one run folder, found {len(runs)}"}
    m = json.loads((runs[0] / "metrics.json").read_text())
    row.update(device=m["device"], loop=m["loop"]["ran"], step=m["loop"].get("step"),
               samples_per_second=m["train_samples_per_second"],
               accuracy=m["test"]["accuracy"], run_dir=str(runs[0]), world_size=m["distribution"].get("world_size"))
    why = None
    if job == "cpu-only" and m["device"] != "CPU":
        why = f'CUDA_VISIBLE_DEVICES="" trained on {m["device"]}, not the CPU'
    elif job.startswith("tutorial-") and job != "tutorial-fit" and m["loop"]["ran"] != "native":
        why = f"the native loop did not run: {m['loop']['fallback_reason']}"
    elif step_fallback(done.stderr):
        why = step_fallback(done.stderr)[:300]
    elif job == "data-parallel" and gpus > 1 and m["distribution"].get("world_size") != gpus:
        why = f"world size {m['distribution'].get('world_size')}, expected the {gpus} GPUs"
    elif m["test"]["accuracy"] < args.min_accuracy:
        why = f"test accuracy {m['test']['accuracy']:.4f} < {args.min_accuracy}"
    return {**row, "result": "fail" if why else "pass", "why": why}


def check_tools(python, backend, model, work, timeout, tools=TOOLS):
    """evaluate, predict (a digit written as a PNG from the test set) and export --format onnx."""
    rows = []
    digit = work / "digit.png"
    draw = ("import sys; from mnist_keras3.data.mnist import load_mnist; from PIL import Image; "
            "(_, _), (x, y) = load_mnist(); Image.fromarray(x[0]).save(sys.argv[1]); print(int(y[0]))")
    made = subprocess.run([python, "-c", draw, str(digit)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    for job, cmd in (("evaluate", ["mnist_keras3.evaluate", model, "--output", str(work / "evaluate")]),
                     ("predict", ["mnist_keras3.predict", model, str(digit), "--json"]),
                     ("export-onnx", ["mnist_keras3.export", model, "--format", "onnx", "--output",
                                      str(work / "model.onnx")])):
        if job not in tools:
            continue
        full = [python, "-m", *cmd, "--backend", backend]
        try:
            done = subprocess.run(full, capture_output=True, text=True, timeout=timeout,
                                  env={**os.environ, "PYTHONPATH": str(REPO)})
        except subprocess.TimeoutExpired:
            rows.append({"backend": backend, "job": job, "result": "fail", "why": f"timed out after {timeout} s"})
            continue
        why = None if done.returncode == 0 else last_error(done)
        if job == "predict" and not why:
            if made.returncode != 0:
                why = f"could not write a test digit: {last_error(made)}"
            else:
                (result,) = json.loads(done.stdout)["results"]
                if result.get("digit") != int(made.stdout):
                    why = f"predicted {result.get('digit')} for a {int(made.stdout)} of the test set"
        rows.append({"backend": backend, "job": job, "command": " ".join(full[1:]), "result": "fail" if why else "pass",
                     "why": why})
    return rows


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--backends", help="comma-separated (default: every installed backend)")
    p.add_argument("--only", help=f"comma-separated jobs among {', '.join(JOBS + TOOLS)}, or tools for the "
                                  "last three (default: all)")
    p.add_argument("--max-steps", type=int, default=0, help="cap on steps per epoch, 0 for whole epochs")
    p.add_argument("--min-accuracy", type=float, default=0.85, help="a training job passes at or above this")
    p.add_argument("--timeout", type=int, default=900, help="seconds a job may take")
    p.add_argument("--json", default="gpu-check.json", help="where the rows go (default: gpu-check.json)")
    p.add_argument("--work-dir", help="where the runs go (default: a temporary folder, removed)")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    backends = args.backends.split(",") if args.backends else installed_backends()
    only = set(args.only.split(",")) if args.only else set(JOBS) | {"tools"}
    tools = TOOLS if "tools" in only else tuple(t for t in TOOLS if t in only)
    gpus = gpu_count()
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="gpu-check-"))
    print(f"GPUs: {gpus}; backends: {', '.join(backends)}; work folder {work}", flush=True)
    rows = []
    for backend in backends:
        for job in (j for j in JOBS if j in only):
            cmd, env, expect = train_command(sys.executable, backend, job, gpus)
            row = check_training(backend, job, cmd, env, expect, args, gpus, work)
            rows.append(row)
            print(f"{row['backend']:<11} {row['job']:<17} {str(row['device'] or '-')[:24]:<24} "
                  f"{row['loop'] or '-':<7} {row['samples_per_second'] or 0:>10,.0f} "
                  f"{row['accuracy'] or 0:>7.4f}  " + (f"[{row['step']}]  " if row.get("step") else "")
                  + row["result"].upper() + (f": {row['why']}" if row["why"] else ""),
                  flush=True)
    if tools:
        model = next((r["run_dir"] for r in rows if r.get("run_dir") and r["job"].startswith("tutorial")), None)
        if model is None:
            rows.append({"backend": backends[0], "job": "tools", "result": "fail", "why": "no tutorial model trained"})
        else:
            backend = next(r["backend"] for r in rows if r.get("run_dir") == model)
            for row in check_tools(sys.executable, backend, str(Path(model) / "model.keras"), work, args.timeout,
                                   tools):
                rows.append(row)
                print(f"{row['backend']:<11} {row['job']:<17} {row['result'].upper()}"
                      + (f": {row['why']}" if row["why"] else ""), flush=True)
    failed = [r for r in rows if r["result"] == "fail"]
    Path(args.json).write_text(json.dumps({"gpus": gpus, "backends": backends, "rows": rows,
                                           "failed": len(failed)}, indent=2) + "\n")
    print(f"gpu check: {len(rows) - len(failed)} of {len(rows)} rows pass; rows in {args.json}")
    if not args.work_dir:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
