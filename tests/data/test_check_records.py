"""The record checker: every kind of bad record named by file, position and id."""

import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from helpers import REPO

from tf_pacseg import constants
from tf_pacseg.data import framing, record_check, records, synthetic

HEIGHT, WIDTH = 24, 32


def _encoded_sample(seed, label_shape=None, label_value=None):
    """(JPEG bytes, PNG bytes) of a synthetic sample; the label optionally resized or filled."""
    image, label = synthetic.make_sample(np.random.default_rng(seed), HEIGHT, WIDTH)
    if label_shape is not None:
        label = np.zeros(label_shape, np.uint8)
    if label_value is not None:
        label[2:5, 3:9] = label_value
    jpeg = tf.io.encode_jpeg(image).numpy()
    return jpeg, tf.io.encode_png(label[..., None]).numpy()


def _example(seed, **label_changes):
    return records.encode_example(*_encoded_sample(seed, **label_changes), HEIGHT, WIDTH)


def _example_from_features(features):
    """A serialized example of {key: bytes or int}, for keys our writer would not write."""

    def feature(value):
        if isinstance(value, bytes):
            return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[value]))

    feature_map = {key: feature(value) for key, value in features.items()}
    example = tf.train.Example(features=tf.train.Features(feature=feature_map))
    return example.SerializeToString()


def _original_features(seed):
    jpeg, png = _encoded_sample(seed)
    return {
        constants.IMAGE_HEIGHT: HEIGHT,
        constants.IMAGE_WIDTH: WIDTH,
        constants.IMAGE_ENCODED: jpeg,
        constants.IMAGE_FORMAT: b"jpeg",
        constants.LABEL_ENCODED: png,
        constants.LABEL_FORMAT: b"png",
    }


def _write(path, examples):
    with tf.io.TFRecordWriter(str(path)) as writer:
        for example in examples:
            writer.write(example)
    return str(path)


def _shard(directory, index, num_shards, examples, split="train"):
    return _write(
        os.path.join(directory, records.shard_file_name(split, index, num_shards)), examples
    )


def _frame(path, position):
    frames, broken = framing.read_frames(path)
    assert broken is None
    return frames[position]


def _flip_byte(path, offset):
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


def _problems(report):
    return [(bad.position, bad.problem) for bad in report.bad]


