#!/usr/bin/env python3
"""Render the result tables, the figures in the prose and the plots of README.md and docs/*.md from
the JSON files the commands wrote.

A table in a markdown file sits between two markers, and only the lines between them are generated:

    <!-- report:NAME -->
    | ... the table, rendered from its JSON file ... |
    <!-- /report -->

A figure in a sentence or a table cell sits between two markers on one line (not at its start,
where markdown would end the paragraph): `reaches 99% in <!-- fig:NAME -->8.1-17.7 s<!-- /fig -->`.
A plot is a PNG under docs/plots/ that carries the data it was drawn from (bench/charts.py).

`TABLES`, `FIGURES` and `PLOTS` below say which JSON files and which renderer make each one. Add a
row there (and the markers in the markdown file) for a new JSON file; the renderers take the loaded
JSON and return the table's lines, the figure's text or the plot's data.

    python scripts/report.py --check   # exit 1, with a diff, if a table, figure or plot differs from its JSON
    python scripts/report.py --write   # rewrite the tables and figures in place, redraw stale plots
    python scripts/report.py --show NAME   # print one rendered table or figure

--write redraws a plot only when its data changed (PNG bytes differ between matplotlib versions);
after a change to how plots are drawn, delete the PNGs under docs/plots/ and run --write.

Standard library only, but for drawing a plot under --write (matplotlib): no keras, no framework; of
the package only mnist_keras3.bench.tables and .charts, the benchmark's own renderers.
"""

import argparse
import difflib
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the checkout's package, installed or not
from mnist_keras3.bench import charts, tables  # noqa: E402  (stdlib only; charts imports matplotlib to draw)
from mnist_keras3.bench.tables import profile_table, seconds_cell, speed_table, tta_table  # noqa: E402

# ---------------------------------------------------------------- renderers: loaded JSON -> lines


def recipe_table(data):
    """A recipe benchmark (`python -m mnist_keras3.bench --recipe TOML`). Two layouts: today's
    (`"benchmark": "recipe"`, one `summary` row per run over its seeds, seconds to each mark) and the
    first one (`recipe.runs`: one run per backend, the seconds to the recipe's target)."""
    if data.get("benchmark") == "recipe":
        return tables.recipe_table(data["summary"])
    runs = data["recipe"]["runs"]
    target = runs[0]["target"] if runs else 0.99
    out = [f"| backend | loop | seconds to {target:.0%} | epochs | test accuracy then |",
           "| --- | --- | ---: | ---: | ---: |"]
    for r in runs:
        if "error" in r:
            out.append(f"| {r['backend']} | {r['loop']} | error: {r['error']} | | |")
            continue
        out.append(f"| {r['backend']} | {r['loop']} | {seconds_cell(r['seconds'])} | {r['epochs']} "
                   f"| {r['accuracy']:.2%} |")
    return out


def recipes_overview_table(runs):
    """Several recipe benchmarks in one table (the README's): per recipe file, every run that
    trained (each backend, the plain PyTorch reference, the keras-io peer), its seeds, the median
    seconds to 99.0% and 99.5% and the median final accuracy. The peer, the same recipe in every
    file, is shown from the first file that ran it (each file's own run is in docs/speed.md)."""
    out = ["| recipe | model, epochs | run | seeds | s to 99.0% | s to 99.5% | final accuracy (median) |",
           "| --- | --- | --- | ---: | ---: | ---: | ---: |"]
    peers_shown = set()
    for data in runs:
        recipe, cfg = data["recipe"]["file"], data["recipe"]["config"]
        peer_file = (data.get("peer") or {}).get("file")
        for r in data["summary"]:
            if not r.get("seeds") or (r["role"] == "peer" and peer_file in peers_shown):
                continue
            # A peer row trains the peer's config (keras-io's convnet), not the recipe's.
            run_cfg = (data.get("peer") or {}).get("config", {}) if r["role"] == "peer" else cfg
            model, epochs = run_cfg.get("model", ""), run_cfg.get("epochs", "")
            out.append(f"| `{recipe}` | {model}, {epochs} | {r['name']} | {len(r['seeds'])} "
                       f"| {seconds_cell(r['seconds']['0.99'])} | {seconds_cell(r['seconds']['0.995'])} "
                       f"| {r['median_accuracy']:.2%} |")
        peers_shown.add(peer_file)
    return out


