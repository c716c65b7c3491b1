"""Winograd's 3x3 convolution: the convolution's outputs, in the folded network and alone."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from harness import assert_config_round_trip
from helpers import randomize_weights
from test_folding import IMAGES, NETWORKS, TINY, assert_logits_match

from tf_pacseg import build_model
from tf_pacseg.model import winograd
from tf_pacseg.model.blocks import WINOGRAD_MIN_CHANNELS, ConvBlocks
from tf_pacseg.model.folding import fold_batch_norms


def _convolution_case(batch, height, width, channels, filters, rate, seed):
    rng = np.random.default_rng(seed)
    inputs = rng.standard_normal((batch, height, width, channels)).astype("float32")
    kernel = rng.standard_normal((3, 3, channels, filters)).astype("float32")
    bias = rng.standard_normal(filters).astype("float32")
    expected = tf.nn.conv2d(inputs, kernel, 1, "SAME", dilations=rate).numpy() + bias
    return inputs, winograd.transform_kernel(kernel).astype("float32"), bias, expected


def _assert_close(outputs, expected):
    outputs = np.asarray(outputs)
    assert outputs.shape == expected.shape
    error = float(np.abs(outputs - expected).max())
    assert error <= 1e-5 * float(np.abs(expected).max()), error


# (batch, height, width, in, out, rate): whole blocks, partial blocks, a single
# pixel, batch 2, dilation 2 on odd and even sizes.
CASES = [
    (1, 8, 12, 5, 3, 1),
    (2, 7, 10, 6, 4, 1),
    (1, 1, 1, 3, 2, 1),
    (1, 13, 9, 4, 6, 2),
    (2, 10, 6, 3, 5, 2),
]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_winograd_convolution_equals_the_convolution(case):
    inputs, kernel, bias, expected = _convolution_case(*case, seed=CASES.index(case))
    rate = case[-1]
    _assert_close(winograd.winograd_conv2d(inputs, kernel, bias, rate), expected)
    # As evaluate.py and predict.py trace it: sizes unknown until run time.
    traced = tf.function(
        lambda x: winograd.winograd_conv2d(x, kernel, bias, rate),
        input_signature=[tf.TensorSpec([None, None, None, case[3]], tf.float32)],
    )
    _assert_close(traced(inputs), expected)


def test_kernel_transform_rejects_other_kernel_sizes():
    with pytest.raises(ValueError, match="a 3x3 kernel"):
        winograd.transform_kernel(np.zeros((5, 5, 2, 2)))


def _winograd_layers(model):
    layers = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            layers += _winograd_layers(layer)
        elif isinstance(layer, winograd.WinogradConv2D):
            layers.append(layer)
    return layers


# Every network at OS16 (block4 at rate 2); OS8 (block3 at rate 2) on v1 + PAC and v2 + ASPP.
@pytest.mark.parametrize(
    "base_architecture,head,output_stride",
    [(*network, 16) for network in NETWORKS] + [(*NETWORKS[0], 8), (*NETWORKS[3], 8)],
)
def test_winograd_network_gives_the_unfolded_logits(base_architecture, head, output_stride):
    model = build_model(base_architecture, head, output_stride=output_stride, units_per_block=TINY)
    randomize_weights(
        model, seed=20 + NETWORKS.index((base_architecture, head)), residual_scale=0.35
    )
    folded = fold_batch_norms(model, winograd=True)
    # Block3 and block4's 3x3 convs (256 and 512 inputs) at rate 1 or 2.
    rates = {16: {"block3": 1, "block4": 2}, 8: {"block3": 2}}[output_stride]
    layers = {layer.name: layer for layer in _winograd_layers(folded)}
    expected = {
        f"{base_architecture}.{block}.unit_1.bottleneck_{base_architecture.split('_')[1]}.conv2"
        for block in rates
    }
    assert set(layers) == expected
    for name, layer in layers.items():
        assert layer.dilation_rate == rates[name.split(".")[1]]
        assert layer.kernel.shape[1] >= WINOGRAD_MIN_CHANNELS
    for images in IMAGES:
        assert_logits_match(folded(images, training=False), model(images, training=False))


def test_winograd_network_survives_a_config_round_trip():
    model = randomize_weights(build_model("resnet_v1_50", "pac", units_per_block=TINY), seed=3)
    folded = fold_batch_norms(model, winograd=True)
    clone = assert_config_round_trip(folded, IMAGES[0], {"training": False})
    assert clone.get_config()["winograd"] is True
    assert len(_winograd_layers(clone)) == 2


def test_a_folded_network_is_not_folded_again_another_way():
    model = build_model("resnet_v1_50", "pac", units_per_block=TINY)
    folded = fold_batch_norms(model, winograd=True)
    assert fold_batch_norms(folded, winograd=True) is folded
    # Export folds the model it is given without Winograd's convolutions.
    with pytest.raises(ValueError, match="folded with winograd=True"):
        fold_batch_norms(folded)


def test_winograd_needs_folded_batch_norms():
    with pytest.raises(ValueError, match="without fold_batch_norm"):
        ConvBlocks(0.0, 0.99, False, False, "he_normal", fold_batch_norm=False, winograd=True)


def test_winograd_layer_refuses_16_bit_compute():
    layer = winograd.WinogradConv2D(4, dtype="mixed_bfloat16")
    with pytest.raises(ValueError, match="float32"):
        layer.build((None, None, None, 8))
