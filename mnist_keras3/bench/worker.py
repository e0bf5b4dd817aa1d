"""One benchmark job, run by `python -m mnist_keras3.bench --worker JSON` in its own process.

Keras jobs train through training.fit_model, the function `python -m mnist_keras3.train` uses, so the
benchmark times the code users run. The reference job is a plain PyTorch loop, below: the tutorial
model for the speed and time-to-accuracy jobs, and for a recipe (mode "recipe") the recipe's own
model written in plain torch (bench/reference_models.py), with its optimizer and per-step schedule.

Every job records the device it ran on (`device`: the backend's device name, "CPU" or e.g.
"NVIDIA H200"). The reference runs where Keras's torch backend puts its tensors
(reference_device: KERAS_TORCH_DEVICE when set, else torch's accelerator, else the CPU), so on a
GPU both sides of every ratio run on the GPU: the training and test sets are moved there once, each
epoch's permutation is drawn there and each batch is a slice of it indexing the tensors there (as
tuomaso/train_mnist_fast does); the device's queue is drained before a clock is read, in the
Keras jobs too (device_wait: a trained value read to the host before the epoch timer stops).

Compile and warm-up (a recipe job's `compile_seconds`): what the first epoch costs beyond its steps
at the steady rate, i.e. the first epoch's training seconds minus its steps times the seconds per
step of the later epochs (their median); a one-epoch run takes its steady rate from the rest of its
first epoch, after the first callback call (Keras's first batch, or a native loop's first compiled
call; its loss is read there, which waits for the device). Clamped to 0 .. the first epoch's
seconds (machine noise can make a later epoch slower than the first). It holds tracing, compiling,
autotuning and first-touch allocations wherever they happen in the first epoch, and no training
work: the seconds to each mark are given with it and without it (`seconds_without_compile`).
"""

import math
import os
import resource
import statistics
import time

import numpy as np

from .. import backends, data
from .reference_models import MNIST_MEAN, MNIST_STD, REFERENCE_MODELS, build_reference


def _peak_rss_mb():
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux: KiB


def work(spec):
    result = {k: spec[k] for k in ("kind", "backend", "loop", "batch_size", "mode", "role", "seed") if k in spec}
    (x_train, y_train), (x_test, y_test) = data.mnist.load_mnist(spec.get("data_dir"))
    if spec.get("max_test_samples"):  # smoke tests only: the figures are then not MNIST's test accuracy
        x_test, y_test = x_test[: spec["max_test_samples"]], y_test[: spec["max_test_samples"]]
    arrays = data.preprocess(x_train, y_train), data.preprocess(x_test, y_test)
    run = _reference if spec["kind"] == "reference" else _keras
    result.update(run(spec, *arrays))
    result["peak_rss_mb"] = _peak_rss_mb()
    return result


def _epochs_and_steps(spec, n):
    """(epochs to run, steps per epoch): speed = 1 warm-up + timed epochs of at most max_samples;
    time-to-accuracy = whole epochs until the target (or max_epochs)."""
    full = math.ceil(n / spec["batch_size"])
    if spec["mode"] == "tta":
        return spec["max_epochs"], full
    cap = spec["max_samples"] // spec["batch_size"] if spec["max_samples"] else full
    return 1 + spec["epochs"], max(1, min(full, cap))


def _speed_or_tta(spec, seconds, cpu_seconds, samples, accuracies):
    if spec["mode"] == "speed":
        return {"samples_per_s": [round(samples / s, 1) for s in seconds[1:]],
                "samples_per_cpu_s": [round(samples / s, 1) for s in cpu_seconds[1:]],
                "warmup_seconds": round(seconds[0], 3), "samples_per_epoch": samples}
    reached = next((i for i, a in enumerate(accuracies) if a >= spec["target"]), None)
    last = reached if reached is not None else len(accuracies) - 1
    return {"seconds": round(sum(seconds[: reached + 1]), 2) if reached is not None else None,
            "epochs": last + 1, "accuracy": round(accuracies[last], 4), "target": spec["target"]}


# ---------------------------------------------------------------- Keras under any backend

def _overrides(spec):
    """The job's jit_compile and precision where --jit-compile and --precision gave them (else train's
    defaults or the recipe's)."""
    return {k: spec[k] for k in ("jit_compile", "precision") if spec.get(k)}