def _run_checker(data_dir, *flags):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    return subprocess.run(
        [sys.executable, "data/check_records.py", f"--data_dir={data_dir}", *flags],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_framing_walk_finds_every_record_tensorflow_wrote(tmp_path):
    examples = [_example(0), b"", _example(1)]
    path = _shard(tmp_path, 0, 1, examples)
    frames, broken = framing.read_frames(path)
    assert broken is None and [frame.length for frame in frames] == list(map(len, examples))
    with open(path, "rb") as f:
        assert [framing.read_record(f, frame) for frame in frames] == [(e, True) for e in examples]


def test_clean_shards_have_no_bad_record(tmp_path):
    paths = [_shard(tmp_path, i, 2, [_example(2 * i), _example(2 * i + 1)]) for i in range(2)]
    done = []
    reports = record_check.check_record_files(paths, on_report=done.append)
    assert [r.shard for r in reports] == paths and sorted(r.shard for r in done) == paths
    assert [(r.num_records, r.bad) for r in reports] == [(2, ()), (2, ())]
    assert "2 records, all readable" in reports[0].summary()


def test_a_file_cut_inside_a_record_is_truncated_at_that_position(tmp_path):
    path = _shard(tmp_path, 0, 1, [_example(i) for i in range(3)])
    frame = _frame(path, 2)
    os.truncate(path, frame.offset + 12 + frame.length // 2)
    report = record_check.scan_shard(path)
    assert _problems(report) == [(2, record_check.TRUNCATED)]
    assert report.bad[0].offset == frame.offset and report.num_records == 3


def test_a_file_cut_inside_a_record_header_is_truncated(tmp_path):
    # TensorFlow's reader takes such a file for two intact records and a clean end.
    path = _shard(tmp_path, 0, 1, [_example(i) for i in range(3)])
    os.truncate(path, _frame(path, 2).offset + 5)
    assert records.count_examples(path) == 2
    assert _problems(record_check.scan_shard(path)) == [(2, record_check.TRUNCATED)]


def test_flipped_bytes_are_corrupted_and_the_records_after_them_still_checked(tmp_path):
    examples = [_example(0), _example(1), _example(2), _example(3, label_value=30)]
    path = _shard(tmp_path, 0, 1, examples)
    frame = _frame(path, 1)
    _flip_byte(path, frame.offset + 12 + frame.length // 2)
    report = record_check.scan_shard(path)
    assert _problems(report) == [(1, record_check.CORRUPTED), (3, record_check.BAD_LABEL_VALUES)]
    assert report.num_records == 4
    assert "CRC" in report.bad[0].detail


def test_a_flipped_length_header_stops_the_walk_there(tmp_path):
    path = _shard(tmp_path, 0, 1, [_example(i) for i in range(3)])
    _flip_byte(path, _frame(path, 1).offset + 3)
    report = record_check.scan_shard(path)
    assert _problems(report) == [(1, record_check.CORRUPTED)]
    assert "length header" in report.bad[0].detail


@pytest.mark.parametrize(
    "example, problem, detail",
    [
        (
            records.encode_example(b"not a jpeg", _encoded_sample(0)[1], HEIGHT, WIDTH),
            record_check.BAD_IMAGE,
            "`image/encoded` (10 bytes) is not a decodable JPEG: Unknown image file format",
        ),
        (
            records.encode_example(_encoded_sample(0)[0], b"\x89PNG...", HEIGHT, WIDTH),
            record_check.BAD_LABEL,
            "not a decodable PNG",
        ),
        (
            _example(0, label_shape=(HEIGHT + 1, WIDTH)),
            record_check.SIZE_MISMATCH,
            f"the label is {HEIGHT + 1}x{WIDTH} but",
        ),
        (
            records.encode_example(*_encoded_sample(0), HEIGHT, WIDTH + 2),
            record_check.SIZE_MISMATCH,
            f"the image is {HEIGHT}x{WIDTH} but",
        ),
        (
            _example(0, label_value=21),
            record_check.BAD_LABEL_VALUES,
            "label values [21] are neither below num_classes=21 nor the ignore label 255",
        ),
        (
            _example_from_features(
                {k: v for k, v in _original_features(0).items() if k != constants.LABEL_ENCODED}
            ),
            record_check.BAD_FEATURE,
            "it has no `label/encoded` feature",
        ),
        (
            _example_from_features({**_original_features(0), constants.IMAGE_HEIGHT: b"24"}),
            record_check.BAD_FEATURE,
            "`image/height` holds bytes_list, not one int64_list value",
        ),
        (b"\xff\x01not a proto", record_check.NOT_AN_EXAMPLE, "do not parse"),
    ],
    # Named, not shown: a serialized map's byte order differs between processes.
    ids=[
        "image_not_jpeg",
        "label_not_png",
        "label_size",
        "image_size",
        "label_values",
        "no_label",
        "height_as_bytes",
        "not_an_example",
    ],
)
def test_each_bad_record_is_named_with_its_shard_position_and_problem(
    tmp_path, example, problem, detail
):
    path = _shard(tmp_path, 1, 2, [_example(5), example, _example(6)])
    report = record_check.scan_shard(path)
    assert _problems(report) == [(1, problem)]
    bad = report.bad[0]
    assert detail in bad.detail
    assert (bad.shard, bad.offset, bad.record_id) == (path, _frame(path, 1).offset, None)
    line = str(bad)
    assert line.startswith(f"{path}: record 1 (byte {bad.offset}): {problem}: ")
    assert "data/convert_voc.py" in line


def test_the_ignore_label_and_num_classes_decide_which_label_values_are_bad(tmp_path):
    # Labels of zeros and one patch, without the synthetic void (255) borders.
    examples = [
        _example(i, label_shape=(HEIGHT, WIDTH), label_value=v) for i, v in [(0, 30), (1, 7)]
    ]
    path = _shard(tmp_path, 0, 1, examples)
    assert _problems(record_check.scan_shard(path)) == [(0, record_check.BAD_LABEL_VALUES)]
    assert record_check.scan_shard(path, num_classes=31).bad == ()
    report = record_check.scan_shard(path, num_classes=5, ignore_label=30)
    assert _problems(report) == [(1, record_check.BAD_LABEL_VALUES)]
    assert "label values [7] are neither below num_classes=5 nor the ignore label 30" in str(
        report.bad[0]
    )


def test_an_original_voc_record_file_is_checked_and_ids_are_shown_when_present(tmp_path):
    bad = {**_original_features(1), constants.LABEL_ENCODED: _encoded_sample(1, label_value=40)[1]}
    path = _write(
        tmp_path / "voc_train.record",
        [
            _example_from_features(_original_features(0)),
            _example_from_features({**bad, "image/filename": b"2007_000032"}),
        ],
    )
    assert record_check.find_all_record_files(str(tmp_path)) == [path]
    report = record_check.scan_shard(path)
    assert _problems(report) == [(1, record_check.BAD_LABEL_VALUES)]
    assert report.bad[0].record_id == "2007_000032"
    assert f"{path}: record 1 (byte {report.bad[0].offset}, id '2007_000032'): " in str(
        report.bad[0]
    )


def test_describe_bad_record_reads_one_record(tmp_path):
    path = _shard(tmp_path, 0, 1, [_example(0), _example(1, label_value=50), _example(2)])
    described = record_check.describe_bad_record(path, 1)
    assert described == record_check.scan_shard(path).bad[0]
    assert record_check.describe_bad_record(path, 2) is None
    with pytest.raises(ValueError, match=r"a record position below 3 .* Received: position=3"):
        record_check.describe_bad_record(path, 3)
    os.truncate(path, _frame(path, 1).offset + 20)
    for position in (1, 2):
        described = record_check.describe_bad_record(path, position)
        assert (described.position, described.problem) == (1, record_check.TRUNCATED)


def test_a_folder_without_records_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="No records in .*voc_train.record"):
        record_check.find_all_record_files(str(tmp_path))


def test_the_script_exits_0_on_clean_records_and_1_naming_each_bad_one(tmp_path):
    clean, damaged = tmp_path / "clean", tmp_path / "damaged"
    for folder in (clean, damaged):
        folder.mkdir()
        _shard(folder, 0, 2, [_example(0), _example(1)])
        _shard(folder, 0, 1, [_example(2)], split="val")
    # The damaged set's second train shard: a bad label, then a cut record.
    path = _shard(damaged, 1, 2, [_example(3), _example(4, label_value=22), _example(5)])
    _shard(clean, 1, 2, [_example(3)])
    os.truncate(path, _frame(path, 2).offset + 40)

    result = _run_checker(clean)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "All 4 records of 3 files are readable." in result.stdout
    assert result.stdout.count("all readable") == 3

    result = _run_checker(damaged)
    assert result.returncode == 1, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert any(line.startswith(f"{path}: record 1 (byte ") for line in lines), lines
    assert any(line.startswith(f"{path}: record 2 (byte ") for line in lines), lines
    assert f"{path}: 3 records, 2 bad" in result.stdout
    assert "2 bad records of 6, in 1 of 3 files" in result.stderr
