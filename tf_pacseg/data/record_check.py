"""Finds the records that training cannot read, and says which and why.

A record is named by its shard file, its position in the shard (0-based) and
its byte offset, with its id when the record holds one. Each is checked as
training reads it: the TFRecord framing and CRCs, then the `tf.train.Example`
and its features (`records.parse_example`'s keys), the image decoded with
`tf.io.decode_jpeg(channels=3)` (which, as in training, also takes a PNG) and
the label with `tf.io.decode_png(channels=1)`, their sizes against
`image/height` and `image/width`, and the label values (below `num_classes`,
or the ignore label).

Example:

```python
reports = check_record_files(find_all_record_files("dataset"))
for report in reports:
    for bad in report.bad:
        print(bad)
```

Training and evaluation can name a record they failed on with
`describe_bad_record(shard_path, position)`.
"""

import concurrent.futures
import dataclasses
import os
import re
import threading
import time

import numpy as np
import tensorflow as tf
from google.protobuf import message

from tf_pacseg import checks, constants
from tf_pacseg.data import framing, records
from tf_pacseg.data.framing import CORRUPTED, TRUNCATED

# What is wrong with a record (`BadRecord.problem`).
NOT_AN_EXAMPLE = "not a tf.train.Example"
BAD_FEATURE = "missing or malformed feature"
BAD_IMAGE = "image does not decode"
BAD_LABEL = "label does not decode"
SIZE_MISMATCH = "size mismatch"
BAD_LABEL_VALUES = "label values out of range"
PROBLEMS = (
    TRUNCATED,
    CORRUPTED,
    NOT_AN_EXAMPLE,
    BAD_FEATURE,
    BAD_IMAGE,
    BAD_LABEL,
    SIZE_MISMATCH,
    BAD_LABEL_VALUES,
)

_RECONVERT = "reconvert the split with data/convert_voc.py (it rewrites all its shards)"
# The file was damaged after it was written (full disk, interrupted or faulty copy).
_RECOPY = f"copy the file again from an intact copy, or {_RECONVERT}"
_REMEDIES = {
    TRUNCATED: _RECOPY,
    CORRUPTED: _RECOPY,
    BAD_LABEL_VALUES: f"pass the --num_classes the records are for, or {_RECONVERT}",
}

# Keys other converters store a sample's id under; ours and the original's store none.
_ID_KEYS = ("image/filename", "image/source_id")

# Required features and their kinds, as `records.parse_example` reads them.
_REQUIRED = {
    constants.IMAGE_ENCODED: "bytes_list",
    constants.IMAGE_HEIGHT: "int64_list",
    constants.IMAGE_WIDTH: "int64_list",
    constants.LABEL_ENCODED: "bytes_list",
}
_OPTIONAL = {constants.IMAGE_FORMAT: "bytes_list", constants.LABEL_FORMAT: "bytes_list"}

# `check_record_files` scans files in threads; a `tf.data` dataset is built by
# tracing functions in Python, which crashed once when threads did it at once.
_BUILDING_DATASET = threading.Lock()


@dataclasses.dataclass(frozen=True)
class BadRecord:
    """A record that training cannot read, or reads wrong; `str()` is the report line.

    Attributes:
        shard: str. The record file.
        position: int. The record's index in the shard, from 0.
        offset: int. The byte offset of its header in the file.
        problem: str. One of `PROBLEMS`.
        detail: str. What exactly is wrong.
        record_id: str or None. The sample's id, when the record holds one.
    """

    shard: str
    position: int
    offset: int
    problem: str
    detail: str
    record_id: str | None = None

    @property
    def remedy(self):
        """str. What to do about it."""
        return _REMEDIES.get(self.problem, _RECONVERT)

    def __str__(self):
        named = f", id {self.record_id!r}" if self.record_id else ""
        return (
            f"{self.shard}: record {self.position} (byte {self.offset}{named}): "
            f"{self.problem}: {self.detail.rstrip('.')}. To fix: {self.remedy}."
        )


@dataclasses.dataclass(frozen=True)
class ShardReport:
    """The result of reading one shard to its end.

    Attributes:
        shard: str. The record file.
        num_records: int. Records found, bad ones included.
        bad: tuple of `BadRecord`, in file order.
        seconds: float. Time taken.
    """

    shard: str
    num_records: int
    bad: tuple
    seconds: float = 0.0

    def summary(self):
        """One line: the shard, its record count and its bad records."""
        verdict = f"{len(self.bad)} bad" if self.bad else "all readable"
        return f"{self.shard}: {self.num_records} records, {verdict} ({self.seconds:.1f} s)"


