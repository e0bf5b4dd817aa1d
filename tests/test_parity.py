"""The parity report: its comparisons, proof that each check can fail, and the real report.

Comparison logic is plain numpy, tested on made-up arrays. The keras-side parts run under the
session's backend; the full multi-backend report runs only where all three backends are installed.
"""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import BACKEND

from mnist_keras3 import backends
from mnist_keras3.errors import UsageError
from mnist_keras3.parity import compare as pc

# ---------------------------------------------------------------- comparison logic (no keras)

def record(filters=4, pool="MaxPooling2D"):
    return {
        "parameters": {"total": 1198, "trainable": 1198, "non_trainable": 0},
        "layers": [["image", "InputLayer", [None, 28, 28, 1]], ["conv1", "Conv2D", [None, 26, 26, filters]],
                   ["pool1", pool, [None, 13, 13, filters]]],
        "weights": [["conv1/kernel", [3, 3, 1, filters], True], ["conv1/bias", [filters], True]],
    }


def test_structure_passes_only_when_identical():
    same = pc.compare_structure({"torch": {"m": record()}, "jax": {"m": record()}})[0]
    assert same["passed"] and "1 models, 3 layers identical" in same["figure"]
    swapped = pc.compare_structure({"torch": {"m": record()}, "jax": {"m": record(pool="AveragePooling2D")}})[0]
    assert not swapped["passed"] and "AveragePooling2D" in swapped["detail"]
    wider = pc.compare_structure({"torch": {"m": record()}, "jax": {"m": record(filters=5)}})[0]
    assert not wider["passed"] and "conv1" in wider["detail"]
    missing = pc.compare_structure({"torch": {"m": record()}, "jax": {"m": record(), "extra": record()}})[0]
    assert not missing["passed"] and "extra: registered under only one" in missing["detail"]


def outputs(rng, noise=0.0, n=200):
    logits = rng.normal(size=(n, 10))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    grads = [rng.normal(size=(3, 3, 1, 4)), rng.normal(size=(10,))]
    return {"probs": probs.astype(np.float32), "loss": 2.3, "grads": grads, "batch": 128,
            "_noise": noise}


def with_noise(o, noise, rng):
    return {**o, "probs": (o["probs"] + noise * rng.standard_normal(o["probs"].shape)).astype(np.float32),
            "loss": o["loss"] * (1 + noise), "grads": [g * (1 + noise) for g in o["grads"]]}


def test_numerics_pass_at_float32_noise_and_fail_beyond_tolerance(rng):
    ref = outputs(rng)
    ok = pc.compare_numerics({"torch": ref, "jax": with_noise(ref, 1e-7, rng)})
    assert [c["passed"] for c in ok] == [True, True, True, True], ok
    noisy = with_noise(ref, 1e-3, rng)
    bad = pc.compare_numerics({"torch": ref, "jax": noisy})
    # Noise of 1e-3 may or may not flip a close top-2: the argmax row's verdict is counted here,
    # from the arrays, not taken from the result under test.
    flipped = int(np.sum(noisy["probs"].argmax(1) != ref["probs"].argmax(1)))
    assert [c["passed"] for c in bad] == [False, flipped == 0, False, False], bad
    assert bad[1]["figure"].startswith(f"{200 - flipped}/200 agree"), bad[1]
    assert "jax vs torch" in bad[0]["figure"]


def test_numerics_fail_on_one_flipped_argmax_even_within_probability_tolerance(rng):
    ref = outputs(rng)
    flipped = {**ref, "probs": ref["probs"].copy()}
    row = flipped["probs"][7]
    top, second = np.argsort(row)[-1], np.argsort(row)[-2]
    row[top], row[second] = row[second], row[top]  # same values, other class on top
    checks = pc.compare_numerics({"torch": ref, "tensorflow": flipped}, prob_tol=1.0)
    assert checks[0]["passed"] and not checks[1]["passed"]
    assert checks[1]["figure"].startswith("199/200") and "tensorflow: 1 differ" in checks[1]["detail"]


