"""Stand-in for the original TF1 network, for parity tests of the Keras model.

This module rebuilds, in ``tf.compat.v1`` graph mode, the original
``Tamuel/TF_SemanticSegmentation`` segmentation network (ResNet v1 "beta" or
ResNet v2 backbone, PAC or ASPP head, 1x1 decoder with an align-corners
bilinear resize), creating every variable under the exact name and shape the
original code gives it, so that the checkpoints written here look like the
checkpoints users of the original hold (docs/design.md §2, §3). Besides the
inference path it has the original's training step (docs/design.md §6,
`build_training_graph`): BatchNorm as slim's fused ``batch_norm`` trains
(batch statistics, moving averages in ``UPDATE_OPS``), the boundary-aware
loss (tests/tf1_losses.py) plus slim's L2, the variables the original
trains, TF1's ``MomentumOptimizer`` on ``polynomial_decay``; dropout is left
out (identity), so that the step is deterministic.

It is written independently of ``tf_pacseg``: it only uses raw TF ops
(``tf.nn.conv2d``, ``tf.compat.v1.nn.fused_batch_norm``, ...) and
``tf.compat.v1.get_variable`` inside variable scopes that reproduce slim's
naming (``<scope>/weights``, ``<scope>/biases``,
``<scope>/BatchNorm/{beta,gamma,moving_mean,moving_variance}``, and
``preact/...`` / ``postnorm/...`` for the v2 batch norms that have no conv).
tf_slim's ``batch_norm`` needs ``tf_keras`` under TF 2.21, hence raw ops.

Everything runs inside a private ``tf.Graph``, so the process-wide eager mode
used by the rest of the test-suite is untouched.
"""

from __future__ import annotations

import contextlib
import os

import numpy as np
import tensorflow as tf

v1 = tf.compat.v1

BN_EPSILON = 1e-5
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

# Extra scale applied to the kernel of the LAST conv of each residual branch
# (conv3) when random weights are drawn.  With BatchNorm running on random
# moving statistics nothing renormalises the residual stream, so without it
# activations grow geometrically over 33 units; 0.35 keeps the full-depth
# network O(1)-O(10) while leaving the residual branch clearly visible.
_RESIDUAL_KERNEL_SCALE = 0.35


# --------------------------------------------------------------------------
# small slim-like building blocks
# --------------------------------------------------------------------------


# Graph collection of (moving statistic variable, its batch value) pairs.
_BATCH_STATISTICS = "batch_statistics"
# slim's batch_norm arguments in force (its arg_scope): training mode and decay.
_BATCH_NORM_MODE = {"is_training": False, "decay": 0.9997, "fused": True}


@contextlib.contextmanager
def _batch_norm_arg_scope(is_training, decay, fused=True):
    saved = dict(_BATCH_NORM_MODE)
    _BATCH_NORM_MODE.update(is_training=is_training, decay=decay, fused=fused)
    try:
        yield
    finally:
        _BATCH_NORM_MODE.update(saved)


