import os

import numpy as np
import pytest
import tensorflow as tf

from tf_pacseg import constants
from tf_pacseg.data import input_pipeline, records

MEAN = np.float32(constants.MEAN_RGB)
IGNORE = constants.IGNORE_LABEL
SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0)

# Saturated, far-apart colours of classes 0..4; IGNORE blocks are grey.
CLASS_COLOURS = np.array(
    [[230, 20, 20], [20, 230, 20], [20, 20, 230], [230, 230, 20], [20, 230, 230]], np.uint8
)
IGNORE_COLOUR = np.array([128, 128, 128], np.uint8)

TRAIN_SIZES = [(48, 64), (64, 48), (32, 80), (80, 32), (64, 64), (48, 48)]
VAL_SIZES = [(48, 64), (16, 32), (32, 48)]


def _seed(i):
    return tf.constant([i, 7 * i + 1], tf.int64)


def _block_example(height, width, seed, block=16):
    """A label of random 16x16 blocks (classes 0..4 and IGNORE) and its colour image."""
    rng = np.random.default_rng(seed)
    grid = rng.choice([0, 1, 2, 3, 4, IGNORE], size=(-(-height // block), -(-width // block)))
    label = np.kron(grid, np.ones((block, block), np.int64))[:height, :width]
    colours = np.concatenate([CLASS_COLOURS, np.repeat(IGNORE_COLOUR[None], 256 - 5, 0)])
    image = colours[label]
    return image.astype(np.uint8), label[..., None].astype(np.uint8)


def _interior_mismatches(image, label, radius=2, tol=60):
    """(interior pixel count, mismatches): pixels whose label neighbourhood is one class."""
    image = np.asarray(image, np.float32)
    label = np.asarray(label)[..., 0]
    windows = np.lib.stride_tricks.sliding_window_view(label, (2 * radius + 1,) * 2)
    constant = (windows == windows[..., radius : radius + 1, radius : radius + 1]).all((-1, -2))
    centre = label[radius : label.shape[0] - radius, radius : label.shape[1] - radius]
    interior = constant & (centre < len(CLASS_COLOURS))
    pixels = image[radius : image.shape[0] - radius, radius : image.shape[1] - radius]
    expected = CLASS_COLOURS[np.minimum(centre, len(CLASS_COLOURS) - 1)].astype(np.float32)
    wrong = (np.abs(pixels - expected).max(-1) > tol) & interior
    return int(interior.sum()), int(wrong.sum())


def _coordinate_example(height, width):
    """Image (row, column, 1) and label = a function of the pixel, for exact alignment checks."""
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    image = np.stack([rows, cols, np.ones_like(rows)], -1).astype(np.float32)
    return image, _coordinate_label(image)


def _coordinate_label(image):
    image = np.asarray(image).astype(np.int64)
    return ((image[..., 0] * 7 + image[..., 1] * 3) % 250)[..., None].astype(np.uint8)


def _write_records(path, sizes, first_seed):
    with tf.io.TFRecordWriter(path) as writer:
        for i, (height, width) in enumerate(sizes):
            image, label = _block_example(height, width, first_seed + i)
            jpeg = tf.io.encode_jpeg(image, quality=100, chroma_downsampling=False).numpy()
            png = tf.io.encode_png(label).numpy()
            writer.write(records.encode_example(jpeg, png, height, width))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("records")
    half = len(TRAIN_SIZES) // 2
    for index, sizes in enumerate([TRAIN_SIZES[:half], TRAIN_SIZES[half:]]):
        name = records.shard_file_name("train", index, 2)
        _write_records(os.path.join(directory, name), sizes, first_seed=100 * index)
    _write_records(os.path.join(directory, "voc_val.record"), VAL_SIZES, first_seed=1000)
    return str(directory)


# --- scale -----------------------------------------------------------------


def test_scale_values_are_the_discrete_set_of_the_original():
    assert input_pipeline.scale_values() == SCALES
    assert input_pipeline.scale_values(1.0, 1.0, 0.25) == (1.0,)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"min_scale": 0.0}, "Received: min_scale=0.0"),
        ({"min_scale": 1.0, "max_scale": 0.5}, "Received: max_scale=0.5"),
        ({"scale_step": 0.0}, "Received: scale_step=0.0"),
        ({"scale_step": 0.4}, "scale_step=0.4"),
    ],
)
def test_scale_values_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        input_pipeline.scale_values(**kwargs)


