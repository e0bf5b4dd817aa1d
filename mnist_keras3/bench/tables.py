"""The benchmark's tables as markdown lines, from the rows its JSON holds: one renderer per table
(speed, time to accuracy, profile, recipe),
each with a device column when its rows ran on more than one device or off the CPU (a CPU-only
run names its device in the line above the table), and the columns its rows fill (the speed
table's warm-up epoch, the recipe table's compile and warm-up, which older JSON files lack),
shared by the command (bench/report.py prints them) and scripts/report.py (renders them into
README.md and docs/ from the committed JSON). Standard library only: no keras, no framework.
"""


def _ratio(value):
    return "n/a (no reference)" if value is None else f"{value:.2f}x"


def show_devices(rows):
    """Whether a table of `rows` gets a device column: they ran on more than one device, or off the CPU."""
    devices = {r.get("device") for r in rows if r.get("device")}
    return len(devices) > 1 or bool(devices - {"CPU"})


def _device(row, show):
    return f" {row.get('device') or '-'} |" if show else ""


def _secs(value, digits=1):
    return "-" if value is None else f"{value:.{digits}f}"


def _name_loop(row):
    if row["loop"] == "reference":
        return "plain PyTorch (reference)", "-"
    return row["backend"], row["loop"]


def speed_table(data):
    """The speed benchmark (`python -m mnist_keras3.bench`): its `summary`, one row per batch size,
    backend and loop, as the benchmark prints it."""
    rows = data["summary"]
    dev, warm = show_devices(rows), any(r.get("warmup_seconds") is not None for r in rows)
    out = [f"| batch | backend | loop |{' device |' if dev else ''} samples/s | x plain PyTorch | samples/CPU-s "
           f"| x plain PyTorch (CPU) | peak RSS (MB) |{' warm-up epoch (s) |' if warm else ''}",
           f"| ---: | --- | --- |{' --- |' if dev else ''} ---: | ---: | ---: | ---: | ---: |"
           + (" ---: |" if warm else "")]
    for r in rows:
        name, loop = _name_loop(r)
        head = f"| {r['batch_size']} | {name} | {loop} |{_device(r, dev)}"
        if r.get("samples_per_s") is None:
            out.append(f"{head} error: {r.get('error')} | | | | |{' |' if warm else ''}")
            continue
        out.append(f"{head} {r['samples_per_s']:,.0f} | {_ratio(r['ratio'])} "
                   f"| {r['samples_per_cpu_s']:,.0f} | {_ratio(r['cpu_ratio'])} | {r['peak_rss_mb']:,.0f} |"
                   + (f" {_secs(r.get('warmup_seconds'), 2)} |" if warm else ""))
    return out


def tta_table(data):
    """The speed benchmark's time-to-accuracy runs (`time_to_accuracy`)."""
    rows = data["time_to_accuracy"]
    dev = show_devices(rows)
    out = [f"| backend | loop |{' device |' if dev else ''} seconds | epochs | test accuracy then |",
           f"| --- | --- |{' --- |' if dev else ''} ---: | ---: | ---: |"]
    for r in rows:
        name, loop = _name_loop(r)
        head = f"| {name} | {loop} |{_device(r, dev)}"
        if "error" in r:
            out.append(f"{head} error: {r['error']} | | |")
        elif r["seconds"] is None:
            out.append(f"{head} not reached | {r['epochs']} | {r['accuracy']:.4f} |")
        else:
            out.append(f"{head} {r['seconds']:.1f} | {r['epochs']} | {r['accuracy']:.4f} |")
    return out


def profile_table(data):
    """`python -m mnist_keras3.bench --profile`: ms per step of each phase, per batch size and loop."""
    rows = data["rows"]
    dev = show_devices(rows)
    out = [f"| batch | loop |{' device |' if dev else ''} forward | backward | optimizer | host | step (ms) "
           "| x plain PyTorch |",
           f"| ---: | --- |{' --- |' if dev else ''} ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        name = "plain PyTorch (reference)" if r["loop"] == "reference" else f"{r['backend']} native"
        head = f"| {r['batch_size']} | {name} |{_device(r, dev)}"
        if "error" in r:
            out.append(f"{head} error: {r['error']} | | | | | |")
            continue
        ms = r["ms_per_step"]
        phases = " | ".join(f"{ms[k]:.3f}" for k in ("forward", "backward", "optimizer", "host"))
        out.append(f"{head} {phases} | {r['step_ms']:.3f} | {_ratio(r.get('ratio'))} |")
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
    then a note per failed seed or fallback, as the benchmark prints it. Rows with `compile_seconds`
    get the first epoch's compile and warm-up and the seconds to each mark without it."""
    marks = marks or sorted({float(m) for r in rows for m in r.get("seconds") or {}})
    m0, m1 = (f"{m:g}" for m in marks)
    first = f"{marks[0]:.1%}"
    dev, comp = show_devices(rows), any(r.get("compile_seconds") is not None for r in rows)
    empty = " |" * (8 + 3 * comp)  # the cells after run and loop, for a row without figures
    out = [f"| run |{' device |' if dev else ''} loop | seeds | s to {first} | s to {marks[1]:.1%} "
           + (f"| compile + warm-up (s) | s to {first} without it | s to {marks[1]:.1%} without it " if comp else "")
           + f"| s to {first} by seed | final accuracy (median) | min accuracy | x reference (s to {first}) "
           f"| x keras-io convnet (s to {first}) |",
           f"| --- |{' --- |' if dev else ''} --- | ---: | ---: | ---: |{' ---: | ---: | ---: |' if comp else ''}"
           " --- | ---: | ---: | ---: | ---: |"]
    ref_ran = any(r["role"] == "reference" and r["seeds"] for r in rows)
    peers_ran = {r["backend"] for r in rows if r["role"] == "peer" and r["seeds"]}
    for r in rows:
        head = f"| {r['name']} |{_device(r, dev)}"
        if r["note"]:
            out.append(f"{head} n/a: {r['note']} |{empty}")
            continue
        if not r["seeds"]:
            error = r["errors"][0] if r["errors"] else "no result"
            out.append(f"{head} error: {error} |{empty}")
            continue
        by_seed = " / ".join("-" if v is None else f"{v:.1f}" for v in r["seconds_by_seed"][m0])
        seeds = str(len(r["seeds"])) + (f" ({len(r['errors'])} failed)" if r["errors"] else "")
        without = r.get("seconds_without_compile") or {}
        compile_cells = (f" {_secs(r.get('compile_seconds'), 2)} | {seconds_cell(without.get(m0))} "
                         f"| {seconds_cell(without.get(m1))} |") if comp else ""
        out.append(f"{head} {r['loop']} | {seeds} | {seconds_cell(r['seconds'][m0])} "
                   f"| {seconds_cell(r['seconds'][m1])} |{compile_cells} {by_seed} | {r['median_accuracy']:.4f} "
                   f"| {r['min_accuracy']:.4f} | {_ratio_cell(r, 'ratio_reference', ref_ran)} "
                   f"| {_ratio_cell(r, 'ratio_peer', r['backend'] in peers_ran)} |")
    notes = [f"{r['name']}: {e}" for r in rows for e in r["errors"]]
    notes += [f"{r['name']}: auto fell back to fit ({why})" for r in rows for why in r["loop_fallback_reasons"]]
    if notes:
        out += [""] + [f"- {n}" for n in notes]
    return out