def _batch_norm(x, relu, scope="BatchNorm"):
    """slim.batch_norm (fused, scale=True) with slim's variable names under `scope`.

    Training mode normalises with the batch statistics and adds to UPDATE_OPS
    slim's `assign_moving_average(moving, batch, decay, zero_debias=False)`:
    `moving -= (moving - batch) * (1 - decay)`, fed with what the fused op
    returns (the batch mean and the n/(n-1)-corrected batch variance).
    Unfused (`fused=False` in the arg scope): the same arithmetic through
    separate ops (moments, batch_normalization, the n/(n-1) factor), whose
    different rounding measures how much the step's float noise owes to
    the order of operations.
    """
    channels = int(x.shape[-1])
    with v1.variable_scope(scope):
        beta = v1.get_variable("beta", [channels], initializer=v1.zeros_initializer())
        gamma = v1.get_variable("gamma", [channels], initializer=v1.ones_initializer())
        mean = v1.get_variable(
            "moving_mean", [channels], initializer=v1.zeros_initializer(), trainable=False
        )
        var = v1.get_variable(
            "moving_variance", [channels], initializer=v1.ones_initializer(), trainable=False
        )
        if _BATCH_NORM_MODE["is_training"] and _BATCH_NORM_MODE["fused"]:
            y, batch_mean, batch_var = v1.nn.fused_batch_norm(
                x, gamma, beta, epsilon=BN_EPSILON, is_training=True
            )
        elif _BATCH_NORM_MODE["is_training"]:
            batch_mean, biased = tf.nn.moments(x, [0, 1, 2])
            y = tf.nn.batch_normalization(x, batch_mean, biased, beta, gamma, BN_EPSILON)
            count = tf.cast(tf.reduce_prod(tf.shape(x)[:3]), tf.float32)
            batch_var = biased * (count / tf.maximum(count - 1.0, 1.0))
        if _BATCH_NORM_MODE["is_training"]:
            complement = 1.0 - _BATCH_NORM_MODE["decay"]
            for moving, batch in ((mean, batch_mean), (var, batch_var)):
                update = v1.assign_sub(moving, (moving - batch) * complement)
                v1.add_to_collection(v1.GraphKeys.UPDATE_OPS, update)
                v1.add_to_collection(_BATCH_STATISTICS, (moving, batch))
        else:
            y, _, _ = v1.nn.fused_batch_norm(
                x, gamma, beta, mean=mean, variance=var, epsilon=BN_EPSILON, is_training=False
            )
    return tf.nn.relu(y) if relu else y


def _conv(
    x,
    depth,
    kernel,
    scope,
    stride=1,
    rate=1,
    bn=True,
    relu=True,
    bias=False,
    explicit_padding=False,
):
    """slim.conv2d look-alike: conv -> (BatchNorm | bias) -> optional ReLU.

    `explicit_padding` reproduces resnet_utils.conv2d_same: for stride > 1 the
    input is zero-padded by (k_eff - 1) // 2 at the top/left and the rest at
    the bottom/right, then convolved VALID.  Everything else is TF 'SAME'.
    """
    cin = int(x.shape[-1])
    with v1.variable_scope(scope):
        w = v1.get_variable(
            "weights",
            [kernel, kernel, cin, depth],
            initializer=v1.variance_scaling_initializer(2.0),
        )
        if explicit_padding and stride > 1:
            k_eff = kernel + (kernel - 1) * (rate - 1)
            pad_beg = (k_eff - 1) // 2
            pad_end = k_eff - 1 - pad_beg
            x = tf.pad(x, [[0, 0], [pad_beg, pad_end], [pad_beg, pad_end], [0, 0]])
            padding = "VALID"
        else:
            padding = "SAME"
        if stride > 1 and rate > 1:
            raise ValueError("stride and rate > 1 together never occur in the original")
        y = tf.nn.conv2d(x, w, strides=stride, padding=padding, dilations=rate)
        if bn:
            y = _batch_norm(y, relu=False)
        elif bias:
            b = v1.get_variable("biases", [depth], initializer=v1.zeros_initializer())
            y = tf.nn.bias_add(y, b)
    return tf.nn.relu(y) if relu else y


def _subsample(x, factor):
    """resnet_utils.subsample: 1x1 max-pool with stride `factor` (SAME)."""
    if factor == 1:
        return x
    return tf.nn.max_pool2d(x, ksize=1, strides=factor, padding="SAME")


def _resize_align_corners(x, size):
    return v1.image.resize_bilinear(x, size, align_corners=True)


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
            shortcut = _subsample(x, stride)
        else:
            shortcut = _conv(x, depth, 1, "shortcut", stride=stride, relu=False)
        r = _conv(x, depth_bottleneck, 1, "conv1")
        r = _conv(r, depth_bottleneck, 3, "conv2", stride=stride, rate=rate, explicit_padding=True)
        r = _conv(r, depth, 1, "conv3", relu=False)
        return tf.nn.relu(shortcut + r)


