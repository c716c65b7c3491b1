"""train.py on damaged records: one line naming the bad record, or --skip_bad_records.

A fault stops a run with one line, without a traceback, naming the shard,
the record's position and what to do: a cut file, an image that does not
decode and a label of the wrong size on TensorFlow (the message of every
fault is checked in-process, tests/data/test_record_skipping.py); with
--skip_bad_records the run trains on the other records, counts the skipped
ones in its progress lines, TensorBoard and its last line, and resumes
exactly where it stopped. Both engines: the JAX engine reads with tf.data too.
"""

import glob
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from damaged_records import FAULTS, damage
from helpers import REPO, make_records
from training_runs import TINY_TRAIN_FLAGS, Recorder, tiny_config, train_watched

from tf_pacseg.data import records

_TINY_FLAGS = [
    *TINY_TRAIN_FLAGS,
    "--seed=1",
    "--log_every_n_steps=1",
]


@pytest.fixture(scope="module")
def clean_records(tmp_path_factory):
    # 8 training images in 2 shards of 4: 4 steps per epoch at batch 2.
    return make_records(str(tmp_path_factory.mktemp("data")))


def _damaged_copy(clean_records, directory, faults):
    """A copy of the records with `faults`: {(split, shard, position): fault}; shard paths."""
    data_dir = str(directory / "records")
    shutil.copytree(clean_records, data_dir)
    paths = {}
    for (split, shard, position), fault in faults.items():
        path = records.find_record_files(data_dir, split)[shard]
        paths[split, shard] = damage(path, position, fault)
    return data_dir, paths


def _train(data_dir, model_dir, *flags, backend="tensorflow"):
    env = dict(
        os.environ,
        KERAS_BACKEND=backend,
        JAX_PLATFORMS="cpu",
        CUDA_VISIBLE_DEVICES="",
        TF_CPP_MIN_LOG_LEVEL="3",
    )
    return subprocess.run(
        [
            sys.executable,
            os.path.join(REPO, "train.py"),
            *_TINY_FLAGS,
            f"--data_dir={data_dir}",
            f"--model_dir={model_dir}",
            *flags,
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _scalar_values(directory, tag):
    import tensorflow as tf

    values = []
    for path in glob.glob(os.path.join(directory, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.tag == tag:
                    values.append(float(tf.make_ndarray(value.tensor)))
    return values


@pytest.mark.slow
@pytest.mark.parametrize(
    "backend, fault",
    # One fault of each kind: the reader's (a cut file), decoding's, the label check's.
    [("tensorflow", fault) for fault in ("bad_image", "label_size", "truncated")]
    + [("jax", "truncated"), ("jax", "bad_image")],
)
def test_a_bad_training_record_stops_train_py_with_one_line_naming_it(
    clean_records, tmp_path, backend, fault
):
    data_dir, paths = _damaged_copy(clean_records, tmp_path, {("train", 0, 1): fault})
    model_dir = tmp_path / "model"
    process = _train(data_dir, model_dir, "--epochs_per_eval=0", backend=backend)
    assert process.returncode == 1, process.stderr[-5000:]
    assert "Traceback" not in process.stderr, process.stderr[-5000:]
    (line,) = [line for line in process.stderr.splitlines() if line.startswith("train.py: ")]
    shard = paths["train", 0]
    assert line.startswith(f"train.py: Cannot read example 1 of record file {shard} (byte ")
    assert f": {FAULTS[fault]}: " in line and "To fix: " in line
    assert f"python data/check_records.py --data_dir={data_dir} lists every bad one." in line
    assert "Training stopped without saving" in line and "--skip_bad_records" in line
    # No checkpoint claims a position past the bad record (none was due before it).
    assert not glob.glob(str(model_dir / "ckpt-*"))


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_skip_bad_records_trains_on_the_others_and_counts_them(clean_records, tmp_path, backend):
    faults = {
        ("train", 0, 1): "bad_image",
        ("train", 1, 2): "corrupted",  # Shard 1's records 2 and 3 are lost.
        ("val", 0, 0): "label_size",
    }
    data_dir, paths = _damaged_copy(clean_records, tmp_path, faults)
    model_dir = tmp_path / "model"
    # 5 readable training records: 2 steps per epoch.
    process = _train(
        data_dir,
        model_dir,
        "--skip_bad_records",
        "--train_epochs=2",
        "--epochs_per_eval=2",
        backend=backend,
    )
    log = process.stderr
    assert process.returncode == 0, log[-5000:]
    assert "Traceback" not in log
    for (split, shard), path in paths.items():
        position = {("train", 0): 1, ("train", 1): 2, ("val", 0): 0}[split, shard]
        # Logged once, though the val records are read at each evaluation.
        assert log.count(f"Skipping example {position} of record file {path} (byte ") == 1, log
    assert "The 1 records after it in this file are skipped too" in log
    progress = re.findall(r"step (\d)/4 .*  (\d+) records skipped", log)
    assert [step for step, _ in progress] == ["1", "2", "3", "4"]
    assert {count for _, count in progress} == {"3"}
    assert "Training finished at step 4 (3 unreadable records skipped, listed above)." in log
    assert _scalar_values(str(model_dir / "train"), "skipped_records") == [3.0] * 4
    assert re.search(r"Evaluation at step 4 .* on 1 images", log)


@pytest.mark.slow
def test_a_resumed_run_skipping_bad_records_sees_the_same_batches(
    clean_records, tmp_path, monkeypatch
):
    data_dir, _ = _damaged_copy(
        clean_records, tmp_path, {("train", 0, 1): "missing_key", ("train", 1, 3): "truncated"}
    )
    # 6 readable records: 3 steps per epoch, 6 in all; stopped after 4, mid-epoch 2.
    straight = Recorder()
    config = tiny_config(data_dir, str(tmp_path / "straight"), skip_bad_records=True)
    assert train_watched(monkeypatch, straight, config).step == 6
    model_dir = str(tmp_path / "stopped")
    stopped, resumed = Recorder(stop_after=4), Recorder()
    train_watched(monkeypatch, stopped, tiny_config(data_dir, model_dir, skip_bad_records=True))
    result = train_watched(
        monkeypatch, resumed, tiny_config(data_dir, model_dir, skip_bad_records=True)
    )
    assert result.step == 6 and len(resumed.batches) == 2
    batches = stopped.batches + resumed.batches
    assert len(batches) == len(straight.batches) == 6
    for (images, labels), (want_images, want_labels) in zip(batches, straight.batches, strict=True):
        np.testing.assert_array_equal(images, want_images)
        np.testing.assert_array_equal(labels, want_labels)
