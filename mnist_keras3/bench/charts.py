"""The benchmark's pictures, from the rows its JSON holds: what each plot shows (`*_data`, standard
library only) apart from how it is drawn (`draw_*`, matplotlib, imported when drawing).

Each PNG carries the data it was drawn from in a text chunk (`DATA_KEY`), so a check can compare a
committed picture with its JSON without comparing pixels, which differ between matplotlib versions:
`png_data(path)` reads it back with the standard library.
"""

import json
import statistics
import struct
import zlib

DATA_KEY = "mnist_keras3.plot-data"

# One colour per backend in every picture; a peer (keras-io's convnet) shares its backend's colour.
COLOURS = {"torch": "#d62728", "jax": "#1f77b4", "tensorflow": "#ff7f0e", "reference": "#222222"}


def machine_label(machine):
    """'2-core CPU' for a CPU run; the device named by the JSON otherwise."""
    device = str(machine.get("device") or "CPU")
    cores = machine.get("cores")
    if device.upper().startswith("CPU"):
        return f"{cores}-core CPU" if cores else "CPU"
    return f"{device}, {cores}-core host" if cores else device


def recipe_curves_data(data):
    """A recipe benchmark (`"benchmark": "recipe"`): per run of its summary (each backend, the plain
    PyTorch reference, the keras-io peer) the test accuracy after each epoch against the training
    seconds so far, each the median over the run's seeds at that epoch."""
    series = []
    for row in data["summary"]:
        runs = [r for r in data["runs"] if r["role"] == row["role"] and r["backend"] == row["backend"]
                and r.get("test_accuracy") and not r.get("error")]
        if not runs:
            continue
        epochs = min(len(r["test_accuracy"]) for r in runs)
        series.append({
            "name": row["name"], "role": row["role"], "backend": row["backend"], "seeds": len(runs),
            "seconds": [round(statistics.median(r["cumulative_seconds"][e] for r in runs), 3) for e in range(epochs)],
            "accuracy": [round(statistics.median(r["test_accuracy"][e] for r in runs), 4) for e in range(epochs)],
        })
    cfg = data["recipe"]["config"]
    return {"kind": "recipe-curves", "recipe": data["recipe"]["file"],
            "model": cfg.get("model"), "epochs": cfg.get("epochs"), "machine": machine_label(data["machine"]),
            "marks": list(data.get("marks") or []), "series": series}


def speed_bars_data(data):
    """The speed benchmark (`python -m mnist_keras3.bench`): samples/s of each backend and loop per
    batch size, and its ratio to the plain PyTorch reference of the same batch size."""
    bars = [{"batch_size": r["batch_size"], "backend": r["backend"], "loop": r["loop"],
             "samples_per_s": round(r["samples_per_s"]), "ratio": r.get("ratio")}
            for r in data["summary"] if r.get("samples_per_s") is not None]
    model = (data.get("settings") or {}).get("model") or "tutorial"
    return {"kind": "speed-bars", "model": model, "machine": machine_label(data["machine"]), "bars": bars}


def _percent(value):
    return f"{100 * value:.{max(0, len(f'{100 * value:g}'.partition('.')[2]))}f}%"