def _bottleneck_v2(x, depth, depth_bottleneck, stride, rate):
    with v1.variable_scope("bottleneck_v2"):
        preact = _batch_norm(x, relu=True, scope="preact")
        if depth == int(x.shape[-1]):
            shortcut = _subsample(x, stride)  # the RAW input, not preact
        else:
            shortcut = _conv(
                preact, depth, 1, "shortcut", stride=stride, bn=False, relu=False, bias=True
            )
        r = _conv(preact, depth_bottleneck, 1, "conv1")
        r = _conv(r, depth_bottleneck, 3, "conv2", stride=stride, rate=rate, explicit_padding=True)
        r = _conv(r, depth, 1, "conv3", bn=False, relu=False, bias=True)
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
            net = _conv(inputs, 64, 3, "conv1_1", stride=2, explicit_padding=True)
            net = _conv(net, 64, 3, "conv1_2")
            net = _conv(net, 128, 3, "conv1_3")
        else:
            net = _conv(
                inputs, 64, 7, "conv1", stride=2, bn=False, relu=False, explicit_padding=True
            )
        end_points["root"] = net
        net = tf.nn.max_pool2d(net, ksize=3, strides=2, padding="SAME")
        end_points["pool1"] = net
        unit_fn = _bottleneck_v1 if version == "v1" else _bottleneck_v2
        net = _stack_blocks(net, blocks, unit_fn, output_stride, end_points)
        if version == "v2":
            net = _batch_norm(net, relu=True, scope="postnorm")
    end_points["backbone"] = net
    return net


# --------------------------------------------------------------------------
# heads and decoder
# --------------------------------------------------------------------------


def _pac_head(features):
    """utils/tf_module.pyramid_atrous_convolution (scope network/feature_extraction)."""
    with v1.variable_scope("feature_extraction"):
        branch_1x1 = _conv(features, HEAD_DEPTH, 1, "conv2d")
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
            pac = _batch_norm(pac, relu=True)
        pooled = tf.reduce_mean(features, [1, 2], keepdims=True)
        pooled = _conv(pooled, HEAD_DEPTH, 1, "conv2d_1")
        pooled = _resize_align_corners(pooled, tf.shape(features)[1:3])
        concat = tf.concat([branch_1x1, pac, pooled], axis=3)
        return _conv(concat, HEAD_DEPTH, 1, "conv2d_2")


