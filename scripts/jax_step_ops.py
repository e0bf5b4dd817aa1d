"""Where the jax native loop's training step goes on CPU, per XLA operation: the tutorial CNN's
step (the Trainer of backends/jax/loop.py, random data) traced with jax.profiler for --steps steps,
the Perfetto trace's operation times summed, in microseconds a step (docs/speed.md).
Names are XLA's (fusions, dots); match them to the optimised HLO with XLA_FLAGS=--xla_dump_to=DIR.

    python scripts/jax_step_ops.py --batch-size 64 --json docs/benchmarks/jax-step-ops-2cpu.json
    python scripts/jax_step_ops.py --batch-size 64 --compile-as-xla-default   # with YNNPACK fusions
"""

import argparse
import collections
import gzip
import json
import os
import platform
import tempfile
from datetime import UTC, datetime
from pathlib import Path


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=100, help="steps a traced call; 3 calls are traced")
    p.add_argument("--top", type=int, default=15, help="operations printed and recorded")
    p.add_argument("--compile-as-xla-default", action="store_true",
                   help="compile the step with XLA's default options (YNNPACK fusions on), not the loop's")
    p.add_argument("--json", help="add this run to the file (runs keyed by batch size and options)")
    args = p.parse_args()
    os.environ["KERAS_BACKEND"] = "jax"
    import jax
    import keras
    import numpy as np

    from mnist_keras3.backends.jax import kernels
    from mnist_keras3.backends.jax.loop import Trainer
    from mnist_keras3.models import build_model

    if args.compile_as_xla_default:
        kernels.SMALL_MODEL_PARAMS = 0  # no model is small: the step compiles with XLA's defaults
    model = build_model("tutorial")
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="categorical_crossentropy")
    rng = np.random.default_rng(0)
    n = args.steps * args.batch_size
    x = rng.random((n, 28, 28, 1), np.float32)
    y = np.eye(10, dtype=np.float32)[rng.integers(0, 10, n)]
    trainer = Trainer(model, x, y)
    batches = rng.permutation(n).reshape(args.steps, args.batch_size)
    trainer.run(batches)  # compile
    trainer.run(batches)
    with tempfile.TemporaryDirectory() as trace_dir:
        with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
            for _ in range(3):
                trainer.run(batches)[0].block_until_ready()  # run() returns unread sums: wait inside the trace
        (trace,) = Path(trace_dir).rglob("*perfetto_trace.json.gz")
        events = json.load(gzip.open(trace))
    events = events["traceEvents"] if isinstance(events, dict) else events
    total = collections.Counter()
    for e in events:
        if e.get("ph") == "X":
            total[e["name"]] += e.get("dur", 0)
    steps = 3 * args.steps
    step_us = total["ThunkExecutor::Execute"] / steps  # the compiled program's own time, a step
    ops = [(name, us / steps) for name, us in total.most_common()
           if not name.startswith(("$", "ThunkExecutor", "np.", "PjitFunction", "Slinky"))][:args.top]
    options = "xla-default" if args.compile_as_xla_default else "loop"
    print(f"batch {args.batch_size}, compiled as the {options}: {step_us:.0f} us a step (traced)")
    for name, us in ops:
        print(f"{us:8.1f} us  {name}")
    if args.json:
        path = Path(args.json)
        data = json.loads(path.read_text()) if path.exists() else {"benchmark": "jax-step-ops", "runs": {}}
        data["runs"][f"batch{args.batch_size}-{options}"] = {
            "command": "python scripts/jax_step_ops.py --batch-size "
                       f"{args.batch_size}{' --compile-as-xla-default' if args.compile_as_xla_default else ''}"
                       f" --json {args.json}",
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "machine": platform.processor()
            or platform.machine(), "cpus": os.cpu_count(), "versions": {"jax": jax.__version__},
            "step_us": round(step_us, 1), "ops_us": {name: round(us, 1) for name, us in ops}}
        path.write_text(json.dumps(data, indent=1) + "\n")


if __name__ == "__main__":
    main()
