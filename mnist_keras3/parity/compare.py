"""The parity comparisons and the report: plain numpy on what each backend's subprocess wrote.

Nothing here imports keras, so the report can be made by a process with no backend at all (the
tox `parity` env). Every check is a dict: level, name, passed, figure (what was measured),
tolerance (what it had to meet) and detail (where it failed, when it did).
"""

import itertools
import math
from pathlib import Path

import numpy as np

from .. import runs
from ..errors import UsageError

LEVELS = {1: "structure", 2: "numerics", 3: "portability", 4: "training"}


def check(level, name, passed, figure, tolerance, detail=""):
    return {"level": level, "area": LEVELS[level], "name": name, "passed": bool(passed),
            "figure": figure, "tolerance": tolerance, "detail": detail}


# ---------------------------------------------------------------- 1. structure

def structure_diff(a, b):
    """The first difference between two models' structure records, or None when they match."""
    for key in ("parameters", "layers", "weights"):
        ra, rb = a.get(key), b.get(key)
        if key == "parameters" and ra != rb:
            return f"parameters {ra} vs {rb}"
        if key == "parameters":
            continue
        if len(ra) != len(rb):
            return f"{len(ra)} vs {len(rb)} {key}"
        for x, y in zip(ra, rb, strict=False):
            if list(x) != list(y):
                return f"{key[:-1]} {x} vs {y}"
    return None


def compare_structure(structures):
    """structures: {backend: {model name: record}}; every backend must match the first exactly."""
    backends = list(structures)
    ref = backends[0]
    problems = []
    names = sorted(set().union(*(set(s) for s in structures.values())))
    for b in backends[1:]:
        for name in names:
            if name not in structures[ref] or name not in structures[b]:
                problems.append(f"{name}: registered under only one of {ref}, {b}")
                continue
            diff = structure_diff(structures[ref][name], structures[b][name])
            if diff:
                problems.append(f"{name} {b} vs {ref}: {diff}")
    counts = ", ".join(
        f"{n} {structures[ref][n]['parameters']['total']:,} "
        f"({structures[ref][n]['parameters']['trainable']:,} trainable)"
        for n in names if n in structures[ref])
    n_layers = sum(len(structures[ref][n]["layers"]) for n in names if n in structures[ref])
    figure = (f"{len(names)} models, {n_layers} layers identical: {counts}" if not problems
              else f"{len(problems)} mismatch(es)")
    return [check(1, "parameter counts, layer types and output shapes, weight shapes", not problems,
                  figure, "identical", "; ".join(problems))]


# ---------------------------------------------------------------- 2. numerics

def relative_diff(a, ref):
    """max |a - ref| / max |ref|: a scale-aware difference that tiny elements cannot blow up."""
    a, ref = np.asarray(a, np.float64), np.asarray(ref, np.float64)
    scale = np.max(np.abs(ref)) if ref.size else 0.0
    diff = np.max(np.abs(a - ref)) if ref.size else 0.0
    return float(diff / scale) if scale > 0 else float(diff)


def compare_numerics(outputs, prob_tol=1e-5, rel_tol=1e-4):
    """outputs: {backend: {"probs": (N, 10), "loss": float, "grads": [arrays]}}, the same weights
    and images in each. Each backend is compared with the first."""
    backends = list(outputs)
    ref = outputs[backends[0]]
    n = len(ref["probs"])
    worst_p, worst_p_at, argmax_bad, worst_l, worst_g, detail = 0.0, "", {}, 0.0, 0.0, []
    for b in backends[1:]:
        o = outputs[b]
        if o["probs"].shape != ref["probs"].shape:
            detail.append(f"{b}: probabilities of shape {o['probs'].shape} vs {ref['probs'].shape}")
            argmax_bad[b] = n
            worst_p = worst_l = worst_g = float("inf")
            continue
        p = float(np.max(np.abs(o["probs"].astype(np.float64) - ref["probs"])))
        if p > worst_p:
            worst_p, worst_p_at = p, f" ({b} vs {backends[0]})"
        argmax_bad[b] = int(np.sum(o["probs"].argmax(1) != ref["probs"].argmax(1)))
        worst_l = max(worst_l, abs(o["loss"] - ref["loss"]) / abs(ref["loss"]))
        if len(o["grads"]) != len(ref["grads"]):
            detail.append(f"{b}: {len(o['grads'])} gradient tensors vs {len(ref['grads'])}")
            worst_g = float("inf")
        for g, gr in zip(o["grads"], ref["grads"], strict=False):
            worst_g = max(worst_g, relative_diff(g, gr) if g.shape == gr.shape else float("inf"))
    bad = sum(argmax_bad.values())
    vs = f"{len(backends) - 1} backend(s) vs {backends[0]}"
    return [
        check(2, f"probabilities on {n:,} test images, shared weights", worst_p <= prob_tol,
              f"max abs diff {worst_p:.2e}{worst_p_at}", f"<= {prob_tol:g}", "; ".join(detail)),
        check(2, f"argmax on {n:,} test images", bad == 0,
              f"{n - max(argmax_bad.values(), default=0):,}/{n:,} agree ({vs})", "every image",
              ", ".join(f"{b}: {k} differ" for b, k in argmax_bad.items() if k)),
        check(2, f"loss of one batch of {ref['batch']}", worst_l <= rel_tol,
              f"relative diff {worst_l:.2e} (loss {ref['loss']:.6f})", f"<= {rel_tol:g} relative"),
        check(2, f"gradients of one batch ({len(ref['grads'])} tensors)", worst_g <= rel_tol,
              f"max relative diff {worst_g:.2e}",
              f"<= {rel_tol:g} relative (max abs diff / max abs value, per tensor)"),
    ]


