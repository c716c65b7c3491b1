"""BatchNorm and resizing layers of the network, in `keras.ops` (convolutions: `convolutions`).

Layer names carry the original TF1 variable scopes with "/" written as "."
(Keras forbids "/" in names), so the checkpoint converter maps variables by
name alone: layer `a.b.conv2` with weight `kernel` is TF1's `a/b/conv2/weights`.
"""

import keras
from keras import ops

from tf_pacseg import checks
from tf_pacseg.model.initial_values import WeightsMixin
from tf_pacseg.model.resize import resize_bilinear

# The released weights were trained with these; Keras' default epsilon differs.
BATCH_NORM_EPSILON = 1e-5


@keras.saving.register_keras_serializable(package="tf_pacseg")
class BatchNorm(WeightsMixin, keras.layers.BatchNormalization):
    """BatchNorm as TF1's fused BatchNorm trains it, whose batch statistics can be switched off.

    In training with batch statistics it normalises with the batch mean and
    the biased batch variance, and updates `moving = momentum * moving +
    (1 - momentum) * batch` with the batch mean and the UNBIASED batch
    variance `n / (n - 1) * variance`, `n` the number of values each
    statistic is reduced over (on this replica, or on all replicas when
    `synchronized`): what TF1's fused kernel feeds slim's moving averages
    (docs/design.md §6). Keras' layer averages the biased variance instead,
    which for the image-pooling BatchNorm (`n` = batch size) moves the
    moving variance `1 / (n - 1)` less per step.

    The original trains with `fine_tune_batch_norm=False` by running every
    BatchNorm in inference mode (moving statistics) while beta and gamma keep
    training. Keras ties inference mode to `trainable=False`, which would also
    freeze beta and gamma, hence `use_batch_statistics`.

    On the TensorFlow backend the layer runs TensorFlow's fused kernel
    (`FusedBatchNormV3`, the original's; cuDNN's on a GPU) in training and
    inference, wherever it applies: 4D channels-last float16, bfloat16 or
    float32 inputs, no mask, and not `synchronized` in training. Everything
    else, and every call on JAX, runs the same computation in `keras.ops`.

    Args:
        use_batch_statistics: bool. Whether `training=True` normalises with the
            batch statistics and updates the moving ones. Defaults to `True`.
        fused: bool or None. TensorFlow's fused kernel: `None` runs it where
            it applies, `True` requires it (an error on another backend, with
            `synchronized`, or on a call it does not apply to), `False` always
            runs `keras.ops`. Defaults to `None`.
        **kwargs: arguments of `keras.layers.BatchNormalization` (epsilon
            defaults to 1e-5; `renorm` is not supported).
    """

    def __init__(self, use_batch_statistics=True, fused=None, **kwargs):
        kwargs.setdefault("epsilon", BATCH_NORM_EPSILON)
        super().__init__(**kwargs)
        if self.renorm:
            raise checks.invalid(
                "renorm", "False (TF1's BatchNorm has no renormalization)", self.renorm
            )
        checks.one_of("fused", fused, (None, True, False))
        backend = keras.backend.backend()
        if fused and backend != "tensorflow":
            raise checks.invalid(
                "fused",
                f"None or False on the {backend} backend (the kernel is TensorFlow's)",
                fused,
            )
        if fused and self.synchronized:
            raise checks.invalid(
                "fused",
                "None or False with synchronized=True (the kernel's statistics are per replica)",
                fused,
            )
        self.use_batch_statistics = use_batch_statistics
        self.fused = None if fused is None else bool(fused)

    def call(self, inputs, training=None, mask=None):
        batch_statistics = bool(training and self.use_batch_statistics and self.trainable)
        if self._runs_fused_kernel(inputs, mask, batch_statistics):
            return self._fused_call(inputs, batch_statistics)
        if not batch_statistics:
            return super().call(inputs, training=False, mask=mask)
        if mask is not None:
            raise checks.invalid("mask", "None in training (TF1's BatchNorm has no masks)", mask)
        # Statistics in float32 at least, also under mixed precision.
        x = ops.cast(inputs, keras.backend.result_type(inputs.dtype, "float32"))
        axis = self.axis % len(x.shape)
        axes = [a for a in range(len(x.shape)) if a != axis]
        mean, variance = ops.moments(x, axes, synchronized=self.synchronized)
        count = ops.cast(ops.size(x) // x.shape[axis], x.dtype)
        if self.synchronized:
            count = _sum_over_replicas(count)
        # Bessel's correction; TF1 leaves a single value's (zero) variance as is.
        self._update_moving_statistics(mean, variance * (count / ops.maximum(count - 1.0, 1.0)))
        outputs = ops.batch_normalization(
            x,
            mean,
            variance,
            axis=self.axis,
            offset=ops.cast(self.beta, x.dtype) if self.center else None,
            scale=ops.cast(self.gamma, x.dtype) if self.scale else None,
            epsilon=self.epsilon,
        )
        return ops.cast(outputs, self.compute_dtype)

    def _runs_fused_kernel(self, inputs, mask, batch_statistics):
        """Whether this call runs TensorFlow's fused kernel; raises where `fused=True` cannot."""
        if self.fused is False or keras.backend.backend() != "tensorflow":
            return False
        from tf_pacseg.model import fused_batch_norm

        dtype = keras.backend.standardize_dtype(inputs.dtype)
        if len(inputs.shape) != 4 or self.axis % 4 != 3:
            needs = "4D channels-last inputs"
        elif dtype not in fused_batch_norm.INPUT_DTYPES:
            needs = f"inputs of a dtype in {fused_batch_norm.INPUT_DTYPES}"
        elif mask is not None:
            needs = "no mask"
        elif not (self.center and self.scale):
            needs = "center=True and scale=True"
        elif batch_statistics and self.synchronized:
            needs = "per-replica statistics"
        else:
            return True
        if self.fused:
            raise checks.invalid(
                "fused",
                f"None or False for this call (TensorFlow's fused kernel needs {needs})",
                received=f"fused=True, inputs.shape={inputs.shape}, inputs.dtype={dtype}, "
                f"mask is None: {mask is None}",
            )
        return False

    def _fused_call(self, inputs, batch_statistics):
        from tf_pacseg.model import fused_batch_norm

        outputs, mean, variance = fused_batch_norm.batch_norm(
            inputs,
            *(
                ops.convert_to_tensor(v)
                for v in (self.gamma, self.beta, self.moving_mean, self.moving_variance)
            ),
            epsilon=self.epsilon,
            training=batch_statistics,
        )
        if batch_statistics:
            self._update_moving_statistics(mean, variance)
        return ops.cast(outputs, self.compute_dtype)

    def _update_moving_statistics(self, mean, unbiased_variance):
        for moving, batch in ((self.moving_mean, mean), (self.moving_variance, unbiased_variance)):
            # As TF1's `assign_moving_average`, in its order of operations.
            moving.assign_sub((ops.cast(moving, batch.dtype) - batch) * (1.0 - self.momentum))

    def get_config(self):
        config = super().get_config()
        config.update({"use_batch_statistics": self.use_batch_statistics, "fused": self.fused})
        return config


def _sum_over_replicas(value):
    """`value` summed over the `tf.distribute` replicas (`synchronized` is TensorFlow-only)."""
    import tensorflow as tf

    context = tf.distribute.get_replica_context()
    if context is None:  # Cross-replica context: Keras' moments are local there too.
        return value
    return context.all_reduce(tf.distribute.ReduceOp.SUM, value)


@keras.saving.register_keras_serializable(package="tf_pacseg")
class ResizeLike(keras.layers.Layer):
    """Bilinearly resizes `inputs[0]` to the height and width of `inputs[1]`.

    TF1 `resize_bilinear(..., align_corners=True)` semantics; a 1x1 map (image
    pooling) is broadcast, which is what that resize does to it.
    """

    def call(self, inputs):
        images, reference = inputs
        shape = ops.shape(reference)
        if images.shape[1] == 1 and images.shape[2] == 1:
            return ops.broadcast_to(images, (shape[0], shape[1], shape[2], images.shape[-1]))
        return ops.cast(resize_bilinear(images, (shape[1], shape[2])), self.compute_dtype)

    def compute_output_shape(self, input_shape):
        images_shape, reference_shape = input_shape
        return (images_shape[0], reference_shape[1], reference_shape[2], images_shape[-1])
