"""The original's optimizer: TF1 momentum on a "poly" learning-rate schedule."""

import keras
from keras import ops

from tf_pacseg import checks


@keras.saving.register_keras_serializable(package="tf_pacseg")
class PolyDecay(keras.optimizers.schedules.LearningRateSchedule):
    """`(lr0 - lr_end) * (1 - min(step - initial_step, max_iter) / max_iter)**power + lr_end`.

    TF1's `polynomial_decay` counted from `initial_global_step`, as the
    original fine-tunes. Steps before `initial_step` use `lr0` (the original
    never reaches them).

    Args:
        initial_learning_rate: float. Defaults to 0.007.
        max_iter: int. Steps over which the rate decays. Defaults to 30000.
        end_learning_rate: float. Defaults to 0.
        power: float. Defaults to 0.9.
        initial_step: int. The original's `initial_global_step`. Defaults to 0.
    """

    def __init__(
        self,
        initial_learning_rate=0.007,
        max_iter=30000,
        end_learning_rate=0.0,
        power=0.9,
        initial_step=0,
    ):
        checks.positive_int("max_iter", max_iter)
        self.initial_learning_rate = initial_learning_rate
        self.max_iter = max_iter
        self.end_learning_rate = end_learning_rate
        self.power = power
        self.initial_step = initial_step

    def __call__(self, step):
        step = ops.cast(step, "float32") - float(self.initial_step)
        progress = ops.clip(step, 0.0, float(self.max_iter)) / float(self.max_iter)
        decay = (1.0 - progress) ** self.power
        span = self.initial_learning_rate - self.end_learning_rate
        return span * decay + self.end_learning_rate

    def get_config(self):
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "max_iter": self.max_iter,
            "end_learning_rate": self.end_learning_rate,
            "power": self.power,
            "initial_step": self.initial_step,
        }


@keras.saving.register_keras_serializable(package="tf_pacseg")
class TF1Momentum(keras.optimizers.Optimizer):
    """TF1 `MomentumOptimizer`: `a = momentum * a + g; w -= lr * a`.

    Keras' SGD folds the learning rate into the velocity (`v = m v - lr g`),
    which differs from this whenever the rate changes, i.e. at every step of
    the poly schedule.

    On the TensorFlow backend the update runs TF1's own kernel
    (`ResourceApplyMomentum`, `fused_momentum.py`): one pass over each
    variable instead of five operations. JAX runs the same update in
    `keras.ops`.

    Args:
        learning_rate: float or schedule. Defaults to 0.007.
        momentum: float. Defaults to 0.9.
        fused: bool. Whether TensorFlow runs the fused kernel (False: the
            `keras.ops` update, as on JAX). Defaults to `True`.
        **kwargs: arguments of `keras.optimizers.Optimizer`.
    """

    def __init__(
        self, learning_rate=0.007, momentum=0.9, fused=True, name="tf1_momentum", **kwargs
    ):
        super().__init__(learning_rate=learning_rate, name=name, **kwargs)
        checks.number_in_range("momentum", momentum, 0, 1, include_high=False)
        self.momentum = momentum
        self.fused = bool(fused)

    def build(self, variables):
        if self.built:
            return
        super().build(variables)
        self.accumulators = [
            self.add_variable_from_reference(variable, "momentum") for variable in variables
        ]

    def update_step(self, gradient, variable, learning_rate):
        learning_rate = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        accumulator = self.accumulators[self._get_variable_index(variable)]
        if self.fused and keras.backend.backend() == "tensorflow":
            from tf_pacseg.training import fused_momentum

            if isinstance(variable, keras.Variable):
                variable = variable.value  # The backend's tf.Variable.
            fused_momentum.apply_momentum(
                variable, accumulator.value, learning_rate, gradient, self.momentum
            )
            return
        self.assign(accumulator, ops.add(ops.multiply(accumulator, self.momentum), gradient))
        self.assign_sub(variable, ops.multiply(accumulator, learning_rate))

    def get_config(self):
        config = super().get_config()
        config.update({"momentum": self.momentum, "fused": self.fused})
        return config