def record_id(serialized):
    """The sample id a serialized example holds (`image/filename`, ...), else None."""
    try:
        features = tf.train.Example.FromString(serialized).features.feature
    except message.DecodeError:
        return None
    for key in _ID_KEYS:
        values = features[key].bytes_list.value if key in features else ()
        if len(values) == 1:
            return values[0].decode("utf-8", "replace")
    return None


def _feature_problem(features):
    """What is wrong with the example's features, or None."""
    for key, kind in (*_REQUIRED.items(), *_OPTIONAL.items()):
        if key not in features:
            if key in _REQUIRED:
                return f"it has no `{key}` feature"
            continue
        feature = features[key]
        count = len(getattr(feature, kind).value)
        if feature.WhichOneof("kind") != kind or count != 1:
            found = feature.WhichOneof("kind") or "nothing"
            return f"`{key}` holds {count if found == kind else found}, not one {kind} value"
    return None


# TensorFlow's op errors start with `{{function_node ...}}` and end with `[Op:Name]`.
_OP_ERROR_NOISE = re.compile(r"^\{\{.*?\}\}\s*|\s*\[Op:\w+\].*$", re.DOTALL)


def _decode(features, key, decode, kind):
    """(decoded array, None), or (None, why `features[key]` does not decode)."""
    encoded = features[key].bytes_list.value[0]
    try:
        return decode(encoded).numpy(), None
    except tf.errors.InvalidArgumentError as error:
        why = _OP_ERROR_NOISE.sub("", error.message)
        return None, f"`{key}` ({len(encoded)} bytes) is not a decodable {kind}: {why}"


def check_example(
    serialized, num_classes=constants.NUM_CLASSES, ignore_label=constants.IGNORE_LABEL
):
    """What training would find wrong with one serialized example, or None.

    Args:
        serialized: bytes. The record's data.
        num_classes: int. Label values must be below this, or `ignore_label`.
            Defaults to 21.
        ignore_label: int. The label of pixels left out. Defaults to 255.

    Returns:
        `(problem, detail)`, `problem` one of `PROBLEMS`; or None.
    """
    try:
        features = tf.train.Example.FromString(serialized).features.feature
    except message.DecodeError as error:
        return NOT_AN_EXAMPLE, f"its {len(serialized)} bytes do not parse ({error})"
    problem = _feature_problem(features)
    if problem:
        return BAD_FEATURE, problem
    size = (
        features[constants.IMAGE_HEIGHT].int64_list.value[0],
        features[constants.IMAGE_WIDTH].int64_list.value[0],
    )
    image, problem = _decode(
        features, constants.IMAGE_ENCODED, lambda x: tf.io.decode_jpeg(x, channels=3), "JPEG"
    )
    if problem:
        return BAD_IMAGE, problem
    label, problem = _decode(
        features, constants.LABEL_ENCODED, lambda x: tf.io.decode_png(x, channels=1), "PNG"
    )
    if problem:
        return BAD_LABEL, problem
    declared = f"`{constants.IMAGE_HEIGHT}` x `{constants.IMAGE_WIDTH}` say {size[0]}x{size[1]}"
    if image.shape[:2] != size:
        return SIZE_MISMATCH, f"the image is {image.shape[0]}x{image.shape[1]} but {declared}"
    if label.shape[:2] != size:
        return SIZE_MISMATCH, f"the label is {label.shape[0]}x{label.shape[1]} but {declared}"
    return _label_value_problem(label, num_classes, ignore_label)


def _label_value_problem(label, num_classes, ignore_label):
    if label.size == 0 or label.max() < num_classes:
        return None
    present = np.flatnonzero(np.bincount(label.ravel(), minlength=256))
    bad = [int(v) for v in present if v >= num_classes and v != ignore_label]
    if not bad:
        return None
    listed = ", ".join(map(str, bad[:10])) + (" ..." if len(bad) > 10 else "")
    return BAD_LABEL_VALUES, (
        f"label values [{listed}] are neither below num_classes={num_classes} "
        f"nor the ignore label {ignore_label}"
    )


def _check_body(path, position, offset, data, crc_ok, num_classes, ignore_label):
    """The `BadRecord` of a framed record's data, or None."""
    if crc_ok:
        found = check_example(data, num_classes, ignore_label)
        if found is None:
            return None
        problem, detail = found
    else:
        problem, detail = CORRUPTED, f"the CRC of its {len(data)} data bytes does not match"
    return BadRecord(path, position, offset, problem, detail, record_id(data))


