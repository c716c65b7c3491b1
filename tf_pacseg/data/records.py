"""TFRecord examples: the writer's encoding and the reader's parsing in one place.

Keys and formats are those of the original converter, so its
`voc_train.record` / `voc_val.record` files read like our shards
(docs/design.md §5).
"""

import glob
import os

import numpy as np
import tensorflow as tf

from tf_pacseg import constants

SPLITS = ("train", "val")

# Files written by the original converter, one per split.
_LEGACY_FILE_NAMES = {"train": "voc_train.record", "val": "voc_val.record"}


def shard_file_name(split, index, num_shards):
    """`train-00000-of-00004.tfrecord`."""
    return f"{split}-{index:05d}-of-{num_shards:05d}.tfrecord"


def find_record_files(data_dir, split):
    """The record files of `split` in `data_dir`: our shards, else the original's file.

    Raises:
        FileNotFoundError: naming the directory and the file names looked for.
    """
    if split not in SPLITS:
        raise ValueError(
            f"Invalid value for argument `split`. Expected one of {SPLITS}. "
            f"Received: split={split!r}"
        )
    shards = sorted(glob.glob(os.path.join(data_dir, f"{split}-*-of-*.tfrecord")))
    if shards:
        return shards
    legacy = os.path.join(data_dir, _LEGACY_FILE_NAMES[split])
    if os.path.isfile(legacy):
        return [legacy]
    raise FileNotFoundError(
        f"No {split} records in {data_dir!r}: expected {split}-*-of-*.tfrecord shards "
        f"(written by data/convert_voc.py) or {_LEGACY_FILE_NAMES[split]!r}."
    )


def count_examples(files):
    """The number of records in `files` (a file name or a list of them), read end to end."""
    return int(tf.data.TFRecordDataset(files).reduce(np.int64(0), lambda count, _: count + 1))


def _bytes_feature(value):
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _int64_feature(value):
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))


def encode_example(image_jpeg, label_png, height, width):
    """A serialized `tf.train.Example` from JPEG image bytes and one-channel PNG label bytes."""
    feature = {
        constants.IMAGE_HEIGHT: _int64_feature(height),
        constants.IMAGE_WIDTH: _int64_feature(width),
        constants.IMAGE_ENCODED: _bytes_feature(image_jpeg),
        constants.IMAGE_FORMAT: _bytes_feature(b"jpeg"),
        constants.LABEL_ENCODED: _bytes_feature(label_png),
        constants.LABEL_FORMAT: _bytes_feature(b"png"),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


_FEATURES = {
    constants.IMAGE_ENCODED: tf.io.FixedLenFeature((), tf.string),
    constants.IMAGE_FORMAT: tf.io.FixedLenFeature((), tf.string, default_value="jpeg"),
    constants.IMAGE_HEIGHT: tf.io.FixedLenFeature((), tf.int64),
    constants.IMAGE_WIDTH: tf.io.FixedLenFeature((), tf.int64),
    constants.LABEL_ENCODED: tf.io.FixedLenFeature((), tf.string),
    constants.LABEL_FORMAT: tf.io.FixedLenFeature((), tf.string, default_value="png"),
}


def parse_example(serialized):
    """Decodes one serialized example (graph-compatible, for `tf.data`).

    Returns:
        (image, label): uint8 [H, W, 3] RGB and uint8 [H, W, 1] class indices.
    """
    features = tf.io.parse_single_example(serialized, _FEATURES)
    image = tf.io.decode_jpeg(features[constants.IMAGE_ENCODED], channels=3)
    label = tf.io.decode_png(features[constants.LABEL_ENCODED], channels=1)
    height = tf.cast(features[constants.IMAGE_HEIGHT], tf.int32)
    width = tf.cast(features[constants.IMAGE_WIDTH], tf.int32)
    image = tf.ensure_shape(tf.reshape(image, [height, width, 3]), [None, None, 3])
    label = tf.ensure_shape(tf.reshape(label, [height, width, 1]), [None, None, 1])
    return image, label
