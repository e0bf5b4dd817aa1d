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
excluded) until the test accuracy measured after an epoch first reaches --target. Every job records
the device it ran on, the reference included (it runs where Keras's torch backend runs: on the GPU
when there is one); a table gets a device column when its jobs ran on more than one device or off
the CPU, and the speed table the warm-up epoch's seconds.

With --recipe FILE (a train config, e.g. configs/fast.toml) the command is the recipe benchmark
instead: for seeds 1..--seeds, the recipe under each backend with the loop a user gets
(the file's loop, "auto" unless it names one), the same recipe as a plain PyTorch loop (the
reference: its model written in torch, bench/reference_models.py) and the --peer recipe
(configs/kerasio.toml, keras-io's convnet) under each backend, every job for all its epochs. The
table: per run, the median over seeds of the training seconds to 99.0% and 99.5% test accuracy,
the median and lowest final accuracy, and the recipe's seconds to 99.0% over both peers'; and per
run the first epoch's compile and warm-up seconds (how: bench/worker.py) with the seconds to each
mark without them.

    python -m mnist_keras3.bench --recipe configs/fast.toml --seeds 3 --json docs/benchmarks/fast.json

This module is the command (`python -m mnist_keras3.bench` runs its main() through
bench/__main__.py); bench/worker.py is one job, in its own process.
"""

import argparse
import json
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time

from .. import backends, runs
from ..config import LOOPS, PRECISIONS
from ..errors import UsageError
from . import tables

DEFAULT_PEER = "configs/kerasio.toml"
MARKS = (0.99, 0.995)  # the test accuracies a recipe is timed to


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m mnist_keras3.bench", description=__doc__.split("\n")[0])
    p.add_argument("--backends", default=",".join(backends.installed_backends()),
                   help="comma-separated (default: the installed ones, %(default)s)")
    # auto is one of fit and native (whichever train picks): timing it again would only repeat one of them.
    p.add_argument("--loops", default="fit,native", help=f"comma-separated, of {', '.join(LOOPS)} "
                   "(default: %(default)s)")
    p.add_argument("--batch-sizes", default="32,64,256", help="comma-separated (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=3,
                   help="timed epochs per job, after one warm-up (default: %(default)s)")
    p.add_argument("--max-samples", type=int, default=12800, help="cap on training samples per timed "
                   "epoch, 0 for the whole set (default: %(default)s)")
    p.add_argument("--rounds", type=int, default=2,
                   help="passes over all jobs, order alternating (default: %(default)s)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for every job, the reference's "
                   "included; 0 for each framework's default (default: 1, and 0 with --recipe, as train uses)")
    p.add_argument("--jit-compile", choices=("auto", "on", "off"), help="every Keras job's jit_compile setting "
                   "(train's --jit-compile; default: train's default, or the recipe's)")
    p.add_argument("--precision", choices=tuple(PRECISIONS), help="every Keras job's dtype policy (train's "
                   "--precision; default: train's default, or the recipe's); the plain PyTorch reference stays float32")
    p.add_argument("--target", type=float, default=0.97,
                   help="test accuracy for time-to-accuracy (default: %(default)s)")
    p.add_argument("--tta-batch-size", type=int, default=32,
                   help="batch size of the time-to-accuracy runs (default: %(default)s)")
    p.add_argument("--tta-max-epochs", type=int, default=15,
                   help="give up after this many epochs (default: %(default)s)")
    p.add_argument("--no-tta", action="store_true", help="skip the time-to-accuracy runs")
    p.add_argument("--recipe", metavar="TOML", help="instead of the speed benchmark, time a config file's "
                   "recipe to 99.0%% and 99.5%% test accuracy under each backend, beside the plain PyTorch "
                   "reference and --peer, e.g. configs/fast.toml (default: none)")
    p.add_argument("--profile", action=argparse.BooleanOptionalAction, default=False,
                   help="instead of the speed benchmark, split each backend's "
                   "native loop step (and the reference's) into forward, backward, optimizer and host time "
                   "(ms per step), at each --batch-sizes, median of --rounds groups of --profile-steps steps")
    p.add_argument("--model", default="tutorial", help="--profile: the registered model to profile; the "
                   "reference runs its plain PyTorch version (default: %(default)s)")
    p.add_argument("--profile-steps", type=int, default=100,
                   help="--profile: steps per profiled group (default: %(default)s)")
    p.add_argument("--seeds", type=int, default=1,
                   help="--recipe: run every job at seeds 1..N (default: %(default)s)")
    p.add_argument("--peer-seeds", type=int, help="--recipe: run the peer at seeds 1..K only, K <= --seeds "
                   "(keras-io's 15 epochs cost many times the recipe's; default: --seeds)")
    p.add_argument("--peer", metavar="TOML", help=f"--recipe: the peer recipe run under each backend "
                   f"(default: {DEFAULT_PEER}, keras-io's convnet)")
    p.add_argument("--no-peer", action="store_true", help="--recipe: skip the peer recipe")
    p.add_argument("--max-steps-per-epoch", type=int, default=0, help="--recipe: cap on steps per epoch, for "
                   "a smoke test (the figures are then no benchmark; default: 0, whole epochs)")
    # Smoke tests only: evaluate on the first N test images (the figures are then not MNIST's test accuracy).
    p.add_argument("--max-test-samples", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--data-dir", help="MNIST folder (default: as train: MNIST_KERAS3_DATA, the cache, ...)")
    p.add_argument("--json", default=f"runs/benchmark-{time.strftime('%Y%m%d-%H%M%S')}.json",
                   help="where the results go (default: runs/benchmark-<time>.json)")
    p.add_argument("--timeout", type=int, default=1800, help="seconds allowed per job (default: %(default)s)")
    p.add_argument("--worker", metavar="JSON", help=argparse.SUPPRESS)  # one job, in a subprocess
    p.add_argument("--debug", action=argparse.BooleanOptionalAction, default=False, help="show tracebacks on errors")
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
            "jit_compile": args.jit_compile, "precision": args.precision,
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
        warmups = [r["warmup_seconds"] for r in ok if r.get("warmup_seconds") is not None]
        rows.append({"backend": b, "loop": lp, "batch_size": bs,
                     "samples_per_s": round(statistics.median(per_epoch), 1) if per_epoch else None,
                     "samples_per_cpu_s": round(statistics.median(per_cpu), 1) if per_cpu else None,
                     "epochs_timed": len(per_epoch),
                     "peak_rss_mb": max((r["peak_rss_mb"] for r in ok), default=None),
                     "device": _devices(ok),
                     "warmup_seconds": round(statistics.median(warmups), 3) if warmups else None,
                     "error": None if ok else rs[0]["error"]})
    for key, ratio in (("samples_per_s", "ratio"), ("samples_per_cpu_s", "cpu_ratio")):
        ref = {r["batch_size"]: r[key] for r in rows if r["loop"] == "reference"}
        for r in rows:
            base = ref.get(r["batch_size"])
            r[ratio] = round(r[key] / base, 2) if base and r[key] else None
    order = {"reference": 0, "auto": 1, "fit": 2, "native": 3}
    rows.sort(key=lambda r: (sizes.index(r["batch_size"]), r["loop"] != "reference", r["backend"], order[r["loop"]]))
    return rows


def _devices(results):
    """The devices a group of results ran on, as one name ("CPU", "NVIDIA H200"; several joined by
    ", "); None when none says."""
    return ", ".join(sorted({r["device"] for r in results if r.get("device")})) or None


def _policy(args):
    """The heading's note on --precision and --jit-compile, where given (the reference is float32, eager)."""
    given = [f"{k} {v}" for k, v in (("precision", args.precision), ("jit_compile", args.jit_compile)) if v]
    return f" | Keras jobs' {', '.join(given)}" if given else ""


def markdown(rows, tta, info, args):
    out = [f"Device: {info['device']} | CPU: {info['cpu']}, {info['cores']} cores | threads per job: "
           f"{args.threads or 'framework default'} | {args.epochs} timed epochs x {args.rounds} rounds, "
           f"<= {args.max_samples or 'all'} samples each{_policy(args)} | load average {info['load_average_start']} -> "
           f"{info['load_average_end']}", ""]
    out += tables.speed_table({"summary": rows})
    out += ["", "Warm-up epoch: the untimed first epoch's seconds (tracing, compiling), median over rounds."]
    if tta:
        out += ["", f"Time to {args.target:.0%} test accuracy (batch {args.tta_batch_size}; training seconds, "
                "compiling included, evaluation excluded):", ""]
        out += tables.tta_table({"time_to_accuracy": tta})
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


def median_seconds(values):
    """The median seed's seconds to a mark, a seed that never reached it (None) ranking after every
    seed that did: None when the median seed did not reach it."""
    if not values:
        return None
    ranked = sorted(values, key=lambda v: math.inf if v is None else v)
    mid = len(ranked) // 2
    if len(ranked) % 2:
        return ranked[mid]
    a, b = ranked[mid - 1], ranked[mid]
    return None if a is None or b is None else round((a + b) / 2, 3)


ROLE_ORDER = {"recipe": 0, "reference": 1, "peer": 2}


def row_name(role, backend):
    return {"recipe": backend, "reference": "plain PyTorch (reference)",
            "peer": f"keras-io convnet ({backend})"}[role]


def recipe_summary(runs, reference_note=None):
    """One row per (role, backend) over its seeds: the loop that ran, the median seconds to each mark,
    the median and lowest final test accuracy, and for the recipe rows the median seconds to 99.0%
    over the reference's and over the peer's under the same backend."""
    groups = {}
    for r in runs:
        groups.setdefault((r["role"], r["backend"]), []).append(r)
    rows = []
    for (role, backend), rs in groups.items():
        ok = [r for r in rs if "error" not in r]
        finals = [r["final_accuracy"] for r in ok if r.get("final_accuracy") is not None]
        loops = sorted({r["loop"] for r in ok})
        rows.append({
            "name": row_name(role, backend), "role": role, "backend": backend,
            "loop": ", ".join(loops) or None,
            "loop_fallback_reasons": sorted({r["loop_fallback_reason"] for r in ok if r.get("loop_fallback_reason")}),
            "seeds": [r["seed"] for r in ok], "errors": [f"seed {r['seed']}: {r['error']}" for r in rs if "error" in r],
            "seconds_by_seed": {f"{m:g}": [(r["reached"][f"{m:g}"] or {}).get("seconds") for r in ok] for m in MARKS},
            "seconds": {f"{m:g}": median_seconds([(r["reached"][f"{m:g}"] or {}).get("seconds") for r in ok])
                        for m in MARKS} if ok else {f"{m:g}": None for m in MARKS},
            "seconds_without_compile": {
                f"{m:g}": median_seconds([(r["reached"][f"{m:g}"] or {}).get("seconds_without_compile")
                                          for r in ok]) for m in MARKS},
            "compile_seconds": median_seconds([r.get("compile_seconds") for r in ok]),
            "device": _devices(ok),
            "median_accuracy": round(statistics.median(finals), 4) if finals else None,
            "min_accuracy": min(finals) if finals else None,
            "note": None})
    if reference_note:
        rows.append({"name": row_name("reference", "torch"), "role": "reference", "backend": "torch", "loop": None,
                     "loop_fallback_reasons": [], "seeds": [], "errors": [], "seconds_by_seed": {},
                     "seconds": {f"{m:g}": None for m in MARKS}, "median_accuracy": None, "min_accuracy": None,
                     "seconds_without_compile": {f"{m:g}": None for m in MARKS}, "compile_seconds": None,
                     "device": None, "note": reference_note})
    key = f"{MARKS[0]:g}"
    ref = next((r for r in rows if r["role"] == "reference"), None)
    peers = {r["backend"]: r for r in rows if r["role"] == "peer"}
    for r in rows:
        for name, base in (("ratio_reference", ref), ("ratio_peer", peers.get(r["backend"]))):
            mine, theirs = r["seconds"][key], (base or {}).get("seconds", {}).get(key)
            r[name] = round(mine / theirs, 2) if r["role"] == "recipe" and mine and theirs else None
    rows.sort(key=lambda r: (ROLE_ORDER[r["role"]], r["backend"]))
    return rows


def _reached(run, mark):
    hit = run["reached"][f"{mark:g}"]
    return f"{mark:.1%} not reached" if hit is None else f"{mark:.1%} at {hit['seconds']:.1f} s (epoch {hit['epoch']})"


def recipe_markdown(rows, recipe_file, cfg, peer_file, info, args):
    """The recipe benchmark's table (rows from recipe_summary)."""
    schedule = cfg["lr_schedule"] + (f" (warm-up {cfg['warmup_fraction']:g})" if cfg["lr_schedule"] == "onecycle"
                                     else "")
    marks = " and ".join(f"{m:.1%}" for m in MARKS)
    precision = args.precision or cfg.get("precision", "float32")  # --precision, else the recipe's
    out = [f"Recipe {recipe_file}: model {cfg['model']}, batch {cfg['batch_size']}, {cfg['optimizer']} lr "
           f"{cfg['lr']:g} betas ({cfg['beta_1']:g}, {cfg['beta_2']:g}), {schedule} schedule, label smoothing "
           f"{cfg['label_smoothing']:g}, {cfg['epochs']} epochs, precision {precision}; peer: {peer_file or 'none'}; "
           f"seeds 1-{args.seeds}.",
           f"Training seconds (compiling included, evaluation excluded) until the test accuracy after an epoch "
           f"first reaches {marks}: the median over seeds, a seed that never reached it counting as slower than "
           f"any that did; compile + warm-up: the first epoch's seconds beyond its steps at the steady rate "
           f"(bench/worker.py), median over seeds, and the seconds without it. "
           f"Device: {info['device']} | CPU: {info['cpu']}, {info['cores']} cores | threads per "
           f"job: {args.threads or 'framework default'} | load average {info['load_average_start']} -> "
           f"{info['load_average_end']}"]
    if args.max_steps_per_epoch or args.max_test_samples:
        out.append(f"SMOKE RUN, not a benchmark: at most {args.max_steps_per_epoch or 'all'} steps per epoch, "
                   f"{args.max_test_samples or 'all'} test images.")
    out += ["", *tables.recipe_table(rows, MARKS)]
    return "\n".join(out)


def _find_config(path):
    """A config path as given, else relative to the checkout (the default peer from any folder)."""
    if os.path.exists(path):
        return path
    checkout = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), path)
    return checkout if os.path.exists(checkout) else path