def test_initial_weight_models_get_one_row_each_that_fails_on_any_of_its_numerics(rng):
    strong, tutorial = outputs(rng), outputs(rng)
    same = pc.compare_init_models({"torch": {"strong": strong, "tutorial": tutorial},
                                   "jax": {"strong": with_noise(strong, 1e-7, rng), "tutorial": tutorial}})
    assert [c["passed"] for c in same] == [True, True] and same[0]["name"].startswith("strong, shared initial")
    assert "max abs diff" in same[0]["figure"] and "max relative diff" in same[0]["figure"]
    off = {**strong, "grads": [strong["grads"][0], strong["grads"][1] * 1.01]}  # one gradient 1% off
    bad = pc.compare_init_models({"torch": {"strong": strong}, "jax": {"strong": off}})
    assert not bad[0]["passed"] and bad[0]["detail"].startswith("gradients"), bad
    gone = pc.compare_init_models({"torch": {"strong": strong}, "jax": {}})
    assert not gone[0]["passed"] and "missing under jax" in gone[0]["detail"]
    assert pc.compare_init_models({"torch": {}, "jax": {}}) == []  # results made before this level


def test_relative_diff_is_scaled_by_the_reference():
    assert pc.relative_diff([1.0, 2.0], [1.0, 2.0]) == 0
    assert pc.relative_diff([1e-9, 2.0], [0.0, 2.0]) == pytest.approx(5e-10)
    assert pc.relative_diff([1.1, 0.0], [1.0, 0.0]) == pytest.approx(0.1)


def test_portability_needs_every_pair_to_load_and_agree():
    c = np.arange(10) % 10
    good = {(a, b): c for a in ("torch", "jax") for b in ("torch", "jax")}
    checks, matrix = pc.compare_portability(good, {})
    assert checks[0]["passed"] and matrix[("torch", "jax")] == "10/10"
    wrong = {**good, ("jax", "torch"): np.roll(c, 1)}
    assert not pc.compare_portability(wrong, {})[0][0]["passed"]
    failed = {k: v for k, v in good.items() if k != ("torch", "jax")}
    checks, matrix = pc.compare_portability(failed, {("torch", "jax"): "ValueError: bad file"})
    assert not checks[0]["passed"] and "bad file" in checks[0]["detail"] and matrix[("torch", "jax")] == "load failed"


def test_training_spread_and_config_mismatch():
    cfg = {"model": "tutorial", "epochs": 10, "seed": 42, "backend": "torch", "output_dir": "a"}
    runs = {"torch": {"accuracy": 0.981, "config": cfg},
            "jax": {"accuracy": 0.977, "config": {**cfg, "backend": "jax", "output_dir": "b"}}}
    c = pc.compare_training(runs, 0.5)[0]
    assert c["passed"] and "spread 0.40 pp" in c["figure"] and "10 epoch(s), seed 42" in c["name"]
    assert not pc.compare_training(runs, 0.3)[0]["passed"]
    runs["torch"]["test_curve"], runs["jax"]["test_curve"] = [0.95, 0.981], [0.941, 0.977]
    assert pc.compare_training(runs, 0.5)[0]["per_epoch_spread_pp"] == [0.9, 0.4]
    runs["jax"]["config"] = {**cfg, "seed": 1}
    c = pc.compare_training(runs, 0.5)[0]
    assert not c["passed"] and "configs differ under jax" in c["detail"]


