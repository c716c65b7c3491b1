"""`tf.data` input pipelines: training augmentation and padded evaluation batches.

TensorFlow-only module. The training augmentation follows the original's
`preprocess_image_and_label`, in order: random scale from a discrete set
(bilinear image, nearest label, both TF1 `align_corners=True`) -> pad
bottom/right to at least the crop size (image with the mean pixel, label with
the ignore label) -> random crop (same offsets) -> horizontal flip, p=0.5.

All training randomness is stateless, a function of (seed, input pipeline,
epoch): the order in which each epoch reads the record files, the order of
its examples, and each example's augmentation seed (from its index in the
epoch, split by the augmentation functions between their steps). A fixed
`seed` thus gives the same batches on every run, whatever the parallelism,
and a resumed run starts at its epoch and skips the examples already trained
on before parsing them (`train_dataset(start_step=...)`).

Images come out as float32 in 0..255 (mean subtraction is the model's job),
labels as int32 class indices with `IGNORE_LABEL` for pixels to skip.
"""

import tensorflow as tf

from tf_pacseg import checks, constants

# Record files read at once by the training interleave. Fixed rather than
from tf_pacseg.data import records

# AUTOTUNE so that a seeded pipeline gives the same order on any machine.
_MAX_CYCLE_LENGTH = 8


def scale_values(
    min_scale=constants.MIN_SCALE, max_scale=constants.MAX_SCALE, scale_step=constants.SCALE_STEP
):
    """The discrete scale set {min_scale, min_scale + step, ..., max_scale}.

    Args:
        min_scale: float. Smallest scale, > 0. Defaults to 0.5.
        max_scale: float. Largest scale, >= min_scale. Defaults to 2.0.
        scale_step: float. Spacing of the set, > 0; (max - min) must be a
            multiple of it. Defaults to 0.25.

    Returns:
        A tuple of Python floats, ascending.
    """
    if not min_scale > 0:
        raise ValueError(
            f"Invalid value for argument `min_scale`. Expected a strictly positive "
            f"value. Received: min_scale={min_scale}"
        )
    if not max_scale >= min_scale:
        raise ValueError(
            f"Invalid value for argument `max_scale`. Expected a value >= "
            f"min_scale={min_scale}. Received: max_scale={max_scale}"
        )
    if not scale_step > 0:
        raise ValueError(
            f"Invalid value for argument `scale_step`. Expected a strictly positive "
            f"value. Received: scale_step={scale_step}"
        )
    num_steps = round((max_scale - min_scale) / scale_step)
    if abs(num_steps * scale_step - (max_scale - min_scale)) > 1e-6:
        raise ValueError(
            f"Invalid value for argument `scale_step`. Expected max_scale - "
            f"min_scale to be a multiple of it. Received: min_scale={min_scale}, "
            f"max_scale={max_scale}, scale_step={scale_step}"
        )
    return tuple(min_scale + i * scale_step for i in range(num_steps + 1))


def rescale(image, label, scale):
    """Resizes image and label by `scale`, to (int(height * scale), int(width * scale)).

    TF1 `align_corners=True` resizing, as the original: bilinear for the
    image, nearest neighbour for the label (only values already present come
    out, so the ignore label stays the ignore label).

    Args:
        image: tensor (height, width, 3), any real dtype.
        label: tensor (height, width, 1), integer dtype.
        scale: float scalar (Python or tensor).

    Returns:
        (image, label): float32 (new_height, new_width, 3) and the label's
        dtype (new_height, new_width, 1).
    """
    image, label = tf.convert_to_tensor(image), tf.convert_to_tensor(label)
    shape = tf.shape(image)
    scale = tf.cast(scale, tf.float32)
    # Truncation, as the original's to_int32(to_float(size) * scale).
    new_size = tf.cast(tf.cast(shape[:2], tf.float32) * scale, tf.int32)  # (2,)
    image = tf.raw_ops.ResizeBilinear(
        images=tf.cast(image, tf.float32)[None],
        size=new_size,
        align_corners=True,
        half_pixel_centers=False,
    )[0]
    label = tf.raw_ops.ResizeNearestNeighbor(
        images=label[None], size=new_size, align_corners=True, half_pixel_centers=False
    )[0]
    return image, label


