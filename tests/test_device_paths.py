"""Every path an accelerator takes, taken on the CPU: the learning rate read one way on every device,
the jax and tensorflow steps an accelerator compiles, torch's process-group plan, a device count of
0, running out of device memory, and a bug reported as a bug with the run folder saying so."""

import json

import numpy as np
import pytest
from conftest import BACKEND

from mnist_keras3 import backends, training
from mnist_keras3.backends import loop
from mnist_keras3.backends.common import take_devices
from mnist_keras3.config import TrainConfig
from mnist_keras3.errors import INTERNAL_ERROR, TrainingError, UsageError, run_cli


def _subset(mnist, n=2048):
    from mnist_keras3 import data

    (x, y), _ = mnist
    return data.preprocess(x[:n], y[:n])


@pytest.mark.parametrize("schedule", ["none", "cosine"])  # a Keras Variable, or a tensor from a schedule
@pytest.mark.parametrize("which", ["fit", "native"])
def test_every_loop_trains_with_a_constant_and_a_scheduled_rate(keras, mnist, which, schedule):
    """The tutorial CNN, 32 steps of 64 real images: the training loss falls through every loop,
    whatever holds the learning rate (a constant rate crashed the torch loop on CUDA only)."""
    x, y = _subset(mnist)
    cfg = TrainConfig(backend=BACKEND, epochs=1, batch_size=64, loop=which, lr_schedule=schedule, lr=1e-2)
    model = training.build_compiled(cfg, steps_per_epoch=32)
    view = training.training_view(model, cfg)
    before = view.evaluate(x, y, batch_size=512, verbose=0, return_dict=True)["loss"]
    training.fit_model(model, cfg, (x, y), None, callbacks=[], view=view)
    after = view.evaluate(x, y, batch_size=512, verbose=0, return_dict=True)["loss"]
    assert int(view.optimizer.iterations.numpy()) == 32
    assert after < 0.75 * before, (before, after)


@pytest.mark.torch
@pytest.mark.parametrize("schedule", ["none", "cosine"])
def test_torch_adams_read_the_rate_as_tensors_where_the_weights_are(keras, schedule):
    """Both torch Adams (fused, compiled) take each step's rate as a float32 tensor on the weights'
    device: the Variable's own for a constant rate, a schedule's computed on the CPU for the whole
    call and copied once, equal to what Keras's optimizer would use at those steps."""
    import torch

    from mnist_keras3.backends.torch.loop import learning_rates

    cfg = TrainConfig(backend=BACKEND, lr_schedule=schedule, lr=2e-3)
    model = training.build_compiled(cfg, steps_per_epoch=10)
    opt = model.optimizer
    opt.build(model.trainable_variables)
    device = model.trainable_variables[0].value.device
    rates = learning_rates(opt, 3, 4, device)
    assert len(rates) == 4 and all(r.dtype == torch.float32 and r.device == device for r in rates)
    want = [2e-3] * 4 if schedule == "none" else [float(opt._learning_rate(step)) for step in range(3, 7)]
    assert [float(r) for r in rates] == pytest.approx(want, rel=1e-6)
    if schedule == "none":  # the Variable itself: a callback's assignment is seen at the next step
        opt.learning_rate.assign(5e-4)
        assert float(rates[0]) == pytest.approx(5e-4)


@pytest.mark.torch
def test_torch_compiles_its_step_by_auto_off_the_cpu_only_and_outside_ddp(keras):
    from mnist_keras3.backends.torch.loop import compiles

    assert not compiles("auto", "cpu") and compiles("auto", "cuda") and compiles("auto", "xpu")
    assert not compiles("auto", "cuda", ddp=True)
    assert compiles("on", "cpu") and not compiles("off", "cuda")


