"""Boundary-aware loss (BAL), plain cross entropy and slim's L2 weight decay.

Paper: Dongkyu Yu, "Semantic Image Segmentation with Pyramid Atrous
Convolution and Boundary-aware Loss" (POSTECH), reference code at
https://github.com/Tamuel/TF_SemanticSegmentation. BAL up-weights the cross
entropy of pixels near class boundaries: label edges are counted, pooled 4×4,
blurred with a 35×35 Gaussian and resized back, giving per-pixel weights in
[0.5, 4].

Two options of TF DeepLab's loss, off by default: per-class weights
(`class_weights`, e.g. median-frequency balancing) multiply each pixel's
weight, and `top_k_percent_pixels` keeps only the hardest pixels' weighted
losses (hard example mining).

Everything here is `keras.ops`, so it runs on the TensorFlow and JAX backends.
"""

import keras
import numpy as np
from keras import ops

from tf_pacseg import checks
from tf_pacseg.constants import IGNORE_LABEL, NUM_CLASSES
from tf_pacseg.model.loss_options import (
    check_class_weights,
    check_top_k_percent_pixels,
    hardest_pixels,
    pixel_class_weights,
)
from tf_pacseg.model.resize import resize_bilinear

# The original's `gaussian_kernel(17, 17, sigma=3)`: a 35×35 kernel
# exp(-(x²/51 + y²/51)) (its divisor is size·sigma, not 2·sigma²).
_GAUSSIAN_RADIUS = 17
_GAUSSIAN_DIVISOR = 51.0
_EDGE_MULTIPLIER = 1.5
_REMAIN_RATE = 0.5
_MAX_WEIGHT = 4.0


def _gaussian_1d():
    """Normalised 1-D factor of the separable 35×35 kernel, float32 [35]."""
    x = np.arange(-_GAUSSIAN_RADIUS, _GAUSSIAN_RADIUS + 1, dtype=np.float64)
    g = np.exp(-(x**2) / _GAUSSIAN_DIVISOR)
    # outer(g, g) / sum(outer(g, g)) == outer(g / sum(g), g / sum(g)).
    return (g / g.sum()).astype(np.float32)


def _squeeze_labels(labels):
    """[N, H, W] or [N, H, W, 1] labels -> int32 [N, H, W]."""
    labels = ops.convert_to_tensor(labels)
    rank = len(labels.shape)
    if rank == 4 and labels.shape[-1] == 1:
        labels = ops.squeeze(labels, axis=-1)
    elif rank != 3:
        raise checks.invalid(
            "labels", "shape [N, H, W] or [N, H, W, 1]", received=f"labels.shape={labels.shape}"
        )
    return ops.cast(labels, "int32")


def boundary_edges(labels, num_classes=NUM_CLASSES, ignore_label=IGNORE_LABEL):
    """BAL's edge map: steps 1-4 of the original, before pooling and blurring.

    Args:
        labels: int tensor [N, H, W] or [N, H, W, 1] of class ids.
        num_classes: int. Number of classes. Defaults to 21.
        ignore_label: int. Counted as class 0, as the original does here.
            Defaults to 255.

    Returns:
        float32 [N, H, W, 1]: the number of one-hot channels with an edge at
        each pixel (0 inside regions, up to 3).
    """
    labels = _squeeze_labels(labels)
    return _edge_count(ops.where(labels == ignore_label, 0, labels), num_classes)


def _edge_count(labels, num_classes):
    """Steps 2-4 of BAL without materialising the one-hot labels.

    The original pads the one-hot labels symmetrically by one row/column at the
    bottom/right and applies [[1, -0.5], [-0.5, 0]] per channel: channel k is an
    edge where O[i,j] - (O[i,j+1] + O[i+1,j]) / 2 != 0, i.e. where class k occurs
    among the pixel, its right and its lower neighbour but not in all three. So
    the channel sum is the number of distinct in-range classes among the three,
    or 0 where they agree. Out-of-range labels have all-zero one-hot rows and
    add nothing, as in the original. This saves a [N, H, W, C] tensor.

    Args:
        labels: int32 [N, H, W], ignore already mapped to 0.
        num_classes: int, the number of one-hot channels.

    Returns:
        float32 [N, H, W, 1].
    """
    # Symmetric padding of 1 repeats the last column / row.
    right = ops.concatenate([labels[:, :, 1:], labels[:, :, -1:]], axis=2)
    below = ops.concatenate([labels[:, 1:, :], labels[:, -1:, :]], axis=1)

    def in_range(x):
        return ops.logical_and(x >= 0, x < num_classes)

    first = in_range(labels)
    second = ops.logical_and(in_range(right), right != labels)
    third = ops.logical_and(in_range(below), ops.logical_and(below != labels, below != right))
    count = ops.cast(first, "float32") + ops.cast(second, "float32") + ops.cast(third, "float32")
    uniform = ops.logical_and(labels == right, labels == below)
    count = ops.where(uniform, 0.0, count)
    return count[..., None]


