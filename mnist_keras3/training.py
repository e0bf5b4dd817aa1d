"""The training library: build and compile the model, fit it (Keras's `fit` or the backend's native
loop, mnist_keras3/backends/<name>/loop.py), test it and write the run folder (see runs.py).

`python -m mnist_keras3.train` (train.py) is the command around `run`; the benchmark times
`fit_model`, the same function. Importing this module does not import keras: call these functions
after the backend is chosen (backends.activate).
"""

import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

from . import backends, runs
from .errors import Diverged, Interrupted, MnistKeras3Error, TrainingError, UsageError, brief


def build_compiled(cfg, input_shape=(28, 28, 1), num_classes=10, steps_per_epoch=None):
    """A fresh model of cfg.model in cfg.precision, seeded, compiled as the tutorial's: optimizer,
    CCE, accuracy."""
    import keras

    from . import models, optimizers
    from .config import PRECISIONS

    keras.utils.set_random_seed(cfg.seed)
    # The layers take the policy when they are made and keep it (it is saved with them, so a resumed
    # or loaded model computes as it trained); the process's global policy is put back after.
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(PRECISIONS[cfg.precision])
    try:
        model = models.build_model(cfg.model, input_shape, num_classes)
    finally:
        keras.config.set_dtype_policy(previous)
    optimizer = optimizers.build_optimizer(cfg, steps_per_epoch or 1)
    model.compile(optimizer=optimizer, loss="categorical_crossentropy", metrics=["accuracy"])
    return model


def load_checkpoint(path):
    """The compiled model of a run's checkpoint.keras, optimizer state included (safe_mode stays
    on); a damaged file is a one-line error rather than Keras's traceback."""
    from .loading import read_keras_file

    return read_keras_file(path, compile=True,
                           hint="Start a new run, or resume a run whose checkpoint is intact.")


def training_view(model, cfg):
    """What fit and the native loops train: models.logits_model(model), the same layers and variables
    with the logits as output, compiled with `model`'s own optimizer and the cross-entropy from the
    logits (cfg.label_smoothing). `model` stays the probability model that is saved and served."""
    import keras

    from . import models
    from .config import JIT_COMPILE

    view = models.logits_model(model)
    loss = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=cfg.label_smoothing)
    view.compile(optimizer=model.optimizer, loss=loss, metrics=["accuracy"], jit_compile=JIT_COMPILE[cfg.jit_compile])
    return view


CHOOSE = "choose"  # fit_model's native=: choose the loop here, as a run would


def fit_model(model, cfg, train_data, val_data, callbacks, initial_epoch=0, verbose=0, view=None, native=CHOOSE,
              record=None):
    """Train `model` through its training_view for cfg.epochs with these callbacks: with the native
    loop `native` (a backend's loop module, as the run chose it once: backends.loop.choose), or with
    model.fit where it is None; by default chosen here (the benchmark, tests). Returns the steps per
    epoch. The benchmark times this same function. `record` (a dict) gets "step": how the native
    loop ran its step (backends/loop.py's fit), or Keras's fit."""
    from .backends import loop
    from .optimizers import steps_per_epoch

    if native == CHOOSE:
        native = backends.active().loop
        native = native if loop.choose(cfg, native)[0] == "native" else None
    steps = steps_per_epoch(len(train_data[0]), cfg)
    view = view or training_view(model, cfg)
    if native is not None:
        loop.fit(native, view, train_data, val_data, cfg, callbacks, initial_epoch=initial_epoch,
                 steps_per_epoch=steps, verbose=verbose, record=record)
        return steps
    if record is not None:
        record["step"] = f"Keras's fit (jit_compile={view.jit_compile})"
    view.fit(
        *train_data,
        batch_size=cfg.batch_size,
        epochs=cfg.epochs,
        initial_epoch=initial_epoch,
        # None for whole epochs: given steps_per_epoch, Keras makes the next epoch's data iterator
        # at the end of the previous one, before on_epoch_begin reseeds (torch's DataLoader draws
        # its seed then), so a resumed run would shuffle differently from an uninterrupted one.
        steps_per_epoch=steps if steps * cfg.batch_size < len(train_data[0]) else None,
        validation_data=val_data,
        validation_batch_size=cfg.eval_batch_size,
        shuffle=True,
        verbose=verbose,
        callbacks=callbacks,
    )
    return steps


