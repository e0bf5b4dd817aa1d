"""Native training loops: the same Keras model and optimizer, driven by the backend's own compiled
loop instead of `model.fit` (`python -m mnist_keras3.train --loop native`).

One contract, one module per backend (backends/<name>/loop.py), and one name in each:

- `Trainer(model, x, y, jit_compile="auto")`: holds the training arrays on the device (the images
  as uint8 where they are k / 255: `device_images`) and the compiled step(s) (jit_compile:
  cfg.jit_compile, config.JIT_COMPILE); `indices(array)` copies a numpy array of sample indices to
  the device (once per epoch: the epoch's batches are sliced from it there);
  `run(batches) -> (loss_sum, hits, seen)` trains on a (k, batch) array of sample indices (numpy
  or from `indices`), one optimizer step per row, and returns the sums as device scalars, unread
  (seen: an int), so that nothing waits for the device until `read` (below);
  `sync()` writes whatever it holds outside the Keras variables back into them (jax keeps the
  state as arrays between calls), before validation and checkpoints;
  `profile(batches) -> {phase: seconds per step}` for PHASES (forward, backward, optimizer, host),
  what `python -m mnist_keras3.bench --profile` prints. A compiled loop (jax, tensorflow) cannot be
  stopped between phases, so there the forward, the forward with its gradients and run() are timed
  as programs of their own, the phases are their differences, and "optimizer" includes what little
  host work a call of many steps has.
- `unsupported_settings(cfg)`: why the loop cannot train with these settings (None when it can).

`DATA_PARALLEL`: whether the Trainer trains under --distribute data-parallel (torch: DDP wraps its
step when torch.distributed's process group is up; the others leave it to Keras's fit).

`fit(native, model, train_data, val_data, cfg, callbacks=(), initial_epoch=0, steps_per_epoch=None,
verbose=0)` below trains with that backend's Trainer -> history dict {accuracy, loss, val_accuracy,
val_loss: [per epoch]}, like `fit`'s; verbose as in `fit` (Keras's own progress bar).

The epoch loop around the trainer is shared (`run_epochs` below), so every backend calls the
callbacks at the same points as `model.fit` does: on_train_begin, on_epoch_begin, on_train_batch_end
(once per compiled call of up to STEPS_PER_CALL steps, with the running loss, which is what
TerminateOnNaN reads), on_test_begin/on_test_end around validation (`model.evaluate`), on_epoch_end
with the same log keys, on_train_end. Checkpoints, history.csv and metrics.json do not change.
The host reads the running sums from the device only when a callback reads batch logs (the
progress bar, TerminateOnNaN: once per call), else once per epoch; the epoch's sample order goes to
the device in one copy.

The loss is the compiled one (`model.loss`, e.g. "categorical_crossentropy", mean over the batch)
and the accuracy is the arg-max accuracy, as `fit` reports them: the epoch's loss is the
sample-weighted mean of the batch losses. Each epoch draws a fresh permutation from numpy's global
RNG (seeded per epoch by the Reseed callback) and takes its first `steps_per_epoch` batches; the
last batch may be short, as in `fit`.
"""

import functools
import math

import numpy as np

STEPS_PER_CALL = 100  # optimizer steps per compiled call (jax, tensorflow): fewer host round trips
PHASES = ("forward", "backward", "optimizer", "host")  # Trainer.profile's keys


def fit(native, model, train_data, val_data, cfg, callbacks=(), initial_epoch=0, steps_per_epoch=None,
        verbose=0, record=None):
    """Train `model` with the Trainer of `native` (a backend's loop module) in the shared epoch loop;
    returns the history dict. `record` (a dict) gets "step": how the Trainer ran its step
    (Trainer.step_kind), also when training ends in an error."""
    trainer = native.Trainer(model, *train_data, jit_compile=cfg.jit_compile)
    try:
        return run_epochs(trainer, model, train_data, val_data, cfg, callbacks, initial_epoch, steps_per_epoch,
                          verbose)
    finally:
        if record is not None:
            record["step"] = trainer.step_kind


def device_images(x, chunk=4096):
    """The training images as the device holds them: uint8 where every value is exactly k / 255 (what
    data.preprocess makes of every dataset here), each batch converted to float32 on the device (a
    quarter of the memory and of the copy, and the same values: u / 255 in float32, as preprocess
    computes it); else the array itself. -> (array, scale): scale 255.0 for uint8, else None.
    Checked `chunk` images at a time, so the check's float32 temporaries stay small."""
    x = np.asarray(x)
    if x.dtype != np.float32 or not x.size:
        return x, None
    levels = np.empty(x.shape, np.uint8)
    for start in range(0, len(x), chunk):
        part = x[start: start + chunk]
        scaled = np.rint(part * np.float32(255))
        if scaled.min() < 0 or scaled.max() > 255 or not np.array_equal(scaled / np.float32(255), part):
            return x, None
        levels[start: start + chunk] = scaled
    return levels, 255.0


