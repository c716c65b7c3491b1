"""3x3 convolutions by Winograd's minimal filtering F(4x4, 3x3), for the inference network.

Each 4x4 block of a 'SAME' 3x3 convolution's output depends on the 6x6
input block around it. Winograd's algorithm (Lavin and Gray, "Fast
Algorithms for Convolutional Neural Networks", 2016) maps that input block
and the kernel to 36 values each by fixed linear maps, multiplies them
pointwise and maps the 36 products back to the 16 outputs. Over all blocks
and channels: 36 matrix products of (blocks, in) by (in, out) instead of the
convolution's 144 multiplications per block and channel pair, a quarter.
The kernel's map is applied once, by `tf_pacseg.model.folding` when it fills
the inference network (`fold_batch_norms(model, winograd=True)`: evaluate.py
and predict.py with `--winograd`); the input's and output's, sums of shifted
slices, run with every call. A dilated convolution runs on its rate x rate
interleaved sub-grids, each undilated.

On the TensorFlow backend the two maps run XLA-compiled, each fused into one
pass over memory (compiled again for each new feature map size, about 2 s
on a 2-core CPU); on JAX the whole forward pass is compiled already. The
maps' coefficients (up to 8, and 1/24 in the kernel's) cost precision, so
the layer computes in float32 only: there the logits differ from the
convolution's by about 1e-6 of their range (`tests/model/test_winograd.py`;
docs/design.md §3.6 has the speed).
"""

import functools

import keras
import numpy as np
from keras import ops

from tf_pacseg import checks
from tf_pacseg.model.initial_values import WeightsMixin

BLOCK = 4  # Output block side.
TILE = BLOCK + 2  # Input block side: the block and the 3x3 kernel's border.
# F(4, 3) (Lavin and Gray, 2016): input map B^T, kernel map G, output map A^T.
_INPUT_MAP = np.array(
    [
        [4, 0, -5, 0, 1, 0],
        [0, -4, -4, 1, 1, 0],
        [0, 4, -4, -1, 1, 0],
        [0, -2, -1, 2, 1, 0],
        [0, 2, -1, -2, 1, 0],
        [0, 4, 0, -5, 0, 1],
    ],
    np.float64,
)
_KERNEL_MAP = np.array(
    [
        [1 / 4, 0, 0],
        [-1 / 6, -1 / 6, -1 / 6],
        [-1 / 6, 1 / 6, -1 / 6],
        [1 / 24, 1 / 12, 1 / 6],
        [1 / 24, -1 / 12, 1 / 6],
        [0, 0, 1],
    ],
    np.float64,
)
_OUTPUT_MAP = np.array(
    [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]],
    np.float64,
)


def transform_kernel(kernel):
    """A (3, 3, in, out) kernel in Winograd's domain: (36, in, out), computed in float64."""
    kernel = np.asarray(kernel, np.float64)
    if kernel.shape[:2] != (3, 3):
        raise checks.invalid("kernel", "a 3x3 kernel", received=f"shape {kernel.shape}")
    domain = np.einsum("ai,ijco,bj->abco", _KERNEL_MAP, kernel, _KERNEL_MAP)
    return domain.reshape(TILE * TILE, *kernel.shape[2:])


def _combine(parts, matrix):
    """`sum_j matrix[i, j] * parts[j]` for each row i (the maps are sparse)."""
    rows = []
    for coefficients in matrix:
        total = None
        for coefficient, part in zip(coefficients, parts, strict=True):
            if coefficient:
                term = part if coefficient == 1 else part * float(coefficient)
                total = term if total is None else total + term
        rows.append(total)
    return rows


def _offsets(x, axis, count):
    """TILE slices of `x` along `axis` (1 or 2): slice a holds x's entries BLOCK * i + a, i < count.

    `x` holds BLOCK * count + BLOCK entries along `axis`. Reshapes, not
    strided slices, so that sizes may be unknown until run time.
    """
    shape = ops.shape(x)
    lead = (slice(None),) * axis

    def blocks(start):
        part = x[lead + (slice(start, start + BLOCK * count),)]
        return ops.reshape(part, (*shape[:axis], count, BLOCK, *shape[axis + 1 :]))

    first, second = blocks(0), blocks(BLOCK)
    return [first[lead + (slice(None), a)] for a in range(BLOCK)] + [
        second[lead + (slice(None), a)] for a in range(TILE - BLOCK)
    ]


def _space_to_batch(x, rate):
    """(rate * rate * batch, height / rate, width / rate, channels): the sub-grids, zero-padded."""
    batch, height, width, channels = ops.shape(x)
    rows, cols = (height + rate - 1) // rate, (width + rate - 1) // rate
    x = ops.pad(x, [[0, 0], [0, rows * rate - height], [0, cols * rate - width], [0, 0]])
    x = ops.reshape(x, (batch, rows, rate, cols, rate, channels))
    x = ops.transpose(x, (2, 4, 0, 1, 3, 5))
    return ops.reshape(x, (rate * rate * batch, rows, cols, channels))


