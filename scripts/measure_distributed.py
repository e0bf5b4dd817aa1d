#!/usr/bin/env python
"""Data-parallel against one device, per backend, on this machine: the same recipe (tutorial model,
3 epochs, batch 64, seed 42) trained plainly and with --distribute data-parallel over 2 CPU devices
or processes; test accuracy and training seconds per epoch of each, into a JSON file
(docs/benchmarks/distributed-2cpu.json, cited by docs/distributed.md). One backend per call merges
into the file:

    python scripts/measure_distributed.py --backend torch --json docs/benchmarks/distributed-2cpu.json

torch: the native loop alone, then DDP under torchrun --nproc-per-node 2 (gloo); tensorflow: fit on one
device, then MirroredStrategy over --devices 2; jax: fit on one device, then DataParallel over 2 host
devices (--devices 2) and over 2 processes (jax.distributed, KERAS_DISTRIBUTION_*).
"""

import argparse
import json
import os
import pathlib
import platform
import socket
import subprocess
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[1]
RECIPE = ["--model", "tutorial", "--epochs", "3", "--batch-size", "64", "--seed", "42"]


def port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def train(backend, mode, out):
    """Run one mode of `backend` into the folder `out`; its metrics.json."""
    env = {**os.environ, "KERAS_BACKEND": backend}
    cmd = [sys.executable, "-m", "mnist_keras3.train", *RECIPE, "--output-dir", str(out)]
    dp = ["--distribute", "data-parallel"]
    if mode == "one device":
        cmds = [cmd + (["--loop", "native"] if backend == "torch" else ["--loop", "fit"])]
    elif mode == "torchrun 2 processes":
        cmds = [[sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", port(),
                 *cmd[1:], *dp]]
    elif mode == "2 devices":
        cmds = [cmd + dp + ["--devices", "2"]]
    else:  # jax, 2 processes
        env.update(KERAS_DISTRIBUTION_JOB_ADDRESSES=f"127.0.0.1:{port()}", KERAS_DISTRIBUTION_NUM_PROCESSES="2")
        cmds = [cmd + dp, cmd + dp]
    procs = [subprocess.Popen(c, env={**env, "KERAS_DISTRIBUTION_PROCESS_ID": str(i)}, cwd=REPO)
             for i, c in enumerate(cmds)]
    for p in procs:
        if p.wait(timeout=900):
            raise SystemExit(f"{backend} {mode}: exit {p.returncode}")
    (run,) = [p for p in out.iterdir() if p.is_dir()]
    return json.loads((run / "metrics.json").read_text())


MODES = {"torch": ["one device", "torchrun 2 processes"], "tensorflow": ["one device", "2 devices"],
         "jax": ["one device", "2 devices", "2 processes"]}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--backend", required=True, choices=sorted(MODES))
    p.add_argument("--json", required=True, type=pathlib.Path)
    args = p.parse_args()
    results = json.loads(args.json.read_text()) if args.json.is_file() else {
        "machine": {"cores": os.cpu_count(), "python": platform.python_version()},
        "recipe": " ".join(RECIPE), "backends": {}}
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, mode in enumerate(MODES[args.backend]):
            m = train(args.backend, mode, pathlib.Path(tmp) / str(i))
            seconds = m["train_seconds_this_session"]
            rows[mode] = {"test_accuracy": m["test"]["accuracy"], "test_loss": m["test"]["loss"],
                          "train_seconds_per_epoch": round(seconds / m["epochs_this_session"], 2),
                          "loop": m["loop"]["ran"], "distribution": m["distribution"]}
    base = rows["one device"]
    for row in rows.values():
        row["accuracy_minus_one_device_pp"] = round(100 * (row["test_accuracy"] - base["test_accuracy"]), 2)
        row["overhead_seconds_per_epoch"] = round(row["train_seconds_per_epoch"] - base["train_seconds_per_epoch"], 2)
    results["backends"][args.backend] = {"versions": {"backend": m["backend_version"], "keras": m["keras_version"]},
                                         "load_average": os.getloadavg(), "modes": rows}
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({k: {x: v[x] for x in ("test_accuracy", "train_seconds_per_epoch")} for k, v in rows.items()}))


if __name__ == "__main__":
    main()