def epoch_batches(order, batch_size, steps):
    """Split a permutation into at most `steps` batches of indices: a (k, batch_size) int array of
    the full batches, then the short last batch (or None), as `fit` would draw them."""
    order = np.asarray(order, dtype=np.int64)[: steps * batch_size]
    full = len(order) // batch_size
    head = order[: full * batch_size].reshape(full, batch_size)  # (k, batch_size)
    tail = order[full * batch_size:]
    return head, (tail[None, :] if len(tail) else None)  # (1, rest) or None


def steps_per_call(full, most=STEPS_PER_CALL):
    """How many of an epoch's `full` batches one compiled call takes: the largest divisor of `full`
    from most / 2 to most, so that every call has the same shape (jax compiles a program per shape,
    each: an epoch of 234 batches as 3 calls of 78, not 100, 100 and 34), else `most`."""
    return next((k for k in range(min(full, most), most // 2 - 1, -1) if k and full % k == 0), most)


def calls(head, tail, per_call=None):
    """The index arrays for each compiled call: chunks of `per_call` full batches (steps_per_call's
    choice by default), then the rest."""
    per_call = per_call or steps_per_call(len(head))
    for start in range(0, len(head), per_call):
        yield head[start: start + per_call]
    if tail is not None:
        yield tail


def reads_batch_logs(callbacks):
    """Whether any callback reads the logs of on_train_batch_end (or on_batch_end): one that overrides
    either hook, unless it says it does not (`reads_batch_logs = False`, as StopOnSignal, which only
    checks a flag). Keras's own test: keras.callbacks.Callback's hooks are the defaults."""
    import keras

    base = keras.callbacks.Callback
    return any(getattr(cb, "reads_batch_logs", True) and (
        type(cb).on_train_batch_end is not base.on_train_batch_end or type(cb).on_batch_end is not base.on_batch_end)
        for cb in callbacks)


def read(loss_sum, hits, seen):
    """(mean loss, accuracy) of the epoch's device sums; reading them waits for the device (as does
    the running loss run_epochs reads for batch logs, where a callback wants them)."""
    return float(loss_sum) / seen, float(hits) / seen


def run_epochs(trainer, model, train_data, val_data, cfg, callbacks=(), initial_epoch=0,
               steps_per_epoch=None, verbose=0):
    """The shared epoch loop (see the module docstring); returns the history dict."""
    import keras

    n = len(train_data[0])
    steps = steps_per_epoch or math.ceil(n / cfg.batch_size)
    cbs = callbacks if isinstance(callbacks, keras.callbacks.CallbackList) else keras.callbacks.CallbackList(
        list(callbacks), model=model, add_history=False, add_progbar=bool(verbose),
        epochs=cfg.epochs, steps=steps, verbose=verbose)
    reads = reads_batch_logs(cbs.callbacks)
    history = {}
    model.stop_training = False
    cbs.on_train_begin()
    for epoch in range(initial_epoch, cfg.epochs):
        cbs.on_epoch_begin(epoch)  # Reseed seeds numpy here, so the order below is reproducible
        head, tail = epoch_batches(np.random.permutation(n), cfg.batch_size, steps)
        head = trainer.indices(head)  # (steps, B) on the device: the calls below slice it there
        tail = None if tail is None else trainer.indices(tail)
        loss_sum = hits = None
        seen = done = 0
        for batches in calls(head, tail):
            part = trainer.run(batches)  # device sums: nothing waits for the device here
            loss_sum, hits = part[:2] if loss_sum is None else (loss_sum + part[0], hits + part[1])
            seen += part[2]
            done += len(batches)
            cbs.on_train_batch_end(done - 1, {"loss": float(loss_sum) / seen} if reads else {})
            if model.stop_training:
                break
        trainer.sync()
        loss, accuracy = read(loss_sum, hits, seen)
        logs = {"accuracy": accuracy, "loss": loss}
        if val_data is not None:
            val = model.evaluate(*val_data, batch_size=cfg.eval_batch_size, verbose=0,
                                 return_dict=True, callbacks=cbs)
            logs.update({f"val_{k}": float(v) for k, v in val.items()})
        cbs.on_epoch_end(epoch, logs)
        for k, v in logs.items():
            history.setdefault(k, []).append(float(v))
        if model.stop_training:
            break
    cbs.on_train_end()
    return history


def plain_adam(optimizer, variables):
    """Whether `optimizer` is Keras's plain Adam, which a backend may compute with its own fused
    kernel on the optimizer's own moment variables (torch: _fused_adam_, tensorflow: ApplyAdam):
    no amsgrad, weight decay, clipping, EMA, loss scaling, accumulation or constraints."""
    import keras

    o = optimizer
    return (type(o).__name__ == "Adam" and isinstance(o, keras.optimizers.Adam)
            and not o.amsgrad and o.weight_decay is None and o.use_ema is False
            and o.clipnorm is None and o.clipvalue is None and o.global_clipnorm is None
            and o.loss_scale_factor is None and not o.gradient_accumulation_steps
            and all(v.constraint is None for v in variables))


KERAS_ADAM_PRIVATE = ("_get_variable_index", "_get_current_learning_rate", "_momentums", "_velocities",
                      "_learning_rate")


@functools.cache  # one check per process: loop.choose asks on every run
def keras_adam_problem():
    """What the fused Adams (torch, tensorflow) read of a built keras.optimizers.Adam beyond its public
    API, checked on a real one, with a constant rate and with a schedule; None when all is there.
    Instance attributes (the moment lists) exist only once the optimizer is built, hence the build."""
    import keras

    missing = []
    for lr in (1e-3, keras.optimizers.schedules.ExponentialDecay(1e-3, 10, 0.5)):
        opt = keras.optimizers.Adam(learning_rate=lr)
        var = keras.Variable(np.zeros(2, "float32"))
        opt.build([var])
        missing += [f"keras.optimizers.Adam.{a}" for a in KERAS_ADAM_PRIVATE
                    if not hasattr(opt, a) and f"keras.optimizers.Adam.{a}" not in missing]
        if not missing and (len(opt._momentums) != 1 or opt._momentums[opt._get_variable_index(var)] is None):
            missing.append("keras.optimizers.Adam._momentums per variable")
    return f"keras {keras.__version__} lacks {', '.join(missing)}" if missing else None


def check_compiled(model):
    """The native loops train what training.py compiles: one Keras loss, plus the optimizer."""
    import keras

    from ..errors import UsageError

    loss = getattr(model, "loss", None)
    if getattr(model, "optimizer", None) is None or not isinstance(loss, str | keras.losses.Loss):
        raise UsageError("Expected a model compiled with an optimizer and one Keras loss (as training.py "
                         "does) for --loop native. Received: an uncompiled model or a custom loss.")


def unsupported(cfg, native):
    """Why the backend's native loop (`native`, backends/<name>/loop.py: the Backend handle's loop)
    cannot train this run (None when it can): settings it does not cover (its
    unsupported_settings(cfg)), or a private framework API it relies on that this framework version
    lacks (each backend's loop.private_api_problem(); tests/test_auto_loop.py fails loudly when one
    goes missing)."""
    if cfg.distribute != "none" and not native.DATA_PARALLEL:
        return f"the {cfg.backend} native loop does not run --distribute {cfg.distribute}; Keras's fit does"
    setting = native.unsupported_settings(cfg)
    if setting:
        return setting
    problem = native.private_api_problem()
    return f"{problem}, so the native loop is off" if problem else None


def choose(cfg, native):
    """(loop that runs, why auto fell back to fit or None): "auto" takes the native loop where
    `unsupported` finds nothing; "native" asked for where it is unsupported is a UsageError. A run
    chooses once (training.run) and passes the answer on."""
    from ..errors import UsageError

    if cfg.loop == "fit":
        return "fit", None
    reason = unsupported(cfg, native)
    if cfg.loop == "native" and reason:
        raise UsageError(f"Expected settings the native loop supports for --loop native. Received: {reason}. "
                         "Use --loop fit (or auto, which picks fit here).")
    return ("fit", reason) if reason else ("native", None)


def timed(fn, *args, repeats=3):
    """The median wall seconds of fn(*args) over `repeats` calls, after one untimed call (compiling)."""
    import statistics
    import time

    fn(*args)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(*args)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def split(batches, forward, with_grads, whole):
    """Per-step phases from the seconds of three programs over the same k batches: the forward
    only, the forward and its gradients, and the whole run() (tensorflow, jax)."""
    k = len(batches)
    return {"forward": forward / k, "backward": max(0.0, with_grads - forward) / k,
            "optimizer": max(0.0, whole - with_grads) / k, "host": 0.0}