@pytest.mark.parametrize("height, width", [(375, 500), (7, 13)])
def test_rescale_output_size_is_int_of_size_times_scale(height, width):
    image = tf.zeros([height, width, 3], tf.uint8)
    label = tf.zeros([height, width, 1], tf.uint8)
    for scale in SCALES:
        scaled_image, scaled_label = input_pipeline.rescale(image, label, scale)
        expected = (int(height * scale), int(width * scale))
        assert tuple(scaled_image.shape[:2]) == expected
        assert tuple(scaled_label.shape[:2]) == expected
        assert scaled_image.dtype == tf.float32 and scaled_label.dtype == tf.uint8


def _align_corners_source(in_size, out_size):
    """Float32 source coordinates of TF1 align_corners=True resizing."""
    scale = np.float32((in_size - 1) / (out_size - 1)) if out_size > 1 else np.float32(0)
    return np.arange(out_size, dtype=np.float32) * scale


def test_rescale_matches_tf1_align_corners_bilinear_and_nearest():
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 255, (9, 14, 3)).astype(np.float32)
    label = rng.integers(0, 21, (9, 14, 1)).astype(np.uint8)
    for scale in (0.5, 1.75):
        scaled_image, scaled_label = input_pipeline.rescale(image, label, scale)
        out_h, out_w = int(9 * scale), int(14 * scale)
        rows, cols = _align_corners_source(9, out_h), _align_corners_source(14, out_w)
        # Nearest: round half away from zero, as TF1's align_corners kernel.
        near_r = np.minimum(np.floor(rows + 0.5).astype(int), 8)
        near_c = np.minimum(np.floor(cols + 0.5).astype(int), 13)
        np.testing.assert_array_equal(scaled_label, label[near_r][:, near_c])
        r0, c0 = np.floor(rows).astype(int), np.floor(cols).astype(int)
        r1, c1 = np.minimum(r0 + 1, 8), np.minimum(c0 + 1, 13)
        fr, fc = (rows - r0)[:, None, None], (cols - c0)[None, :, None]
        top = image[r0][:, c0] * (1 - fc) + image[r0][:, c1] * fc
        bottom = image[r1][:, c0] * (1 - fc) + image[r1][:, c1] * fc
        np.testing.assert_allclose(scaled_image, top * (1 - fr) + bottom * fr, atol=1e-3)
        # align_corners: the corner pixels coincide.
        np.testing.assert_array_equal(
            scaled_image.numpy()[[0, -1]][:, [0, -1]], image[[0, -1]][:, [0, -1]]
        )


def test_random_scale_draws_exactly_the_discrete_set():
    image = tf.zeros([8, 12, 3], tf.uint8)
    label = tf.zeros([8, 12, 1], tf.uint8)
    draw = tf.function(
        lambda seed: tf.shape(input_pipeline.random_scale(image, label, SCALES, seed)[0])[0]
    )
    heights = [int(draw(_seed(i))) for i in range(150)]
    counts = {h: heights.count(h) for h in set(heights)}
    assert set(counts) == {int(8 * s) for s in SCALES}
    assert min(counts.values()) >= 5  # about uniform: 150 / 7 ~ 21 each


def test_nearest_label_resize_never_turns_ignore_into_a_class():
    rng = np.random.default_rng(1)
    label = rng.choice(np.array([0, 7, IGNORE], np.uint8), size=(11, 17, 1))
    image = np.zeros((11, 17, 3), np.uint8)
    for scale in SCALES:
        _, scaled = input_pipeline.rescale(image, label, scale)
        assert set(np.unique(scaled)) <= {0, 7, IGNORE}


# --- pad, crop, flip ---------------------------------------------------------


def test_pad_to_size_pads_bottom_right_with_mean_pixel_and_ignore_label():
    image, label = _coordinate_example(5, 7)
    padded_image, padded_label = input_pipeline.pad_to_size(image, label, 9, 8)
    padded_image, padded_label = padded_image.numpy(), padded_label.numpy()
    assert padded_image.shape == (9, 8, 3) and padded_label.shape == (9, 8, 1)
    assert padded_image.dtype == np.float32 and padded_label.dtype == np.uint8
    np.testing.assert_array_equal(padded_image[:5, :7], image)
    np.testing.assert_array_equal(padded_label[:5, :7], label)
    pad = np.ones((9, 8), bool)
    pad[:5, :7] = False
    np.testing.assert_array_equal(padded_image[pad], np.broadcast_to(MEAN, (pad.sum(), 3)))
    assert (padded_label[pad] == IGNORE).all()


