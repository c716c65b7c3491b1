"""train.py end to end on tiny synthetic records: flags, resume after SIGTERM, restart, NaN."""

import glob
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from helpers import REPO, make_records
from training_runs import TINY_TRAIN_FLAGS

_TRAIN = os.path.join(REPO, "train.py")
_TINY_FLAGS = [
    *TINY_TRAIN_FLAGS,
    "--seed=1",
]
# The original `_init_.py`'s options and defaults (docs/design.md §6).
_ORIGINAL_FLAGS = {
    "num_gpu": 1,
    "base_architecture": "resnet_v1_101",
    "pre_trained_model": "./init_checkpoints/<arch>/model.ckpt",
    "model_dir": "./model",
    "data_dir": "./dataset/",
    "clean_model_dir": False,
    "train_epochs": 46,
    "epochs_per_eval": 1,
    "batch_size": 16,
    "max_iter": 30000,
    "initial_global_step": 0,
    "output_stride": 16,
    "initial_learning_rate": 0.007,
    "end_learning_rate": 0,
    "power": 0.9,
    "momentum": 0.9,
    "weight_decay": 0.0001,
    "fine_tune_batch_norm": True,
    "batch_norm_decay": 0.9997,
    "debug": False,
    "num_classes": 21,
    "input_height": 513,
    "input_width": 513,
    "input_depth": 3,
    "min_scale": 0.5,
    "max_scale": 2.0,
    "ignore_label": 255,
}
_PROGRESS = re.compile(r"step (\d+)/(\d+) \(epoch [\d.]+\)  loss [\d.]+ .* lr ([\d.e-]+) ")


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    # 8 training images: 4 steps per epoch at batch 2.
    return make_records(str(tmp_path_factory.mktemp("data")))


