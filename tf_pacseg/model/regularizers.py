"""The conv kernels' weight decay: TF1-slim's `l2_regularizer`, `weight_decay * sum(w**2) / 2`."""

import keras
from keras import ops

from tf_pacseg import checks
from tf_pacseg.model.losses import l2_regularization


@keras.saving.register_keras_serializable(package="tf_pacseg")
class WeightDecay(keras.regularizers.Regularizer):
    """`weight_decay * sum(w**2) / 2` of a kernel, as the original's training adds it.

    On TensorFlow it is the original's `L2Loss` kernel: one op per kernel,
    whose gradient is one multiplication, where `keras.regularizers.L2`'s
    square, sum and scaling take four passes over the weights forward and
    backward; elsewhere it is `losses.l2_regularization`. Both compute the
    same thing (`tests/model/test_regularizers.py`).

    Args:
        weight_decay: float >= 0.
    """

    def __init__(self, weight_decay):
        self.weight_decay = checks.number_in_range("weight_decay", weight_decay, low=0)

    def __call__(self, x):
        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            return self.weight_decay * tf.nn.l2_loss(ops.convert_to_tensor(x))
        return l2_regularization([x], self.weight_decay)

    def get_config(self):
        return {"weight_decay": self.weight_decay}
