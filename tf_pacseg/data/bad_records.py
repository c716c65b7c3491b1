"""Records that training or evaluation cannot read: named in one line, or left out.

TensorFlow-only module. The input reads records through `tf.data`, which
interleaves and shuffles, so an error coming out of it names neither the file
nor the record ("truncated record at 9245", or a `DecodeJpeg` error from
inside the iterator). On such an error (`READ_ERRORS`), `located_error` reads
every record of the run's files with `record_check`, once, on this failure
path (about a minute per CPU core for VOC's 10582 training images), and
returns a `BadRecordError`: its message is the one line to show, with the
shard, the record's position in it (and its id when it holds one), what is
wrong and what to do.

With --skip_bad_records, `scan` does that reading before the run starts, and
the input leaves the records it found out (`SkipList`, given to
`sharding.read_records`) at the record level, before the shuffle: the list is
fixed for the run, so an epoch is the readable records, in an order drawn as
from any files, and the input position kept in checkpoints (batches read)
counts readable records only; a resumed run scans again, finds the same list
and goes on at the same good record, replaying and skipping none. (Dropping
errors with `tf.data.Dataset.ignore_errors` after the shuffle would shift
every later batch by the records dropped, so that a resume no longer lands
on the same record; before the shuffle it would cost a second decoding of
every image in every epoch, and it names nothing. The scan decodes each
image once per run and names each record it leaves out.)

What is left out: a record that reads but does not parse (not a
`tf.train.Example`, a missing or malformed feature, an image or label that
does not decode, or whose size is not the example's `image/height` x
`image/width`) is skipped alone. A damaged file (cut short, or with changed
bytes in a record: `record_check`'s `truncated` and `corrupted`) is read up
to the damaged record: TensorFlow's reader cannot go past it, so the rest of
that shard is lost, and counted as skipped; the other shards are read whole.
Label values out of range are not a reading error (training reads such
labels, and evaluation names them); data/check_records.py reports them.
"""

import dataclasses
import os
import re

import tensorflow as tf
from absl import logging

from tf_pacseg.data import record_check

# The errors that reading a bad record raises out of a `tf.data` iterator.
READ_ERRORS = (tf.errors.DataLossError, tf.errors.InvalidArgumentError)

# Damage to the file: TensorFlow's reader stops there (DataLossError).
_DAMAGE = (record_check.TRUNCATED, record_check.CORRUPTED)
# A record that reads, but does not parse (InvalidArgumentError).
_UNPARSABLE = tuple(
    problem
    for problem in record_check.PROBLEMS
    if problem not in _DAMAGE and problem != record_check.BAD_LABEL_VALUES
)
# "truncated record at 9245", "corrupted record at 1468" (the header's or the data's offset).
_DAMAGE_OFFSET = re.compile(r"(?:truncated|corrupted) record at (\d+)")
# How far a record's data starts after its header.
_HEADER_BYTES = 12


class BadRecordError(ValueError):
    """A record that cannot be read stopped the run; the message names it and what to do."""


def describe(bad):
    """How a run names a `record_check.BadRecord`, in the words of evaluation's other messages.

    E.g. "example 3 of record file dataset/train-00001-of-00004.tfrecord (byte
    9245): truncated: ... To fix: ...".
    """
    named = f", id {bad.record_id!r}" if bad.record_id else ""
    return (
        f"example {bad.position} of record file {bad.shard} (byte {bad.offset}{named}): "
        f"{bad.problem}: {bad.detail.rstrip('.')}. To fix: {bad.remedy}."
    )


def _key(path):
    return os.path.normpath(path)


def _unreadable(report):
    """The `BadRecord`s of a `ShardReport` that stop reading, in file order."""
    return [bad for bad in report.bad if bad.problem != record_check.BAD_LABEL_VALUES]