def random_scale(image, label, scales, seed):
    """Rescales image and label by one scale drawn uniformly from `scales`.

    Args:
        image: tensor (height, width, 3).
        label: tensor (height, width, 1), integer dtype.
        scales: sequence of floats, the discrete set to draw from (see
            `scale_values`).
        seed: int32/int64 tensor of shape (2,), the stateless seed.

    Returns:
        (image, label) as `rescale` returns them.
    """
    scales = tf.constant(scales, tf.float32)  # (num_scales,)
    index = tf.random.stateless_uniform(
        [], seed=seed, minval=0, maxval=tf.shape(scales)[0], dtype=tf.int32
    )
    return rescale(image, label, scales[index])


def _fill_outside(images, heights, widths, value):
    """Sets pixels at rows >= heights[i] or columns >= widths[i] of image i to `value`.

    Args:
        images: float tensor (batch, height, width, channels).
        heights, widths: int32 tensors (batch,).
        value: per-channel fill, a sequence of `channels` floats.
    """
    shape = tf.shape(images)
    rows = tf.range(shape[1])[None, :, None] < heights[:, None, None]  # (batch, height, 1)
    cols = tf.range(shape[2])[None, None, :] < widths[:, None, None]  # (batch, 1, width)
    inside = tf.logical_and(rows, cols)[..., None]  # (batch, height, width, 1)
    fill = tf.constant(value, images.dtype)  # (channels,)
    return tf.where(inside, images, fill)


def pad_to_size(image, label, height, width, ignore_label=constants.IGNORE_LABEL):
    """Pads bottom/right to at least (height, width): image with MEAN_RGB, label with ignore.

    Dimensions already at least that large are left as they are.

    Args:
        image: tensor (h, w, 3).
        label: tensor (h, w, 1), integer dtype.
        height: int. Minimum output height.
        width: int. Minimum output width.
        ignore_label: int. Label padding value. Defaults to 255.

    Returns:
        (image, label): float32 (max(h, height), max(w, width), 3) whose padding
        is exactly `MEAN_RGB` (as float32), and the label's dtype with
        `ignore_label` padding.
    """
    image, label = tf.convert_to_tensor(image), tf.convert_to_tensor(label)
    checks.positive_int("height", height)
    checks.positive_int("width", width)
    checks.int_in_range("ignore_label", ignore_label, 0, 255)
    shape = tf.shape(image)
    pad_height = tf.maximum(height - shape[0], 0)
    pad_width = tf.maximum(width - shape[1], 0)
    paddings = [[0, pad_height], [0, pad_width], [0, 0]]
    # Zero padding then an exact fill, rather than the original's
    # (image - mean) padded with 0 then + mean, which rounds image pixels.
    padded = tf.pad(tf.cast(image, tf.float32), paddings)
    padded = _fill_outside(padded[None], shape[0:1], shape[1:2], constants.MEAN_RGB)[0]
    label = tf.pad(label, paddings, constant_values=tf.cast(ignore_label, label.dtype))
    return padded, label


def random_crop(image, label, height, width, seed):
    """Crops image and label at the same random offsets to exactly (height, width).

    Offsets are uniform over every position where the crop fits, as the
    original's `random_crop`.

    Args:
        image: tensor (h, w, channels), h >= height and w >= width (pad first).
        label: tensor (h, w, 1).
        height: int. Crop height.
        width: int. Crop width.
        seed: int32/int64 tensor of shape (2,), the stateless seed.

    Returns:
        (image, label) of shapes (height, width, channels) and (height, width, 1).
    """
    image, label = tf.convert_to_tensor(image), tf.convert_to_tensor(label)
    checks.positive_int("height", height)
    checks.positive_int("width", width)
    shape = tf.shape(image)
    with tf.control_dependencies(
        [
            tf.debugging.assert_equal(
                shape[:2], tf.shape(label)[:2], message="random_crop: image and label sizes differ"
            ),
            tf.debugging.assert_greater_equal(
                shape[:2],
                tf.constant([height, width]),
                message=f"random_crop: image smaller than the crop {(height, width)}; pad it first",
            ),
        ]
    ):
        seeds = tf.random.experimental.stateless_split(seed, num=2)  # (2, 2)
    offset_height = tf.random.stateless_uniform(
        [], seed=seeds[0], minval=0, maxval=shape[0] - height + 1, dtype=tf.int32
    )
    offset_width = tf.random.stateless_uniform(
        [], seed=seeds[1], minval=0, maxval=shape[1] - width + 1, dtype=tf.int32
    )
    image = image[offset_height : offset_height + height, offset_width : offset_width + width]
    label = label[offset_height : offset_height + height, offset_width : offset_width + width]
    image = tf.ensure_shape(image, [height, width, image.shape[-1]])
    label = tf.ensure_shape(label, [height, width, 1])
    return image, label


