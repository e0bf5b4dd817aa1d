"""The native training loops (`--loop native`): same updates as Keras, same accuracy as `fit`,
same run folder. Each test runs under the session's backend (tox runs all three)."""

import csv
import json

import numpy as np
import pytest
from conftest import BACKEND, replay_tolerance

from mnist_keras3 import backends
from mnist_keras3.backends import loop
from mnist_keras3.config import TrainConfig, build_config
from mnist_keras3.errors import UsageError


def test_epoch_batches_cover_the_permutation_like_fit():
    order = np.random.default_rng(0).permutation(10)
    head, tail = loop.epoch_batches(order, 4, steps=3)
    assert head.shape == (2, 4) and tail.shape == (1, 2)  # 10 = 4 + 4 + a short batch of 2
    assert sorted(np.concatenate([head.ravel(), tail.ravel()])) == list(range(10))
    head, tail = loop.epoch_batches(order, 4, steps=2)  # a step cap drops the rest
    assert head.shape == (2, 4) and tail is None and list(head.ravel()) == list(order[:8])
    chunks = list(loop.calls(np.zeros((250, 4), int), tail, per_call=100))
    assert [len(c) for c in chunks] == [100, 100, 50]
    # By default every call of an epoch has one shape (jax compiles one program per shape).
    assert [loop.steps_per_call(n) for n in (234, 1875, 468, 467, 20)] == [78, 75, 78, 100, 100]
    assert [len(c) for c in loop.calls(np.zeros((234, 4), int), None)] == [78, 78, 78]


def test_device_images_keeps_k_over_255_images_as_uint8_and_anything_else_as_it_is(small_batch):
    x = small_batch[0]  # data.preprocess: uint8 / 255 in float32
    levels, scale = loop.device_images(x)
    assert levels.dtype == np.uint8 and scale == 255.0 and levels.shape == x.shape
    np.testing.assert_array_equal(levels.astype(np.float32) / np.float32(scale), x)  # the same values, exactly
    for other in (x + np.float32(1e-3), x * 2, x.astype(np.float64), x[:0]):  # not levels of 1/255: as given
        kept, scale = loop.device_images(other)
        assert kept is other and scale is None


def test_native_trainers_hold_the_images_as_uint8(keras, small_batch):
    x, y = small_batch
    cfg = TrainConfig(backend=BACKEND)
    from mnist_keras3.training import build_compiled, training_view

    trainer = backends.active().loop.Trainer(training_view(build_compiled(cfg), cfg), x, y)
    assert keras.backend.standardize_dtype(trainer.x.dtype) == "uint8"


@pytest.mark.parametrize("text,match", [
    ('loop = "fast"\n', r"Expected loop among auto, fit, native. Received: loop='fast'"),
    ('jit_compile = "yes"\n', r"Expected jit_compile among auto, on, off. Received: jit_compile='yes'"),
    ("threads = -1\n", r"Invalid value for threads: -1"),
])
def test_bad_loop_settings_name_the_key(tmp_path, text, match):
    p = tmp_path / "c.toml"
    p.write_text(text)
    with pytest.raises(UsageError, match=match):
        build_config(p)


def _pair(keras, optimizer="adam"):
    """Two identically initialised tutorial models' training views (what fit and the native loops
    train: the logits, a cross-entropy from them)."""
    from mnist_keras3.training import build_compiled, training_view

    cfg = TrainConfig(backend=BACKEND, optimizer=optimizer)
    a, b = build_compiled(cfg), build_compiled(cfg)
    for wa, wb in zip(a.get_weights(), b.get_weights(), strict=True):
        np.testing.assert_array_equal(wa, wb)
    return training_view(a, cfg), training_view(b, cfg)