@pytest.mark.parametrize("jit,distribute", [("on", "data-parallel"), ("off", "none")])
def test_jit_compile_settings_a_native_loop_cannot_take_fall_back_to_fit_with_the_reason(keras, jit, distribute):
    """torch: its compiled step under DDP; jax: an uncompiled native loop; tensorflow takes both."""
    cfg = TrainConfig(backend=BACKEND, jit_compile=jit, distribute=distribute)
    native = backends.active().loop
    reason = loop.unsupported(cfg, native)
    if distribute != "none" and not native.DATA_PARALLEL:  # jax, tensorflow: data-parallel runs through fit anyway
        assert "does not run --distribute" in reason
    elif (BACKEND, jit) in (("torch", "on"), ("jax", "off")):
        assert "compile" in reason
        assert loop.choose(cfg, native) == ("fit", reason)
        with pytest.raises(UsageError, match=r"Expected settings the native loop supports for --loop native"):
            loop.choose(cfg.replace(loop="native"), native)
    else:
        assert reason is None


@pytest.mark.torch
def test_torch_process_group_plan_one_accelerator_per_process_and_gloo_on_cpu(keras):
    from mnist_keras3.backends.torch.distribute import process_group_plan

    assert process_group_plan("cpu", 5, 0) == ("gloo", None)
    assert process_group_plan("cuda", 1, 2) == ("nccl", 1)
    for rank, count in ((0, 0), (2, 2)):  # no GPU visible at all; a third process on two GPUs
        with pytest.raises(UsageError, match=f"this host has {count}. Received: LOCAL_RANK={rank}"):
            process_group_plan("cuda", rank, count)


@pytest.mark.parametrize("asked,found", [(2, 0), (3, 2)])
def test_more_devices_than_there_are_is_one_line_naming_how_many(asked, found):
    with pytest.raises(UsageError, match=f"at most the {found} gpus. Received: devices={asked}"):
        take_devices(["gpu"] * found, asked, "gpus")
    assert take_devices(["a", "b"], 0) == ["a", "b"] and take_devices(["a", "b"], 1) == ["a"]


def _numbers(part):
    """A Trainer.run result (device sums, unread) as Python numbers."""
    return float(part[0]), int(part[1]), part[2]


@pytest.mark.jax
def test_jax_accelerator_step_runs_on_the_cpu_and_makes_the_cpu_steps_updates(keras, small_batch):
    """platform="gpu": XLA's own kernels, scanned, no XLA:CPU options; the same updates as the
    CPU-tuned step (kernels.py's rewrite computes the same values)."""
    from mnist_keras3.backends.jax.loop import Trainer

    x, y = small_batch
    cfg = TrainConfig(backend=BACKEND)
    views = [training.training_view(training.build_compiled(cfg), cfg) for _ in range(2)]
    tuned, plain = Trainer(views[0], x, y), Trainer(views[1], x, y, platform="gpu")
    assert tuned.cpu_tuned and not plain.cpu_tuned and plain._options is None
    batches = np.arange(48).reshape(3, 16)
    results = [_numbers(t.run(batches)) for t in (tuned, plain)]
    assert plain.scan is True
    for t in (tuned, plain):
        t.sync()
    assert results[0][1:] == results[1][1:] and results[0][0] == pytest.approx(results[1][0], rel=1e-5)
    for a, b in zip(views[0].get_weights(), views[1].get_weights(), strict=True):
        np.testing.assert_allclose(b, a, atol=1e-6, rtol=1e-5)


@pytest.mark.jax
def test_jax_numerics_ask_for_full_float32_on_an_accelerator(keras):
    import jax

    from mnist_keras3.backends.jax import configure_numerics

    try:
        configure_numerics(platform="gpu")
        assert jax.config.jax_default_matmul_precision == "highest"
    finally:
        configure_numerics()
    assert jax.config.jax_default_matmul_precision is None  # the CPU is exact without it