def _aspp_head(features, output_stride):
    """utils/tf_module.atrous_spatial_pyramid_pooling (scope network/aspp)."""
    if output_stride not in (8, 16):
        raise ValueError("output_stride must be either 8 or 16.")
    rates = ASPP_RATES if output_stride == 16 else tuple(2 * r for r in ASPP_RATES)
    with v1.variable_scope("aspp"):
        branches = [_conv(features, HEAD_DEPTH, 1, "conv_1x1")]
        for r in rates:
            branches.append(_conv(features, HEAD_DEPTH, 3, f"conv_3x3_{r}", rate=r))
        with v1.variable_scope("image_level_features"):
            pooled = tf.reduce_mean(features, [1, 2], keepdims=True)
            pooled = _conv(pooled, HEAD_DEPTH, 1, "conv_1x1")
            pooled = _resize_align_corners(pooled, tf.shape(features)[1:3])
            branches.append(pooled)
        concat = tf.concat(branches, axis=3)
        return _conv(concat, HEAD_DEPTH, 1, "conv_1x1_concat")


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
    through separate ops (see `_batch_norm`).
    """
    if head not in HEADS:
        raise ValueError(f"unknown head {head!r}")
    if end_points is None:
        end_points = {}
    inputs = preprocess(images_placeholder)
    with _batch_norm_arg_scope(batch_norm_training, BACKBONE_BATCH_NORM_DECAY, fused_batch_norm):
        features = _backbone(
            inputs, base_architecture, output_stride, units_per_block, multi_grid, end_points
        )
    with (
        v1.variable_scope("network"),
        _batch_norm_arg_scope(batch_norm_training, batch_norm_decay, fused_batch_norm),
    ):
        if head == "pac":
            net = _pac_head(features)
        else:
            net = _aspp_head(features, output_stride)
        end_points["head"] = net
        # Dropout (keep 0.9) is left out in training too: the parity tests
        # need a deterministic step.
        net = _conv(net, num_classes, 1, "conv2d", bn=False, relu=False)
        end_points["decoder"] = net
    return _resize_align_corners(net, tf.shape(images_placeholder)[1:3])


def _build_imagenet_graph(
    images_placeholder, base_architecture, output_stride, units_per_block, multi_grid, end_points
):
    """Backbone + `<arch>/logits` (1001 classes) as in the ImageNet checkpoints."""
    inputs = preprocess(images_placeholder)
    features = _backbone(
        inputs, base_architecture, output_stride, units_per_block, multi_grid, end_points
    )
    with v1.variable_scope(base_architecture):
        pooled = tf.reduce_mean(features, [1, 2], keepdims=True)
        _conv(pooled, IMAGENET_CLASSES, 1, "logits", bn=False, relu=False, bias=True)
        if base_architecture.startswith("resnet_v2"):
            # slim's public resnet_v2 checkpoints carry a bias on the root conv;
            # the original's graph has none, so its loader silently skips it.
            v1.get_variable("conv1/biases", [64], initializer=v1.zeros_initializer())
    return features


# --------------------------------------------------------------------------
# checkpoints
# --------------------------------------------------------------------------


def _normal(rng, std, shape, dtype):
    return (rng.standard_normal(shape, dtype=np.float32) * np.float32(std)).astype(dtype)


def _random_value(name, shape, dtype, rng):
    shape = tuple(int(s) for s in shape)
    leaf = name.rsplit("/", 1)[-1]
    if name == "global_step":
        return np.asarray(rng.integers(1000, 40000), dtype=np.int64)
    if leaf == "Momentum":
        return _normal(rng, 0.01, shape, dtype)
    if leaf == "weights":
        fan_in = int(np.prod(shape[:-1]))
        std = np.sqrt(2.0 / fan_in)
        if "/bottleneck_v" in name and name.endswith("/conv3/weights"):
            std *= _RESIDUAL_KERNEL_SCALE
        return _normal(rng, std, shape, dtype)
    if leaf == "biases":
        return _normal(rng, 0.1, shape, dtype)
    if leaf == "gamma":
        return (0.5 + rng.random(shape, dtype=np.float32)).astype(dtype)
    if leaf in ("beta", "moving_mean"):
        return _normal(rng, 0.1, shape, dtype)
    if leaf == "moving_variance":
        return (0.5 + 1.5 * rng.random(shape, dtype=np.float32)).astype(dtype)
    raise ValueError(f"no random rule for variable {name}")


def _add_estimator_extras(fine_tune_batch_norm):
    """global_step + MomentumOptimizer slots, as the Estimator checkpoint has them.

    The original trains `tf.trainable_variables()` minus every name containing
    'beta' or 'gamma' when fine_tune_batch_norm is true (its default), and the
    optimizer only creates slots for the variables it trains.
    """
    v1.train.get_or_create_global_step()
    for var in list(v1.trainable_variables()):
        name = var.op.name
        if fine_tune_batch_norm and ("beta" in name or "gamma" in name):
            continue
        v1.get_variable(
            name + "/Momentum",
            var.shape,
            initializer=v1.zeros_initializer(),
            trainable=False,
        )


def _as_batches(images):
    """-> (list of NHWC float32 batches, how to shape the outputs)."""
    if isinstance(images, np.ndarray) and images.ndim == 4:
        return [images.astype(np.float32)], "array"
    if isinstance(images, np.ndarray) and images.ndim == 3:
        return [images[None].astype(np.float32)], "single"
    batches, ranks = [], []
    for im in images:
        im = np.asarray(im, dtype=np.float32)
        if im.ndim not in (3, 4):
            raise ValueError("each image must be HWC or NHWC")
        ranks.append(im.ndim)
        batches.append(im if im.ndim == 4 else im[None])
    return batches, ranks


def _run_batches(sess, placeholder, output, images):
    batches, how = _as_batches(images)
    results = [sess.run(output, {placeholder: b}) for b in batches]
    if how == "array":
        return results[0]
    if how == "single":
        return results[0][0]
    return [r if rank == 4 else r[0] for r, rank in zip(results, how, strict=True)]


def _resolve_prefix(checkpoint_prefix):
    prefix = os.fspath(checkpoint_prefix)
    if os.path.isdir(prefix):
        latest = tf.train.latest_checkpoint(prefix)
        if latest is None:
            raise FileNotFoundError(f"no checkpoint in {prefix}")
        return latest
    return prefix


def write_reference_checkpoint(
    path_prefix,
    base_architecture,
    head,
    output_stride=16,
    num_classes=21,
    units_per_block=None,
    seed=0,
    estimator_extras=False,
    imagenet_style=False,
    images=None,
    multi_grid=(1, 2, 4),
    fine_tune_batch_norm=True,
):
    """Write a TF1 name-based checkpoint of the original network with random weights.

    Files: ``path_prefix.index``, ``path_prefix.data-00000-of-00001`` and a
    ``checkpoint`` file in the directory.  Weights are drawn from a numpy
    Generator seeded with `seed`, variables taken in sorted-name order (conv
    kernels He-normal, residual conv3 kernels x0.35, biases N(0, .1), gamma
    U(.5, 1.5), beta and moving_mean N(0, .1), moving_variance U(.5, 2),
    Momentum slots N(0, .01), global_step a random int).

    estimator_extras: also ``global_step`` and ``<var>/Momentum`` for every
      variable the original's optimizer trains (all trainable variables,
      minus beta/gamma when `fine_tune_batch_norm`, the original's default).
    imagenet_style: only the backbone plus ``<arch>/logits/{weights,biases}``
      ([1,1,2048,1001], [1001]); for resnet_v2 also ``<arch>/conv1/biases``
      [64] like slim's public checkpoints.  `head` and `num_classes` are
      ignored; with `images` the BACKBONE features are returned.
    images: NHWC array (one run, returns an array), an HWC array, or a list of
      HWC / NHWC arrays of different sizes (one run each, returns a list).
      When given, the reference outputs are returned, else None.
    """
    graph = tf.Graph()
    with graph.as_default():
        placeholder = v1.placeholder(tf.float32, [None, None, None, 3], name="images")
        if imagenet_style:
            output = _build_imagenet_graph(
                placeholder, base_architecture, output_stride, units_per_block, multi_grid, {}
            )
        else:
            output = build_reference_graph(
                placeholder,
                base_architecture,
                head,
                output_stride,
                num_classes,
                units_per_block=units_per_block,
                multi_grid=multi_grid,
            )
            if estimator_extras:
                _add_estimator_extras(fine_tune_batch_norm)
        variables = sorted(v1.global_variables(), key=lambda v: v.op.name)
        rng = np.random.default_rng(seed)
        feeds, assigns = {}, []
        for var in variables:
            value = _random_value(var.op.name, var.shape, var.dtype.base_dtype.as_numpy_dtype, rng)
            ph = v1.placeholder(var.dtype.base_dtype, var.shape)
            assigns.append(v1.assign(var, ph))
            feeds[ph] = value
        saver = v1.train.Saver(var_list=variables)
        with v1.Session(graph=graph) as sess:
            sess.run(assigns, feeds)
            directory = os.path.dirname(os.path.abspath(os.fspath(path_prefix)))
            os.makedirs(directory, exist_ok=True)
            saver.save(sess, os.fspath(path_prefix), write_meta_graph=False)
            if images is None:
                return None
            return _run_batches(sess, placeholder, output, images)


def reference_logits(
    checkpoint_prefix,
    images,
    base_architecture,
    head,
    output_stride,
    num_classes,
    units_per_block=None,
    multi_grid=(1, 2, 4),
):
    """Rebuild the original graph, restore `checkpoint_prefix` and run it on `images`.

    `checkpoint_prefix` may also be a directory (its latest checkpoint is
    used).  `images` as in write_reference_checkpoint.  Only the graph's
    variables are restored, so extra checkpoint entries (Momentum slots,
    global_step) are ignored.
    """
    prefix = _resolve_prefix(checkpoint_prefix)
    graph = tf.Graph()
    with graph.as_default():
        placeholder = v1.placeholder(tf.float32, [None, None, None, 3], name="images")
        logits = build_reference_graph(
            placeholder,
            base_architecture,
            head,
            output_stride,
            num_classes,
            units_per_block=units_per_block,
            multi_grid=multi_grid,
        )
        saver = v1.train.Saver(var_list=v1.global_variables())
        with v1.Session(graph=graph) as sess:
            saver.restore(sess, prefix)
            return _run_batches(sess, placeholder, logits, images)


# --------------------------------------------------------------------------
# the training step
# --------------------------------------------------------------------------


def build_training_graph(
    images,
    labels,
    base_architecture,
    head,
    output_stride=16,
    num_classes=21,
    units_per_block=None,
    multi_grid=(1, 2, 4),
    fine_tune_batch_norm=True,
    batch_norm_decay=0.9997,
    weight_decay=1e-4,
    loss="bal",
    initial_learning_rate=0.007,
    end_learning_rate=0.0,
    power=0.9,
    max_iter=30000,
    initial_global_step=0,
    momentum=0.9,
    fused_batch_norm=True,
):
    """The original `model_fn`'s training step on `images` (float RGB) and `labels` (int [N,H,W,1]).

    Loss = boundary-aware loss (or plain cross entropy with `loss="ce"`) +
    slim's L2 (`weight_decay * sum(w**2) / 2` per conv kernel); trains every
    trainable variable, minus the names containing 'beta' or 'gamma' with
    `fine_tune_batch_norm`; `MomentumOptimizer` on `polynomial_decay` of
    `global_step - initial_global_step`, after the UPDATE_OPS. Must be called
    inside a ``tf.Graph().as_default()`` context. `fused_batch_norm`: see
    `build_reference_graph`.

    Returns:
        dict: `train_op`, `loss` (the total, before the update), `learning_rate`,
        `trained_variables`.
    """
    import tf1_losses  # Only the training step needs the loss.

    if loss not in ("bal", "ce"):
        raise ValueError(f"unknown loss {loss!r}")
    logits = build_reference_graph(
        images,
        base_architecture,
        head,
        output_stride,
        num_classes,
        units_per_block=units_per_block,
        multi_grid=multi_grid,
        batch_norm_training=fine_tune_batch_norm,
        batch_norm_decay=batch_norm_decay,
        fused_batch_norm=fused_batch_norm,
    )
    _, data_loss = tf1_losses.boundary_aware_loss(
        labels, logits, num_classes, use_weights=loss == "bal"
    )
    kernels = [v for v in v1.trainable_variables() if v.op.name.endswith("/weights")]
    total = data_loss + tf.add_n([weight_decay * tf.nn.l2_loss(k) for k in kernels])
    global_step = v1.train.get_or_create_global_step()
    learning_rate = v1.train.polynomial_decay(
        initial_learning_rate,
        tf.cast(global_step, tf.int32) - initial_global_step,
        max_iter,
        end_learning_rate,
        power=power,
    )
    trained = [
        v
        for v in v1.trainable_variables()
        if not (fine_tune_batch_norm and ("beta" in v.name or "gamma" in v.name))
    ]
    optimizer = v1.train.MomentumOptimizer(learning_rate, momentum)
    with tf.control_dependencies(v1.get_collection(v1.GraphKeys.UPDATE_OPS)):
        train_op = optimizer.minimize(total, global_step=global_step, var_list=trained)
    return {
        "train_op": train_op,
        "loss": total,
        "learning_rate": learning_rate,
        "trained_variables": trained,
    }


def _training_placeholders():
    images = v1.placeholder(tf.float32, [None, None, None, 3], name="images")
    labels = v1.placeholder(tf.int32, [None, None, None, 1], name="labels")
    return images, labels


def reference_training_steps(checkpoint_prefix, images, labels, steps=2, **kwargs):
    """Restores `checkpoint_prefix` and runs `steps` training steps on one batch.

    Variables absent from the checkpoint (Momentum slots, global_step) start
    at zero, as in a fresh Estimator run.

    Args:
        checkpoint_prefix: a checkpoint of the network described by `kwargs`.
        images: float32 [N, H, W, 3], RGB 0..255.
        labels: int [N, H, W] or [N, H, W, 1], 255 = ignore.
        steps: int. Training steps, all on this batch.
        **kwargs: `build_training_graph`'s arguments after `labels`.

    Returns:
        dict: `losses` (each step's total loss, before its update),
        `learning_rates`, `initial` ({name: value} of every variable before
        the first step) and `variables` (a list with the same dict after each
        step; optimizer slots are named `<variable>/Momentum`).
    """
    prefix = _resolve_prefix(checkpoint_prefix)
    labels = np.asarray(labels, np.int32).reshape(np.shape(images)[:3] + (1,))
    graph = tf.Graph()
    with graph.as_default():
        images_ph, labels_ph = _training_placeholders()
        step = build_training_graph(images_ph, labels_ph, **kwargs)
        variables = v1.global_variables()
        stored = {name for name, _ in tf.train.list_variables(prefix)}
        saver = v1.train.Saver(var_list=[v for v in variables if v.op.name in stored])
        feeds = {images_ph: np.asarray(images, np.float32), labels_ph: labels}
        with v1.Session(graph=graph) as sess:
            sess.run(v1.global_variables_initializer())
            saver.restore(sess, prefix)

            def snapshot():
                return dict(zip([v.op.name for v in variables], sess.run(variables), strict=True))

            result = {"losses": [], "learning_rates": [], "initial": snapshot(), "variables": []}
            for _ in range(steps):
                _, loss, rate = sess.run(
                    [step["train_op"], step["loss"], step["learning_rate"]], feeds
                )
                result["losses"].append(float(loss))
                result["learning_rates"].append(float(rate))
                result["variables"].append(snapshot())
    return result


def calibrate_batch_norm(
    checkpoint_prefix,
    images,
    base_architecture,
    head,
    output_stride=16,
    num_classes=21,
    units_per_block=None,
    multi_grid=(1, 2, 4),
):
    """Sets every BatchNorm's moving statistics to the batch statistics of `images`.

    One training-mode forward pass (batch mean, n/(n-1)-corrected variance per
    BatchNorm); the checkpoint is rewritten in place. Gives moving
    statistics of the scale real activations have, unlike random ones.
    """
    prefix = _resolve_prefix(checkpoint_prefix)
    graph = tf.Graph()
    with graph.as_default():
        images_ph, _ = _training_placeholders()
        build_reference_graph(
            images_ph,
            base_architecture,
            head,
            output_stride,
            num_classes,
            units_per_block=units_per_block,
            multi_grid=multi_grid,
            batch_norm_training=True,
        )
        pairs = v1.get_collection(_BATCH_STATISTICS)
        saver = v1.train.Saver(var_list=v1.global_variables())
        with v1.Session(graph=graph) as sess:
            saver.restore(sess, prefix)
            values = sess.run([batch for _, batch in pairs], {images_ph: images})
            for (moving, _), value in zip(pairs, values, strict=True):
                moving.load(value, sess)
            saver.save(sess, prefix, write_meta_graph=False)


def reference_variable_shapes(
    base_architecture,
    head,
    output_stride=16,
    num_classes=21,
    units_per_block=None,
    multi_grid=(1, 2, 4),
    estimator_extras=False,
    imagenet_style=False,
    fine_tune_batch_norm=True,
):
    """{name: shape} of the variables such a checkpoint holds (graph built, nothing run)."""
    graph = tf.Graph()
    with graph.as_default():
        placeholder = v1.placeholder(tf.float32, [None, None, None, 3], name="images")
        if imagenet_style:
            _build_imagenet_graph(
                placeholder, base_architecture, output_stride, units_per_block, multi_grid, {}
            )
        else:
            build_reference_graph(
                placeholder,
                base_architecture,
                head,
                output_stride,
                num_classes,
                units_per_block=units_per_block,
                multi_grid=multi_grid,
            )
            if estimator_extras:
                _add_estimator_extras(fine_tune_batch_norm)
        return {v.op.name: [int(d) for d in v.shape] for v in v1.global_variables()}


def list_checkpoint_variables(prefix):
    """[(name, shape), ...] of a checkpoint (tf.train.list_variables)."""
    return tf.train.list_variables(_resolve_prefix(prefix))


__all__ = (
    "build_reference_graph",
    "build_training_graph",
    "reference_training_steps",
    "calibrate_batch_norm",
    "write_reference_checkpoint",
    "reference_logits",
    "reference_variable_shapes",
    "list_checkpoint_variables",
    "block_units",
    "preprocess",
)
