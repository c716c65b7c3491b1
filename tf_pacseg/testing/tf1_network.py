"""The original segmentation network, rebuilt in `tf.compat.v1` graph mode.

The original `Tamuel/TF_SemanticSegmentation` network: ResNet v1 "beta" or
ResNet v2 backbone, PAC or ASPP head, 1x1 decoder with an align-corners
bilinear resize, every variable under the exact name and shape the original
code gives it (docs/design.md §2, §3), so that checkpoints of this graph look
like the checkpoints users of the original hold.

It is written independently of the rest of `tf_pacseg`: raw TF ops
(`tf.nn.conv2d`, `tf.compat.v1.nn.fused_batch_norm`, ...) inside variable
scopes that reproduce slim's naming (`tf1_ops`; `preact/...` and
`postnorm/...` for the v2 batch norms that have no conv). Every graph is
built inside a private `tf.Graph`, so the process-wide eager mode of the
caller is untouched.
"""

import tensorflow as tf

from tf_pacseg.testing.tf1_ops import (
    batch_norm,
    batch_norm_arg_scope,
    conv,
    resize_align_corners,
    subsample,
)

v1 = tf.compat.v1

PAC_RATES = (1, 3, 5, 7, 9)
ASPP_RATES = (6, 12, 18)
HEAD_DEPTH = 256
BACKBONE_BATCH_NORM_DECAY = 0.95  # the original's resnet_arg_scope
IMAGENET_CLASSES = 1001

ARCHITECTURES = ("resnet_v1_50", "resnet_v1_101", "resnet_v2_50", "resnet_v2_101")
HEADS = ("pac", "aspp")

# Units per block at full depth (block4 is len(multi_grid) units).
_FULL_DEPTH = {"50": (3, 4, 6), "101": (3, 4, 23)}
_BASE_DEPTHS = (64, 128, 256, 512)


# --------------------------------------------------------------------------
# backbones
# --------------------------------------------------------------------------


def _arch_parts(base_architecture):
    if base_architecture not in ARCHITECTURES:
        raise ValueError(f"unknown base_architecture {base_architecture!r}")
    version = base_architecture.split("_")[1]  # 'v1' | 'v2'
    depth = base_architecture.split("_")[2]  # '50' | '101'
    return version, depth


def block_units(base_architecture, units_per_block=None, multi_grid=(1, 2, 4)):
    """[(block_name, base_depth, [(stride, unit_rate), ...]), ...] for the 4 blocks.

    Blocks 1-3: all units stride 1 except the LAST (stride 2).  Block4: stride
    1, unit j uses multi_grid[j]; with a reduced depth block4 has
    units_per_block[3] units and uses multi_grid[:units_per_block[3]].
    """
    _, depth = _arch_parts(base_architecture)
    if units_per_block is None:
        units = (*_FULL_DEPTH[depth], len(multi_grid))
    else:
        units = tuple(int(u) for u in units_per_block)
        if len(units) != 4 or min(units) < 1:
            raise ValueError("units_per_block must be 4 positive integers")
        if units[3] > len(multi_grid):
            raise ValueError("block4 cannot have more units than multi_grid entries")
    blocks = []
    for k in range(3):
        unit_args = [(1, 1)] * (units[k] - 1) + [(2, 1)]
        blocks.append((f"block{k + 1}", _BASE_DEPTHS[k], unit_args))
    blocks.append(("block4", _BASE_DEPTHS[3], [(1, int(g)) for g in multi_grid[: units[3]]]))
    return blocks


def _bottleneck_v1(x, depth, depth_bottleneck, stride, rate):
    with v1.variable_scope("bottleneck_v1"):
        if depth == int(x.shape[-1]):
            shortcut = subsample(x, stride)
        else:
            shortcut = conv(x, depth, 1, "shortcut", stride=stride, relu=False)
        r = conv(x, depth_bottleneck, 1, "conv1")
        r = conv(r, depth_bottleneck, 3, "conv2", stride=stride, rate=rate, explicit_padding=True)
        r = conv(r, depth, 1, "conv3", relu=False)
        return tf.nn.relu(shortcut + r)


