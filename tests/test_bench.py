"""The benchmark: ratios against the reference, its table and JSON, and the GPU check script."""

import json
import os
import subprocess
import sys

import pytest
from conftest import BACKEND, REPO

from mnist_keras3.bench import report as bench
from mnist_keras3.bench import tables, worker
from mnist_keras3.errors import UsageError


def _result(backend, loop, bs, per_s, per_cpu_s, rss=500.0):
    return {"backend": backend, "loop": loop, "batch_size": bs, "samples_per_s": per_s,
            "samples_per_cpu_s": per_cpu_s, "peak_rss_mb": rss, "device": "CPU"}


def test_summary_takes_medians_and_divides_by_the_reference_at_the_same_batch():
    speed = [
        _result("torch", "reference", 32, [100.0, 110.0, 90.0], [200.0, 200.0, 200.0]),
        _result("torch", "reference", 32, [105.0], [200.0]),  # a second round
        _result("jax", "native", 32, [150.0, 160.0, 140.0], [500.0, 500.0, 500.0], rss=900.0),
        _result("torch", "reference", 64, [200.0], [300.0]),
        _result("jax", "native", 64, [100.0], [150.0]),
        {"backend": "tensorflow", "loop": "fit", "batch_size": 64, "error": "boom"},
    ]
    rows = bench.summarize(speed, [], [32, 64])
    by = {(r["backend"], r["loop"], r["batch_size"]): r for r in rows}
    assert by[("torch", "reference", 32)]["samples_per_s"] == 102.5  # median of 100, 110, 90, 105
    assert by[("jax", "native", 32)]["ratio"] == round(150 / 102.5, 2)
    assert by[("jax", "native", 32)]["cpu_ratio"] == 2.5 and by[("jax", "native", 32)]["peak_rss_mb"] == 900.0
    assert by[("jax", "native", 64)]["ratio"] == 0.5
    assert by[("tensorflow", "fit", 64)]["error"] == "boom" and by[("tensorflow", "fit", 64)]["ratio"] is None
    assert [r["loop"] for r in rows][:2] == ["reference", "native"]  # the reference heads each batch size
    info = {"device": "CPU", "cpu": "x", "cores": 2, "load_average_start": [1], "load_average_end": [1]}
    args = bench.parse_args(["--threads", "1"])
    table = bench.markdown(rows, [], info, args)
    assert "| 32 | plain PyTorch (reference) | - | 102 | 1.00x |" in table
    assert "| 64 | tensorflow | fit | error: boom |" in table


def test_a_recipe_off_mnist_is_refused_before_any_job(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text('dataset = "cifar10"\n')
    with pytest.raises(UsageError, match="Expected a recipe on MNIST"):
        bench.load_recipe(recipe)


@pytest.mark.parametrize("argv,match", [
    (["--backends", "theano"], "Expected backends among"),
    (["--loops", "fast"], "Expected loops among"),
    (["--batch-sizes", "32,x"], "Expected comma-separated integers"),
])
def test_bad_benchmark_arguments(argv, match):
    with pytest.raises(UsageError, match=match):
        bench.plan(bench.parse_args(argv))


@pytest.mark.once  # argument handling only
def test_results_record_paths_relative_to_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ["--json", str(tmp_path / "out" / "b.json"), f"--data-dir={tmp_path / 'mnist'}", "--recipe",
            "configs/fast.toml"]
    args = bench.parse_args(argv)
    args.argv = argv
    assert bench.command_line(args) == ("python -m mnist_keras3.bench --json out/b.json --data-dir=mnist "
                                        "--recipe configs/fast.toml")
    settings = bench.settings(args)
    assert settings["json"] == "out/b.json" and settings["data_dir"] == "mnist"
    assert settings["recipe"] == "configs/fast.toml" and "argv" not in settings


@pytest.mark.e2e
def test_benchmark_runs_end_to_end_and_writes_json(mnist_dir, tmp_path, device):
    out_json = tmp_path / "b.json"
    env = {**os.environ, "MNIST_KERAS3_DATA": str(mnist_dir)}
    out = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "benchmark.py"), "--backends", BACKEND, "--loops", "native",
         "--batch-sizes", "16", "--epochs", "1", "--max-samples", "320", "--rounds", "1",
         "--target", "0.5", "--tta-max-epochs", "1", "--tta-batch-size", "64", "--json", out_json],
        capture_output=True, text=True, timeout=900, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out_json.read_text())
    rows = {(r["backend"], r["loop"]): r for r in result["summary"]}
    assert rows[(BACKEND, "native")]["samples_per_s"] > 0 and rows[(BACKEND, "native")]["device"] == device
    assert 0 < rows[(BACKEND, "native")]["warmup_seconds"]  # the untimed first epoch, in the summary and table
    assert "| warm-up epoch (s) |" in result["markdown"]
    assert all(r["device"] == device for r in result["raw"] + result["time_to_accuracy"]), result["raw"]
    assert all(r["step"] for r in result["raw"] if r["kind"] == "keras")  # how each Keras job's step ran
    assert rows[(BACKEND, "native")]["peak_rss_mb"] > 100  # a Python process with a framework and MNIST
    if "torch" in bench.backends.installed_backends():
        assert rows[("torch", "reference")]["ratio"] == 1.0 and rows[(BACKEND, "native")]["ratio"] > 0
        assert rows[("torch", "reference")]["device"] == device  # the reference runs where the backend does
    tta = {(r["backend"], r["loop"]): r for r in result["time_to_accuracy"]}
    # One epoch of batch 64 passes 50% test accuracy under every backend.
    assert tta[(BACKEND, "native")]["seconds"] > 0 and tta[(BACKEND, "native")]["accuracy"] >= 0.5
    assert "plain PyTorch" in out.stdout and "x plain PyTorch" in result["markdown"]
    assert result["benchmark"] == "speed" and result["settings"]["threads"] == 1  # the speed default
    assert result["command"].endswith("--json b.json")  # relative to the working directory, tmp_path


