"""Every training option trains: mixed precision (bfloat16, float16 with loss scaling and its
resume), XLA, --debug (and its report of the op that made a NaN)."""

import contextlib
import re

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import make_records
from training_runs import Recorder, tiny_config, train_watched

from tf_pacseg import training
from tf_pacseg.data import pipelines, records
from tf_pacseg.training import components

NUM_STEPS = 6


def _fixed_batch():
    images = np.random.default_rng(0).uniform(0, 255, (2, 33, 33, 3)).astype(np.float32)
    labels = np.zeros((2, 33, 33, 1), np.int32)
    labels[:, 10:25, 8:20] = 1
    labels[1, :, 25:] = 3
    labels[0, :4] = 255
    return images, labels


@contextlib.contextmanager
def _engine(**options):
    """The TensorFlow engine of a tiny model, set up as `training.train` sets it up."""
    # No data (the steps run on a fixed batch); nothing is saved in model_dir.
    config = tiny_config("", "", initial_learning_rate=0.01, max_iter=100, **options)
    previous_policy = keras.mixed_precision.global_policy()
    keras.utils.set_random_seed(config.seed)
    if config.mixed_precision != "none":
        keras.mixed_precision.set_dtype_policy(config.mixed_precision)
    engine = training.create_engine(config)
    try:
        engine.check_numerics(config.debug)
        engine.build()
        yield engine
    finally:
        keras.mixed_precision.set_dtype_policy(previous_policy)
        engine.check_numerics(False)


def _data_losses(engine):
    batches = iter(
        engine.strategy.experimental_distribute_dataset(
            tf.data.Dataset.from_tensors(_fixed_batch()).repeat()
        )
    )
    return [float(engine.train_step(*next(batches))["data_loss"]) for _ in range(NUM_STEPS)]


@pytest.mark.parametrize(
    "options",
    [
        {"mixed_precision": "mixed_bfloat16"},
        {"mixed_precision": "mixed_float16"},
        {"jit_compile": True},
        {"debug": True},
    ],
    ids=["bfloat16", "float16", "jit_compile", "debug"],
)
def test_each_option_trains_the_loss_down_on_a_fixed_batch(options):
    with _engine(**options) as engine:
        if "mixed_precision" in options:
            assert engine.model.compute_dtype == options["mixed_precision"][len("mixed_") :]
            assert engine.model.variable_dtype == "float32"
        assert isinstance(engine.optimizer, keras.optimizers.LossScaleOptimizer) == (
            options.get("mixed_precision") == "mixed_float16"
        )
        assert engine.step_fn.jit_compile == options.get("jit_compile", False)
        losses = _data_losses(engine)
    assert all(np.isfinite(losses)), losses
    # About 3.3 -> 0.5 in float32; a step that does not train leaves it near 3.3.
    assert losses[-1] < losses[0] / 2, losses


def _loss_scale(engine):
    optimizer = engine.optimizer
    return float(optimizer.dynamic_scale.numpy()), int(optimizer.step_counter.numpy())


def test_float16_loss_scale_and_input_position_are_restored_on_resume(tmp_path, monkeypatch):
    data_dir = make_records(str(tmp_path))
    config = tiny_config(data_dir, str(tmp_path / "model"), mixed_precision="mixed_float16")
    saved = (1024.0, 7)  # Not the initial (32768, 0): set before the save at the stop.

    class PlantScale(Recorder):
        def before_step(self, engine):
            if len(self.batches) == 1:  # Overflows: the update is skipped.
                engine.optimizer.dynamic_scale.assign(2.0**40)

        def after_step(self, engine):
            if len(self.batches) in (1, self.stop_after):
                engine.optimizer.dynamic_scale.assign(saved[0])
                engine.optimizer.step_counter.assign(saved[1])

    stopped = PlantScale(stop_after=3)
    result = train_watched(monkeypatch, stopped, config)
    assert result.interrupted and result.step < 3  # 3 batches read, fewer updates.

    class ReadScale(Recorder):
        restored = None

        def before_step(self, engine):
            if self.restored is None:
                self.restored = _loss_scale(engine)

    resumed = ReadScale()
    result = train_watched(monkeypatch, resumed, config)
    assert result.interrupted is None
    assert resumed.restored == saved
    # The input goes on after the 3 batches read, not after the updates made.
    dataset = pipelines.train_dataset(
        records.find_record_files(data_dir, "train"),
        config.batch_size,
        **components.train_input_arguments(config),
    )
    expected = [tuple(t.numpy() for t in batch) for batch in dataset.take(4)]
    for (images, labels), (want_images, want_labels) in zip(
        stopped.batches + resumed.batches[:1], expected, strict=True
    ):
        np.testing.assert_array_equal(images, want_images)
        np.testing.assert_array_equal(labels, want_labels)


def test_debug_names_the_op_that_made_a_nan(tmp_path):
    config = tiny_config(
        make_records(str(tmp_path)),
        str(tmp_path / "model"),
        debug=True,
        initial_learning_rate=1e10,  # The weights overflow within a few steps.
    )
    with pytest.raises(training.NonFiniteLossError) as raised:
        training.train(config)
    message = str(raised.value)
    assert re.match(
        r"--debug: after step \d+, output \d+ of \w+ op \S+/resnet_v1_50\.\S+ "
        r"(\(made at tf_pacseg/[\w/]+\.py:\d+\) )?had [-+]?(Inf|NaN)",
        message,
    ), message
    assert "Traceback" not in message and "\n" not in message


def test_only_debug_reports_become_the_clean_message():
    from tf_pacseg.training.debug import nonfinite_op_error

    jax_report = FloatingPointError("invalid value (nan) encountered in log")
    error = nonfinite_op_error(jax_report, 3, "runs/x")
    assert isinstance(error, training.NonFiniteLossError)
    assert str(error).startswith("--debug: after step 3, invalid value (nan) encountered in log.")
    other = tf.errors.InvalidArgumentError(None, None, "Incompatible shapes: [2] vs. [3]")
    assert nonfinite_op_error(other, 3, "runs/x") is None


def test_training_time_evaluation_uses_the_runs_ignore_label(tmp_path):
    # The records' void pixels are 255: with ignore_label=0 they are out of range,
    # which the evaluation of the val records reports, naming the ignore label it got.
    config = tiny_config(
        make_records(str(tmp_path)),
        str(tmp_path / "model"),
        ignore_label=0,
        max_iter=1,
        epochs_per_eval=1,
    )
    with pytest.raises(ValueError, match=r"label values \[255\] .* not the ignore label 0"):
        training.train(config)
