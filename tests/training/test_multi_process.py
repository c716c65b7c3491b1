"""Two processes train as one: JAX (`jax.distributed`) and TensorFlow (`TF_CONFIG`).

Each engine trains the tiny model 4 steps on 33x33 crops, batch 2, in two
local processes of one CPU device each, and in one process holding two CPU
devices, on the same global batches (this file, run as a script, feeds
seeded random batches, each process its own half, in place of the records,
and turns dropout off: its draws are not what is compared). Checked:

- The checkpoints of steps 2 and 4 (weights and momentum; BatchNorm is
  frozen) equal the one process's, within float32 noise.
- The second process writes nothing in model_dir: one set of checkpoints,
  and each step's summaries once.
- Only process 0 prints the progress lines; each names its place among the
  processes.
- Killing one process (then the other, which waits for it forever) after the
  save of step 2, and restarting both, resumes at step 2.
"""

import glob
import json
import os
import queue
import re
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from helpers import REPO, TESTS, make_records

_SIZE, _BATCH, _STEPS, _SAVE_EVERY = 33, 2, 4, 2
_NUM_CLASSES = 5
_FLAGS = [
    "--num_gpu=0",
    "--base_architecture=resnet_v1_50",
    "--units_per_block=1,1,1,1",
    f"--num_classes={_NUM_CLASSES}",
    f"--batch_size={_BATCH}",
    f"--input_height={_SIZE}",
    f"--input_width={_SIZE}",
    "--pre_trained_model=",
    "--seed=1",
    # Training-mode BatchNorm on one 33x33 image per device turns float noise
    # into ~1% by step 4 (test_training_engines.py); frozen, the steps are smooth.
    "--nofine_tune_batch_norm",
    f"--max_iter={_STEPS}",
    f"--save_checkpoints_steps={_SAVE_EVERY}",
    "--log_every_n_steps=1",
    "--epochs_per_eval=0",
]
_PROGRESS = re.compile(r"step (\d+)/(\d+) \(epoch ")
_STALLED = "stalled after the save of step"
# Float32 noise (summation order across devices), relative to each tensor's largest
# value: test_distributed.py's bounds for the weights and for the updates, which
# momentum accumulates (two TensorFlow workers measured 2e-5 for momentum).
_WEIGHTS_TOLERANCE, _MOMENTUM_TOLERANCE = 1e-5, 1e-3
# The session's XLA flags (conftest.py: no LLVM optimisation passes, twice as fast to
# compile; process 1 writes nothing to the JAX compilation cache, so it compiles every
# program itself) and a number of CPU devices.
_JAX_FLAGS = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count="


def _global_batch(step):
    """The seeded global batch of `step`: images [B, S, S, 3] 0..255, blocky labels [B, S, S, 1]."""
    rng = np.random.default_rng(1000 + step)
    images = rng.uniform(0, 255, (_BATCH, _SIZE, _SIZE, 3)).astype(np.float32)
    coarse = rng.integers(0, _NUM_CLASSES, (_BATCH, 5, 5))
    labels = np.repeat(np.repeat(coarse, 7, axis=1), 7, axis=2)[:, :_SIZE, :_SIZE, None]
    labels = labels.astype(np.int32)
    labels[0, :4] = 255
    return images, labels


def _seeded_train_dataset(files, batch_size, input_context=None, start_step=0, **options):
    """`pipelines.train_dataset`'s stand-in: this pipeline's part of `_global_batch(step)`.

    The elements are per replica (as `distribute_datasets_from_function` takes
    them, one per local replica in turn; the JAX engine's context counts one
    replica per process).
    """
    import tensorflow as tf

    pipelines = input_context.num_input_pipelines if input_context else 1
    pipeline = input_context.input_pipeline_id if input_context else 0
    replicas = input_context.num_replicas_in_sync if input_context else 1
    per_replica, local_replicas = batch_size // replicas, replicas // pipelines

    def elements():
        step = start_step
        while True:
            images, labels = _global_batch(step)
            for replica in range(local_replicas):
                start = (pipeline * local_replicas + replica) * per_replica
                yield images[start : start + per_replica], labels[start : start + per_replica]
            step += 1

    shape = [per_replica, _SIZE, _SIZE]
    return tf.data.Dataset.from_generator(
        elements,
        output_signature=(
            tf.TensorSpec([*shape, 3], tf.float32),
            tf.TensorSpec([*shape, 1], tf.int32),
        ),
    )


