"""The `tf.data` pipelines: shuffled, augmented training batches; padded evaluation batches.

TensorFlow-only module. All training randomness is stateless, a function of
(seed, input pipeline, epoch): the order in which each epoch reads the record
files, the order of its examples, and each example's augmentation seed (from
its index in the epoch, split by the augmentation functions between their
steps). A fixed `seed` thus gives the same batches on every run, whatever the
parallelism, and a resumed run starts at its epoch and skips the examples
already trained on before parsing them (`train_dataset(start_step=...)`).

Images come out as float32 in 0..255 (mean subtraction is the model's job),
labels as int32 class indices with `IGNORE_LABEL` for pixels to skip.
"""

import tensorflow as tf

from tf_pacseg import checks, constants
from tf_pacseg.data import augmentation, records, sharding

# Record files read at once by the training interleave. Fixed rather than
# AUTOTUNE so that a seeded pipeline gives the same order on any machine.
_MAX_CYCLE_LENGTH = 8


def _training_examples(files, input_context, seed, shuffle_buffer, repeat, start, skip_list):
    """(serialized example, augmentation seed) pairs in training order, epoch after epoch.

    Args:
        files, input_context, seed, shuffle_buffer, repeat, skip_list: as in `train_dataset`.
        start: (epoch, examples of it to skip): where a resumed run starts.
    """
    start_epoch, skip = start
    deterministic = seed is not None
    _, pipeline_id, _ = sharding.shard_plan(files, input_context)
    if seed is None:
        run_seeds = tf.data.Dataset.random(rerandomize_each_iteration=True).take(1)
    else:
        run_seeds = tf.data.Dataset.from_tensors(tf.constant(seed, tf.int64))
    end_epoch = tf.int64.max if repeat else start_epoch + 1

    def epoch_examples(run_seed, epoch):
        """(serialized example, its augmentation seed) of one epoch, in order."""
        key = tf.stack([run_seed, tf.constant(pipeline_id, tf.int64)])
        key = tf.random.experimental.stateless_fold_in(key, epoch)
        file_order_seed, order_seed, augment_seed = tf.unstack(
            tf.random.experimental.stateless_split(key, num=3)
        )
        examples = sharding.read_records(
            files, input_context, _MAX_CYCLE_LENGTH, deterministic, file_order_seed, skip_list
        )
        examples = sharding.block_shuffle(examples, shuffle_buffer, order_seed)
        # Each example's seed from its index in the epoch.
        seeds = tf.data.Dataset.range(tf.int64.max).map(
            lambda index: tf.random.experimental.stateless_fold_in(augment_seed, index)
        )
        examples = tf.data.Dataset.zip((examples, seeds))
        return examples.skip(tf.where(epoch == start_epoch, tf.constant(skip, tf.int64), 0))

    return run_seeds.flat_map(
        lambda run_seed: tf.data.Dataset.range(start_epoch, end_epoch).flat_map(
            lambda epoch: epoch_examples(run_seed, epoch)
        )
    )


