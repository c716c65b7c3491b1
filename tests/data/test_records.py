"""TFRecord examples: our writer and parser, and the original converter's files."""

import io
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tf_pacseg import constants
from tf_pacseg.data import records


def _sample(seed, height=23, width=31):
    """(JPEG bytes, decoded image, PNG bytes, label) of a random image and label."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    jpeg = tf.io.encode_jpeg(image, quality=90).numpy()
    label = rng.integers(0, 21, (height, width), dtype=np.uint8)
    label[:3] = constants.IGNORE_LABEL
    buffer = io.BytesIO()
    Image.fromarray(label).save(buffer, format="PNG")  # Mode 'L', as SegmentationClassAug.
    return jpeg, tf.io.decode_jpeg(jpeg, channels=3).numpy(), buffer.getvalue(), label


def _original_example(jpeg, png, height, width):
    """A `tf.train.Example` as the original converter wrote them, built field by field."""

    def bytes_feature(value):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))

    def int64_feature(value):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))

    feature = {
        "image/height": int64_feature(height),
        "image/width": int64_feature(width),
        "image/encoded": bytes_feature(jpeg),
        "image/format": bytes_feature(b"jpeg"),
        "label/encoded": bytes_feature(png),
        "label/format": bytes_feature(b"png"),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def _parse(serialized):
    image, label = records.parse_example(tf.constant(serialized))
    return image.numpy(), label.numpy()


def test_encode_then_parse_gives_the_decoded_image_and_label_back():
    jpeg, decoded, png, label = _sample(0)
    image, parsed_label = _parse(records.encode_example(jpeg, png, *label.shape))
    assert image.dtype == np.uint8 and image.shape == (23, 31, 3)
    np.testing.assert_array_equal(image, decoded)
    assert parsed_label.dtype == np.uint8 and parsed_label.shape == (23, 31, 1)
    np.testing.assert_array_equal(parsed_label[..., 0], label)


def test_our_examples_use_the_original_keys_and_formats():
    jpeg, _, png, label = _sample(1)
    example = tf.train.Example.FromString(records.encode_example(jpeg, png, *label.shape))
    feature = example.features.feature
    assert set(feature) == {
        "image/height",
        "image/width",
        "image/encoded",
        "image/format",
        "label/encoded",
        "label/format",
    }
    assert feature["image/height"].int64_list.value == [23]
    assert feature["image/width"].int64_list.value == [31]
    assert feature["image/encoded"].bytes_list.value == [jpeg]
    assert feature["image/format"].bytes_list.value == [b"jpeg"]
    assert feature["label/encoded"].bytes_list.value == [png]
    assert feature["label/format"].bytes_list.value == [b"png"]


def test_original_record_file_is_found_counted_and_parsed(tmp_path):
    samples = [_sample(seed, 17 + seed, 29 - seed) for seed in range(3)]
    path = os.fspath(tmp_path / "voc_train.record")
    with tf.io.TFRecordWriter(path) as writer:
        for jpeg, _, png, label in samples:
            writer.write(_original_example(jpeg, png, *label.shape))
    files = records.find_record_files(os.fspath(tmp_path), "train")
    assert files == [path]
    assert records.count_examples(files) == 3
    parsed = list(tf.data.TFRecordDataset(files).map(records.parse_example))
    for (image, label), (_, decoded, _, expected) in zip(parsed, samples, strict=True):
        np.testing.assert_array_equal(image.numpy(), decoded)
        np.testing.assert_array_equal(label.numpy()[..., 0], expected)


def test_header_size_that_disagrees_with_the_image_fails_to_parse():
    jpeg, _, png, label = _sample(2)
    with pytest.raises(tf.errors.InvalidArgumentError):
        _parse(records.encode_example(jpeg, png, 24, 31))


def test_shards_come_first_in_name_order_and_count_per_file(tmp_path):
    names = [records.shard_file_name("val", i, 2) for i in (1, 0)]
    assert names == ["val-00001-of-00002.tfrecord", "val-00000-of-00002.tfrecord"]
    jpeg, _, png, label = _sample(3)
    for count, name in zip((2, 1), names, strict=True):
        with tf.io.TFRecordWriter(os.fspath(tmp_path / name)) as writer:
            for _ in range(count):
                writer.write(records.encode_example(jpeg, png, *label.shape))
    (tmp_path / "voc_val.record").write_bytes(b"")  # Shards win over the original's file.
    files = records.find_record_files(os.fspath(tmp_path), "val")
    assert [os.path.basename(f) for f in files] == sorted(names)
    assert [records.count_examples(f) for f in files] == [1, 2]
    assert records.count_examples(files) == 3


@pytest.mark.parametrize(
    "num_examples, num_shards, counts", [(5, 3, [2, 2, 1]), (2, 5, [1, 0, 1, 0, 0])]
)
def test_write_shards_writes_contiguous_runs_in_name_order(
    tmp_path, num_examples, num_shards, counts
):
    # Example i of n goes to shard i * num_shards // n; empty shards are written too.
    examples = [f"example {i}".encode() for i in range(num_examples)]
    paths, num_written = records.write_shards(
        str(tmp_path), "train", examples, num_examples, num_shards
    )
    assert num_written == num_examples
    assert [os.path.basename(p) for p in paths] == [
        records.shard_file_name("train", i, num_shards) for i in range(num_shards)
    ]
    assert sorted(os.listdir(tmp_path)) == [os.path.basename(p) for p in paths]
    assert [records.count_examples(p) for p in paths] == counts
    written = [r.numpy() for r in tf.data.TFRecordDataset(paths)]
    assert written == examples


def test_write_shards_keeps_the_place_of_skipped_examples_and_removes_stale_shards(tmp_path):
    records.write_shards(str(tmp_path), "val", [b"a", b"b", b"c"], 3, 3)
    examples = [b"a", None, b"c", None]
    paths, num_written = records.write_shards(str(tmp_path), "val", examples, 4, 2)
    assert num_written == 2
    assert sorted(os.listdir(tmp_path)) == [os.path.basename(p) for p in paths]
    assert [[r.numpy() for r in tf.data.TFRecordDataset(p)] for p in paths] == [[b"a"], [b"c"]]


def test_missing_records_and_bad_split_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"train-\*-of-\*\.tfrecord.*'voc_train\.record'"):
        records.find_record_files(os.fspath(tmp_path), "train")
    with pytest.raises(ValueError, match="Received: split='test'"):
        records.find_record_files(os.fspath(tmp_path), "test")
