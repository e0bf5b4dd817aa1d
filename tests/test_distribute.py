"""--distribute data-parallel on each backend's own engine, on 2 CPU devices or processes, against a
one-device run of the same batches: torch under torchrun (DDP, gloo), tensorflow's MirroredStrategy
over 2 logical CPU devices, jax's DataParallel over 2 host devices (several processes, standing for
several hosts, under each backend: tests/test_multihost.py). Each run is 100 steps of batch 64 (about
70% test accuracy, chance is 10%), every subprocess bounded in time; and the bad inputs, each one line
and exit 2."""

import json
import os
import socket
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import CPU_ONLY, run_module

TWO_DEVICES = {**CPU_ONLY, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}


STEPS = ["--epochs", 1, "--max-steps-per-epoch", 100, "--batch-size", 64]


def only_run(out_dir):
    runs = [p for p in out_dir.iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_ONE_DEVICE = {}


def one_device_accuracy(mnist_dir, tmp_path, *flags):
    """Test accuracy of the plain run of STEPS (flags: e.g. the loop), once per session and flags."""
    if flags not in _ONE_DEVICE:
        out = run_module("train", *STEPS, *flags, "--data-dir", mnist_dir, "--output-dir", tmp_path / "one",
                         timeout=300, env=CPU_ONLY)
        assert out.returncode == 0, out.stderr[-3000:]
        _ONE_DEVICE[flags] = json.loads((only_run(tmp_path / "one") / "metrics.json").read_text())["test"]["accuracy"]
    return _ONE_DEVICE[flags]


def check_run(out_dir, engine, world=2):
    """The one run folder rank 0 wrote: its metrics.json's distribution, and model.keras loads."""
    import keras

    run = only_run(out_dir)
    metrics = json.loads((run / "metrics.json").read_text())
    dist = metrics["distribution"]
    assert dist["engine"].startswith(engine) and dist["world_size"] == world == dist["device_count"], dist
    assert dist["per_device_batch"] == 64 // world and dist["dropped_examples"] == {"train": 0, "val": 0, "test": 0}
    assert keras.saving.load_model(run / "model.keras").count_params() == 1198
    assert not list(run.glob(".*tmp*")), "temporary files left behind"
    return metrics["test"]["accuracy"]


@pytest.mark.jax
def test_keras_splits_each_batch_over_both_devices(tmp_path):
    # What DataParallel does to a batch, seen from inside a 2-device jax process.
    script = textwrap.dedent("""
        import json, numpy as np
        from mnist_keras3 import backends, distribute
        from mnist_keras3.config import TrainConfig
        backend = backends.activate("jax")
        keras = backend.keras
        cfg = TrainConfig(backend="jax", distribute="data-parallel", batch_size=64).validate()
        info = distribute.setup(cfg, backend, ("fit", None))[1].info
        dist = keras.distribution.distribution()
        batch = dist.get_data_layout((64, 28, 28, 1))
        x = keras.distribution.distribute_tensor(np.zeros((64, 28, 28, 1), "float32"), batch)
        kernel = keras.layers.Dense(3)
        kernel.build((None, 5))
        print(json.dumps({"info": {k: info[k] for k in ("type", "device_count", "mesh_shape", "batch_axis")},
                          "shards": sorted(s.data.shape[0] for s in x.addressable_shards),
                          "shard_devices": len({s.device for s in x.addressable_shards}),
                          "weight_devices": len(kernel.kernel.value.sharding.device_set)}))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                         env={**__import__("os").environ, "KERAS_BACKEND": "jax", **TWO_DEVICES})
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["info"] == {"type": "DataParallel", "device_count": 2, "mesh_shape": [2], "batch_axis": "batch"}
    assert got["shards"] == [32, 32] and got["shard_devices"] == 2  # half a batch on each device
    assert got["weight_devices"] == 2  # weights replicated on both


@pytest.mark.jax
@pytest.mark.e2e
def test_data_parallel_run_matches_one_device(cli, mnist_dir, tmp_path):
    common = ["--model", "tutorial-bn", "--epochs", 1, "--max-steps-per-epoch", 200, "--batch-size", 64,
              "--data-dir", mnist_dir]
    acc = {}
    for mode in ("none", "data-parallel"):
        out = cli("train", *common, "--distribute", mode, "--output-dir", tmp_path / mode, env=TWO_DEVICES)
        assert out.returncode == 0, out.stderr[-3000:]
        metrics = json.loads((only_run(tmp_path / mode) / "metrics.json").read_text())
        acc[mode] = metrics["test"]["accuracy"]
        if mode == "data-parallel":
            assert "DataParallel over 2 devices" in out.stdout
            dist = metrics["distribution"]
            assert dist["type"] == "DataParallel" and dist["device_count"] == 2 and len(dist["devices"]) == 2
        else:
            assert metrics["distribution"] == {"type": "none", "device_count": 1}
    assert acc["none"] > 0.6, acc  # 200 steps of batch 64 reach ~77% with this 2k-parameter CNN; chance is 10%
    assert abs(acc["data-parallel"] - acc["none"]) <= 0.005, acc  # same seed, same batches


@pytest.mark.jax
def test_odd_sized_splits_are_trimmed_to_the_devices(cli, mnist, tmp_path):
    import PIL.Image

    (_, _), (x, y) = mnist
    for i in range(51):  # 51 images: a seeded 10 for test, 41 (odd) for training
        (tmp_path / "data" / str(y[i])).mkdir(parents=True, exist_ok=True)
        PIL.Image.fromarray(x[i]).save(tmp_path / "data" / str(y[i]) / f"{i}.png")
    out = cli("train", "--dataset", f"folder:{tmp_path / 'data'}", "--distribute", "data-parallel",
              "--epochs", 1, "--batch-size", 8, "--eval-batch-size", 2, "--output-dir", tmp_path / "runs",
              env=TWO_DEVICES)
    assert out.returncode == 0, out.stderr[-3000:]  # an odd last batch would not shard over 2
    metrics = json.loads((only_run(tmp_path / "runs") / "metrics.json").read_text())
    assert metrics["dataset"]["train_examples"] == 41
    assert metrics["distribution"]["dropped_examples"] == {"train": 1, "val": 0, "test": 0}


@pytest.mark.torch
@pytest.mark.e2e
def test_torchrun_ddp_matches_one_process(mnist_dir, tmp_path, keras):
    acc = one_device_accuracy(mnist_dir, tmp_path, "--loop", "native")
    out = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(free_port()),
         "-m", "mnist_keras3.train", "--distribute", "data-parallel", *map(str, STEPS), "--data-dir", str(mnist_dir),
         "--output-dir", str(tmp_path / "ddp")],
        capture_output=True, text=True, timeout=300, env={**os.environ, "KERAS_BACKEND": "torch", **CPU_ONLY})
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.count("DistributedDataParallel over 2 devices") == 1  # rank 0 alone reports
    ddp = check_run(tmp_path / "ddp", "DistributedDataParallel")
    assert acc > 0.6 and abs(ddp - acc) <= 0.005, (ddp, acc)  # the same global batches: the same result


@pytest.mark.tensorflow
@pytest.mark.e2e
def test_mirrored_strategy_on_two_logical_cpus_matches_one_device(mnist_dir, tmp_path, keras):
    acc = one_device_accuracy(mnist_dir, tmp_path, "--loop", "fit")
    out = run_module("train", "--distribute", "data-parallel", "--devices", 2, *STEPS, "--data-dir", mnist_dir,
                     "--output-dir", tmp_path / "mirrored", timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "MirroredStrategy over 2 devices" in out.stdout
    mirrored = check_run(tmp_path / "mirrored", "tf.distribute.MirroredStrategy")
    # 100 steps of fit under tensorflow reach ~58% (chance is 10%); the same batches, the same result.
    assert acc > 0.5 and abs(mirrored - acc) <= 0.005, (mirrored, acc)


@pytest.mark.parametrize("backend,flags,line", [
    pytest.param("torch", ["--devices", 2], "error: Expected no --devices under torch: torchrun starts one process "
                 "per device (--nproc-per-node). Received: devices=2", marks=pytest.mark.torch),
    pytest.param("tensorflow", ["--devices", 2, "--loop", "native"], "error: Expected settings the native loop "
                 "supports for --loop native. Received: the tensorflow native loop does not run --distribute "
                 "data-parallel; Keras's fit does. Use --loop fit (or auto, which picks fit here).",
                 marks=pytest.mark.tensorflow),
    pytest.param("jax", ["--devices", 2, "--batch-size", 33], "error: Expected batch_size divisible by the 2 "
                 "devices of --distribute data-parallel. Received: batch_size=33", marks=pytest.mark.jax),
])
def test_bad_data_parallel_input_is_one_line(cli, tmp_path, backend, flags, line):
    out = cli("train", "--distribute", "data-parallel", *flags, "--dry-run", "--output-dir", tmp_path)
    assert out.returncode == 2, out.stderr[-3000:]
    assert out.stderr.strip().splitlines()[-1] == line and "Traceback" not in out.stderr
    assert not any(tmp_path.iterdir())  # refused before any run folder was made


@pytest.mark.tensorflow
def test_tensorflow_refuses_more_devices_than_it_has(tmp_path):
    # With 2 logical CPU devices (as 2 GPUs would be), --devices 3 is an error, not a run over 2.
    script = textwrap.dedent("""
        from mnist_keras3 import backends
        from mnist_keras3.config import TrainConfig
        from mnist_keras3.errors import UsageError
        backend = backends.activate("tensorflow", devices=2, distribute="data-parallel")
        cfg = TrainConfig(backend="tensorflow", distribute="data-parallel", devices=3).validate()
        try:
            backend.distribute.data_parallel(cfg, ("fit", None))
        except UsageError as e:
            print(f"error: {e}")
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "KERAS_BACKEND": "tensorflow", **CPU_ONLY})
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == ("error: Expected --devices at most the 2 CPU devices tensorflow "
                                                   "sees. Received: devices=3. Pass --devices 2 or fewer (0 for all).")


