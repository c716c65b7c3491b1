"""Bilinear resizing with TF1's `align_corners=True` semantics, in `keras.ops`.

TF2's `tf.image.resize` dropped `align_corners`; the released weights were
trained with it (corner pixels of the input and output grids coincide), so it
is rebuilt here as two matrix products, which also runs on JAX.
"""

from keras import ops


def _interpolation_matrix(in_size, out_size):
    """[out_size, in_size] matrix whose rows hold the two bilinear weights."""
    in_size_f = ops.cast(in_size, "float32")
    out_size_f = ops.cast(out_size, "float32")
    # TF1 uses scale = (in - 1) / (out - 1), and 0 for a single output pixel.
    scale = ops.where(out_size_f > 1.0, (in_size_f - 1.0) / ops.maximum(out_size_f - 1.0, 1.0), 0.0)
    source = ops.cast(ops.arange(out_size), "float32") * scale
    lower = ops.floor(source)
    fraction = source - lower
    lower = ops.cast(lower, "int32")
    upper = ops.minimum(lower + 1, ops.cast(in_size, "int32") - 1)
    columns = ops.arange(in_size, dtype="int32")[None, :]
    lower_weight = ops.cast(columns == lower[:, None], "float32") * (1.0 - fraction)[:, None]
    upper_weight = ops.cast(columns == upper[:, None], "float32") * fraction[:, None]
    return lower_weight + upper_weight


def resize_bilinear(images, size):
    """Resizes NHWC `images` to `size` = (height, width), align_corners=True.

    Args:
        images: float tensor [N, H, W, C].
        size: pair of ints or scalar int tensors, the output height and width.

    Returns:
        float32 tensor [N, height, width, C].
    """
    images = ops.cast(images, "float32")
    height, width = size
    batch, in_height, in_width, channels = ops.shape(images)
    rows = _interpolation_matrix(in_height, height)  # (height, H)
    cols = _interpolation_matrix(in_width, width)  # (width, W)
    # Plain (broadcast) matrix products over reshaped, never transposed,
    # images: half the time of the equivalent einsums, forward and backward.
    images = ops.matmul(rows, ops.reshape(images, (batch, in_height, in_width * channels)))
    images = ops.matmul(cols, ops.reshape(images, (batch * height, in_width, channels)))
    return ops.reshape(images, (batch, height, width, channels))