@pytest.mark.parametrize("optimizer", ["adam", "rmsprop"])  # torch, tf: the fused Adam, and the general path
def test_native_steps_make_the_same_updates_as_keras(keras, small_batch, optimizer):
    """Three optimizer steps on the same batches: Keras's train_on_batch vs the native trainer."""
    x, y = small_batch  # 64 real test images
    keras_model, native_model = _pair(keras, optimizer)
    batches = np.arange(48).reshape(3, 16)
    want_loss = want_hits = 0.0
    for b in batches:
        # What each step should report: the loss and hits of the weights it starts from (the
        # tutorial model has no dropout or BatchNorm, so inference gives the training forward pass).
        want_hits += int(np.sum(np.argmax(keras_model.predict_on_batch(x[b]), -1) == np.argmax(y[b], -1)))
        want_loss += keras_model.train_on_batch(x[b], y[b], return_dict=True)["loss"] * len(b)
    trainer = backends.active().loop.Trainer(native_model, x, y)
    if BACKEND in ("torch", "tensorflow"):  # Adam through the framework's own fused kernel
        assert (trainer.fused is not None) == (optimizer == "adam")
    loss_sum, hits, seen = trainer.run(batches)  # device scalars until read
    loss_sum, hits = float(loss_sum), int(hits)
    trainer.sync()
    assert seen == 48 and hits == want_hits
    assert loss_sum == pytest.approx(want_loss, rel=1e-4)  # the mean over samples, as fit reports it
    assert int(native_model.optimizer.iterations.numpy()) == 3
    for wk, wn in zip(keras_model.get_weights(), native_model.get_weights(), strict=False):
        # Adam moves each weight by ~1e-3 per step: 1e-5 is a hundredth of one step.
        np.testing.assert_allclose(wn, wk, atol=1e-5, rtol=1e-4)


@pytest.mark.torch
@pytest.mark.parametrize("schedule", ["none", "onecycle"])
def test_torch_compiled_step_makes_the_same_updates_as_keras_and_compiles_once(keras, small_batch, schedule):
    """jit_compile "on" (what "auto" picks on a GPU, where it runs as CUDA graphs): torch.compile's
    step and Keras's Adam as one compiled program, forced on the CPU: the same updates as
    train_on_batch, and later steps replay the programs the first ones compiled, a schedule's rate
    included (a tensor input, not a constant that would recompile)."""
    import torch

    x, y = small_batch
    cfg = TrainConfig(backend=BACKEND, lr_schedule=schedule, lr=2e-3)
    from mnist_keras3.training import build_compiled, training_view

    keras_model, native_model = (training_view(build_compiled(cfg, steps_per_epoch=6), cfg) for _ in range(2))
    batches = np.arange(48).reshape(3, 16)
    want_loss = sum(keras_model.train_on_batch(x[b], y[b], return_dict=True)["loss"] * len(b) for b in batches)
    trainer = backends.active().loop.Trainer(native_model, x, y, jit_compile="on")
    assert trainer.compiled and type(trainer.fused).__name__ == "CompiledKerasAdam"
    loss_sum, _, seen = trainer.run(batches)
    assert seen == 48 and float(loss_sum) == pytest.approx(want_loss, rel=1e-4)
    assert int(native_model.optimizer.iterations.numpy()) == 3
    for wk, wn in zip(keras_model.get_weights(), native_model.get_weights(), strict=False):
        np.testing.assert_allclose(wn, wk, atol=1e-5, rtol=1e-4)
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]  # private: fails loudly if renamed
    assert graphs > 0
    trainer.run(np.arange(48, 64).reshape(1, 16))
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs  # replayed, not recompiled
    assert trainer.step_kind == "torch.compile; compiled Adam"  # on the CPU: no CUDA graphs to replay


@pytest.mark.torch
def test_torch_says_when_the_compiled_step_runs_without_cuda_graphs(keras, small_batch, capsys):
    """On a GPU torch.compile skips a CUDA graph silently (the reason only under TORCH_LOGS): the
    loop watches torch's skip counter (private: this fails loudly if torch stops counting there) and
    says so once, and step_kind (metrics.json) names it. Forced on the CPU: the trainer is told to
    expect CUDA graphs, which torch's reduce-overhead mode skips here for real (a CPU device)."""
    x, y = small_batch
    _, native_model = _pair(keras)
    trainer = backends.active().loop.Trainer(native_model, x, y, jit_compile="on")
    trainer.graphs = True  # what a CUDA device sets
    assert trainer.step_kind == "torch.compile, CUDA graphs; compiled Adam"
    trainer.run(np.arange(32).reshape(2, 16))
    err = capsys.readouterr().err
    assert err.startswith("warning: torch.compile ran this model's training step without CUDA graphs (skipped "), err
    assert "TORCH_LOGS=cudagraphs prints why" in err and err.count("\n") == 1
    assert trainer.step_kind == "torch.compile, CUDA graphs skipped; compiled Adam"
    trainer.run(np.arange(32, 48).reshape(1, 16))
    assert not capsys.readouterr().err  # said once