@pytest.mark.tensorflow
def test_tensorflow_xla_step_runs_on_the_cpu_and_makes_the_graph_steps_updates(keras, small_batch):
    """A model compiled with jit_compile=True (what "auto" gives with a GPU) trains through XLA."""
    from mnist_keras3.backends.tensorflow.loop import Trainer

    x, y = small_batch
    cfg = TrainConfig(backend=BACKEND)
    views = [training.training_view(training.build_compiled(cfg), cfg) for _ in range(2)]
    views[1].compile(optimizer=views[1].optimizer, loss=views[1].loss, metrics=["accuracy"], jit_compile=True)
    graph, xla = Trainer(views[0], x, y), Trainer(views[1], x, y)
    assert not graph.jit_compile and xla.jit_compile
    batches = np.arange(48).reshape(3, 16)
    results = [_numbers(t.run(batches)) for t in (graph, xla)]
    assert results[0][1:] == results[1][1:] and results[0][0] == pytest.approx(results[1][0], rel=1e-5)
    for a, b in zip(views[0].get_weights(), views[1].get_weights(), strict=True):
        np.testing.assert_allclose(b, a, atol=1e-6, rtol=1e-5)


def _framework_out_of_memory():
    """The exception this backend's framework raises when device memory runs out."""
    if BACKEND == "torch":
        import torch

        return torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 187.50 GiB")
    if BACKEND == "jax":
        import jax

        return jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 201326592000 "
                                          "bytes.")
    import tensorflow as tf

    return tf.errors.ResourceExhaustedError(None, None, "OOM when allocating tensor with shape[1000000,28,28,4]")


def _failing_run(monkeypatch, tmp_path, mnist_dir, error):
    """training.run on real data until training starts, where `error` is raised: (exception, run folder)."""
    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(training, "fit_model", fail)
    cfg = TrainConfig(backend=BACKEND, epochs=1, batch_size=100_000, output_dir=str(tmp_path),
                      data_dir=str(mnist_dir))
    with pytest.raises(Exception) as raised:
        training.run(cfg, "test", backends.activate(BACKEND))
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    return raised.value, run_dir


def test_running_out_of_device_memory_is_one_line_and_the_run_says_failed(keras, monkeypatch, tmp_path, mnist_dir):
    mod = backends.backend_module(BACKEND)
    oom = _framework_out_of_memory()
    assert mod.is_out_of_memory(oom) and not mod.is_out_of_memory(RuntimeError("shapes do not match"))
    error, run_dir = _failing_run(monkeypatch, tmp_path, mnist_dir, oom)
    assert isinstance(error, TrainingError) and error.__cause__ is oom
    message = str(error)
    assert "ran out of memory with batch_size=100000" in message and "Use a smaller --batch-size" in message
    memory = mod.device_memory()
    assert memory is None or f"({memory / 2**30:.1f} GiB)" in message
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "failed" and metrics["error"] == message
    assert metrics["epochs_completed"] == 0 and metrics["checkpoint"] is None and metrics["backend"] == BACKEND
    assert sorted(p.name for p in run_dir.iterdir()) == ["config.toml", "metrics.json"]  # nothing half-written