def test_training_floor_fails_backends_that_agree_but_learned_nothing():
    cfg = {"model": "tutorial", "epochs": 2, "seed": 42}
    broken = {b: {"accuracy": 0.1135, "config": {**cfg, "backend": b}} for b in ("torch", "jax", "tensorflow")}
    spread, floor = pc.compare_training(broken, 1.0, 0.94)
    assert spread["passed"]  # three equally broken backends: no spread at all
    assert not floor["passed"] and floor["level"] == 4 and floor["tolerance"] == "each >= 94.00%"
    assert floor["detail"] == "below the floor: torch 11.35%, jax 11.35%, tensorflow 11.35%"
    one_low = {**broken, "torch": {**broken["torch"], "accuracy": 0.95}, "jax": {**broken["jax"], "accuracy": 0.9399}}
    one_low["tensorflow"] = {**broken["tensorflow"], "accuracy": 0.94}  # exactly the floor passes
    floor = pc.compare_training(one_low, 2.0, 0.94)[1]
    assert not floor["passed"] and floor["detail"] == "below the floor: jax 93.99%", floor
    assert floor["figure"] == "lowest 93.99% (jax)"
    good = {b: {**r, "accuracy": 0.96} for b, r in broken.items()}
    assert all(c["passed"] for c in pc.compare_training(good, 1.0, 0.94))
    assert len(pc.compare_training(good, 1.0)) == 1  # no floor: the spread only
    md = pc.markdown(pc.compare_training(broken, 1.0, 0.94), list(broken), {}, {})
    assert "| 4 training | test accuracy floor, tutorial model, 2 epoch(s) | lowest 11.35% (torch) | " \
           "each >= 94.00% | **FAIL** |" in md


@pytest.mark.parametrize("floor", ["94", "1", "-0.1"])
def test_accuracy_floor_is_a_fraction(floor):
    from mnist_keras3.parity.report import parse_args

    with pytest.raises(UsageError, match="Expected --accuracy-floor as a fraction"):
        parse_args(["--accuracy-floor", floor])
    assert parse_args([]).accuracy_floor is None and parse_args([]).accuracy_tolerance is None  # auto
    assert parse_args(["--accuracy-floor", "auto", "--accuracy-tolerance", "0.7"]).accuracy_tolerance == 0.7


def test_accuracy_values_are_numbers_or_auto(capsys):
    from mnist_keras3.parity.report import parse_args

    with pytest.raises(SystemExit) as exit_:
        parse_args(["--accuracy-tolerance", "wide"])
    assert exit_.value.code == 2
    assert "argument --accuracy-tolerance: Expected a number or auto. Received: 'wide'" in capsys.readouterr().err


@pytest.mark.parametrize("run,expected", [
    ({"epochs": 2}, (1.0, 0.94)),
    ({"epochs": 3}, (1.0, 0.95)),
    ({"epochs": 4}, (1.0, 0.95)),
    ({"epochs": 10}, (1.0, 0.96)),
    ({"epochs": 4, "batch_size": 64}, (1.0, 0.94)),  # 938 steps an epoch: as long as 2 epochs of 32
    ({"epochs": 40, "max_steps_per_epoch": 100}, (1.0, 0.94)),
])
def test_training_floor_and_spread_follow_the_steps_the_run_trains(run, expected):
    config = {"epochs": 10, "batch_size": 32, "max_steps_per_epoch": 0, "validation_split": 0.0,
              "dataset": "mnist", **run}
    assert pc.training_tolerances(config) == expected
    assert pc.training_tolerances(config, 0.3) == (0.3, expected[1])  # what is given is kept
    assert pc.training_tolerances(config, None, 0.5) == (expected[0], 0.5)


@pytest.mark.parametrize("run,match", [
    ({"epochs": 1}, r"at least 3,750 steps .* epochs=1, batch_size=32, .* \(1,875 steps\)\. Train longer "
                    r"\(--epochs 2\)"),
    ({"epochs": 2, "batch_size": 64}, r"\(1,876 steps\)\. Train longer \(--epochs 4\)"),
    ({"epochs": 10, "max_steps_per_epoch": 300}, r"\(3,000 steps\)\. Train longer \(--epochs 13\)"),
    ({"epochs": 10, "dataset": "fashion_mnist"}, "for a run off MNIST"),
])
def test_a_run_too_short_to_judge_is_refused_with_the_reason(run, match):
    config = {"epochs": 10, "batch_size": 32, "max_steps_per_epoch": 0, "validation_split": 0.0,
              "dataset": "mnist", **run}
    with pytest.raises(UsageError, match=match):
        pc.training_tolerances(config)
    assert pc.training_tolerances(config, 10.0, 0.5) == (10.0, 0.5)  # both given: the user judges


