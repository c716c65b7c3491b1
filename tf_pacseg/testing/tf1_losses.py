"""The original's boundary-aware loss, transcribed step by step in TF1 graph ops.

Written from docs/design.md §4 independently of `tf_pacseg.model.losses`, which is
tested against it (tests/test_losses.py); `tf1_training` builds the
original's training step with it. Call inside a `tf.Graph().as_default()`.
"""

import numpy as np
import tensorflow as tf

v1 = tf.compat.v1


def boundary_weights(labels, num_classes, ignore_label=255):
    """Per-pixel BAL weights float32 [N, H, W, 1] of int labels [N, H, W, 1]."""
    # 1. ignore -> 0.  2. one-hot, symmetric pad of 1 at the bottom/right.
    clean = tf.where(tf.equal(labels, ignore_label), tf.zeros_like(labels), labels)
    one_hot = tf.one_hot(clean[..., 0], num_classes, dtype=tf.float32)
    padded = tf.pad(one_hot, [[0, 0], [0, 1], [0, 1], [0, 0]], mode="SYMMETRIC")
    # 3. 2x2 edge kernel per channel; edge = value != 0.  4. sum over channels.
    kernel = tf.constant([[1.0, -0.5], [-0.5, 0.0]], tf.float32)
    kernel = tf.tile(tf.reshape(kernel, [2, 2, 1, 1]), [1, 1, num_classes, 1])
    edges = tf.nn.depthwise_conv2d(padded, kernel, [1, 1, 1, 1], "VALID")
    edges = tf.cast(tf.not_equal(edges, 0.0), tf.float32)
    edges = tf.reduce_sum(edges, axis=3, keepdims=True)
    # 5. twice a 2x2 conv of ones, stride 2, SAME.
    ones = tf.ones([2, 2, 1, 1], tf.float32)
    pooled = tf.nn.conv2d(edges, ones, [1, 2, 2, 1], "SAME")
    pooled = tf.nn.conv2d(pooled, ones, [1, 2, 2, 1], "SAME")
    # 6. 35x35 Gaussian exp(-(x^2/51 + y^2/51)), normalised, depthwise SAME.
    grid = np.arange(-17, 18, dtype=np.float64)
    x, y = np.meshgrid(grid, grid, indexing="ij")
    gauss = np.exp(-(x**2 / 51.0 + y**2 / 51.0))
    gauss = (gauss / gauss.sum()).reshape(35, 35, 1, 1)
    blurred = tf.nn.depthwise_conv2d(pooled, tf.constant(gauss, tf.float32), [1, 1, 1, 1], "SAME")
    # 7. bilinear, align_corners, back to H x W.  8. clip(1.5 r + 0.5, 0, 4).
    resized = v1.image.resize_bilinear(blurred, tf.shape(labels)[1:3], align_corners=True)
    return tf.clip_by_value(1.5 * resized + 0.5, 0.0, 4.0)


def boundary_aware_loss(labels, logits, num_classes, ignore_label=255, use_weights=True):
    """(weights [N, H, W, 1], loss): TF1's weighted softmax cross entropy.

    Args:
        labels: int32 [N, H, W, 1].
        logits: float32 [N, H, W, num_classes].
        use_weights: False gives plain cross entropy (weights still returned).
    """
    weights = boundary_weights(labels, num_classes, ignore_label)
    clean = tf.where(tf.equal(labels, ignore_label), tf.zeros_like(labels), labels)
    mask = tf.cast(tf.not_equal(tf.reshape(labels, [-1]), ignore_label), tf.float32)
    loss_weights = mask * tf.reshape(weights, [-1]) if use_weights else mask
    loss = v1.losses.softmax_cross_entropy(
        onehot_labels=tf.one_hot(tf.reshape(clean, [-1]), num_classes),
        logits=tf.reshape(logits, [-1, num_classes]),
        weights=loss_weights,
    )
    return weights, loss