def early_stopping(cfg, history=None):
    """keras.callbacks.EarlyStopping on val_loss for cfg.early_stopping > 0 (else None). On resume,
    the epochs already run count: its best val_loss and the epochs since are taken from the history."""
    import keras

    if not cfg.early_stopping:
        return None

    class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
        def on_train_begin(self, logs=None):
            super().on_train_begin(logs)
            past = (history or {}).get("val_loss") or []
            if past:
                # Improvement is measured against the best val_loss so far and patience counts
                # from its epoch; but only the checkpoint's weights (the last epoch) are on disk,
                # so they are the ones kept unless a later epoch improves.
                best = min(range(len(past)), key=past.__getitem__)
                self.best, self.wait = past[best], len(past) - 1 - best
                self.best_epoch, self.best_weights = len(past) - 1, self.model.get_weights()

    return ResumableEarlyStopping(monitor="val_loss", patience=cfg.early_stopping, restore_best_weights=True)


def train(model, cfg, train_data, val_data, run_dir, initial_epoch=0, history=None, view=None, record=None,
          state=None, native=CHOOSE, loop_record=None):
    """fit_model with the run's callbacks; returns (checkpoint, stopper, per-epoch seconds, steps,
    early stopper or None). The callbacks see the training view; the checkpoint saves `model`, and
    checkpoint.json `state` beside the epoch and the history; `loop_record` (metrics.json's "loop")
    gets how the step ran."""
    import keras

    from .callbacks import Checkpoint, EpochTimer, Reseed, StopOnSignal, tensorboard

    with StopOnSignal() as stopper:
        timer, checkpoint = EpochTimer(), Checkpoint(run_dir, history, stopper, model=model, record=record, state=state)
        callbacks = [stopper, Reseed(cfg.seed), timer, keras.callbacks.TerminateOnNaN(), checkpoint]
        if cfg.tensorboard:
            callbacks.append(tensorboard(run_dir / "tensorboard"))
        # After the checkpoint: checkpoint.keras holds the last epoch (what --resume continues),
        # while the restored best weights go to model.keras.
        early = early_stopping(cfg, history)
        if early is not None:
            callbacks.append(early)
        # Progress bar on a terminal, one line per epoch in logs and CI.
        steps = fit_model(model, cfg, train_data, val_data, callbacks, initial_epoch,
                          verbose=1 if sys.stdout.isatty() else 2, view=view, native=native, record=loop_record)
    return checkpoint, stopper, timer.train_seconds, steps, early


def test(model, x_test, y_test, cfg):
    """Test loss and accuracy; given the training view, the loss is the one training minimised."""
    result = model.evaluate(x_test, y_test, batch_size=cfg.eval_batch_size, verbose=0, return_dict=True)
    return {"loss": float(result["loss"]), "accuracy": float(result["accuracy"])}


def world_state(parallel):
    """What checkpoint.json records of the run's distribution: the processes and the devices that
    shared each batch, which a resumed run must have again."""
    return {"distribution": {"processes": parallel.processes, "world_size": parallel.world}}


def resume_state(run_dir, cfg, parallel=None):
    """(initial epoch, history, compiled model) to continue the run in `run_dir`: a folder without a
    complete epoch, one that already ran cfg.epochs, or one trained over another number of processes
    or devices than `parallel`'s, is a UsageError (before any data is read)."""
    import keras

    state = runs.checkpoint_state(run_dir)
    if state is None:
        raise UsageError(f"{run_dir} has no checkpoint to resume from (no complete epoch was saved).")
    initial_epoch, history = int(state["epoch"]), state["history"]
    if initial_epoch >= cfg.epochs:
        raise UsageError(f"{run_dir} already finished {initial_epoch} of {cfg.epochs} epochs; "
                         "pass a larger --epochs to train on.")
    was = state.get("distribution")  # absent from the checkpoints of older versions: not checked
    now = world_state(parallel)["distribution"] if parallel is not None else None
    if was and now and was != now:
        raise UsageError(f"Expected --resume of {run_dir} over the {was['processes']} process(es) and "
                         f"{was['world_size']} device(s) it was trained on (the same hosts and --devices). "
                         f"Received: {now['processes']} process(es), {now['world_size']} device(s)")
    model = load_checkpoint(run_dir / runs.CHECKPOINT)
    # Seeded as a fresh run is: what fit draws before the first epoch's reseed (tf.data's
    # shuffle stream under tensorflow) is then the same on every resume of this run.
    keras.utils.set_random_seed(cfg.seed)
    return initial_epoch, history, model


