"""resize_bilinear / ResizeLike against TF1's resize_bilinear(align_corners=True)."""

import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_pacseg.model.layers import ResizeLike
from tf_pacseg.model.resize import resize_bilinear

# (height, width) grids: 1x1, odd and even, square and not, up and down.
SIZES = [(1, 1), (2, 3), (4, 4), (5, 5), (7, 6), (9, 12), (17, 17), (33, 20)]


def _tf1_resize(images, size):
    return tf.compat.v1.image.resize_bilinear(images, size, align_corners=True).numpy()


@pytest.mark.parametrize("in_size,out_size", list(itertools.product(SIZES, SIZES)))
def test_resize_bilinear_matches_tf1_align_corners(in_size, out_size):
    rng = np.random.default_rng(sum(in_size) * 100 + sum(out_size))
    images = rng.uniform(-1.0, 1.0, (2, *in_size, 3)).astype("float32")
    expected = _tf1_resize(images, out_size)
    result = np.asarray(resize_bilinear(images, out_size))
    assert result.shape == (2, *out_size, 3)
    np.testing.assert_allclose(result, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("in_size,out_size", [((33, 33), (513, 513)), ((65, 40), (513, 321))])
def test_resize_bilinear_matches_tf1_at_network_scale(in_size, out_size):
    """The decoder's real ratio: 33x33 logits to a 513x513 crop."""
    images = np.random.default_rng(0).normal(0.0, 5.0, (1, *in_size, 4)).astype("float32")
    np.testing.assert_allclose(
        np.asarray(resize_bilinear(images, out_size)),
        _tf1_resize(images, out_size),
        rtol=0,
        atol=1e-5 * 5.0,
    )


@pytest.mark.parametrize(
    "in_size,out_size", [((5, 7), (9, 13)), ((9, 13), (5, 7)), ((4, 6), (7, 3))]
)
def test_resize_bilinear_reproduces_linear_ramp_with_aligned_corners(in_size, out_size):
    """NumPy reference: a linear function of (row, col) is sampled at
    row * (H - 1) / (h - 1): corner pixels of both grids coincide."""
    (in_h, in_w), (out_h, out_w) = in_size, out_size
    rows, cols = np.meshgrid(np.arange(in_h), np.arange(in_w), indexing="ij")
    images = (3.0 * rows - 2.0 * cols + 1.0).astype("float32")[None, :, :, None]
    out_rows, out_cols = np.meshgrid(
        np.arange(out_h) * (in_h - 1) / (out_h - 1),
        np.arange(out_w) * (in_w - 1) / (out_w - 1),
        indexing="ij",
    )
    expected = 3.0 * out_rows - 2.0 * out_cols + 1.0
    result = np.asarray(resize_bilinear(images, out_size))[0, :, :, 0]
    np.testing.assert_allclose(result, expected, rtol=0, atol=1e-4)
    np.testing.assert_allclose(
        result[[0, 0, -1, -1], [0, -1, 0, -1]],
        images[0, [0, 0, -1, -1], [0, -1, 0, -1], 0],
        atol=1e-5,
    )


def test_resize_bilinear_in_tf_function_with_dynamic_shapes():
    @tf.function(
        input_signature=[
            tf.TensorSpec([None, None, None, None], tf.float32),
            tf.TensorSpec([2], tf.int32),
        ]
    )
    def resize(images, size):
        return resize_bilinear(images, (size[0], size[1]))

    rng = np.random.default_rng(1)
    for in_size, out_size in [
        ((1, 1), (4, 5)),
        ((6, 9), (11, 3)),
        ((17, 17), (1, 1)),
        ((8, 5), (8, 5)),
    ]:
        images = rng.uniform(0.0, 1.0, (3, *in_size, 2)).astype("float32")
        result = resize(images, tf.constant(out_size, tf.int32)).numpy()
        np.testing.assert_allclose(result, _tf1_resize(images, out_size), rtol=0, atol=1e-5)
    # One trace served every shape.
    assert resize.experimental_get_tracing_count() == 1


@pytest.mark.parametrize("dtype", ["uint8", "float16", "float64"])
def test_resize_bilinear_returns_float32(dtype):
    images = np.random.default_rng(2).integers(0, 255, (1, 4, 5, 3)).astype(dtype)
    result = resize_bilinear(images, (7, 9))
    assert keras.backend.standardize_dtype(result.dtype) == "float32"
    expected = _tf1_resize(images.astype("float32"), (7, 9))
    np.testing.assert_allclose(np.asarray(result), expected, rtol=1e-6, atol=1e-4)


@pytest.mark.parametrize("in_size", [(1, 1), (3, 3), (4, 7)])
@pytest.mark.parametrize("out_size", [(1, 1), (5, 8), (6, 6)])
def test_resize_like_matches_tf1_resize_to_the_reference_size(in_size, out_size):
    """Includes the image-pooling case: a 1x1 map is broadcast, as TF1's resize does."""
    rng = np.random.default_rng(3)
    images = rng.normal(size=(2, *in_size, 4)).astype("float32")
    reference = np.zeros((2, *out_size, 7), "float32")
    result = np.asarray(ResizeLike()([images, reference]))
    assert result.shape == (2, *out_size, 4)
    np.testing.assert_allclose(result, _tf1_resize(images, out_size), rtol=0, atol=1e-5)


def test_resize_like_broadcasts_pooled_map_with_dynamic_reference_size():
    layer = ResizeLike()

    @tf.function(
        input_signature=[
            tf.TensorSpec([None, 1, 1, 4], tf.float32),
            tf.TensorSpec([None, None, None, 3], tf.float32),
        ]
    )
    def broadcast(images, reference):
        return layer([images, reference])

    images = np.random.default_rng(4).normal(size=(2, 1, 1, 4)).astype("float32")
    result = broadcast(images, tf.zeros((2, 5, 3, 3))).numpy()
    np.testing.assert_array_equal(result, np.broadcast_to(images, (2, 5, 3, 4)))