def boundary_aware_weights(labels, num_classes=NUM_CLASSES, ignore_label=IGNORE_LABEL):
    """Per-pixel weights of the boundary-aware loss (no gradient).

    Follows the original `seg_modify_gradient_weight`: count one-hot label
    edges, sum 2×2 blocks twice (stride 2, TF 'SAME' padding), blur with the
    35×35 Gaussian exp(-(x²/51 + y²/51)) (normalised, 'SAME'), resize back with
    align_corners=True bilinear, then clip(1.5·r + 0.5, 0, 4).

    Args:
        labels: int tensor [N, H, W] or [N, H, W, 1] of class ids.
        num_classes: int. Number of classes. Defaults to 21.
        ignore_label: int. Label of pixels that count as class 0 here (the loss
            masks them out separately). Defaults to 255.

    Returns:
        float32 tensor [N, H, W, 1] with values in [0.5, 4].

    Example:

    >>> labels = np.zeros((1, 16, 16), "int32")
    >>> labels[:, 4:12, 4:12] = 3
    >>> weights = boundary_aware_weights(labels)  # 0.5 far from the square
    """
    checks.positive_int("num_classes", num_classes)
    labels = _squeeze_labels(labels)
    height, width = ops.shape(labels)[1], ops.shape(labels)[2]
    labels = ops.where(labels == ignore_label, 0, labels)

    edges = _edge_count(labels, num_classes)  # (N, H, W, 1)

    # Two 2×2 sums, stride 2; TF's 'SAME' pads odd sizes with zeros at the
    # bottom/right, and keras.ops 'same' has TF's semantics on every backend.
    ones = ops.ones((2, 2, 1, 1), "float32")
    pooled = ops.conv(edges, ones, strides=2, padding="same")
    pooled = ops.conv(pooled, ones, strides=2, padding="same")  # (N, H/4, W/4, 1)

    # The Gaussian is separable: a 35×1 then a 1×35 conv equals the 35×35 one,
    # including the zero padding of maps smaller than the kernel.
    g = ops.convert_to_tensor(_gaussian_1d())
    size = 2 * _GAUSSIAN_RADIUS + 1
    blurred = ops.conv(pooled, ops.reshape(g, (size, 1, 1, 1)), padding="same")
    blurred = ops.conv(blurred, ops.reshape(g, (1, size, 1, 1)), padding="same")

    resized = resize_bilinear(blurred, (height, width))  # (N, H, W, 1)
    weights = ops.clip(_EDGE_MULTIPLIER * resized + _REMAIN_RATE, 0.0, _MAX_WEIGHT)
    return ops.stop_gradient(weights)


