"""What each input pipeline reads, in what order: record files, sharding, block shuffling.

TensorFlow-only module. With a `tf.distribute.InputContext`, each input
pipeline reads its own share: whole files when there are at least as many
files as pipelines, else every n-th record (e.g. the original's single
`voc_train.record`).
"""

import tensorflow as tf

from tf_pacseg import checks
from tf_pacseg.data import records


def resolve_files(files):
    """Record file names from a path, a glob pattern, or a sequence of either.

    Args:
        files: str or sequence of str.

    Returns:
        A list of file names: each pattern's matches sorted, in the order the
        patterns were given, without duplicates.

    Raises:
        FileNotFoundError: naming the first pattern that matches nothing.
    """
    patterns = [files] if isinstance(files, (str, bytes)) else list(files)
    if not patterns:
        raise checks.invalid(
            "files", "a file name, a glob pattern or a non-empty sequence of them", files
        )
    resolved = []
    for pattern in patterns:
        pattern = pattern.decode() if isinstance(pattern, bytes) else str(pattern)
        matches = sorted(tf.io.gfile.glob(pattern))
        if not matches:
            raise FileNotFoundError(f"No record files match {pattern!r}.")
        resolved.extend(name for name in matches if name not in resolved)
    return resolved


def shard_plan(files, input_context):
    """(number of input pipelines, this one's id, whether it reads its own files).

    Sharding is by file when there are at least as many files as input
    pipelines, else by record.
    """
    num_pipelines = input_context.num_input_pipelines if input_context else 1
    pipeline_id = input_context.input_pipeline_id if input_context else 0
    return num_pipelines, pipeline_id, num_pipelines > 1 and len(files) >= num_pipelines


def read_records(
    files, input_context, cycle_length, deterministic, file_order_seed=None, skip_list=None
):
    """Serialized examples of `files`, sharded for `input_context` when one is given.

    Args:
        files: list of str. Resolved record files (`resolve_files`).
        input_context: `tf.distribute.InputContext` or None.
        cycle_length: int. Files read at once, interleaved record by record.
        deterministic: bool. Whether the interleave keeps its order.
        file_order_seed: stateless seed, shape (2,), or None. With one, the
            files are read in an order drawn from it. Defaults to None.
        skip_list: `bad_records.SkipList` or None. Records left out of each file,
            before the interleave (and the sharding by record). Defaults to
            None: every record.
    """
    num_pipelines, pipeline_id, shard_files = shard_plan(files, input_context)
    if shard_files:
        files = files[pipeline_id::num_pipelines]
    cycle_length = min(len(files), cycle_length)
    order = tf.range(len(files), dtype=tf.int64)
    if file_order_seed is not None:
        keys = tf.random.stateless_uniform([len(files)], seed=file_order_seed)
        order = tf.gather(order, tf.argsort(keys))
    dataset = tf.data.Dataset.from_tensor_slices(order).interleave(
        _file_reader(files, skip_list),
        cycle_length=cycle_length,
        block_length=1,
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=deterministic,
    )
    if num_pipelines > 1 and not shard_files:
        dataset = dataset.shard(num_pipelines, pipeline_id)
    return dataset


def _file_reader(files, skip_list):
    """A function of a file's index in `files`: the dataset of its records, less `skip_list`'s."""
    names = tf.constant(files)
    if skip_list is None:
        return lambda index: tf.data.TFRecordDataset(names[index])
    limits = tf.constant([skip_list.limit(name) for name in files], tf.int64)
    # Each file's bad positions, padded with -1 (no position) to the longest list.
    positions = [skip_list.bad_positions(name) for name in files]
    width = max([1, *map(len, positions)])
    bad = tf.constant([list(p) + [-1] * (width - len(p)) for p in positions], tf.int64)

    def read(index):
        file_bad = bad[index]
        numbered = tf.data.TFRecordDataset(names[index]).take(limits[index]).enumerate()
        numbered = numbered.filter(lambda position, _: tf.reduce_all(position != file_bad))
        return numbered.map(lambda _, record: record)

    return read


def per_replica_batch_size(batch_size, input_context):
    """The batch of one replica: `batch_size` split over `input_context`'s replicas."""
    if input_context is None:
        return batch_size
    return input_context.get_per_replica_batch_size(batch_size)


def examples_per_epoch(files, input_context, skip_list=None):
    """The examples one epoch of this input pipeline reads (sharded as `read_records`).

    Args:
        files: list of str. Resolved record files.
        input_context: `tf.distribute.InputContext` or None.
        skip_list: `bad_records.SkipList` or None: counts only the records read.
            Defaults to None (reads the files to count them).
    """
    num_pipelines, pipeline_id, shard_files = shard_plan(files, input_context)
    if shard_files:
        files = files[pipeline_id::num_pipelines]
    count = records.count_examples(files) if skip_list is None else skip_list.num_readable(files)
    if shard_files:
        return count
    return len(range(pipeline_id, count, num_pipelines))


def examples_per_step(batch_size, input_context):
    """The examples one global step takes from this input pipeline.

    Each of the pipeline's replicas takes a per-replica batch (one per step
    for the JAX engine's per-process pipelines).
    """
    if input_context is None:
        return batch_size
    replicas = input_context.num_replicas_in_sync // input_context.num_input_pipelines
    return replicas * input_context.get_per_replica_batch_size(batch_size)


def block_shuffle(examples, block_size, seed):
    """Permutes each run of `block_size` consecutive examples by a permutation drawn from `seed`.

    With a block at least as large as the epoch, a uniformly random order of
    the epoch (what the original's epoch-sized shuffle buffer gives).
    """

    def permute(index, block):
        block_seed = tf.random.experimental.stateless_fold_in(seed, index)
        order = tf.argsort(tf.random.stateless_uniform(tf.shape(block), seed=block_seed))
        # Reads the block in place: no second copy of its examples.
        return tf.data.Dataset.from_tensor_slices(order).map(lambda i: block[i])

    return examples.batch(block_size).enumerate().flat_map(permute)