def _run_train_py():
    """This file as a script: train.py's main with the seeded batches (and the options below).

    Environment: MP_TF_DEVICES=n trains on n logical CPUs (TensorFlow, one
    process); MP_STALL_AT=s stops the process after the save of step s (the
    summaries flushed), until killed; MP_NO_EXPORT=1 skips the export.
    """
    from tf_pacseg.data import pipelines
    from tf_pacseg.training import components, loop

    pipelines.train_dataset = _seeded_train_dataset
    build_training_model = components.build_training_model

    def without_dropout(config):
        model = build_training_model(config)
        model.get_layer("network.dropout").rate = 0.0
        return model

    components.build_training_model = without_dropout
    # Only the chief writes images; drawing them costs seconds of eager JAX ops.
    loop.Trainer._write_images = lambda trainer, done: None
    strategy = None
    devices = int(os.environ.get("MP_TF_DEVICES", "0"))
    if devices:
        from tf_pacseg.training import distribute

        distribute.configure_logical_cpus(devices)
        strategy = distribute.create_strategy(devices=[f"/cpu:{i}" for i in range(devices)])
    create_engine = loop.create_engine

    def configured_engine(config, _=None):
        engine = create_engine(config, strategy)
        if os.environ.get("MP_NO_EXPORT"):
            engine.export = lambda export_dir, model=None: None
        return engine

    loop.create_engine = configured_engine
    stall_at = int(os.environ.get("MP_STALL_AT", "0"))
    if stall_at:
        save = loop.Trainer._save_checkpoint

        def save_then_stall(trainer):
            save(trainer)
            if trainer.step == stall_at:
                trainer.progress.train_writer.flush()
                print(f"{_STALLED} {stall_at}", flush=True)
                time.sleep(3600)

        loop.Trainer._save_checkpoint = save_then_stall
    from tf_pacseg.cli import train

    sys.argv[0] = os.path.join(REPO, "train.py")
    train.run()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Process:
    """A training process whose merged output is read on a thread, line by line."""

    def __init__(self, flags, env):
        self.popen = subprocess.Popen(
            [sys.executable, __file__, *flags],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines = queue.Queue()
        self.log = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.popen.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def wait_for(self, text, deadline):
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=1)
            except queue.Empty:
                continue
            if line is None:
                break
            self.log.append(line)
            if text in line:
                return
        raise AssertionError(f"no {text!r} in the log:\n" + "".join(self.log[-60:]))

    def finish(self, timeout):
        """Waits for the end; returns the whole log."""
        self.popen.wait(timeout=timeout)
        while (line := self.lines.get(timeout=30)) is not None:
            self.log.append(line)
        return "".join(self.log)

    def kill(self):
        """SIGKILL (if still running); returns the whole log."""
        if self.popen.poll() is None:
            self.popen.kill()
        return self.finish(60)


def _environment(backend, **variables):
    env = dict(
        os.environ,
        KERAS_BACKEND=backend,
        CUDA_VISIBLE_DEVICES="",
        JAX_PLATFORMS="cpu",
        PYTHONPATH=os.pathsep.join([str(REPO), str(TESTS), os.environ.get("PYTHONPATH", "")]),
    )
    for name in ("TF_CONFIG", "JAX_COORDINATOR_ADDRESS", "XLA_FLAGS"):
        env.pop(name, None)
    for name in [name for name in env if name.startswith("MP_")]:
        env.pop(name)
    env.update({name: str(value) for name, value in variables.items()})
    return env


def _process_environments(backend, stall_at=None):
    """The environments of the two processes of one run."""
    extra = {"MP_STALL_AT": stall_at} if stall_at else {}
    if backend == "jax":
        address = f"127.0.0.1:{_free_port()}"
        return [
            _environment(
                backend,
                XLA_FLAGS=f"{_JAX_FLAGS}1",
                JAX_COORDINATOR_ADDRESS=address,
                JAX_NUM_PROCESSES=2,
                JAX_PROCESS_ID=index,
                **extra,
            )
            for index in range(2)
        ]
    cluster = {"worker": [f"127.0.0.1:{_free_port()}", f"127.0.0.1:{_free_port()}"]}
    return [
        _environment(
            backend,
            TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
            **extra,
        )
        for index in range(2)
    ]


def _one_process_environment(backend):
    """One process holding two CPU devices; its checkpoints are all that is compared."""
    if backend == "jax":
        return _environment(backend, XLA_FLAGS=f"{_JAX_FLAGS}2", MP_NO_EXPORT=1)
    return _environment(backend, MP_TF_DEVICES=2, MP_NO_EXPORT=1)


def _run_two(backend, flags, stall_at=None, timeout=600):
    """Runs both processes; with `stall_at`, kills them (process 1 first) once both saved it."""
    processes = [_Process(flags, env) for env in _process_environments(backend, stall_at)]
    try:
        if stall_at is None:
            return [process.finish(timeout) for process in processes], processes
        deadline = time.monotonic() + timeout
        for process in processes:
            process.wait_for(f"{_STALLED} {stall_at}", deadline)
        logs = [processes[1].kill(), processes[0].kill()][::-1]
        return logs, processes
    finally:
        for process in processes:
            if process.popen.poll() is None:
                process.popen.kill()


