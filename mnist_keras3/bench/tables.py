"""The benchmark's tables as markdown lines, from the rows its JSON holds: one renderer per table
(speed, time to accuracy, profile, recipe),
shared by the command (bench/report.py prints them) and scripts/report.py (renders them into
README.md and docs/ from the committed JSON). Standard library only: no keras, no framework.
"""


def _ratio(value):
    return "n/a (no reference)" if value is None else f"{value:.2f}x"


def _name_loop(row):
    if row["loop"] == "reference":
        return "plain PyTorch (reference)", "-"
    return row["backend"], row["loop"]


def speed_table(data):
    """The speed benchmark (`python -m mnist_keras3.bench`): its `summary`, one row per batch size,
    backend and loop, as the benchmark prints it."""
    out = ["| batch | backend | loop | samples/s | x plain PyTorch | samples/CPU-s | x plain PyTorch (CPU) "
           "| peak RSS (MB) |", "| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for r in data["summary"]:
        name, loop = _name_loop(r)
        if r.get("samples_per_s") is None:
            out.append(f"| {r['batch_size']} | {name} | {loop} | error: {r.get('error')} | | | | |")
            continue
        out.append(f"| {r['batch_size']} | {name} | {loop} | {r['samples_per_s']:,.0f} | {_ratio(r['ratio'])} "
                   f"| {r['samples_per_cpu_s']:,.0f} | {_ratio(r['cpu_ratio'])} | {r['peak_rss_mb']:,.0f} |")
    return out


def tta_table(data):
    """The speed benchmark's time-to-accuracy runs (`time_to_accuracy`)."""
    out = ["| backend | loop | seconds | epochs | test accuracy then |", "| --- | --- | ---: | ---: | ---: |"]
    for r in data["time_to_accuracy"]:
        name, loop = _name_loop(r)
        if "error" in r:
            out.append(f"| {name} | {loop} | error: {r['error']} | | |")
        elif r["seconds"] is None:
            out.append(f"| {name} | {loop} | not reached | {r['epochs']} | {r['accuracy']:.4f} |")
        else:
            out.append(f"| {name} | {loop} | {r['seconds']:.1f} | {r['epochs']} | {r['accuracy']:.4f} |")
    return out


def profile_table(data):
    """`python -m mnist_keras3.bench --profile`: ms per step of each phase, per batch size and loop."""
    out = ["| batch | loop | forward | backward | optimizer | host | step (ms) | x plain PyTorch |",
           "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in data["rows"]:
        name = "plain PyTorch (reference)" if r["loop"] == "reference" else f"{r['backend']} native"
        if "error" in r:
            out.append(f"| {r['batch_size']} | {name} | error: {r['error']} | | | | | |")
            continue
        ms = r["ms_per_step"]
        phases = " | ".join(f"{ms[k]:.3f}" for k in ("forward", "backward", "optimizer", "host"))
        out.append(f"| {r['batch_size']} | {name} | {phases} | {r['step_ms']:.3f} | {_ratio(r.get('ratio'))} |")
    return out


def seconds_cell(value):
    return "not reached" if value is None else f"{value:.1f}"


def _ratio_cell(row, key, peer_ran):
    if row["role"] != "recipe":
        return "-"
    if row[key] is not None:
        return f"{row[key]:.2f}x"
    return "n/a (not reached)" if peer_ran else "n/a (not run)"


def recipe_table(rows, marks=None):
    """The recipe benchmark (`python -m mnist_keras3.bench --recipe TOML`): its `summary`, one row
    per run over its seeds, timed to two test accuracies `marks` (by default those the rows hold),
    then a note per failed seed or fallback, as the benchmark prints it."""
    marks = marks or sorted({float(m) for r in rows for m in r.get("seconds") or {}})
    m0, m1 = (f"{m:g}" for m in marks)
    first = f"{marks[0]:.1%}"
    out = [f"| run | loop | seeds | s to {first} | s to {marks[1]:.1%} | s to {first} by seed "
           f"| final accuracy (median) | min accuracy | x reference (s to {first}) "
           f"| x keras-io convnet (s to {first}) |",
           "| --- | --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |"]
    ref_ran = any(r["role"] == "reference" and r["seeds"] for r in rows)
    peers_ran = {r["backend"] for r in rows if r["role"] == "peer" and r["seeds"]}
    for r in rows:
        if r["note"]:
            out.append(f"| {r['name']} | n/a: {r['note']} | | | | | | | | |")
            continue
        if not r["seeds"]:
            out.append(f"| {r['name']} | error: {r['errors'][0] if r['errors'] else 'no result'} | | | | | | | | |")
            continue
        by_seed = " / ".join("-" if v is None else f"{v:.1f}" for v in r["seconds_by_seed"][m0])
        seeds = str(len(r["seeds"])) + (f" ({len(r['errors'])} failed)" if r["errors"] else "")
        out.append(f"| {r['name']} | {r['loop']} | {seeds} | {seconds_cell(r['seconds'][m0])} "
                   f"| {seconds_cell(r['seconds'][m1])} | {by_seed} | {r['median_accuracy']:.4f} "
                   f"| {r['min_accuracy']:.4f} | {_ratio_cell(r, 'ratio_reference', ref_ran)} "
                   f"| {_ratio_cell(r, 'ratio_peer', r['backend'] in peers_ran)} |")
    notes = [f"{r['name']}: {e}" for r in rows for e in r["errors"]]
    notes += [f"{r['name']}: auto fell back to fit ({why})" for r in rows for why in r["loop_fallback_reasons"]]
    if notes:
        out += [""] + [f"- {n}" for n in notes]
    return out