def load_splits(cfg, parallel=None):
    """cfg.dataset and its splits: (dataset, train, validation, test), each split an (x, y) pair.
    Validation is the test set when cfg.validation_split is 0; with --distribute every split is
    trimmed to a multiple of the devices, and where each process feeds its own shard (jax over
    several processes) the splits are this process's shard (distribute.process_shard)."""
    from . import data, distribute

    ds = data.load(cfg.dataset, cfg.data_dir, cfg.seed)  # float32 (N, H, W, C), one-hot (N, K)
    test_data = (ds.x_test, ds.y_test)
    train_data, val_data = data.split_validation(ds.x_train, ds.y_train, cfg.validation_split)
    if val_data is None:
        val_data = test_data
    if cfg.distribute != "none":
        split = distribute.trim_to_devices(parallel.info, train=train_data, val=val_data, test=test_data)
        train_data, val_data, test_data = (distribute.process_shard(parallel, split[k])
                                           for k in ("train", "val", "test"))
    return ds, train_data, val_data, test_data


def check_interrupted(run_dir, stopper):
    """Interrupted (naming what is saved and how to resume) when a signal stopped training;
    `stopper` is None after a second Ctrl-C, which stops at once, mid-batch."""
    if stopper is None or stopper.signal_name:
        state = runs.checkpoint_state(run_dir)
        done = f"epoch {state['epoch']} is saved" if state else "no epoch was complete, so nothing is saved"
        why = stopper.signal_name if stopper else "SIGINT"
        raise Interrupted(f"training stopped by {why}; {done}. Resume with: python -m mnist_keras3.train "
                          f"--resume {run_dir}")


def check_diverged(run_dir, cfg, history, early, info):
    """(epochs completed, stopped early); fewer epochs than asked without early stopping means
    TerminateOnNaN stopped fit: metrics.json then says "diverged" and a TrainingError is raised."""
    epochs_done = len(history.get("loss", []))
    stopped_early = early is not None and early.stopped_epoch > 0
    if epochs_done < cfg.epochs and not stopped_early:  # TerminateOnNaN stopped fit: the loss diverged
        runs.write_metrics(run_dir, {"status": "diverged", "epochs_completed": epochs_done, **info})
        kept = (f"The last good checkpoint is {run_dir / runs.CHECKPOINT} (epoch {epochs_done})"
                if epochs_done else "No epoch completed, so there is no checkpoint")
        raise Diverged(f"the loss became NaN/inf in epoch {epochs_done + 1}, so training stopped. "
                       f"{kept}. Try a lower --lr.")
    return epochs_done, stopped_early


def lost_process(error, parallel, run_dir, cfg, resume=None):
    """None, unless the engine says `error` is a process of the run it lost (parallel.lost): then a
    TrainingError naming what was lost, what is saved and how to go on (run() records it in rank 0's
    metrics.json as "failed"; the last complete checkpoint stays as it was)."""
    what = parallel.lost(error) if parallel.processes > 1 else None
    if not what:
        return None
    state = runs.checkpoint_state(run_dir) if run_dir else None  # no folder yet: lost before training
    saved = f"epoch {state['epoch']} is saved" if state else "no epoch was complete, so nothing is saved"
    # Rank 0 made the run folder; another rank knows it only when resuming.
    folder = (run_dir if not parallel.rank and run_dir else resume
              or f"<the run folder rank 0 made in {cfg.output_dir}>")
    message = (f"lost a process of the {parallel.processes}-process data-parallel run ({what}); {saved}. "
               f"Once every host is up, start all {parallel.processes} processes again with --resume {folder}")
    return TrainingError(message)


def dataset_record(ds, cfg):
    """What every model of this run carries beside it (records.py): dataset, classes, input."""
    from . import records

    return records.make(ds.name, ds.class_names, ds.input_shape, cfg.seed)


def _recorded_path(value):
    """A path (or a `folder:PATH` dataset) as metrics.json records it: relative to the working
    directory, so a shared metrics.json says nothing of the machine's layout."""
    from .data import FOLDER_PREFIX

    if isinstance(value, str) and value.startswith(FOLDER_PREFIX):
        return FOLDER_PREFIX + runs.relative_path(value[len(FOLDER_PREFIX):])
    return runs.relative_path(value) if isinstance(value, str | Path) else value


