"""The network's convolution layers, in `keras.ops`, each run the faster way per backend.

`Conv2D` (1x1 convolutions as matrix products on JAX), `AtrousConv2D` and
`PyramidAtrousConv` (dilated convolutions: TensorFlow's dilated kernel, or
one matrix product per kernel tap, `atrous_conv2d`). Layer names follow
`tf_pacseg.model.layers`' convention (TF1 scopes with "." for "/").
"""

import keras
from keras import ops

from tf_pacseg import checks
from tf_pacseg.model.initial_values import WeightsMixin


@keras.saving.register_keras_serializable(package="tf_pacseg")
class Conv2D(WeightsMixin, keras.layers.Conv2D):
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
    rates cost one convolution; and unlike the space-to-batch path of Keras'
    dilated convolutions on TensorFlow, neither the forward nor the backward
    pass slows down when the rate approaches the feature map's size.

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
class AtrousConv2D(WeightsMixin, keras.layers.Layer):
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