@dataclasses.dataclass(frozen=True)
class SkipList:
    """The records a run leaves out of its files (see the module docstring); made by `scan`.

    Attributes:
        num_records: dict {file: int}. Records found in each file, bad ones
            included.
        ends: dict {file: int}. For a damaged file, the position of its
            damaged record: only the records before it are read.
        bad: dict {file: tuple of int}. Positions of the records skipped
            alone, before any damage, in file order.
        skipped: tuple of `record_check.BadRecord`. The records left out
            (a damaged file's first damaged record standing for the rest of
            the file), as logged.
    """

    num_records: dict
    ends: dict
    bad: dict
    skipped: tuple

    @classmethod
    def of(cls, reports):
        """The `SkipList` of `record_check.ShardReport`s."""
        num_records, ends, bad, skipped = {}, {}, {}, []
        for report in reports:
            key = _key(report.shard)
            num_records[key] = report.num_records
            found = _unreadable(report)
            damage = [b for b in found if b.problem in _DAMAGE]
            end = damage[0].position if damage else report.num_records
            if damage:
                ends[key] = end
            alone = [b for b in found if b.position < end]
            bad[key] = tuple(b.position for b in alone)
            skipped.extend(alone + damage[:1])
        return cls(num_records, ends, bad, tuple(skipped))

    @property
    def num_skipped(self):
        """int. Records left out of all the files (a damaged file's rest included)."""
        return sum(self.num_records.values()) - self.num_readable(self.num_records)

    def limit(self, path):
        """Records of `path` to read (then `bad_positions` left out); -1: all of them."""
        return self.ends.get(_key(path), -1)

    def bad_positions(self, path):
        """Positions of the records of `path` skipped alone."""
        return self.bad[_key(path)]

    def readable(self, path):
        """The number of records of `path` that are read."""
        key = _key(path)
        return self.ends.get(key, self.num_records[key]) - len(self.bad[key])

    def num_readable(self, paths):
        """The number of records of `paths` that are read."""
        return sum(self.readable(path) for path in paths)

    def position(self, path, index):
        """The position in `path` of its `index`-th readable record (both from 0)."""
        for bad in self.bad_positions(path):
            if bad > index:
                break
            index += 1
        return index

    def log_lines(self):
        """One line per record left out: what `scan` logs."""
        lines = []
        for bad in self.skipped:
            line = f"Skipping {describe(bad)}"
            lost = self.num_records[_key(bad.shard)] - bad.position - 1
            if bad.problem in _DAMAGE and lost:
                line += (
                    f" The {lost} records after it in this file are skipped too: the reader "
                    "cannot go past a damaged record."
                )
            lines.append(line)
        return lines


# {(file, size, modification time) of each file: its SkipList} of the files scanned.
_scanned = {}


def scan(files):
    """Reads every record of `files` and returns the `SkipList` of those that cannot be read.

    Logs a line per record left out, and the count. Files scanned before in
    this process and unchanged since (size, modification time) are not read
    again, nor logged again: training evaluates on the same val records many
    times.

    Args:
        files: list of str. Record files.

    Returns:
        `SkipList`.
    """
    key = tuple((name, os.stat(name).st_size, os.stat(name).st_mtime_ns) for name in files)
    if key in _scanned:
        return _scanned[key]
    logging.info(
        "--skip_bad_records: checking every record of %d file(s) before reading them.", len(files)
    )
    skip = SkipList.of(record_check.check_record_files(files))
    for line in skip.log_lines():
        logging.warning(line)
    logging.info(
        "--skip_bad_records: %d of %d records skipped.",
        skip.num_skipped,
        sum(skip.num_records.values()),
    )
    _scanned[key] = skip
    return skip


def _pick(found, error):
    """The `BadRecord` of `found` that `error` most likely came from, or None."""
    kinds = _DAMAGE if isinstance(error, tf.errors.DataLossError) else _UNPARSABLE
    candidates = [bad for bad in found if bad.problem in kinds]
    match = _DAMAGE_OFFSET.search(error.message)
    if match:
        offset = int(match.group(1))
        at = [bad for bad in candidates if offset in (bad.offset, bad.offset + _HEADER_BYTES)]
        candidates = at or candidates
    return candidates[0] if candidates else None


def located_error(files, error, advice):
    """The `BadRecordError` naming the record of `files` that `error` came from, or None.

    Reads every record of `files` (`record_check.check_record_files`): the
    input interleaves and shuffles them, so `error` does not say which it was.

    Args:
        files: list of str. The record files the failing input reads.
        error: one of `READ_ERRORS`, raised by the input.
        advice: str. What the message ends with (what happened to the run,
            and what else to do).

    Returns:
        `BadRecordError`, or None when every record of `files` reads (the
        error comes from something else).
    """
    logging.info("Reading every record of %d file(s) to find the one that failed.", len(files))
    found = [
        bad for report in record_check.check_record_files(files) for bad in _unreadable(report)
    ]
    bad = _pick(found, error)
    if bad is None:
        return None
    others = len(found) - 1
    listed = f"{others} more unreadable record(s) in these files; " if others else ""
    check = f"python data/check_records.py --data_dir={os.path.dirname(bad.shard) or '.'}"
    return BadRecordError(
        f"Cannot read {describe(bad)} {listed}{check} lists every bad one. {advice}"
    )
