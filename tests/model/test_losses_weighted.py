"""The loss's class weights and hardest pixels (top-k) against a NumPy reference."""

import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import run_python

from tf_pacseg.model import loss_options
from tf_pacseg.model.losses import (
    BoundaryAwareLoss,
    boundary_aware_loss,
    boundary_aware_loss_terms,
    boundary_aware_weights,
)
from tf_pacseg.training import weighted_pixel_count

IGNORE = 255


def _case(seed, batch, height, width, num_classes, stray=False):
    """Blocky labels with ignored pixels (and values neither a class nor ignore) and logits."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, num_classes, (batch, -(-height // 4), -(-width // 4)))
    labels = np.repeat(np.repeat(coarse, 4, axis=1), 4, axis=2)[:, :height, :width]
    labels[rng.random(labels.shape) < 0.1] = IGNORE
    if stray:
        labels[rng.random(labels.shape) < 0.05] = num_classes + 3
    logits = rng.normal(scale=3.0, size=(batch, height, width, num_classes))
    return labels.astype(np.int32), logits.astype(np.float32)


def _reference_terms(labels, logits, num_classes, class_weights, top_k, use_boundary_weights):
    """(weighted pixel losses [N, H, W], their weights, numerator, denominator) in float64."""
    mask = labels != IGNORE
    in_range = (labels >= 0) & (labels < num_classes)
    shifted = logits.astype(np.float64) - logits.max(-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    targets = np.where(in_range, labels, 0)
    cross_entropy = np.where(
        in_range, -np.take_along_axis(log_probs, targets[..., None], -1)[..., 0], 0.0
    )
    weights = mask.astype(np.float64)
    if use_boundary_weights:
        weights *= keras.ops.convert_to_numpy(boundary_aware_weights(labels, num_classes))[..., 0]
    if class_weights is not None:
        weights *= np.where(in_range, np.asarray(class_weights)[targets], 1.0)
    pixel_losses = weights * cross_entropy
    present = np.count_nonzero(weights)
    if top_k == 1.0:
        return pixel_losses, weights, pixel_losses.sum(), present
    k = max(1, int(top_k * labels.size))
    kept = np.sort(pixel_losses.ravel())[::-1][:k]
    return pixel_losses, weights, kept.sum(), min(k, present)


def _reference_loss(*args):
    _, _, numerator, denominator = _reference_terms(*args)
    return numerator / denominator if denominator else 0.0


CLASS_WEIGHTS = {
    "none": None,
    "balanced": (0.5, 2.0, 1.0, 3.5, 0.25),
    "a class off": (1.0, 0.0, 2.0, 1.0, 0.5),
}


@pytest.mark.parametrize("weights", sorted(CLASS_WEIGHTS))
@pytest.mark.parametrize("top_k", [1.0, 0.95, 0.5, 0.13, 1e-4])  # 0.95: k > pixels weighted
@pytest.mark.parametrize("use_boundary_weights", [True, False])
def test_weighted_top_k_loss_matches_numpy(weights, top_k, use_boundary_weights):
    labels, logits = _case(0, 2, 19, 23, 5, stray=True)
    class_weights = CLASS_WEIGHTS[weights]
    reference = _reference_terms(labels, logits, 5, class_weights, top_k, use_boundary_weights)
    _, weights, numerator, denominator = reference
    if top_k == 0.95:
        assert denominator == np.count_nonzero(weights) < int(top_k * labels.size)
    expected = numerator / denominator
    loss = boundary_aware_loss(
        labels,
        logits,
        5,
        use_boundary_weights=use_boundary_weights,
        class_weights=class_weights,
        top_k_percent_pixels=top_k,
    )
    np.testing.assert_allclose(float(loss), expected, rtol=2e-6)


def test_unit_class_weights_and_top_k_of_one_give_the_original_loss_exactly():
    labels, logits = _case(1, 2, 17, 21, 5, stray=True)
    original = float(boundary_aware_loss(labels, logits, 5))
    options = dict(class_weights=(1.0,) * 5, top_k_percent_pixels=1.0)
    assert float(boundary_aware_loss(labels, logits, 5, **options)) == original
    # A class weight of 0 drops its pixels from the sum and the count alike, as if
    # ignored (without BAL, whose edges would move).
    class_weights = CLASS_WEIGHTS["a class off"]
    (off,) = np.flatnonzero(np.asarray(class_weights) == 0)
    dropped = np.where(labels == off, IGNORE, labels)
    options = dict(use_boundary_weights=False)
    np.testing.assert_allclose(
        float(boundary_aware_loss(labels, logits, 5, class_weights=class_weights, **options)),
        float(boundary_aware_loss(dropped, logits, 5, class_weights=(1, 9, 2, 1, 0.5), **options)),
        rtol=1e-6,
    )


def test_the_smallest_share_keeps_the_single_hardest_pixel():
    labels, logits = _case(2, 1, 9, 9, 5)
    pixel_losses, _, _, _ = _reference_terms(labels, logits, 5, None, 1.0, True)
    loss = boundary_aware_loss(labels, logits, 5, top_k_percent_pixels=1e-6)
    np.testing.assert_allclose(float(loss), pixel_losses.max(), rtol=1e-6)


def test_gradient_reaches_only_the_kept_pixels():
    labels, logits = _case(3, 2, 16, 16, 5)
    class_weights, top_k = CLASS_WEIGHTS["balanced"], 0.25
    pixel_losses, weights, _, denominator = _reference_terms(
        labels, logits, 5, class_weights, top_k, True
    )
    logits_t = tf.constant(logits)
    with tf.GradientTape() as tape:
        tape.watch(logits_t)
        loss = boundary_aware_loss(
            labels, logits_t, 5, class_weights=class_weights, top_k_percent_pixels=top_k
        )
    gradient = tape.gradient(loss, logits_t).numpy()

    k = int(top_k * labels.size)
    kept = pixel_losses >= np.sort(pixel_losses.ravel())[::-1][k - 1]
    assert kept.sum() == k  # No tie at the threshold.
    probs = tf.nn.softmax(logits).numpy()
    one_hot = np.eye(5)[np.where(labels == IGNORE, 0, labels)]
    expected = (kept * weights)[..., None] * (probs - one_hot) / denominator
    np.testing.assert_allclose(gradient, expected, rtol=0, atol=1e-7)
    assert np.all(gradient[~kept] == 0.0)


@pytest.mark.parametrize("top_k", [1.0, 0.3])
def test_weighted_pixel_count_is_the_denominator_with_the_options(top_k):
    labels, logits = _case(4, 2, 15, 17, 5, stray=True)
    class_weights = CLASS_WEIGHTS["a class off"]
    _, count = boundary_aware_loss_terms(
        labels, logits, 5, class_weights=class_weights, top_k_percent_pixels=top_k
    )
    counted = weighted_pixel_count(labels[..., None], IGNORE, class_weights, top_k)
    assert float(counted) == float(count)
    _, _, _, expected = _reference_terms(labels, logits, 5, class_weights, top_k, True)
    assert float(count) == expected


def test_unknown_shapes_in_tf_function_count_k_as_static_shapes_do():
    labels, logits = _case(5, 3, 13, 11, 5)
    options = dict(class_weights=CLASS_WEIGHTS["balanced"], top_k_percent_pixels=0.29)
    expected = float(boundary_aware_loss(labels, logits, 5, **options))
    traced = tf.function(
        lambda y, z: boundary_aware_loss(y, z, 5, **options),
        input_signature=[
            tf.TensorSpec([None, None, None], tf.int32),
            tf.TensorSpec([None, None, None, 5], tf.float32),
        ],
    )
    assert float(traced(labels, logits)) == expected
    # 0.29 * 429 = 124.41: both ways count k = 124 (in float64).
    assert loss_options.top_k_pixel_count(429, 0.29) == 124
    assert int(loss_options.top_k_pixel_count(tf.constant(429), 0.29)) == 124


def test_loss_class_takes_the_options_and_round_trips():
    labels, logits = _case(6, 2, 17, 23, 5)
    options = dict(class_weights=CLASS_WEIGHTS["balanced"], top_k_percent_pixels=0.4)
    loss_fn = BoundaryAwareLoss(num_classes=5, **options)
    expected = float(boundary_aware_loss(labels, logits, 5, **options))
    np.testing.assert_allclose(float(loss_fn(labels, logits)), expected, rtol=1e-6)
    config = loss_fn.get_config()
    assert config["class_weights"] == list(options["class_weights"])
    assert config["top_k_percent_pixels"] == 0.4
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss_fn))
    assert restored.get_config() == config


def test_invalid_options_are_rejected_naming_them():
    labels, logits = _case(7, 1, 4, 4, 5)
    with pytest.raises(ValueError, match=r"5 finite numbers >= 0.*\(3 numbers\)"):
        boundary_aware_loss(labels, logits, 5, class_weights=(1.0, 2.0, 3.0))
    for bad in ((1, 1, -1, 1, 1), (0, 0, 0, 0, 0), (1, 1, float("nan"), 1, 1), ("a",) * 5):
        with pytest.raises(ValueError, match="class_weights"):
            boundary_aware_loss(labels, logits, 5, class_weights=bad)
    for bad in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match=f"Received: top_k_percent_pixels={bad}"):
            boundary_aware_loss(labels, logits, 5, top_k_percent_pixels=bad)


_JAX_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    from tf_pacseg.model.losses import boundary_aware_loss

    data = np.load(sys.argv[1])
    weights = tuple(data["class_weights"])
    losses = [
        float(boundary_aware_loss(data["labels"], data["logits"], 5, class_weights=weights,
                                  top_k_percent_pixels=top_k))
        for top_k in (1.0, 0.3)
    ]
    np.save(sys.argv[2], np.asarray(losses))
    """
)


def test_jax_backend_gives_the_same_weighted_top_k_loss(tmp_path):
    labels, logits = _case(8, 2, 17, 23, 5, stray=True)
    class_weights = CLASS_WEIGHTS["a class off"]
    np.savez(tmp_path / "in.npz", labels=labels, logits=logits, class_weights=class_weights)
    run_python(_JAX_SCRIPT, [tmp_path / "in.npz", tmp_path / "out.npy"], "jax")
    jax_losses = np.load(tmp_path / "out.npy")
    for jax_loss, top_k in zip(jax_losses, (1.0, 0.3), strict=True):
        expected = _reference_loss(labels, logits, 5, class_weights, top_k, True)
        np.testing.assert_allclose(jax_loss, expected, rtol=2e-6)
