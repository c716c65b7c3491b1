"""A run stopped mid-epoch and resumed trains exactly as one that was never stopped.

With a seed, the resumed run sees the same batches (the input continues where
the checkpoint left it, nothing replayed) and its first update, made with the
restored momentum, equals the uninterrupted run's.
"""

import os
import signal

import numpy as np
import pytest
from helpers import make_records, run_python
from training_runs import Recorder, tiny_config, train_watched

# 9 examples at batch 2: 4 steps per epoch, and a batch that straddles two epochs.
NUM_TRAIN = 9
STOP_AT = 5  # Mid-epoch 2.


def check_resume_continues_the_uninterrupted_run(root, monkeypatch):
    """Trains 8 steps straight, then 5 + resumed 3; compares batches and weights."""
    data_dir = make_records(root, num_train=NUM_TRAIN)
    straight = Recorder(snapshot_at=STOP_AT + 1)
    config = tiny_config(data_dir, os.path.join(root, "straight"))
    result = train_watched(monkeypatch, straight, config)
    assert result.step == 8 and result.interrupted is None

    model_dir = os.path.join(root, "stopped")
    stopped = Recorder(stop_after=STOP_AT)
    result = train_watched(monkeypatch, stopped, tiny_config(data_dir, model_dir))
    assert result.step == STOP_AT and result.interrupted == signal.SIGTERM
    resumed = Recorder(snapshot_at=1)
    result = train_watched(monkeypatch, resumed, tiny_config(data_dir, model_dir))
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


@pytest.mark.slow
def test_a_resumed_run_of_the_jax_engine_too(tmp_path):
    script = (
        "import sys, pytest\n"
        f"sys.path.insert(0, {os.path.dirname(__file__)!r})\n"
        "import test_resume\n"
        "with pytest.MonkeyPatch.context() as patch:\n"
        "    test_resume.check_resume_continues_the_uninterrupted_run(sys.argv[1], patch)\n"
    )
    run_python(script, [tmp_path], backend="jax", timeout=600)


def test_checkpoints_keep_the_input_position_and_older_ones_still_resume(tmp_path):
    import tensorflow as tf

    from tf_pacseg import training

    def built_engine(model_dir):
        engine = training.create_engine(tiny_config("", str(model_dir)))
        engine.build()
        return engine

    # As written before the input position (and dropout's seed) were kept.
    engine = built_engine(tmp_path / "old")
    tf.train.Checkpoint(model=engine.model, optimizer=engine.optimizer).save(
        str(tmp_path / "old" / "ckpt")
    )
    restored = built_engine(tmp_path / "old").restore()
    assert restored is not None and restored.input_position is None

    # Without the optimizer's state: not resumable.
    engine = built_engine(tmp_path / "partial")
    tf.train.Checkpoint(model=engine.model).save(str(tmp_path / "partial" / "ckpt"))
    with pytest.raises(ValueError, match="Cannot resume from .*partial"):
        built_engine(tmp_path / "partial").restore()

    # 7 batches read for 5 updates (float16 skips).
    assert built_engine(tmp_path / "new").save(5, input_position=7).endswith("ckpt-5")
    restored = built_engine(tmp_path / "new").restore()
    assert restored.path.endswith("ckpt-5") and restored.input_position == 7
