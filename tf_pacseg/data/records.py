"""TFRecord examples: the writer's encoding and the reader's parsing in one place.

Keys and formats are those of the original converter, so its
`voc_train.record` / `voc_val.record` files read like our shards
(docs/design.md §5).
"""

import glob
import itertools
import os
import re

import numpy as np
import tensorflow as tf
from absl import logging

from tf_pacseg import checks, constants, files

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
    checks.one_of("split", split, SPLITS)
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


def write_shards(output_path, split, examples, num_examples, num_shards):
    """Writes serialized examples to the `num_shards` shard files of `split`, in order.

    Example `index` goes to shard `index * num_shards // num_examples`: each
    shard holds a contiguous run, so reading the shards in name order gives
    the examples' order; shards past the last example are written empty.
    Every shard is written under a temporary name and all are renamed only
    once all are written: an interrupted run leaves no file that looks
    finished. Shards of `split` with another shard count, left by an earlier
    run, are then deleted.

    Args:
        output_path: str. The folder (created if needed).
        split: str. Names the shards (`shard_file_name`).
        examples: iterable of `num_examples` serialized examples, with `None`
            for a skipped sample (it keeps its place in the runs).
        num_examples: int.
        num_shards: int.

    Returns:
        (the shard paths, the number of examples written).
    """
    os.makedirs(output_path, exist_ok=True)
    paths = [
        os.path.join(output_path, shard_file_name(split, i, num_shards)) for i in range(num_shards)
    ]
    temporary = [files.temporary_path(p) for p in paths]
    # starts[shard] = ceil(shard * num_examples / num_shards), the shard's first index.
    starts = [-(-shard * num_examples // num_shards) for shard in range(num_shards + 1)]
    examples = iter(examples)
    num_written = 0
    try:
        for path, start, stop in zip(temporary, starts[:-1], starts[1:], strict=True):
            with tf.io.TFRecordWriter(path) as writer:
                for example in itertools.islice(examples, stop - start):
                    if example is not None:
                        writer.write(example)
                        num_written += 1
        for tmp, path in zip(temporary, paths, strict=True):
            os.replace(tmp, path)
    finally:
        for tmp in temporary:
            if os.path.exists(tmp):
                os.remove(tmp)
    _remove_stale_shards(output_path, split, num_shards)
    return paths, num_written


def _remove_stale_shards(output_path, split, num_shards):
    """Deletes shards of `split` left by an earlier run with another shard count."""
    pattern = re.compile(rf"{re.escape(split)}-\d{{5}}-of-(\d{{5}})\.tfrecord")
    for name in sorted(os.listdir(output_path)):
        match = pattern.fullmatch(name)
        if match and int(match.group(1)) != num_shards:
            logging.info("Removing %s, a shard of an earlier conversion.", name)
            os.remove(os.path.join(output_path, name))


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
