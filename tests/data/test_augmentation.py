import numpy as np
import pytest
import tensorflow as tf
from block_examples import block_example, interior_mismatches

from tf_pacseg import constants
from tf_pacseg.data import augmentation

MEAN = np.float32(constants.MEAN_RGB)
IGNORE = constants.IGNORE_LABEL
SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0)


def _seed(i):
    return tf.constant([i, 7 * i + 1], tf.int64)


def _coordinate_example(height, width):
    """Image (row, column, 1) and label = a function of the pixel, for exact alignment checks."""
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    image = np.stack([rows, cols, np.ones_like(rows)], -1).astype(np.float32)
    return image, _coordinate_label(image)


def _coordinate_label(image):
    image = np.asarray(image).astype(np.int64)
    return ((image[..., 0] * 7 + image[..., 1] * 3) % 250)[..., None].astype(np.uint8)


# --- scale -----------------------------------------------------------------


def test_scale_values_are_the_discrete_set_of_the_original():
    assert augmentation.scale_values() == SCALES
    assert augmentation.scale_values(1.0, 1.0, 0.25) == (1.0,)


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
        augmentation.scale_values(**kwargs)


@pytest.mark.parametrize("height, width", [(375, 500), (7, 13)])
def test_rescale_output_size_is_int_of_size_times_scale(height, width):
    image = tf.zeros([height, width, 3], tf.uint8)
    label = tf.zeros([height, width, 1], tf.uint8)
    for scale in SCALES:
        scaled_image, scaled_label = augmentation.rescale(image, label, scale)
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
        scaled_image, scaled_label = augmentation.rescale(image, label, scale)
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
        lambda seed: tf.shape(augmentation.random_scale(image, label, SCALES, seed)[0])[0]
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
        _, scaled = augmentation.rescale(image, label, scale)
        assert set(np.unique(scaled)) <= {0, 7, IGNORE}


# --- pad, crop, flip ---------------------------------------------------------


def test_pad_to_size_pads_bottom_right_with_mean_pixel_and_ignore_label():
    image, label = _coordinate_example(5, 7)
    padded_image, padded_label = augmentation.pad_to_size(image, label, 9, 8)
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
    padded_image, padded_label = augmentation.pad_to_size(image, label, 8, 4)
    assert padded_image.shape == (8, 9, 3)
    np.testing.assert_array_equal(padded_image[:6], image)
    padded_image, padded_label = augmentation.pad_to_size(image, label, 3, 3)
    np.testing.assert_array_equal(padded_image, image)
    np.testing.assert_array_equal(padded_label, label)


def test_random_crop_has_exact_shape_and_same_offsets_for_image_and_label():
    image, label = _coordinate_example(12, 10)
    crop = tf.function(lambda seed: augmentation.random_crop(image, label, 8, 5, seed))
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
        augmentation.random_crop(image, label, 8, 5, _seed(0))


def test_random_flip_is_joint_and_happens_about_half_the_time():
    image, label = _coordinate_example(4, 6)
    flip = tf.function(lambda seed: augmentation.random_flip(image, label, seed))
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
    image, label = block_example(64, 80, seed=3)
    augment = tf.function(lambda seed: augmentation.augment(image, label, seed, (48, 48)))
    for i in range(24):
        out_image, out_label = augment(_seed(i))
        assert out_image.shape == (48, 48, 3) and out_label.dtype == tf.int32
        assert set(np.unique(out_label)) <= {0, 1, 2, 3, 4, IGNORE}
        interior, wrong = interior_mismatches(out_image, out_label)
        assert wrong == 0, f"seed {i}: {wrong} of {interior} pixels misaligned"
    # The check has power: a label flipped on its own is caught.
    interior, wrong = interior_mismatches(out_image, out_label.numpy()[:, ::-1])
    assert wrong > interior // 10


def test_augment_is_deterministic_under_a_seed():
    image, label = block_example(40, 56, seed=4)
    first = augmentation.augment(image, label, _seed(5), crop_size=(32, 32))
    again = augmentation.augment(image, label, _seed(5), crop_size=(32, 32))
    other = augmentation.augment(image, label, _seed(6), crop_size=(32, 32))
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.array_equal(first[0], other[0])
