"""Tests of tf_pacseg.model.losses against an independent TF1-graph reference of BAL."""

import json
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import run_python

from tf_pacseg.model.losses import (
    BoundaryAwareLoss,
    boundary_aware_loss,
    boundary_aware_weights,
    l2_regularization,
)
from tf_pacseg.testing import tf1_losses

IGNORE = 255


def _labels(rng, batch, height, width, num_classes, kind="blocky"):
    """Labels with ignore pixels; "blocky" has regions and edges, "noise" edges everywhere."""
    if kind == "noise":
        labels = rng.integers(0, num_classes, size=(batch, height, width))
    else:
        block = 5
        coarse = rng.integers(0, num_classes, size=(batch, -(-height // block), -(-width // block)))
        labels = np.repeat(np.repeat(coarse, block, axis=1), block, axis=2)[:, :height, :width]
        noisy = rng.random(labels.shape) < 0.03
        labels[noisy] = rng.integers(0, num_classes, size=int(noisy.sum()))
    labels[rng.random(labels.shape) < 0.05] = IGNORE
    if height > 4:
        labels[:, -2:, : width // 2] = IGNORE  # a padded band, as after the crop
    if kind == "stray":
        # Values neither a class nor ignore: the original one-hot gives zero rows.
        stray = rng.random(labels.shape) < 0.05
        labels[stray] = rng.choice([num_classes, 100, 254], size=int(stray.sum()))
    return labels.astype(np.int32)


def _tf1_reference(labels, logits, num_classes, use_weights=True):
    """docs/design.md §4 in TF1 graph ops; returns (weights, loss, d loss / d logits)."""
    graph = tf.Graph()
    with graph.as_default():
        logits_t = tf.constant(logits, tf.float32)
        weights, loss = tf1_losses.boundary_aware_loss(
            tf.constant(labels[..., None], tf.int32), logits_t, num_classes, IGNORE, use_weights
        )
        gradient = tf.gradients(loss, logits_t)[0]
        with tf.compat.v1.Session(graph=graph) as session:
            return session.run([weights, loss, gradient])


CASES = [
    # (batch, height, width, num_classes, kind)
    (1, 17, 23, 21, "blocky"),
    (2, 32, 32, 21, "blocky"),
    (2, 16, 16, 5, "blocky"),  # 4x4 after pooling: the Gaussian is mostly padding
    (1, 64, 48, 4, "noise"),  # edges everywhere: weights clip at 4
    (2, 19, 11, 6, "stray"),  # labels that are neither a class nor ignore
    (1, 3, 2, 3, "blocky"),
    (1, 1, 1, 3, "blocky"),
]


def _case(seed, batch, height, width, num_classes, kind):
    rng = np.random.default_rng(seed)
    labels = _labels(rng, batch, height, width, num_classes, kind)
    logits = rng.normal(scale=3.0, size=(batch, height, width, num_classes)).astype(np.float32)
    return labels, logits


@pytest.mark.parametrize("batch,height,width,num_classes,kind", CASES)
def test_weights_and_loss_match_tf1_reference(batch, height, width, num_classes, kind):
    labels, logits = _case(0, batch, height, width, num_classes, kind)
    ref_weights, ref_loss, _ = _tf1_reference(labels, logits, num_classes)

    weights = keras.ops.convert_to_numpy(boundary_aware_weights(labels, num_classes))
    loss = float(boundary_aware_loss(labels, logits, num_classes))

    assert weights.shape == (batch, height, width, 1)
    assert weights.dtype == np.float32
    np.testing.assert_allclose(weights, ref_weights, rtol=0, atol=1e-5)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
    if kind == "noise":
        assert weights.max() == 4.0
    if kind == "blocky" and height >= 16:
        assert weights.max() > 1.0  # edges exist and raise the weights


def test_labels_with_channel_axis_and_unknown_shapes_in_tf_function():
    labels, logits = _case(1, 2, 17, 23, 21, "blocky")
    expected = float(boundary_aware_loss(labels, logits))
    traced = tf.function(
        boundary_aware_loss,
        input_signature=[
            tf.TensorSpec([None, None, None, 1], tf.int32),
            tf.TensorSpec([None, None, None, 21], tf.float32),
        ],
    )
    np.testing.assert_allclose(float(traced(labels[..., None], logits)), expected, rtol=1e-6)
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(boundary_aware_weights(labels[..., None])),
        keras.ops.convert_to_numpy(boundary_aware_weights(labels)),
    )


def test_plain_cross_entropy_matches_reference_with_unit_weights():
    labels, logits = _case(2, 2, 17, 23, 21, "blocky")
    _, ref_loss, _ = _tf1_reference(labels, logits, 21, use_weights=False)
    loss = boundary_aware_loss(labels, logits, 21, use_boundary_weights=False)
    np.testing.assert_allclose(float(loss), ref_loss, rtol=1e-5)
    # Plain CE is the mean of the CE over non-ignored pixels.
    mask = labels != IGNORE
    targets = np.where(mask, labels, 0)
    shifted = logits - logits.max(-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    ce = -np.take_along_axis(log_probs, targets[..., None], -1)[..., 0]
    np.testing.assert_allclose(float(loss), ce[mask].mean(), rtol=1e-5)


def test_gradient_treats_weights_as_constants():
    labels, logits = _case(3, 2, 17, 23, 21, "blocky")
    _, _, ref_gradient = _tf1_reference(labels, logits, 21)
    logits_t = tf.constant(logits)
    with tf.GradientTape() as tape:
        tape.watch(logits_t)
        loss = boundary_aware_loss(labels, logits_t, 21)
    gradient = tape.gradient(loss, logits_t).numpy()

    # d/dz of sum(w m CE) / count with w constant: w m (softmax - one_hot) / count.
    weights = keras.ops.convert_to_numpy(boundary_aware_weights(labels))[..., 0]
    weights = weights * (labels != IGNORE)
    probs = tf.nn.softmax(logits).numpy()
    one_hot = np.eye(21, dtype=np.float32)[np.where(labels == IGNORE, 0, labels)]
    expected = weights[..., None] * (probs - one_hot) / np.count_nonzero(weights)
    np.testing.assert_allclose(gradient, expected, rtol=0, atol=1e-7)
    np.testing.assert_allclose(gradient, ref_gradient, rtol=0, atol=1e-7)


def test_weights_carry_no_gradient_even_from_float_labels():
    labels, _ = _case(4, 1, 16, 16, 21, "blocky")
    float_labels = tf.constant(labels, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(float_labels)
        weights = boundary_aware_weights(float_labels)
    assert tape.gradient(weights, float_labels) is None


def test_all_ignored_gives_zero_loss_not_nan():
    labels = np.full((1, 8, 8), IGNORE, np.int32)
    logits = np.random.default_rng(5).normal(size=(1, 8, 8, 21)).astype(np.float32)
    logits_t = tf.constant(logits)
    with tf.GradientTape() as tape:
        tape.watch(logits_t)
        loss = boundary_aware_loss(labels, logits_t)
    assert float(loss) == 0.0
    assert np.all(tape.gradient(loss, logits_t).numpy() == 0.0)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_low_precision_logits_are_evaluated_in_float32(dtype):
    labels, logits = _case(6, 1, 17, 23, 21, "blocky")
    low = tf.cast(logits, dtype)
    loss = boundary_aware_loss(labels, low)
    assert loss.dtype == tf.float32
    expected = boundary_aware_loss(labels, tf.cast(low, tf.float32))
    assert float(loss) == float(expected)


def test_loss_class_equals_function_and_round_trips():
    labels, logits = _case(7, 2, 17, 23, 21, "blocky")
    expected = float(boundary_aware_loss(labels, logits))
    for reduction in ("sum_over_batch_size", None, "none", "sum"):
        loss_fn = BoundaryAwareLoss(reduction=reduction)
        value = loss_fn(labels, logits)
        assert tuple(value.shape) == ()
        np.testing.assert_allclose(float(value), expected, rtol=1e-6)
    plain = BoundaryAwareLoss(use_boundary_weights=False)
    np.testing.assert_allclose(
        float(plain(labels[..., None], logits)),
        float(boundary_aware_loss(labels, logits, use_boundary_weights=False)),
        rtol=1e-6,
    )

    loss_fn = BoundaryAwareLoss(num_classes=5, ignore_label=7, use_boundary_weights=False)
    config = loss_fn.get_config()
    assert config["num_classes"] == 5 and config["ignore_label"] == 7
    assert config["use_boundary_weights"] is False
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss_fn))
    assert isinstance(restored, BoundaryAwareLoss)
    assert restored.get_config() == config


def test_loss_class_in_compiled_model_evaluate():
    labels, _ = _case(8, 4, 8, 8, 3, "blocky")
    inputs = keras.Input((8, 8, 2))
    model = keras.Model(inputs, keras.layers.Conv2D(3, 1)(inputs))
    model.compile(optimizer="sgd", loss=BoundaryAwareLoss(num_classes=3))
    images = np.random.default_rng(8).normal(size=(4, 8, 8, 2)).astype(np.float32)
    logs = model.evaluate(images, labels, batch_size=4, verbose=0, return_dict=True)
    expected = float(boundary_aware_loss(labels, model.predict(images, verbose=0), 3))
    np.testing.assert_allclose(logs["loss"], expected, rtol=1e-5)


def test_invalid_arguments_are_rejected():
    with pytest.raises(ValueError, match="Received: num_classes=0"):
        boundary_aware_weights(np.zeros((1, 4, 4), np.int32), num_classes=0)
    with pytest.raises(ValueError, match=r"Received: labels.shape=\(4, 4\)"):
        boundary_aware_weights(np.zeros((4, 4), np.int32))
    with pytest.raises(ValueError, match="Expected 21 channels"):
        boundary_aware_loss(np.zeros((1, 4, 4), np.int32), np.zeros((1, 4, 4, 3), np.float32))
    with pytest.raises(ValueError, match="sample_weight"):
        BoundaryAwareLoss()(np.zeros((1, 4, 4)), np.zeros((1, 4, 4, 21)), sample_weight=1.0)
    with pytest.raises(ValueError, match="Received: weight_decay=-1"):
        l2_regularization([], -1.0)


def test_l2_regularization_matches_slim():
    rng = np.random.default_rng(9)
    kernels = [
        tf.Variable(rng.normal(size=(3, 3, 4, 8)).astype(np.float32)),
        tf.constant(rng.normal(size=(1, 1, 8, 2)).astype(np.float32)),
    ]
    expected = tf.add_n([1e-4 * tf.nn.l2_loss(k) for k in kernels])
    np.testing.assert_allclose(float(l2_regularization(kernels, 1e-4)), float(expected), rtol=1e-6)
    assert float(l2_regularization([], 1e-4)) == 0.0


_JAX_SCRIPT = textwrap.dedent(
    """
    import sys
    import jax
    import keras
    import numpy as np
    from tf_pacseg.model.losses import (
        BoundaryAwareLoss,
        boundary_aware_loss,
        boundary_aware_weights,
    )

    assert keras.backend.backend() == "jax"
    data = np.load(sys.argv[1])

    @jax.jit  # one compilation: JAX's eager mode compiles op by op, which is slow
    def everything(labels, logits):
        return {
            "weights": boundary_aware_weights(labels),
            "loss": boundary_aware_loss(labels, logits),
            "plain": boundary_aware_loss(labels, logits, use_boundary_weights=False),
            "class_loss": BoundaryAwareLoss()(labels, logits),
        }

    out = everything(data["labels"], data["logits"])
    np.savez(sys.argv[2], **{k: np.asarray(v) for k, v in out.items()})
    """
)


def test_jax_backend_gives_the_same_loss(tmp_path):
    labels, logits = _case(10, 2, 17, 23, 21, "blocky")
    np.savez(tmp_path / "inputs.npz", labels=labels, logits=logits)
    run_python(_JAX_SCRIPT, [str(tmp_path / "inputs.npz"), str(tmp_path / "out.npz")], "jax")
    out = np.load(tmp_path / "out.npz")

    weights = keras.ops.convert_to_numpy(boundary_aware_weights(labels))
    np.testing.assert_allclose(out["weights"], weights, rtol=0, atol=1e-5)
    np.testing.assert_allclose(out["loss"], float(boundary_aware_loss(labels, logits)), rtol=1e-5)
    np.testing.assert_allclose(out["class_loss"], out["loss"], rtol=1e-6)
    plain = float(boundary_aware_loss(labels, logits, use_boundary_weights=False))
    np.testing.assert_allclose(out["plain"], plain, rtol=1e-5)


_MIRRORED_SCRIPT = textwrap.dedent(
    """
    import json
    import sys
    import numpy as np
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2
    )
    from tf_pacseg.model.losses import BoundaryAwareLoss, boundary_aware_loss

    data = np.load(sys.argv[1])
    labels, logits = data["labels"], data["logits"]
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    scaled, raw = BoundaryAwareLoss(), BoundaryAwareLoss(reduction=None)

    def halves(context):
        i = context.replica_id_in_sync_group
        return labels[i : i + 1], logits[i : i + 1]

    inputs = strategy.experimental_distribute_values_from_function(halves)
    values = strategy.run(
        tf.function(lambda y, z: (scaled(y, z), raw(y, z))), args=inputs
    )
    print(json.dumps({
        "replicas": strategy.num_replicas_in_sync,
        "scaled": [float(v) for v in strategy.experimental_local_results(values[0])],
        "raw": [float(v) for v in strategy.experimental_local_results(values[1])],
        "expected": [float(boundary_aware_loss(labels[i : i + 1], logits[i : i + 1]))
                     for i in range(2)],
    }))
    """
)


def test_loss_class_scales_by_replicas_under_mirrored_strategy(tmp_path):
    labels, logits = _case(11, 2, 17, 23, 21, "blocky")
    np.savez(tmp_path / "inputs.npz", labels=labels, logits=logits)
    result = run_python(_MIRRORED_SCRIPT, [str(tmp_path / "inputs.npz")], "tensorflow")
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["replicas"] == 2
    np.testing.assert_allclose(report["raw"], report["expected"], rtol=1e-6)
    np.testing.assert_allclose(report["scaled"], np.array(report["expected"]) / 2, rtol=1e-6)