def serve_load_table(data):
    """scripts/loadtest.py --json: one row per run (backend, mix, clients), then each run's command."""
    out = ["| run | backend | mix | clients | requests | requests/s | p50 (ms) | p95 (ms) | p99 (ms) | wrong | "
           "statuses | server RSS (MB) | server CPU ms / request | batching |",
           "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | ---: | --- |"]
    for r in data["runs"]:
        lat, rss, b = r["latency_ms"], r["server_rss_mb"], r.get("batching") or {}
        mix = ", ".join(f"{k} {w}" for k, w in r["mix"].items())
        statuses = ", ".join(f"{k}: {v:,}" for k, v in sorted(r["statuses"].items()))
        cpu = "-" if r.get("server_cpu_s") is None else f"{1000 * r['server_cpu_s'] / r['requests']:.2f}"
        out.append(f"| {r['label']} | {r['backend']} | {mix} | {r['clients']} | {r['requests']:,} | "
                   f"{r['requests_per_s']:,.0f} | {lat['p50']} | {lat['p95']} | {lat['p99']} | {r['wrong']} | "
                   f"{statuses} | {rss['before']} -> {rss['after']} | {cpu} | "
                   f"{b.get('max_batch')}, {b.get('window_ms')} ms |")
    out.append("")
    for r in data["runs"]:
        out.append(f"- {r['label']}: {r['date']}, {r['machine']}: `{r['command']}`")
    return out


def gpu_tables(runs):
    """The benchmarks run on a GPU (docs/benchmarks/*-gpu*.json, any of the bench's kinds): per file
    its command, devices and versions, then its table as the benchmark printed it (device column,
    compile and warm-up, ratios to the plain PyTorch reference of the same run); "not measured
    yet", with no figures, while there is none."""
    if not runs:
        return ["Not measured yet: no GPU benchmark file is committed (docs/benchmarks/*-gpu*.json).",
                "The commands in docs/speed.md (its GPU section) write them."]
    out = []
    for data in runs:
        machine, kind = data.get("machine", {}), data.get("benchmark")
        jobs = data.get("runs") or data.get("raw") or data.get("rows") or []
        found = [j.get("versions") or {} for j in jobs]
        versions = sorted({f"{v['backend']} {v['backend_version']}" for v in found if "backend" in v}
                          | {f"torch {v['torch']}" for v in found if "torch" in v}  # the reference's
                          | {f"keras {v['keras_version']}" for v in found if "keras_version" in v})
        out += [f"`{data['command']}`: {machine.get('device', 'unknown device')}; CPU {machine.get('cpu')}, "
                f"{machine.get('cores')} cores; {', '.join(versions) or 'versions not recorded'}", ""]
        if kind == "recipe":
            out += tables.recipe_table(data["summary"])
        elif kind == "profile":
            out += tables.profile_table(data)
        else:
            out += speed_table(data)
            if data.get("time_to_accuracy"):
                out += ["", *tta_table(data)]
        out.append("")
    return out[:-1]


# ---------------------------------------------------------------- figures: loaded JSON -> text


def _span(values, fmt, unit=""):
    """'lo-hi' of `values` in `fmt`, then `unit`; the one value when both ends print the same."""
    lo, hi = fmt(min(values)), fmt(max(values))
    return (lo if lo == hi else f"{lo}-{hi}") + unit


def _named(render, name):
    """A renderer made for one figure, named for --show and errors."""
    render.__name__ = name
    return render


def _pct(v):
    return f"{100 * v:.2f}"


def _rows(data, role):
    return [r for r in data["summary"] if r["role"] == role and r.get("seeds")]


def median_accuracy_span(datas, role="recipe"):
    """The median final test accuracy of each run of `role` in the recipe benchmarks, lowest-highest."""
    return _span([r["median_accuracy"] for d in _listed(datas) for r in _rows(d, role)], _pct, "%")


def peer_accuracy_span(data):
    return median_accuracy_span(data, role="peer")


