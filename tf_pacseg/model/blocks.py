"""The conv -> BatchNorm -> activation pattern shared by backbones and heads."""

import keras

from tf_pacseg import checks
from tf_pacseg.model.convolutions import AtrousConv2D, Conv2D, PyramidAtrousConv
from tf_pacseg.model.layers import BatchNorm
from tf_pacseg.model.regularizers import WeightDecay
from tf_pacseg.model.winograd import WinogradConv2D

# Where Winograd's convolution beats the kernel's on a 2-core AMD EPYC
# (ResNet-101's blocks 3 and 4 at 513x513); not the stem and blocks 1-2,
# nor rates whose sub-grids are a few blocks wide (docs/design.md §3.6).
WINOGRAD_RATES = (1, 2)
WINOGRAD_MIN_CHANNELS = 256


class ConvBlocks:
    """Conv (+ BatchNorm) (+ activation) built with one set of network settings.

    Args:
        weight_decay: float. TF1-slim's `l2_regularizer(weight_decay)`, which is
            `weight_decay * sum(w**2) / 2` per kernel; 0 disables it.
        batch_norm_decay: float. BatchNorm moving-average decay.
        fine_tune_batch_norm: bool. Whether training uses batch statistics.
        sync_batch_norm: bool. Whether batch statistics span all replicas.
        kernel_initializer: initializer of the conv kernels.
        fold_batch_norm: bool. Build each conv -> BatchNorm pair as one conv
            with a bias, into which `tf_pacseg.model.folding` folds the
            BatchNorm (inference only); BatchNorms after no conv stay.
            Defaults to `False`.
        winograd: bool. With `fold_batch_norm`, build the 3x3 stride-1
            convolutions of rate 1 or 2 over at least `WINOGRAD_MIN_CHANNELS`
            input channels as `WinogradConv2D`s (float32 inference,
            docs/design.md §3.6). Defaults to `False`.
    """

    def __init__(
        self,
        weight_decay,
        batch_norm_decay,
        fine_tune_batch_norm,
        sync_batch_norm,
        kernel_initializer,
        fold_batch_norm=False,
        winograd=False,
    ):
        if winograd and not fold_batch_norm:
            raise checks.invalid("winograd", "False without fold_batch_norm", winograd)
        self.regularizer = WeightDecay(weight_decay) if weight_decay else None
        self.batch_norm_decay = batch_norm_decay
        self.fine_tune_batch_norm = fine_tune_batch_norm
        self.sync_batch_norm = sync_batch_norm
        self.kernel_initializer = kernel_initializer
        self.fold_batch_norm = fold_batch_norm
        self.winograd = winograd

    def batch_norm(self, x, name):
        return BatchNorm(
            momentum=self.batch_norm_decay,
            use_batch_statistics=self.fine_tune_batch_norm,
            synchronized=self.sync_batch_norm,
            name=name,
        )(x)

    def __call__(
        self,
        x,
        filters,
        kernel_size,
        name,
        stride=1,
        rate=1,
        batch_norm=True,
        activation="relu",
        use_bias=False,
        pyramid_rates=None,
    ):
        """Conv `name` (`PyramidAtrousConv` at `pyramid_rates` if given), BatchNorm
        `name.BatchNorm` (folded into the conv's bias when `fold_batch_norm`),
        activation `name.<activation>`."""
        folded = batch_norm and self.fold_batch_norm
        x = self._conv(
            x, filters, kernel_size, name, stride, rate, use_bias or folded, pyramid_rates
        )
        if batch_norm and not folded:
            x = self.batch_norm(x, f"{name}.BatchNorm")
        if activation:
            x = keras.layers.Activation(activation, name=f"{name}.{activation}")(x)
        return x

    def _conv(self, x, filters, kernel_size, name, stride, rate, use_bias, pyramid_rates):
        settings = dict(
            use_bias=use_bias,
            kernel_initializer=self.kernel_initializer,
            kernel_regularizer=self.regularizer,
            name=name,
        )
        if pyramid_rates:
            return PyramidAtrousConv(filters, rates=pyramid_rates, **settings)(x)
        if (
            self.winograd
            and use_bias
            and kernel_size == 3
            and stride == 1
            and rate in WINOGRAD_RATES
            and x.shape[-1] >= WINOGRAD_MIN_CHANNELS
        ):
            return WinogradConv2D(filters, dilation_rate=rate, name=name)(x)
        if rate > 1 and stride == 1:
            return AtrousConv2D(filters, kernel_size, dilation_rate=rate, **settings)(x)
        padding = "same"
        pad_total = kernel_size + (kernel_size - 1) * (rate - 1) - 1
        if stride > 1 and pad_total:
            # TF1-slim's conv2d_same: pad explicitly so that even-sized
            # inputs align as in the released weights, then a VALID conv.
            pad = (pad_total // 2, pad_total - pad_total // 2)
            x = keras.layers.ZeroPadding2D((pad, pad), name=f"{name}.pad")(x)
            padding = "valid"
        return Conv2D(
            filters, kernel_size, strides=stride, padding=padding, dilation_rate=rate, **settings
        )(x)
