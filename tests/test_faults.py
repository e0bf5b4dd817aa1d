"""Faults and interruptions in training: clear errors, nothing lost, resume replays the run."""

import errno
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from conftest import BACKEND, replay_tolerance

from mnist_keras3 import runs
from mnist_keras3.errors import UsageError


class FakeModel:
    """Writes part of a file, then fails the way a full disk does."""

    def save(self, path, overwrite=True):
        with open(path, "wb") as fh:
            fh.write(b"PK\x03\x04 half a zip")
        raise OSError(errno.ENOSPC, "No space left on device")


def test_failed_save_leaves_the_old_file_and_no_temp(tmp_path):
    target = tmp_path / "model.keras"
    target.write_bytes(b"the good old model")
    with pytest.raises(OSError, match="No space left"):
        runs.save_model(FakeModel(), target)
    assert target.read_bytes() == b"the good old model"
    assert [p.name for p in tmp_path.iterdir()] == ["model.keras"]


def test_failed_json_write_leaves_no_file(tmp_path):
    with pytest.raises(TypeError):
        runs.write_json(tmp_path / "m.json", {"x": object()})
    assert list(tmp_path.iterdir()) == []


def test_unwritable_output_dir_is_a_usage_error(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(UsageError, match="Cannot create the output folder .*Pass a writable --output-dir"):
        runs.new_run_dir(blocker / "runs", "jax", "tutorial")


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write into a read-only folder")
def test_read_only_output_dir(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o555)
    with pytest.raises(UsageError, match="not writable"):
        runs.new_run_dir(ro, "jax", "tutorial")


def test_runs_started_together_get_separate_folders(tmp_path):
    made = []
    threads = [threading.Thread(target=lambda: made.append(runs.new_run_dir(tmp_path, "torch", "tutorial", now=0)))
               for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(made)) == 8 and all(p.is_dir() for p in made)


def test_cli_unwritable_output_fails_before_training(cli, tmp_path, mnist_dir):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    out = cli("train", "--output-dir", blocker / "runs", "--data-dir", mnist_dir, "--dry-run")
    assert out.returncode == 2, out.stderr[-2000:]
    assert "writable --output-dir" in out.stderr and "Traceback" not in out.stderr
    assert "/step" not in out.stdout  # no training step ran


@pytest.mark.e2e
def test_nan_loss_with_no_complete_epoch(cli, tmp_path, mnist_dir):
    # 1e38 (near float32's largest): the first update makes the weights overflow to inf, so the loss
    # is NaN under every backend and loop (1e30 could leave a dead network with a huge finite loss).
    out = cli("train", "--optimizer", "sgd", "--lr", "1e38", "--epochs", 2, "--max-steps-per-epoch", 5,
              "--output-dir", tmp_path, "--data-dir", mnist_dir)
    assert out.returncode == 1, out.stderr[-2000:]
    last = out.stderr.strip().splitlines()[-1]
    assert "loss became NaN/inf in epoch 1" in last and "no checkpoint" in last and "Traceback" not in out.stderr
    run = next(tmp_path.iterdir())
    assert not (run / "model.keras").exists() and not (run / "checkpoint.keras").exists()


@pytest.mark.e2e
def test_nan_loss_stops_at_once_and_keeps_the_last_good_checkpoint(cli, tmp_path, mnist_dir, keras):
    # One good epoch, then the checkpoint's learning rate is made NaN: epoch 2's first step makes
    # every weight NaN, whatever the batch order (an absurd finite rate can leave a dead network
    # with a huge but finite loss, depending on the batches).
    out = cli("train", "--optimizer", "sgd", "--lr", "0.05", "--epochs", 1, "--max-steps-per-epoch", 20,
              "--output-dir", tmp_path, "--data-dir", mnist_dir)
    assert out.returncode == 0, out.stderr[-2000:]
    run = next(tmp_path.iterdir())
    model = keras.saving.load_model(run / "checkpoint.keras")
    model.optimizer.learning_rate.assign(float("nan"))
    runs.save_model(model, run / "checkpoint.keras")
    good = (run / "checkpoint.keras").read_bytes()
    (run / "model.keras").unlink()

    out = cli("train", "--resume", run, "--epochs", 3, "--data-dir", mnist_dir)
    assert out.returncode == 1, out.stdout[-2000:] + out.stderr[-2000:]
    err = out.stderr.strip().splitlines()[-1]
    assert "loss became NaN/inf in epoch 2" in err and "checkpoint.keras (epoch 1)" in err and "--lr" in err
    assert (run / "checkpoint.keras").read_bytes() == good
    assert json.loads((run / "checkpoint.json").read_text())["epoch"] == 1
    assert not (run / "model.keras").exists()
    assert json.loads((run / "metrics.json").read_text())["status"] == "diverged"


def test_resume_refuses_a_changed_recipe(cli, tmp_path):
    (tmp_path / "config.toml").write_text("epochs = 2\n")
    out = cli("train", "--resume", tmp_path, "--lr", "0.1")
    assert out.returncode == 2 and "--lr cannot change" in out.stderr


def _train_args(out_dir, mnist_dir, epochs):
    # Whole epochs of a small training set (the first 6,000 images: 94 steps of 64), not a step cap:
    # Keras continues one shuffled pass across capped epochs, which a resumed run cannot replay.
    return ["--epochs", epochs, "--validation-split", 0.9, "--batch-size", 64,
            "--output-dir", out_dir, "--data-dir", mnist_dir]


@pytest.mark.e2e
@pytest.mark.slow
def test_sigterm_mid_run_then_resume_matches_an_uninterrupted_run(cli, tmp_path, mnist_dir, device):
    # 4 epochs: the signal lands after epoch 1's checkpoint, with three epochs (seconds) to go.
    ref = cli("train", *_train_args(tmp_path / "ref", mnist_dir, 4))
    assert ref.returncode == 0, ref.stderr[-2000:]
    ref_metrics = json.loads(next((tmp_path / "ref").iterdir()).joinpath("metrics.json").read_text())

    out_dir = tmp_path / "int"
    env = {**os.environ, "KERAS_BACKEND": BACKEND, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "mnist_keras3.train", *map(str, _train_args(out_dir, mnist_dir, 4))],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 300
    state = None
    while time.time() < deadline and proc.poll() is None:
        found = list(out_dir.glob("*/checkpoint.json"))
        if found:  # epoch 1 is saved: three epochs remain, seconds of work for the signal to land in
            state = found[0]
            break
        time.sleep(0.05)
    assert state is not None, "no checkpoint appeared"
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    run = state.parent
    assert proc.returncode == 130, stderr[-2000:]
    last = stderr.strip().splitlines()[-1]
    assert "stopped by SIGTERM; epoch" in last and f"--resume {run}" in last
    assert not (run / "model.keras").exists()

    out = cli("train", "--resume", run, "--data-dir", mnist_dir)
    assert out.returncode == 0, out.stderr[-2000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert len(metrics["history"]["loss"]) == 4
    if BACKEND != "tensorflow":
        # The checkpoint carries the optimizer state and each epoch reseeds from (seed, epoch):
        # the resumed run replays the uninterrupted one, the same figures, not merely close ones.
        rel, acc = replay_tolerance(device)
        assert metrics["history"]["val_loss"] == pytest.approx(ref_metrics["history"]["val_loss"], rel=rel)
        assert metrics["test"]["accuracy"] == pytest.approx(ref_metrics["test"]["accuracy"], abs=acc)
        assert metrics["test"]["loss"] == pytest.approx(ref_metrics["test"]["loss"], rel=rel)
    else:
        # tf.data draws each epoch's shuffle from a dataset made when fit starts, so the epochs
        # after a resume see other orders: the claim is CI's parity tolerance for short runs.
        assert abs(metrics["test"]["accuracy"] - ref_metrics["test"]["accuracy"]) <= 0.01
        assert metrics["test"]["loss"] == pytest.approx(ref_metrics["test"]["loss"], rel=0.1)


def test_resume_of_a_folder_that_is_not_a_run(cli, tmp_path):
    out = cli("train", "--resume", tmp_path)
    assert out.returncode == 2 and "is not a run folder" in out.stderr


def test_resume_from_a_damaged_checkpoint_is_one_clear_line(cli, tmp_path):
    (tmp_path / "config.toml").write_text("epochs = 3\n")
    (tmp_path / "checkpoint.json").write_text('{"epoch": 1, "history": {}}')
    (tmp_path / "checkpoint.keras").write_bytes(b"PK\x03\x04 truncated by a full disk")
    out = cli("train", "--resume", tmp_path, "--data-dir", tmp_path / "nowhere")
    last = out.stderr.strip().splitlines()[-1]  # after any framework start-up logging
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert last.startswith("error: ") and "checkpoint.keras is corrupt or not a Keras model file" in last, last


def _start_training(out_dir, mnist_dir):
    """`train` in a subprocess on a short capped run (20 epochs of 20 steps): (process, its checkpoint.json
    once epoch 1 is saved), leaving many epochs for a signal to land in."""
    env = {**os.environ, "KERAS_BACKEND": BACKEND, "PYTHONUNBUFFERED": "1"}
    args = ["--epochs", 20, "--max-steps-per-epoch", 20, "--batch-size", 64, "--validation-split", 0.1,
            "--output-dir", out_dir, "--data-dir", mnist_dir]
    proc = subprocess.Popen([sys.executable, "-m", "mnist_keras3.train", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        found = list(out_dir.glob("*/checkpoint.json"))
        if found:
            return proc, found[0]
        time.sleep(0.05)
    proc.kill()
    stdout, stderr = proc.communicate()
    pytest.fail(f"no checkpoint appeared (exit {proc.returncode}):\n{stderr[-2000:]}")


def _finish(proc, timeout=120):
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise


@pytest.mark.e2e
@pytest.mark.once(reason="signals are handled in callbacks.StopOnSignal, whatever the backend; the SIGTERM "
                         "test above runs under every backend")
def test_ctrl_c_mid_run_says_how_to_resume_and_the_resume_works(cli, tmp_path, mnist_dir):
    proc, state = _start_training(tmp_path, mnist_dir)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = _finish(proc)
    run = state.parent
    assert proc.returncode == 130, stderr[-2000:]
    saved = json.loads(state.read_text())["epoch"]
    assert 1 <= saved < 20
    last = stderr.strip().splitlines()[-1]
    assert last == (f"error: training stopped by SIGINT; epoch {saved} is saved. Resume with: "
                    f"python -m mnist_keras3.train --resume {run}"), last
    assert "Traceback" not in stderr and not (run / "model.keras").exists()

    # The command it names works (one more epoch, to keep the test short).
    out = cli("train", "--resume", run, "--epochs", saved + 1, "--data-dir", mnist_dir)
    assert out.returncode == 0, out.stderr[-2000:]
    assert f"resuming {run} from epoch {saved}" in out.stdout
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "complete" and len(metrics["history"]["loss"]) == saved + 1
    assert (run / "model.keras").is_file()


@pytest.mark.e2e
@pytest.mark.once(reason="signals are handled in callbacks.StopOnSignal, whatever the backend; the SIGTERM "
                         "test above runs under every backend")
def test_a_second_ctrl_c_stops_at_once_and_still_says_how_to_resume(tmp_path, mnist_dir):
    """callbacks.StopOnSignal: the first Ctrl-C asks fit to stop after the batch, a second one raises
    KeyboardInterrupt at once; training.run still names the last saved epoch and the resume command,
    and nothing of the cut epoch is saved."""
    proc, state = _start_training(tmp_path, mnist_dir)
    before = json.loads(state.read_text())["epoch"]
    proc.send_signal(signal.SIGINT)
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    sent = time.time()
    stdout, stderr = _finish(proc, timeout=60)
    assert time.time() - sent < 30, "the second Ctrl-C did not stop training at once"
    run = state.parent
    assert proc.returncode == 130, stderr[-2000:]
    saved = json.loads(state.read_text())["epoch"]
    assert saved in (before, before + 1)  # an epoch that ended between the read and the signal
    last = stderr.strip().splitlines()[-1]
    assert last == (f"error: training stopped by SIGINT; epoch {saved} is saved. Resume with: "
                    f"python -m mnist_keras3.train --resume {run}"), last
    assert "Traceback" not in stderr and "error: interrupted" not in stderr
    assert not (run / "model.keras").exists() and not (run / "metrics.json").exists()
    assert not list(run.glob(".*tmp*")), "a half-written file was left behind"


def test_resume_of_a_run_folder_without_a_checkpoint_is_one_line(cli, tmp_path):
    (tmp_path / "config.toml").write_text("epochs = 2\n")
    out = cli("train", "--resume", tmp_path, "--data-dir", tmp_path / "nowhere")
    assert out.returncode == 2, out.stderr[-2000:]
    assert "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1] == (f"error: {tmp_path} has no checkpoint to resume from "
                                                   "(no complete epoch was saved).")


@pytest.mark.e2e
def test_resume_of_a_finished_run_says_so_and_changes_nothing(cli, trained_run, mnist_dir):
    before = {p.name: p.read_bytes() for p in trained_run.iterdir() if p.suffix in (".keras", ".json", ".toml")}
    out = cli("train", "--resume", trained_run, "--data-dir", mnist_dir)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1] == (f"error: {trained_run} already finished 1 of 1 epochs; "
                                                   "pass a larger --epochs to train on.")
    assert "/step" not in out.stdout and "data mnist" not in out.stdout  # failed before the data was read
    assert {p.name: p.read_bytes() for p in trained_run.iterdir() if p.suffix in (".keras", ".json", ".toml")} == before
