"""Segmentation heads on the backbone's features: PAC and ASPP.

Both take the backbone output (2048 channels) and return 256 channels; every
conv is followed by BatchNorm and ReLU and has no bias (unless the BatchNorm
is folded into it, `ConvBlocks.fold_batch_norm`).
"""

import keras

from tf_pacseg.model.layers import ResizeLike

HEAD_DEPTH = 256
PAC_RATES = (1, 3, 5, 7, 9)
ASPP_RATES = (6, 12, 18)


def _image_pooling(features, conv, name):
    """Spatial mean -> 1x1 conv -> BN -> ReLU, broadcast back over the map."""
    x = keras.layers.GlobalAveragePooling2D(keepdims=True, name=f"{name}.mean")(features)
    x = conv(x, HEAD_DEPTH, 1, name)
    return ResizeLike(name=f"{name}.broadcast")([x, features])


def pyramid_atrous_convolution(features, conv):
    """PAC: 1x1 conv, the shared-kernel pyramid, image pooling, a 1x1 fusion.

    Args:
        features: backbone output (batch, height, width, 2048).
        conv: `tf_pacseg.model.blocks.ConvBlocks` with the head's settings.
    """
    scope = "network.feature_extraction"
    branches = [
        conv(features, HEAD_DEPTH, 1, f"{scope}.conv2d"),
        conv(features, HEAD_DEPTH, 3, f"{scope}.multi_conv2d", pyramid_rates=PAC_RATES),
        _image_pooling(features, conv, f"{scope}.conv2d_1"),
    ]
    x = keras.layers.Concatenate(name=f"{scope}.concat")(branches)
    return conv(x, HEAD_DEPTH, 1, f"{scope}.conv2d_2")


def atrous_spatial_pyramid_pooling(features, conv, output_stride):
    """DeepLabV3's ASPP (rates 6, 12, 18, doubled at output stride 8)."""
    scope = "network.aspp"
    branches = [conv(features, HEAD_DEPTH, 1, f"{scope}.conv_1x1")]
    for rate in ASPP_RATES:
        rate *= 16 // output_stride
        branches.append(conv(features, HEAD_DEPTH, 3, f"{scope}.conv_3x3_{rate}", rate=rate))
    branches.append(_image_pooling(features, conv, f"{scope}.image_level_features.conv_1x1"))
    x = keras.layers.Concatenate(name=f"{scope}.concat")(branches)
    return conv(x, HEAD_DEPTH, 1, f"{scope}.conv_1x1_concat")