@pytest.mark.torch
@pytest.mark.parametrize("failing", ["step", "adam"])
def test_torch_compile_failing_on_this_machine_falls_back_to_the_traced_step(keras, small_batch, monkeypatch,
                                                                           capsys, failing):
    """Where torch.compile cannot compile (no C++ compiler or Triton, say; forced here), the first
    step says so in one line and the loop trains as with --jit-compile off: Keras's updates."""
    import torch

    from mnist_keras3.backends.torch import loop as torch_loop

    def broken(*args, **kwargs):
        raise RuntimeError("InductorError: no working C++ compiler found")

    def compile_(fn, **kwargs):  # the step's compile (a Module) or Adam's (a function) fails when called
        fails = isinstance(fn, torch.nn.Module) == (failing == "step")
        return broken if fails else fn

    monkeypatch.setattr(torch_loop.torch, "compile", compile_)
    x, y = small_batch
    keras_model, native_model = _pair(keras)
    batches = np.arange(48).reshape(3, 16)
    for b in batches:
        keras_model.train_on_batch(x[b], y[b])
    trainer = backends.active().loop.Trainer(native_model, x, y, jit_compile="on")
    trainer.run(batches)
    err = capsys.readouterr().err
    assert "warning: torch.compile could not compile this model's training step (RuntimeError: Inductor" in err
    assert "it is traced instead, as with --jit-compile off" in err
    assert not trainer.compiled and type(trainer.fused).__name__ == "FusedKerasAdam"
    assert trainer.step_kind == "torch.jit.trace; fused kernel Adam"
    assert int(native_model.optimizer.iterations.numpy()) == 3
    for wk, wn in zip(keras_model.get_weights(), native_model.get_weights(), strict=False):
        np.testing.assert_allclose(wn, wk, atol=1e-5, rtol=1e-4)


@pytest.mark.torch
def test_torch_running_out_of_memory_in_the_compiled_step_is_not_a_compile_failure(keras, small_batch,
                                                                                  monkeypatch):
    import torch

    from mnist_keras3.backends.torch import loop as torch_loop
    from mnist_keras3.training import build_compiled, training_view

    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(torch_loop.torch, "compile", lambda fn, **kwargs: out_of_memory)
    x, y = small_batch
    cfg = TrainConfig(backend=BACKEND)
    trainer = backends.active().loop.Trainer(training_view(build_compiled(cfg), cfg), x, y, jit_compile="on")
    with pytest.raises(torch.OutOfMemoryError):
        trainer.run(np.arange(16).reshape(1, 16))
    assert trainer.compiled


class _CountedSum:
    """A stand-in for a device scalar that counts the host's reads of it."""

    reads = 0

    def __init__(self, value):
        self.value = value

    def __add__(self, other):
        return _CountedSum(self.value + other.value)

    def __float__(self):
        _CountedSum.reads += 1
        return float(self.value)


class _FakeTrainer:
    """Trainer's contract without a framework: records what the epoch loop hands it."""

    def __init__(self):
        self.copies, self.calls = 0, []

    def indices(self, array):
        self.copies += 1
        return array

    def run(self, batches):
        self.calls.append(batches)
        return _CountedSum(1.0 * len(batches)), _CountedSum(len(batches)), batches.size

    def sync(self):
        pass


@pytest.mark.parametrize("reader", [False, True])
def test_the_epoch_loop_reads_the_device_once_per_epoch_unless_a_callback_reads_batch_logs(keras, reader):
    """No host sync inside an epoch: the sums stay on the device until the epoch ends, unless a
    callback reads the batch logs (TerminateOnNaN: once per call, as fit). StopOnSignal's batch hook
    reads no logs. One copy of the epoch's order to the device, whatever the number of calls."""
    from mnist_keras3.callbacks import StopOnSignal

    cfg = TrainConfig(backend=BACKEND, epochs=2, batch_size=4)
    model = keras.Sequential([keras.layers.Input((1,)), keras.layers.Dense(1)])
    trainer, n = _FakeTrainer(), 4 * 250 + 2  # 250 full batches in 5 calls of 50, and a short one
    callbacks = [StopOnSignal()] + ([keras.callbacks.TerminateOnNaN()] if reader else [])
    _CountedSum.reads = 0
    history = loop.run_epochs(trainer, model, (np.zeros((n, 1)), np.zeros((n, 1))), None, cfg, callbacks)
    calls_per_epoch = len(trainer.calls) // 2
    assert calls_per_epoch >= 3 and trainer.copies == 2 * 2  # the full batches and the short one, each epoch
    # loss and hits at each epoch's end; the running loss after each call for a reader
    assert _CountedSum.reads == 2 * 2 + (2 * calls_per_epoch if reader else 0)
    assert history["loss"] == [pytest.approx(251 / n)] * 2  # the fake's loss: 1 per batch


