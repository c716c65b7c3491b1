"""Record files damaged the ways disks and bad conversions damage them, for the bad-record tests."""

import os

import tensorflow as tf

from tf_pacseg import constants
from tf_pacseg.data import framing

# Each fault, and the `record_check` problem it makes.
FAULTS = {
    "truncated": "truncated",
    "corrupted": "corrupted",
    "bad_image": "image does not decode",
    "label_size": "size mismatch",
    "missing_key": "missing or malformed feature",
}
# The faults that end what TensorFlow's reader can read of the file.
FILE_DAMAGE = ("truncated", "corrupted")


def rewrite(path, position, change):
    """Rewrites the file with `change(features)` applied to the example at `position`."""
    examples = [tf.train.Example.FromString(r.numpy()) for r in tf.data.TFRecordDataset(path)]
    change(examples[position].features.feature)
    with tf.io.TFRecordWriter(path) as writer:
        for example in examples:
            writer.write(example.SerializeToString())


def _other_size_label(features):
    label = tf.io.decode_png(features[constants.LABEL_ENCODED].bytes_list.value[0])
    features[constants.LABEL_ENCODED].bytes_list.value[0] = tf.io.encode_png(label[1:, 1:]).numpy()


def damage(path, position, fault):
    """Damages the record at `position` of the record file `path` with `fault` (`FAULTS`).

    "truncated" cuts the file in the middle of the record (the records after
    it are gone); "corrupted" flips a byte of its data; the others rewrite
    the file with the record's image not a JPEG, its label one pixel smaller
    each way, or without its label.
    """
    frame = framing.read_frames(path)[0][position]
    data_start = frame.offset + 12
    if fault == "truncated":
        os.truncate(path, data_start + frame.length // 2)
    elif fault == "corrupted":
        with open(path, "r+b") as f:
            f.seek(data_start + frame.length // 2)
            byte = f.read(1)[0]
            f.seek(data_start + frame.length // 2)
            f.write(bytes([byte ^ 0xFF]))
    elif fault == "bad_image":

        def not_a_jpeg(features):
            features[constants.IMAGE_ENCODED].bytes_list.value[0] = b"not a jpeg"

        rewrite(path, position, not_a_jpeg)
    elif fault == "label_size":
        rewrite(path, position, _other_size_label)
    elif fault == "missing_key":
        rewrite(path, position, lambda features: features.__delitem__(constants.LABEL_ENCODED))
    else:
        raise ValueError(f"Unknown fault {fault!r}; expected one of {sorted(FAULTS)}.")
    return path