def _bottleneck_v2(x, depth, depth_bottleneck, stride, rate):
    with v1.variable_scope("bottleneck_v2"):
        preact = batch_norm(x, relu=True, scope="preact")
        if depth == int(x.shape[-1]):
            shortcut = subsample(x, stride)  # the RAW input, not preact
        else:
            shortcut = conv(
                preact, depth, 1, "shortcut", stride=stride, bn=False, relu=False, bias=True
            )
        r = conv(preact, depth_bottleneck, 1, "conv1")
        r = conv(r, depth_bottleneck, 3, "conv2", stride=stride, rate=rate, explicit_padding=True)
        r = conv(r, depth, 1, "conv3", bn=False, relu=False, bias=True)
        return shortcut + r


def _stack_blocks(net, blocks, unit_fn, output_stride, end_points):
    """resnet_utils.stack_blocks_dense: output stride through atrous convolution.

    `output_stride` is relative to the root (already divided by 4), or None.
    """
    current_stride = 1
    rate = 1
    for name, base_depth, unit_args in blocks:
        with v1.variable_scope(name):
            for i, (stride, unit_rate) in enumerate(unit_args):
                if output_stride is not None and current_stride > output_stride:
                    raise ValueError("The target output_stride cannot be reached.")
                with v1.variable_scope(f"unit_{i + 1}"):
                    if output_stride is not None and current_stride == output_stride:
                        net = unit_fn(net, base_depth * 4, base_depth, 1, rate * unit_rate)
                        rate *= stride
                    else:
                        net = unit_fn(net, base_depth * 4, base_depth, stride, unit_rate)
                        current_stride *= stride
        end_points[name] = net
    if output_stride is not None and current_stride != output_stride:
        raise ValueError("The target output_stride cannot be reached.")
    return net


def _backbone(inputs, base_architecture, output_stride, units_per_block, multi_grid, end_points):
    """Backbone features of the preprocessed `inputs` (scope = base_architecture)."""
    version, _ = _arch_parts(base_architecture)
    blocks = block_units(base_architecture, units_per_block, multi_grid)
    if output_stride is not None:
        if output_stride % 4 != 0:
            raise ValueError("The output_stride needs to be a multiple of 4.")
        output_stride //= 4
    with v1.variable_scope(base_architecture):
        if version == "v1":
            net = conv(inputs, 64, 3, "conv1_1", stride=2, explicit_padding=True)
            net = conv(net, 64, 3, "conv1_2")
            net = conv(net, 128, 3, "conv1_3")
        else:
            net = conv(
                inputs, 64, 7, "conv1", stride=2, bn=False, relu=False, explicit_padding=True
            )
        end_points["root"] = net
        net = tf.nn.max_pool2d(net, ksize=3, strides=2, padding="SAME")
        end_points["pool1"] = net
        unit_fn = _bottleneck_v1 if version == "v1" else _bottleneck_v2
        net = _stack_blocks(net, blocks, unit_fn, output_stride, end_points)
        if version == "v2":
            net = batch_norm(net, relu=True, scope="postnorm")
    end_points["backbone"] = net
    return net


# --------------------------------------------------------------------------
# heads and decoder
# --------------------------------------------------------------------------


def _pac_head(features):
    """utils/tf_module.pyramid_atrous_convolution (scope network/feature_extraction)."""
    with v1.variable_scope("feature_extraction"):
        branch_1x1 = conv(features, HEAD_DEPTH, 1, "conv2d")
        with v1.variable_scope("multi_conv2d"):
            cin = int(features.shape[-1])
            w = v1.get_variable(
                "weights",
                [3, 3, cin, HEAD_DEPTH],
                initializer=v1.variance_scaling_initializer(2.0),
            )
            # The original: conv(rate 1), then += conv(rate r) for r in (1,3,5,7,9),
            # then divided by the number of rates (5) -- six terms over five.
            pac = tf.nn.conv2d(features, w, strides=1, padding="SAME")
            for r in PAC_RATES:
                pac = pac + tf.nn.conv2d(features, w, strides=1, padding="SAME", dilations=r)
            pac = pac / len(PAC_RATES)
            pac = batch_norm(pac, relu=True)
        pooled = tf.reduce_mean(features, [1, 2], keepdims=True)
        pooled = conv(pooled, HEAD_DEPTH, 1, "conv2d_1")
        pooled = resize_align_corners(pooled, tf.shape(features)[1:3])
        concat = tf.concat([branch_1x1, pac, pooled], axis=3)
        return conv(concat, HEAD_DEPTH, 1, "conv2d_2")


