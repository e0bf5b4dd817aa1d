"""The recipe benchmark (`python -m mnist_keras3.bench --recipe FILE --seeds N`): medians over
seeds with seeds that never reach a mark, its table, the plain PyTorch reference's schedule and
models against the Keras ones, and a tiny end-to-end run."""

import json
import os
import subprocess
import sys

import pytest
from conftest import BACKEND, REPO

from mnist_keras3.bench import reference_models, tables, worker
from mnist_keras3.bench import report as bench
from mnist_keras3.errors import UsageError


def _run(role, backend, seed, s99, s995, final, loop="native"):
    reached = {"0.99": None if s99 is None else {"epoch": 2, "seconds": s99},
               "0.995": None if s995 is None else {"epoch": 3, "seconds": s995}}
    return {"role": role, "backend": backend, "seed": seed, "loop": loop, "reached": reached,
            "final_accuracy": final, "device": "CPU"}


@pytest.mark.parametrize("values,median", [
    ([10.0, None, 12.0], 12.0),   # the seed that never reached it ranks last
    ([10.0, None, None], None),   # the median seed never reached it
    ([10.0, 12.0], 11.0),
    ([10.0, None], None),
    ([None], None),
    ([], None),
])
def test_median_seconds_ranks_a_seed_that_never_reached_the_mark_last(values, median):
    assert bench.median_seconds(values) == median


def test_summary_and_table_with_seeds_that_never_reached_99():
    runs = [
        _run("recipe", "torch", 1, 10.0, None, 0.9921),
        _run("recipe", "torch", 2, None, None, 0.9880),  # never reached 99%
        _run("recipe", "torch", 3, 14.0, 30.0, 0.9952),
        _run("reference", "torch", 1, 5.0, None, 0.9910, loop="plain PyTorch"),
        _run("reference", "torch", 2, 7.0, None, 0.9930, loop="plain PyTorch"),
        _run("reference", "torch", 3, 6.0, None, 0.9920, loop="plain PyTorch"),
        _run("peer", "torch", 1, 40.0, None, 0.9915, loop="fit"),
        _run("peer", "torch", 2, None, None, 0.9890, loop="fit"),
        _run("peer", "torch", 3, 56.0, None, 0.9905, loop="fit"),
        {"role": "recipe", "backend": "jax", "seed": 1, "error": "boom"},
    ]
    rows = {(r["role"], r["backend"]): r for r in bench.recipe_summary(runs)}
    torch_row = rows[("recipe", "torch")]
    assert torch_row["seconds"] == {"0.99": 14.0, "0.995": None}
    assert torch_row["median_accuracy"] == 0.9921 and torch_row["min_accuracy"] == 0.988
    assert rows[("reference", "torch")]["seconds"]["0.99"] == 6.0
    assert rows[("peer", "torch")]["seconds"]["0.99"] == 56.0
    assert torch_row["ratio_reference"] == round(14 / 6, 2) and torch_row["ratio_peer"] == 0.25
    assert rows[("recipe", "jax")]["errors"] == ["seed 1: boom"] and rows[("recipe", "jax")]["ratio_peer"] is None
    assert [r["role"] for r in bench.recipe_summary(runs)] == ["recipe", "recipe", "reference", "peer"]

    cfg = {"model": "fast", "batch_size": 256, "optimizer": "adam", "lr": 0.01, "beta_1": 0.7, "beta_2": 0.9,
           "lr_schedule": "onecycle", "warmup_fraction": 0.25, "label_smoothing": 0.0, "epochs": 2}
    info = {"device": "CPU", "cpu": "x", "cores": 2, "load_average_start": [1], "load_average_end": [1]}
    args = bench.parse_args(["--recipe", "r.toml", "--seeds", "3", "--threads", "0"])
    table = bench.recipe_markdown(bench.recipe_summary(runs), "r.toml", cfg, "configs/kerasio.toml", info, args)
    assert ("| torch | native | 3 | 14.0 | not reached | 10.0 / - / 14.0 | 0.9921 | 0.9880 | 2.33x | 0.25x |"
            in table), table
    assert "| plain PyTorch (reference) | plain PyTorch | 3 | 6.0 | not reached | 5.0 / 7.0 / 6.0 |" in table
    assert "| keras-io convnet (torch) | fit | 3 | 56.0 | not reached | 40.0 / - / 56.0 |" in table
    assert "| jax | error: seed 1: boom |" in table and "SMOKE RUN" not in table