def boundary_aware_loss_terms(
    labels,
    logits,
    num_classes=NUM_CLASSES,
    ignore_label=IGNORE_LABEL,
    use_boundary_weights=True,
    class_weights=None,
    top_k_percent_pixels=1.0,
):
    """Numerator and denominator of `boundary_aware_loss`.

    Under data parallelism, summing the numerators and the denominators over
    replicas before dividing gives exactly the loss of the global batch
    (with `top_k_percent_pixels` < 1, each replica keeps its own hardest
    pixels).

    Returns:
        (Σ_i w_i·m_i·CE_i, #{i : w_i·m_i ≠ 0}), float32 scalars, where w_i
        includes the class weight; with `top_k_percent_pixels` < 1, (the sum
        of the k largest w_i·m_i·CE_i, min(k, #{i : w_i·m_i ≠ 0})). Arguments
        as in `boundary_aware_loss`.
    """
    checks.positive_int("num_classes", num_classes)
    class_weights = check_class_weights(class_weights, num_classes)
    top_k_percent_pixels = check_top_k_percent_pixels(top_k_percent_pixels)
    labels = _squeeze_labels(labels)
    logits = ops.cast(ops.convert_to_tensor(logits), "float32")
    if logits.shape[-1] is not None and logits.shape[-1] != num_classes:
        raise checks.invalid(
            "logits",
            f"{num_classes} channels (num_classes)",
            received=f"logits.shape={logits.shape}",
        )

    mask = ops.cast(labels != ignore_label, "float32")  # (N, H, W)
    targets = ops.where(labels == ignore_label, 0, labels)
    # one_hot gives all-zero rows for out-of-range ids, like TF1's one-hot.
    one_hot = ops.one_hot(targets, num_classes, dtype="float32")
    cross_entropy = -ops.sum(one_hot * ops.log_softmax(logits, axis=-1), axis=-1)

    weights = mask
    if use_boundary_weights:
        weights = weights * boundary_aware_weights(labels, num_classes, ignore_label)[..., 0]
    if class_weights is not None:
        weights = weights * pixel_class_weights(labels, class_weights, num_classes)
    weights = ops.stop_gradient(weights)
    num_present = ops.sum(ops.cast(weights != 0.0, "float32"))
    if top_k_percent_pixels == 1.0:
        return ops.sum(weights * cross_entropy), num_present
    return hardest_pixels(weights * cross_entropy, num_present, top_k_percent_pixels)


def boundary_aware_loss(
    labels,
    logits,
    num_classes=NUM_CLASSES,
    ignore_label=IGNORE_LABEL,
    use_boundary_weights=True,
    class_weights=None,
    top_k_percent_pixels=1.0,
):
    """Boundary-aware softmax cross entropy, as the original computes it.

    loss = Σ_i w_i·m_i·CE_i / #{i : w_i·m_i ≠ 0}, with w the
    `boundary_aware_weights` (1 when `use_boundary_weights` is False), m_i = 0
    at ignored pixels and CE the softmax cross entropy against the label with
    ignored pixels mapped to class 0; 0 when no weight is non-zero. This is
    TF1's `tf.losses.softmax_cross_entropy` with its SUM_BY_NONZERO_WEIGHTS
    reduction. A label outside [0, num_classes) other than `ignore_label` has
    an all-zero one-hot row, so its CE is 0 but it still counts in the
    denominator, exactly as in the original.

    The options (TF DeepLab's) keep that reduction. `class_weights` multiply
    w_i by the weight c of the pixel's class, so the denominator counts the
    pixels whose class weight is not 0: with all weights 1 the loss is the
    plain one. `top_k_percent_pixels` = p < 1 keeps the k = max(1, ⌊p·N·H·W⌋)
    largest weighted pixel losses of the batch (ignored pixels count in
    N·H·W, as in DeepLab) and divides their sum by min(k, #{i : w_i·m_i ≠ 0}):
    the mean over the hardest pixels (DeepLab divides by the number of
    non-zero losses among them, the same but where a kept loss underflows to 0).

    Args:
        labels: int tensor [N, H, W] or [N, H, W, 1] of class ids.
        logits: float tensor [N, H, W, num_classes]; float16/bfloat16 logits
            are cast to float32 first.
        num_classes: int. Number of classes. Defaults to 21.
        ignore_label: int. Label of pixels left out of the loss. Defaults to 255.
        use_boundary_weights: bool. False gives plain cross entropy (the
            non-BAL rows of the paper). Defaults to True.
        class_weights: sequence of `num_classes` numbers >= 0, or None (every
            class 1). Defaults to `None`.
        top_k_percent_pixels: float in (0, 1]. The share of pixels whose
            losses are kept, the largest; 1 keeps all. Defaults to 1.0.

    Returns:
        float32 scalar, the loss of this batch (of this replica, under
        tf.distribute).
    """
    weighted_sum, num_present = boundary_aware_loss_terms(
        labels,
        logits,
        num_classes,
        ignore_label,
        use_boundary_weights,
        class_weights=class_weights,
        top_k_percent_pixels=top_k_percent_pixels,
    )
    return ops.divide_no_nan(weighted_sum, num_present)