def final_accuracy_span(datas):
    """The final test accuracy of every seed of every backend in the recipe benchmarks."""
    return _span([r["final_accuracy"] for d in _listed(datas) for r in d["runs"]
                  if r["role"] == "recipe" and "final_accuracy" in r], _pct, "%")


def min_final_accuracy(data):
    return _pct(min(r["min_accuracy"] for r in _rows(data, "recipe"))) + "%"


def seconds_to_mark_span(mark):
    """The median seconds to test accuracy `mark` of each backend's run of the recipe."""
    def render(data):
        return _span([r["seconds"][mark] for r in _rows(data, "recipe")], lambda v: f"{v:.1f}", " s")
    return _named(render, f"seconds_to_{mark}_span")


def reference_seconds(mark):
    """The plain PyTorch reference's median seconds to test accuracy `mark` in a recipe benchmark."""
    def render(data):
        (row,) = _rows(data, "reference")
        return f"{row['seconds'][mark]:.1f} s"
    return _named(render, f"reference_seconds_to_{mark}")


def peer_speedup_span(data):
    """How many times sooner each backend's recipe reaches the first mark than keras-io's convnet
    under the same backend (median seconds over median seconds)."""
    mark = f"{data['marks'][0]:g}"
    peer = {r["backend"]: r["seconds"][mark] for r in _rows(data, "peer")}
    return _span([peer[r["backend"]] / r["seconds"][mark] for r in _rows(data, "recipe")
                  if peer.get(r["backend"]) and r["seconds"][mark]], lambda v: f"{v:.1f}", "x")


def first_recipe_accuracy_span(data):
    """The first recipe benchmark's layout (`recipe.runs`): the test accuracy of each backend."""
    return _span([r["accuracy"] for r in data["recipe"]["runs"] if "error" not in r], _pct, "%")


def metrics_test_accuracy(data):
    """A run's metrics.json: its test accuracy."""
    return _pct(data["test"]["accuracy"]) + "%"


def speed_ratio_span(data):
    """The speed benchmark: every backend's samples/s over the plain PyTorch loop's, all batch sizes."""
    return _span([r["ratio"] for r in data["summary"] if r["loop"] != "reference" and r.get("ratio")],
                 lambda v: f"{v:.2f}", "x")


def tta_epochs(data):
    """The speed benchmark's time to accuracy: the epochs each backend's native loop took."""
    return ", ".join(f"{r['backend']} {r['epochs']}" for r in data["time_to_accuracy"]
                     if r["loop"] == "native" and "error" not in r)


def distributed_max_gap(data):
    """scripts/measure_distributed.py: the largest gap, in percentage points of test accuracy,
    between a backend's several-device run and its one-device run."""
    gaps = [abs(m["accuracy_minus_one_device_pp"]) for b in data["backends"].values() for m in b["modes"].values()]
    return f"{max(gaps):.2f} pp"


def serve_load_span(mix):
    """scripts/loadtest.py --json: requests/s and p99 of the 16-client runs of one `mix`."""
    def render(data):
        runs = [r for rs in _serve_runs(data, mix).values() for r in rs]
        return (f"{_span([r['requests_per_s'] for r in runs], lambda v: f'{v:,.0f}')} requests/s, p99 "
                f"{_span([r['latency_ms']['p99'] for r in runs], lambda v: f'{v:.0f}', ' ms')}")
    return _named(render, f"serve_load_{mix}_span")


def _serve_runs(datas, mix, clients=16):
    """scripts/loadtest.py --json files: their runs of one `mix` at `clients`, by backend in the files' order."""
    by = {}
    for data in _listed(datas):
        for r in data["runs"]:
            if r["mix"] == {mix: 1} and r["clients"] == clients:
                by.setdefault(r["backend"], []).append(r)
    return by