def test_pad_to_size_keeps_dimensions_already_large_enough():
    image, label = _coordinate_example(6, 9)
    padded_image, padded_label = input_pipeline.pad_to_size(image, label, 8, 4)
    assert padded_image.shape == (8, 9, 3)
    np.testing.assert_array_equal(padded_image[:6], image)
    padded_image, padded_label = input_pipeline.pad_to_size(image, label, 3, 3)
    np.testing.assert_array_equal(padded_image, image)
    np.testing.assert_array_equal(padded_label, label)


def test_random_crop_has_exact_shape_and_same_offsets_for_image_and_label():
    image, label = _coordinate_example(12, 10)
    crop = tf.function(lambda seed: input_pipeline.random_crop(image, label, 8, 5, seed))
    corners = set()
    for i in range(40):
        crop_image, crop_label = crop(_seed(i))
        assert crop_image.shape == (8, 5, 3) and crop_label.shape == (8, 5, 1)
        np.testing.assert_array_equal(crop_label, _coordinate_label(crop_image))
        # A contiguous window of the input.
        top, left = int(crop_image[0, 0, 0]), int(crop_image[0, 0, 1])
        np.testing.assert_array_equal(crop_image, image[top : top + 8, left : left + 5])
        corners.add((top, left))
    tops, lefts = {t for t, _ in corners}, {v for _, v in corners}
    assert tops == set(range(5)) and lefts == set(range(6))  # every offset reachable


def test_random_crop_rejects_an_image_smaller_than_the_crop():
    image, label = _coordinate_example(4, 10)
    with pytest.raises(tf.errors.InvalidArgumentError, match="pad it first"):
        input_pipeline.random_crop(image, label, 8, 5, _seed(0))


def test_random_flip_is_joint_and_happens_about_half_the_time():
    image, label = _coordinate_example(4, 6)
    flip = tf.function(lambda seed: input_pipeline.random_flip(image, label, seed))
    flips = 0
    for i in range(100):
        flip_image, flip_label = flip(_seed(i))
        np.testing.assert_array_equal(flip_label, _coordinate_label(flip_image))
        flipped = not np.array_equal(flip_image, image)
        if flipped:
            np.testing.assert_array_equal(flip_image, image[:, ::-1])
        flips += flipped
    assert 30 <= flips <= 70


# --- the whole augmentation ---------------------------------------------------


def test_augment_keeps_image_and_label_aligned_at_every_scale():
    image, label = _block_example(64, 80, seed=3)
    augment = tf.function(lambda seed: input_pipeline.augment(image, label, seed, (48, 48)))
    for i in range(24):
        out_image, out_label = augment(_seed(i))
        assert out_image.shape == (48, 48, 3) and out_label.dtype == tf.int32
        assert set(np.unique(out_label)) <= {0, 1, 2, 3, 4, IGNORE}
        interior, wrong = _interior_mismatches(out_image, out_label)
        assert wrong == 0, f"seed {i}: {wrong} of {interior} pixels misaligned"
    # The check has power: a label flipped on its own is caught.
    interior, wrong = _interior_mismatches(out_image, out_label.numpy()[:, ::-1])
    assert wrong > interior // 10


def test_augment_is_deterministic_under_a_seed():
    image, label = _block_example(40, 56, seed=4)
    first = input_pipeline.augment(image, label, _seed(5), crop_size=(32, 32))
    again = input_pipeline.augment(image, label, _seed(5), crop_size=(32, 32))
    other = input_pipeline.augment(image, label, _seed(6), crop_size=(32, 32))
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.array_equal(first[0], other[0])


# --- datasets --------------------------------------------------------------------


def _batches(dataset):
    return [tuple(t.numpy() for t in batch) for batch in dataset]


def test_train_dataset_yields_float_images_int_labels_and_drops_the_remainder(data_dir):
    files = records.find_record_files(data_dir, "train")
    assert len(files) == 2
    batches = _batches(input_pipeline.train_dataset(files, 4, crop_size=(40, 40), seed=0))
    assert len(batches) == 1  # 6 examples, drop_remainder=True
    images, labels = batches[0]
    assert images.shape == (4, 40, 40, 3) and images.dtype == np.float32
    assert labels.shape == (4, 40, 40, 1) and labels.dtype == np.int32
    assert images.min() >= 0.0 and images.max() <= 255.0
    assert set(np.unique(labels)) <= {0, 1, 2, 3, 4, IGNORE}


