"""One benchmark job, run by `python -m mnist_keras3.bench --worker JSON` in its own process.

Keras jobs train through training.fit_model, the function `python -m mnist_keras3.train` uses, so the
benchmark times the code users run. The reference job is a plain PyTorch loop, below.
"""

import math
import resource
import time

import numpy as np

from .. import backends, data


def _peak_rss_mb():
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux: KiB


def work(spec):
    result = {k: spec[k] for k in ("kind", "backend", "loop", "batch_size", "mode")}
    (x_train, y_train), (x_test, y_test) = data.mnist.load_mnist(spec.get("data_dir"))
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

def _keras(spec, train, test):
    keras = backends.activate(spec["backend"], spec["threads"])
    from ..callbacks import EpochTimer, Reseed
    from ..config import TrainConfig
    from ..optimizers import steps_per_epoch
    from ..training import build_compiled, fit_model

    if spec["mode"] == "recipe":  # a config file's whole recipe (model, optimizer, schedule, epochs)
        cfg = TrainConfig(**{**spec["recipe"], "backend": spec["backend"], "threads": spec["threads"],
                             "loop": "fit", "max_steps_per_epoch": 0, "validation_split": 0.0}).validate()
        steps = steps_per_epoch(len(train[0]), cfg)
    else:
        epochs, steps = _epochs_and_steps(spec, len(train[0]))
        cfg = TrainConfig(backend=spec["backend"], epochs=epochs, batch_size=spec["batch_size"], loop=spec["loop"],
                          max_steps_per_epoch=steps, threads=spec["threads"]).validate()
    model = build_compiled(cfg, steps_per_epoch=steps)
    timer, accuracies = EpochTimer(), []

    class StopAtTarget(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            accuracies.append(float(logs["val_accuracy"]))
            if accuracies[-1] >= spec["target"]:
                self.model.stop_training = True

    tta = spec["mode"] in ("tta", "recipe")
    callbacks = [Reseed(cfg.seed), timer] + ([StopAtTarget()] if tta else [])
    fit_model(model, cfg, train, test if tta else None, callbacks)
    info = backends.describe(spec["backend"])
    return {"device": info["device"], "versions": info,
            **_speed_or_tta(spec, timer.train_seconds, timer.cpu_seconds,
                            steps_samples(steps, cfg.batch_size, len(train[0])), accuracies)}


def steps_samples(steps, batch_size, n):
    return min(steps * batch_size, n)


# ---------------------------------------------------------------- THE REFERENCE: plain PyTorch

def _reference(spec, train, test):
    """The yardstick for every ratio: a hand-written PyTorch loop, no Keras anywhere.

    Same layers as the `tutorial` model (Conv2d(1,4,3)-ReLU-MaxPool-Conv2d(4,4,3)-ReLU-MaxPool-
    Linear(100,10)), Adam (lr 1e-3), CrossEntropyLoss on logits, the whole training set as tensors
    in memory (on the GPU when there is one), batches from torch.randperm, torch's default init.
    """
    import torch
    from torch import nn

    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(42)

    def to_tensors(x, y):
        return (torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))).to(device),  # (N, 1, 28, 28)
                torch.from_numpy(y.argmax(1)).to(device))  # class indices (N,)

    x, y = to_tensors(*train)
    x_test, y_test = to_tensors(*test)
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.ReLU(), nn.MaxPool2d(2),  # (N, 4, 13, 13)
        nn.Conv2d(4, 4, 3), nn.ReLU(), nn.MaxPool2d(2),  # (N, 4, 5, 5)
        nn.Flatten(), nn.Linear(100, 10),                # (N, 10) logits
    ).to(device)
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
        if device == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
        cpu_seconds.append(time.process_time() - cpu_start)
        if spec["mode"] == "tta":
            model.eval()
            with torch.no_grad():
                hits = sum(int((model(x_test[i:i + 1000]).argmax(1) == y_test[i:i + 1000]).sum())
                           for i in range(0, len(x_test), 1000))
            accuracies.append(hits / len(x_test))
            if accuracies[-1] >= spec["target"]:
                break
    device_name = torch.cuda.get_device_name(0) if device == "cuda" else "CPU"
    return {"device": device_name, "versions": {"torch": torch.__version__},
            **_speed_or_tta(spec, seconds, cpu_seconds, steps_samples(steps, bs, len(x)), accuracies)}