def hide_and_run_parity(argv, hidden):
    """`python -m mnist_keras3.parity argv` in a process where the `hidden` frameworks look uninstalled."""
    code = ("import sys\nfrom mnist_keras3.parity import report\nfrom mnist_keras3.errors import run_cli\n"
            f"sys.meta_path[:] = [report._Hide(f, {list(hidden)!r}) if hasattr(f, 'find_spec') else f "
            "for f in sys.meta_path]\n"
            f"sys.exit(run_cli(report.main, {[str(a) for a in argv]!r}))\n")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "KERAS_BACKEND": BACKEND})


@pytest.mark.once  # the refusals come before any backend is imported
def test_parity_names_every_missing_backend_before_training_anything(tmp_path):
    out = tmp_path / "parity"
    done = hide_and_run_parity(["--epochs", 2, "--output-dir", out], backends.BACKENDS)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stdout == "" and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("error: Expected every compared backend installed here")
    assert "of which torch, jax, tensorflow are not installed" in done.stderr
    assert 'pip install "mnist-keras3[torch,jax,tensorflow]"' in done.stderr
    assert not out.exists()  # nothing trained, nothing written


@pytest.mark.once
def test_parity_refuses_a_run_too_short_before_training_anything(cli, tmp_path):
    out = tmp_path / "parity"
    done = cli("parity", "--epochs", 1, "--output-dir", out)
    assert done.returncode == 2 and done.stdout == "" and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("error: Expected a training run of at least 3,750 steps")
    assert not out.exists()


def test_markdown_lists_failures():
    checks = [pc.check(1, "a", True, "x", "exact"), pc.check(4, "b", False, "spread 2 pp", "<= 0.5 pp")]
    md = pc.markdown(checks, ["torch", "jax"], {("torch", "jax"): "5/5", ("jax", "torch"): "5/5"}, {})
    assert "| 4 training | b | spread 2 pp | <= 0.5 pp | **FAIL** |" in md
    assert "**FAIL**: 1 of 2 checks pass." in md and "| torch | - | 5/5 |" in md


# ids, not the values: a test id containing "torch" would read as the torch marker (conftest)
@pytest.mark.parametrize("text", ["torch", "torch,torch", "torch,mxnet", ""],
                         ids=["one", "duplicate", "unknown", "empty"])
def test_backends_flag_needs_two_distinct_known_names(text):
    from mnist_keras3.parity.report import parse_backends

    with pytest.raises(UsageError, match="Expected two or more distinct backends"):
        parse_backends(text)


# ---------------------------------------------------------------- keras side, session backend

def variant(keras, pool_layer):
    from keras import layers

    inputs = keras.Input(shape=(28, 28, 1), name="image")
    x = layers.Conv2D(4, 3, activation="relu", name="conv1")(inputs)
    x = pool_layer(2, name="pool1")(x)
    x = layers.Conv2D(4, 3, activation="relu", name="conv2")(x)
    x = layers.MaxPooling2D(2, name="pool2")(x)
    x = layers.Flatten(name="flatten")(x)
    return keras.Model(inputs, layers.Dense(10, activation="softmax", name="probs")(x), name="tutorial")