def test_train_dataset_keeps_image_and_label_aligned_through_records(data_dir):
    dataset = input_pipeline.train_dataset(
        os.path.join(data_dir, "train-*"), 2, crop_size=(40, 40), seed=1, repeat=True
    )
    total_interior = 0
    for images, labels in dataset.take(6):
        for image, label in zip(images.numpy(), labels.numpy(), strict=True):
            interior, wrong = _interior_mismatches(image, label)
            assert wrong == 0, f"{wrong} of {interior} pixels misaligned"
            total_interior += interior
    assert total_interior > 1000


def test_train_dataset_is_deterministic_under_a_seed_and_new_every_epoch(data_dir):
    files = records.find_record_files(data_dir, "train")

    def build(seed):
        # 6 examples: 3 batches per epoch.
        dataset = input_pipeline.train_dataset(
            files, 2, crop_size=(32, 32), seed=seed, shuffle_buffer=4, repeat=True
        )
        return _batches(dataset.take(6))

    first = build(3)
    again, other = build(3), build(4)
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    assert any(not np.array_equal(a[0], b[0]) for a, b in zip(first, other, strict=True))
    # The next epoch reshuffles and re-augments (deterministically too).
    assert any(not np.array_equal(a[0], b[0]) for a, b in zip(first[:3], first[3:], strict=True))


def test_train_dataset_without_a_seed_is_new_at_every_iteration(data_dir):
    dataset = input_pipeline.train_dataset(os.path.join(data_dir, "train-*"), 2, crop_size=(32, 32))
    first, second = _batches(dataset), _batches(dataset)
    assert any(not np.array_equal(a[0], b[0]) for a, b in zip(first, second, strict=True))


def _assert_same_batches(actual, expected):
    assert len(actual) == len(expected)
    for (images, labels), (want_images, want_labels) in zip(actual, expected, strict=True):
        np.testing.assert_array_equal(images, want_images)
        np.testing.assert_array_equal(labels, want_labels)


@pytest.mark.parametrize(
    "batch_size, shuffle_buffer", [(2, 4), (4, constants.DEFAULT_SHUFFLE_BUFFER)]
)
def test_train_dataset_from_start_step_continues_the_skipped_steps_batches(
    data_dir, batch_size, shuffle_buffer
):
    # 6 examples per epoch: with 4 per batch, batches straddle the epochs.
    def build(start_step):
        dataset = input_pipeline.train_dataset(
            os.path.join(data_dir, "train-*"),
            batch_size,
            crop_size=(24, 24),
            seed=5,
            shuffle_buffer=shuffle_buffer,
            repeat=True,
            start_step=start_step,
        )
        return _batches(dataset.take(8 - start_step))

    uninterrupted = build(0)
    for start_step in (1, 3, 5):
        _assert_same_batches(build(start_step), uninterrupted[start_step:])


@pytest.mark.parametrize("num_replicas, shard_by", [(2, "file"), (4, "file"), (2, "record")])
def test_start_step_skips_each_input_pipelines_share(data_dir, tmp_path, num_replicas, shard_by):
    files = records.find_record_files(data_dir, "train")
    if shard_by == "record":  # One file, fewer than the pipelines.
        single = tmp_path / "voc_train.record"
        single.write_bytes(b"".join(open(f, "rb").read() for f in files))
        files = [str(single)]
    # Two pipelines (workers), each feeding num_replicas / 2 replicas per step.
    batches_per_step = num_replicas // 2

    def build(pipeline_id, start_step):
        dataset = input_pipeline.train_dataset(
            files,
            num_replicas,
            crop_size=(16, 16),
            seed=2,
            repeat=True,
            input_context=tf.distribute.InputContext(2, pipeline_id, num_replicas),
            start_step=start_step,
        )
        return _batches(dataset.take(6 - start_step * batches_per_step))

    for pipeline_id in range(2):
        uninterrupted = build(pipeline_id, 0)
        assert len(uninterrupted[0][0]) == 1  # Per-replica batches of 1.
        _assert_same_batches(build(pipeline_id, 2), uninterrupted[2 * batches_per_step :])