def compare_init_models(per_backend, prob_tol=1e-5, rel_tol=1e-4):
    """per_backend: {backend: {model name: numerics outputs}} from every registered model built
    with the reference's initial weights (the strong model too, which CI does not train). One
    check per model, passing when its four numerics checks pass."""
    backends = list(per_backend)
    ref = per_backend[backends[0]]
    out = []
    for name in sorted(ref):
        missing = [b for b in backends[1:] if name not in per_backend[b]]
        if missing:
            out.append(check(2, f"{name}, initial weights: numerics", False, "no result",
                             "every backend", f"missing under {', '.join(missing)}"))
            continue
        parts = compare_numerics({b: per_backend[b][name] for b in backends}, prob_tol, rel_tol)
        out.append(check(
            2, f"{name}, shared initial weights: probabilities, argmax, loss, gradients "
               f"({len(ref[name]['grads'])} tensors)",
            all(c["passed"] for c in parts), "; ".join(c["figure"] for c in parts),
            f"<= {prob_tol:g} abs, every argmax, <= {rel_tol:g} relative",
            "; ".join(f"{c['name']}: {c['figure']}" for c in parts if not c["passed"])))
    return out


# ---------------------------------------------------------------- 3. portability

def compare_portability(predictions, errors):
    """predictions: {(saved under, loaded under): classes (N,)}; errors: {(saved, loaded): message}.
    Each cross-load must predict the classes the saving backend predicts itself."""
    backends = sorted({s for s, _ in [*predictions, *errors]} | {d for _, d in [*predictions, *errors]})
    pairs = [(a, b) for a, b in itertools.permutations(backends, 2)]
    matrix, problems = {}, []
    for a, b in pairs:
        if (a, b) in errors or (a, b) not in predictions:
            matrix[(a, b)] = "load failed"
            problems.append(f"{a} -> {b}: {errors.get((a, b), 'no result')}")
            continue
        native = predictions.get((a, a))
        if native is None:
            matrix[(a, b)] = "no native result"
            problems.append(f"{a} -> {a}: {errors.get((a, a), 'no result')}")
            continue
        same = int(np.sum(predictions[(a, b)] == native))
        matrix[(a, b)] = f"{same:,}/{len(native):,}"
        if same != len(native):
            problems.append(f"{a} -> {b}: {len(native) - same} classes differ")
    n = len(next(iter(predictions.values()))) if predictions else 0
    figure = (f"{len(pairs)} ordered pairs load; same class on all {n:,} test images in each" if not problems
              else f"{len(problems)} of {len(pairs)} pairs fail")
    return [check(3, "model.keras saved under A, loaded under B", not problems and pairs, figure,
                  "loads, every class the same", "; ".join(problems))], matrix


# ---------------------------------------------------------------- 4. training

MNIST_TRAIN_IMAGES = 60000
# The training level's defaults, by the optimizer steps of the run (epochs x steps per epoch): the
# lowest test accuracy each backend must reach and the widest spread allowed between them. They
# follow the tutorial model's test accuracy after each epoch of batch 32 under the three backends
# (docs/parity.md, "How long a run the training level needs"). A run shorter than the first row is
# refused: after one epoch the backends still differ too much for a spread to tell a broken one
# from an unlucky one.
TRAINING_DEFAULTS = (  # (at least this many steps, floor as a fraction, spread in percentage points)
    (3750, 0.94, 1.0),
    (5625, 0.95, 1.0),
    (9375, 0.96, 1.0),
)


