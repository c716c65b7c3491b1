import os

import numpy as np
import pytest
import tensorflow as tf
from block_examples import block_example, interior_mismatches

from tf_pacseg import constants
from tf_pacseg.data import pipelines, records

MEAN = np.float32(constants.MEAN_RGB)
IGNORE = constants.IGNORE_LABEL

TRAIN_SIZES = [(48, 64), (64, 48), (32, 80), (80, 32), (64, 64), (48, 48)]
VAL_SIZES = [(48, 64), (16, 32), (32, 48)]


def _write_records(path, sizes, first_seed):
    with tf.io.TFRecordWriter(path) as writer:
        for i, (height, width) in enumerate(sizes):
            image, label = block_example(height, width, first_seed + i)
            jpeg = tf.io.encode_jpeg(image, quality=100, chroma_downsampling=False).numpy()
            png = tf.io.encode_png(label).numpy()
            writer.write(records.encode_example(jpeg, png, height, width))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("records")
    half = len(TRAIN_SIZES) // 2
    for index, sizes in enumerate([TRAIN_SIZES[:half], TRAIN_SIZES[half:]]):
        name = records.shard_file_name("train", index, 2)
        _write_records(os.path.join(directory, name), sizes, first_seed=100 * index)
    _write_records(os.path.join(directory, "voc_val.record"), VAL_SIZES, first_seed=1000)
    return str(directory)


def _batches(dataset):
    return [tuple(t.numpy() for t in batch) for batch in dataset]


def test_train_dataset_yields_float_images_int_labels_and_drops_the_remainder(data_dir):
    files = records.find_record_files(data_dir, "train")
    assert len(files) == 2
    batches = _batches(pipelines.train_dataset(files, 4, crop_size=(40, 40), seed=0))
    assert len(batches) == 1  # 6 examples, drop_remainder=True
    images, labels = batches[0]
    assert images.shape == (4, 40, 40, 3) and images.dtype == np.float32
    assert labels.shape == (4, 40, 40, 1) and labels.dtype == np.int32
    assert images.min() >= 0.0 and images.max() <= 255.0
    assert set(np.unique(labels)) <= {0, 1, 2, 3, 4, IGNORE}


def test_train_dataset_keeps_image_and_label_aligned_through_records(data_dir):
    dataset = pipelines.train_dataset(
        os.path.join(data_dir, "train-*"), 2, crop_size=(40, 40), seed=1, repeat=True
    )
    total_interior = 0
    for images, labels in dataset.take(6):
        for image, label in zip(images.numpy(), labels.numpy(), strict=True):
            interior, wrong = interior_mismatches(image, label)
            assert wrong == 0, f"{wrong} of {interior} pixels misaligned"
            total_interior += interior
    assert total_interior > 1000


def test_train_dataset_is_deterministic_under_a_seed_and_new_every_epoch(data_dir):
    files = records.find_record_files(data_dir, "train")

    def build(seed):
        # 6 examples: 3 batches per epoch.
        dataset = pipelines.train_dataset(
            files, 2, crop_size=(32, 32), seed=seed, shuffle_buffer=4, repeat=True
        )
        return _batches(dataset.take(6))

    first = build(3)
    again, other = build(3), build(4)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    assert any(not np.array_equal(a[0], b[0]) for a, b in zip(first, other, strict=True))
    # The next epoch reshuffles and re-augments (deterministically too).
    assert any(not np.array_equal(a[0], b[0]) for a, b in zip(first[:3], first[3:], strict=True))


def test_train_dataset_without_a_seed_is_new_at_every_iteration(data_dir):
    dataset = pipelines.train_dataset(os.path.join(data_dir, "train-*"), 2, crop_size=(32, 32))
    first, second = _batches(dataset), _batches(dataset)
    assert any(not np.array_equal(a[0], b[0]) for a, b in zip(first, second, strict=True))


def _assert_same_batches(actual, expected):
    assert len(actual) == len(expected)
    for (images, labels), (want_images, want_labels) in zip(actual, expected, strict=True):
        np.testing.assert_array_equal(images, want_images)
        np.testing.assert_array_equal(labels, want_labels)


@pytest.mark.parametrize(
    "batch_size, shuffle_buffer", [(2, 4), (4, constants.DEFAULT_SHUFFLE_BUFFER)]
)
def test_train_dataset_from_start_step_continues_the_skipped_steps_batches(
    data_dir, batch_size, shuffle_buffer
):
    # 6 examples per epoch: with 4 per batch, batches straddle the epochs.
    def build(start_step):
        dataset = pipelines.train_dataset(
            os.path.join(data_dir, "train-*"),
            batch_size,
            crop_size=(24, 24),
            seed=5,
            shuffle_buffer=shuffle_buffer,
            repeat=True,
            start_step=start_step,
        )
        return _batches(dataset.take(8 - start_step))

    uninterrupted = build(0)
    for start_step in (1, 3, 5):
        _assert_same_batches(build(start_step), uninterrupted[start_step:])


@pytest.mark.parametrize("num_replicas, shard_by", [(2, "file"), (4, "file"), (2, "record")])
def test_start_step_skips_each_input_pipelines_share(data_dir, tmp_path, num_replicas, shard_by):
    files = records.find_record_files(data_dir, "train")
    if shard_by == "record":  # One file, fewer than the pipelines.
        single = tmp_path / "voc_train.record"
        single.write_bytes(b"".join(open(f, "rb").read() for f in files))
        files = [str(single)]
    # Two pipelines (workers), each feeding num_replicas / 2 replicas per step.
    batches_per_step = num_replicas // 2

    def build(pipeline_id, start_step):
        dataset = pipelines.train_dataset(
            files,
            num_replicas,
            crop_size=(16, 16),
            seed=2,
            repeat=True,
            input_context=tf.distribute.InputContext(2, pipeline_id, num_replicas),
            start_step=start_step,
        )
        return _batches(dataset.take(6 - start_step * batches_per_step))

    for pipeline_id in range(2):
        uninterrupted = build(pipeline_id, 0)
        assert len(uninterrupted[0][0]) == 1  # Per-replica batches of 1.
        _assert_same_batches(build(pipeline_id, 2), uninterrupted[2 * batches_per_step :])