def random_flip(image, label, seed):
    """Flips image and label left-right together, with probability 0.5.

    Args:
        image: tensor (height, width, channels).
        label: tensor (height, width, 1).
        seed: int32/int64 tensor of shape (2,), the stateless seed.

    Returns:
        (image, label), both flipped or neither.
    """
    image, label = tf.convert_to_tensor(image), tf.convert_to_tensor(label)
    flip = tf.random.stateless_uniform([], seed=seed) < 0.5
    image = tf.cond(flip, lambda: tf.reverse(image, [1]), lambda: image)
    label = tf.cond(flip, lambda: tf.reverse(label, [1]), lambda: label)
    return image, label


def augment(
    image, label, seed, crop_size=(513, 513), scales=None, ignore_label=constants.IGNORE_LABEL
):
    """The training augmentation of one example: scale, pad, crop, flip.

    Args:
        image: tensor (height, width, 3), uint8 or float in 0..255.
        label: tensor (height, width, 1), integer dtype.
        seed: int32/int64 tensor of shape (2,), the stateless seed.
        crop_size: (height, width) of the output. Defaults to (513, 513).
        scales: sequence of floats to draw the scale from. Defaults to
            `scale_values()`, i.e. {0.5, 0.75, ..., 2.0}.
        ignore_label: int. Label padding value. Defaults to 255.

    Returns:
        (image, label): float32 (crop_height, crop_width, 3) and int32
        (crop_height, crop_width, 1).
    """
    crop_height, crop_width = crop_size
    scales = scale_values() if scales is None else scales
    seeds = tf.random.experimental.stateless_split(seed, num=3)  # (3, 2)
    image, label = random_scale(image, label, scales, seeds[0])
    image, label = pad_to_size(image, label, crop_height, crop_width, ignore_label)
    image, label = random_crop(image, label, crop_height, crop_width, seeds[1])
    image, label = random_flip(image, label, seeds[2])
    return image, tf.cast(label, tf.int32)


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
        raise ValueError(
            f"Invalid value for argument `files`. Expected a file name, a glob "
            f"pattern or a non-empty sequence of them. Received: files={files!r}"
        )
    resolved = []
    for pattern in patterns:
        pattern = pattern.decode() if isinstance(pattern, bytes) else str(pattern)
        matches = sorted(tf.io.gfile.glob(pattern))
        if not matches:
            raise FileNotFoundError(f"No record files match {pattern!r}.")
        resolved.extend(name for name in matches if name not in resolved)
    return resolved


def _sharding(files, input_context):
    """(number of input pipelines, this one's id, whether it reads its own files).

    Sharding is by file when there are at least as many files as input
    pipelines, else by record (e.g. the original's single `voc_train.record`).
    """
    num_pipelines = input_context.num_input_pipelines if input_context else 1
    pipeline_id = input_context.input_pipeline_id if input_context else 0
    return num_pipelines, pipeline_id, num_pipelines > 1 and len(files) >= num_pipelines


def _records(files, input_context, cycle_length, deterministic, file_order_seed=None):
    """Serialized examples of `files`, sharded for `input_context` when one is given.

    With `file_order_seed` (a stateless seed, shape (2,)), the files are read
    in an order drawn from it.
    """
    num_pipelines, pipeline_id, shard_files = _sharding(files, input_context)
    if shard_files:
        files = files[pipeline_id::num_pipelines]
    cycle_length = min(len(files), cycle_length)
    files = tf.constant(files)
    if file_order_seed is not None:
        keys = tf.random.stateless_uniform(tf.shape(files), seed=file_order_seed)
        files = tf.gather(files, tf.argsort(keys))
    dataset = tf.data.Dataset.from_tensor_slices(files).interleave(
        tf.data.TFRecordDataset,
        cycle_length=cycle_length,
        block_length=1,
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=deterministic,
    )
    if num_pipelines > 1 and not shard_files:
        dataset = dataset.shard(num_pipelines, pipeline_id)
    return dataset


def _per_replica_batch_size(batch_size, input_context):
    if input_context is None:
        return batch_size
    return input_context.get_per_replica_batch_size(batch_size)


def _examples_per_epoch(files, input_context):
    """The examples one epoch of this input pipeline reads (sharded as `_records`)."""
    num_pipelines, pipeline_id, shard_files = _sharding(files, input_context)
    if shard_files:
        return records.count_examples(files[pipeline_id::num_pipelines])
    return len(range(pipeline_id, records.count_examples(files), num_pipelines))


