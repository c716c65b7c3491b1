"""The original's training step, rebuilt in `tf.compat.v1` graph mode.

The original `model_fn`'s training branch (docs/design.md §6): BatchNorm as
slim's fused `batch_norm` trains (batch statistics, moving averages in
`UPDATE_OPS`), the boundary-aware loss (`tf1_losses`) plus slim's L2, the
variables the original trains, TF1's `MomentumOptimizer` on
`polynomial_decay`. Dropout is left out (identity), so that the step is
deterministic.
"""

import numpy as np
import tensorflow as tf

from tf_pacseg.testing import tf1_losses
from tf_pacseg.testing.tf1_checkpoints import resolve_prefix
from tf_pacseg.testing.tf1_network import build_reference_graph
from tf_pacseg.testing.tf1_ops import BATCH_STATISTICS

v1 = tf.compat.v1


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
    prefix = resolve_prefix(checkpoint_prefix)
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
    prefix = resolve_prefix(checkpoint_prefix)
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
        pairs = v1.get_collection(BATCH_STATISTICS)
        saver = v1.train.Saver(var_list=v1.global_variables())
        with v1.Session(graph=graph) as sess:
            saver.restore(sess, prefix)
            values = sess.run([batch for _, batch in pairs], {images_ph: images})
            for (moving, _), value in zip(pairs, values, strict=True):
                moving.load(value, sess)
            saver.save(sess, prefix, write_meta_graph=False)
