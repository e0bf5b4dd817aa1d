"""Several hosts, simulated on one: docs/distributed.md's two-hosts commands, read from the docs and run
as written (tests/multihost.py), two processes on 127.0.0.1 standing for two hosts: torchrun's c10d
rendezvous, TF_CONFIG's two workers, KERAS_DISTRIBUTION_* for jax. Each learns as one device does after
the same 100 steps and writes one run folder. A host killed mid-epoch stops the other with one line,
the run folder says "failed" and keeps its last checkpoint, and --resume continues it over the same
number of hosts and refuses another. Every process is bounded in time and killed on the way out."""

import json
import time

import multihost
import pytest
from conftest import CPU_ONLY, run_module
from test_distribute import one_device_accuracy, only_run

TIMEOUT = 20  # MNIST_KERAS3_DIST_TIMEOUT here: a lost host must stop the others within it

BACKENDS = [pytest.param("torch", "native", 0.005, marks=pytest.mark.torch),
            pytest.param("tensorflow", "fit", 0.005, marks=pytest.mark.tensorflow),
            pytest.param("jax", "fit", 0.05, marks=pytest.mark.jax)]


def env(backend, mnist_dir):
    # Two CPU processes stand for two hosts, on a GPU machine too (conftest.CPU_ONLY).
    return {"KERAS_BACKEND": backend, "MNIST_KERAS3_DATA": str(mnist_dir), "MNIST_KERAS3_DIST_TIMEOUT": str(TIMEOUT),
            **CPU_ONLY}


@pytest.mark.e2e
@pytest.mark.parametrize("backend,loop,tolerance", BACKENDS)
def test_the_documented_two_host_command_trains_one_run(backend, loop, tolerance, mnist_dir, tmp_path, keras):
    acc = one_device_accuracy(mnist_dir, tmp_path, "--loop", loop)
    with multihost.Hosts(multihost.runnable(multihost.documented(backend)), tmp_path,
                         env(backend, mnist_dir)) as hosts:
        codes, outs = hosts.wait(timeout=240)
    assert codes == [0, 0], outs[0][-3000:] + outs[1][-3000:]
    assert sum(out.count("test accuracy ") for out in outs) == 1  # rank 0 alone reports
    metrics = json.loads((only_run(tmp_path / "runs") / "metrics.json").read_text())
    dist = metrics["distribution"]
    assert metrics["status"] == "complete"
    assert dist["world_size"] == 2 and dist["processes"] == 2 and dist["per_device_batch"] == 32, dist
    # 100 steps of 64 reach 58-69% (chance is 10%). torch and tensorflow take one device's global batches
    # (the same result); two jax processes each shuffle their own shard (other batches, the same recipe).
    two = metrics["test"]["accuracy"]
    assert acc > 0.5 and abs(two - acc) <= tolerance, (two, acc)


def with_flags(argv, **flags):
    """argv with each --flag's value replaced."""
    argv = list(argv)
    for name, value in flags.items():
        argv[argv.index("--" + name.replace("_", "-")) + 1] = str(value)
    return argv


@pytest.mark.e2e
@pytest.mark.parametrize("backend,resumes", [pytest.param("torch", True, marks=pytest.mark.torch),
                                             pytest.param("tensorflow", True, marks=pytest.mark.tensorflow),
                                             pytest.param("jax", False, marks=pytest.mark.jax)])
def test_a_lost_host_fails_the_run_which_resumes_on_as_many(backend, resumes, mnist_dir, tmp_path, keras):
    commands = [(own, with_flags(argv, epochs=100, max_steps_per_epoch=20))
                for own, argv in multihost.runnable(multihost.documented(backend))]
    with multihost.Hosts(commands, tmp_path, env(backend, mnist_dir)) as hosts:
        deadline = time.monotonic() + 180
        while not list(tmp_path.glob("runs/*/checkpoint.json")) and time.monotonic() < deadline:
            assert all(p.poll() is None for p in hosts.procs), "a host ended before its first epoch"
            time.sleep(0.2)
        time.sleep(0.5)  # into the next epoch
        if backend == "torch":  # rank 1, whichever host's torchrun started it
            (victim,) = [pid for p in hosts.procs for pid in multihost.descendants(p.pid)
                         if multihost.rank_of(pid) == 1]
        else:  # TF_CONFIG's worker 1
            victim = hosts.procs[1].pid
        multihost.kill(victim)
        killed = time.monotonic()
        codes, outs = hosts.wait(timeout=TIMEOUT + 60)
        stopped = time.monotonic() - killed
    assert all(codes), codes
    # torch's and tensorflow's collectives fail as the peer's connection closes; jax's too, but its
    # process then waits out the heartbeat timeout (MNIST_KERAS3_DIST_TIMEOUT) before it can exit.
    assert stopped < TIMEOUT + 10, stopped
    run = only_run(tmp_path / "runs")
    saved = json.loads((run / "checkpoint.json").read_text())["epoch"]
    lines = [line for out in outs for line in out.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, "\n".join(out[-3000:] for out in outs)
    assert lines[0].startswith("error: lost a process of the 2-process data-parallel run (") and lines[0].endswith(
        f"); epoch {saved} is saved. Once every host is up, start all 2 processes again with --resume "
        f"runs/{run.name}"), lines  # the folder as --output-dir named it
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "failed" and "lost a process of the 2-process data-parallel run" in metrics["error"]
    assert metrics["epochs_completed"] == saved >= 1
    assert keras.saving.load_model(run / "checkpoint.keras").count_params() == 1198  # intact
    if not resumes:  # the same for every backend (training.resume_state): tested under two of them
        return

    # The same two hosts go on from the saved epoch (the launcher of the documented commands, then --resume).
    again = [(own, [*multihost.train_argv(argv), "--resume", str(run), "--epochs", str(saved + 1)])
             for own, argv in multihost.runnable(multihost.documented(backend))]
    with multihost.Hosts(again, tmp_path, env(backend, mnist_dir)) as hosts:
        codes, outs = hosts.wait(timeout=240)
    assert codes == [0, 0], outs[0][-3000:] + outs[1][-3000:]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "complete" and len(metrics["history"]["loss"]) == saved + 1
    assert only_run(tmp_path / "runs") == run

    # One host alone is told what the run needs.
    out = run_module("train", "--resume", run, "--epochs", saved + 2, env=env(backend, mnist_dir), timeout=120)
    assert out.returncode == 2, out.stderr[-3000:]
    assert out.stderr.strip().splitlines()[-1] == (
        f"error: Expected --resume of {run} over the 2 process(es) and 2 device(s) it was trained on (the same "
        "hosts and --devices). Received: 1 process(es), 1 device(s)")