def serve_by_backend(mix, what):
    """Each backend's requests/s or p99 (ms) of its 16-client `mix` runs: one value, or lowest-highest
    over several runs (the repeats' files)."""
    fmt, unit = {"requests_per_s": (lambda v: f"{v:,.0f}", ""), "p99": (lambda v: f"{v:.1f}", " ms")}[what]

    def render(datas):
        pick = (lambda r: r["latency_ms"]["p99"]) if what == "p99" else (lambda r: r[what])
        return ", ".join(f"{b} {_span([pick(r) for r in runs], fmt)}" for b, runs in
                         _serve_runs(datas, mix).items()) + unit
    return _named(render, f"serve_{mix}_{what}_by_backend")


def serve_wrong(datas):
    """Wrong answers over every run of the files."""
    return f"{sum(r['wrong'] for d in _listed(datas) for r in d['runs']):,}"


def serve_one_client_ms(data):
    """The one-client JSON run's median latency."""
    (run,) = [r for rs in _serve_runs(data, "json", clients=1).values() for r in rs]
    return f"{run['latency_ms']['p50']} ms"


def soak_requests(data):
    return f"{max(r['requests'] for r in data['runs'] if 'soak' in r['label']):,}"


def _per_batch(values, unit):
    """'a / b ms' or 'ax / bx', one value per batch size in the file's order (the docs' 'batch 32 / 64')."""
    if unit == "x":
        return " / ".join(f"{v:.2f}x" for v in values)
    return " / ".join(f"{v:.2f}" for v in values) + unit


def loop_change(batch, backends):
    """The speed benchmark: each backend's x plain PyTorch under `fit`, then under its native loop."""
    def render(data):
        ratio = {(r["backend"], r["loop"]): r["ratio"] for r in data["summary"] if r["batch_size"] == batch}
        return ", ".join(f"{b} {ratio[b, 'fit']:.2f}x -> {ratio[b, 'native']:.2f}x" for b in backends)
    return _named(render, f"loop_change_{batch}")


def speed_ratios(backend):
    """The speed benchmark: one backend's x plain PyTorch at each batch size."""
    return _named(lambda data: _per_batch([r["ratio"] for r in data["summary"] if r["backend"] == backend
                                           and r["loop"] != "reference"], "x"), f"speed_ratios_{backend}")


def profile_ms(backend, loop, phase=None):
    """The profile (`--profile`): ms per step of one `phase` of a backend's loop (the whole step
    without one), per batch size."""
    def render(data):
        rows = [r for r in data["rows"] if r["backend"] == backend and r["loop"] == loop]
        return _per_batch([r["ms_per_step"][phase] if phase else r["step_ms"] for r in rows], " ms")
    return _named(render, f"profile_{backend}_{loop}_{phase or 'step'}")


def profile_ratio(backend):
    """The profile: one backend's native step against the reference's, per batch size."""
    return _named(lambda data: _per_batch([r["ratio"] for r in data["rows"] if r["backend"] == backend
                                           and r["loop"] == "native"], "x"), f"profile_ratio_{backend}")


def forward_piece_ms(piece):
    """scripts/jax_forward_pieces.py: ms per step up to `piece`, per batch size."""
    return _named(lambda data: _per_batch([r["ms_per_step"] for r in data["rows"] if r["piece"] == piece], " ms"),
                  f"forward_piece_{piece}")


def step_ops_ms(run):
    """scripts/jax_step_ops.py: the traced step's time in one of its runs."""
    return _named(lambda data: f"{data['runs'][run]['step_us'] / 1000:.2f} ms", f"step_ops_{run}")


def backend_seconds_to_mark(backend, mark):
    """A recipe benchmark: one backend's median seconds to test accuracy `mark`."""
    def render(data):
        return f"{next(r['seconds'][mark] for r in _rows(data, 'recipe') if r['backend'] == backend):.1f} s"
    return _named(render, f"seconds_to_{mark}_{backend}")


def _listed(datas):
    return datas if isinstance(datas, list) else [datas]


# ---------------------------------------------------------------- what goes where

B = "docs/benchmarks/"