def test_a_model_with_a_different_layer_fails_structure(keras):
    from mnist_keras3 import models
    from mnist_keras3.parity import worker as parity_worker

    real = parity_worker.structure_of(models.build_model("tutorial"))
    same = parity_worker.structure_of(variant(keras, keras.layers.MaxPooling2D))
    other = parity_worker.structure_of(variant(keras, keras.layers.AveragePooling2D))
    assert pc.compare_structure({"torch": {"tutorial": real}, "jax": {"tutorial": same}})[0]["passed"]
    # Same parameter count and shapes: only the layer's type gives it away.
    assert other["parameters"] == real["parameters"]
    failed = pc.compare_structure({"torch": {"tutorial": real}, "jax": {"tutorial": other}})[0]
    assert not failed["passed"] and "AveragePooling2D" in failed["detail"]


def test_loss_and_grads_match_the_closed_form(keras, small_batch):
    """For softmax + cross-entropy, d loss / d logits = (p - y) / N: the last layer's gradients
    follow in closed form, which checks the backend's autodiff code itself."""
    from mnist_keras3 import models

    keras.utils.set_random_seed(0)
    model = models.build_model("tutorial")
    x, y = small_batch  # (64, 28, 28, 1), (64, 10)
    loss, grads = backends.backend_module(BACKEND).loss_and_grads(model, x, y)
    assert [g.shape for g in grads] == [tuple(w.shape) for w in model.trainable_weights]
    probs = keras.ops.convert_to_numpy(model(x)).astype(np.float64)
    features = keras.ops.convert_to_numpy(keras.Model(model.input, model.get_layer("flatten").output)(x))
    delta = (probs - y) / len(x)  # (64, 10)
    names = [w.path for w in model.trainable_weights]
    assert loss == pytest.approx(-np.mean(np.log(probs[y.astype(bool)])), rel=1e-5)
    np.testing.assert_allclose(grads[names.index("probs/bias")], delta.sum(0), atol=1e-6)
    np.testing.assert_allclose(grads[names.index("probs/kernel")], features.T @ delta, atol=1e-5)
    assert all(np.abs(g).max() > 0 for g in grads)  # the conv layers get gradients too


def perturbed_copy(keras, weights, target, delta):
    from mnist_keras3 import models

    model = models.build_model("tutorial")
    model.load_weights(weights)
    kernel = model.get_layer("conv1").kernel
    values = keras.ops.convert_to_numpy(kernel).copy()
    values[1, 1, 0, 0] += delta  # one weight of 1,198
    kernel.assign(values)
    model.save_weights(target)
    return target


def test_a_perturbed_weight_file_fails_numerics(keras, small_batch, tmp_path):
    from mnist_keras3 import models
    from mnist_keras3.parity import worker as parity_worker

    keras.utils.set_random_seed(1)
    weights = tmp_path / "shared.weights.h5"
    models.build_model("tutorial").save_weights(weights)
    x, y = small_batch
    base = parity_worker.numerics("tutorial", weights, x, y, 32)
    again = parity_worker.numerics("tutorial", weights, x, y, 32)
    tiny = parity_worker.numerics("tutorial", perturbed_copy(keras, weights, tmp_path / "a.weights.h5", 1e-7), x, y, 32)
    big = parity_worker.numerics("tutorial", perturbed_copy(keras, weights, tmp_path / "b.weights.h5", 0.05), x, y, 32)
    assert all(c["passed"] for c in pc.compare_numerics({"torch": base, "jax": again}))
    assert all(c["passed"] for c in pc.compare_numerics({"torch": base, "jax": tiny}))
    failed = pc.compare_numerics({"torch": base, "jax": big})
    assert not failed[0]["passed"] and not failed[3]["passed"], failed


# ---------------------------------------------------------------- the CLI

@pytest.mark.e2e
@pytest.mark.once(reason="the report's detection (parity/compare.py) is backend-independent; each env's "
                         "parity worker and the parity env run the real three-backend report")
