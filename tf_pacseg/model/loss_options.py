"""TF DeepLab's two options of the loss: class weights and the hardest pixels only.

`losses.boundary_aware_loss` multiplies each pixel's weight by its class's
weight (`class_weights`) and can keep only the largest weighted pixel
losses (`top_k_percent_pixels`). Both are off by default, leaving the
original's loss. Everything here is `keras.ops`.
"""

import math

from keras import ops

from tf_pacseg import checks


def check_class_weights(class_weights, num_classes):
    """Returns `class_weights` as a tuple of floats, one per class; raises otherwise.

    Args:
        class_weights: sequence of numbers or None. `None` is returned as is.
        num_classes: int.

    Raises:
        ValueError: not `num_classes` finite numbers >= 0 with one of them > 0.
    """
    if class_weights is None:
        return None
    try:
        weights = tuple(float(w) for w in class_weights)
    except (TypeError, ValueError):
        weights = ()
    if (
        len(weights) != num_classes
        or not all(math.isfinite(w) and w >= 0 for w in weights)
        or not any(w > 0 for w in weights)
    ):
        raise checks.invalid(
            "class_weights",
            f"{num_classes} finite numbers >= 0, one per class (num_classes={num_classes}), "
            "not all 0",
            received=f"class_weights={class_weights!r} ({len(weights)} numbers)",
        )
    return weights


def check_top_k_percent_pixels(top_k_percent_pixels):
    """Returns `top_k_percent_pixels` as a float in (0, 1]; raises otherwise."""
    return checks.number_in_range(
        "top_k_percent_pixels", top_k_percent_pixels, low=0, high=1, include_low=False
    )


def pixel_class_weights(labels, class_weights, num_classes):
    """Each pixel's class weight, `class_weights[label]`; 1 for labels outside [0, num_classes).

    Args:
        labels: int32 [N, H, W].
        class_weights: sequence of `num_classes` floats.
        num_classes: int.

    Returns:
        float32 [N, H, W]. Ignored pixels get a weight here too; the loss's
        mask removes them.
    """
    # Out-of-range labels (ignore, or stray values) look up the last entry, 1:
    # a stray label keeps its place in the denominator, as without weights.
    table = ops.convert_to_tensor([*class_weights, 1.0], "float32")
    in_range = ops.logical_and(labels >= 0, labels < num_classes)
    return ops.take(table, ops.where(in_range, labels, num_classes))


def top_k_pixel_count(num_pixels, top_k_percent_pixels):
    """k of the hardest-pixel loss: ⌊top_k_percent_pixels · num_pixels⌋, at least 1.

    Args:
        num_pixels: int, or an int scalar tensor when the shape is not static.
        top_k_percent_pixels: float in (0, 1].

    Returns:
        A Python int for an int `num_pixels`, else an int32 scalar tensor,
        computed in float64 either way so that both agree.
    """
    if isinstance(num_pixels, int):
        return max(1, int(top_k_percent_pixels * num_pixels))
    scaled = ops.floor(ops.cast(num_pixels, "float64") * top_k_percent_pixels)
    return ops.maximum(ops.cast(scaled, "int32"), 1)


def batch_pixel_count(labels):
    """The number of pixels of a batch of labels (N·H·W): a Python int when the shape is static."""
    if all(isinstance(d, int) for d in labels.shape):
        return math.prod(labels.shape)
    return ops.size(labels)


def hardest_pixels(pixel_losses, num_present, top_k_percent_pixels):
    """TF DeepLab's hard example mining: the mean of the k largest pixel losses, in two terms.

    k is `top_k_pixel_count` of the batch's pixels.

    Args:
        pixel_losses: float32 [N, H, W]. Weighted pixel losses, 0 where the
            weight is 0.
        num_present: float32 scalar. The number of non-zero weights.
        top_k_percent_pixels: float in (0, 1).

    Returns:
        (sum of the k largest losses, min(k, num_present)), float32 scalars.
    """
    k = top_k_pixel_count(batch_pixel_count(pixel_losses), top_k_percent_pixels)
    hardest, _ = ops.top_k(ops.reshape(pixel_losses, (-1,)), k, sorted=False)
    return ops.sum(hardest), ops.minimum(num_present, ops.cast(k, "float32"))
