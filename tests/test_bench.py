"""The benchmark: ratios against the reference, its table and JSON, and the GPU check script."""

import json
import os
import subprocess
import sys

import pytest
from conftest import BACKEND, REPO

from mnist_keras3.bench import report as bench
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
    assert rows[(BACKEND, "native")]["peak_rss_mb"] > 100  # a Python process with a framework and MNIST
    if "torch" in bench.backends.installed_backends():
        assert rows[("torch", "reference")]["ratio"] == 1.0 and rows[(BACKEND, "native")]["ratio"] > 0
    tta = {(r["backend"], r["loop"]): r for r in result["time_to_accuracy"]}
    # One epoch of batch 64 passes 50% test accuracy under every backend.
    assert tta[(BACKEND, "native")]["seconds"] > 0 and tta[(BACKEND, "native")]["accuracy"] >= 0.5
    assert "plain PyTorch" in out.stdout and "x plain PyTorch" in result["markdown"]
    assert result["benchmark"] == "speed" and result["settings"]["threads"] == 1  # the speed default
    assert result["command"].endswith(f"--json {out_json}")


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
