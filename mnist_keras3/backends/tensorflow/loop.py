"""tensorflow: one `tf.function` runs up to STEPS_PER_CALL optimizer steps in a graph loop
(GradientTape + the Keras optimizer; Keras's plain Adam as TensorFlow's ApplyAdam kernel), gathering
each batch from the training arrays held on the device: one Python round trip per call instead of
per step, and no tf.data pipeline.

XLA (`jit_compile`) as Keras decided it when the model was compiled (`model.jit_compile`: "auto"
is XLA with a GPU, where the model supports it, and not on a CPU-only machine, where XLA's kernels
for these 1- and 4-channel convolutions and its max-pool gradient were slower than TensorFlow's own:
docs/speed.md). A model compiled with jit_compile=True takes the XLA path on the CPU too (tested)."""

import tensorflow as tf

from ..loop import check_compiled, device_images, keras_adam_problem, plain_adam, split, timed

DATA_PARALLEL = False  # --distribute data-parallel: MirroredStrategy runs through fit


def private_api_problem():
    """What this loop needs beyond tensorflow's and Keras's public APIs (FusedKerasAdam's view of the
    Keras optimizer), checked; None when all is there. tests/test_auto_loop.py asserts None, so an
    upgrade that removes one fails loudly there, while `--loop auto` falls back to fit with this message."""
    return keras_adam_problem()


class FusedKerasAdam:
    """Keras's plain Adam update as TensorFlow's own kernel, one ApplyAdam op per variable on the
    Keras optimizer's own moment variables (checkpoints and resuming unchanged), where Keras's
    update_step is about ten graph ops per variable, each paying the graph executor's cost per op.
    The same arithmetic: m += (g - m)(1 - b1), v += (g^2 - v)(1 - b2), w -= lr sqrt(1 - b2^t) /
    (1 - b1^t) m / (sqrt(v) + eps) (tests/test_loops.py: three steps against train_on_batch, to 1e-5)."""

    def __init__(self, optimizer, variables):
        self.opt, self.variables = optimizer, variables
        index = optimizer._get_variable_index
        self.m = [optimizer._momentums[index(v)] for v in variables]
        self.v = [optimizer._velocities[index(v)] for v in variables]

    fits = staticmethod(plain_adam)

    def apply(self, grads):
        """Inside the tf.function: one Adam step for every variable, then iterations += 1."""
        o = self.opt
        t = tf.cast(o.iterations + 1, tf.float32)
        beta_1, beta_2 = tf.constant(o.beta_1, tf.float32), tf.constant(o.beta_2, tf.float32)
        lr = tf.cast(o._get_current_learning_rate(), tf.float32)
        for var, m, v, g in zip(self.variables, self.m, self.v, grads, strict=True):
            tf.raw_ops.ResourceApplyAdam(
                var=var.value.handle, m=m.value.handle, v=v.value.handle, beta1_power=tf.pow(beta_1, t),
                beta2_power=tf.pow(beta_2, t), lr=lr, beta1=beta_1, beta2=beta_2,
                epsilon=tf.constant(o.epsilon, tf.float32), grad=tf.cast(g, tf.float32))
        o.iterations.assign_add(1)


def unsupported_settings(cfg):
    return None  # jit_compile on/off: XLA or not, both tested


class Trainer:
    def __init__(self, model, x, y, jit_compile="auto"):
        import keras

        check_compiled(model)
        self.model = model
        optimizer = model.optimizer
        variables = model.trainable_variables
        if not optimizer.built:
            optimizer.build(variables)  # optimizer variables cannot be made inside the graph
        x, scale = device_images(x)  # uint8 levels where the images are k / 255
        self.x, self.y = tf.convert_to_tensor(x), tf.convert_to_tensor(y)  # on the device, once
        loss_fn = keras.losses.get(model.loss)
        x_all, y_all = self.x, self.y

        def images(b):  # (B,) indices -> (B, 28, 28, 1) float32, converted on the device
            return tf.cast(tf.gather(x_all, b), tf.float32) / scale if scale else tf.gather(x_all, b)

        # "auto": fit's own choice for this model (see the module docstring)
        jit = {"on": True, "off": False}.get(jit_compile, bool(model.jit_compile))
        # float32 variables only: ApplyAdam runs in the variables' dtype (mixed precision: Keras's own)
        fused = FusedKerasAdam(optimizer, variables) if FusedKerasAdam.fits(optimizer, variables) and all(
            v.dtype == "float32" for v in variables) else None
        self.fused = fused

        @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32)],
                     jit_compile=jit)
        def call(batches):  # (k, B) sample indices; one signature serves every k and B
            loss_sum = tf.constant(0.0)
            hits = tf.constant(0, tf.int64)
            for i in tf.range(tf.shape(batches)[0]):
                b = batches[i]
                xb, yb = images(b), tf.gather(y_all, b)  # (B, 28, 28, 1), (B, 10)
                with tf.GradientTape() as tape:
                    logits = model(xb, training=True)  # the training view's output (training.py)
                    loss = tf.reduce_mean(loss_fn(yb, logits))
                if fused is not None:
                    fused.apply(tape.gradient(loss, variables))
                else:
                    optimizer.apply(tape.gradient(loss, variables), variables)
                loss_sum += loss * tf.cast(tf.shape(b)[0], tf.float32)
                hits += tf.reduce_sum(tf.cast(tf.argmax(logits, -1) == tf.argmax(yb, -1), tf.int64))
            return loss_sum, hits

        self._call = call
        self.jit_compile = jit

        def program(with_grads):  # the loop above without (part of) the step, for profile()
            @tf.function(input_signature=[tf.TensorSpec([None, None], tf.int32)],
                         jit_compile=jit)
            def part(batches):
                total = tf.constant(0.0)
                for i in tf.range(tf.shape(batches)[0]):
                    b = batches[i]
                    xb, yb = images(b), tf.gather(y_all, b)
                    with tf.GradientTape() as tape:
                        loss = tf.reduce_mean(loss_fn(yb, model(xb, training=True)))
                    if with_grads:  # summed, so that the graph keeps them
                        loss += tf.add_n([tf.reduce_sum(g) for g in tape.gradient(loss, variables)])
                    total += loss
                return total
            return part

        self._parts = program(False), program(True)

    @property
    def step_kind(self):
        """How the step runs, for metrics.json and the benchmark."""
        adam = "fused kernel" if self.fused is not None else "Keras's"
        return f"tf.function{' with XLA' if self.jit_compile else ''}, several steps a call; {adam} Adam"

    def indices(self, array):
        """Sample indices (numpy) -> an int32 tensor (TensorFlow keeps int32 in host memory), one copy."""
        return tf.constant(array, tf.int32)

    def run(self, batches):
        """Train on (k, B) indices; returns (loss_sum, hits) as tensors, unread, and the samples seen."""
        loss_sum, hits = self._call(batches if tf.is_tensor(batches) else self.indices(batches))
        return loss_sum, hits, batches.shape[0] * batches.shape[1]

    def profile(self, batches):
        """Seconds per step of each phase (backends/loop.py): the graph loop with the forward
        alone, with the forward and its gradients, and run() itself. It trains on the batches."""
        b = self.indices(batches)
        seconds = [timed(lambda fn=fn: fn(b).numpy()) for fn in self._parts]
        seconds.append(timed(lambda: self.run(batches)[0].numpy()))  # reading the sum waits for the call
        return split(batches, *seconds)

    def sync(self):
        pass  # the graph updated the Keras variables themselves
