"""Tests of tf_pacseg.inference.metrics against NumPy references."""

import json
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import run_python

from tf_pacseg.inference.metrics import (
    ConfusionMatrix,
    confusion_matrix,
    mean_dice,
    mean_iou,
    mean_precision,
    mean_recall,
    per_class_dice,
    per_class_iou,
    per_class_precision,
    per_class_recall,
    pixel_accuracy,
)

IGNORE = 255


def _data(seed, shape=(2, 9, 13), num_classes=5):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, size=shape)
    labels[rng.random(shape) < 0.2] = IGNORE
    predictions = rng.integers(0, num_classes, size=shape)
    return labels.astype(np.int32), predictions.astype(np.int32)


def _reference(labels, predictions, num_classes):
    kept = labels != IGNORE
    cells = labels[kept].astype(np.int64) * num_classes + predictions[kept]
    return np.bincount(cells, minlength=num_classes**2).reshape(num_classes, num_classes)


def test_confusion_matrix_matches_bincount_and_excludes_ignore():
    labels, predictions = _data(0)
    cm = keras.ops.convert_to_numpy(confusion_matrix(labels, predictions, num_classes=5))
    np.testing.assert_array_equal(cm, _reference(labels, predictions, 5))
    assert cm.sum() == np.count_nonzero(labels != IGNORE)
    # Rows are ground truth: a single pixel labelled 1 and predicted 3.
    one = confusion_matrix(np.array([[1, IGNORE]]), np.array([[3, 0]]), num_classes=5)
    expected = np.zeros((5, 5), np.int32)
    expected[1, 3] = 1
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(one), expected)


def test_confusion_matrix_inside_tf_function_with_unknown_shapes():
    labels, predictions = _data(1, shape=(1, 7, 5, 1))
    spec = tf.TensorSpec([None, None, None, 1], tf.int32)
    traced = tf.function(
        lambda y, p: confusion_matrix(y, p, num_classes=5), input_signature=[spec, spec]
    )
    np.testing.assert_array_equal(
        traced(labels, predictions).numpy(), _reference(labels, predictions, 5)
    )


def test_out_of_range_pixels_are_left_out_and_make_the_metric_nan():
    labels, predictions = _data(2)
    bad_labels = labels.copy()
    bad_labels[0, 0, :3] = [5, 100, -1]  # neither a class nor ignore
    bad_labels[1, 0, 0] = 2
    bad_predictions = predictions.copy()
    bad_predictions[1, 0, 0] = 7  # from logits with too many channels
    cm = keras.ops.convert_to_numpy(confusion_matrix(bad_labels, bad_predictions, num_classes=5))
    kept = (bad_labels >= 0) & (bad_labels < 5) & (bad_predictions < 5)
    np.testing.assert_array_equal(
        cm, _reference(np.where(kept, bad_labels, IGNORE), bad_predictions, 5)
    )

    metric = ConfusionMatrix(num_classes=5)
    metric.update_state(labels, predictions)
    assert np.isfinite(float(metric.result()))
    metric.update_state(bad_labels, bad_predictions)
    expected_invalid = np.count_nonzero((bad_labels != IGNORE) & ~kept)
    assert int(metric.invalid_count.numpy()) == expected_invalid == 4
    assert np.isnan(float(metric.result()))
    metric.reset_state()
    assert int(metric.invalid_count.numpy()) == 0
    assert np.all(metric.matrix().numpy() == 0)


def test_iou_and_accuracy_of_a_known_matrix():
    cm = np.array(
        [
            [3, 0, 1, 0],  # class 0: TP 3, FN 1, FP 2 -> 3/6
            [2, 4, 0, 0],  # class 1: TP 4, FN 2, FP 0 -> 4/6
            [0, 0, 0, 0],  # class 2: only predicted once -> 0
            [0, 0, 0, 0],  # class 3: absent -> NaN, left out of the mean
        ]
    )
    iou = per_class_iou(cm)
    np.testing.assert_allclose(iou[:3], [3 / 6, 4 / 6, 0.0])
    assert np.isnan(iou[3])
    assert mean_iou(cm) == pytest.approx((3 / 6 + 4 / 6 + 0.0) / 3)
    assert pixel_accuracy(cm) == pytest.approx(7 / 10)


def test_empty_matrix_scores_zero():
    cm = np.zeros((3, 3), np.int64)
    assert mean_iou(cm) == 0.0
    assert pixel_accuracy(cm) == 0.0
    assert np.all(np.isnan(per_class_iou(cm)))
    assert float(ConfusionMatrix(num_classes=3).result()) == 0.0


