"""--distribute data-parallel: Keras's DataParallel on jax over two host CPU devices, with the
same accuracy as one device; a clear one-line error under the backends Keras can't distribute."""

import json
import subprocess
import sys
import textwrap

import pytest

TWO_DEVICES = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}


def only_run(out_dir):
    runs = [p for p in out_dir.iterdir() if p.is_dir()]
    assert len(runs) == 1, runs
    return runs[0]


@pytest.mark.jax
def test_keras_splits_each_batch_over_both_devices(tmp_path):
    # What DataParallel does to a batch, seen from inside a 2-device jax process.
    script = textwrap.dedent("""
        import json, numpy as np
        from mnist_keras3 import backends, distribute
        from mnist_keras3.config import TrainConfig
        keras = backends.activate("jax")
        info = distribute.setup(TrainConfig(backend="jax", distribute="data-parallel", batch_size=64).validate())
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


@pytest.mark.jax
def test_batch_must_split_evenly_over_devices(cli, tmp_path):
    out = cli("train", "--distribute", "data-parallel", "--batch-size", 33, "--dry-run",
              "--output-dir", tmp_path, env=TWO_DEVICES)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1] == ("error: Expected batch_size divisible by the 2 devices of "
                                                   "--distribute data-parallel. Received: batch_size=33")


@pytest.mark.parametrize("backend,tool", [
    pytest.param("torch", "torch DDP", marks=pytest.mark.torch),
    pytest.param("tensorflow", "tf.distribute", marks=pytest.mark.tensorflow),
])
def test_other_backends_name_their_own_tool(cli, tmp_path, backend, tool):
    out = cli("train", "--backend", backend, "--distribute", "data-parallel", "--dry-run", "--output-dir", tmp_path)
    assert out.returncode == 2
    # tensorflow's C++ start-up logging may precede it; the error itself is one line, the last.
    line = out.stderr.strip().splitlines()[-1]
    assert line.startswith("error: Expected backend jax for --distribute data-parallel")
    assert f"Received: backend='{backend}'" in line and tool in line and "Traceback" not in out.stderr
    assert not any(tmp_path.iterdir())  # refused before any run folder was made
