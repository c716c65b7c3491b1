"""A run stopped mid-epoch and resumed trains exactly as one that was never stopped.

With a seed, the resumed run sees the same batches (the input continues where
the checkpoint left it, nothing replayed) and its first update, made with the
restored momentum, equals the uninterrupted run's.
"""

import os
import signal

import keras
import numpy as np
import pytest
from helpers import make_records

from tf_pacseg import training
from tf_pacseg.training import loop

# 9 examples at batch 2: 4 steps per epoch, and a batch that straddles two epochs.
NUM_TRAIN = 9
STOP_AT = 5  # Mid-epoch 2.


def tiny_config(data_dir, model_dir, **overrides):
    return training.TrainConfig(
        num_gpu=0,
        base_architecture="resnet_v1_50",
        units_per_block=(1, 1, 1, 1),
        num_classes=5,
        batch_size=2,
        input_height=33,
        input_width=33,
        pre_trained_model="",
        data_dir=data_dir,
        model_dir=model_dir,
        train_epochs=2,
        epochs_per_eval=0,
        log_every_n_steps=100,
        save_checkpoints_steps=100,
        seed=1,
        **overrides,
    )


class Recorder:
    """Wraps the loop's engine: records each step's batch, snapshots the weights after
    step `snapshot_at` of this run, and sends SIGTERM (the loop's stop) after `stop_after`."""

    def __init__(self, stop_after=None, snapshot_at=None):
        self.stop_after = stop_after
        self.snapshot_at = snapshot_at
        self.batches = []
        self.weights = None

    def create_engine(self, config, strategy=None):
        engine = create_engine(config, strategy)
        train_step = engine.train_step

        def recording_step(images, labels):
            self.batches.append(
                (np.asarray(engine.first_replica(images)), np.asarray(engine.first_replica(labels)))
            )
            outputs = train_step(images, labels)
            if len(self.batches) == self.snapshot_at:
                model = engine.evaluation_model()
                self.weights = {v.path: np.array(v.value) for v in model.weights}
            if len(self.batches) == self.stop_after:
                os.kill(os.getpid(), signal.SIGTERM)
            return outputs

        engine.train_step = recording_step
        return engine


create_engine = loop.create_engine


def _train(monkeypatch, recorder, config):
    # As a new process would: the JAX engine's checkpoints name variables by their
    # paths, which hold Keras' per-process counters (seed_generator_1, ...).
    keras.backend.clear_session()
    with monkeypatch.context() as patch:
        patch.setattr(loop, "create_engine", recorder.create_engine)
        return training.train(config)


def check_resume_continues_the_uninterrupted_run(root, monkeypatch):
    """Trains 8 steps straight, then 5 + resumed 3; compares batches and weights."""
    data_dir = make_records(root, num_train=NUM_TRAIN)
    straight = Recorder(snapshot_at=STOP_AT + 1)
    result = _train(monkeypatch, straight, tiny_config(data_dir, os.path.join(root, "straight")))
    assert result.step == 8 and result.interrupted is None

    model_dir = os.path.join(root, "stopped")
    stopped = Recorder(stop_after=STOP_AT)
    result = _train(monkeypatch, stopped, tiny_config(data_dir, model_dir))
    assert result.step == STOP_AT and result.interrupted == signal.SIGTERM
    resumed = Recorder(snapshot_at=1)
    result = _train(monkeypatch, resumed, tiny_config(data_dir, model_dir))
    assert result.step == 8 and result.interrupted is None

    # The same 8 batches, images and labels exactly, none replayed.
    batches = stopped.batches + resumed.batches
    assert len(batches) == len(straight.batches) == 8
    for (images, labels), (want_images, want_labels) in zip(batches, straight.batches, strict=True):
        np.testing.assert_array_equal(images, want_images)
        np.testing.assert_array_equal(labels, want_labels)
    assert not np.array_equal(straight.batches[STOP_AT][0], straight.batches[0][0])

    # Step STOP_AT + 1, the first after resuming, makes the uninterrupted run's update:
    # the momentum, BatchNorm statistics and dropout's seed were restored.
    assert resumed.weights.keys() == straight.weights.keys()
    for path, value in straight.weights.items():
        np.testing.assert_allclose(resumed.weights[path], value, rtol=1e-6, atol=1e-7, err_msg=path)


@pytest.mark.slow
def test_a_resumed_run_sees_the_same_batches_and_makes_the_same_updates(tmp_path, monkeypatch):
    check_resume_continues_the_uninterrupted_run(str(tmp_path), monkeypatch)
