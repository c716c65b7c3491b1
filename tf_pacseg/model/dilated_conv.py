"""TensorFlow's dilated convolution kernel: oneDNN's on the CPU, cuDNN's on a GPU.

`convolutions.AtrousConv2D` imports this module only on the TensorFlow backend, and
runs its single-rate convolutions (the atrous blocks, ASPP) here where the
kernel has gradients (`supported`); PAC's several rates, and every call on
JAX, run `convolutions.atrous_conv2d`'s tap products. Both compute the same thing
(`tests/model/test_layers.py`). `tf.nn.conv2d` hands the rate to the kernel
itself, where Keras' dilated convolutions go through `tf.nn.convolution`'s
space-to-batch rearrangement. Forward and backward at the sizes of
ResNet-101's block 4 and ASPP, on a 2-core AMD EPYC, the kernel takes 55-90%
of the tap products' time (docs/design.md §3.1).
"""

import contextlib
import contextvars
import functools

import tensorflow as tf


@functools.cache
def supported(dtype):
    """Whether the default device has gradients for dilated convolutions in `dtype`.

    oneDNN's CPU kernels (TensorFlow's default on x86; float32 and bfloat16)
    and cuDNN's do; TensorFlow's own CPU kernels (float16 on the CPU, and
    everything with `TF_ENABLE_ONEDNN_OPTS=0`) refuse rates above 1 in the
    backward pass, so the layer keeps the tap products there.
    """
    arguments = dict(strides=[1, 1, 1, 1], padding="SAME", dilations=[1, 2, 2, 1])
    with tf.init_scope():  # Eagerly, also when first called inside a tf.function.
        inputs, kernel = tf.ones((1, 5, 5, 1), dtype), tf.ones((3, 3, 1, 1), dtype)
        try:
            tf.raw_ops.Conv2DBackpropInput(
                input_sizes=[1, 5, 5, 1], filter=kernel, out_backprop=inputs, **arguments
            )
            tf.raw_ops.Conv2DBackpropFilter(
                input=inputs, filter_sizes=[3, 3, 1, 1], out_backprop=inputs, **arguments
            )
        except (
            tf.errors.InvalidArgumentError,
            tf.errors.UnimplementedError,
            tf.errors.NotFoundError,
        ):
            return False
    return True


_PADDING_FIRST = contextvars.ContextVar("padding_first", default=False)


@contextlib.contextmanager
def padding_first():
    """Convolutions traced within pad with zeros first, then run 'VALID'.

    For tf2onnx: it turns a dilated "SAME" convolution of an input of free
    size into an ONNX Conv with automatic padding, which ONNX Runtime refuses.
    Not for training: oneDNN runs the padded form slower (and has no
    gradient for `tf.nn.conv2d`'s explicit padding).
    """
    token = _PADDING_FIRST.set(True)
    try:
        yield
    finally:
        _PADDING_FIRST.reset(token)


def conv2d(inputs, kernel, rate):
    """`conv(inputs, kernel, dilation rate)`, 'SAME' padding, stride 1, NHWC; odd kernel sizes."""
    if not _PADDING_FIRST.get():
        return tf.nn.conv2d(inputs, kernel, strides=1, padding="SAME", dilations=rate)
    pad_y, pad_x = (rate * (size // 2) for size in kernel.shape[:2])
    inputs = tf.pad(inputs, [[0, 0], [pad_y, pad_y], [pad_x, pad_x], [0, 0]])
    return tf.nn.conv2d(inputs, kernel, strides=1, padding="VALID", dilations=rate)
