"""The training augmentation, op by op: random scale, pad, random crop, flip.

TensorFlow-only module. `augment` follows the original's
`preprocess_image_and_label`, in order: random scale from a discrete set
(bilinear image, nearest label, both TF1 `align_corners=True`) -> pad
bottom/right to at least the crop size (image with the mean pixel, label with
the ignore label) -> random crop (same offsets) -> horizontal flip, p=0.5.

Every random op is stateless, a function of its `seed`: the pipelines derive
each example's seed from (seed, input pipeline, epoch, index in the epoch).
"""

import tensorflow as tf

from tf_pacseg import checks, constants


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
    checks.positive_number("min_scale", min_scale)
    checks.number_in_range("max_scale", max_scale, low=min_scale)
    checks.positive_number("scale_step", scale_step)
    num_steps = round((max_scale - min_scale) / scale_step)
    if abs(num_steps * scale_step - (max_scale - min_scale)) > 1e-6:
        raise checks.invalid(
            "scale_step",
            "max_scale - min_scale to be a multiple of it",
            received=f"min_scale={min_scale}, max_scale={max_scale}, scale_step={scale_step}",
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


def fill_outside(images, heights, widths, value):
    """Sets pixels at rows >= heights[i] or columns >= widths[i] of image i to `value`.

    Writes the padding of `pad_to_size` and of the evaluation batches
    (`pipelines.eval_batches`) exactly, whatever was padded in before.

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
    padded = fill_outside(padded[None], shape[0:1], shape[1:2], constants.MEAN_RGB)[0]
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
    image,
    label,
    seed,
    crop_size=constants.CROP_SIZE,
    scales=None,
    ignore_label=constants.IGNORE_LABEL,
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