def train_dataset(
    files,
    batch_size,
    crop_size=constants.CROP_SIZE,
    min_scale=constants.MIN_SCALE,
    max_scale=constants.MAX_SCALE,
    scale_step=constants.SCALE_STEP,
    ignore_label=constants.IGNORE_LABEL,
    shuffle_buffer=constants.DEFAULT_SHUFFLE_BUFFER,
    seed=None,
    repeat=False,
    input_context=None,
    start_step=0,
    skip_list=None,
):
    """The training pipeline: shuffled, augmented, batched examples.

    Each epoch reads the shards interleaved, in a random file order, and
    shuffles the examples (in blocks of `shuffle_buffer`); the examples are
    then parsed and augmented (`augmentation.augment`) in parallel, batched with
    `drop_remainder=True` (batches run on across epochs) and prefetched.
    Epoch e's file order, example order and augmentation seeds are drawn from
    (`seed`, input pipeline, e) alone, so a run resumed at `start_step`
    continues the batches where they stopped: it starts at the epoch of
    that step and skips the examples already used, unparsed.

    Args:
        files: str or sequence of str. Record files or glob patterns, e.g.
            `records.find_record_files(data_dir, "train")`.
        batch_size: int. Global batch size; with `input_context`, each
            replica gets `input_context.get_per_replica_batch_size(batch_size)`.
        crop_size: (height, width) of the crops. Defaults to (513, 513).
        min_scale: float. Defaults to 0.5.
        max_scale: float. Defaults to 2.0.
        scale_step: float. The scale is drawn from {min_scale, min_scale +
            scale_step, ..., max_scale}. Defaults to 0.25.
        ignore_label: int. Label padding value. Defaults to 255.
        shuffle_buffer: int. Examples shuffled together: each epoch is
            permuted in blocks of this many (held in memory, serialized).
            Defaults to 10582, a whole epoch of train_aug, as the original.
        seed: int or None. With an int, the pipeline is deterministic (same
            batches on every run, epoch after epoch); None draws fresh
            randomness at every iteration and lets parallel stages reorder
            for speed. Defaults to None.
        repeat: bool. Whether to go on epoch after epoch forever. Defaults to
            False (one epoch).
        input_context: `tf.distribute.InputContext` or None. Given by
            `strategy.distribute_datasets_from_function`; shards the input
            per pipeline. Defaults to None.
        start_step: int. Global steps already trained (each takes
            `batch_size` examples over all pipelines): the dataset starts
            with the batches of the step after them, as if that many had been
            read. Only with a `seed` (without one, the order is new anyway
            and nothing is skipped). Counting where the step falls reads the
            pipeline's records once. Defaults to 0.
        skip_list: `bad_records.SkipList` or None. Records left out, before
            anything else (--skip_bad_records): an epoch is the records read,
            and `start_step` counts in them. Defaults to None: every record
            is read, and a record that cannot be read is an error of the
            iterator.

    Returns:
        A `tf.data.Dataset` of (images, labels): float32
        (batch, crop_height, crop_width, 3) in 0..255 and int32
        (batch, crop_height, crop_width, 1).

    Example:

    ```python
    files = records.find_record_files("data/voc", "train")
    dataset = train_dataset(files, batch_size=16, seed=0, repeat=True)
    images, labels = next(iter(dataset))
    ```
    """
    checks.positive_int("batch_size", batch_size)
    checks.size_2d("crop_size", crop_size)
    checks.int_in_range("ignore_label", ignore_label, 0, 255)
    checks.positive_int("shuffle_buffer", shuffle_buffer)
    checks.non_negative_int("start_step", start_step)
    scales = augmentation.scale_values(min_scale, max_scale, scale_step)
    files = sharding.resolve_files(files)
    deterministic = seed is not None
    start = (0, 0)
    if seed is not None and start_step:
        start = divmod(
            start_step * sharding.examples_per_step(batch_size, input_context),
            sharding.examples_per_epoch(files, input_context, skip_list),
        )
    dataset = _training_examples(
        files, input_context, seed, shuffle_buffer, repeat, start, skip_list
    )

    @tf.autograph.experimental.do_not_convert  # docs/design.md §6
    def parse_and_augment(serialized, element_seed):
        image, label = records.parse_example(serialized)
        return augmentation.augment(image, label, element_seed, crop_size, scales, ignore_label)

    dataset = dataset.map(
        parse_and_augment, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic
    )
    dataset = dataset.batch(
        sharding.per_replica_batch_size(batch_size, input_context), drop_remainder=True
    )
    dataset = dataset.prefetch(tf.data.AUTOTUNE)
    options = tf.data.Options()
    options.deterministic = deterministic
    return dataset.with_options(options)


def eval_dataset(files, batch_size, input_context=None, **options):
    """The evaluation pipeline of record files: whole images, padded, in file order.

    Args:
        files: str or sequence of str. Record files or glob patterns, e.g.
            `records.find_record_files(data_dir, "val")`.
        batch_size: int. Global batch size (per replica with `input_context`,
            see `train_dataset`). The last batch may be smaller.
        input_context: `tf.distribute.InputContext` or None. Defaults to None.
        **options: `crop_size`, `ignore_label`, `include_sizes`: see
            `eval_batches`.

    Returns:
        The `tf.data.Dataset` of `eval_batches`.
    """
    checks.positive_int("batch_size", batch_size)
    files = sharding.resolve_files(files)
    # cycle_length=1: files one after another, records in order.
    examples = sharding.read_records(files, input_context, cycle_length=1, deterministic=True)
    batch_size = sharding.per_replica_batch_size(batch_size, input_context)
    return eval_batches(examples, batch_size, **options)