def run_metrics(cfg, info, ds, distribution, params, history, test_metrics, seconds, steps, n_train,
                initial_epoch, early, stopped_early, started, run_dir):
    """The metrics.json of a finished run."""
    from .callbacks import time_to_accuracy

    epochs_done = len(history.get("loss", []))
    n_samples = steps * cfg.batch_size
    train_seconds = sum(seconds)
    return {
        "status": "early-stopped" if stopped_early else "complete",
        "early_stopping": {"patience": cfg.early_stopping, "stopped_early": stopped_early,
                           "epochs_completed": epochs_done, "kept_epoch": early.best_epoch + 1,
                           "kept_val_loss": history["val_loss"][early.best_epoch]}
        if early is not None else None,
        **info,
        "python": platform.python_version(),
        "model": cfg.model,
        "parameters": params,
        "dataset": ds.describe() | {"name": _recorded_path(ds.name)}
        | {k: v for k, v in dataset_record(ds, cfg).items() if k != "dataset"},
        "distribution": distribution,
        "config": {k: _recorded_path(v) if k in ("output_dir", "data_dir", "dataset") else v
                   for k, v in vars(cfg).items()},
        "validation_source": "test set" if not cfg.validation_split
        else f"last {cfg.validation_split:g} of training set",
        "history": history,
        "test": test_metrics,
        "train_seconds_this_session": round(train_seconds, 3),
        # First epoch whose val_accuracy (the test set when validation_split = 0) reached each mark.
        "time_to_val_accuracy": time_to_accuracy(history, seconds, initial_epoch),
        "epochs_this_session": len(seconds),
        "train_samples_per_second": round(len(seconds) * min(n_samples, n_train) / train_seconds, 1)
        if train_seconds else None,
        "wall_seconds_this_session": round(time.time() - started, 3),
        "run_dir": runs.relative_path(run_dir),
    }


def run(cfg, source, backend, resume=None):
    """One training run, as `python -m mnist_keras3.train` makes it once cfg.backend is active:
    data -> model (fresh, or the checkpoint of the run folder `resume`) -> fit -> test -> the run
    folder (config.toml, checkpoints, model.keras, metrics.json, pictures). Returns the folder.
    With --distribute, on the backend's engine (distribute.py): rank 0 writes the run folder, the
    other processes a temporary one that is removed at the end (they return None). `backend`: the
    Backend handle backends.activate returned, held for the whole run."""
    from . import distribute
    from .backends import loop

    choice = loop.choose(cfg, backend.loop)  # once: the engine needs it (DDP wraps the native loop)
    cfg, parallel = distribute.setup(cfg, backend, choice)  # before anything touches a device
    if parallel.info.get("warning"):  # a world of one trains as a plain run, with a plain run's loop
        choice = loop.choose(cfg, backend.loop)
    scratch = None
    made = {}  # what _run has made so far: "run_dir" once the folder is this run's, "info"
    try:
        with parallel.scope():
            if parallel.rank:
                scratch = Path(tempfile.mkdtemp(prefix=f"mnist-keras3-rank{parallel.rank}-"))
            try:
                run_dir = _run(cfg, source, resume, parallel, scratch, made, backend, choice)
            except Exception as e:  # said in one line where the framework's words are known
                error = (out_of_memory(e, cfg, backend)
                         or lost_process(e, parallel, scratch or made.get("run_dir"), cfg, resume) or e)
                if scratch is None and made.get("run_dir"):  # rank 0's own folder: say how it ended
                    record_failure(made["run_dir"], error, {**made.get("info", {}), "distribution": parallel.info})
                if error is e:
                    raise
                raise error from e
    finally:
        parallel.finish()
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    return None if parallel.rank else run_dir


def out_of_memory(error, cfg, backend):
    """A TrainingError naming the batch size and the device's memory when `error` is the backend
    running out of device memory (backends/<name>.is_out_of_memory); None for any other error."""
    mod = backend.module
    if isinstance(error, MnistKeras3Error) or not mod.is_out_of_memory(error):
        return None
    total = mod.device_memory()
    has = f" ({total / 2**30:.1f} GiB)" if total else ""
    return TrainingError(f"the {mod.device_name()}{has} ran out of memory with batch_size={cfg.batch_size} "
                         f"(eval_batch_size={cfg.eval_batch_size}). Use a smaller --batch-size "
                         f"(and --eval-batch-size). [{type(error).__name__}]")


def record_failure(run_dir, error, info):
    """metrics.json of a run that an error ended: status "failed" with the error's one line, unless
    the error is one the run records itself or that leaves the folder as it was (a usage error, an
    interruption, divergence), so a finished or interrupted run's files stay what they were."""
    if isinstance(error, UsageError | Interrupted | Diverged):
        return
    state = runs.checkpoint_state(run_dir)
    epochs = state["epoch"] if state else 0
    runs.write_metrics(run_dir, {
        # What the one-line error said: the message of an expected error, the type too for a bug.
        "status": "failed", "error": brief(str(error)) if isinstance(error, MnistKeras3Error)
        else f"{type(error).__name__}: {brief(str(error))}",
        "expected": isinstance(error, MnistKeras3Error), "epochs_completed": epochs,
        "checkpoint": runs.CHECKPOINT if epochs else None, **info})


