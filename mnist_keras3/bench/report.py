"""Training speed of every installed backend, `fit` and native loop, against a plain PyTorch loop
measured in the same run.

    python -m mnist_keras3.bench                          # everything installed, batch 32, 64, 256
    python -m mnist_keras3.bench --backends tensorflow --loops native --batch-sizes 64 --rounds 1 --no-tta
    python scripts/benchmark.py --json bench.json         # the same

Each measurement runs in its own subprocess (a process has one Keras backend; its peak RSS is its
own). Throughput: training samples per second of each epoch after a warm-up epoch (compiling and
tracing happen there), at most --max-samples per epoch; the median over the timed epochs of all
rounds. Rounds run the jobs in alternating order, so a machine that gets busier or quieter in the
middle of a run does not favour whoever ran first. The ratio is that median over the reference's
median at the same batch size. Time to accuracy: training seconds (compiling included, evaluation
excluded) until the test accuracy measured after an epoch first reaches --target.

This module is the command (`python -m mnist_keras3.bench` runs its main() through
bench/__main__.py); bench/worker.py is one job, in its own process.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

from .. import backends
from ..config import LOOPS
from ..errors import UsageError


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m mnist_keras3.bench", description=__doc__.split("\n")[0])
    p.add_argument("--backends", default=",".join(backends.installed_backends()),
                   help="comma-separated (default: the installed ones, %(default)s)")
    p.add_argument("--loops", default=",".join(LOOPS), help="comma-separated, of fit and native (default: %(default)s)")
    p.add_argument("--batch-sizes", default="32,64,256", help="comma-separated (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=3,
                   help="timed epochs per job, after one warm-up (default: %(default)s)")
    p.add_argument("--max-samples", type=int, default=12800, help="cap on training samples per timed "
                   "epoch, 0 for the whole set (default: %(default)s)")
    p.add_argument("--rounds", type=int, default=2,
                   help="passes over all jobs, order alternating (default: %(default)s)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads for every job, the reference's "
                   "included; 0 for each framework's default (default: %(default)s)")
    p.add_argument("--target", type=float, default=0.97,
                   help="test accuracy for time-to-accuracy (default: %(default)s)")
    p.add_argument("--tta-batch-size", type=int, default=32,
                   help="batch size of the time-to-accuracy runs (default: %(default)s)")
    p.add_argument("--tta-max-epochs", type=int, default=15,
                   help="give up after this many epochs (default: %(default)s)")
    p.add_argument("--no-tta", action="store_true", help="skip the time-to-accuracy runs")
    p.add_argument("--recipe", metavar="TOML", help="also time a config file's recipe to --recipe-target "
                   "under each backend, e.g. configs/fast.toml (default: none)")
    p.add_argument("--recipe-target", type=float, default=0.99,
                   help="test accuracy the --recipe runs aim at (default: %(default)s)")
    p.add_argument("--data-dir", help="MNIST folder (default: as train: MNIST_KERAS3_DATA, the cache, ...)")
    p.add_argument("--json", default=f"runs/benchmark-{time.strftime('%Y%m%d-%H%M%S')}.json",
                   help="where the results go (default: runs/benchmark-<time>.json)")
    p.add_argument("--timeout", type=int, default=1800, help="seconds allowed per job (default: %(default)s)")
    p.add_argument("--worker", metavar="JSON", help=argparse.SUPPRESS)  # one job, in a subprocess
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    return p.parse_args(argv)


def _csv(text, kind, allowed=None, cast=str):
    items = [cast(t.strip()) for t in text.split(",") if t.strip()]
    bad = [i for i in items if allowed is not None and i not in allowed]
    if not items or bad:
        raise UsageError(f"Expected {kind} among {', '.join(map(str, allowed or ['...']))}. Received: {text!r}")
    return items


def plan(args):
    """The speed jobs of one round: per batch size, the reference, then each backend and loop."""
    names = _csv(args.backends, "backends", backends.installed_backends())
    loops = _csv(args.loops, "loops", LOOPS)
    try:
        sizes = _csv(args.batch_sizes, "batch sizes", cast=int)
    except ValueError as err:
        raise UsageError(f"Expected comma-separated integers for --batch-sizes. "
                         f"Received: {args.batch_sizes!r}") from err
    jobs = []
    for bs in sizes:
        jobs.append({"kind": "reference", "backend": "torch", "loop": "reference", "batch_size": bs})
        jobs += [{"kind": "keras", "backend": b, "loop": lp, "batch_size": bs} for b in names for lp in loops]
    if "torch" not in backends.installed_backends():
        jobs = [j for j in jobs if j["kind"] != "reference"]
    return jobs, names, loops, sizes


def run_job(job, args):
    """One job in a fresh interpreter; returns its result dict (or the error it printed)."""
    spec = {"epochs": args.epochs, "max_samples": args.max_samples, "threads": args.threads,
            "data_dir": args.data_dir, "target": args.target, "max_epochs": args.tta_max_epochs, **job}
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # from a checkout
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "KERAS_BACKEND": job["backend"],
           "PYTHONPATH": os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)}
    if args.threads:  # OpenMP pools (torch, oneDNN) read this at start-up
        env["OMP_NUM_THREADS"] = str(args.threads)
    try:
        out = subprocess.run([sys.executable, "-m", "mnist_keras3.bench", "--worker", json.dumps(spec)],
                             capture_output=True, text=True, timeout=args.timeout, env=env)
    except subprocess.TimeoutExpired:
        return {**job, "error": f"timed out after {args.timeout} s"}
    lines = out.stdout.strip().splitlines()
    if out.returncode or not lines:
        return {**job, "error": (out.stderr.strip().splitlines() or ["no output"])[-1][:300]}
    return json.loads(lines[-1])


def machine():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "load_average_start": [round(x, 2) for x in os.getloadavg()]}


def summarize(speed, tta, sizes):
    """Medians per (backend, loop, batch) and ratios to the reference at the same batch size."""
    groups = {}
    for r in speed:
        groups.setdefault((r["backend"], r["loop"], r["batch_size"]), []).append(r)
    rows = []
    for (b, lp, bs), rs in groups.items():
        ok = [r for r in rs if "error" not in r]
        per_epoch = [v for r in ok for v in r["samples_per_s"]]
        per_cpu = [v for r in ok for v in r["samples_per_cpu_s"]]
        rows.append({"backend": b, "loop": lp, "batch_size": bs,
                     "samples_per_s": round(statistics.median(per_epoch), 1) if per_epoch else None,
                     "samples_per_cpu_s": round(statistics.median(per_cpu), 1) if per_cpu else None,
                     "epochs_timed": len(per_epoch),
                     "peak_rss_mb": max((r["peak_rss_mb"] for r in ok), default=None),
                     "device": ok[0]["device"] if ok else None,
                     "error": None if ok else rs[0]["error"]})
    for key, ratio in (("samples_per_s", "ratio"), ("samples_per_cpu_s", "cpu_ratio")):
        ref = {r["batch_size"]: r[key] for r in rows if r["loop"] == "reference"}
        for r in rows:
            base = ref.get(r["batch_size"])
            r[ratio] = round(r[key] / base, 2) if base and r[key] else None
    order = {"reference": 0, "fit": 1, "native": 2}
    rows.sort(key=lambda r: (sizes.index(r["batch_size"]), r["loop"] != "reference", r["backend"], order[r["loop"]]))
    return rows


def _ratio(value):
    # None when the reference did not run (torch not installed in this environment).
    return "n/a (no reference)" if value is None else f"{value:.2f}x"


def markdown(rows, tta, info, args):
    out = [f"Device: {info['device']} | CPU: {info['cpu']}, {info['cores']} cores | threads per job: "
           f"{args.threads or 'framework default'} | {args.epochs} timed epochs x {args.rounds} rounds, "
           f"<= {args.max_samples or 'all'} samples each | load average {info['load_average_start']} -> "
           f"{info['load_average_end']}", "",
           "| batch | backend | loop | samples/s | x plain PyTorch | samples/CPU-s | x plain PyTorch (CPU) "
           "| peak RSS (MB) |", "| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        name = "plain PyTorch (reference)" if r["loop"] == "reference" else r["backend"]
        loop = "-" if r["loop"] == "reference" else r["loop"]
        if r["samples_per_s"] is None:
            out.append(f"| {r['batch_size']} | {name} | {loop} | error: {r['error']} | | | | |")
            continue
        out.append(f"| {r['batch_size']} | {name} | {loop} | {r['samples_per_s']:,.0f} | {_ratio(r['ratio'])} "
                   f"| {r['samples_per_cpu_s']:,.0f} | {_ratio(r['cpu_ratio'])} | {r['peak_rss_mb']:,.0f} |")
    if tta:
        out += ["", f"Time to {args.target:.0%} test accuracy (batch {args.tta_batch_size}; training seconds, "
                "compiling included, evaluation excluded):", "",
                "| backend | loop | seconds | epochs | test accuracy then |", "| --- | --- | ---: | ---: | ---: |"]
        for r in tta:
            name = "plain PyTorch (reference)" if r["loop"] == "reference" else r["backend"]
            loop = "-" if r["loop"] == "reference" else r["loop"]
            if "error" in r:
                out.append(f"| {name} | {loop} | error: {r['error']} | | |")
            elif r["seconds"] is None:
                out.append(f"| {name} | {loop} | not reached | {r['epochs']} | {r['accuracy']:.4f} |")
            else:
                out.append(f"| {name} | {loop} | {r['seconds']:.1f} | {r['epochs']} | {r['accuracy']:.4f} |")
    return "\n".join(out)


def load_recipe(path):
    """The settings of a train config file, validated as train would (backend and threads are the
    benchmark's own)."""
    from ..config import build_config

    cfg = build_config(path)
    if cfg.dataset != "mnist" or cfg.distribute != "none":
        raise UsageError(f"Expected a recipe on MNIST without --distribute. Received: {path} with "
                         f"dataset={cfg.dataset!r}, distribute={cfg.distribute!r}")
    return {k: v for k, v in vars(cfg).items() if k not in ("backend", "threads") and v is not None}


def recipe_markdown(recipe, cfg, args):
    if not recipe:
        return ""
    out = [f"Time to {args.recipe_target:.1%} test accuracy with {args.recipe} ({cfg['model']}, batch "
               f"{cfg['batch_size']}, {cfg['optimizer']} lr {cfg['lr']:g}, {cfg['lr_schedule']} schedule, at most "
               f"{cfg['epochs']} epochs; training seconds, compiling included, evaluation excluded):", "",
           "| backend | seconds | epochs | test accuracy then |", "| --- | ---: | ---: | ---: |"]
    for r in recipe:
        if "error" in r:
            out.append(f"| {r['backend']} | error: {r['error']} | | |")
        else:
            seconds = "not reached" if r["seconds"] is None else f"{r['seconds']:.1f}"
            out.append(f"| {r['backend']} | {seconds} | {r['epochs']} | {r['accuracy']:.4f} |")
    return "\n\n" + "\n".join(out)  # a blank line after the table above it


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        from .worker import work

        print(json.dumps(work(json.loads(args.worker))))
        return 0
    for key in ("epochs", "rounds", "tta_max_epochs", "tta_batch_size"):
        if getattr(args, key) < 1:
            raise UsageError(f"Invalid value for --{key.replace('_', '-')}: {getattr(args, key)} (expected >= 1)")
    if args.threads < 0 or args.max_samples < 0:
        raise UsageError("Expected --threads and --max-samples >= 0.")
    jobs, names, loops, sizes = plan(args)
    recipe_cfg = load_recipe(args.recipe) if args.recipe else None  # a bad file fails before any job
    info = machine()
    speed = []
    for rnd in range(args.rounds):
        for job in (jobs if rnd % 2 == 0 else jobs[::-1]):
            r = run_job({**job, "mode": "speed"}, args)
            speed.append(r)
            got = f"{statistics.median(r['samples_per_s']):,.0f} samples/s" if "error" not in r else r["error"]
            print(f"round {rnd + 1} batch {job['batch_size']:>4} {job['backend']:>10} {job['loop']:>9}: {got}",
                  flush=True)
    tta = []
    if not args.no_tta:
        tta_jobs = [j for j in jobs if j["batch_size"] == sizes[0]]
        for job in tta_jobs:
            r = run_job({**job, "batch_size": args.tta_batch_size, "mode": "tta"}, args)
            tta.append(r)
            print(f"time to {args.target:.0%}: {job['backend']:>10} {job['loop']:>9}: "
                  f"{r.get('seconds', r.get('error'))}", flush=True)
    recipe = []
    if args.recipe:
        for name in names:
            r = run_job({"kind": "keras", "backend": name, "loop": "fit", "batch_size": recipe_cfg["batch_size"],
                         "mode": "recipe", "recipe": recipe_cfg, "target": args.recipe_target}, args)
            recipe.append(r)
            print(f"{args.recipe} to {args.recipe_target:.1%}: {name:>10}: {r.get('seconds', r.get('error'))}",
                  flush=True)
    info["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    devices = {r.get("device") for r in speed if "error" not in r}
    info["device"] = ", ".join(sorted(d for d in devices if d)) or "unknown"
    rows = summarize(speed, tta, sizes)
    table = markdown(rows, tta, info, args) + recipe_markdown(recipe, recipe_cfg, args)
    print("\n" + table)
    from .. import runs

    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    runs.write_json(args.json, {"machine": info, "settings": {k: v for k, v in vars(args).items() if k != "worker"},
                                "summary": rows, "time_to_accuracy": tta,
                                "recipe": {"file": args.recipe, "config": recipe_cfg, "runs": recipe}
                                if args.recipe else None,
                                "raw": speed, "markdown": table})
    print(f"\nresults: {args.json}")
    return 0