def eval_batches(
    examples,
    batch_size,
    *,
    crop_size=constants.CROP_SIZE,
    ignore_label=constants.IGNORE_LABEL,
    include_sizes=False,
):
    """Padded evaluation batches of serialized examples (records, or folder samples encoded alike).

    No scaling or cropping. Each image is padded bottom/right to at least
    `crop_size`, then to the largest image of its batch: images with
    `MEAN_RGB`, labels with `ignore_label`, so padded pixels drop out of the
    metrics. Images larger than the crop keep their full size. (The original
    padded to exactly 513x513, which only works because VOC images are at
    most 500x500; it batched 2 x the training batch size.)

    Args:
        examples: `tf.data.Dataset` of serialized `tf.train.Example` strings,
            in evaluation order.
        batch_size: int. Examples per batch; the last batch may be smaller.
        crop_size: (height, width), the minimum padded size. Defaults to
            (513, 513).
        ignore_label: int. Label padding value. Defaults to 255.
        include_sizes: bool. Also yield each example's unpadded (height,
            width), to crop predictions back. Defaults to False, so that the
            elements are (x, y) pairs for `model.evaluate`.

    Returns:
        A `tf.data.Dataset` of (images, labels) or (images, labels, sizes):
        float32 (batch, height, width, 3) in 0..255, int32
        (batch, height, width, 1), and int32 (batch, 2), where height and
        width are the batch's largest, at least `crop_size`.
    """
    checks.positive_int("batch_size", batch_size)
    crop_height, crop_width = checks.size_2d("crop_size", crop_size)
    checks.int_in_range("ignore_label", ignore_label, 0, 255)

    @tf.autograph.experimental.do_not_convert
    def parse(serialized):
        image, label = records.parse_example(serialized)
        return image, label, tf.shape(image)[:2]

    dataset = examples.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    # padded_batch takes one scalar pad value per component: pad the uint8
    # images with 0 here, and write the mean pixel in `pad_batch` below.
    dataset = dataset.padded_batch(
        batch_size,
        padded_shapes=([None, None, 3], [None, None, 1], [2]),
        padding_values=(
            tf.constant(0, tf.uint8),
            tf.constant(ignore_label, tf.uint8),
            tf.constant(0, tf.int32),
        ),
    )

    @tf.autograph.experimental.do_not_convert
    def pad_batch(images, labels, sizes):
        shape = tf.shape(images)
        paddings = [
            [0, 0],
            [0, tf.maximum(crop_height - shape[1], 0)],
            [0, tf.maximum(crop_width - shape[2], 0)],
            [0, 0],
        ]
        images = tf.pad(tf.cast(images, tf.float32), paddings)  # (batch, height, width, 3)
        images = augmentation.fill_outside(images, sizes[:, 0], sizes[:, 1], constants.MEAN_RGB)
        labels = tf.pad(labels, paddings, constant_values=tf.constant(ignore_label, tf.uint8))
        labels = tf.cast(labels, tf.int32)  # (batch, height, width, 1)
        if include_sizes:
            return images, labels, sizes
        return images, labels

    dataset = dataset.map(pad_batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.prefetch(tf.data.AUTOTUNE)


def distribute_dataset(strategy, dataset_builder, files, batch_size, **kwargs):
    """A distributed dataset, one input pipeline per worker, batch split per replica.

    Args:
        strategy: a `tf.distribute.Strategy`.
        dataset_builder: `train_dataset` or `eval_dataset`.
        files: passed to `dataset_builder`.
        batch_size: int. The global batch size.
        **kwargs: further arguments of `dataset_builder`.

    Returns:
        A `tf.distribute.DistributedDataset`.

    Example:

    ```python
    strategy = tf.distribute.MirroredStrategy()
    dataset = distribute_dataset(strategy, train_dataset, files, 16, seed=0)
    ```
    """
    if "input_context" in kwargs:
        raise ValueError(
            "Invalid argument `input_context`: the strategy provides it. "
            f"Received: input_context={kwargs['input_context']!r}"
        )

    def dataset_fn(input_context):
        return dataset_builder(files, batch_size, input_context=input_context, **kwargs)

    return strategy.distribute_datasets_from_function(dataset_fn)
