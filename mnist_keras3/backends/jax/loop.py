"""jax: `model.stateless_call` + `optimizer.stateless_apply` under `jax.jit`: STEPS_PER_CALL steps
in one `lax.scan` call, or (where XLA:CPU convolutions remain in the step) one call per step,
dispatched asynchronously, the host reading the loss once per call. The training arrays live on
the device and each step gathers its batch there.

The XLA:CPU tuning (kernels.py: small convolutions and max pools swapped for faster equivalent
kernels, a small model's step compiled without YNNPACK fusions, and one call per step where an XLA
convolution is left) applies where the step runs on the CPU platform; on any other platform the
step is XLA's own, always scanned. `Trainer(..., platform=...)` picks either path whatever the
device, so CPU tests take the path an accelerator takes.
"""

import jax
import jax.numpy as jnp

from ..loop import check_compiled, device_images, split, timed
from . import kernels

DATA_PARALLEL = False  # --distribute data-parallel: keras.distribution's DataParallel runs through fit


def private_api_problem():
    """What the kernel rewrite (kernels.py) needs of jax's jaxpr internals, checked on a tiny program;
    None when all is there. tests/test_auto_loop.py asserts None, so a jax upgrade that changes them
    fails loudly there, while `--loop auto` falls back to fit with this message."""
    return kernels.internals_problem()


def unsupported_settings(cfg):
    """jit_compile "off": this loop is jax.jit by construction; Keras's fit runs eagerly instead."""
    if cfg.jit_compile == "off":
        return "the jax native loop always compiles its step (jax.jit); with --jit-compile off Keras's fit runs eagerly"
    return None