def test_report_flags_results_made_from_a_perturbed_weight_file(cli, keras, mnist_dir, tmp_path):
    """Real worker and check subprocesses under this backend, then the report on their files.
    The second backend's folder holds a check that read a perturbed copy of the shared weights:
    the report must fail the numerics level and exit 1 (and pass it for an unperturbed copy)."""
    out = tmp_path / "run"
    worker = cli("parity", "worker", "--backend", BACKEND, "--epochs", 1, "--max-steps-per-epoch", 30,
                 "--output-dir", out, "--data-dir", mnist_dir)
    assert worker.returncode == 0, worker.stderr[-3000:]
    weights = out / BACKEND / "model.weights.h5"
    results = {}
    for name, shared in (("original", weights),
                         ("perturbed", perturbed_copy(keras, weights, tmp_path / "p.weights.h5", 0.05))):
        check = cli("parity", "check", "--backend", BACKEND, "--sources", BACKEND, "--weights", shared,
                    "--images", 200, "--grad-batch", 64, "--output-dir", out, "--data-dir", mnist_dir,
                    "--init-dir", out / BACKEND / "init")
        assert check.returncode == 0, check.stderr[-3000:]
        results[name] = shutil.copytree(out / BACKEND, tmp_path / name, ignore=shutil.ignore_patterns("train"))

    other = next(b for b in backends.BACKENDS if b != BACKEND)  # only a label for the second folder

    def report(second):
        folder = tmp_path / f"report-{second}"
        shutil.copytree(results["original"], folder / BACKEND)
        shutil.copytree(results[second], folder / other)
        # 30 steps: too short for the default floor and spread; the subject here is the numerics.
        done = cli("parity", "--backends", f"{BACKEND},{other}", "--compare-only", "--output-dir", folder,
                   "--accuracy-tolerance", 100, "--accuracy-floor", 0)
        return done, json.loads((folder / "parity.json").read_text()), (folder / "parity.md").read_text()

    _, same, _ = report("original")
    assert all(c["passed"] for c in same["checks"] if c["area"] in ("structure", "numerics")), same["checks"]
    assert same["checks"][1]["figure"].startswith("max abs diff 0.00e+00")
    init_rows = [c["name"].split(",")[0] for c in same["checks"] if "initial weights" in c["name"]]
    from mnist_keras3 import models

    assert init_rows == sorted(models.REGISTRY)  # every registered model

    done, bad, md = report("perturbed")
    assert done.returncode == 1 and "parity checks failed" in done.stderr
    numerics = [c for c in bad["checks"] if c["area"] == "numerics"]
    assert numerics[0]["name"] == "the same weight file in every backend" and not numerics[0]["passed"]
    assert numerics[1]["name"].startswith("probabilities") and not numerics[1]["passed"]
    assert bad["checks"][0]["passed"]  # the structure is still the same
    assert "| 2 numerics | probabilities on 200 test images" in md and "**FAIL**" in md


def test_compare_only_without_results_is_a_usage_error(cli, tmp_path):
    done = cli("parity", "--backends", "torch,jax", "--compare-only", "--output-dir", tmp_path)
    assert done.returncode == 2 and "Missing parity results" in done.stderr
    assert done.stderr.count("\n") == 1  # one line, no traceback


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.cross
@pytest.mark.skipif(len(backends.installed_backends()) < 3,
                    reason="needs torch, jax and tensorflow installed together (tox's parity env runs the report)")
@pytest.mark.skipif(BACKEND != backends.installed_backends()[0],
                    reason="the session backend plays no part (subprocesses): runs once, in the torch session")
