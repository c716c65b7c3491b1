"""Layers of the network that Keras does not provide, in `keras.ops` only.

Layer names carry the original TF1 variable scopes with "/" written as "."
(Keras forbids "/" in names), so the checkpoint converter maps variables by
name alone: layer `a.b.conv2` with weight `kernel` is TF1's `a/b/conv2/weights`.
"""

import keras
from keras import ops

from tf_pacseg import checks
from tf_pacseg.model.resize import resize_bilinear

# The released weights were trained with these; Keras' default epsilon differs.
BATCH_NORM_EPSILON = 1e-5


@keras.saving.register_keras_serializable(package="tf_pacseg")
class BatchNorm(keras.layers.BatchNormalization):
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
class Conv2D(keras.layers.Conv2D):
    """`keras.layers.Conv2D` whose 1x1 stride-1 convolutions are matrix products on JAX.

    XLA's CPU convolution runs a 1x1 convolution 3x slower than the same
    product (forward and backward, 81x81, 256 -> 1024: 464 against 148 ms on
    a 2-core AMD EPYC); TensorFlow's oneDNN convolution runs it faster (118
    against 132 ms), so the TensorFlow backend keeps the convolution. Strided
    ones stay convolutions: a strided slice's size is a different expression
    of the input size than the convolution's, which the SavedModel export's
    free-size shapes (jax2tf) cannot prove equal where the shortcut meets the
    residual branch. Weights and results are Keras' layer's
    (`tests/model/test_layers.py`).
    """

    def convolution_op(self, inputs, kernel):
        pointwise = (
            self.kernel_size == (1, 1)
            and self.strides == (1, 1)
            and self.dilation_rate == (1, 1)
            and self.groups == 1
            and self.data_format == "channels_last"
        )
        if keras.backend.backend() != "jax" or not pointwise:
            return super().convolution_op(inputs, kernel)
        return ops.matmul(inputs, kernel[0, 0])


def atrous_conv2d(inputs, kernel, rate_counts):
    """`sum_r count_r * conv(inputs, kernel, dilation r)`, 'SAME' padding, stride 1.

    Computed as one matrix product for every kernel tap (inputs @ kernel[i, j],
    all taps at once), then each tap's map is shifted by its offset times the
    rate and summed. The products do not depend on the rate, so PAC's five
    rates cost one convolution; and unlike TensorFlow's dilated convolutions
    on the CPU, neither the forward nor the backward pass slows down when the
    rate approaches the feature map's size (tens of times faster there).

    Args:
        inputs: (batch, height, width, in_channels).
        kernel: (kernel_h, kernel_w, in_channels, out_channels), odd sizes.
        rate_counts: dict {dilation rate: multiplicity}.
    """
    kernel_h, kernel_w, in_channels, out_channels = kernel.shape
    shape = ops.shape(inputs)
    weights = ops.transpose(kernel, (2, 0, 1, 3))  # (in, kh, kw, out)
    weights = ops.reshape(weights, (in_channels, kernel_h * kernel_w * out_channels))
    taps = ops.matmul(ops.reshape(inputs, (-1, in_channels)), weights)
    taps = ops.reshape(taps, (shape[0], shape[1], shape[2], kernel_h * kernel_w * out_channels))
    outputs = None
    for index, tap in enumerate(ops.split(taps, kernel_h * kernel_w, axis=-1)):
        dy, dx = index // kernel_w - kernel_h // 2, index % kernel_w - kernel_w // 2
        counts = {}
        for rate, count in rate_counts.items():
            counts[(dy * rate, dx * rate)] = counts.get((dy * rate, dx * rate), 0) + count
        pad_y = max(abs(oy) for oy, _ in counts)
        pad_x = max(abs(ox) for _, ox in counts)
        padded = ops.pad(tap, [[0, 0], [pad_y, pad_y], [pad_x, pad_x], [0, 0]])
        for (oy, ox), count in counts.items():
            # Output pixel p reads the tap's map at p + offset; zeros outside.
            shifted = (
                tap
                if (oy, ox) == (0, 0)
                else ops.slice(
                    padded,
                    (0, pad_y + oy, pad_x + ox, 0),
                    (shape[0], shape[1], shape[2], out_channels),
                )
            )
            shifted = shifted * count if count != 1 else shifted
            outputs = shifted if outputs is None else outputs + shifted
    return outputs


