"""ResNet backbones: the output-stride plan, shapes and atrous consistency."""

import math

import numpy as np
import pytest
from harness import assert_config_round_trip, assert_saving_round_trip
from helpers import randomize_weights

from tf_pacseg.model.backbones import UNITS_PER_BLOCK, ResNetBackbone, unit_strides_and_rates

ARCHITECTURES = ("resnet_v1_50", "resnet_v2_50")


# --- unit_strides_and_rates ---------------------------------------------------------

PLANS = {
    # (units_per_block, output_stride): expected (stride, rate) per unit.
    ((3, 4, 6, 3), 16): [
        [(1, 1), (1, 1), (2, 1)],
        [(1, 1), (1, 1), (1, 1), (2, 1)],
        [(1, 1)] * 6,  # block3's last unit loses its stride ...
        [(1, 2), (1, 4), (1, 8)],  # ... and block4 runs at 2 x (1, 2, 4).
    ],
    ((3, 4, 6, 3), 8): [
        [(1, 1), (1, 1), (2, 1)],
        [(1, 1)] * 4,  # block2's last unit loses its stride,
        [(1, 2)] * 6,  # block3 runs at rate 2 (its last unit unstrided too),
        [(1, 4), (1, 8), (1, 16)],  # block4 at 4 x (1, 2, 4).
    ],
    ((3, 4, 23, 3), 16): [
        [(1, 1), (1, 1), (2, 1)],
        [(1, 1), (1, 1), (1, 1), (2, 1)],
        [(1, 1)] * 23,
        [(1, 2), (1, 4), (1, 8)],
    ],
    ((3, 4, 23, 3), 8): [
        [(1, 1), (1, 1), (2, 1)],
        [(1, 1)] * 4,
        [(1, 2)] * 23,
        [(1, 4), (1, 8), (1, 16)],
    ],
    ((1, 1, 1, 1), 16): [[(2, 1)], [(2, 1)], [(1, 1)], [(1, 2)]],
    ((1, 1, 1, 1), 8): [[(2, 1)], [(1, 1)], [(1, 2)], [(1, 4)]],
}


@pytest.mark.parametrize("units,output_stride", list(PLANS), ids=str)
def test_unit_strides_and_rates_follow_stack_blocks_dense(units, output_stride):
    assert unit_strides_and_rates(units, output_stride, (1, 2, 4)) == PLANS[units, output_stride]


def test_unit_strides_and_rates_cover_the_standard_depths():
    assert UNITS_PER_BLOCK == {
        "resnet_v1_50": (3, 4, 6, 3),
        "resnet_v1_101": (3, 4, 23, 3),
        "resnet_v2_50": (3, 4, 6, 3),
        "resnet_v2_101": (3, 4, 23, 3),
    }


@pytest.mark.parametrize(
    "multi_grid,output_stride,expected",
    [((1, 1, 1), 16, [(1, 2)] * 3), ((1, 2, 1), 8, [(1, 4), (1, 8), (1, 4)])],
)
def test_multi_grid_multiplies_block4_base_rate(multi_grid, output_stride, expected):
    assert unit_strides_and_rates((3, 4, 6, 3), output_stride, multi_grid)[3] == expected


@pytest.mark.parametrize("output_stride", [2, 12, 64])
def test_unit_strides_and_rates_rejects_unreachable_output_stride(output_stride):
    with pytest.raises(ValueError, match=f"Received: output_stride={output_stride}"):
        unit_strides_and_rates((3, 4, 6, 3), output_stride, (1, 2, 4))


# --- ResNetBackbone -----------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"base_architecture": "resnet_v3_50"}, r"Received: base_architecture='resnet_v3_50'"),
        ({"output_stride": 12}, r"Received: output_stride=12"),
        ({"output_stride": 32}, r"Received: output_stride=32"),
        ({"units_per_block": (1, 1, 1)}, r"Received: units_per_block=\(1, 1, 1\)"),
        ({"units_per_block": (1, 0, 1, 1)}, r"Received: units_per_block=\(1, 0, 1, 1\)"),
        ({"multi_grid": (1, 2)}, r"Received: multi_grid=\(1, 2\)"),
        ({"multi_grid": (1, 0, 4)}, r"Received: multi_grid=\(1, 0, 4\)"),
    ],
)
def test_backbone_rejects_invalid_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ResNetBackbone(**{"base_architecture": "resnet_v1_50", **kwargs})


