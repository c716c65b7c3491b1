"""The conv -> BatchNorm -> activation pattern shared by backbones and heads."""

import keras

from tf_pacseg.model.layers import AtrousConv2D, BatchNorm


class ConvBlocks:
    """Conv (+ BatchNorm) (+ activation) built with one set of network settings.

    Args:
        weight_decay: float. TF1-slim's `l2_regularizer(weight_decay)`, which is
            `weight_decay * sum(w**2) / 2` per kernel; 0 disables it.
        batch_norm_decay: float. BatchNorm moving-average decay.
        fine_tune_batch_norm: bool. Whether training uses batch statistics.
        sync_batch_norm: bool. Whether batch statistics span all replicas.
        kernel_initializer: initializer of the conv kernels.
    """

    def __init__(
        self,
        weight_decay,
        batch_norm_decay,
        fine_tune_batch_norm,
        sync_batch_norm,
        kernel_initializer,
    ):
        self.regularizer = keras.regularizers.L2(weight_decay / 2) if weight_decay else None
        self.batch_norm_decay = batch_norm_decay
        self.fine_tune_batch_norm = fine_tune_batch_norm
        self.sync_batch_norm = sync_batch_norm
        self.kernel_initializer = kernel_initializer

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
    ):
        if rate > 1 and stride == 1 and not use_bias:
            x = AtrousConv2D(
                filters,
                kernel_size,
                dilation_rate=rate,
                kernel_initializer=self.kernel_initializer,
                kernel_regularizer=self.regularizer,
                name=name,
            )(x)
        else:
            padding = "same"
            pad_total = kernel_size + (kernel_size - 1) * (rate - 1) - 1
            if stride > 1 and pad_total:
                # TF1-slim's conv2d_same: pad explicitly so that even-sized
                # inputs align as in the released weights, then a VALID conv.
                pad = (pad_total // 2, pad_total - pad_total // 2)
                x = keras.layers.ZeroPadding2D((pad, pad), name=f"{name}.pad")(x)
                padding = "valid"
            x = keras.layers.Conv2D(
                filters,
                kernel_size,
                strides=stride,
                padding=padding,
                dilation_rate=rate,
                use_bias=use_bias,
                kernel_initializer=self.kernel_initializer,
                kernel_regularizer=self.regularizer,
                name=name,
            )(x)
        if batch_norm:
            x = self.batch_norm(x, f"{name}.BatchNorm")
        if activation:
            x = keras.layers.Activation(activation, name=f"{name}.{activation}")(x)
        return x
