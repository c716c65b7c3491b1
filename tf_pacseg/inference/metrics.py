"""Confusion matrix, IoU and pixel accuracy as the original evaluates them; precision, recall, Dice.

The confusion matrix counts pixels whose label is not `ignore_label`, rows =
ground truth, columns = prediction. IoU_c = TP / (TP + FP + FN); mIoU is the
mean over classes whose denominator is non-zero; pixel accuracy = trace / total
(docs/design.md §7).

A class is *present* when some pixel is labelled or predicted as it (its
IoU denominator is non-zero). Precision_c = TP / (TP + FP), recall_c = TP /
(TP + FN) and Dice_c (= F1_c) = 2 TP / (2 TP + FP + FN) are NaN for absent
classes, like IoU; a present class whose own denominator is zero scores 0
(only labelled: precision 0; only predicted: recall 0), as its IoU does.
Their means, like mIoU, are over the present classes (0 if none).

`confusion_matrix` and `ConfusionMatrix` are `keras.ops` (TensorFlow and JAX,
inside `tf.function` / `jax.jit`); the functions of a finished matrix are NumPy.
"""

import keras
import numpy as np
from keras import ops

from tf_pacseg import checks
from tf_pacseg.constants import IGNORE_LABEL, NUM_CLASSES


def _confusion_counts(labels, predictions, num_classes, ignore_label):
    """int32 ([C, C] matrix, number of out-of-range pixels) of one batch."""
    labels = ops.reshape(ops.cast(labels, "int32"), (-1,))
    predictions = ops.reshape(ops.cast(predictions, "int32"), (-1,))
    kept = labels != ignore_label
    in_range = (
        (labels >= 0) & (labels < num_classes) & (predictions >= 0) & (predictions < num_classes)
    )
    # One segment per (label, prediction) cell, plus a last one collecting the
    # pixels that fit no cell; ignored pixels add 0.
    last = num_classes * num_classes
    cells = ops.where(in_range, labels * num_classes + predictions, last)
    counts = ops.segment_sum(ops.cast(kept, "int32"), cells, num_segments=last + 1)
    return ops.reshape(counts[:last], (num_classes, num_classes)), counts[last]


def confusion_matrix(labels, predictions, num_classes=NUM_CLASSES, ignore_label=IGNORE_LABEL):
    """Confusion matrix of one batch: rows = ground truth, columns = prediction.

    Pixels labelled `ignore_label` are left out. A pixel whose label (or
    prediction) is otherwise outside [0, num_classes) belongs to no cell: it is
    left out too, which would silently inflate the scores, so the original's
    `tf.confusion_matrix` asserted against it. Traced code cannot raise on
    values; the `ConfusionMatrix` metric counts such pixels and then reports a
    NaN mIoU instead.

    Args:
        labels: int tensor of class ids, any shape ([N, H, W] or [N, H, W, 1]).
        predictions: int tensor of predicted class ids, with as many elements.
        num_classes: int. Number of classes. Defaults to 21.
        ignore_label: int. Label of pixels left out. Defaults to 255.

    Returns:
        int32 tensor [num_classes, num_classes].

    Example:

    >>> cm = confusion_matrix(labels, ops.argmax(logits, axis=-1))
    >>> mean_iou(ops.convert_to_numpy(cm))
    """
    checks.positive_int("num_classes", num_classes)
    matrix, _ = _confusion_counts(labels, predictions, num_classes, ignore_label)
    return matrix


def _as_square_matrix(cm):
    cm = np.asarray(cm, dtype=np.float64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise checks.invalid("cm", "a square 2-D confusion matrix", received=f"cm.shape={cm.shape}")
    return cm


def per_class_iou(cm):
    """IoU of each class, NaN for classes neither labelled nor predicted.

    Args:
        cm: array-like [C, C], rows = ground truth, columns = prediction.

    Returns:
        float64 NumPy array [C].
    """
    cm = _as_square_matrix(cm)
    true_positives = np.diag(cm)
    denominator = cm.sum(axis=0) + cm.sum(axis=1) - true_positives
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denominator > 0, true_positives / denominator, np.nan)


def _mean_over_present(values):
    present = ~np.isnan(values)
    return float(values[present].mean()) if present.any() else 0.0


def mean_iou(cm):
    """Mean IoU over the classes with a non-zero denominator (0 if none), a float."""
    return _mean_over_present(per_class_iou(cm))


def _present_ratio(cm, numerator, denominator):
    """numerator / denominator; 0 where only that is 0, NaN for absent classes."""
    present = cm.sum(axis=0) + cm.sum(axis=1) > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(denominator > 0, numerator / denominator, 0.0)
    return np.where(present, ratio, np.nan)


def per_class_precision(cm):
    """TP / (TP + FP) of each class: NaN if absent, 0 if labelled but never predicted.

    Args:
        cm: array-like [C, C], rows = ground truth, columns = prediction.

    Returns:
        float64 NumPy array [C].
    """
    cm = _as_square_matrix(cm)
    return _present_ratio(cm, np.diag(cm), cm.sum(axis=0))