def training_steps(config):
    """(optimizer steps of the run, steps per epoch) of a train config (TrainConfig's fields) on MNIST."""
    images = MNIST_TRAIN_IMAGES - int(round(MNIST_TRAIN_IMAGES * (config.get("validation_split") or 0)))
    per_epoch = math.ceil(images / config["batch_size"])
    if config.get("max_steps_per_epoch"):
        per_epoch = min(per_epoch, config["max_steps_per_epoch"])
    return config["epochs"] * per_epoch, per_epoch


def training_tolerances(config, tol_pp=None, floor=None):
    """(spread in pp, floor) of the training level: the ones given, else TRAINING_DEFAULTS for the
    run's steps. A UsageError, with the reason, for a run too short (or not on MNIST) to judge."""
    if tol_pp is not None and floor is not None:
        return tol_pp, floor
    steps, per_epoch = training_steps(config)
    shortest = TRAINING_DEFAULTS[0][0]
    received = (f"Received: epochs={config['epochs']}, batch_size={config['batch_size']}, max_steps_per_epoch="
                f"{config.get('max_steps_per_epoch') or 0}, dataset={config.get('dataset', 'mnist')!r}")
    if config.get("dataset", "mnist") != "mnist":
        raise UsageError(f"Expected --accuracy-floor and --accuracy-tolerance for a run off MNIST: the defaults "
                         f"are measured on MNIST (docs/parity.md). {received}")
    if steps < shortest:
        raise UsageError(f"Expected a training run of at least {shortest:,} steps for the default accuracy floor "
                         f"and spread: shorter, the backends' test accuracies still differ too much to judge "
                         f"(docs/parity.md). {received} ({steps:,} steps). Train longer (--epochs "
                         f"{math.ceil(shortest / per_epoch)}), or give --accuracy-floor and --accuracy-tolerance.")
    _, auto_floor, auto_tol = [row for row in TRAINING_DEFAULTS if steps >= row[0]][-1]
    return (auto_tol if tol_pp is None else tol_pp), (auto_floor if floor is None else floor)


def compare_training(runs, tol_pp=0.5, floor=None):
    """runs: {backend: {"accuracy": test accuracy, "config": train config}}.

    The spread alone passes three equally broken backends: with `floor` (a fraction, e.g. 0.94)
    a second check requires each backend's run to reach it."""
    accs = {b: 100 * r["accuracy"] for b, r in runs.items()}
    # The backend name is the one setting that should differ; everything else must match.
    configs = {b: {k: v for k, v in r["config"].items() if k not in ("backend", "output_dir")}
               for b, r in runs.items()}
    first = next(iter(configs.values()))
    config_diff = [b for b, c in configs.items() if c != first]
    spread = max(accs.values()) - min(accs.values())
    figure = ", ".join(f"{b} {a:.2f}%" for b, a in accs.items()) + f"; spread {spread:.2f} pp"
    detail = f"configs differ under {', '.join(config_diff)}" if config_diff else ""
    cfg = first
    name = (f"test accuracy, {cfg['model']} model, {cfg['epochs']} epoch(s), seed {cfg['seed']}"
            + (f", <= {cfg['max_steps_per_epoch']} steps/epoch" if cfg.get("max_steps_per_epoch") else ""))
    result = check(4, name, spread <= tol_pp and not config_diff, figure, f"spread <= {tol_pp:g} pp", detail)
    # With validation_split 0 the per-epoch validation ran on the test set: the spread after each
    # epoch shows how much of the final figure is luck of the last epoch.
    curves = [r.get("test_curve") for r in runs.values()]
    if all(curves) and len({len(c) for c in curves}) == 1:
        result["per_epoch_spread_pp"] = [round(100 * (max(a) - min(a)), 2) for a in zip(*curves, strict=False)]
    if not floor:
        return [result]
    below = [b for b, a in accs.items() if a < 100 * floor]
    reached = check(4, f"test accuracy floor, {cfg['model']} model, {cfg['epochs']} epoch(s)", not below,
                    f"lowest {min(accs.values()):.2f}% ({min(accs, key=accs.get)})",
                    f"each >= {100 * floor:.2f}%",
                    f"below the floor: {', '.join(f'{b} {accs[b]:.2f}%' for b in below)}" if below else "")
    return [result, reached]


