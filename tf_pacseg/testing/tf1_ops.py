"""slim's layers as the original used them, in raw `tf.compat.v1` ops.

`conv` and `batch_norm` create every variable under slim's names
(`<scope>/weights`, `<scope>/biases`,
`<scope>/BatchNorm/{beta,gamma,moving_mean,moving_variance}`), so that the
graphs built from them save checkpoints that look like the original's.
tf_slim's `batch_norm` needs `tf_keras` under TF 2.21, hence raw ops. Call
inside a `tf.Graph().as_default()`.
"""

import contextlib

import tensorflow as tf

v1 = tf.compat.v1

BN_EPSILON = 1e-5

# Graph collection of (moving statistic variable, its batch value) pairs.
BATCH_STATISTICS = "batch_statistics"
# slim's batch_norm arguments in force (its arg_scope): training mode and decay.
_BATCH_NORM_MODE = {"is_training": False, "decay": 0.9997, "fused": True}


@contextlib.contextmanager
def batch_norm_arg_scope(is_training, decay, fused=True):
    """slim's `arg_scope` for `batch_norm`: the mode of those built inside."""
    saved = dict(_BATCH_NORM_MODE)
    _BATCH_NORM_MODE.update(is_training=is_training, decay=decay, fused=fused)
    try:
        yield
    finally:
        _BATCH_NORM_MODE.update(saved)


def batch_norm(x, relu, scope="BatchNorm"):
    """slim.batch_norm (fused, scale=True) with slim's variable names under `scope`.

    Training mode normalises with the batch statistics and adds to UPDATE_OPS
    slim's `assign_moving_average(moving, batch, decay, zero_debias=False)`:
    `moving -= (moving - batch) * (1 - decay)`, fed with what the fused op
    returns (the batch mean and the n/(n-1)-corrected batch variance).
    Unfused (`fused=False` in the arg scope): the same arithmetic through
    separate ops (moments, batch_normalization, the n/(n-1) factor), whose
    different rounding measures how much the step's float noise owes to
    the order of operations.
    """
    channels = int(x.shape[-1])
    with v1.variable_scope(scope):
        beta = v1.get_variable("beta", [channels], initializer=v1.zeros_initializer())
        gamma = v1.get_variable("gamma", [channels], initializer=v1.ones_initializer())
        mean = v1.get_variable(
            "moving_mean", [channels], initializer=v1.zeros_initializer(), trainable=False
        )
        var = v1.get_variable(
            "moving_variance", [channels], initializer=v1.ones_initializer(), trainable=False
        )
        if _BATCH_NORM_MODE["is_training"] and _BATCH_NORM_MODE["fused"]:
            y, batch_mean, batch_var = v1.nn.fused_batch_norm(
                x, gamma, beta, epsilon=BN_EPSILON, is_training=True
            )
        elif _BATCH_NORM_MODE["is_training"]:
            batch_mean, biased = tf.nn.moments(x, [0, 1, 2])
            y = tf.nn.batch_normalization(x, batch_mean, biased, beta, gamma, BN_EPSILON)
            count = tf.cast(tf.reduce_prod(tf.shape(x)[:3]), tf.float32)
            batch_var = biased * (count / tf.maximum(count - 1.0, 1.0))
        if _BATCH_NORM_MODE["is_training"]:
            complement = 1.0 - _BATCH_NORM_MODE["decay"]
            for moving, batch in ((mean, batch_mean), (var, batch_var)):
                update = v1.assign_sub(moving, (moving - batch) * complement)
                v1.add_to_collection(v1.GraphKeys.UPDATE_OPS, update)
                v1.add_to_collection(BATCH_STATISTICS, (moving, batch))
        else:
            y, _, _ = v1.nn.fused_batch_norm(
                x, gamma, beta, mean=mean, variance=var, epsilon=BN_EPSILON, is_training=False
            )
    return tf.nn.relu(y) if relu else y


def conv(
    x,
    depth,
    kernel,
    scope,
    stride=1,
    rate=1,
    bn=True,
    relu=True,
    bias=False,
    explicit_padding=False,
):
    """slim.conv2d look-alike: conv -> (BatchNorm | bias) -> optional ReLU.

    `explicit_padding` reproduces resnet_utils.conv2d_same: for stride > 1 the
    input is zero-padded by (k_eff - 1) // 2 at the top/left and the rest at
    the bottom/right, then convolved VALID.  Everything else is TF 'SAME'.
    """
    cin = int(x.shape[-1])
    with v1.variable_scope(scope):
        w = v1.get_variable(
            "weights",
            [kernel, kernel, cin, depth],
            initializer=v1.variance_scaling_initializer(2.0),
        )
        if explicit_padding and stride > 1:
            k_eff = kernel + (kernel - 1) * (rate - 1)
            pad_beg = (k_eff - 1) // 2
            pad_end = k_eff - 1 - pad_beg
            x = tf.pad(x, [[0, 0], [pad_beg, pad_end], [pad_beg, pad_end], [0, 0]])
            padding = "VALID"
        else:
            padding = "SAME"
        if stride > 1 and rate > 1:
            raise ValueError("stride and rate > 1 together never occur in the original")
        y = tf.nn.conv2d(x, w, strides=stride, padding=padding, dilations=rate)
        if bn:
            y = batch_norm(y, relu=False)
        elif bias:
            b = v1.get_variable("biases", [depth], initializer=v1.zeros_initializer())
            y = tf.nn.bias_add(y, b)
    return tf.nn.relu(y) if relu else y


def subsample(x, factor):
    """resnet_utils.subsample: 1x1 max-pool with stride `factor` (SAME)."""
    if factor == 1:
        return x
    return tf.nn.max_pool2d(x, ksize=1, strides=factor, padding="SAME")


def resize_align_corners(x, size):
    """The original's bilinear resize (align_corners=True) to `size` [height, width]."""
    return v1.image.resize_bilinear(x, size, align_corners=True)