@pytest.fixture(scope="module", params=ARCHITECTURES)
def backbones_at_8_and_16(request):
    """The same weights at output stride 8 and 16 (the weights do not depend on it)."""
    units = (1, 2, 1, 2)  # block2 holds the stride that OS8 trades for dilation
    at_16 = ResNetBackbone(request.param, output_stride=16, units_per_block=units)
    at_8 = ResNetBackbone(request.param, output_stride=8, units_per_block=units)
    randomize_weights(at_16, seed=len(request.param), residual_scale=0.35)
    at_8.set_weights(at_16.get_weights())
    return at_8, at_16


@pytest.mark.parametrize("size", [(65, 65), (64, 64), (57, 50), (33, 40)])
def test_atrous_consistency_output_stride_16_is_8_subsampled(backbones_at_8_and_16, size):
    """deeplab2's atrous_consistency_test idea, with the TF1-slim padding rules.

    Up to block2's last unit both networks are identical. From there, OS16
    applies a strided 3x3 conv (and a strided 1x1 shortcut or subsample) where
    OS8 applies the same conv densely, and every later conv of OS8 has twice
    the dilation. A strided conv with conv2d_same's symmetric padding computes
    the dense 'SAME' conv at positions 0, 2, 4, ...; a rate-2r 'SAME' conv read
    at even positions reads only even positions, exactly the rate-r conv on the
    subsampled map, and its zero padding falls on the same taps whether the
    dense size is 2n - 1 or 2n. BN and ReLU are pointwise. So the identity is
    exact (up to float summation order) at every pixel, borders included, for
    odd AND even sizes -- it is the 32k+1 rule's job only for the logits after
    the align-corners resize, not here. TF's 'SAME' striding would break it on
    even maps (it pads bottom/right only), which the even sizes catch.
    """
    at_8, at_16 = backbones_at_8_and_16
    x = np.random.default_rng(size[0]).uniform(-1.0, 1.0, (2, *size, 3)).astype("float32")
    dense = np.asarray(at_8(x, training=False))
    coarse = np.asarray(at_16(x, training=False))
    assert dense.shape == (2, math.ceil(size[0] / 8), math.ceil(size[1] / 8), 2048)
    assert coarse.shape == (2, math.ceil(size[0] / 16), math.ceil(size[1] / 16), 2048)
    scale = np.abs(coarse).max()
    assert scale > 1.0  # the features are far from trivial
    np.testing.assert_allclose(coarse, dense[:, ::2, ::2], rtol=0, atol=1e-5 * scale)


def test_backbone_output_is_2048_channels_at_ceil_of_size_over_stride(backbones_at_8_and_16):
    for backbone in backbones_at_8_and_16:
        stride = backbone.output_stride
        for size in [(1, 1), (17, 17), (16, 24), (33, 8)]:
            x = np.zeros((1, *size, 3), "float32")
            expected = (1, math.ceil(size[0] / stride), math.ceil(size[1] / stride), 2048)
            assert tuple(backbone(x, training=False).shape) == expected


def test_backbone_config_round_trip_gives_same_outputs(backbones_at_8_and_16):
    x = np.random.default_rng(2).uniform(-1, 1, (1, 19, 26, 3)).astype("float32")
    assert_config_round_trip(backbones_at_8_and_16[0], x, {"training": False})


def test_backbone_weights_and_keras_file_round_trips_give_same_outputs(
    backbones_at_8_and_16, tmp_path
):
    x = np.random.default_rng(3).uniform(-1, 1, (1, 17, 20, 3)).astype("float32")
    assert_saving_round_trip(backbones_at_8_and_16[1], x, tmp_path, {"training": False})