def compare_seeds(sweeps, floor):
    """sweeps: {backend: {seed: {"accuracy": test accuracy, ...}}} from --seeds. One check: every
    seed under every backend reaches `floor`, so a recipe that trains under one backend and stalls
    under another at some seed fails the report. No check without a sweep."""
    if not any(sweeps.values()):
        return []
    accs = {(b, seed): 100 * r["accuracy"] for b, runs_ in sweeps.items() for seed, r in runs_.items()}
    seeds = sorted({seed for _, seed in accs}, key=int)
    below = [f"{b} seed {seed} {a:.2f}%" for (b, seed), a in accs.items() if floor and a < 100 * floor]
    figure = "; ".join(f"{b} " + ", ".join(f"{accs[b, s]:.2f}%" for s in seeds if (b, s) in accs)
                       for b in sweeps)
    name = f"test accuracy of every seed ({', '.join(seeds)}) under every backend"
    return [check(4, name, not below, figure, f"each >= {100 * floor:.2f}%" if floor else "no floor",
                  "below: " + ", ".join(below) if below else "")]


# ---------------------------------------------------------------- report

def cell(text):
    return str(text).replace("|", "\\|")  # a bare | would split the table cell


def markdown(checks, backends, matrix, infos):
    """The report as markdown: the checks, then each backend's versions, then the load matrix."""
    lines = ["| level | check | measured | tolerance | result |", "|---|---|---|---|---|"]
    for c in checks:
        result = "PASS" if c["passed"] else "**FAIL**"
        lines.append(f"| {c['level']} {c['area']} | {cell(c['name'])} | {cell(c['figure'])} | "
                     f"{cell(c['tolerance'])} | {result} |")
    failed = [c for c in checks if not c["passed"]]
    lines += ["", f"**{'PASS' if not failed else 'FAIL'}**: {len(checks) - len(failed)} of {len(checks)} checks pass."]
    for c in failed:
        lines.append(f"- FAIL {c['area']}: {c['name']}: {c['detail'] or c['figure']}")
    for c in checks:
        if c.get("per_epoch_spread_pp"):
            spreads = c["per_epoch_spread_pp"]
            lines.append(f"- Test accuracy spread after each epoch (pp): {', '.join(f'{v:.2f}' for v in spreads)}; "
                         f"max {max(spreads):.2f}.")
    lines += ["", "| backend | version | keras | device | test accuracy | training s |", "|---|---|---|---|---|---|"]
    for b in backends:
        i = infos.get(b, {})
        acc = i.get("accuracy")
        lines.append(f"| {b} | {i.get('backend_version', '?')} | {i.get('keras_version', '?')} | "
                     f"{i.get('device', '?')} | {'%.2f%%' % (100 * acc) if acc is not None else '?'} | "
                     f"{i.get('train_seconds', '?')} |")
    if matrix:
        lines += ["", "Same class as the saving backend (rows: saved under, columns: loaded under):", "",
                  "| saved \\ loaded | " + " | ".join(backends) + " |", "|---" * (len(backends) + 1) + "|"]
        for a in backends:
            lines.append(f"| {a} | " + " | ".join("-" if a == b else matrix.get((a, b), "?") for b in backends) + " |")
    return "\n".join(lines) + "\n"


def _outputs(arrays, prefix, n_grads, batch):
    """The numerics outputs stored under `prefix` in a check.npz (see worker.check)."""
    return {"probs": arrays[f"{prefix}probs"], "loss": float(arrays[f"{prefix}loss"]),
            "grads": [arrays[f"{prefix}grad_{i}"] for i in range(n_grads)], "batch": batch}


def read_check(folder):
    """One backend's check.json + check.npz: (meta, numerics outputs of the trained weights,
    {source: classes}, {model name: numerics outputs of its initial weights})."""
    folder = Path(folder)
    meta = runs.read_json(folder / "check.json")
    with np.load(folder / "check.npz") as z:
        arrays = {k: z[k] for k in z.files}
    classes = {k[len("classes_from_"):]: v for k, v in arrays.items() if k.startswith("classes_from_")}
    init = {name: _outputs(arrays, f"init/{name}/", len(info["grad_names"]), meta["batch"])
            for name, info in (meta.get("init_models") or {}).items()}
    return meta, _outputs(arrays, "", len(meta["grad_names"]), meta["batch"]), classes, init