@pytest.mark.slow
def test_native_loop_trains_to_the_same_accuracy_as_fit(keras, mnist):
    """300 steps of batch 64 on real MNIST, then the test set. Measured (2 seeds x 3 backends):
    accuracy 0.83-0.88 and |native - fit| <= 0.009 in accuracy, <= 0.015 in loss; the two loops
    shuffle differently, so the bound is 3x that, far below what a broken loop would show."""
    from mnist_keras3 import data
    from mnist_keras3.callbacks import Reseed
    from mnist_keras3.training import build_compiled, fit_model

    (x_train, y_train), (x_test, y_test) = mnist
    train, test = data.preprocess(x_train, y_train), data.preprocess(x_test, y_test)
    results = {}
    for kind in ("fit", "native"):
        cfg = TrainConfig(backend=BACKEND, loop=kind, epochs=2, batch_size=64, max_steps_per_epoch=150, seed=1)
        model = build_compiled(cfg)
        fit_model(model, cfg, train, None, [Reseed(cfg.seed)])
        results[kind] = model.evaluate(*test, batch_size=1000, verbose=0, return_dict=True)
    assert results["fit"]["accuracy"] > 0.8 and results["native"]["accuracy"] > 0.8, results
    assert abs(results["native"]["accuracy"] - results["fit"]["accuracy"]) <= 0.03, results
    assert abs(results["native"]["loss"] - results["fit"]["loss"]) <= 0.05, results