def _keras(spec, train, test):
    keras = backends.activate(spec["backend"], spec["threads"]).keras
    from ..callbacks import EpochTimer, Reseed
    from ..config import TrainConfig
    from ..training import build_compiled, fit_model

    if spec["mode"] == "recipe":
        return _keras_recipe(spec, keras, train, test)
    if spec["mode"] == "profile":
        return _keras_profile(spec, train)
    epochs, steps = _epochs_and_steps(spec, len(train[0]))
    cfg = TrainConfig(backend=spec["backend"], epochs=epochs, batch_size=spec["batch_size"], loop=spec["loop"],
                      max_steps_per_epoch=steps, threads=spec["threads"], **_overrides(spec)).validate()
    model = build_compiled(cfg, steps_per_epoch=steps)
    timer, accuracies = EpochTimer(), []

    class StopAtTarget(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            accuracies.append(float(logs["val_accuracy"]))
            if accuracies[-1] >= spec["target"]:
                self.model.stop_training = True

    tta = spec["mode"] == "tta"
    callbacks = [Reseed(cfg.seed), device_wait(keras), timer] + ([StopAtTarget()] if tta else [])
    how = {}
    fit_model(model, cfg, train, test if tta else None, callbacks, record=how)
    info = backends.describe(spec["backend"])
    return {"device": info["device"], "versions": info, "dtype_policy": model.dtype_policy.name, "step": how["step"],
            **_speed_or_tta(spec, timer.train_seconds, timer.cpu_seconds,
                            steps_samples(steps, cfg.batch_size, len(train[0])), accuracies)}


def _keras_profile(spec, train):
    """The native loop's step split into phases (Trainer.profile): one warm-up call on the first
    batches (tracing, compiling), then `rounds` profiles of the next `calls` calls' batches, the
    median of each phase."""
    from ..config import TrainConfig
    from ..training import build_compiled, training_view

    cfg = TrainConfig(backend=spec["backend"], model=spec.get("model", "tutorial"), batch_size=spec["batch_size"],
                      threads=spec["threads"], **_overrides(spec)).validate()
    view = training_view(build_compiled(cfg), cfg)
    trainer = backends.active().loop.Trainer(view, *train, jit_compile=cfg.jit_compile)
    batches = _profile_batches(spec, len(train[0]))
    trainer.run(batches[0])
    profiles = [trainer.profile(b) for b in batches[1:]]
    info = backends.describe(spec["backend"])
    return {"device": info["device"], "versions": info, "dtype_policy": view.dtype_policy.name,
            "step": trainer.step_kind, **_median_phases(profiles)}


def _profile_batches(spec, n):
    """1 + rounds groups of `steps` batches of sample indices, each (steps, B), from one permutation."""
    bs, steps = spec["batch_size"], spec["steps"]
    order = np.random.default_rng(0).permutation(n)[: (1 + spec["rounds"]) * steps * bs]
    return order.reshape(1 + spec["rounds"], steps, bs)


def _median_phases(profiles):
    import statistics

    phases = {k: round(statistics.median(p[k] for p in profiles) * 1e3, 4) for k in profiles[0]}  # ms per step
    return {"ms_per_step": phases, "step_ms": round(sum(phases.values()), 4)}


def _keras_recipe(spec, keras, train, test):
    """A config file's whole recipe at one seed, as `train --config FILE --seed S` runs it: its model,
    optimizer, schedule, epochs and loop (cfg.loop, "auto" unless the file names one), the end of
    the training set held out when validation_split > 0; test accuracy after every epoch, and no
    stop at a target: a recipe's schedule is for all its epochs."""
    from ..backends import loop
    from ..callbacks import EpochTimer, Reseed
    from ..config import TrainConfig
    from ..models import parameter_counts
    from ..optimizers import steps_per_epoch
    from ..training import build_compiled, fit_model

    cfg = TrainConfig(**{**spec["recipe"], "backend": spec["backend"], "threads": spec["threads"], **_overrides(spec),
                         "seed": spec["seed"], "max_steps_per_epoch": spec.get("max_steps_per_epoch", 0)}).validate()
    train, _ = data.split_validation(*train, cfg.validation_split)  # the held-out end is not trained on
    ran, why = loop.choose(cfg, backends.active().loop)
    steps = steps_per_epoch(len(train[0]), cfg)
    model = build_compiled(cfg, steps_per_epoch=steps)
    timer, accuracies = EpochTimer(), []

    class TestAccuracy(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            accuracies.append(float(logs["val_accuracy"]))  # validation data = the test set

    first = first_call_timer(keras)
    how = {}
    fit_model(model, cfg, train, test, [Reseed(cfg.seed), device_wait(keras), timer, first, TestAccuracy()],
              record=how)
    info = backends.describe(spec["backend"])
    warmup = compile_estimate(timer.train_seconds, steps, first.seconds, first.steps)
    return {"device": info["device"], "versions": info, "seed": cfg.seed, "dtype_policy": model.dtype_policy.name,
            "step": how["step"],
            "loop": ran, "loop_requested": cfg.loop, "loop_fallback_reason": why,
            "trainable_parameters": parameter_counts(model)["trainable"], "train_samples": len(train[0]),
            **recipe_figures(timer.train_seconds, accuracies, spec["marks"], timer.cpu_seconds, warmup)}


def device_wait(keras):
    """A callback (made once keras is imported) that waits, where EpochTimer stops its clock (it must
    come before the timer), until the device has run the epoch's steps: an accelerator runs them
    after the host queued them, and without the wait their tail would count as evaluation. It reads
    the last trainable variable to the host, which the last step wrote (every loop has written the
    weights back into the Keras variables by then); on the CPU that is a copy of a few floats."""

    class WaitForDevice(keras.callbacks.Callback):
        def wait(self):
            keras.ops.convert_to_numpy(self.model.trainable_variables[-1])

        def on_test_begin(self, logs=None):
            self.wait()

        def on_epoch_end(self, epoch, logs=None):
            self.wait()

    return WaitForDevice()


def first_call_timer(keras):
    """A callback (made once keras is imported): the seconds from the first epoch's start to its first
    on_train_batch_end, the loss read there so that the device has finished that work (`seconds`),
    and the steps done by then (`steps`)."""

    class FirstCall(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seconds = self.steps = self._t0 = None
            self._epochs = 0

        def on_epoch_begin(self, epoch, logs=None):
            self._epochs += 1
            if self._epochs == 1:
                self._t0 = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            if self._epochs == 1 and self.seconds is None:
                float((logs or {}).get("loss", 0.0))  # waits for the step's result on an accelerator
                self.seconds, self.steps = time.perf_counter() - self._t0, batch + 1

    return FirstCall()


def compile_estimate(epoch_seconds, steps, first_call_seconds=None, first_call_steps=None):
    """The first epoch's compile and warm-up seconds (see the module docstring): its seconds minus
    `steps` at the steady rate, from the later epochs when there are any, else from the rest of the
    first epoch after its first call; None when neither gives a rate."""
    if not epoch_seconds or steps < 1:
        return None
    first = epoch_seconds[0]
    if len(epoch_seconds) > 1:
        per_step = statistics.median(epoch_seconds[1:]) / steps
    elif first_call_seconds is not None and first_call_steps and steps > first_call_steps:
        per_step = max(0.0, first - first_call_seconds) / (steps - first_call_steps)
    else:
        return None
    return round(min(first, max(0.0, first - steps * per_step)), 3)


def recipe_figures(seconds, accuracies, marks, cpu_seconds=(), compile_seconds=None):
    """Per epoch: test accuracy, cumulative training seconds (and the process's CPU seconds of each
    epoch); for each mark the first epoch whose test accuracy reaches it and the training seconds
    until then, with the first epoch's compile and warm-up (`seconds`) and without it
    (`seconds_without_compile`, None when compile_seconds is); None if no epoch reaches it."""
    cumulative = [round(sum(seconds[: i + 1]), 3) for i in range(len(seconds))]
    reached = {}
    for mark in marks:
        hit = next((i for i, a in enumerate(accuracies) if a >= mark), None)
        without = None if hit is None or compile_seconds is None else round(cumulative[hit] - compile_seconds, 3)
        reached[f"{mark:g}"] = None if hit is None else {"epoch": hit + 1, "seconds": cumulative[hit],
                                                         "seconds_without_compile": without}
    return {"test_accuracy": [round(a, 4) for a in accuracies], "cumulative_seconds": cumulative,
            "epoch_seconds": [round(t, 3) for t in seconds], "compile_seconds": compile_seconds,
            "epoch_cpu_seconds": [round(t, 3) for t in cpu_seconds], "reached": reached,
            "final_accuracy": round(accuracies[-1], 4) if accuracies else None}


def steps_samples(steps, batch_size, n):
    return min(steps * batch_size, n)


# ---------------------------------------------------------------- THE REFERENCE: plain PyTorch

def _reference(spec, train, test):
    """The yardstick for every ratio: a hand-written PyTorch loop, no Keras anywhere.

    Same layers as the `tutorial` model (Conv2d(1,4,3)-ReLU-MaxPool-Conv2d(4,4,3)-ReLU-MaxPool-
    Linear(100,10)), Adam (lr 1e-3), CrossEntropyLoss on logits, the whole training set as tensors
    on the device (reference_device: the GPU when Keras's torch backend would use one), batches
    sliced from a torch.randperm drawn there, torch's default init.
    """
    import torch
    from torch import nn

    if spec["mode"] == "recipe":
        return _reference_recipe(spec, train, test)
    device = _torch_setup(spec, 42)
    if spec["mode"] == "profile":
        return _reference_profile(spec, train, device)
    x, y = _to_tensors(*train, device)
    x_test, y_test = _to_tensors(*test, device)
    model = build_reference("tutorial").to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    bs = spec["batch_size"]
    epochs, steps = _epochs_and_steps(spec, len(x))
    seconds, cpu_seconds, accuracies = [], [], []
    for _ in range(epochs):
        start, cpu_start = time.perf_counter(), time.process_time()
        perm = torch.randperm(len(x), device=device)
        model.train()
        for i in range(steps):
            idx = perm[i * bs:(i + 1) * bs]
            optimizer.zero_grad()
            loss = loss_fn(model(x[idx]), y[idx])
            loss.backward()
            optimizer.step()
        _synchronize(device)
        seconds.append(time.perf_counter() - start)
        cpu_seconds.append(time.process_time() - cpu_start)
        if spec["mode"] == "tta":
            accuracies.append(_torch_accuracy(model, x_test, y_test))
            if accuracies[-1] >= spec["target"]:
                break
    return {"device": _torch_device_name(device), "versions": {"torch": torch.__version__},
            **_speed_or_tta(spec, seconds, cpu_seconds, steps_samples(steps, bs, len(x)), accuracies)}


def _reference_profile(spec, train, device):
    """The reference loop's step in the phases of Trainer.profile, a clock read between them."""
    import torch
    from torch import nn

    x, y = _to_tensors(*train, device)
    name = spec.get("model", "tutorial")
    model = build_reference(name).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    profiles = []
    for group in _profile_batches(spec, len(x)):
        phases = dict.fromkeys(("forward", "backward", "optimizer", "host"), 0.0)
        last = [time.perf_counter()]

        def mark(name, phases=phases, last=last):
            _synchronize(device)
            now = time.perf_counter()
            phases[name] += now - last[0]
            last[0] = now

        for b in torch.from_numpy(group).to(device):
            xb, yb = x[b], y[b]
            optimizer.zero_grad()
            mark("host")
            loss = loss_fn(model(xb), yb)
            mark("forward")
            loss.backward()
            mark("backward")
            optimizer.step()
            mark("optimizer")
        profiles.append({k: v / len(group) for k, v in phases.items()})
    return {"device": _torch_device_name(device), "versions": {"torch": torch.__version__},
            **_median_phases(profiles[1:])}  # the first group warms up


def _torch_setup(spec, seed):
    """Threads and seed; returns the device the reference runs on (reference_device)."""
    import torch

    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    torch.manual_seed(seed)
    accelerator = getattr(torch, "accelerator", None)  # torch >= 2.6
    found = accelerator.current_accelerator().type if accelerator and accelerator.is_available() else (
        "cuda" if torch.cuda.is_available() else None)
    return reference_device(os.environ.get("KERAS_TORCH_DEVICE"), found)


def reference_device(keras_torch_device, accelerator):
    """Where the reference runs: where Keras's torch backend puts its tensors, so that a ratio
    compares two loops on one device: KERAS_TORCH_DEVICE when set (Keras's override), else the
    accelerator torch finds ("cuda", "mps", "xpu", ...), else "cpu"."""
    return keras_torch_device or accelerator or "cpu"


def _synchronize(device):
    """Wait for the device's queued kernels (a no-op on the CPU, whose kernels run synchronously)."""
    import torch

    torch.get_device_module(torch.device(device).type).synchronize()


def _torch_device_name(device):
    """The device's name as the torch backend reports it (backends/torch.device_name): "CPU", or the
    accelerator's own name, e.g. "NVIDIA H200"."""
    import torch

    kind = torch.device(device).type
    return getattr(torch.get_device_module(kind), "get_device_name", kind.upper)()


def _to_tensors(x, y, device):
    import torch

    return (torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).to(device),  # (N, 1, 28, 28)
            torch.from_numpy(y.argmax(1)).to(device))  # class indices (N,)


def _torch_accuracy(model, x, y, batch=1000):
    import torch

    model.eval()
    with torch.no_grad():
        hits = sum(int((model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum()) for i in range(0, len(x), batch))
    return hits / len(x)


# ---------------------------------------------------------------- the recipes as plain PyTorch

def reference_lr(recipe, total_steps, step):
    """The learning rate of optimizer step `step` (0-based) of `total_steps`: optimizers.learning_rate
    written out (Keras's CosineDecay, with its warm-up for onecycle), with no Keras."""
    lr = recipe["lr"]

    def cosine(s, steps, peak):
        return peak * 0.5 * (1.0 + math.cos(math.pi * min(s, steps) / steps))

    if recipe["lr_schedule"] == "cosine":
        return cosine(step, total_steps, lr)
    if recipe["lr_schedule"] == "onecycle":
        warmup = max(1, round(recipe["warmup_fraction"] * total_steps))
        decay = max(1, total_steps - warmup)
        if step < warmup:
            return lr * step / warmup
        return cosine(step - warmup, decay, lr)
    return lr


def random_shift(x, max_shift, fill):
    """Shift each image of the (N, C, H, W) batch by random whole pixels, up to max_shift each way,
    filling with `fill` (models.RandomShift: output row i reads input row i - dy)."""
    import torch
    from torch.nn import functional

    n, _, h, w = x.shape
    padded = functional.pad(x, (max_shift,) * 4, value=fill)  # (N, C, H + 2m, W + 2m)
    d = torch.randint(-max_shift, max_shift + 1, (2, n), device=x.device)
    rows = torch.arange(h, device=x.device)[None, :] + max_shift - d[0][:, None]  # (N, H)
    cols = torch.arange(w, device=x.device)[None, :] + max_shift - d[1][:, None]  # (N, W)
    batch = torch.arange(n, device=x.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def _reference_recipe(spec, train, test):
    """The recipe at one seed as a hand-written PyTorch loop: the recipe's model in plain torch
    (REFERENCE_MODELS, torch's default init), Adam with its lr and betas (epsilon 1e-7, Keras's),
    its schedule set before every step (reference_lr), CrossEntropyLoss with its label smoothing,
    its batch size and epochs, the end of the training set held out for validation_split > 0, the
    tensors in memory, batches from torch.randperm; test accuracy after every epoch."""
    import torch
    from torch import nn

    recipe = spec["recipe"]
    device = _torch_setup(spec, spec["seed"])
    train, _ = data.split_validation(*train, recipe["validation_split"])
    x, y = _to_tensors(*train, device)
    x_test, y_test = _to_tensors(*test, device)
    _, standardise, shift = REFERENCE_MODELS[recipe["model"]]
    background = 0.0
    if standardise:  # once, on the tensors (the Keras models do it in a Rescaling layer)
        x, x_test = (x - MNIST_MEAN) / MNIST_STD, (x_test - MNIST_MEAN) / MNIST_STD
        background = -MNIST_MEAN / MNIST_STD  # a raw 0, standardised
    model = build_reference(recipe["model"]).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=recipe["lr"], betas=(recipe["beta_1"], recipe["beta_2"]),
                                 eps=1e-7)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=recipe["label_smoothing"])
    bs = recipe["batch_size"]
    steps = math.ceil(len(x) / bs)
    if spec.get("max_steps_per_epoch"):
        steps = min(steps, spec["max_steps_per_epoch"])
    total = recipe["epochs"] * steps
    seconds, cpu_seconds, accuracies, step, first_step = [], [], [], 0, None
    for _ in range(recipe["epochs"]):
        start, cpu_start = time.perf_counter(), time.process_time()
        perm = torch.randperm(len(x), device=device)
        model.train()
        for i in range(steps):
            idx = perm[i * bs:(i + 1) * bs]
            xb = random_shift(x[idx], shift, background) if shift else x[idx]
            for group in optimizer.param_groups:
                group["lr"] = reference_lr(recipe, total, step)
            optimizer.zero_grad()
            loss_fn(model(xb), y[idx]).backward()
            optimizer.step()
            step += 1
            if first_step is None:  # the first step's seconds, for compile_estimate of a one-epoch recipe
                _synchronize(device)
                first_step = time.perf_counter() - start
        _synchronize(device)
        seconds.append(time.perf_counter() - start)
        cpu_seconds.append(time.process_time() - cpu_start)
        accuracies.append(_torch_accuracy(model, x_test, y_test))
    warmup = compile_estimate(seconds, steps, first_step, 1)
    return {"device": _torch_device_name(device), "versions": {"torch": torch.__version__}, "seed": spec["seed"],
            "loop": "plain PyTorch", "trainable_parameters": sum(p.numel() for p in model.parameters()
                                                                   if p.requires_grad),
            "train_samples": len(x), **recipe_figures(seconds, accuracies, spec["marks"], cpu_seconds, warmup)}
