"""Distribution strategies for training: one machine's GPUs, or several workers.

TensorFlow-only module. The strategy must be created before anything else
touches TensorFlow's devices (multi-worker collectives and device visibility
are fixed when the runtime starts), so create it first.

Multi-worker training reads the cluster from the `TF_CONFIG` environment
variable, as every TensorFlow multi-worker program does; each worker runs the
same command with its own `task`:

```
TF_CONFIG='{"cluster": {"worker": ["host1:12345", "host2:12345"]},
            "task": {"type": "worker", "index": 0}}' python train.py ...
```

Worker 0 (or a task of type "chief") is the chief: it alone writes
summaries, weights and the checkpoints in `model_dir`.
"""

import json
import os
import shutil

import tensorflow as tf

from tf_pacseg import checks


def configure_logical_cpus(num_devices):
    """Splits the CPU into `num_devices` logical devices `/cpu:0..n-1`.

    Lets tests and demos run several replicas on a machine without GPUs. Must
    run before TensorFlow initialises its runtime (before any op or device
    query that starts it).

    Args:
        num_devices: int. Number of logical CPU devices, >= 1.
    """
    checks.positive_int("num_devices", num_devices)
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(num_devices)]
    )


def cluster_spec_from_environment():
    """The `cluster` of `TF_CONFIG` as a dict, or `None` when not multi-worker."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        return None
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as error:
        raise ValueError(f"TF_CONFIG is not valid JSON ({error}): {raw!r}") from error
    cluster = config.get("cluster") or {}
    num_tasks = sum(len(tasks) for tasks in cluster.values())
    return cluster if num_tasks > 1 else None


def _restrict_gpus(num_gpu):
    """Makes only the first `num_gpu` GPUs visible (0 hides them all)."""
    gpus = tf.config.list_physical_devices("GPU")
    _check_enough_gpus(num_gpu, gpus)
    tf.config.set_visible_devices(gpus[:num_gpu], "GPU")


def _check_enough_gpus(num_gpu, gpus):
    checks.non_negative_int("num_gpu", num_gpu)
    if num_gpu > len(gpus):
        names = ", ".join(gpu.name for gpu in gpus) or "none"
        raise ValueError(
            f"--num_gpu={num_gpu} but only {len(gpus)} GPU(s) are visible ({names}). "
            "Lower --num_gpu, or --num_gpu=0 to train on the CPU."
        )


def create_strategy(num_gpu=1, devices=None):
    """The training strategy: mirrored on this machine, or multi-worker with `TF_CONFIG`.

    Args:
        num_gpu: int. GPUs per machine; 0 trains on the CPU. Defaults to 1.
        devices: optional list of device names (e.g. `["/cpu:0", "/cpu:1"]`
            after `configure_logical_cpus(2)`); replaces `num_gpu` for a
            single machine. Defaults to `None`.

    Returns:
        A `tf.distribute.MultiWorkerMirroredStrategy` when `TF_CONFIG` names
        more than one task, else a `tf.distribute.MirroredStrategy` over
        `devices` or the first `num_gpu` GPUs (the CPU for 0).

    Raises:
        ValueError: more GPUs asked for than are visible.
    """
    if cluster_spec_from_environment() is not None:
        if devices is not None:
            raise checks.invalid(
                "devices", "None with TF_CONFIG (every worker uses its visible devices)", devices
            )
        _restrict_gpus(num_gpu)
        return tf.distribute.MultiWorkerMirroredStrategy()
    if devices is None:
        gpus = tf.config.list_physical_devices("GPU")
        _check_enough_gpus(num_gpu, gpus)
        devices = [f"/gpu:{i}" for i in range(num_gpu)] if num_gpu else ["/cpu:0"]
    if not devices:
        raise checks.invalid("devices", "at least one device name", devices)
    cross_device_ops = None
    if not any("gpu" in device.lower() for device in devices):
        # NCCL (the multi-GPU default) has no CPU kernels.
        cross_device_ops = tf.distribute.ReductionToOneDevice()
    return tf.distribute.MirroredStrategy(devices, cross_device_ops=cross_device_ops)


def is_chief(strategy):
    """Whether this process writes checkpoints, weights and summaries."""
    return bool(strategy.extended.should_checkpoint)


def is_multi_worker(strategy):
    """Whether `strategy` spans several processes (`create_strategy` with `TF_CONFIG`)."""
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def supports_collectives_in_xla(strategy):
    """Whether cross-replica sums may run inside an XLA-compiled replica function.

    MultiWorkerMirroredStrategy's collectives can; MirroredStrategy's only
    when every device is a GPU (elsewhere it needs a `merge_call`).
    """
    if is_multi_worker(strategy):
        return True
    return all("GPU" in device.upper() for device in strategy.extended.worker_devices)


def describe(strategy):
    """'MirroredStrategy', or 'MultiWorkerMirroredStrategy (worker i of n)'."""
    if not is_multi_worker(strategy):
        return type(strategy).__name__
    resolver = strategy.cluster_resolver
    num_workers = sum(len(tasks) for tasks in resolver.cluster_spec().as_dict().values())
    return (
        f"MultiWorkerMirroredStrategy ({resolver.task_type} {resolver.task_id} of "
        f"{num_workers} tasks)"
    )


def check_batch_size(batch_size, strategy):
    """The per-replica batch size of global `batch_size`, which must split evenly.

    Raises:
        ValueError: naming the batch size and the number of replicas.
    """
    replicas = strategy.num_replicas_in_sync
    if batch_size < 1 or batch_size % replicas:
        raise ValueError(
            f"--batch_size={batch_size} is the global batch; it must be a positive "
            f"multiple of the number of replicas ({replicas}: GPUs per worker x workers)."
        )
    return batch_size // replicas


def write_dir(model_dir, strategy):
    """Where this worker writes checkpoints: `model_dir` on the chief, a scratch dir elsewhere.

    Every worker takes part in saving a checkpoint of mirrored variables; the
    non-chief copies go to `model_dir/.worker<index>` and are removed by
    `remove_write_dir`.
    """
    if is_chief(strategy):
        return model_dir
    task_id = strategy.cluster_resolver.task_id
    return os.path.join(model_dir, f".worker{task_id}")


def remove_write_dir(path, strategy):
    """Deletes a non-chief's scratch checkpoint directory (no-op on the chief)."""
    if not is_chief(strategy):
        shutil.rmtree(path, ignore_errors=True)
