"""TensorFlow's momentum kernel (`ResourceApplyMomentum`): the original optimizer's update.

TF1's `MomentumOptimizer` ran this kernel: one pass over the variable and its
accumulator, `a = momentum * a + g; w -= lr * a`. `optimizers.TF1Momentum`
calls it on the TensorFlow backend; its `keras.ops` update computes the same
in five operations (`tests/training/test_optimizers.py`).
"""

import tensorflow as tf


def apply_momentum(variable, accumulator, learning_rate, gradient, momentum):
    """Updates `variable` and `accumulator` in place with the fused kernel.

    Args:
        variable: the `tf.Variable` to update (a replica's copy inside
            `tf.distribute`'s update call).
        accumulator: its momentum `tf.Variable` (or a distributed one, whose
            copy on the same replica is updated).
        learning_rate, gradient: tensors of the variable's dtype.
        momentum: float.
    """
    tf.raw_ops.ResourceApplyMomentum(
        var=variable.handle,
        accum=accumulator.handle,
        lr=learning_rate,
        grad=gradient,
        momentum=tf.cast(momentum, variable.dtype),
        use_locking=False,
        use_nesterov=False,
    )