@keras.saving.register_keras_serializable(package="tf_pacseg")
class AtrousConv2D(keras.layers.Layer):
    """Dilated 'SAME' convolution: TensorFlow's kernel, or `atrous_conv2d`.

    Equal to `keras.layers.Conv2D(filters, kernel_size, padding="same",
    dilation_rate=dilation_rate, use_bias=use_bias)`, with the same `kernel`
    and `bias` weights, but fast for large rates on small maps. On the
    TensorFlow backend a single rate runs TensorFlow's dilated kernel where
    it has gradients (`tf_pacseg.model.dilated_conv`, faster there); several
    rates (`PyramidAtrousConv`), and the rest, run `atrous_conv2d`.

    Args:
        filters: int. Output channels.
        kernel_size: int. Odd. Defaults to 3.
        dilation_rate: int. Defaults to 1.
        kernel_initializer: initializer of the kernel. Defaults to
            `"glorot_uniform"`.
        kernel_regularizer: optional regularizer of the kernel.
        use_bias: bool. Whether a bias (initialised to zeros) is added; the
            original's convolutions have none, a BatchNorm folded into them
            does (`tf_pacseg.model.folding`). Defaults to `False`.
    """

    def __init__(
        self,
        filters,
        kernel_size=3,
        dilation_rate=1,
        kernel_initializer="glorot_uniform",
        kernel_regularizer=None,
        use_bias=False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        checks.positive_int("filters", filters)
        checks.positive_int("kernel_size", kernel_size)
        if kernel_size % 2 == 0:
            raise checks.invalid("kernel_size", "an odd positive int", kernel_size)
        checks.positive_int("dilation_rate", dilation_rate)
        self.filters = filters
        self.kernel_size = kernel_size
        self.dilation_rate = dilation_rate
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.use_bias = use_bias

    def build(self, input_shape):
        self.kernel = self.add_weight(
            name="kernel",
            shape=(self.kernel_size, self.kernel_size, input_shape[-1], self.filters),
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
        )
        self.bias = (
            self.add_weight(name="bias", shape=(self.filters,), initializer="zeros")
            if self.use_bias
            else None
        )

    def rate_counts(self):
        return {self.dilation_rate: 1}

    def convolve(self, inputs):
        """The convolution, without the bias."""
        kernel = ops.cast(self.kernel, inputs.dtype)
        rate_counts = self.rate_counts()
        if keras.backend.backend() == "tensorflow" and list(rate_counts.values()) == [1]:
            from tf_pacseg.model import dilated_conv

            if dilated_conv.supported(keras.backend.standardize_dtype(inputs.dtype)):
                return dilated_conv.conv2d(inputs, kernel, *rate_counts)
        return atrous_conv2d(inputs, kernel, rate_counts)

    def call(self, inputs):
        outputs = self.convolve(inputs)
        if self.use_bias:
            outputs = outputs + ops.cast(self.bias, outputs.dtype)
        return outputs

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "kernel_size": self.kernel_size,
                "dilation_rate": self.dilation_rate,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
                "use_bias": self.use_bias,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="tf_pacseg")
class PyramidAtrousConv(AtrousConv2D):
    """One 3x3 kernel applied at several dilation rates, averaged.

    From "Semantic Image Segmentation with Pyramid Atrous Convolution and
    Boundary-aware Loss" (Dongkyu Yu, POSTECH). The released weights were
    trained with the rate-1 convolution counted twice and the sum divided by
    the number of rates (5, not 6): `(2 conv(x, 1) + sum_{r in 3,5,7,9}
    conv(x, r)) / 5` for the default rates. That quirk is kept exactly.

    Args:
        filters: int. Output channels.
        rates: tuple of ints. Dilation rates sharing the kernel. Defaults to
            `(1, 3, 5, 7, 9)`.
        kernel_initializer: initializer of the shared kernel. Defaults to
            `"glorot_uniform"`.
        kernel_regularizer: optional regularizer of the kernel.
        use_bias: bool. Whether a bias is added after the average. Defaults
            to `False`.
    """

    def __init__(
        self,
        filters,
        rates=(1, 3, 5, 7, 9),
        kernel_initializer="glorot_uniform",
        kernel_regularizer=None,
        use_bias=False,
        **kwargs,
    ):
        kwargs.pop("kernel_size", None)
        kwargs.pop("dilation_rate", None)
        super().__init__(
            filters,
            kernel_size=3,
            kernel_initializer=kernel_initializer,
            kernel_regularizer=kernel_regularizer,
            use_bias=use_bias,
            **kwargs,
        )
        self.rates = checks.positive_ints("rates", rates)

    def rate_counts(self):
        # The original adds one rate-1 convolution on top of the listed rates.
        counts = {1: 1}
        for rate in self.rates:
            counts[rate] = counts.get(rate, 0) + 1
        return counts

    def convolve(self, inputs):
        return super().convolve(inputs) / len(self.rates)

    def get_config(self):
        config = super().get_config()
        config.update({"rates": self.rates})
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
