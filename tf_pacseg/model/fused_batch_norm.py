"""TensorFlow's fused BatchNorm kernel: what slim ran in the original, cuDNN's on a GPU.

`layers.BatchNorm` imports this module only on the TensorFlow backend, for the
calls the kernel supports (4D channels-last float16/bfloat16/float32 inputs,
no mask, statistics of this replica); the rest, and every call on JAX, runs
its `keras.ops` path. Both compute the same thing (`tests/test_layers.py`).
"""

import tensorflow as tf

# Input dtypes of the kernel (with float32 scale, offset and statistics).
INPUT_DTYPES = ("float16", "bfloat16", "float32")


def batch_norm(inputs, gamma, beta, mean, variance, epsilon, training):
    """`FusedBatchNormV3` on NHWC `inputs`: (outputs, batch mean, unbiased batch variance).

    In training (`training=True`) the kernel normalises with the batch mean
    and the biased batch variance and returns the batch mean and the
    variance times `n / (n - 1)`, `n` the values per channel: TF1's moving
    statistics feed on these (docs/design.md §6). In inference it normalises
    with `mean` and `variance`, and the statistics returned are `None`.

    Args:
        inputs: (batch, height, width, channels) tensor of a dtype in
            `INPUT_DTYPES`.
        gamma, beta, mean, variance: float32 (channels,) tensors.
        epsilon: float. Added to the variance.
        training: bool. Batch statistics (True) or `mean` and `variance`.

    Returns:
        (outputs of `inputs`' dtype, float32 mean or None, float32 variance or None).
    """
    empty = tf.constant([], tf.float32)
    outputs, batch_mean, batch_variance, _, _, _ = tf.raw_ops.FusedBatchNormV3(
        x=inputs,
        scale=gamma,
        offset=beta,
        mean=empty if training else mean,
        variance=empty if training else variance,
        epsilon=epsilon,
        # 1: the kernel returns this batch's statistics; the layer averages them.
        exponential_avg_factor=1.0,
        data_format="NHWC",
        is_training=training,
    )
    if not training:
        return outputs, None, None
    # One value per channel: its (zero) variance stays zero, as TF1's CPU
    # kernel leaves it, whatever the device's kernel divides by n - 1 = 0.
    count = tf.reduce_prod(tf.shape(inputs)[:-1])
    batch_variance = tf.where(count > 1, batch_variance, tf.zeros_like(batch_variance))
    return outputs, batch_mean, batch_variance