def _run(cfg, source, resume, parallel, scratch, made, backend, choice):
    from . import models, optimizers, plots  # need keras: only now
    from .backends.parallel import local_batches

    distribution = parallel.info
    info = made["info"] = backend.describe()
    ran, why = choice
    info["loop"] = {"requested": cfg.loop, "ran": ran, "fallback_reason": why}
    chosen = ran + (f" (auto: {why})" if why else " (auto)" if cfg.loop == "auto" else "")
    print(f"backend {info['backend']} {info['backend_version']} ({source}) | keras {info['keras_version']} "
          f"| device {info['device']} | loop {chosen}")

    history, initial_epoch, model = {}, 0, None
    if resume:  # before the data is read: a bad run folder fails at once
        run_dir = Path(resume)
        initial_epoch, history, model = resume_state(run_dir, cfg, parallel)
        made["run_dir"] = run_dir
        print(f"resuming {run_dir} from epoch {initial_epoch}")

    ds, train_data, val_data, (x_test, y_test) = load_splits(cfg, parallel)
    print(f"data {ds.name}: {len(ds.x_train):,} train, {len(ds.x_test):,} test images of shape {ds.input_shape}, "
          f"{ds.num_classes} classes" + (f" | {distribution['type']} over {distribution['device_count']} devices"
                                         if cfg.distribute != "none" else ""))
    # Where each process feeds its shard, it feeds its share of every batch too.
    work = local_batches(cfg, parallel)
    if model is None:
        model = build_compiled(work, ds.input_shape, ds.num_classes,
                               optimizers.steps_per_epoch(len(train_data[0]), work))
        run_dir = runs.new_run_dir(cfg.output_dir, cfg.backend, cfg.model) if scratch is None else scratch
        made["run_dir"] = run_dir
    if scratch is not None:  # rank > 0: read the resumed run, write nothing there
        run_dir = scratch
    runs.write_config(run_dir, cfg.to_toml())
    params = models.parameter_counts(model)
    print(f"model {cfg.model}: {params['total']:,} parameters ({params['trainable']:,} trainable) | run {run_dir}")

    view = training_view(model, work)
    started = time.time()
    try:
        checkpoint, stopper, seconds, steps, early = train(model, work, train_data, val_data, run_dir,
                                                           initial_epoch, history, view, dataset_record(ds, cfg),
                                                           world_state(parallel),
                                                           backend.loop if ran == "native" else None, info["loop"])
    except KeyboardInterrupt:  # a second Ctrl-C: stopped at once, mid-batch
        stopper = None
    check_interrupted(run_dir, stopper)
    history = checkpoint.history
    epochs_done, stopped_early = check_diverged(run_dir, cfg, history, early, info)

    test_metrics = test(view, x_test, y_test, work)
    # Every rank goes on in step with rank 0, into its own folder: under jax over several processes
    # each predict (the pictures) is a computation of all of them.
    runs.save_model(model, run_dir / runs.MODEL, dataset_record(ds, cfg))
    if early is not None:  # Keras restores the kept weights at the end, stopped early or not
        print(f"early stopping (patience {cfg.early_stopping}): " + (
            f"val_loss stopped improving, stopped after epoch {epochs_done}" if stopped_early else
            "ran every epoch") + f"; the model keeps epoch {early.best_epoch + 1}'s weights "
            f"(val_loss {history['val_loss'][early.best_epoch]:.4f})")
    metrics = run_metrics(cfg, info, ds, distribution, params, history, test_metrics, seconds, steps,
                          len(train_data[0]) * (parallel.processes if parallel.feeds_shard else 1),
                          initial_epoch, early, stopped_early, started, run_dir)
    runs.write_metrics(run_dir, metrics)
    if parallel.feeds_shard:
        # jax over several processes: Keras's predict cannot bring the batch-sharded predictions of
        # the other processes back as numpy, so samples.png is left out; the curves need none.
        plots.curves(history, run_dir / "curves.png", title=run_dir.name)
    else:  # curves.png and samples.png
        plots.write_run_pictures(run_dir, history, model, x_test, y_test, class_names=ds.class_names)
    print(f"test accuracy {test_metrics['accuracy']:.4f}, loss {test_metrics['loss']:.4f} | "
          f"{sum(seconds):.1f} s training, {metrics['train_samples_per_second']:,.0f} samples/s | {run_dir}")
    return run_dir