@pytest.mark.torch
def test_torch_checks_before_training(cli, tmp_path):
    # torchrun's environment without --distribute: every process would train alone.
    out = cli("train", "--dry-run", "--output-dir", tmp_path,
              env={"TORCHELASTIC_RUN_ID": "t", "WORLD_SIZE": "2", **CPU_ONLY})
    assert out.returncode == 2 and out.stderr.strip().splitlines()[-1].startswith(
        "error: Expected --distribute data-parallel under torchrun"), out.stderr[-3000:]
    # DDP wraps the native loop's step; Keras's fit is refused (WORLD_SIZE as torchrun sets it).
    out = cli("train", "--distribute", "data-parallel", "--loop", "fit", "--dry-run", "--output-dir", tmp_path,
              env={"WORLD_SIZE": "2", **CPU_ONLY})
    assert out.returncode == 2 and out.stderr.strip().splitlines()[-1] == (
        "error: Expected --loop native or auto for --distribute data-parallel under torch (DDP wraps the native "
        "loop's step; Keras's fit does not run under DDP). Received: loop='fit'"), out.stderr[-3000:]
    assert not any(tmp_path.iterdir())


@pytest.mark.torch
@pytest.mark.e2e
def test_a_world_of_one_warns_then_trains(cli, mnist_dir, tmp_path):
    out = cli("train", "--distribute", "data-parallel", "--dry-run", "--data-dir", mnist_dir, "--output-dir", tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert ("warning: --distribute data-parallel over a world of 1 (not started by torchrun); training as one "
            "process.") in out.stderr
    dist = json.loads((only_run(tmp_path) / "metrics.json").read_text())["distribution"]
    assert dist == {"type": "none", "device_count": 1, "warning": "world of 1: not started by torchrun"}


@pytest.mark.torch
@pytest.mark.e2e
def test_a_rank_that_dies_stops_the_other(mnist_dir, tmp_path):
    import signal

    proc = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(free_port()),
         "-m", "mnist_keras3.train", "--distribute", "data-parallel", "--epochs", "100", "--max-steps-per-epoch", "50",
         "--batch-size", "64", "--data-dir", str(mnist_dir), "--output-dir", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "KERAS_BACKEND": "torch", **CPU_ONLY})
    ranks = []
    try:
        deadline = time.monotonic() + 120
        while not list(tmp_path.glob("*/checkpoint.json")) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.5)  # until rank 0 saved an epoch: both ranks are training
        ranks = [int(p) for p in open(f"/proc/{proc.pid}/task/{proc.pid}/children").read().split()]
        assert len(ranks) == 2, ranks
        os.kill(ranks[1], signal.SIGKILL)
        out = proc.communicate(timeout=120)[0]
    finally:
        for pid in [proc.pid, *ranks]:  # none left behind, whatever happened
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait()
    assert proc.returncode != 0
    assert "Signal 9 (SIGKILL) received by PID" in out, out[-3000:]  # torchrun names the rank that died
    assert not os.path.exists(f"/proc/{ranks[0]}") or open(f"/proc/{ranks[0]}/stat").read().split()[2] == "Z"