@pytest.mark.e2e
@pytest.mark.parametrize("jit", ["auto", "on"])  # torch "on": the compiled step a GPU takes, forced on the CPU
def test_train_cli_native_loop_writes_the_same_run_folder_and_resumes_exactly(cli, mnist_dir, tmp_path, device, jit):
    if jit == "on" and BACKEND != "torch":
        pytest.skip("jit_compile on changes the step only under torch here (tensorflow's XLA: test_device_paths.py)")
    common = ["--loop", "native", "--threads", 1, "--max-steps-per-epoch", 120, "--batch-size", 64,
              "--data-dir", mnist_dir, "--jit-compile", jit]
    out = cli("train", *common, "--epochs", 1, "--output-dir", tmp_path / "split")
    assert out.returncode == 0, out.stderr[-3000:]
    assert "loop native" in out.stdout
    (run,) = [p for p in (tmp_path / "split").iterdir() if p.is_dir()]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["config"]["loop"] == "native" and metrics["config"]["threads"] == 1
    assert metrics["test"]["accuracy"] > 0.6, metrics["test"]  # 120 steps: far above chance
    assert list(metrics["history"]) == ["accuracy", "loss", "val_accuracy", "val_loss"]  # fit's keys, fit's order
    assert (run / "checkpoint.keras").is_file() and (run / "model.keras").is_file()

    out = cli("train", "--resume", run, "--epochs", 2)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = list(csv.DictReader((run / "history.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"]

    # The same two epochs in one go. The checkpoint carries the optimizer state and each epoch's
    # order comes from (seed, epoch) (loop.run_epochs), so the resumed run replays it: the same
    # figures, as the fit resume test in test_faults.py checks, not merely close ones.
    out = cli("train", *common, "--epochs", 2, "--output-dir", tmp_path / "whole")
    assert out.returncode == 0, out.stderr[-3000:]
    (whole,) = [p for p in (tmp_path / "whole").iterdir() if p.is_dir()]
    resumed, ref = (json.loads((r / "metrics.json").read_text()) for r in (run, whole))
    rel, acc = replay_tolerance(device)
    assert resumed["history"]["val_loss"] == pytest.approx(ref["history"]["val_loss"], rel=rel)
    assert resumed["history"]["loss"] == pytest.approx(ref["history"]["loss"], rel=rel)
    assert resumed["test"]["accuracy"] == pytest.approx(ref["test"]["accuracy"], abs=acc)


def test_profile_splits_a_step_into_its_phases_and_trains_like_run(keras, small_batch):
    """Trainer.profile (bench --profile): each phase's seconds per step, the forward and backward
    measurably above zero, and the batches trained on as run() trains on them."""
    x, y = small_batch
    _, model = _pair(keras)
    trainer = backends.active().loop.Trainer(model, x, y)
    batches = np.arange(64).reshape(4, 16)
    trainer.run(batches[:2])  # tracing and compiling happen here, as in the bench's warm-up
    phases = trainer.profile(batches)
    trainer.sync()
    assert set(phases) == set(loop.PHASES) and all(v >= 0 for v in phases.values()), phases
    assert phases["forward"] > 0 and phases["backward"] > 0, phases
    assert sum(phases.values()) < 1.0, phases  # seconds per step of a 16-image batch: milliseconds
    # run() trained once on 2 batches; profile() runs run() once untimed and 3 times timed on 4.
    assert int(model.optimizer.iterations.numpy()) == 2 + 4 * (1 if BACKEND == "torch" else 4)


@pytest.mark.e2e
def test_bench_profile_prints_each_phase_beside_the_reference(tmp_path):
    from conftest import run_module

    from mnist_keras3 import backends

    out = run_module("bench", "--profile", "--backends", BACKEND, "--batch-sizes", 16, "--rounds", 1,
                     "--profile-steps", 3, "--threads", 1, "--json", tmp_path / "p.json")
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads((tmp_path / "p.json").read_text())
    rows = {r["loop"]: r for r in result["rows"]}
    torch_here = "torch" in backends.installed_backends()  # the reference is plain PyTorch
    assert set(rows) == {"native"} | ({"reference"} if torch_here else set()), rows
    assert rows["native"]["backend"] == BACKEND
    for r in rows.values():
        assert set(r["ms_per_step"]) == set(loop.PHASES) and r["step_ms"] > 0, r
    assert f"| 16 | {BACKEND} native |" in out.stdout
    assert ("| 16 | plain PyTorch (reference) |" in out.stdout) == torch_here


@pytest.mark.skipif(BACKEND != "torch", reason="the torch loop's graph passes")
@pytest.mark.parametrize("name", ["tutorial", "tutorial-bn"])  # no random layers: comparable calls
def test_torch_trace_simplified_computes_the_same_loss_and_gradients(keras, name):
    """simplify_trace inlines the traced Keras model and drops its layout copies and no-op casts:
    it must remove some (else it is dead code) and change no value, loss or gradient."""
    import warnings

    import torch

    from mnist_keras3 import models
    from mnist_keras3.backends.torch.loop import _LossAndHits, simplify_trace

    keras.utils.set_random_seed(0)
    model = models.logits_model(models.build_model(name))
    net = _LossAndHits(model, keras.losses.CategoricalCrossentropy(from_logits=True))
    # On the device Keras put the model on (an accelerator when there is one), not torch's default CPU.
    x = keras.ops.convert_to_tensor(np.random.default_rng(0).random((8, 28, 28, 1), "float32"))
    y = keras.ops.convert_to_tensor(np.eye(10, dtype="float32")[np.arange(8) % 10])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        plain = torch.jit.trace(net, (x, y), check_trace=False)
        simple = torch.jit.trace(net, (x, y), check_trace=False)
    copies, casts, biases, pools = simplify_trace(simple.graph)
    # Both Conv2D layers' biases, and both models' two ReLU -> max pool pairs.
    assert copies > 0 and casts > 0 and biases == 2 and pools == 2, (copies, casts, biases, pools)
    assert all(relu.inputsAt(0).node().kind() == "aten::max_pool2d" for relu in simple.graph.findAllNodes("aten::relu"))
    assert not simple.graph.findAllNodes("aten::contiguous") and not simple.graph.findAllNodes("prim::CallMethod")
    assert all(conv.inputsAt(2).node().kind() != "prim::Constant" for conv in simple.graph.findAllNodes(
        "aten::_convolution"))  # each convolution adds its own bias
    state = [v.value.detach().clone() for v in model.non_trainable_variables]
    results = []
    for fn in (plain, simple):
        with torch.no_grad():  # the same BatchNorm statistics going in
            for v, value in zip(model.non_trainable_variables, state, strict=True):
                v.value.copy_(value)
        params = [v.value for v in model.trainable_variables]
        loss, hits = fn(x, y)
        results.append((loss.detach(), hits, torch.autograd.grad(loss, params)))
    (l0, h0, g0), (l1, h1, g1) = results
    # To float32 rounding: the convolutions add their bias in their own kernels (and a GPU may pick
    # other algorithms for the two graphs). A bias before BatchNorm has a gradient of rounding noise
    # alone (BatchNorm removes any shift), hence the absolute tolerance, far below a real gradient's.
    assert torch.equal(h0, h1)
    torch.testing.assert_close(l1, l0, rtol=1e-6, atol=1e-7)
    for a, b in zip(g0, g1, strict=True):
        assert a.abs().max() > 1e-3 or name == "tutorial-bn"  # a gradient, not noise (but BN's biases)
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