def scan_shard(path, num_classes=constants.NUM_CLASSES, ignore_label=constants.IGNORE_LABEL):
    """Reads every record of one record file, and checks each as training would.

    A corrupted record does not end the scan: the records after it are still
    checked, as long as the framing locates them.

    Args:
        path: str. A TFRecord file (our shard, or the original's `voc_*.record`).
        num_classes: int. Label values must be below this, or `ignore_label`.
            Defaults to 21.
        ignore_label: int. The label of pixels left out. Defaults to 255.

    Returns:
        A `ShardReport`.
    """
    start = time.monotonic()
    frames, broken = framing.read_frames(path)
    bad = []
    # TensorFlow's reader checks the CRCs in C++, far faster than `framing`;
    # it cannot go past a corrupted record, so the rest is read by `framing`.
    with _BUILDING_DATASET:
        dataset = iter(tf.data.TFRecordDataset(path))
    with open(path, "rb") as f:
        for position, frame in enumerate(frames):
            if dataset is not None:
                try:
                    data, crc_ok = next(dataset).numpy(), True
                except (tf.errors.DataLossError, StopIteration):
                    dataset = None
            if dataset is None:
                data, crc_ok = framing.read_record(f, frame)
            found = _check_body(
                path, position, frame.offset, data, crc_ok, num_classes, ignore_label
            )
            if found:
                bad.append(found)
    if broken:
        bad.append(BadRecord(path, *broken))
    return ShardReport(path, len(frames) + bool(broken), tuple(bad), time.monotonic() - start)


def describe_bad_record(
    shard_path, position, num_classes=constants.NUM_CLASSES, ignore_label=constants.IGNORE_LABEL
):
    """What is wrong with the record at `position` of `shard_path`, or None if nothing is.

    Reads only that record (and the headers before it): for training or
    evaluation to name the record they failed on.

    Args:
        shard_path: str. The record file.
        position: int. The record's index in the file, from 0.
        num_classes, ignore_label: as in `scan_shard`.

    Returns:
        A `BadRecord` (the framing's, if the file breaks before `position`), or None.

    Raises:
        ValueError: the file is intact and holds no record at `position`.
    """
    checks.non_negative_int("position", position)
    frames, broken = framing.read_frames(shard_path)
    if position >= len(frames):
        if broken:
            return BadRecord(shard_path, *broken)
        raise checks.invalid(
            "position",
            f"a record position below {len(frames)} (the records in {shard_path})",
            position,
        )
    with open(shard_path, "rb") as f:
        data, crc_ok = framing.read_record(f, frames[position])
    return _check_body(
        shard_path, position, frames[position].offset, data, crc_ok, num_classes, ignore_label
    )


def find_all_record_files(data_dir):
    """The record files that training and evaluation read from `data_dir`, both splits.

    Raises:
        FileNotFoundError: neither split has records there.
    """
    found = []
    for split in records.SPLITS:
        try:
            found.extend(records.find_record_files(data_dir, split))
        except FileNotFoundError:
            continue
    if not found:
        raise FileNotFoundError(
            f"No records in {data_dir!r}: expected train-*-of-*.tfrecord and "
            "val-*-of-*.tfrecord shards (written by data/convert_voc.py), or the original's "
            "voc_train.record and voc_val.record."
        )
    return found


def check_record_files(
    paths,
    num_classes=constants.NUM_CLASSES,
    ignore_label=constants.IGNORE_LABEL,
    num_workers=None,
    on_report=None,
):
    """`scan_shard` of every file, several at once (one thread per file).

    Args:
        paths: list of str. The record files.
        num_classes, ignore_label: as in `scan_shard`.
        num_workers: int or None. Files read at once; `None`: one per CPU, at
            most one per file. Defaults to `None`.
        on_report: callable or None. Called with each `ShardReport` as soon as
            its file is done (for progress). Defaults to `None`.

    Returns:
        The `ShardReport`s, in the order of `paths`.
    """
    checks.positive_int("num_classes", num_classes)
    checks.int_in_range("ignore_label", ignore_label, 0, 255)
    if num_workers is None:
        num_workers = max(1, min(len(paths), os.cpu_count() or 1))
    checks.positive_int("num_workers", num_workers)
    reports = {}
    # Threads suffice: TensorFlow's decoders, which take most of the time, release the GIL.
    executor = concurrent.futures.ThreadPoolExecutor(num_workers)
    try:
        futures = {
            executor.submit(scan_shard, path, num_classes, ignore_label): path for path in paths
        }
        for future in concurrent.futures.as_completed(futures):
            reports[futures[future]] = report = future.result()
            if on_report is not None:
                on_report(report)
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
    return [reports[path] for path in paths]