def test_eval_dataset_keeps_large_images_whole_and_pads_small_ones(data_dir):
    files = records.find_record_files(data_dir, "val")
    assert files == [os.path.join(data_dir, "voc_val.record")]
    batches = _batches(pipelines.eval_dataset(files, 2, crop_size=(32, 40), include_sizes=True))
    assert [b[0].shape for b in batches] == [(2, 48, 64, 3), (1, 32, 48, 3)]
    assert batches[0][1].dtype == np.int32 and batches[0][0].dtype == np.float32
    # File order; sizes are the unpadded ones.
    sizes = np.concatenate([b[2] for b in batches])
    np.testing.assert_array_equal(sizes, VAL_SIZES)
    # The first (48x64, larger than the crop) is exactly its decoded self.
    serialized = next(iter(tf.data.TFRecordDataset(files)))
    image, label = (t.numpy() for t in records.parse_example(serialized))
    np.testing.assert_array_equal(batches[0][0][0], image.astype(np.float32))
    np.testing.assert_array_equal(batches[0][1][0], label.astype(np.int32))
    # The second (16x32) is padded bottom/right with the mean pixel and 255.
    images, labels = batches[0][0][1], batches[0][1][1]
    pad = np.ones((48, 64), bool)
    pad[:16, :32] = False
    np.testing.assert_array_equal(images[pad], np.broadcast_to(MEAN, (pad.sum(), 3)))
    assert (labels[pad] == IGNORE).all()
    # Alone in its batch, the 16x32 image is padded to the crop size.
    singles = _batches(pipelines.eval_dataset(files, 1, crop_size=(32, 40)))
    assert [b[0].shape for b in singles] == [(1, 48, 64, 3), (1, 32, 40, 3), (1, 32, 48, 3)]
    assert all(len(b) == 2 for b in singles)  # (images, labels) without include_sizes


def test_train_dataset_reads_the_original_single_record_file(data_dir, tmp_path):
    legacy = tmp_path / "voc_train.record"
    legacy.write_bytes(
        b"".join(open(f, "rb").read() for f in records.find_record_files(data_dir, "train"))
    )
    files = records.find_record_files(str(tmp_path), "train")
    assert files == [str(legacy)]
    batches = _batches(pipelines.train_dataset(files, 3, crop_size=(24, 24), seed=0))
    assert len(batches) == 2 and batches[0][0].shape == (3, 24, 24, 3)


@pytest.mark.parametrize("split, num_files", [("train", 2), ("val", 1)])
def test_input_context_shards_examples_and_splits_the_global_batch(data_dir, split, num_files):
    files = records.find_record_files(data_dir, split)
    assert len(files) == num_files  # by file for train, by record for the single val file
    seen = []
    for pipeline_id in range(2):
        context = tf.distribute.InputContext(2, pipeline_id, 2)
        batches = _batches(
            pipelines.eval_dataset(
                files, 2, crop_size=(8, 8), include_sizes=True, input_context=context
            )
        )
        assert all(len(b[0]) == 1 for b in batches)  # per-replica batch = 2 // 2
        seen.extend(tuple(size) for b in batches for size in b[2])
    expected = TRAIN_SIZES if split == "train" else VAL_SIZES
    assert sorted(seen) == sorted(expected)  # disjoint and complete


def test_train_dataset_with_input_context_yields_per_replica_batches(data_dir):
    context = tf.distribute.InputContext(2, 1, 2)
    train = pipelines.train_dataset(
        os.path.join(data_dir, "train-*"),
        4,
        crop_size=(16, 16),
        seed=0,
        input_context=context,
        repeat=True,
    )
    assert next(iter(train))[0].shape == (2, 16, 16, 3)


def test_distribute_dataset_with_the_default_strategy(data_dir):
    strategy = tf.distribute.get_strategy()
    files = records.find_record_files(data_dir, "train")
    dataset = pipelines.distribute_dataset(
        strategy, pipelines.train_dataset, files, 2, crop_size=(16, 16), seed=0
    )
    assert [tuple(images.shape) for images, _ in dataset] == [(2, 16, 16, 3)] * 3
    with pytest.raises(ValueError, match="input_context"):
        pipelines.distribute_dataset(strategy, pipelines.eval_dataset, files, 2, input_context=None)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"batch_size": 0}, "Received: batch_size=0"),
        ({"crop_size": (513,)}, r"Received: crop_size=\(513,\)"),
        ({"ignore_label": 300}, "Received: ignore_label=300"),
        ({"shuffle_buffer": 0}, "Received: shuffle_buffer=0"),
        ({"min_scale": -1.0}, "Received: min_scale=-1.0"),
    ],
)
def test_train_dataset_rejects_bad_arguments(data_dir, kwargs, match):
    arguments = {"files": os.path.join(data_dir, "train-*"), "batch_size": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        pipelines.train_dataset(**arguments)


def test_missing_files_are_named(tmp_path):
    pattern = str(tmp_path / "nothing-*.tfrecord")
    with pytest.raises(FileNotFoundError, match="nothing-"):
        pipelines.eval_dataset(pattern, 2)
