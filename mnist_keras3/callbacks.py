"""Keras callbacks the trainer adds to fit(): epoch timing and an atomic per-epoch checkpoint."""

import math
import signal
import time

import keras

from . import runs


class EpochTimer(keras.callbacks.Callback):
    """Seconds of training per epoch, validation excluded (validation starts on_test_begin):
    wall clock (train_seconds) and this process's CPU time (cpu_seconds, all its threads)."""

    def __init__(self):
        super().__init__()
        self.train_seconds, self.cpu_seconds = [], []
        self._t0 = None

    def on_epoch_begin(self, epoch, logs=None):
        self._t0, self._c0 = time.perf_counter(), time.process_time()
        self._stopped = None

    def on_test_begin(self, logs=None):
        if self._t0 is not None and self._stopped is None:  # validation inside fit
            self._stopped = (time.perf_counter(), time.process_time())

    def on_epoch_end(self, epoch, logs=None):
        end, cpu_end = self._stopped or (time.perf_counter(), time.process_time())
        self.train_seconds.append(end - self._t0)
        self.cpu_seconds.append(cpu_end - self._c0)
        self._t0 = None


def time_to_accuracy(history, seconds, initial_epoch=0, marks=(0.99, 0.995)):
    """{mark: {"epoch", "train_seconds"}} for the first epoch with val_accuracy >= mark, training
    seconds summed up to it; None for a resumed run, whose earlier sessions were not timed here."""
    if initial_epoch or "val_accuracy" not in history:
        return None
    out = {}
    for mark in marks:
        hit = next((i for i, acc in enumerate(history["val_accuracy"]) if acc >= mark), None)
        out[f"{mark:g}"] = None if hit is None else {"epoch": hit + 1,
                                                     "train_seconds": round(sum(seconds[:hit + 1]), 3)}
    return out


class Checkpoint(keras.callbacks.Callback):
    """After each complete epoch with a finite loss: the run's checkpoint (runs.write_checkpoint:
    checkpoint.keras with the optimizer state, checkpoint.json, history.csv)."""

    def __init__(self, run_dir, history_so_far=None, stopper=None, model=None, record=None, state=None):
        super().__init__()
        self.state = state or {}  # more of the run's state for checkpoint.json (its distribution)
        self.record = record  # the sidecar written beside checkpoint.keras (records.py)
        # What is saved: `model`, the probability model, while fit drives its logits view
        # (training.training_view); the trained model itself when None.
        self.target = model
        self.run_dir = run_dir
        self.stopper = stopper
        self.history = {k: list(v) for k, v in (history_so_far or {}).items()}
        self.last_good_epoch = None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if not all(math.isfinite(float(v)) for v in logs.values()):
            return  # never checkpoint a diverged model
        if self.stopper is not None and self.stopper.signal_name:
            return  # the epoch was cut short: its figures and weights are not a complete epoch
        for k, v in logs.items():
            self.history.setdefault(k, []).append(float(v))
        runs.write_checkpoint(self.run_dir, self.target or self.model, epoch + 1, self.history, self.record,
                              self.state)
        self.last_good_epoch = epoch + 1


class Reseed(keras.callbacks.Callback):
    """Seed every RNG from (seed, epoch) at each epoch's start, so the shuffle order of an epoch
    does not depend on how the run got there: a resumed run replays the uninterrupted one."""

    def __init__(self, seed):
        super().__init__()
        self.seed = seed

    def on_epoch_begin(self, epoch, logs=None):
        keras.utils.set_random_seed(self.seed + 1000 * (epoch + 1))


class StopOnSignal(keras.callbacks.Callback):
    """Ctrl-C or SIGTERM asks fit() to stop after the current batch; a second one stops at once.

    Raising from the signal handler is not safe: Keras has bare `except:` clauses (saving,
    variables) that would swallow the KeyboardInterrupt, so the handler only sets a flag.
    Use as a context manager around fit(); it restores the previous handlers.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)
    reads_batch_logs = False  # its batch hook checks a flag: the native loops need not read the loss for it

    def __init__(self):
        super().__init__()
        self.signal_name = None
        self._previous = {}

    def __enter__(self):
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        # After a signal stopped training the process only reports what is saved and exits: a
        # further Ctrl-C then has nothing to stop, and with the previous (default) handler back it
        # would cut that report short with a KeyboardInterrupt. So it is ignored from here on
        # (restore() puts the previous handlers back, for a caller that carries on).
        for sig, handler in self._previous.items():
            signal.signal(sig, signal.SIG_IGN if self.signal_name else handler)
        return False

    def restore(self):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame):
        if self.signal_name:
            raise KeyboardInterrupt
        self.signal_name = signal.Signals(signum).name

    def on_train_batch_end(self, batch, logs=None):
        if self.signal_name:
            self.model.stop_training = True


def tensorboard(log_dir, prefer_keras=True):
    """`--tensorboard`: Keras's own TensorBoard callback where tensorflow is installed (it writes
    through tf.summary, under any backend); elsewhere the same per-epoch scalars through
    TensorBoard's framework-free writer (`pip install tensorboard`), so torch- and jax-only
    installs log too. Either way: log_dir/train and log_dir/validation, tags epoch_<metric>."""
    import importlib.util

    if prefer_keras and importlib.util.find_spec("tensorflow") is not None:
        return keras.callbacks.TensorBoard(log_dir=str(log_dir), write_graph=False)
    if importlib.util.find_spec("tensorboard") is None:
        from .errors import UsageError

        raise UsageError("--tensorboard needs tensorflow or the tensorboard package, and neither is "
                         'installed. Install one: pip install tensorboard (or "mnist-keras3[tensorboard]").')
    return TensorBoardScalars(log_dir)


class TensorBoardScalars(keras.callbacks.Callback):
    """Per-epoch scalars, laid out and named as keras.callbacks.TensorBoard writes them
    (train/ and validation/ runs, epoch_loss, epoch_accuracy, epoch_learning_rate), written
    with tensorboard.summary.Writer, which needs numpy only."""

    def __init__(self, log_dir):
        super().__init__()
        self.log_dir = str(log_dir)
        self._writers = {}

    def _writer(self, run):
        from tensorboard.summary import Writer

        if run not in self._writers:
            self._writers[run] = Writer(f"{self.log_dir}/{run}")
        return self._writers[run]

    def on_epoch_end(self, epoch, logs=None):
        logs = dict(logs or {})
        lr = getattr(getattr(self.model, "optimizer", None), "learning_rate", None)
        if lr is not None:  # a schedule's current value, as Keras's callback logs it
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(lr))
        for name, value in logs.items():
            run, name = ("validation", name[4:]) if name.startswith("val_") else ("train", name)
            self._writer(run).add_scalar(f"epoch_{name}", float(value), step=epoch)
        for writer in self._writers.values():
            writer.flush()

    def on_train_end(self, logs=None):
        for writer in self._writers.values():
            writer.close()
        self._writers = {}
