#!/usr/bin/env python3
"""Render the result tables of README.md and docs/*.md from the JSON files the commands wrote.

A table in a markdown file sits between two markers, and only the lines between them are generated:

    <!-- report:NAME -->
    | ... the table, rendered from its JSON file ... |
    <!-- /report -->

`TABLES` below says which JSON file and which renderer make each NAME. Add a row there (and the two
markers in the markdown file) for a new JSON file; the renderers take the loaded JSON and return the
table's lines.

    python scripts/report.py --check   # exit 1, with a diff, if a table differs from its JSON
    python scripts/report.py --write   # rewrite the tables in place
    python scripts/report.py --show NAME   # print one rendered table

Standard library only: no keras, no framework; of the package only mnist_keras3.bench.tables, the
benchmark's own renderers (standard library too).
"""

import argparse
import difflib
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the checkout's package, installed or not
from mnist_keras3.bench import tables  # noqa: E402  (stdlib only)
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


# ---------------------------------------------------------------- what goes where

# (markdown file, marker name, JSON file or tuple of JSON files, renderer); paths from the repo root.
# A renderer gets the loaded JSON (a list of them for a tuple) and returns the table's lines.
TABLES = [
    ("docs/speed.md", "loops-auto-f", "docs/benchmarks/loops-auto-2cpu-2026-11-30f.json", speed_table),
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
]

# ---------------------------------------------------------------- markers

BLOCK = re.compile(r"(<!-- report:(?P<name>[\w.-]+) -->\n)(?P<body>.*?)(<!-- /report -->)", re.S)
def render(spec, root=ROOT):
    _, _, sources, renderer = spec
    if isinstance(sources, str):
        return renderer(_load(root / sources))
    return renderer([_load(root / s) for s in sources])


def _load(path):
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise SystemExit(f"error: {path} not found: a table in TABLES names it") from None


def replace_block(text, name, lines):
    """`text` with the body of block `name` replaced by `lines`; ValueError when the block is missing."""
    found = False

    def sub(m):
        nonlocal found
        if m.group("name") != name:
            return m.group(0)
        found = True
        return m.group(1) + "".join(line + "\n" for line in lines) + m.group(4)

    new = BLOCK.sub(sub, text)
    if not found:
        raise ValueError(f"no '<!-- report:{name} -->' ... '<!-- /report -->' block")
    return new


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", action="store_true", help="exit 1 if a table differs from its JSON")
    mode.add_argument("--write", action="store_true", help="rewrite the tables from their JSON")
    mode.add_argument("--show", metavar="NAME", help="print one rendered table")
    p.add_argument("--root", type=Path, default=ROOT, help="the checkout (default: %(default)s)")
    args = p.parse_args(argv)

    if args.show:
        specs = [s for s in TABLES if s[1] == args.show]
        if not specs:
            p.error(f"no table named {args.show!r}; known: {', '.join(s[1] for s in TABLES)}")
        print("\n".join(render(specs[0], args.root)))
        return 0

    stale, files = [], {}
    for spec in TABLES:
        md, name = spec[0], spec[1]
        path = args.root / md
        if md not in files:
            files[md] = path.read_text()
        try:
            files[md] = replace_block(files[md], name, render(spec, args.root))
        except ValueError as e:
            print(f"error: {md}: {e}", file=sys.stderr)
            return 1
    for md, text in files.items():
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
    if args.check:
        if stale:
            print(f"error: {', '.join(stale)} differ from the JSON; run: python scripts/report.py --write",
                  file=sys.stderr)
            return 1
        print(f"{len(TABLES)} tables in {len(files)} files match their JSON")
    return 0


if __name__ == "__main__":
    sys.exit(main())