def _reference_scores(cm):
    """(precision, recall, dice) per class, one class at a time from TP, FP and FN."""
    scores = np.full((3, len(cm)), np.nan)
    for c in range(len(cm)):
        tp = cm[c, c]
        fp, fn = cm[:, c].sum() - tp, cm[c].sum() - tp
        if tp + fp + fn == 0:
            continue  # Absent: NaN, as its IoU.
        scores[0, c] = tp / (tp + fp) if tp + fp else 0.0
        scores[1, c] = tp / (tp + fn) if tp + fn else 0.0
        scores[2, c] = 2 * tp / (2 * tp + fp + fn)
    return scores


def _matrix_grid():
    """Random matrices of 1..21 classes, some classes absent, only labelled or only predicted."""
    for seed, num_classes in enumerate((1, 2, 3, 5, 8, 21)):
        rng = np.random.default_rng(seed)
        cm = rng.integers(0, 20, (num_classes, num_classes)) * (
            rng.random((num_classes,) * 2) < 0.6
        )
        yield cm
        if num_classes >= 3:
            absent, only_labelled, only_predicted = rng.permutation(num_classes)[:3]
            cm = cm.copy()
            cm[absent], cm[:, absent] = 0, 0
            cm[:, only_labelled] = 0
            cm[only_labelled, (only_labelled + 1) % num_classes] = 4
            cm[only_predicted] = 0
            cm[(only_predicted + 1) % num_classes, only_predicted] = 3
            yield cm
    yield np.zeros((4, 4), np.int64)


@pytest.mark.parametrize("cm", list(_matrix_grid()))
def test_precision_recall_dice_match_numpy_reference(cm):
    precision, recall, dice = per_class_precision(cm), per_class_recall(cm), per_class_dice(cm)
    np.testing.assert_allclose(np.stack([precision, recall, dice]), _reference_scores(cm))
    iou = per_class_iou(cm)
    # The classes present are mIoU's: NaN exactly where IoU is NaN.
    for scores in (precision, recall, dice):
        np.testing.assert_array_equal(np.isnan(scores), np.isnan(iou))
    # Dice is F1 (the harmonic mean of precision and recall) and 2 IoU / (1 + IoU).
    both = precision + recall > 0
    p, r = precision[both], recall[both]
    np.testing.assert_allclose(dice[both], 2 * p * r / (p + r))
    np.testing.assert_allclose(dice, 2 * iou / (1 + iou))
    present = ~np.isnan(iou)
    for mean, scores in ((mean_precision, precision), (mean_recall, recall), (mean_dice, dice)):
        expected = scores[present].mean() if present.any() else 0.0
        assert mean(cm) == pytest.approx(expected)


def test_precision_recall_dice_of_a_known_matrix():
    cm = np.array(
        [
            [3, 0, 1, 0],  # class 0: TP 3, FN 1, FP 2
            [2, 4, 0, 0],  # class 1: TP 4, FN 2, FP 0
            [0, 0, 0, 0],  # class 2: only predicted once: precision 0, recall 0
            [0, 0, 0, 0],  # class 3: absent -> NaN, left out of the means
        ]
    )
    np.testing.assert_allclose(per_class_precision(cm)[:3], [3 / 5, 4 / 4, 0.0])
    np.testing.assert_allclose(per_class_recall(cm)[:3], [3 / 4, 4 / 6, 0.0])
    np.testing.assert_allclose(per_class_dice(cm)[:3], [6 / 9, 8 / 10, 0.0])
    assert np.isnan(per_class_dice(cm)[3])
    assert mean_precision(cm) == pytest.approx((3 / 5 + 1.0 + 0.0) / 3)
    assert mean_recall(cm) == pytest.approx((3 / 4 + 4 / 6 + 0.0) / 3)
    assert mean_dice(cm) == pytest.approx((6 / 9 + 8 / 10 + 0.0) / 3)
    # A class only labelled (never predicted) has precision 0 and recall 0 too.
    labelled_only = np.array([[2, 1], [0, 0]])
    np.testing.assert_allclose(per_class_precision(labelled_only), [1.0, 0.0])
    np.testing.assert_allclose(per_class_recall(labelled_only), [2 / 3, 0.0])
    with pytest.raises(ValueError, match=r"Received: cm.shape=\(3,\)"):
        per_class_dice(np.zeros(3))


def test_metric_accumulates_like_one_batch_and_takes_logits():
    labels, predictions = _data(3, shape=(4, 6, 7))
    split = ConfusionMatrix(num_classes=5)
    split.update_state(labels[:1], predictions[:1])
    split.update_state(labels[1:, ..., None], predictions[1:])
    whole = ConfusionMatrix(num_classes=5)
    # Float scores are reduced with argmax.
    whole.update_state(labels, np.eye(5, dtype=np.float32)[predictions] * 3.0 - 1.0)

    cm = _reference(labels, predictions, 5)
    np.testing.assert_array_equal(split.matrix().numpy(), cm)
    np.testing.assert_array_equal(whole.matrix().numpy(), cm)
    assert split.matrix().dtype == tf.int64
    np.testing.assert_allclose(float(split.result()), mean_iou(cm), rtol=1e-6)