@keras.saving.register_keras_serializable(package="tf_pacseg")
class BoundaryAwareLoss(keras.losses.Loss):
    """`boundary_aware_loss` as a `keras.losses.Loss`.

    The loss is already a scalar normalised by the number of weighted pixels,
    so Keras' reductions have nothing left to average. They still decide the
    scaling under `tf.distribute` (TensorFlow backend, more than one replica):

    - `reduction="sum_over_batch_size"` (default), `"mean"` or
      `"mean_with_sample_weight"`: returns the
      formula's value on this replica's batch divided by
      `num_replicas_in_sync`, the convention of every Keras loss. `model.fit`
      expects it, and a custom loop should take gradients of it as is and let
      the optimizer sum them across replicas (no further division). That
      averages per-replica gradients, like the original's multi-GPU towers.
    - `reduction=None`, `"none"` or `"sum"`: the formula's value on this
      replica's batch, unscaled; a custom loop divides it by the replica count.

    Without a distribution strategy (and on JAX) every reduction returns the
    formula's value. `sample_weight` is not supported: the weights are part of
    the loss.

    Args:
        num_classes: int. Number of classes. Defaults to 21.
        ignore_label: int. Label of pixels left out of the loss. Defaults to 255.
        use_boundary_weights: bool. False gives plain cross entropy. Defaults
            to True.
        class_weights: sequence of `num_classes` numbers >= 0, or None.
            Defaults to `None`.
        top_k_percent_pixels: float in (0, 1]. Defaults to 1.0.
        reduction: str or None. See above. Defaults to "sum_over_batch_size".
        name: str. Defaults to "boundary_aware_loss".
        dtype: dtype of the result. Defaults to `keras.backend.floatx()`.

    Example:

    >>> loss = BoundaryAwareLoss(num_classes=21)
    >>> value = loss(labels, logits)  # labels [N, H, W(, 1)], logits [N, H, W, 21]
    """

    def __init__(
        self,
        num_classes=NUM_CLASSES,
        ignore_label=IGNORE_LABEL,
        use_boundary_weights=True,
        class_weights=None,
        top_k_percent_pixels=1.0,
        reduction="sum_over_batch_size",
        name="boundary_aware_loss",
        dtype=None,
    ):
        checks.positive_int("num_classes", num_classes)
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.num_classes = num_classes
        self.ignore_label = ignore_label
        self.use_boundary_weights = use_boundary_weights
        self.class_weights = check_class_weights(class_weights, num_classes)
        self.top_k_percent_pixels = check_top_k_percent_pixels(top_k_percent_pixels)

    def __call__(self, y_true, y_pred, sample_weight=None):
        if sample_weight is not None:
            raise checks.invalid(
                "sample_weight",
                "None: BoundaryAwareLoss computes its per-pixel weights from the labels",
                sample_weight,
            )
        # `call` returns a one-element vector: Keras passes scalars through its
        # reduction untouched, but sums vectors and then applies the
        # per-replica scaling described in the class docstring.
        return ops.reshape(super().__call__(y_true, y_pred), ())

    def call(self, y_true, y_pred):
        loss = boundary_aware_loss(
            y_true,
            y_pred,
            num_classes=self.num_classes,
            ignore_label=self.ignore_label,
            use_boundary_weights=self.use_boundary_weights,
            class_weights=self.class_weights,
            top_k_percent_pixels=self.top_k_percent_pixels,
        )
        return ops.reshape(loss, (1,))

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_classes": self.num_classes,
                "ignore_label": self.ignore_label,
                "use_boundary_weights": self.use_boundary_weights,
                "class_weights": None if self.class_weights is None else list(self.class_weights),
                "top_k_percent_pixels": self.top_k_percent_pixels,
            }
        )
        return config


def l2_regularization(kernels, weight_decay):
    """slim's `l2_regularizer`: weight_decay · Σ_k Σ w² / 2, in float32.

    Args:
        kernels: list of variables or tensors (the conv kernels).
        weight_decay: float. The original's flag defaults to 1e-4.

    Returns:
        float32 scalar; 0 for an empty list.
    """
    if isinstance(weight_decay, (int, float)):  # A tensor is the caller's to check.
        checks.number_in_range("weight_decay", weight_decay, low=0)
    total = ops.convert_to_tensor(0.0, "float32")
    for kernel in kernels:
        total = total + ops.sum(ops.square(ops.cast(kernel, "float32"))) / 2.0
    return ops.cast(weight_decay, "float32") * total