# (markdown file, marker name, JSON file or tuple of JSON files, renderer); paths from the repo root.
# A renderer gets the loaded JSON (a list of them for a tuple) and returns the table's lines.
TABLES = [
    ("docs/speed.md", "loops-auto-f", "docs/benchmarks/loops-auto-2cpu-2026-11-30f.json", speed_table),
    ("docs/speed.md", "torch-jit-on", "docs/benchmarks/torch-jit-compile-on-2cpu.json", speed_table),
    ("docs/speed.md", "loops-auto-h", "docs/benchmarks/loops-auto-2cpu-2026-12-04.json", speed_table),
    ("docs/speed.md", "loops-auto-i", "docs/benchmarks/loops-auto-2cpu-2026-12-04b.json", speed_table),
    ("docs/speed.md", "recipe-fast-h", "docs/benchmarks/fast-recipe-3seeds-2cpu-2026-12-04.json", recipe_table),
    ("docs/speed.md", "recipe-fast-bf16", "docs/benchmarks/fast-recipe-bf16-3seeds-2cpu.json", recipe_table),
    ("docs/speed.md", "tta-g", "docs/benchmarks/loops-auto-tta-2cpu-2026-11-30g.json", tta_table),
    ("docs/speed.md", "profile-e", "docs/benchmarks/profile-2cpu-e.json", profile_table),
    ("docs/speed.md", "profile-fast", "docs/benchmarks/profile-fast-2cpu.json", profile_table),
    ("docs/speed.md", "recipe-fast", "docs/benchmarks/fast-recipe-3seeds-2cpu.json", recipe_table),
    ("docs/speed.md", "recipe-strong", "docs/benchmarks/strong-recipe-3seeds-peers-2cpu.json", recipe_table),
    ("docs/speed.md", "recipe-best", "docs/benchmarks/best-recipe-3seeds-tf-2cpu.json", recipe_table),
    ("docs/speed.md", "recipe-best-peers", "docs/benchmarks/best-recipe-peers-2cpu.json", recipe_table),
    ("docs/speed.md", "recipe-best-jax", "docs/benchmarks/best-recipe-3seeds-jax-2cpu.json", recipe_table),
    ("docs/training.md", "recipe-fast-first", "docs/benchmarks/fast-recipe-2cpu.json", recipe_table),
    ("README.md", "readme-results", ("docs/benchmarks/tutorial-recipe-2cpu.json",
                                     "docs/benchmarks/fast-recipe-3seeds-2cpu.json",
                                     "docs/benchmarks/strong-recipe-3seeds-peers-2cpu.json",
                                     "docs/benchmarks/best-recipe-3seeds-tf-2cpu.json",
                                     "docs/benchmarks/best-recipe-peers-2cpu.json"), recipes_overview_table),
    ("docs/serving.md", "serve-load", "docs/benchmarks/serve-load-2cpu.json", serve_load_table),
    ("docs/serving.md", "serve-png-repeats", "docs/benchmarks/serve-png-repeats-2cpu.json", serve_load_table),
    # A pattern: every file it matches (none is fine: the renderer gets an empty list).
    ("docs/speed.md", "gpu", "docs/benchmarks/*-gpu*.json", gpu_tables),
    ("README.md", "gpu", "docs/benchmarks/*-gpu*.json", gpu_tables),
]

TUTORIAL, FAST, STRONG = (B + "tutorial-recipe-2cpu.json", B + "fast-recipe-3seeds-2cpu.json",
                          B + "strong-recipe-3seeds-peers-2cpu.json")
BEST = (B + "best-recipe-3seeds-tf-2cpu.json", B + "best-recipe-peers-2cpu.json")
LOOPS = B + "loops-auto-2cpu-2026-11-30f.json"