def _train(*flags, timeout=600):
    return subprocess.run(
        [sys.executable, _TRAIN, *flags],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _event_tags(directory):
    import tensorflow as tf

    tags = set()
    for path in glob.glob(os.path.join(directory, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            tags.update(value.tag for value in event.summary.value)
    return tags


def test_helpfull_lists_every_original_flag_with_its_default():
    process = _train("--helpfull", timeout=120)
    text = process.stdout + process.stderr
    for name, default in _ORIGINAL_FLAGS.items():
        match = re.search(rf"--(?:\[no\])?{name}: .*?\(default: '([^']*)'\)", text, re.S)
        assert match, f"--{name} is not listed"
        shown = match.group(1)
        if isinstance(default, bool):
            assert shown == str(default).lower(), name
        elif isinstance(default, (int, float)):
            assert float(shown) == default, name
        else:
            assert shown == default, name
    assert "TF_CONFIG" in text  # Multi-worker training is documented.


def test_missing_pretrained_model_is_an_error_naming_it(records, tmp_path):
    missing = str(tmp_path / "init" / "model.ckpt")
    process = _train(
        *_TINY_FLAGS,
        f"--data_dir={records}",
        f"--model_dir={tmp_path / 'model'}",
        f"--pre_trained_model={missing}",
        timeout=300,
    )
    assert process.returncode == 1
    assert missing in process.stderr
    assert "--pre_trained_model=" in process.stderr  # The way to train from scratch.


def _read_until_progress(process, deadline):
    """Reads the merged log until the first progress line; returns the lines read."""
    lines = []
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if _PROGRESS.search(line):
            return lines
    raise AssertionError("no progress line:\n" + "".join(lines[-50:]))


def _resumable_run_flags(records, model_dir, save_checkpoints_steps):
    return [
        *_TINY_FLAGS,
        f"--data_dir={records}",
        f"--model_dir={model_dir}",
        "--max_iter=100",
        "--log_every_n_steps=1",
        f"--save_checkpoints_steps={save_checkpoints_steps}",
    ]


def _assert_resumed_on_schedule(log, first_step, last_step):
    """Progress lines from `first_step` to `last_step`, each at its poly learning rate."""
    from tf_pacseg.training.optimizers import PolyDecay

    steps = [(int(m.group(1)), float(m.group(3))) for m in _PROGRESS.finditer(log)]
    assert steps[0][0] == first_step and steps[-1][0] == last_step
    schedule = PolyDecay(0.007, max_iter=100)
    for step, learning_rate in steps:  # The lr of step s is the schedule at s - 1.
        assert learning_rate == pytest.approx(float(schedule(step - 1)), rel=1e-3)
    assert re.search(rf"Evaluation at step {last_step} .* mIoU [\d.]+", log)


def _assert_outputs_at_step(model_dir, step, tolerance):
    """model.weights.h5 of `step` loads (on TensorFlow) and the export gives its logits."""
    import tensorflow as tf

    from tf_pacseg.weights import saving

    model = saving.load_model(model_dir)  # What evaluate.py/predict.py read.
    assert (
        saving.read_model_description(os.path.join(model_dir, "model.weights.h5"))["step"] == step
    )
    served = tf.saved_model.load(os.path.join(model_dir, "export"))
    images = np.random.default_rng(0).uniform(0, 255, (1, 37, 41, 3)).astype(np.float32)
    logits = served.signatures["serving_default"](images=tf.constant(images))["logits"]
    assert logits.shape == (1, 37, 41, 5)
    expected = model(images, training=False).numpy()
    np.testing.assert_allclose(logits, expected, atol=tolerance * np.abs(expected).max())


@pytest.mark.slow
def test_sigterm_saves_then_a_restart_resumes_and_finishes(records, tmp_path):
    import tensorflow as tf

    model_dir = str(tmp_path / "model")
    flags = _resumable_run_flags(records, model_dir, save_checkpoints_steps=100)
    # A long run (25 epochs), stopped by SIGTERM once it trains.
    process = subprocess.Popen(
        [sys.executable, _TRAIN, *flags, "--train_epochs=25"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        first_lines = _read_until_progress(process, time.monotonic() + 600)
        process.send_signal(signal.SIGTERM)
        rest = process.communicate(timeout=300)[0]
    finally:
        process.kill()
    log = "".join(first_lines) + rest
    assert process.returncode == 128 + signal.SIGTERM, log[-5000:]
    assert "Received SIGTERM" in log and "Stopped by SIGTERM" in log
    prefix = tf.train.latest_checkpoint(model_dir)
    assert prefix is not None
    stopped_at = int(prefix.rsplit("-", 1)[1])
    assert 1 <= stopped_at < 8
    reader = tf.train.load_checkpoint(prefix)
    assert reader.get_tensor("optimizer/_iterations/.ATTRIBUTES/VARIABLE_VALUE") == stopped_at
    slots = [k for k in reader.get_variable_to_shape_map() if k.startswith("optimizer/_variables")]
    assert any(np.any(reader.get_tensor(k) != 0) for k in slots)  # Momentum was saved.

    # The same run, to 2 epochs (8 steps): resumes where it stopped, evaluates, exports.
    process = _train(*flags, "--train_epochs=2")
    log = process.stdout + process.stderr
    assert process.returncode == 0, log[-5000:]
    assert f"Resuming from {prefix}" in log
    _assert_resumed_on_schedule(log, stopped_at + 1, 8)
    assert {"mean_iou", "pixel_accuracy"} <= _event_tags(os.path.join(model_dir, "eval"))
    train_tags = _event_tags(os.path.join(model_dir, "train"))
    assert {"loss", "bal_loss", "regularization", "learning_rate", "mean_iou"} <= train_tags
    assert "input_ground_truth_prediction" in train_tags
    # Same weights, separately traced graphs: equal up to float32 rounding.
    _assert_outputs_at_step(model_dir, 8, tolerance=1e-5)


@pytest.mark.slow
def test_clean_model_dir_starts_over_and_a_nan_stops_keeping_the_last_checkpoint(records, tmp_path):
    import tensorflow as tf

    from tf_pacseg.weights import saving

    model_dir = str(tmp_path / "model")
    # A previous run's leftovers, which would not even restore into this model.
    tf.train.Checkpoint(step=tf.Variable(5)).save(os.path.join(model_dir, "ckpt"))
    open(os.path.join(model_dir, "stale.txt"), "w").close()

    process = _train(
        *_TINY_FLAGS,
        f"--data_dir={records}",
        f"--model_dir={model_dir}",
        "--clean_model_dir",
        "--initial_learning_rate=1e10",
        "--log_every_n_steps=1",
        "--save_checkpoints_steps=1",
        "--epochs_per_eval=0",
    )
    log = process.stdout + process.stderr
    assert process.returncode == 1, log[-5000:]
    assert "--clean_model_dir: deleting" in log and "steps 0 -> " in log
    assert not os.path.exists(os.path.join(model_dir, "stale.txt"))
    assert re.search(r"train\.py: (The loss became (nan|inf)|Non-finite weights) at step \d+", log)

    prefix = tf.train.latest_checkpoint(model_dir)
    assert prefix is not None
    reader = tf.train.load_checkpoint(prefix)
    for key in reader.get_variable_to_shape_map():
        value = reader.get_tensor(key)
        if isinstance(value, np.ndarray) and value.dtype.kind == "f":
            assert np.all(np.isfinite(value)), key
    model = saving.load_model(model_dir)
    assert all(np.all(np.isfinite(w.numpy())) for w in model.weights)
    assert not os.path.exists(os.path.join(model_dir, "export"))


@pytest.mark.slow
def test_jax_engine_trains_resumes_evaluates_and_exports(records, tmp_path):
    model_dir = str(tmp_path / "model")
    flags = [
        *_resumable_run_flags(records, model_dir, save_checkpoints_steps=3),
        "--epochs_per_eval=0",
    ]
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")

    def train_jax(*extra):
        process = subprocess.run(
            [sys.executable, _TRAIN, *flags, *extra],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        log = process.stdout + process.stderr
        assert process.returncode == 0, log[-5000:]
        return log

    log = train_jax("--train_epochs=1")
    assert "(jax engine) with jax.sharding data parallelism on 1 cpu device(s)" in log
    assert sorted(os.listdir(model_dir)) == [
        "ckpt-3.npz",
        "ckpt-4.npz",
        "export",
        "model.json",
        "model.weights.h5",
        "run.lock",  # Released (empty), kept for the next run to lock.
        "train",
    ]
    with np.load(os.path.join(model_dir, "ckpt-4.npz")) as checkpoint:
        paths = list(checkpoint["optimizer_paths"])
        iterations = checkpoint[f"optimizer/{paths.index('tf1_momentum/iteration')}"]
        assert int(iterations) == 4
        momentum = [checkpoint[f"optimizer/{i}"] for i in range(len(paths)) if i != 0]
        assert any(np.any(slot != 0) for slot in momentum)

    # Two epochs: resumes at step 5 on the schedule, evaluates at the end, exports again.
    log = train_jax("--train_epochs=2", "--epochs_per_eval=2")
    assert f"Resuming from {os.path.join(model_dir, 'ckpt-4.npz')}" in log
    _assert_resumed_on_schedule(log, 5, 8)
    train_tags = _event_tags(os.path.join(model_dir, "train"))
    assert {"loss", "bal_loss", "learning_rate", "input_ground_truth_prediction"} <= train_tags
    # model.weights.h5 written on JAX, loaded on TensorFlow; the export traced through jax2tf.
    _assert_outputs_at_step(model_dir, 8, tolerance=1e-4)

    # The TensorFlow engine does not mistake the JAX run for a fresh one.
    process = _train(*flags, timeout=300)
    assert process.returncode == 1
    assert "holds a checkpoint of the jax engine" in process.stderr