_CLASSES = textwrap.dedent("""
    import sys
    import keras
    import numpy as np
    from mnist_keras3 import data
    (_, _), (x, _) = data.mnist.load_mnist(sys.argv[2])
    probs = keras.saving.load_model(sys.argv[1]).predict(data.preprocess(x[:500]), verbose=0)  # (500, 10)
    print(keras.backend.backend(), "".join(str(c) for c in np.asarray(probs).argmax(1)))
""")


@pytest.mark.cross
@pytest.mark.e2e
def test_a_data_parallel_model_loads_under_every_other_backend(mnist_dir, tmp_path):
    """What a data-parallel run writes is an ordinary model.keras: trained under jax over 2 host
    devices, it loads under torch and tensorflow and gives the same classes there."""
    out = run_module("train", "--backend", "jax", "--distribute", "data-parallel", *STEPS, "--data-dir", mnist_dir,
                     "--output-dir", tmp_path, env=TWO_DEVICES, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    run = only_run(tmp_path)
    assert json.loads((run / "metrics.json").read_text())["distribution"]["world_size"] == 2
    classes = {}
    for backend in ("jax", "torch", "tensorflow"):
        done = subprocess.run([sys.executable, "-c", _CLASSES, str(run / "model.keras"), str(mnist_dir)],
                              capture_output=True, text=True, timeout=300,
                              env={**os.environ, "KERAS_BACKEND": backend, **CPU_ONLY})
        assert done.returncode == 0, done.stderr[-3000:]
        name, got = done.stdout.split()[-2:]
        assert name == backend and len(got) == 500
        classes[backend] = got
    for backend in ("torch", "tensorflow"):
        same = sum(a == b for a, b in zip(classes["jax"], classes[backend], strict=True))
        assert same >= 499, f"{backend}: {same}/500 classes as under jax"
