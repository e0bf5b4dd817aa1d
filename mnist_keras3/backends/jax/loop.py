"""jax: `model.stateless_call` + `optimizer.stateless_apply` in a `lax.scan` over up to
STEPS_PER_CALL steps, under one `jax.jit`: one host round trip per call instead of per step. The
training arrays live on the device and each step gathers its batch there. On CPU the traced step
has its small convolutions and max pools swapped for faster equivalent kernels (kernels.py)."""

import jax
import jax.numpy as jnp

from ..loop import check_compiled
from . import kernels


class Trainer:
    def __init__(self, model, x, y):
        import keras

        check_compiled(model)
        self.model = model
        self.optimizer = model.optimizer
        if not self.optimizer.built:
            self.optimizer.build(model.trainable_variables)
        self.x, self.y = jax.device_put(x), jax.device_put(y)  # (N, 28, 28, 1), (N, 10), once
        loss_fn = keras.losses.get(model.loss)

        def loss_and_updates(trainable, non_trainable, xb, yb):
            probs, non_trainable = model.stateless_call(trainable, non_trainable, xb, training=True)
            loss = jnp.mean(loss_fn(yb, probs))
            hits = jnp.sum(jnp.argmax(probs, -1) == jnp.argmax(yb, -1))
            return loss, (non_trainable, hits)

        if jax.default_backend() == "cpu":  # XLA:CPU's kernels for tiny convs are slow: kernels.py
            loss_and_updates = kernels.rewrite(loss_and_updates)
        grad_fn = jax.value_and_grad(loss_and_updates, has_aux=True)

        def call(state, x, y, batches):  # batches: (k, B) sample indices
            def step(carry, b):
                trainable, non_trainable, opt_vars, loss_sum, hits = carry
                (loss, (non_trainable, h)), grads = grad_fn(trainable, non_trainable, x[b], y[b])
                trainable, opt_vars = self.optimizer.stateless_apply(opt_vars, grads, trainable)
                carry = (list(trainable), list(non_trainable), list(opt_vars))
                return (*carry, loss_sum + loss * b.shape[0], hits + h), None

            zero = (jnp.zeros((), jnp.float32), jnp.zeros((), jnp.int32))
            (trainable, non_trainable, opt_vars, loss_sum, hits), _ = jax.lax.scan(step, (*state, *zero), batches)
            return (list(trainable), list(non_trainable), list(opt_vars)), loss_sum, hits

        # The state is donated: XLA updates the weights in place instead of copying them each call.
        self._call = jax.jit(call, donate_argnums=0)
        self.state = self._read_state()

    def _read_state(self):
        # Copies: the calls donate (free) the state they are given, and the Keras variables must
        # stay readable between calls (by callbacks, say).
        m, o = self.model, self.optimizer
        return tuple([jnp.array(v.value) for v in vs]
                     for vs in (m.trainable_variables, m.non_trainable_variables, o.variables))

    def run(self, batches):
        self.state, loss_sum, hits = self._call(self.state, self.x, self.y, jnp.asarray(batches))
        return float(loss_sum), int(hits), int(batches.size)

    def sync(self):
        """Write the state back into the Keras variables (for evaluate, checkpoints, saving)."""
        trainable, non_trainable, opt_vars = self.state
        for variables, values in ((self.model.trainable_variables, trainable),
                                  (self.model.non_trainable_variables, non_trainable),
                                  (self.optimizer.variables, opt_vars)):
            for v, value in zip(variables, values, strict=False):
                v.assign(value)
        self.state = self._read_state()