def per_class_recall(cm):
    """TP / (TP + FN) of each class: NaN if absent, 0 if predicted but never labelled.

    `cm` is as in `per_class_precision`; returns float64 [C].
    """
    cm = _as_square_matrix(cm)
    return _present_ratio(cm, np.diag(cm), cm.sum(axis=1))


def per_class_dice(cm):
    """Dice (F1) of each class, 2 TP / (2 TP + FP + FN): NaN if absent.

    `cm` is as in `per_class_precision`; returns float64 [C].
    """
    cm = _as_square_matrix(cm)
    return _present_ratio(cm, 2 * np.diag(cm), cm.sum(axis=0) + cm.sum(axis=1))


def mean_precision(cm):
    """Mean precision over the present classes (0 if none), a float."""
    return _mean_over_present(per_class_precision(cm))


def mean_recall(cm):
    """Mean recall over the present classes (0 if none), a float."""
    return _mean_over_present(per_class_recall(cm))


def mean_dice(cm):
    """Mean Dice (F-score) over the present classes, as mIoU's (0 if none), a float."""
    return _mean_over_present(per_class_dice(cm))


def pixel_accuracy(cm):
    """Correct pixels / counted pixels (0 for an empty matrix), a float.

    `cm`, here and in `mean_iou`, is as in `per_class_iou`.
    """
    cm = _as_square_matrix(cm)
    total = cm.sum()
    return float(np.trace(cm) / total) if total > 0 else 0.0


@keras.saving.register_keras_serializable(package="tf_pacseg")
class ConfusionMatrix(keras.metrics.Metric):
    """Confusion matrix accumulated over batches; `result()` is the mIoU.

    The counts live in int64 variables with "sum" aggregation and on-read
    synchronisation, so under `tf.distribute` each replica counts its own
    pixels and reading the metric (in cross-replica context) adds them up.
    Pixels with a label outside [0, num_classes) other than `ignore_label`
    (or a prediction outside it) are counted in `invalid_count`, and make
    `result()` NaN so that a wrong dataset or class count cannot pass
    unnoticed. On JAX without x64 the variables are int32 (2^31 pixels per
    cell).

    Args:
        num_classes: int. Number of classes. Defaults to 21.
        ignore_label: int. Label of pixels left out. Defaults to 255.
        name: str. Defaults to "mean_iou".
        dtype: dtype of `result()`. Defaults to `keras.backend.floatx()`.

    Example:

    >>> metric = ConfusionMatrix(num_classes=21)
    >>> metric.update_state(labels, logits)  # or integer predictions
    >>> metric.result()  # mIoU
    >>> pixel_accuracy(metric.matrix())
    """

    def __init__(
        self,
        num_classes=NUM_CLASSES,
        ignore_label=IGNORE_LABEL,
        name="mean_iou",
        dtype=None,
    ):
        checks.positive_int("num_classes", num_classes)
        super().__init__(name=name, dtype=dtype)
        self.num_classes = num_classes
        self.ignore_label = ignore_label
        self.total_confusion_matrix = self.add_variable(
            shape=(num_classes, num_classes),
            initializer="zeros",
            dtype="int64",
            aggregation="sum",
            name="total_confusion_matrix",
        )
        self.invalid_count = self.add_variable(
            shape=(), initializer="zeros", dtype="int64", aggregation="sum", name="invalid_count"
        )

    def update_state(self, y_true, y_pred, sample_weight=None):
        """Adds a batch.

        Args:
            y_true: int class ids [N, H, W] or [N, H, W, 1].
            y_pred: float scores [N, H, W, num_classes] (logits or
                probabilities, reduced with argmax) or int class ids.
            sample_weight: unsupported; must be None.
        """
        if sample_weight is not None:
            raise checks.invalid(
                "sample_weight",
                "None: ConfusionMatrix weighs no pixel; mark pixels to leave out with ignore_label",
                sample_weight,
            )
        y_pred = ops.convert_to_tensor(y_pred)
        if keras.backend.is_float_dtype(y_pred.dtype):
            y_pred = ops.argmax(y_pred, axis=-1)
        matrix, invalid = _confusion_counts(y_true, y_pred, self.num_classes, self.ignore_label)
        dtype = self.total_confusion_matrix.dtype
        self.total_confusion_matrix.assign_add(ops.cast(matrix, dtype))
        self.invalid_count.assign_add(ops.cast(invalid, self.invalid_count.dtype))

    def matrix(self):
        """The accumulated int64 confusion matrix [C, C] (a tensor)."""
        return ops.convert_to_tensor(self.total_confusion_matrix)

    def result(self):
        cm = ops.cast(self.total_confusion_matrix, "float32")
        true_positives = ops.diagonal(cm)
        denominator = ops.sum(cm, axis=0) + ops.sum(cm, axis=1) - true_positives
        present = ops.cast(denominator > 0, "float32")
        iou = ops.divide_no_nan(true_positives, denominator)
        value = ops.divide_no_nan(ops.sum(iou * present), ops.sum(present))
        value = ops.where(self.invalid_count > 0, float("nan"), value)
        return ops.cast(value, self.dtype)

    def get_config(self):
        config = super().get_config()
        config.update({"num_classes": self.num_classes, "ignore_label": self.ignore_label})
        return config
