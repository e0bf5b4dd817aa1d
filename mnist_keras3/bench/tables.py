"""The benchmark's tables as markdown lines, from the rows its JSON holds: one renderer per table,
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