def test_a_recipe_the_reference_cannot_run_gets_an_na_row_with_the_reason():
    note = reference_models.reference_unsupported({"model": "tutorial", "optimizer": "adam"})
    assert "'tutorial' has no plain PyTorch version" in note
    assert reference_models.reference_unsupported({"model": "fast", "optimizer": "sgd"}).startswith("optimizer 'sgd'")
    assert reference_models.reference_unsupported({"model": "shift-cnn", "optimizer": "adam"}) is None
    rows = bench.recipe_summary([_run("recipe", "torch", 1, None, None, 0.98)], reference_note=note)
    cfg = {"model": "tutorial", "batch_size": 32, "optimizer": "adam", "lr": 0.001, "beta_1": 0.9, "beta_2": 0.999,
           "lr_schedule": "none", "warmup_fraction": 0.25, "label_smoothing": 0.0, "epochs": 10}
    info = {"device": "CPU", "cpu": "x", "cores": 2, "load_average_start": [1], "load_average_end": [1]}
    args = bench.parse_args(["--recipe", "r.toml", "--max-steps-per-epoch", "3"])
    table = bench.recipe_markdown(rows, "r.toml", cfg, None, info, args)
    assert f"| plain PyTorch (reference) | n/a: {note} |" in table
    assert "| torch | native | 1 | not reached | not reached | - | 0.9800 | 0.9800 | n/a (not run) |" in table
    assert "SMOKE RUN" in table


@pytest.mark.parametrize("schedule", ["none", "cosine", "onecycle"])
def test_the_reference_schedule_is_the_keras_schedule(keras, schedule):
    from mnist_keras3.config import TrainConfig
    from mnist_keras3.optimizers import learning_rate

    cfg = TrainConfig(lr=0.01, lr_schedule=schedule, warmup_fraction=0.3).validate()
    total = 470
    keras_lr = learning_rate(cfg, total)
    for step in (0, 1, 2, 140, 141, 142, 300, 468, 469, 470, 500):
        expected = keras_lr if schedule == "none" else float(keras.ops.convert_to_numpy(keras_lr(step)))
        got = worker.reference_lr(vars(cfg), total, step)
        assert got == pytest.approx(expected, rel=1e-5, abs=1e-9), (schedule, step, got, expected)


@pytest.mark.parametrize("name,trainable", [("fast", 108_970), ("shift-cnn", 432_106), ("shift-cnn-deep", 321_642),
                                            ("kerasio-convnet", 34_826)])
