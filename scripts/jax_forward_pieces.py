"""Where the jax native loop's forward goes on CPU: the tutorial CNN's forward built up piece by
piece (kernels.py's convolutions and tiled max pools, random weights), each timed as a 100-step
`lax.scan` at one batch size and compiled as the native loop compiles it (docs/speed.md).

    python scripts/jax_forward_pieces.py --batch-sizes 32,64 --json docs/benchmarks/jax-forward-pieces-2cpu.json
"""

import argparse
import json
import os
import platform
import statistics
import time
from datetime import UTC, datetime


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch-sizes", default="32,64")
    p.add_argument("--repeats", type=int, default=7, help="timed calls per piece; the median is kept")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args()
    os.environ["KERAS_BACKEND"] = "jax"
    import jax
    import jax.numpy as jnp
    import numpy as np

    from mnist_keras3.backends.jax import kernels

    rng = np.random.default_rng(0)
    images = jnp.asarray(rng.random((60000, 28, 28, 1), np.float32))
    k1, k2 = (jnp.asarray(rng.normal(size=s).astype(np.float32)) for s in ((3, 3, 1, 4), (3, 3, 4, 4)))
    b1 = b2 = jnp.zeros(4)
    dense = jnp.asarray(rng.normal(size=(100, 10)).astype(np.float32))

    def pool(x):
        return kernels._tiled_max_pool(x, (1, 2, 2, 1))

    def conv(x, k):  # as the rewritten step computes a VALID convolution
        return kernels._conv(x, k, ((0, 0), (0, 0)))

    def block1(x):
        return pool(jax.nn.relu(conv(x, k1) + b1))  # (N, 13, 13, 4)

    def xla_block1(x):
        conv = jax.lax.conv_general_dilated(x, k1, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
        return pool(jax.nn.relu(conv + b1))

    pieces = {  # each includes the ones above it
        "gather the batch": lambda x: x,
        "conv1 (1 -> 4 channels)": lambda x: conv(x, k1),
        "+ bias, ReLU": lambda x: jax.nn.relu(conv(x, k1) + b1),
        "+ max pool": block1,
        "block 1 with XLA's own convolution": xla_block1,
        "+ conv2 (4 -> 4)": lambda x: conv(block1(x), k2),
        "+ bias, ReLU, max pool": lambda x: pool(jax.nn.relu(conv(block1(x), k2) + b2)),
        "whole forward to logits": lambda x: pool(jax.nn.relu(conv(block1(x), k2) + b2))
        .reshape(x.shape[0], -1) @ dense,
    }
    options = kernels.compiler_options(1_198)  # the tutorial CNN's step compiles with these
    rows = []
    for bs in (int(size) for size in args.batch_sizes.split(",")):
        batches = jnp.asarray(rng.integers(0, len(images), (100, bs)))
        for name, piece in pieces.items():
            def program(bs_, piece=piece):
                return jax.lax.scan(lambda c, b: (c + jnp.sum(piece(images[b])), None), jnp.float32(0), bs_)[0]
            run = jax.jit(program, compiler_options=options)
            run(batches).block_until_ready()  # compile
            seconds = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                run(batches).block_until_ready()
                seconds.append(time.perf_counter() - start)
            ms = round(statistics.median(seconds) / 100 * 1e3, 3)
            rows.append({"batch_size": bs, "piece": name, "ms_per_step": ms})
            print(f"batch {bs:3d}  {name:38s} {ms:.3f} ms a step", flush=True)
    if args.json:
        out = {"benchmark": "jax-forward-pieces", "command": "python scripts/jax_forward_pieces.py "
               f"--batch-sizes {args.batch_sizes} --json {args.json}",
               "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "machine": platform.processor() or
               platform.machine(), "cpus": os.cpu_count(), "versions": {"jax": jax.__version__}, "rows": rows}
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(out, f, indent=1)
            f.write("\n")


if __name__ == "__main__":
    main()