def _examples_per_step(batch_size, input_context):
    """The examples one global step takes from this input pipeline.

    Each of the pipeline's replicas takes a per-replica batch (one per step
    for the JAX engine's per-process pipelines).
    """
    if input_context is None:
        return batch_size
    replicas = input_context.num_replicas_in_sync // input_context.num_input_pipelines
    return replicas * input_context.get_per_replica_batch_size(batch_size)


def _block_shuffle(examples, block_size, seed):
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


def train_dataset(
    files,
    batch_size,
    crop_size=(513, 513),
    min_scale=constants.MIN_SCALE,
    max_scale=constants.MAX_SCALE,
    scale_step=constants.SCALE_STEP,
    ignore_label=constants.IGNORE_LABEL,
    shuffle_buffer=constants.DEFAULT_SHUFFLE_BUFFER,
    seed=None,
    repeat=False,
    input_context=None,
    start_step=0,
):
    """The training pipeline: shuffled, augmented, batched examples.

    Each epoch reads the shards interleaved, in a random file order, and
    shuffles the examples (in blocks of `shuffle_buffer`); the examples are
    then parsed and augmented (`augment`) in parallel, batched with
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
    scales = scale_values(min_scale, max_scale, scale_step)
    files = resolve_files(files)
    deterministic = seed is not None
    per_replica_batch = _per_replica_batch_size(batch_size, input_context)
    _, pipeline_id, _ = _sharding(files, input_context)

    start_epoch, skip = 0, 0
    if seed is None:
        run_seeds = tf.data.Dataset.random(rerandomize_each_iteration=True).take(1)
    else:
        run_seeds = tf.data.Dataset.from_tensors(tf.constant(seed, tf.int64))
        if start_step:
            start_epoch, skip = divmod(
                start_step * _examples_per_step(batch_size, input_context),
                _examples_per_epoch(files, input_context),
            )
    end_epoch = tf.int64.max if repeat else start_epoch + 1

    def epoch_examples(run_seed, epoch):
        """(serialized example, its augmentation seed) of one epoch, in order."""
        key = tf.stack([run_seed, tf.constant(pipeline_id, tf.int64)])
        key = tf.random.experimental.stateless_fold_in(key, epoch)
        file_order_seed, order_seed, augment_seed = tf.unstack(
            tf.random.experimental.stateless_split(key, num=3)
        )
        examples = _records(files, input_context, _MAX_CYCLE_LENGTH, deterministic, file_order_seed)
        examples = _block_shuffle(examples, shuffle_buffer, order_seed)
        # Each example's seed from its index in the epoch.
        seeds = tf.data.Dataset.range(tf.int64.max).map(
            lambda index: tf.random.experimental.stateless_fold_in(augment_seed, index)
        )
        examples = tf.data.Dataset.zip((examples, seeds))
        return examples.skip(tf.where(epoch == start_epoch, tf.constant(skip, tf.int64), 0))

    dataset = run_seeds.flat_map(
        lambda run_seed: tf.data.Dataset.range(start_epoch, end_epoch).flat_map(
            lambda epoch: epoch_examples(run_seed, epoch)
        )
    )

    def parse_and_augment(serialized, element_seed):
        image, label = records.parse_example(serialized)
        return augment(image, label, element_seed, crop_size, scales, ignore_label)

    dataset = dataset.map(
        parse_and_augment, num_parallel_calls=tf.data.AUTOTUNE, deterministic=deterministic
    )
    dataset = dataset.batch(per_replica_batch, drop_remainder=True)
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
    files = resolve_files(files)
    # cycle_length=1: files one after another, records in order.
    examples = _records(files, input_context, cycle_length=1, deterministic=True)
    return eval_batches(examples, _per_replica_batch_size(batch_size, input_context), **options)


def eval_batches(
    examples,
    batch_size,
    *,
    crop_size=(513, 513),
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

    def pad_batch(images, labels, sizes):
        shape = tf.shape(images)
        paddings = [
            [0, 0],
            [0, tf.maximum(crop_height - shape[1], 0)],
            [0, tf.maximum(crop_width - shape[2], 0)],
            [0, 0],
        ]
        images = tf.pad(tf.cast(images, tf.float32), paddings)  # (batch, height, width, 3)
        images = _fill_outside(images, sizes[:, 0], sizes[:, 1], constants.MEAN_RGB)
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
