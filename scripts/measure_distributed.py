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

--multihost: each backend's two-hosts commands of docs/distributed.md as they stand (two processes on
127.0.0.1, read from the docs by tests/multihost.py, as the tests run them), beside one device's run of
the same steps; the run folder's figures and the commands' wall seconds:

    python scripts/measure_distributed.py --multihost --json docs/benchmarks/multihost-2cpu.json
"""

import argparse
import json
import os
import pathlib
import platform
import shlex
import socket
import subprocess
import sys
import tempfile
import time

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


def multihost(backend, out):
    """The documented two-hosts commands of `backend` in the folder `out`, then one device's run of the
    same flags; {"two hosts": row, "one device": row}, each with its metrics and wall seconds."""
    sys.path.insert(0, str(REPO / "tests"))
    import multihost as docs  # the docs' commands, as the tests read them

    commands = docs.runnable(docs.documented(backend))
    flags = commands[0][1][commands[0][1].index("mnist_keras3.train") + 1:]
    alone = [a for a in flags if a not in ("--distribute", "data-parallel")]
    alone += ["--loop", "native" if backend == "torch" else "fit"]
    # The runs' folders are their working directories (--output-dir runs): the package from this checkout.
    env = {**os.environ, "KERAS_BACKEND": backend,
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    rows = {}
    for mode, cmds in (("two hosts", commands), ("one device", [({}, [sys.executable, "-m", "mnist_keras3.train",
                                                                        *alone])])):
        folder = out / mode.replace(" ", "-")
        folder.mkdir()
        started = time.monotonic()
        procs = [subprocess.Popen(argv, env={**env, **own}, cwd=folder, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL) for own, argv in cmds]
        try:
            codes = [p.wait(timeout=600) for p in procs]
        finally:
            for p in procs:
                p.kill()
        if any(codes):
            raise SystemExit(f"{backend} {mode}: exit {codes}")
        (run,) = [p for p in (folder / "runs").iterdir() if p.is_dir()]
        m = json.loads((run / "metrics.json").read_text())
        written = [" ".join([*(f"{k}={shlex.quote(v)}" for k, v in own.items()), *map(shlex.quote, argv)])
                   for own, argv in docs.documented(backend)] if mode == "two hosts" else [
            "python -m mnist_keras3.train " + " ".join(alone)]
        rows[mode] = {"commands": written,
                      "wall_seconds": round(time.monotonic() - started, 1), "test_accuracy": m["test"]["accuracy"],
                      "test_loss": m["test"]["loss"], "train_seconds": m["train_seconds_this_session"],
                      "run_folders": len([p for p in (folder / "runs").iterdir() if p.is_dir()]),
                      "loop": m["loop"]["ran"], "distribution": m["distribution"]}
    rows["two hosts"]["accuracy_minus_one_device_pp"] = round(
        100 * (rows["two hosts"]["test_accuracy"] - rows["one device"]["test_accuracy"]), 2)
    return m, rows


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--backend", choices=sorted(MODES), help="one backend (required without --multihost)")
    p.add_argument("--multihost", action="store_true",
                   help="the docs' two-hosts commands (every backend, or --backend)")
    p.add_argument("--json", required=True, type=pathlib.Path)
    args = p.parse_args()
    if args.multihost:
        results = {"machine": {"cores": os.cpu_count(), "python": platform.python_version()},
                   "what": "docs/distributed.md's two-hosts commands, two processes on 127.0.0.1; one device: the "
                           "same flags without --distribute", "backends": {}}
        for backend in [args.backend] if args.backend else ["torch", "tensorflow", "jax"]:
            with tempfile.TemporaryDirectory() as tmp:
                m, rows = multihost(backend, pathlib.Path(tmp))
            results["backends"][backend] = {"versions": {"backend": m["backend_version"], "keras": m["keras_version"]},
                                            "load_average": os.getloadavg(), "runs": rows}
            print(backend, json.dumps({k: v["test_accuracy"] for k, v in rows.items()}))
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        return
    if not args.backend:
        p.error("--backend is required without --multihost")
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