# Figures in sentences and table cells, the same shape as TABLES; a renderer returns the text.
FIGURES = [
    ("README.md", "tutorial-accuracy", TUTORIAL, median_accuracy_span),
    ("README.md", "tutorial-bn-accuracy", "docs/results/tutorial-bn-tensorflow-metrics.json", metrics_test_accuracy),
    ("README.md", "strong-noaug-accuracy", B + "fast-recipe-2cpu.json", first_recipe_accuracy_span),
    ("README.md", "fast-accuracy", FAST, median_accuracy_span),
    ("README.md", "strong-accuracy", STRONG, median_accuracy_span),
    ("README.md", "best-accuracy", BEST, final_accuracy_span),
    ("README.md", "kerasio-accuracy", FAST, peer_accuracy_span),
    ("README.md", "fast-seconds-99", FAST, seconds_to_mark_span("0.99")),
    ("README.md", "fast-vs-kerasio", FAST, peer_speedup_span),
    ("README.md", "strong-seconds-99.5", STRONG, seconds_to_mark_span("0.995")),
    ("README.md", "loops-ratio", LOOPS, speed_ratio_span),
    ("README.md", "loops-ratio-now", B + "loops-auto-2cpu-2026-12-04b.json", speed_ratio_span),
    ("README.md", "fast-seconds-99-now", B + "fast-recipe-3seeds-2cpu-2026-12-04.json", seconds_to_mark_span("0.99")),
    ("README.md", "fast-reference-99-now", B + "fast-recipe-3seeds-2cpu-2026-12-04.json", reference_seconds("0.99")),
    ("README.md", "distributed-gap", B + "distributed-2cpu.json", distributed_max_gap),
    ("README.md", "serve-json", B + "serve-load-2cpu.json", serve_load_span("json")),
    ("README.md", "serve-png", B + "serve-load-2cpu.json", serve_load_span("png")),
    ("README.md", "serve-soak", B + "serve-load-2cpu.json", soak_requests),
    ("docs/serving.md", "serve-json-rps", B + "serve-load-2cpu.json", serve_by_backend("json", "requests_per_s")),
    ("docs/serving.md", "serve-json-p99", B + "serve-load-2cpu.json", serve_by_backend("json", "p99")),
    ("docs/serving.md", "serve-png-rps", B + "serve-load-2cpu.json", serve_by_backend("png", "requests_per_s")),
    ("docs/serving.md", "serve-png-p99", B + "serve-load-2cpu.json", serve_by_backend("png", "p99")),
    ("docs/serving.md", "serve-wrong", B + "serve-load-2cpu.json", serve_wrong),
    ("docs/serving.md", "serve-one-client", B + "serve-load-2cpu.json", serve_one_client_ms),
    ("docs/serving.md", "serve-png-p99-six", (B + "serve-load-2cpu.json", B + "serve-png-repeats-2cpu.json"),
     serve_by_backend("png", "p99")),
    ("docs/serving.md", "serve-png-rps-six", (B + "serve-load-2cpu.json", B + "serve-png-repeats-2cpu.json"),
     serve_by_backend("png", "requests_per_s")),
    ("docs/speed.md", "loops-ratio", LOOPS, speed_ratio_span),
    ("docs/speed.md", "tta-epochs-before", B + "2cpu-quiet-default-threads.json", tta_epochs),
    ("docs/speed.md", "fast-min-accuracy", FAST, min_final_accuracy),
    ("docs/speed.md", "fast-vs-kerasio", FAST, peer_speedup_span),
    ("docs/speed.md", "best-accuracy", (*BEST, B + "best-recipe-3seeds-jax-2cpu.json"), final_accuracy_span),
    # The changes that stand: each effect, before and after, from the files the table names.
    ("docs/speed.md", "native-vs-fit", B + "2cpu-quiet-default-threads.json",
     loop_change(32, ("jax", "tensorflow", "torch"))),
    ("docs/speed.md", "fused-adam-torch", B + "profile-2cpu.json", profile_ms("torch", "native", "optimizer")),
    ("docs/speed.md", "fused-adam-reference", B + "profile-2cpu.json", profile_ms("torch", "reference", "optimizer")),
    ("docs/speed.md", "simplify-trace-before", B + "profile-2cpu-blocked.json", profile_ratio("torch")),
    ("docs/speed.md", "simplify-trace-after", B + "profile-2cpu-e.json", profile_ratio("torch")),
    ("docs/speed.md", "im2col-xla", B + "jax-forward-pieces-2cpu.json",
     forward_piece_ms("block 1 with XLA's own convolution")),
    ("docs/speed.md", "im2col-rewritten", B + "jax-forward-pieces-2cpu.json", forward_piece_ms("+ max pool")),
    ("docs/speed.md", "blocked-before", B + "jax-forward-pieces-2cpu.json",
     forward_piece_ms("whole forward to logits")),
    ("docs/speed.md", "blocked-after", B + "jax-forward-pieces-blocked-2cpu.json",
     forward_piece_ms("whole forward to logits")),
    ("docs/speed.md", "ynn-before", B + "jax-step-ops-2cpu.json", step_ops_ms("batch64-xla-default")),
    ("docs/speed.md", "ynn-after", B + "jax-step-ops-2cpu.json", step_ops_ms("batch64-loop")),
    ("docs/speed.md", "ynn-step-before", B + "profile-2cpu.json", profile_ms("jax", "native")),
    ("docs/speed.md", "ynn-step-after", B + "profile-2cpu-blocked.json", profile_ms("jax", "native")),
    ("docs/speed.md", "scan-fast-jax", FAST, backend_seconds_to_mark("jax", "0.99")),
    ("docs/speed.md", "tf-steps-per-call", B + "2cpu-quiet-default-threads.json", loop_change(32, ("tensorflow",))),
    ("docs/speed.md", "tf-fused-adam-before", B + "loops-auto-2cpu-2026-11-30e.json", speed_ratios("tensorflow")),
    ("docs/speed.md", "tf-fused-adam-after", LOOPS, speed_ratios("tensorflow")),
    *[("docs/speed.md", f"conv-bias-{when}-{i}", B + f"torch-conv-bias-{when}-{i}-2cpu.json", speed_ratios("torch"))
      for when in ("before", "after") for i in (1, 2)],
    *[("docs/speed.md", f"pool-relu-{when}-{i}", B + f"torch-pool-relu-{when}-{i}-2cpu.json", speed_ratios("torch"))
      for when in ("before", "after") for i in (1, 2)],
]