def test_real_report_across_all_three_backends(cli, mnist_dir, tmp_path):
    # 1 epoch of 200 steps: far from converged, so the accuracy spread is wide; the tolerance
    # here is for that, and the levels that must be exact (1-3) are checked exactly.
    # Two models' initial weights, not all: tox's parity env compares every registered model, and
    # here the subject is the report run end to end in one process tree, kept short for CI.
    done = cli("parity", "--backends", "torch,jax,tensorflow", "--epochs", 1, "--max-steps-per-epoch", 200,
               "--images", 1000, "--accuracy-tolerance", 10, "--accuracy-floor", 0.6,
               "--init-models", "tutorial,strong",
               "--output-dir", tmp_path, "--data-dir", mnist_dir,
               timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    summary = json.loads((tmp_path / "parity.json").read_text())
    init_rows = sum("shared initial weights" in c["name"] for c in summary["checks"])  # one per --init-models
    assert init_rows == 2, summary["checks"]
    assert summary["passed"] and [c["level"] for c in summary["checks"]] == [1] + [2] * (4 + init_rows) + [3, 4, 4]
    assert any(c["name"].startswith("strong, shared initial weights") for c in summary["checks"])
    assert all(i["accuracy"] > 0.6 for i in summary["backend_info"].values()), summary["backend_info"]
    assert summary["tolerances"]["accuracy_floor"] == 0.6
    assert "| 3 portability |" in (tmp_path / "parity.md").read_text()


def test_a_hidden_package_looks_uninstalled_to_import_and_find_spec():
    # `parity check` hides the other backends this way: a model.keras that needs another
    # framework must fail to load there, while Keras's `"tensorflow" in sys.modules` stays False.
    import subprocess
    import sys

    code = ("import importlib.util, sys\n"
            "from mnist_keras3.parity.report import _Hide\n"
            "assert 'xmlrpc' not in sys.modules and importlib.util.find_spec('xmlrpc') is not None\n"
            "sys.meta_path[:] = [_Hide(f, ['xmlrpc']) for f in sys.meta_path]\n"
            "assert importlib.util.find_spec('xmlrpc') is None and 'xmlrpc' not in sys.modules\n"
            "try:\n    import xmlrpc.client\nexcept ModuleNotFoundError:\n    print('hidden')\n"
            "import json; print('others load')\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["hidden", "others", "load"], done.stderr


def test_seed_sweep_fails_a_backend_that_stalls_at_one_seed():
    """fast.toml once trained under tensorflow and jax at seed 1 and stalled far below 99% under
    torch; with --seeds every backend's every seed must reach the floor."""
    ok = {"accuracy": 0.992}
    sweeps = {"torch": {"1": {"accuracy": 0.8988}, "2": ok}, "jax": {"1": ok, "2": ok},
              "tensorflow": {"1": ok, "2": ok}}
    (c,) = pc.compare_seeds(sweeps, 0.99)
    assert not c["passed"] and c["detail"] == "below: torch seed 1 89.88%", c
    assert c["name"] == "test accuracy of every seed (1, 2) under every backend"
    sweeps["torch"]["1"] = ok
    assert pc.compare_seeds(sweeps, 0.99)[0]["passed"]
    assert pc.compare_seeds({"torch": {}, "jax": {}}, 0.99) == []  # no --seeds: no check


def test_parity_training_flags_pass_a_recipe_and_each_sweep_seed():
    from mnist_keras3.parity.report import parse_args, training_args

    args = parse_args(["--config", "configs/fast.toml", "--seeds", "1,2,3"])
    assert training_args(args) == ["--seed", "42", "--config", "configs/fast.toml"]
    assert training_args(args, 3)[:2] == ["--seed", "3"]
    assert training_args(parse_args([])) == ["--seed", "42"]  # train's defaults: the tutorial recipe
    with pytest.raises(UsageError, match="Expected --seeds as distinct integers"):
        parse_args(["--seeds", "1,1"])


def test_init_models_must_be_models_the_reference_worker_recorded():
    from mnist_keras3.parity.report import parse_init_models

    recorded = {"strong": {}, "tutorial": {}}
    assert parse_init_models("tutorial, strong", recorded) == ["tutorial", "strong"]
    assert parse_init_models("", recorded) == []  # every model
    with pytest.raises(UsageError, match=r"Expected --init-models among strong, tutorial\. "
                                         r"Received: init_models='tutorial,nope'"):
        parse_init_models("tutorial,nope", recorded)