@pytest.mark.e2e
def test_gpu_check_script_reports_the_device_and_fails_on_a_failed_job(mnist_dir, device, tmp_path):
    """scripts/gpu_check.sh (the GPU acceptance run), two of its jobs, capped: a row per job with the
    device and the loop that ran, a JSON file, and exit 1 when a job fails (an accuracy floor no
    5-step run reaches)."""
    env = {**os.environ, "PYTHON": sys.executable, "MNIST_KERAS3_DATA": str(mnist_dir)}
    script = str(REPO / "scripts" / "gpu_check.sh")
    # jax2onnx's MaxPool does not run in onnxruntime: export says so and names another backend (test_tools_e2e)
    tools = "evaluate,predict" if BACKEND == "jax" else "tools"
    common = ["--backends", BACKEND, "--only", f"tutorial-auto,{tools}", "--max-steps", "200", "--json"]
    out = subprocess.run(["bash", script, *common, tmp_path / "ok.json", "--min-accuracy", "0.5"],
                         capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stdout + out.stderr[-2000:]
    rows = json.loads((tmp_path / "ok.json").read_text())["rows"]
    assert [(r["job"], r["result"]) for r in rows] == [("tutorial-auto", "pass"), ("evaluate", "pass"),
                                                       ("predict", "pass"), ("export-onnx", "pass")][:len(rows)]
    assert len(rows) == (3 if BACKEND == "jax" else 4), rows
    assert rows[0]["device"] == device and rows[0]["loop"] == "native" and rows[0]["samples_per_second"] > 0
    line = next(text for text in out.stdout.splitlines() if text.startswith(BACKEND))
    assert line.split()[:2] == [BACKEND, "tutorial-auto"] and line.endswith("PASS"), line
    failing = subprocess.run(["bash", script, *common[:3], "tutorial-fit", "--max-steps", "5", "--json",
                              tmp_path / "bad.json", "--min-accuracy", "0.999"],
                             capture_output=True, text=True, timeout=600, env=env)
    assert failing.returncode == 1, failing.stdout + failing.stderr[-2000:]
    (row,) = json.loads((tmp_path / "bad.json").read_text())["rows"]
    assert row["result"] == "fail" and row["why"].startswith("test accuracy"), row


def test_gpu_check_fails_a_run_whose_torch_step_fell_back():
    """A run that trained, but with its step compiled -> traced (torch.compile failing on the GPU
    machine) or traced -> eager, is not what the acceptance run accepts."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_check", REPO / "scripts" / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu_check)
    line = ("warning: torch.compile could not compile this model's training step (RuntimeError: no Triton); "
            "it is traced instead, as with --jit-compile off.")
    assert gpu_check.step_fallback(f"I0000 some log\n{line}\n") == line
    assert gpu_check.step_fallback("warning: something else\n") is None and gpu_check.step_fallback(None) is None
    loop_source = (REPO / "mnist_keras3" / "backends" / "torch" / "loop.py").read_text()
    for warning in gpu_check.FALLBACKS:  # the lines the torch loop prints, as it prints them
        assert f'"{warning}' in loop_source, warning


@pytest.mark.once  # a bash script's dry run
def test_the_gpu_session_phases_fit_a_sessions_device_time(tmp_path):
    """scripts/gpu_session.sh's two phases run back to back on one lent machine, whose 15 minutes of
    device time include its start (a minute or two): their steps' time limits must leave that."""
    import re

    caps = {}
    for phase in ("speed", "check"):
        out = subprocess.run(["bash", str(REPO / "scripts" / "gpu_session.sh"), phase], capture_output=True,
                             text=True, env={**os.environ, "DRY_RUN": "1", "OUT": str(tmp_path)}, timeout=60)
        assert out.returncode == 0, out.stderr
        caps[phase] = [int(s) for s in re.findall(r"^== \S+ \(at most (\d+) s\)", out.stdout, re.M)]
        assert len(caps[phase]) >= 3, out.stdout
        assert sum(caps[phase]) <= 420, (phase, caps[phase])  # one call each, with room for the set-up
    assert sum(map(sum, caps.values())) <= 12 * 60, caps


def test_table_without_the_reference_says_so_instead_of_crashing():
    # The jax and tensorflow tox envs have no torch, so no reference row: ratios are None.
    rows = bench.summarize([_result("jax", "native", 32, [150.0], [300.0])], [], [32])
    assert rows[0]["ratio"] is None and rows[0]["cpu_ratio"] is None
    info = {"device": "CPU", "cpu": "x", "cores": 2, "load_average_start": [1], "load_average_end": [1]}
    table = bench.markdown(rows, [], info, bench.parse_args(["--threads", "1"]))
    assert "| 32 | jax | native | 150 | n/a (no reference) | 300 | n/a (no reference) |" in table


def test_the_speed_benchmark_times_fit_and_native_by_default_and_takes_auto():
    jobs, names, loops, sizes = bench.plan(bench.parse_args([]))
    assert loops == ["fit", "native"]
    assert {"fit", "native"} <= {j["loop"] for j in jobs} <= {"reference", "fit", "native"}
    rows = bench.summarize([_result("jax", "auto", 32, [150.0], [300.0]), _result("jax", "fit", 32, [140.0], [300.0]),
                            _result("torch", "reference", 32, [100.0], [200.0])], [], [32])
    assert [r["loop"] for r in rows] == ["reference", "auto", "fit"] and rows[1]["ratio"] == 1.5


@pytest.mark.parametrize("epochs,first_call,expected", [
    ([5.0, 2.0, 2.2], None, 2.9),        # the later epochs' median rate: 2.1 s for the first epoch's steps
    ([5.0], (3.2, 10), 3.0),             # one epoch: the rate of its 90 steps after the first call
    ([2.0, 2.5], None, 0.0),             # a later epoch slower than the first: no negative compile time
    ([1.0, 0.0], None, 1.0),             # never more than the first epoch
    ([5.0], None, None),                 # one epoch and no first call: no rate to subtract
    ([5.0], (5.0, 100), None),           # the first call was the whole epoch
    ([], None, None),
])
def test_compile_estimate_is_the_first_epochs_excess_over_the_steady_rate(epochs, first_call, expected):
    got = worker.compile_estimate(epochs, 100, *(first_call or ()))
    assert got == (None if expected is None else pytest.approx(expected))
    if got is not None:
        assert 0 <= got <= epochs[0]


def test_the_first_call_timer_times_the_first_epochs_first_callback_only(keras):
    import time

    timer = worker.first_call_timer(keras)
    timer.on_epoch_begin(0)
    time.sleep(0.02)
    timer.on_train_batch_end(9, {"loss": keras.ops.convert_to_tensor(0.5)})  # a device value: read, so waited for
    timer.on_train_batch_end(19, {"loss": 0.4})
    timer.on_epoch_begin(1)
    timer.on_train_batch_end(0, {"loss": 0.3})
    assert timer.steps == 10 and 0.02 <= timer.seconds < 5


def test_the_reference_runs_where_keras_torch_backend_runs():
    assert worker.reference_device(None, None) == "cpu"
    assert worker.reference_device(None, "cuda") == "cuda"
    assert worker.reference_device("cpu", "cuda") == "cpu"  # KERAS_TORCH_DEVICE wins, as in Keras


def test_the_reference_reports_the_device_the_backend_jobs_report(device):
    pytest.importorskip("torch")
    ref = worker._torch_setup({"threads": 0}, 0)
    worker._synchronize(ref)  # the device's queue drained (the CPU's: nothing to wait for)
    assert worker._torch_device_name(ref) == device  # on the CPU: "CPU" on both sides


def test_tables_name_the_device_per_row_only_when_the_jobs_ran_on_more_than_the_cpu():
    cpu = bench.summarize([_result("torch", "reference", 64, [100.0], [90.0]),
                           _result("jax", "auto", 64, [200.0], [150.0])], [], [64])
    assert "device" not in tables.speed_table({"summary": cpu})[0]
    mixed = bench.summarize([_result("torch", "reference", 64, [100.0], [90.0]),
                             {**_result("jax", "auto", 64, [200.0], [150.0]), "device": "NVIDIA H200",
                              "warmup_seconds": 7.5}], [], [64])
    lines = tables.speed_table({"summary": mixed})
    assert lines[0].startswith("| batch | backend | loop | device | samples/s |")
    assert lines[0].endswith("| warm-up epoch (s) |") and lines[1].count("|") == lines[0].count("|")
    assert lines[2] == "| 64 | plain PyTorch (reference) | - | CPU | 100 | 1.00x | 90 | 1.00x | 500 | - |"
    assert lines[3] == "| 64 | jax | auto | NVIDIA H200 | 200 | 2.00x | 150 | 1.67x | 500 | 7.50 |"


def test_the_device_wait_reads_the_last_trained_variable_before_the_epoch_timer_stops(keras, monkeypatch):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    read = []
    monkeypatch.setattr(keras.ops, "convert_to_numpy", lambda x: read.append(x))
    wait = worker.device_wait(keras)
    wait.set_model(model)
    wait.on_test_begin()
    wait.on_epoch_end(0, {})
    assert len(read) == 2 and all(x is model.trainable_variables[-1] for x in read)  # the bias the last step wrote