def test_reference_models_have_the_keras_models_parameter_counts(keras, name, trainable):
    from mnist_keras3 import models

    assert models.parameter_counts(models.build_model(name))["trainable"] == trainable
    torch = pytest.importorskip("torch")
    net = reference_models.build_reference(name)
    assert sum(p.numel() for p in net.parameters() if p.requires_grad) == trainable
    assert net(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def test_reference_random_shift_moves_whole_images_and_fills_the_background():
    torch = pytest.importorskip("torch")
    x = torch.zeros(64, 1, 28, 28)
    x[:, 0, 14, 10] = 1.0
    torch.manual_seed(0)
    out = worker.random_shift(x, 2, fill=-0.5)
    assert out.shape == x.shape
    for img in out[:, 0]:
        (r, c), = (img == 1.0).nonzero().tolist()
        assert abs(r - 14) <= 2 and abs(c - 10) <= 2
        assert set(img.unique().tolist()) <= {0.0, 1.0, -0.5}
        fill_rows = (img == -0.5).all(1).sum() + (img == -0.5).all(0).sum()  # whole rows/columns of fill
        assert int(fill_rows) == abs(r - 14) + abs(c - 10)
    assert len({tuple((img == 1.0).nonzero()[0].tolist()) for img in out[:, 0]}) > 5  # shifts vary per image


def test_recipe_figures_give_the_seconds_to_each_mark_with_and_without_the_compile_seconds():
    got = worker.recipe_figures([5.0, 2.0, 2.1], [0.985, 0.991, 0.9951], (0.99, 0.995), compile_seconds=2.95)
    assert got["compile_seconds"] == 2.95
    assert got["reached"]["0.99"] == {"epoch": 2, "seconds": 7.0, "seconds_without_compile": 4.05}
    assert got["reached"]["0.995"] == {"epoch": 3, "seconds": 9.1, "seconds_without_compile": 6.15}
    unknown = worker.recipe_figures([5.0], [0.991], (0.99,))  # no estimate: no figure without it
    assert unknown["compile_seconds"] is None and unknown["reached"]["0.99"]["seconds_without_compile"] is None


def test_the_recipe_summary_and_table_give_compile_seconds_and_each_rows_device():
    def run(role, seed, s99, compile_s, device, loop="native"):
        r = _run(role, "torch", seed, s99, None, 0.991, loop=loop)
        r["reached"]["0.99"]["seconds_without_compile"] = round(s99 - compile_s, 3)
        return {**r, "compile_seconds": compile_s, "device": device}

    runs = [run("recipe", 1, 4.0, 3.0, "NVIDIA H200"), run("recipe", 2, 5.0, 3.4, "NVIDIA H200"),
            run("recipe", 3, 4.6, 3.2, "NVIDIA H200"),
            run("reference", 1, 1.6, 0.5, "NVIDIA H200", "plain PyTorch")]
    rows = {r["role"]: r for r in bench.recipe_summary(runs)}
    assert rows["recipe"]["compile_seconds"] == 3.2 and rows["recipe"]["device"] == "NVIDIA H200"
    assert rows["recipe"]["seconds_without_compile"] == {"0.99": 1.4, "0.995": None}
    assert rows["reference"]["compile_seconds"] == 0.5 and rows["reference"]["device"] == "NVIDIA H200"
    table = tables.recipe_table(bench.recipe_summary(runs))
    assert table[0].startswith("| run | device | loop | seeds | s to 99.0% | s to 99.5% | compile + warm-up (s) "
                               "| s to 99.0% without it | s to 99.5% without it |")
    assert table[1].count("|") == table[0].count("|") == table[2].count("|")
    assert table[2] == ("| torch | NVIDIA H200 | native | 3 | 4.6 | not reached | 3.20 | 1.4 | not reached "
                        "| 4.0 / 5.0 / 4.6 | 0.9910 | 0.9910 | 2.87x | n/a (not run) |")
    note = bench.recipe_summary(runs[:1], reference_note="no torch")
    assert tables.recipe_table(note)[-1] == "| plain PyTorch (reference) | - | n/a: no torch |" + " |" * 11
    assert "device" not in tables.recipe_table(bench.recipe_summary(
        [{**r, "device": "CPU"} for r in runs]))[0]  # a CPU-only run names its device above the table


def test_an_unknown_recipe_key_is_the_one_line_config_error_before_any_job(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('model = "fast"\nwarmup = 0.3\n')
    with pytest.raises(UsageError, match="Unknown key 'warmup' in config file .*Valid keys: backend, model"):
        bench.main(["--recipe", str(bad), "--backends", BACKEND])
    with pytest.raises(UsageError, match="Unknown key 'warmup'"):
        bench.main(["--recipe", str(REPO / "configs" / "fast.toml"), "--peer", str(bad), "--backends", BACKEND])
    with pytest.raises(UsageError, match="Peer recipe not found: .*--no-peer"):
        bench.main(["--recipe", str(REPO / "configs" / "fast.toml"), "--peer", str(tmp_path / "no.toml")])
    with pytest.raises(UsageError, match="--seeds: 0"):
        bench.main(["--recipe", str(REPO / "configs" / "fast.toml"), "--seeds", "0"])


@pytest.mark.e2e
def test_recipe_benchmark_runs_end_to_end(mnist_dir, tmp_path, device):
    """A smoke run of every role, with --precision mixed-bf16 (how issue 26's bf16 rows are measured):
    the Keras jobs train under Keras's mixed_bfloat16 policy, the plain PyTorch reference in float32."""
    out_json = tmp_path / "r.json"
    env = {**os.environ, "MNIST_KERAS3_DATA": str(mnist_dir)}
    out = subprocess.run(
        [sys.executable, "-m", "mnist_keras3.bench", "--recipe", str(REPO / "configs" / "fast.toml"), "--seeds", "1",
         "--max-steps-per-epoch", "3", "--max-test-samples", "500", "--backends", BACKEND, "--precision", "mixed-bf16",
         "--json", out_json],
        capture_output=True, text=True, timeout=900, env=env, cwd=REPO)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    result = json.loads(out_json.read_text())
    assert "| run | loop | seeds | s to 99.0% | s to 99.5% |" in out.stdout and "SMOKE RUN" in out.stdout
    torch_here = "torch" in bench.backends.installed_backends()
    roles = sorted((r["role"], r["seed"]) for r in result["runs"])
    assert roles == sorted([(role, s) for role in ("recipe", "peer") + (("reference",) if torch_here else ())
                            for s in (1,)])
    assert all("error" not in r for r in result["runs"]), result["runs"]
    recipe_runs = [r for r in result["runs"] if r["role"] == "recipe"]
    assert {r["loop"] for r in recipe_runs} <= {"native", "fit"} and recipe_runs[0]["loop_requested"] == "auto"
    for r in result["runs"]:
        assert len(r["test_accuracy"]) == len(r["cumulative_seconds"]) == len(r["epoch_cpu_seconds"])
        assert r["cumulative_seconds"] == sorted(r["cumulative_seconds"]) and r["cumulative_seconds"][0] > 0
        assert r["device"] == device, r  # the reference too: it runs where the backend runs
        assert 0 <= r["compile_seconds"] <= r["epoch_seconds"][0], r
    assert "| compile + warm-up (s) |" in result["markdown"]
    assert "precision mixed-bf16" in result["markdown"] and result["settings"]["precision"] == "mixed-bf16"
    assert {r["role"]: r.get("dtype_policy") for r in result["runs"]} == {
        "recipe": "mixed_bfloat16", "peer": "mixed_bfloat16", **({"reference": None} if torch_here else {})}
    assert all(r["step"] for r in result["runs"] if r["role"] != "reference")  # how each Keras job's step ran
    assert {len(r["test_accuracy"]) for r in recipe_runs} == {2}  # all the recipe's epochs, no stop at a target
    assert {r["train_samples"] for r in result["runs"] if r["role"] == "peer"} == {54_000}  # the end held out
    assert result["recipe"]["config"]["model"] == "fast" and result["peer"]["config"]["model"] == "kerasio-convnet"
    assert result["command"].startswith("python -m mnist_keras3.bench --recipe")
    assert f"| keras-io convnet ({BACKEND}) |" in result["markdown"]
    assert ("| plain PyTorch (reference) | plain PyTorch | 1 |" in result["markdown"]) == torch_here