def _aspp_head(features, output_stride):
    """utils/tf_module.atrous_spatial_pyramid_pooling (scope network/aspp)."""
    if output_stride not in (8, 16):
        raise ValueError("output_stride must be either 8 or 16.")
    rates = ASPP_RATES if output_stride == 16 else tuple(2 * r for r in ASPP_RATES)
    with v1.variable_scope("aspp"):
        branches = [conv(features, HEAD_DEPTH, 1, "conv_1x1")]
        for r in rates:
            branches.append(conv(features, HEAD_DEPTH, 3, f"conv_3x3_{r}", rate=r))
        with v1.variable_scope("image_level_features"):
            pooled = tf.reduce_mean(features, [1, 2], keepdims=True)
            pooled = conv(pooled, HEAD_DEPTH, 1, "conv_1x1")
            pooled = resize_align_corners(pooled, tf.shape(features)[1:3])
            branches.append(pooled)
        concat = tf.concat(branches, axis=3)
        return conv(concat, HEAD_DEPTH, 1, "conv_1x1_concat")


def preprocess(images):
    """_preprocess_zero_mean_unit_range: [0, 255] -> [-1, 1]."""
    return (2.0 / 255.0) * tf.cast(images, tf.float32) - 1.0


def build_reference_graph(
    images_placeholder,
    base_architecture,
    head,
    output_stride,
    num_classes,
    units_per_block=None,
    multi_grid=(1, 2, 4),
    end_points=None,
    batch_norm_training=False,
    batch_norm_decay=0.9997,
    fused_batch_norm=True,
):
    """Build the original graph on `images_placeholder` (float RGB 0..255).

    Must be called inside a ``tf.Graph().as_default()`` context.  Returns the
    logits [N, H, W, num_classes] resized (align_corners=True) to the input
    size.  If `end_points` is a dict it receives intermediate tensors: 'root',
    'pool1', 'block1'..'block4', 'backbone', 'head', 'decoder' (pre-resize).
    `batch_norm_training`: BatchNorm in training mode (the original's
    `is_training and fine_tune_batch_norm`), with the backbone's decay 0.95
    and the head's `batch_norm_decay`; `fused_batch_norm=False` computes it
    through separate ops (see `tf1_ops.batch_norm`).
    """
    if head not in HEADS:
        raise ValueError(f"unknown head {head!r}")
    if end_points is None:
        end_points = {}
    inputs = preprocess(images_placeholder)
    with batch_norm_arg_scope(batch_norm_training, BACKBONE_BATCH_NORM_DECAY, fused_batch_norm):
        features = _backbone(
            inputs, base_architecture, output_stride, units_per_block, multi_grid, end_points
        )
    with (
        v1.variable_scope("network"),
        batch_norm_arg_scope(batch_norm_training, batch_norm_decay, fused_batch_norm),
    ):
        if head == "pac":
            net = _pac_head(features)
        else:
            net = _aspp_head(features, output_stride)
        end_points["head"] = net
        # Dropout (keep 0.9) is left out in training too: the parity tests
        # need a deterministic step.
        net = conv(net, num_classes, 1, "conv2d", bn=False, relu=False)
        end_points["decoder"] = net
    return resize_align_corners(net, tf.shape(images_placeholder)[1:3])


def build_imagenet_graph(
    images_placeholder, base_architecture, output_stride, units_per_block, multi_grid, end_points
):
    """Backbone + `<arch>/logits` (1001 classes) as in the ImageNet checkpoints."""
    inputs = preprocess(images_placeholder)
    features = _backbone(
        inputs, base_architecture, output_stride, units_per_block, multi_grid, end_points
    )
    with v1.variable_scope(base_architecture):
        pooled = tf.reduce_mean(features, [1, 2], keepdims=True)
        conv(pooled, IMAGENET_CLASSES, 1, "logits", bn=False, relu=False, bias=True)
        if base_architecture.startswith("resnet_v2"):
            # slim's public resnet_v2 checkpoints carry a bias on the root conv;
            # the original's graph has none, so its loader silently skips it.
            v1.get_variable("conv1/biases", [64], initializer=v1.zeros_initializer())
    return features