# Plots: (PNG file, JSON file, data renderer, drawer); the PNG carries the data it was drawn from.
PLOTS = [
    ("docs/plots/tutorial-recipe-2cpu.png", TUTORIAL, charts.recipe_curves_data, charts.draw_recipe_curves),
    ("docs/plots/fast-recipe-3seeds-2cpu.png", FAST, charts.recipe_curves_data, charts.draw_recipe_curves),
    ("docs/plots/strong-recipe-3seeds-peers-2cpu.png", STRONG, charts.recipe_curves_data, charts.draw_recipe_curves),
    ("docs/plots/best-recipe-peers-2cpu.png", BEST[1], charts.recipe_curves_data, charts.draw_recipe_curves),
    ("docs/plots/loops-auto-2cpu-2026-11-30f.png", LOOPS, charts.speed_bars_data, charts.draw_speed_bars),
]

# ---------------------------------------------------------------- markers

BLOCK = re.compile(r"(<!-- report:(?P<name>[\w.-]+) -->\n)(?P<body>.*?)(<!-- /report -->)", re.S)
INLINE = re.compile(r"(<!-- fig:(?P<name>[\w.-]+) -->)(?P<body>[^\n]*?)(<!-- /fig -->)")


def render(spec, root=ROOT):
    _, _, sources, renderer = spec
    return renderer(_load_sources(sources, root))


def _load_sources(sources, root):
    if isinstance(sources, str) and "*" in sources:  # a pattern: every file it matches, maybe none
        return [_load(path) for path in sorted(root.glob(sources))]
    if isinstance(sources, str):
        return _load(root / sources)
    return [_load(root / s) for s in sources]


def _load(path):
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise SystemExit(f"error: {path} not found: a table, figure or plot names it") from None


def replace_block(text, name, lines):
    """`text` with the body of block `name` replaced by `lines`; ValueError when the block is missing."""
    return _replace(BLOCK, text, name, "".join(line + "\n" for line in lines),
                    f"no '<!-- report:{name} -->' ... '<!-- /report -->' block")


def replace_figure(text, name, figure):
    """`text` with every figure `name` (an inline marker pair) holding `figure`; ValueError when none is there."""
    return _replace(INLINE, text, name, figure, f"no '<!-- fig:{name} -->...<!-- /fig -->' figure")


def _replace(pattern, text, name, body, missing):
    found = False

    def sub(m):
        nonlocal found
        if m.group("name") != name:
            return m.group(0)
        found = True
        return m.group(1) + body + m.group(4)

    new = pattern.sub(sub, text)
    if not found:
        raise ValueError(missing)
    return new