def _checkpoint_arrays(model_dir, step, backend):
    """{name: array} of the checkpoint of `step`: every model and optimizer variable."""
    if backend == "jax":
        with np.load(os.path.join(model_dir, f"ckpt-{step}.npz")) as arrays:
            return {k: arrays[k] for k in arrays.files if k.startswith(("model/", "optimizer/"))}
    import tensorflow as tf

    reader = tf.train.load_checkpoint(os.path.join(model_dir, f"ckpt-{step}"))
    return {
        key: reader.get_tensor(key)
        for key in reader.get_variable_to_shape_map()
        if key.startswith(("model/", "optimizer/"))
    }


def _assert_same_checkpoint(ours, reference, backend):
    ours, reference = (_checkpoint_arrays(*run, backend) for run in (ours, reference))
    assert ours.keys() == reference.keys()
    for key, expected in reference.items():
        value = ours[key]
        if expected.dtype.kind != "f":
            np.testing.assert_array_equal(value, expected, err_msg=key)
            continue
        tolerance = _MOMENTUM_TOLERANCE if key.startswith("optimizer/") else _WEIGHTS_TOLERANCE
        scale = max(float(np.abs(expected).max()), 1e-12)
        assert float(np.abs(value - expected).max()) <= tolerance * scale, key


def _loss_steps(model_dir):
    """The steps of every `loss` summary in model_dir/train, over all its event files."""
    import tensorflow as tf

    steps = []
    for path in sorted(glob.glob(os.path.join(model_dir, "train", "events.out.tfevents.*"))):
        for event in tf.compat.v1.train.summary_iterator(path):
            steps += [event.step for value in event.summary.value if value.tag == "loss"]
    return sorted(steps)


def _progress_steps(log):
    return [int(match.group(1)) for match in _PROGRESS.finditer(log)]


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    return make_records(str(tmp_path_factory.mktemp("data")))


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "tensorflow"])
def test_two_processes_train_as_one_and_resume_after_a_kill(records, tmp_path, backend):
    reference_dir, model_dir = str(tmp_path / "one"), str(tmp_path / "two")
    reference = _Process(
        [*_FLAGS, f"--data_dir={records}", f"--model_dir={reference_dir}"],
        _one_process_environment(backend),
    )
    try:
        reference_log = reference.finish(600)
    finally:
        if reference.popen.poll() is None:
            reference.popen.kill()
    assert reference.popen.returncode == 0, reference_log[-5000:]
    assert _progress_steps(reference_log) == [1, 2, 3, 4]

    flags = [*_FLAGS, f"--data_dir={records}", f"--model_dir={model_dir}"]
    logs, _ = _run_two(backend, flags, stall_at=_SAVE_EVERY)
    assert _progress_steps(logs[0]) == [1, 2] and _progress_steps(logs[1]) == []
    if backend == "jax":
        assert "on 2 cpu device(s) in 2 process(es)" in logs[0]
    else:
        assert "MultiWorkerMirroredStrategy (worker 0 of 2 tasks) on 2 replica(s)" in logs[0]
        assert "(worker 1 of 2 tasks)" in logs[1]
    assert f"batch {_BATCH} (1 per replica)" in logs[0]
    _assert_same_checkpoint((model_dir, 2), (reference_dir, 2), backend)

    logs, processes = _run_two(backend, flags)
    for process, log in zip(processes, logs, strict=True):
        assert process.popen.returncode == 0, log[-5000:]
    suffix = ".npz" if backend == "jax" else ""
    assert f"Resuming from {os.path.join(model_dir, 'ckpt-2')}{suffix}" in logs[0]
    assert _progress_steps(logs[0]) == [3, 4] and _progress_steps(logs[1]) == []
    _assert_same_checkpoint((model_dir, 4), (reference_dir, 4), backend)

    # Written once, by process 0: one set of checkpoints, each step's summaries once.
    written = sorted(
        os.path.relpath(os.path.join(folder, name), model_dir)
        for folder, _, names in os.walk(model_dir)
        for name in names
        if name.startswith("ckpt-")
    )
    if backend == "jax":
        assert written == ["ckpt-2.npz", "ckpt-4.npz"]
    else:  # Nothing left of worker 1's scratch copies either.
        shard = ".data-00000-of-00001"
        assert written == [f"ckpt-{s}{end}" for s in (2, 4) for end in (shard, ".index")]
        assert not glob.glob(os.path.join(model_dir, ".worker*"))
    assert all("Saved " not in line for line in logs[1].splitlines())
    assert _loss_steps(model_dir) == [1, 2, 3, 4]
    assert os.path.isfile(os.path.join(model_dir, "model.weights.h5"))
    assert os.path.isdir(os.path.join(model_dir, "export"))


if __name__ == "__main__":
    _run_train_py()