def test_metric_config_round_trip_and_validation():
    metric = ConfusionMatrix(num_classes=7, ignore_label=0, name="miou")
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(metric))
    assert isinstance(restored, ConfusionMatrix)
    assert restored.get_config() == metric.get_config()
    assert restored.num_classes == 7 and restored.ignore_label == 0
    with pytest.raises(ValueError, match="Received: num_classes=0"):
        ConfusionMatrix(num_classes=0)
    with pytest.raises(ValueError, match=r"Received: cm.shape=\(2, 3\)"):
        mean_iou(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="sample_weight"):
        metric.update_state(np.zeros((1, 2, 2)), np.zeros((1, 2, 2)), sample_weight=1.0)


def test_metric_in_compiled_model_evaluate():
    labels, _ = _data(4, shape=(4, 6, 6), num_classes=3)
    labels[labels == IGNORE] = 0  # the stock loss below cannot ignore
    inputs = keras.Input((6, 6, 2))
    model = keras.Model(inputs, keras.layers.Conv2D(3, 1)(inputs))
    model.compile(
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[ConfusionMatrix(num_classes=3)],
    )
    images = np.random.default_rng(4).normal(size=(4, 6, 6, 2)).astype(np.float32)
    logs = model.evaluate(images, labels, batch_size=2, verbose=0, return_dict=True)
    predictions = np.argmax(model.predict(images, verbose=0), axis=-1)
    expected = mean_iou(_reference(labels, predictions, 3))
    assert logs["mean_iou"] == pytest.approx(expected, rel=1e-6)


_MIRRORED_SCRIPT = textwrap.dedent(
    """
    import json
    import sys
    import numpy as np
    import tensorflow as tf

    # Two logical CPUs: must be set before TensorFlow initialises its devices.
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2
    )
    from tf_pacseg.inference.metrics import ConfusionMatrix

    data = np.load(sys.argv[1])
    labels, predictions = data["labels"], data["predictions"]
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    with strategy.scope():
        metric = ConfusionMatrix(num_classes=5)

    def halves(context):
        i = context.replica_id_in_sync_group
        return labels[2 * i : 2 * i + 2], predictions[2 * i : 2 * i + 2]

    inputs = strategy.experimental_distribute_values_from_function(halves)
    step = tf.function(lambda y, p: strategy.run(metric.update_state, args=(y, p)))
    step(*inputs)
    step(*inputs)
    print(json.dumps({
        "replicas": strategy.num_replicas_in_sync,
        "matrix": metric.matrix().numpy().tolist(),
        "result": float(metric.result()),
    }))
    """
)


def test_metric_sums_over_replicas_of_a_mirrored_strategy(tmp_path):
    labels, predictions = _data(5, shape=(4, 8, 8))
    np.savez(tmp_path / "inputs.npz", labels=labels, predictions=predictions)
    report = json.loads(
        run_python(_MIRRORED_SCRIPT, [tmp_path / "inputs.npz"], "tensorflow")
        .stdout.strip()
        .splitlines()[-1]
    )
    assert report["replicas"] == 2
    # Each replica saw its half twice.
    expected = 2 * _reference(labels, predictions, 5)
    np.testing.assert_array_equal(report["matrix"], expected)
    assert report["result"] == pytest.approx(mean_iou(expected), rel=1e-6)


_JAX_SCRIPT = textwrap.dedent(
    """
    import json
    import sys
    import jax
    import keras
    import numpy as np
    from tf_pacseg.inference.metrics import ConfusionMatrix, confusion_matrix

    assert keras.backend.backend() == "jax"
    data = np.load(sys.argv[1])
    labels, predictions = data["labels"], data["predictions"]
    cm = jax.jit(lambda y, p: confusion_matrix(y, p, num_classes=5))(labels, predictions)
    metric = ConfusionMatrix(num_classes=5)
    metric.update_state(labels, predictions)
    print(json.dumps({
        "matrix": np.asarray(cm).tolist(),
        "metric": np.asarray(metric.matrix()).tolist(),
        "result": float(metric.result()),
    }))
    """
)


def test_confusion_matrix_under_jax_jit(tmp_path):
    labels, predictions = _data(6)
    np.savez(tmp_path / "inputs.npz", labels=labels, predictions=predictions)
    report = json.loads(
        run_python(_JAX_SCRIPT, [tmp_path / "inputs.npz"], "jax").stdout.strip().splitlines()[-1]
    )
    expected = _reference(labels, predictions, 5)
    np.testing.assert_array_equal(report["matrix"], expected)
    np.testing.assert_array_equal(report["metric"], expected)
    assert report["result"] == pytest.approx(mean_iou(expected), rel=1e-6)
