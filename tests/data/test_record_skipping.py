"""Bad records in the input: located and named after an error, or left out (--skip_bad_records)."""

import numpy as np
import pytest
import tensorflow as tf
from damaged_records import FAULTS, FILE_DAMAGE, damage

from tf_pacseg.data import bad_records, pipelines, records, sharding, synthetic

HEIGHT, WIDTH = 24, 32
NUM_PER_SHARD = 5
BAD_POSITION = 2


def _example(seed):
    image, label = synthetic.make_sample(np.random.default_rng(seed), HEIGHT, WIDTH)
    jpeg, png = tf.io.encode_jpeg(image).numpy(), tf.io.encode_png(label[..., None]).numpy()
    return records.encode_example(jpeg, png, HEIGHT, WIDTH)


def _shards(directory, num_shards=2):
    """`num_shards` train shards of NUM_PER_SHARD distinct examples; (paths, examples per shard)."""
    paths, examples = [], []
    for shard in range(num_shards):
        path = str(directory / records.shard_file_name("train", shard, num_shards))
        shard_examples = [_example(shard * 100 + i) for i in range(NUM_PER_SHARD)]
        with tf.io.TFRecordWriter(path) as writer:
            for example in shard_examples:
                writer.write(example)
        paths.append(path)
        examples.append(shard_examples)
    return paths, examples


def _readable(examples, fault):
    """The examples of a shard that stay readable after `fault` at BAD_POSITION."""
    if fault in FILE_DAMAGE:
        return examples[:BAD_POSITION]
    return examples[:BAD_POSITION] + examples[BAD_POSITION + 1 :]


@pytest.fixture(params=sorted(FAULTS))
def damaged(request, tmp_path):
    """(fault, shard paths, the readable examples of each shard), the first shard damaged."""
    paths, examples = _shards(tmp_path)
    damage(paths[0], BAD_POSITION, request.param)
    return request.param, paths, [_readable(examples[0], request.param), examples[1]]


def _train_dataset(paths, **kwargs):
    return pipelines.train_dataset(
        paths,
        batch_size=1,
        crop_size=(HEIGHT, WIDTH),
        min_scale=1.0,
        max_scale=1.0,
        shuffle_buffer=4,
        seed=0,
        **kwargs,
    )


def test_the_skip_list_leaves_out_a_bad_record_or_the_rest_of_a_damaged_file(damaged):
    fault, paths, readable = damaged
    skip_list = bad_records.scan(paths)
    assert [skip_list.readable(path) for path in paths] == list(map(len, readable))
    # A cut file holds no trace of the records after the cut; a corrupted one does.
    assert skip_list.num_skipped == (NUM_PER_SHARD - BAD_POSITION if fault == "corrupted" else 1)
    assert [(bad.shard, bad.position, bad.problem) for bad in skip_list.skipped] == [
        (paths[0], BAD_POSITION, FAULTS[fault])
    ]
    (line,) = skip_list.log_lines()
    assert line.startswith(f"Skipping example {BAD_POSITION} of record file {paths[0]} (byte ")
    assert FAULTS[fault] in line
    if fault == "corrupted":
        assert "The 2 records after it in this file are skipped too" in line


def test_the_input_reads_exactly_the_readable_records_in_file_order(damaged):
    fault, paths, readable = damaged
    skip_list = bad_records.scan(paths)
    examples = sharding.read_records(paths, None, 1, deterministic=True, skip_list=skip_list)
    # Compared parsed: the damage rewrote the other examples, in another byte order.
    parsed = [tf.train.Example.FromString(e.numpy()) for e in examples]
    assert parsed == [tf.train.Example.FromString(e) for e in readable[0] + readable[1]]
    kept = [0, 1] if fault in FILE_DAMAGE else [0, 1, 3, 4]
    assert [skip_list.position(paths[0], i) for i in range(len(kept))] == kept


def test_an_epoch_of_training_batches_holds_the_readable_records_without_an_error(damaged):
    _, paths, readable = damaged
    skip_list = bad_records.scan(paths)
    batches = list(_train_dataset(paths, skip_list=skip_list))
    assert len(batches) == sum(map(len, readable))


def test_a_resumed_input_continues_at_the_same_good_record(damaged):
    _, paths, _ = damaged
    skip_list = bad_records.scan(paths)
    straight = list(_train_dataset(paths, skip_list=skip_list, repeat=True).take(12))
    resumed = list(_train_dataset(paths, skip_list=skip_list, repeat=True, start_step=5).take(7))
    for (images, labels), (want_images, want_labels) in zip(resumed, straight[5:], strict=True):
        np.testing.assert_array_equal(images, want_images)
        np.testing.assert_array_equal(labels, want_labels)


def test_the_record_an_input_error_came_from_is_named_with_what_to_do(damaged):
    fault, paths, _ = damaged
    with pytest.raises(bad_records.READ_ERRORS) as raised:
        for _ in _train_dataset(paths):
            pass
    error = bad_records.located_error(paths, raised.value, "Rerun it.")
    message = str(error)
    assert isinstance(error, bad_records.BadRecordError) and "\n" not in message
    assert message.startswith(
        f"Cannot read example {BAD_POSITION} of record file {paths[0]} (byte "
    )
    assert f": {FAULTS[fault]}: " in message and "To fix: " in message
    assert message.endswith(
        f"python data/check_records.py --data_dir={paths[0].rsplit('/', 1)[0]} lists every "
        "bad one. Rerun it."
    )


def test_an_error_of_readable_records_is_not_blamed_on_them(tmp_path):
    paths, _ = _shards(tmp_path)
    error = tf.errors.InvalidArgumentError(None, None, "not a record's fault")
    assert bad_records.located_error(paths, error, "") is None