def run_recipes(args, names, info):
    """The recipe benchmark (--recipe): every job at every seed, each in its own process."""
    from .reference_models import reference_unsupported

    recipe_cfg = load_recipe(args.recipe)  # a bad file fails before any job
    peer_file = None if args.no_peer else _find_config(args.peer or DEFAULT_PEER)
    if peer_file and not os.path.exists(peer_file):
        raise UsageError(f"Peer recipe not found: {peer_file}. Pass an existing TOML file to --peer, or --no-peer.")
    peer_cfg = load_recipe(peer_file) if peer_file else None
    ref_note = reference_unsupported(recipe_cfg)
    if ref_note is None and "torch" not in backends.installed_backends():
        ref_note = "torch is not installed"
    jobs = [("recipe", b, recipe_cfg) for b in names]
    jobs += [] if ref_note else [("reference", "torch", recipe_cfg)]
    jobs += [("peer", b, peer_cfg) for b in names] if peer_cfg else []
    runs = []
    for seed in range(1, args.seeds + 1):
        for role, backend, cfg in (jobs if seed % 2 else jobs[::-1]):  # alternate order, as the rounds do
            if role == "peer" and seed > (args.peer_seeds or args.seeds):
                continue
            job = {"kind": "reference" if role == "reference" else "keras", "backend": backend, "role": role,
                   "loop": cfg["loop"], "batch_size": cfg["batch_size"], "mode": "recipe", "seed": seed}
            r = run_job({**job, "recipe": cfg, "marks": list(MARKS), "max_steps_per_epoch": args.max_steps_per_epoch,
                         "max_test_samples": args.max_test_samples}, args)
            r = {**job, **{k: v for k, v in r.items() if k not in ("recipe", "marks")}}
            runs.append(r)
            got = r["error"] if "error" in r else f"loop {r['loop']}, " + ", ".join(
                _reached(r, m) for m in MARKS
            ) + f", final accuracy {r['final_accuracy']:.4f}"
            print(f"seed {seed} {row_name(role, backend):>32}: {got}", flush=True)
    info["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    info["device"] = _devices(runs) or "unknown"
    rows = recipe_summary(runs, ref_note)
    table = recipe_markdown(rows, args.recipe, recipe_cfg, peer_file, info, args)
    versions = {}
    for r in runs:
        if "versions" in r:
            versions.setdefault(r["backend"] if r["role"] != "reference" else "reference", r["versions"])
    result = {"benchmark": "recipe", "command": command_line(args), "machine": info, "versions": versions,
              "settings": settings(args), "marks": list(MARKS),
              "recipe": {"file": args.recipe, "config": recipe_cfg},
              "peer": {"file": peer_file, "config": peer_cfg} if peer_cfg else None,
              "reference": {"unsupported": ref_note}, "summary": rows, "runs": runs, "markdown": table}
    return table, result


def run_profiles(args, jobs, info):
    """--profile: each backend's native loop (the loop `auto` picks for the tutorial run) and the
    reference, split into phases; (markdown table, result dict)."""
    rows = []
    for job in jobs:
        if job["loop"] not in ("reference", "native"):
            continue
        r = run_job({**job, "mode": "profile", "model": args.model, "steps": args.profile_steps,
                     "rounds": args.rounds}, args)
        rows.append(r)
        print(f"profile batch {job['batch_size']:>4} {job['backend']:>10} {job['loop']:>9}: "
              f"{r.get('ms_per_step', r.get('error'))}", flush=True)
    info["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    ref = {r["batch_size"]: r["step_ms"] for r in rows if r["loop"] == "reference" and "error" not in r}
    info["device"] = _devices(rows) or "unknown"
    out = [f"Model {args.model} | Device: {info['device']} | CPU: {info['cpu']}, {info['cores']} cores | "
           f"threads per job: {args.threads or 'framework default'} | "
           f"median of {args.rounds} groups of {args.profile_steps} steps{_policy(args)} | load average "
           f"{info['load_average_start']} -> {info['load_average_end']}", ""]
    for r in rows:
        if "error" not in r:
            r["ratio"] = round(ref[r["batch_size"]] / r["step_ms"], 2) if r["batch_size"] in ref else None
    out += tables.profile_table({"rows": rows})
    out += ["", "Phases of the compiled loops (jax, tensorflow) are differences of whole programs (forward; "
            "forward and gradients; the step): their optimizer column includes the little host work of a call."]
    table = "\n".join(out)
    return table, {"benchmark": "profile", "command": command_line(args), "machine": info,
                   "settings": settings(args),
                   "rows": rows, "markdown": table}


def command_line(args):
    return "python -m mnist_keras3.bench " + shlex.join(runs.relative_arg(a) for a in args.argv)


def settings(args):
    """The parsed flags as the results record them (paths relative, as in command_line)."""
    return {k: runs.relative_arg(v) if isinstance(v, str) else v for k, v in vars(args).items()
            if k not in ("worker", "argv")}


def main(argv=None):
    args = parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else map(str, argv))
    if args.worker:
        from .worker import work

        print(json.dumps(work(json.loads(args.worker))))
        return 0
    for key in ("epochs", "rounds", "tta_max_epochs", "tta_batch_size", "seeds", "profile_steps"):
        if getattr(args, key) < 1:
            raise UsageError(f"Invalid value for --{key.replace('_', '-')}: {getattr(args, key)} (expected >= 1)")
    if args.peer_seeds is not None and not 1 <= args.peer_seeds <= args.seeds:
        raise UsageError(f"Invalid value for --peer-seeds: {args.peer_seeds} (expected 1 to --seeds, {args.seeds})")
    if args.threads is None:
        args.threads = 0 if args.recipe else 1  # a recipe runs as train runs it: each framework's default
    if args.threads < 0 or args.max_samples < 0 or args.max_steps_per_epoch < 0 or args.max_test_samples < 0:
        raise UsageError("Expected --threads, --max-samples and --max-steps-per-epoch >= 0.")
    jobs, names, loops, sizes = plan(args)
    info = machine()
    if args.recipe:
        table, result = run_recipes(args, names, info)
        print("\n" + table)
        write_results(args.json, result)
        return 0
    if args.profile:
        table, result = run_profiles(args, jobs, info)
        print("\n" + table)
        write_results(args.json, result)
        return 0
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
    info["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    info["device"] = _devices(speed) or "unknown"
    rows = summarize(speed, tta, sizes)
    table = markdown(rows, tta, info, args)
    print("\n" + table)
    write_results(args.json, {"benchmark": "speed", "command": command_line(args), "machine": info,
                              "settings": settings(args),
                              "summary": rows, "time_to_accuracy": tta, "raw": speed, "markdown": table})
    return 0


def write_results(path, result):
    from .. import runs

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    runs.write_json(path, result)
    print(f"\nresults: {path}")