class Trainer:
    def __init__(self, model, x, y, jit_compile="auto", platform=None):
        import keras

        check_compiled(model)
        self.model = model
        self.optimizer = model.optimizer
        if not self.optimizer.built:
            self.optimizer.build(model.trainable_variables)
        x, scale = device_images(x)  # uint8 levels where the images are k / 255
        self.x, self.y = jax.device_put(x), jax.device_put(y)  # (N, 28, 28, 1), (N, 10), once

        def images(x, b):  # (B,) indices -> (B, 28, 28, 1) float32, converted on the device
            return x[b].astype(jnp.float32) / scale if scale else x[b]

        self._images = images
        loss_fn = keras.losses.get(model.loss)

        def loss_and_updates(trainable, non_trainable, xb, yb):
            logits, non_trainable = model.stateless_call(trainable, non_trainable, xb, training=True)
            loss = jnp.mean(loss_fn(yb, logits))
            hits = jnp.sum(jnp.argmax(logits, -1) == jnp.argmax(yb, -1))
            return loss, (non_trainable, hits)

        # XLA:CPU's kernels for tiny convolutions are slow (kernels.py); other platforms keep XLA's own.
        self.cpu_tuned = (platform or jax.default_backend()) == "cpu"
        if self.cpu_tuned:
            loss_and_updates = kernels.rewrite(loss_and_updates)
        grad_fn = jax.value_and_grad(loss_and_updates, has_aux=True)

        def step(state, sums, x, y, b):  # b: (B,) sample indices
            trainable, non_trainable, opt_vars = state
            (loss, (non_trainable, h)), grads = grad_fn(trainable, non_trainable, images(x, b), y[b])
            trainable, opt_vars = self.optimizer.stateless_apply(opt_vars, grads, trainable)
            return (list(trainable), list(non_trainable), list(opt_vars)), (sums[0] + loss * b.shape[0], sums[1] + h)

        def steps(state, sums, x, y, batches):  # batches: (k, B): k steps in one XLA call
            return jax.lax.scan(lambda carry, b: (step(*carry, x, y, b), None), (state, sums), batches)[0]

        # k steps in one lax.scan cut the host round trips, but XLA:CPU runs the convolutions it
        # keeps (those kernels.py does not swap) far slower inside the scan's while loop than in
        # straight-line code (docs/speed.md). So on the CPU: the scan when no XLA convolution is left
        # in the step, else one jitted step per batch. State and sums are donated: updated in place.
        # Small models on the CPU: without XLA:CPU's YNNPACK fusions (kernels.compiler_options).
        self._options = kernels.compiler_options(model.count_params()) if self.cpu_tuned else None
        self._step = jax.jit(step, donate_argnums=(0, 1), compiler_options=self._options)
        self._steps = jax.jit(steps, donate_argnums=(0, 1), compiler_options=self._options)
        # Scanned off the CPU; on it, decided on the traced step (_choose).
        self._loss_fn, self._grad_fn, self.scan = loss_and_updates, grad_fn, None if self.cpu_tuned else True
        self.state = self._read_state()

    def _read_state(self):
        # Copies: the calls donate (free) the state they are given, and the Keras variables must
        # stay readable between calls (by callbacks, say).
        m, o = self.model, self.optimizer
        return tuple([jnp.array(v.value) for v in vs]
                     for vs in (m.trainable_variables, m.non_trainable_variables, o.variables))

    def _choose(self, batches):
        if self.scan is None:  # decided once, on the traced step
            b = batches[0]
            program = jax.make_jaxpr(self._grad_fn)(*self.state[:2], self._images(self.x, b), self.y[b])
            self.scan = not kernels.has_primitive(program.jaxpr, "conv_general_dilated")

    @property
    def step_kind(self):
        """How the step runs, for metrics.json and the benchmark (decided on the first call)."""
        calls = {True: ", lax.scan of several steps a call", False: ", one step a call", None: ""}[self.scan]
        return f"jax.jit{calls}{', XLA:CPU kernel rewrites' if self.cpu_tuned else ''}; Keras's Adam"

    def indices(self, array):
        """Sample indices (numpy) -> a device array, in one copy."""
        return jax.device_put(array)

    def run(self, batches):
        """Train on (k, B) indices; returns (loss_sum, hits) as device scalars, unread, and the samples seen."""
        sums = (jnp.zeros((), jnp.float32), jnp.zeros((), jnp.int32))
        self._choose(batches)
        if self.scan:
            self.state, sums = self._steps(self.state, sums, self.x, self.y, jnp.asarray(batches))
        else:
            for b in batches:  # asynchronous dispatch: the host runs ahead until the sums are read
                self.state, sums = self._step(self.state, sums, self.x, self.y, b)
        return sums[0], sums[1], batches.shape[0] * batches.shape[1]

    def profile(self, batches):
        """Seconds per step of each phase (backends/loop.py): the forward alone, the forward with
        its gradients (summed, so that XLA keeps them), each stepped as run() steps (one scan, or
        one call per batch), and run() itself. It trains on the batches."""
        self._choose(batches)
        images, x, y = self._images, self.x, self.y

        def forward(tr, ntr, b):
            return self._loss_fn(tr, ntr, images(x, b), y[b])[0]

        def with_grads(tr, ntr, b):
            (loss, _), grads = self._grad_fn(tr, ntr, images(x, b), y[b])
            return loss + sum(jnp.sum(g) for g in grads)

        def program(fn):  # the weights are arguments: as closure constants XLA might fold them
            state = self.state[:2]
            if self.scan:
                scanned = jax.jit(lambda tr, ntr, bs: jax.lax.scan(
                    lambda c, b: (c + fn(tr, ntr, b), None), jnp.float32(0), bs)[0], compiler_options=self._options)
                return lambda: scanned(*state, jnp.asarray(batches)).block_until_ready()
            one = jax.jit(fn, compiler_options=self._options)
            return lambda: sum(one(*state, b) for b in batches).block_until_ready()

        whole = lambda: self.run(batches)[0].block_until_ready()  # noqa: E731  (the sums: waits for the call)
        seconds = [timed(program(forward)), timed(program(with_grads)), timed(whole)]
        return split(batches, *seconds)

    def sync(self):
        """Write the state back into the Keras variables (for evaluate, checkpoints, saving)."""
        trainable, non_trainable, opt_vars = self.state
        for variables, values in ((self.model.trainable_variables, trainable),
                                  (self.model.non_trainable_variables, non_trainable),
                                  (self.optimizer.variables, opt_vars)):
            for v, value in zip(variables, values, strict=False):
                v.assign(value)
        self.state = self._read_state()
