"""tensorflow: data parallelism on tf.distribute (MirroredStrategy; MultiWorkerMirroredStrategy with TF_CONFIG)."""

import json
import os
import re

import tensorflow as tf

from ..common import take_devices
from ..parallel import Parallel


def prepare_data_parallel(devices):
    """`devices` logical CPU devices when there is no GPU (before the runtime starts): how
    MirroredStrategy is tried, and tested, on a CPU machine. With GPUs, data_parallel takes the
    first `devices`."""
    if devices and not tf.config.list_physical_devices("GPU"):
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * devices)


def workers():
    """The workers TF_CONFIG names (MultiWorkerMirroredStrategy), 1 without it."""
    cluster = json.loads(os.environ.get("TF_CONFIG") or "{}").get("cluster", {})
    return sum(len(cluster.get(kind, [])) for kind in ("chief", "worker")) or 1


def _multi_worker_strategy():
    """tf.distribute.MultiWorkerMirroredStrategy as Keras's fit can drive it.

    Keras's tensorflow trainer hands the strategy two reductions that MirroredStrategy takes and
    the multi-worker one (CollectiveAllReduceStrategy) refuses: the whole first (x, y) batch at
    once (to build the model symbolically before fit; MirroredStrategy reduces a nest value by
    value, the collective one converts the nest to one tensor and fails on its PerReplica parts),
    and each step's scalar loss and metrics with axis=0 (a mean over a batch axis they do not
    have). This strategy reduces a nest value by value, and a scalar over the replicas: the
    mean of the replicas' figures, what MirroredStrategy logs on one host."""

    class KerasMultiWorkerMirroredStrategy(tf.distribute.MultiWorkerMirroredStrategy):
        def reduce(self, reduce_op, value, axis):
            def one(v):
                scalar = all(t.shape.rank == 0 for t in self.experimental_local_results(v))
                return super(KerasMultiWorkerMirroredStrategy, self).reduce(reduce_op, v, None if scalar else axis)

            return tf.nest.map_structure(one, value)

    return KerasMultiWorkerMirroredStrategy()


def data_parallel(cfg, loop):
    """tf.distribute.MirroredStrategy over this host's GPUs (else its CPU devices: --devices N makes N),
    or MultiWorkerMirroredStrategy when TF_CONFIG names several workers (each host runs the same
    command with its own TF_CONFIG task). The model is built, compiled, trained and tested inside
    strategy.scope(); Keras's fit splits each global batch over the replicas. Keras's fit only: the
    native loop would bypass the strategy."""
    if workers() > 1:
        strategy, name = _multi_worker_strategy(), "MultiWorkerMirroredStrategy"
        resolver = strategy.cluster_resolver
        rank = resolver.task_id + (0 if resolver.task_type == "chief" else
                                   int("chief" in resolver.cluster_spec().as_dict()))
    else:
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
        # MirroredStrategy would silently take the ones there are
        devices = take_devices(devices, cfg.devices, f"{'GPU' if gpus else 'CPU'} devices tensorflow sees")
        strategy, rank, name = tf.distribute.MirroredStrategy(devices=devices), 0, "MirroredStrategy"
    return Parallel({
        "type": name,
        "engine": f"tf.distribute.{name}",
        "world_size": strategy.num_replicas_in_sync,
        "processes": workers(),
        "devices": list(strategy.extended.worker_devices),
    }, scope=strategy.scope, rank=rank, processes=workers(), lost=lost_process)


def lost_process(error):
    """MultiWorkerMirroredStrategy's report of a worker that went away: its collectives are aborted
    with UnavailableError when a peer closes its connection, or when the coordination service stops
    hearing the peer's heartbeat (a host that died or hangs); the reason and the worker it names, or
    None for any other exception."""
    if not isinstance(error, (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.AbortedError)):
        return None
    text = str(error)
    reason = re.search(r"aborted by: (.*)", text)
    reason = reason.group(1).rstrip(":") if reason else text.strip().splitlines()[0]
    task = json.loads(os.environ.get("TF_CONFIG") or "{}").get("task", {})
    own = f"/job:{task.get('type')}/replica:0/task:{task.get('index')}"
    peers = sorted(set(re.findall(r"/job:\w+/replica:\d+/task:\d+", text)) - {own})
    return reason + (f" ({', '.join(peers)})" if peers and not any(p in reason for p in peers) else "")