def _batch_to_space(x, rate):
    grids, rows, cols, channels = ops.shape(x)
    x = ops.reshape(x, (rate, rate, grids // (rate * rate), rows, cols, channels))
    x = ops.transpose(x, (2, 3, 0, 4, 1, 5))
    return ops.reshape(x, (grids // (rate * rate), rows * rate, cols * rate, channels))


def _input_tiles(inputs, rate):
    """(36, grids, tiles_h, tiles_w, in): every 6x6 input block in Winograd's domain."""
    if rate > 1:
        inputs = _space_to_batch(inputs, rate)
    height, width = ops.shape(inputs)[1], ops.shape(inputs)[2]
    tiles_h, tiles_w = (height + BLOCK - 1) // BLOCK, (width + BLOCK - 1) // BLOCK
    padded = ops.pad(
        inputs,
        [[0, 0], [1, BLOCK * tiles_h + 3 - height], [1, BLOCK * tiles_w + 3 - width], [0, 0]],
    )
    rows = _combine(_offsets(padded, 1, tiles_h), _INPUT_MAP)
    return ops.stack(
        [tile for row in rows for tile in _combine(_offsets(row, 2, tiles_w), _INPUT_MAP)]
    )


def _output_blocks(products, bias, rate):
    """(batch, >= height, >= width, out) from the (36, grids, tiles_h, tiles_w, out) products."""
    _, grids, tiles_h, tiles_w, filters = ops.shape(products)
    products = ops.reshape(products, (TILE, TILE, grids, tiles_h, tiles_w, filters))
    rows = _combine([products[a] for a in range(TILE)], _OUTPUT_MAP)
    blocks = ops.stack(
        [ops.stack(_combine([row[b] for b in range(TILE)], _OUTPUT_MAP), axis=3) for row in rows],
        axis=2,
    )  # (grids, tiles_h, BLOCK, tiles_w, BLOCK, filters)
    outputs = ops.reshape(blocks, (grids, tiles_h * BLOCK, tiles_w * BLOCK, filters)) + bias
    return _batch_to_space(outputs, rate) if rate > 1 else outputs


@functools.cache
def _maps(rate):
    """The input and output maps, XLA-compiled on TensorFlow (else plain functions)."""
    input_map = functools.partial(_input_tiles, rate=rate)
    output_map = functools.partial(_output_blocks, rate=rate)
    if keras.backend.backend() != "tensorflow":
        return input_map, output_map
    import tensorflow as tf

    def compiled(function):
        return tf.function(function, jit_compile=True, autograph=False, reduce_retracing=True)

    return compiled(input_map), compiled(output_map)


def winograd_conv2d(inputs, kernel, bias, rate=1):
    """'SAME' 3x3 convolution, stride 1, dilation `rate`, plus `bias`.

    Args:
        inputs: float32 (batch, height, width, in).
        kernel: (36, in, out), `transform_kernel` of the 3x3 kernel.
        bias: (out,).
        rate: int. Dilation rate.
    """
    input_map, output_map = _maps(rate)
    tiles = input_map(inputs)
    shape = ops.shape(tiles)
    products = ops.matmul(ops.reshape(tiles, (TILE * TILE, -1, shape[-1])), kernel)
    products = ops.reshape(products, (*shape[:4], kernel.shape[-1]))
    outputs = output_map(products, ops.cast(bias, products.dtype))
    height, width = ops.shape(inputs)[1], ops.shape(inputs)[2]
    return outputs[:, :height, :width]


@keras.saving.register_keras_serializable(package="tf_pacseg")
class WinogradConv2D(WeightsMixin, keras.layers.Layer):
    """A biased 'SAME' 3x3 convolution, stride 1, whose kernel is kept in Winograd's domain.

    For the inference network, in float32: `tf_pacseg.model.folding` assigns
    its `kernel`, `transform_kernel` of the folded 3x3 kernel, and its `bias`.

    Args:
        filters: int. Output channels.
        dilation_rate: int. Defaults to 1.
    """

    def __init__(self, filters, dilation_rate=1, **kwargs):
        super().__init__(**kwargs)
        checks.positive_int("filters", filters)
        checks.positive_int("dilation_rate", dilation_rate)
        self.filters = filters
        self.dilation_rate = dilation_rate

    def build(self, input_shape):
        if keras.backend.standardize_dtype(self.compute_dtype) != "float32":
            raise checks.invalid(
                "dtype policy",
                "float32 (Winograd's transforms lose 16-bit precision)",
                self.dtype_policy.name,
            )
        self.kernel = self.add_weight(
            name="kernel", shape=(TILE * TILE, input_shape[-1], self.filters), initializer="zeros"
        )
        self.bias = self.add_weight(name="bias", shape=(self.filters,), initializer="zeros")

    def call(self, inputs):
        return winograd_conv2d(inputs, self.kernel, self.bias, self.dilation_rate)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.filters)

    def get_config(self):
        config = super().get_config()
        config.update({"filters": self.filters, "dilation_rate": self.dilation_rate})
        return config
