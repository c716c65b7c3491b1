"""Layers of the network that Keras does not provide, in `keras.ops` only.

Layer names carry the original TF1 variable scopes with "/" written as "."
(Keras forbids "/" in names), so the checkpoint converter maps variables by
name alone: layer `a.b.conv2` with weight `kernel` is TF1's `a/b/conv2/weights`.
"""

import keras
from keras import ops

from tf_pacseg.resize import resize_bilinear

# The released weights were trained with these; Keras' default epsilon differs.
BATCH_NORM_EPSILON = 1e-5


@keras.saving.register_keras_serializable(package="tf_pacseg")
class BatchNorm(keras.layers.BatchNormalization):
    """BatchNorm whose batch statistics can be switched off for training.

    The original trains with `fine_tune_batch_norm=False` by running every
    BatchNorm in inference mode (moving statistics) while beta and gamma keep
    training. Keras ties inference mode to `trainable=False`, which would also
    freeze beta and gamma, hence this flag.

    Args:
        use_batch_statistics: bool. Whether `training=True` normalises with the
            batch statistics and updates the moving ones. Defaults to `True`.
        **kwargs: arguments of `keras.layers.BatchNormalization`.
    """

    def __init__(self, use_batch_statistics=True, **kwargs):
        kwargs.setdefault("epsilon", BATCH_NORM_EPSILON)
        super().__init__(**kwargs)
        self.use_batch_statistics = use_batch_statistics

    def call(self, inputs, training=None, mask=None):
        training = bool(training) and self.use_batch_statistics
        return super().call(inputs, training=training, mask=mask)

    def get_config(self):
        config = super().get_config()
        config.update({"use_batch_statistics": self.use_batch_statistics})
        return config


@keras.saving.register_keras_serializable(package="tf_pacseg")
class PyramidAtrousConv(keras.layers.Layer):
    """One 3x3 kernel applied at several dilation rates, averaged.

    From "Semantic Image Segmentation with Pyramid Atrous Convolution and
    Boundary-aware Loss" (Dongkyu Yu, POSTECH). The released weights were
    trained with the rate-1 convolution counted twice and the sum divided by
    the number of rates (5, not 6): `(2 conv(x, 1) + sum_{r in 3,5,7,9}
    conv(x, r)) / 5` for the default rates. That quirk is kept exactly; the
    duplicated rate-1 convolution is computed once.

    Args:
        filters: int. Output channels.
        rates: tuple of ints. Dilation rates sharing the kernel. Defaults to
            `(1, 3, 5, 7, 9)`.
        kernel_initializer: initializer of the shared kernel. Defaults to
            `"glorot_uniform"`.
        kernel_regularizer: optional regularizer of the kernel.
    """

    def __init__(
        self,
        filters,
        rates=(1, 3, 5, 7, 9),
        kernel_initializer="glorot_uniform",
        kernel_regularizer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if filters <= 0:
            raise ValueError(
                "Invalid value for argument `filters`. Expected a strictly positive "
                f"value. Received filters={filters}"
            )
        if not rates or any(r <= 0 for r in rates):
            raise ValueError(
                "Invalid value for argument `rates`. Expected strictly positive "
                f"dilation rates. Received rates={rates}"
            )
        self.filters = filters
        self.rates = tuple(rates)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)

    def build(self, input_shape):
        self.kernel = self.add_weight(
            name="kernel",
            shape=(3, 3, input_shape[-1], self.filters),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
        )

    def call(self, inputs):
        kernel = ops.cast(self.kernel, inputs.dtype)
        # The original adds one rate-1 convolution on top of the listed rates.
        counts = {1: 1}
        for rate in self.rates:
            counts[rate] = counts.get(rate, 0) + 1
        outputs = None
        for rate, count in sorted(counts.items()):
            conv = ops.conv(inputs, kernel, strides=1, padding="same", dilation_rate=rate)
            conv = conv * count if count > 1 else conv
            outputs = conv if outputs is None else outputs + conv
        return outputs / len(self.rates)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "rates": self.rates,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            }
        )
        return config


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