def unknown_markers(text, md):
    """Markers in `text` that no row of TABLES or FIGURES renders: a figure nobody checks."""
    known_tables = {n for m, n, _, _ in TABLES if m == md}
    known_figures = {n for m, n, _, _ in FIGURES if m == md}
    return sorted({f"report:{m.group('name')}" for m in BLOCK.finditer(text) if m.group("name") not in known_tables}
                  | {f"fig:{m.group('name')}" for m in INLINE.finditer(text) if m.group("name") not in known_figures})


def misplaced_figures(text):
    """Figure markers that open a line: there markdown reads the comment as an HTML block, which ends
    the paragraph around it, so a sentence would break in two where its figure starts."""
    return [m.group("name") for m in INLINE.finditer(text) if m.start() == 0 or text[m.start() - 1] == "\n"]


def stale_plots(root, redraw):
    """The PLOTS whose PNG is missing or carries other data than its JSON gives; with `redraw`, each
    is drawn again (only those: a picture whose data did not change is left as it is)."""
    stale = []
    for png, sources, data_of, draw in PLOTS:
        want = charts.dump(data_of(_load_sources(sources, root)))
        path = root / png
        have = charts.png_data(path) if path.exists() else None
        if have == want:
            continue
        why = "missing" if not path.exists() else "drawn from other data" if have else "carries no plot data"
        stale.append(f"{png} ({why})")
        if redraw:
            draw(json.loads(want), path)
    return stale


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true", help="exit 1 if a table, figure or plot differs from its JSON")
    mode.add_argument("--write", action="store_true", help="rewrite the tables and figures, redraw stale plots")
    mode.add_argument("--show", metavar="NAME", help="print one rendered table or figure")
    p.add_argument("--root", type=Path, default=ROOT, help="the checkout (default: %(default)s)")
    args = p.parse_args(argv)

    if args.show:
        specs = [s for s in TABLES + FIGURES if s[1] == args.show]
        if not specs:
            p.error(f"no table or figure named {args.show!r}; known: {', '.join(s[1] for s in TABLES + FIGURES)}")
        out = render(specs[0], args.root)
        print(out if isinstance(out, str) else "\n".join(out))
        return 0

    stale, files = [], {}
    for specs, replace in ((TABLES, replace_block), (FIGURES, replace_figure)):
        for spec in specs:
            md, name = spec[0], spec[1]
            if md not in files:
                files[md] = (args.root / md).read_text()
            try:
                files[md] = replace(files[md], name, render(spec, args.root))
            except ValueError as e:
                print(f"error: {md}: {e}", file=sys.stderr)
                return 1
    for md, text in files.items():
        misplaced = misplaced_figures(text)
        if misplaced:
            print(f"error: {md}: figures at the start of a line (markdown would end the paragraph there): "
                  f"{', '.join(misplaced)}; move the marker after a word", file=sys.stderr)
            return 1
        unknown = unknown_markers(text, md)
        if unknown:
            print(f"error: {md}: markers nothing renders: {', '.join(unknown)} (add them to TABLES or FIGURES)",
                  file=sys.stderr)
            return 1
        old = (args.root / md).read_text()
        if old == text:
            continue
        stale.append(md)
        if args.write:
            (args.root / md).write_text(text)
            print(f"rewrote {md}")
        else:
            diff = difflib.unified_diff(old.splitlines(True), text.splitlines(True), md, md + " (rendered)")
            sys.stdout.writelines(diff)
    plots = stale_plots(args.root, redraw=args.write)
    if args.write:
        for plot in plots:
            print(f"drew {plot.split(' (')[0]}")
    if args.check:
        if stale or plots:
            print(f"error: {', '.join(stale + plots)} differ from the JSON; run: python scripts/report.py --write",
                  file=sys.stderr)
            return 1
        print(f"{len(TABLES)} tables, {len(FIGURES)} figures in {len(files)} files and {len(PLOTS)} plots "
              "match their JSON")
    return 0


if __name__ == "__main__":
    sys.exit(main())
