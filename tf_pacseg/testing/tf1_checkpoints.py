"""TF1 checkpoints of the original network: random ones written, and read back.

`write_reference_checkpoint` writes what users of the original hold (the
network's variables, optionally the Estimator's `global_step` and Momentum
slots, or an ImageNet-style backbone checkpoint), `reference_logits` runs the
original graph on a checkpoint, `reference_variable_shapes` lists the names
and shapes without writing anything.
"""

import os

import numpy as np
import tensorflow as tf

from tf_pacseg.testing.tf1_network import build_imagenet_graph, build_reference_graph

v1 = tf.compat.v1

# Extra scale applied to the kernel of the LAST conv of each residual branch
# (conv3) when random weights are drawn.  With BatchNorm running on random
# moving statistics nothing renormalises the residual stream, so without it
# activations grow geometrically over 33 units; 0.35 keeps the full-depth
# network O(1)-O(10) while leaving the residual branch clearly visible.
_RESIDUAL_KERNEL_SCALE = 0.35


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


def _build_checkpoint_graph(
    base_architecture,
    head,
    output_stride,
    num_classes,
    units_per_block,
    multi_grid,
    estimator_extras,
    imagenet_style,
    fine_tune_batch_norm,
):
    """The variables of a checkpoint (see `write_reference_checkpoint`), in the default graph.

    Returns:
        (images placeholder, the logits or, `imagenet_style`, the backbone features).
    """
    placeholder = v1.placeholder(tf.float32, [None, None, None, 3], name="images")
    if imagenet_style:
        output = build_imagenet_graph(
            placeholder, base_architecture, output_stride, units_per_block, multi_grid, {}
        )
        return placeholder, output
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
    return placeholder, output


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


def resolve_prefix(checkpoint_prefix):
    """The checkpoint prefix itself, or a directory's latest checkpoint."""
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
        placeholder, output = _build_checkpoint_graph(
            base_architecture,
            head,
            output_stride,
            num_classes,
            units_per_block,
            multi_grid,
            estimator_extras,
            imagenet_style,
            fine_tune_batch_norm,
        )
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
    prefix = resolve_prefix(checkpoint_prefix)
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
        _build_checkpoint_graph(
            base_architecture,
            head,
            output_stride,
            num_classes,
            units_per_block,
            multi_grid,
            estimator_extras,
            imagenet_style,
            fine_tune_batch_norm,
        )
        return {v.op.name: [int(d) for d in v.shape] for v in v1.global_variables()}


def list_checkpoint_variables(prefix):
    """[(name, shape), ...] of a checkpoint (tf.train.list_variables)."""
    return tf.train.list_variables(resolve_prefix(prefix))