def test_an_unexpected_error_is_reported_as_a_bug_and_the_run_says_failed(
        keras, monkeypatch, tmp_path, mnist_dir, capsys):
    from mnist_keras3 import train

    batch = repr(np.zeros((64, 28, 28, 1), "float32"))  # a framework's message can hold a whole batch
    bug = RuntimeError(f"Attempt to convert a value {batch} with an unsupported type")
    monkeypatch.setattr(training, "fit_model", lambda *a, **k: (_ for _ in ()).throw(bug))
    code = run_cli(train.main, ["--backend", BACKEND, "--epochs", "1", "--output-dir", str(tmp_path),
                                "--data-dir", str(mnist_dir)])
    err = capsys.readouterr().err
    assert code == INTERNAL_ERROR and INTERNAL_ERROR not in (1, 2)
    assert "Traceback (most recent call last):" in err and "training.py" in err  # where it happened
    line = next(x for x in err.splitlines() if x.startswith("error: "))
    assert line == ("error: internal error in train: RuntimeError: Attempt to convert a value "
                    "<array shape=(?, ?, ?, ?) dtype=float32> with an unsupported type"), line
    assert "This is a bug in mnist-keras3" in err and "0., 0." not in err
    (run_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "failed" and metrics["expected"] is False
    assert metrics["error"].startswith("RuntimeError: Attempt to convert a value <array shape=")


def test_debug_keeps_the_full_exception():
    def main(argv):
        raise ValueError("boom")

    with pytest.raises(ValueError, match="boom"):
        run_cli(main, ["--debug"])


def test_loops_check_every_private_attribute_they_read(keras):
    """The Keras optimizer internals both fused Adams read, checked on a built Adam: a missing one is
    named (and --loop auto then falls back to fit: tests/test_auto_loop.py)."""
    loop.keras_adam_problem.cache_clear()
    try:
        assert loop.keras_adam_problem() is None
        original = loop.KERAS_ADAM_PRIVATE
        loop.KERAS_ADAM_PRIVATE = (*original, "_no_such_slot")
        loop.keras_adam_problem.cache_clear()
        assert "keras.optimizers.Adam._no_such_slot" in loop.keras_adam_problem()
    finally:
        loop.KERAS_ADAM_PRIVATE = original
        loop.keras_adam_problem.cache_clear()
    for name in ("_momentums", "_velocities", "_get_variable_index", "_get_current_learning_rate"):
        assert name in loop.KERAS_ADAM_PRIVATE


@pytest.mark.parametrize("which", ["fit", "native"])
def test_mixed_bf16_computes_in_bfloat16_on_float32_weights_and_trains(keras, mnist, which):
    """--precision mixed-bf16 (meant for GPUs with bfloat16 units; the CPU takes the same path, slowly)."""
    x, y = _subset(mnist, 1024)
    cfg = TrainConfig(backend=BACKEND, epochs=1, batch_size=64, loop=which, lr=1e-2, precision="mixed-bf16")
    model = training.build_compiled(cfg, steps_per_epoch=16)
    conv = model.get_layer("conv1")
    assert conv.compute_dtype == "bfloat16" and conv.variable_dtype == "float32"
    assert keras.config.dtype_policy().name == "float32"  # the process's policy is put back
    view = training.training_view(model, cfg)
    before = view.evaluate(x, y, batch_size=512, verbose=0, return_dict=True)["loss"]
    training.fit_model(model, cfg, (x, y), None, callbacks=[], view=view)
    after = view.evaluate(x, y, batch_size=512, verbose=0, return_dict=True)["loss"]
    assert all(v.dtype == "float32" for v in model.trainable_variables)
    assert after < 0.8 * before, (before, after)


def test_compile_cache_folder_is_per_backend_under_the_cache_and_can_be_turned_off(monkeypatch, tmp_path):
    from mnist_keras3.backends.common import ENV_COMPILE_CACHE, compile_cache_dir

    monkeypatch.delenv(ENV_COMPILE_CACHE, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert compile_cache_dir("jax") == tmp_path / "mnist_keras3" / "compiled" / "jax"
    monkeypatch.setenv(ENV_COMPILE_CACHE, str(tmp_path / "elsewhere"))
    assert compile_cache_dir("torch") == tmp_path / "elsewhere" / "torch"
    for off in ("off", "", "OFF"):
        monkeypatch.setenv(ENV_COMPILE_CACHE, off)
        assert compile_cache_dir("jax") is None


@pytest.mark.jax
def test_jax_keeps_every_compiled_program_in_the_compile_cache(keras):
    """A later run loads what an earlier one compiled (fast.toml's compile and warm-up on the CPU:
    docs/speed.md); activate() pointed jax's persistent cache at the project's folder."""
    import jax

    from mnist_keras3.backends.common import compile_cache_dir

    folder = compile_cache_dir("jax")
    assert jax.config.jax_compilation_cache_dir == (str(folder) if folder else None)
    if folder:
        assert jax.config.jax_persistent_cache_min_compile_time_secs == 0.0
