"""TensorBoard summaries of training: scalars, IoU per class, and pictures of a batch.

TensorFlow-only module. Writes into the default `tf.summary` writer; the
training loop opens `model_dir/train` and `model_dir/eval`, so that TensorBoard
overlays training and validation curves of the same name (`mean_iou`,
`pixel_accuracy`, `iou/<class>`).

`tf.summary.scalar`/`image` live in the `tensorboard` package, which
TensorFlow no longer installs; `scalar` and `image` below write the same
records (TensorBoard's scalars and images plugin formats) with
`tf.summary.write`, so training needs no TensorBoard installed.
"""

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import summary_pb2

from tf_pacseg import constants
from tf_pacseg.inference import metrics, report
from tf_pacseg.model import losses

# Images of a batch drawn into each picture summary.
MAX_IMAGES = 2


def _metadata(plugin_name, data_class):
    # Version 0 of the plugins' own data protos serialises to b"".
    return summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name=plugin_name),
        data_class=data_class,
    )


_SCALAR_METADATA = _metadata("scalars", summary_pb2.DATA_CLASS_SCALAR)
_IMAGE_METADATA = _metadata("images", summary_pb2.DATA_CLASS_BLOB_SEQUENCE)


def scalar(name, value, step):
    """`tf.summary.scalar` without the tensorboard package."""
    return tf.summary.write(name, tf.cast(value, tf.float32), step=step, metadata=_SCALAR_METADATA)


def image(name, images, step, max_outputs=MAX_IMAGES):
    """`tf.summary.image` without the tensorboard package.

    Args:
        name: str.
        images: uint8 [N, H, W, C] (C = 1 or 3), or float in [0, 1].
        step: int.
        max_outputs: int. Images written at most. Defaults to 2.
    """
    images = tf.convert_to_tensor(images)
    if images.dtype != tf.uint8:
        images = tf.image.convert_image_dtype(images, tf.uint8, saturate=True)
    images = images[:max_outputs]
    encoded = tf.map_fn(tf.image.encode_png, images, fn_output_signature=tf.string)
    shape = tf.shape(images)
    # TensorBoard's layout: [width, height, png, png, ...] as strings.
    dimensions = tf.stack([tf.as_string(shape[2]), tf.as_string(shape[1])])
    return tf.summary.write(
        name, tf.concat([dimensions, encoded], axis=0), step=step, metadata=_IMAGE_METADATA
    )


def colorize(labels):
    """VOC colours of class ids: int [N, H, W] or [N, H, W, 1] -> uint8 [N, H, W, 3].

    Every value in 0..255 has a colour (255, the ignore label, is VOC's
    cream "void"); others are clipped into that range.
    """
    labels = tf.convert_to_tensor(labels)
    if labels.shape.rank == 4:
        labels = labels[..., 0]
    palette = tf.constant(np.asarray(constants.VOC_PALETTE, np.uint8))  # (256, 3)
    return tf.gather(palette, tf.clip_by_value(tf.cast(labels, tf.int32), 0, 255))


def side_by_side(images, labels, predictions):
    """input | ground truth | prediction, in VOC colours: uint8 [N, H, 3W, 3].

    Args:
        images: float RGB in 0..255 [N, H, W, 3].
        labels: int [N, H, W, 1].
        predictions: int class ids [N, H, W].
    """
    images = tf.cast(tf.clip_by_value(tf.round(tf.cast(images, tf.float32)), 0, 255), tf.uint8)
    return tf.concat([images, colorize(labels), colorize(predictions)], axis=2)


def write_batch_images(step, images, labels, logits, num_classes, ignore_label):
    """Writes the pictures of one batch: result, BAL weight map, label edges.

    Args:
        step: int. The global step.
        images: float32 [N, H, W, 3] in 0..255.
        labels: int [N, H, W, 1].
        logits: float [N, H, W, num_classes].
        num_classes: int.
        ignore_label: int.
    """
    images, labels = images[:MAX_IMAGES], labels[:MAX_IMAGES]
    predictions = tf.argmax(logits[:MAX_IMAGES], axis=-1, output_type=tf.int32)
    image("input_ground_truth_prediction", side_by_side(images, labels, predictions), step)
    weights = losses.boundary_aware_weights(labels, num_classes, ignore_label)
    # The weights lie in [0.5, 4]: divide by the maximum so 1 is white.
    image("boundary_aware_weights", weights / 4.0, step)
    # Up to 3 one-hot channels change at a pixel: divide so 3 is white.
    edges = losses.boundary_edges(labels, num_classes, ignore_label)
    image("boundary_edges", edges / 3.0, step)


def write_scalars(scalars, step):
    """Writes `{name: number}` at `step`."""
    for name, value in scalars.items():
        scalar(name, value, step)


def per_class_iou_scalars(confusion_matrix, class_names=None):
    """`{"iou/<class name>": IoU}` of a confusion matrix, leaving out absent classes.

    Args:
        confusion_matrix: int array-like [C, C], rows = ground truth.
        class_names: sequence of C str, or None for the default names
            (`report.class_names_for`). Defaults to `None`.
    """
    per_class = metrics.per_class_iou(confusion_matrix)
    names = report.class_names_for(class_names, len(per_class))
    return {f"iou/{n}": float(v) for n, v in zip(names, per_class, strict=True) if v == v}


def write_segmentation_metrics(result, step):
    """Writes mIoU, pixel accuracy and IoU per class of an evaluation result.

    Args:
        result: dict with `miou`, `pixel_accuracy` and `per_class_iou`
            ({class name: IoU or None}), as `report.result_from_confusion_matrix`.
        step: int.
    """
    scalar("mean_iou", result["miou"], step)
    scalar("pixel_accuracy", result["pixel_accuracy"], step)
    for name, iou in result["per_class_iou"].items():
        if iou is not None:
            scalar(f"iou/{name}", iou, step)