def test_eval_dataset_keeps_large_images_whole_and_pads_small_ones(data_dir):
    files = records.find_record_files(data_dir, "val")
    assert files == [os.path.join(data_dir, "voc_val.record")]
    batches = _batches(
        input_pipeline.eval_dataset(files, 2, crop_size=(32, 40), include_sizes=True)
    )
    assert [b[0].shape for b in batches] == [(2, 48, 64, 3), (1, 32, 48, 3)]
    assert batches[0][1].dtype == np.int32 and batches[0][0].dtype == np.float32
    # File order; sizes are the unpadded ones.
    sizes = np.concatenate([b[2] for b in batches])
    np.testing.assert_array_equal(sizes, VAL_SIZES)
    # The first (48x64, larger than the crop) is exactly its decoded self.
    serialized = next(iter(tf.data.TFRecordDataset(files)))
    image, label = (t.numpy() for t in records.parse_example(serialized))
    np.testing.assert_array_equal(batches[0][0][0], image.astype(np.float32))
    np.testing.assert_array_equal(batches[0][1][0], label.astype(np.int32))
    # The second (16x32) is padded bottom/right with the mean pixel and 255.
    images, labels = batches[0][0][1], batches[0][1][1]
    pad = np.ones((48, 64), bool)
    pad[:16, :32] = False
    np.testing.assert_array_equal(images[pad], np.broadcast_to(MEAN, (pad.sum(), 3)))
    assert (labels[pad] == IGNORE).all()
    # Alone in its batch, the 16x32 image is padded to the crop size.
    singles = _batches(input_pipeline.eval_dataset(files, 1, crop_size=(32, 40)))
    assert [b[0].shape for b in singles] == [(1, 48, 64, 3), (1, 32, 40, 3), (1, 32, 48, 3)]
    assert all(len(b) == 2 for b in singles)  # (images, labels) without include_sizes


def test_train_dataset_reads_the_original_single_record_file(data_dir, tmp_path):
    legacy = tmp_path / "voc_train.record"
    legacy.write_bytes(
        b"".join(open(f, "rb").read() for f in records.find_record_files(data_dir, "train"))
    )
    files = records.find_record_files(str(tmp_path), "train")
    assert files == [str(legacy)]
    batches = _batches(input_pipeline.train_dataset(files, 3, crop_size=(24, 24), seed=0))
    assert len(batches) == 2 and batches[0][0].shape == (3, 24, 24, 3)


@pytest.mark.parametrize("split, num_files", [("train", 2), ("val", 1)])
def test_input_context_shards_examples_and_splits_the_global_batch(data_dir, split, num_files):
    files = records.find_record_files(data_dir, split)
    assert len(files) == num_files  # by file for train, by record for the single val file
    seen = []
    for pipeline_id in range(2):
        context = tf.distribute.InputContext(2, pipeline_id, 2)
        batches = _batches(
            input_pipeline.eval_dataset(
                files, 2, crop_size=(8, 8), include_sizes=True, input_context=context
            )
        )
        assert all(len(b[0]) == 1 for b in batches)  # per-replica batch = 2 // 2
        seen.extend(tuple(size) for b in batches for size in b[2])
    expected = TRAIN_SIZES if split == "train" else VAL_SIZES
    assert sorted(seen) == sorted(expected)  # disjoint and complete


def test_train_dataset_with_input_context_yields_per_replica_batches(data_dir):
    context = tf.distribute.InputContext(2, 1, 2)
    train = input_pipeline.train_dataset(
        os.path.join(data_dir, "train-*"),
        4,
        crop_size=(16, 16),
        seed=0,
        input_context=context,
        repeat=True,
    )
    assert next(iter(train))[0].shape == (2, 16, 16, 3)


def test_distribute_dataset_with_the_default_strategy(data_dir):
    strategy = tf.distribute.get_strategy()
    files = records.find_record_files(data_dir, "train")
    dataset = input_pipeline.distribute_dataset(
        strategy, input_pipeline.train_dataset, files, 2, crop_size=(16, 16), seed=0
    )
    assert [tuple(images.shape) for images, _ in dataset] == [(2, 16, 16, 3)] * 3
    with pytest.raises(ValueError, match="input_context"):
        input_pipeline.distribute_dataset(
            strategy, input_pipeline.eval_dataset, files, 2, input_context=None
        )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"batch_size": 0}, "Received: batch_size=0"),
        ({"crop_size": (513,)}, r"Received: crop_size=\(513,\)"),
        ({"ignore_label": 300}, "Received: ignore_label=300"),
        ({"shuffle_buffer": 0}, "Received: shuffle_buffer=0"),
        ({"min_scale": -1.0}, "Received: min_scale=-1.0"),
    ],
)
def test_train_dataset_rejects_bad_arguments(data_dir, kwargs, match):
    arguments = {"files": os.path.join(data_dir, "train-*"), "batch_size": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        input_pipeline.train_dataset(**arguments)


def test_missing_files_are_named(tmp_path):
    pattern = str(tmp_path / "nothing-*.tfrecord")
    with pytest.raises(FileNotFoundError, match="nothing-"):
        input_pipeline.eval_dataset(pattern, 2)