def draw_recipe_curves(spec, path):
    plt = _pyplot()
    from matplotlib import ticker
    fig, ax = plt.subplots(figsize=(9, 4.6), dpi=110)
    for s in spec["series"]:
        peer = s["role"] == "peer"
        colour = COLOURS["reference" if s["role"] == "reference" else s["backend"]]
        label = s["name"] + (f" (median of {s['seeds']} seeds)" if s["seeds"] > 1 else "")
        ax.plot(s["seconds"], s["accuracy"], color=colour, linestyle="--" if peer else "-",
                marker="o" if not peer else "s", markersize=4, markerfacecolor="white" if peer else colour,
                linewidth=1.6, label=label)
    accuracies = [a for s in spec["series"] for a in s["accuracy"]]
    # A logit scale spreads 90%, 99% and 99.7% evenly: every epoch stays on the chart, the last
    # tenths of a percent apart.
    worst, best = 1 - min(accuracies), 1 - max(accuracies)
    ax.set_yscale("logit")
    ax.set_ylim(1 - worst * 1.25, 1 - best / 1.6)
    ticks = [t for t in (0.5, 0.8, 0.9, 0.93, 0.95, 0.96, 0.97, 0.98, 0.99, 0.995, 0.997, 0.998, 0.999)
             if 1 - worst * 1.25 <= t <= 1 - best / 1.6]
    ax.set_yticks(ticks, [_percent(t) for t in ticks])
    ax.yaxis.set_minor_formatter(ticker.NullFormatter())
    for mark in spec["marks"]:
        if ax.get_ylim()[0] < mark < ax.get_ylim()[1]:
            ax.axhline(mark, color="grey", linewidth=0.8, linestyle=":")
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(ticker.LogLocator(subs=(1, 2, 5)))
    ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())
    ax.set_xlabel("training seconds (log scale; compiling included, evaluation excluded)")
    ax.set_ylabel("test accuracy after each epoch (logit scale)")
    peers = any(s["role"] == "peer" for s in spec["series"])
    ax.set_title(f"{spec['recipe']}: {spec['model']}, {spec['epochs']} epochs, {spec['machine']}\n"
                 "test accuracy against training time" + (" (dashed: keras-io's convnet)" if peers else ""),
                 fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    # Beside the axes, not on them: the curves fill every corner in one recipe or another.
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), borderaxespad=0)
    _save(fig, path, spec)


def draw_speed_bars(spec, path):
    plt = _pyplot()
    from matplotlib import ticker
    batches = sorted({b["batch_size"] for b in spec["bars"]})
    names = []
    for b in spec["bars"]:
        name = _bar_name(b)
        if name not in names:
            names.append(name)
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    width = 0.8 / len(names)
    for i, name in enumerate(names):
        rows = {b["batch_size"]: b for b in spec["bars"] if _bar_name(b) == name}
        xs = [j + (i - (len(names) - 1) / 2) * width for j, bs in enumerate(batches) if bs in rows]
        ys = [rows[bs]["samples_per_s"] for bs in batches if bs in rows]
        backend = next(iter(rows.values()))
        colour = COLOURS["reference" if backend["loop"] == "reference" else backend["backend"]]
        bars = ax.bar(xs, ys, width * 0.92, color=colour, label=name)
        ratios = [rows[bs]["ratio"] for bs in batches if bs in rows]
        ax.bar_label(bars, [f"{r:.2f}x" if r is not None else "" for r in ratios], fontsize=8, padding=2)
    ax.set_xticks(range(len(batches)), [f"batch {b}" for b in batches])
    ax.set_ylabel("training samples/s (higher is better)")
    ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.set_title(f"{spec['model']} CNN, {spec['machine']}: samples/s per backend and loop\n"
                 "(labels: x the plain PyTorch loop's samples/s at the same batch size)", fontsize=10)
    ax.margins(y=0.12)
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    _save(fig, path, spec)


def _bar_name(bar):
    return "plain PyTorch (reference)" if bar["loop"] == "reference" else f"{bar['backend']}, loop {bar['loop']}"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path, spec):
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", metadata={DATA_KEY: dump(spec)})
    import matplotlib.pyplot as plt

    plt.close(fig)


def dump(spec):
    """The one text form of a plot's data: what is stored in the PNG and what a check compares."""
    return json.dumps(spec, sort_keys=True, separators=(",", ":"))


def png_data(path):
    """The plot data stored in the PNG at `path` (its `DATA_KEY` text chunk), or None without one."""
    blob = path.read_bytes()
    if blob[:8] != b"\x89PNG\r\n\x1a\n":
        return None
    pos = 8
    while pos + 8 <= len(blob):
        length, kind = struct.unpack(">I4s", blob[pos:pos + 8])
        body = blob[pos + 8:pos + 8 + length]
        pos += 12 + length
        if kind == b"tEXt":
            key, _, text = body.partition(b"\0")
            value = text.decode("latin-1")
        elif kind == b"zTXt":
            key, _, rest = body.partition(b"\0")
            value = zlib.decompress(rest[1:]).decode("latin-1")
        elif kind == b"iTXt":
            key, _, rest = body.partition(b"\0")
            compressed, rest = rest[0], rest[2:]
            _, _, rest = rest.partition(b"\0")  # language tag
            _, _, text = rest.partition(b"\0")  # translated keyword
            value = (zlib.decompress(text) if compressed else text).decode("utf-8")
        else:
            continue
        if key.decode("latin-1") == DATA_KEY:
            return value
    return None
