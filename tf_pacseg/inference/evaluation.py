"""Evaluation of a segmentation model on PASCAL VOC-style data: confusion matrix and mIoU.

The protocol is the original's evaluation during training, applied the same
way to TFRecords and to image/label folders (docs/design.md §5, §7):

1. Each image is padded bottom/right to at least `crop_size` (513x513) with
   the mean pixel `MEAN_RGB`, its label with the ignore label; nothing is
   scaled or cropped. Images larger than the crop keep their size.
2. The model runs on the padded image (so the padding is part of what the
   image-pooling branch sees, as in the original) and predicts the argmax of
   its scores (`tf_pacseg.inference.forward`).
3. The confusion matrix counts every pixel whose label is not the ignore
   label (255 unless `ignore_label` says otherwise), which leaves the padding
   out; mIoU and pixel accuracy follow (`tf_pacseg.inference.metrics`).

Images are taken `batch_size` at a time, in list/record order, and a batch
only holds images of one padded size (split otherwise; with VOC's images of
at most 500x500 every image is 513x513), so an image's prediction does not
depend on its batch mates. A folder is read by the converter's reader
(`voc.load_sample`) and each sample is encoded as a record, so records and
folders go through the same parsing, checks, padding and batching
(`input_pipeline.eval_batches`): the same data gives the same confusion
matrix by construction.

Optionally (DeepLab's multi-scale evaluation), the scores are averaged over
resized and/or flipped copies of each image (`forward.scores`).

Example:

```python
model = saving.load_model("model")
result = evaluate(model, data_dir="dataset")
print(format_result(result))
```
"""

import concurrent.futures
import json
import math
import os
import time

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from tf_pacseg import checks, constants
from tf_pacseg.data import input_pipeline, records, voc
from tf_pacseg.files import atomic_write
from tf_pacseg.inference import forward, metrics

DEFAULT_CROP_SIZE = (513, 513)
DEFAULT_BATCH_SIZE = 4
# Threads decoding folder images and labels ahead of the model.
_NUM_LOADERS = 4


def class_names(num_classes):
    """VOC's class names for 21 classes, else `class_0`, `class_1`, ..."""
    if num_classes == len(constants.VOC_CLASS_NAMES):
        return constants.VOC_CLASS_NAMES
    return tuple(f"class_{i}" for i in range(num_classes))


def _model_num_classes(model):
    num_classes = getattr(model, "num_classes", None)
    return int(num_classes if num_classes is not None else model.output_shape[-1])


def _group_by_size(padded_sizes):
    """Indices grouped by padded size, groups in order of first appearance."""
    groups = {}
    for index, size in enumerate(padded_sizes):
        groups.setdefault(tuple(size), []).append(index)
    return list(groups.values())


# ----------------------------------------------------------------------------
# Sources: each gives (number of examples, dataset of serialized examples,
# where(index) naming an example for messages, errors): `errors` collects an
# error that ended the dataset early (an exception cannot cross tf.data intact).
# ----------------------------------------------------------------------------


def _record_examples(data_dir):
    files = records.find_record_files(data_dir, "val")
    try:
        counts = [records.count_examples(f) for f in files]
    except tf.errors.OpError as error:
        raise ValueError(f"Cannot read the record files {files}: {error.message}") from error

    def where(index):
        """'example 3 of record file val-00001-of-00002.tfrecord'."""
        for name, count in zip(files, counts, strict=True):
            if index < count:
                return f"example {index} of record file {name}"
            index -= count
        return f"example {index} past the end of the record files"

    return sum(counts), tf.data.TFRecordDataset(files), where, []


def _folder_examples(
    image_data_dir, label_data_dir, evaluation_data_list, num_classes, ignore_label
):
    for name, path in (("image_data_dir", image_data_dir), ("label_data_dir", label_data_dir)):
        if not os.path.isdir(path):
            raise FileNotFoundError(f"The {name} folder {path!r} does not exist.")
    if not os.path.isfile(evaluation_data_list):
        raise FileNotFoundError(
            f"The evaluation list file {evaluation_data_list!r} does not exist."
        )
    ids = voc.read_id_list(evaluation_data_list)
    if not ids:
        raise ValueError(f"The evaluation list file {evaluation_data_list!r} holds no image ids.")
    paths = [voc.sample_paths(image_data_dir, label_data_dir, i) for i in ids]
    missing = [path for pair in paths for path in pair if not os.path.isfile(path)]
    if missing:
        listed = "\n  ".join(missing[:10]) + (
            f"\n  ... and {len(missing) - 10} more" if len(missing) > 10 else ""
        )
        raise FileNotFoundError(
            f"{len(missing)} files listed in {evaluation_data_list} do not exist:\n  {listed}"
        )
    errors = []

    def generate():
        tasks = [(i, *pair, num_classes, ignore_label) for i, pair in zip(ids, paths, strict=True)]
        with concurrent.futures.ThreadPoolExecutor(_NUM_LOADERS) as executor:
            for sample in voc.load_samples(tasks, executor):
                if isinstance(sample, Exception):
                    errors.append(sample)
                    return
                yield records.encode_example(
                    sample.image_jpeg, sample.label_png, sample.height, sample.width
                )

    def where(index):
        return f"label file {paths[index][1]}" if index < len(paths) else "past the list's end"

    examples = tf.data.Dataset.from_generator(
        generate, output_signature=tf.TensorSpec((), tf.string)
    )
    return len(ids), examples, where, errors


def _batches(source, batch_size, crop_size, num_classes, ignore_label):
    """Batches (images float32 [N, H, W, 3], labels int32 [N, H, W]) of one padded size."""
    num_examples, examples, where, errors = source
    dataset = input_pipeline.eval_batches(
        examples, batch_size, crop_size=crop_size, ignore_label=ignore_label, include_sizes=True
    )
    iterator = iter(dataset)
    done = 0
    while True:
        try:
            images, labels, sizes = next(iterator)
        except StopIteration:
            break
        except tf.errors.OpError as error:
            # The failing example is one of the batch being read.
            last = max(min(done + batch_size, num_examples) - 1, done)
            location = where(done)
            if last > done:
                location = f"one of examples {done}..{last} (the first is {location})"
            raise ValueError(f"Cannot read {location}: {error.message}") from error
        images, labels, sizes = images.numpy(), labels.numpy()[..., 0], sizes.numpy()
        for i, (height, width) in enumerate(sizes):
            voc.check_label_values(
                labels[i, :height, :width], num_classes, where(done + i), ignore_label
            )
        done += len(sizes)
        padded = np.maximum(sizes, np.asarray(crop_size))
        for group in _group_by_size(padded):
            height, width = padded[group[0]]
            # eval_batches pads a batch to its largest image: cropping an image
            # back to its own padded size leaves exactly the per-image padding.
            yield images[group, :height, :width], labels[group, :height, :width]
    if errors:
        raise errors[0]


# ----------------------------------------------------------------------------
# Results.
# ----------------------------------------------------------------------------


def result_from_confusion_matrix(confusion_matrix, num_images):
    """The result dict of a confusion matrix (rows = ground truth, columns = prediction).

    Returns:
        dict with `miou`, `pixel_accuracy`, `per_class_iou` ({class name: IoU,
        or None for a class neither labelled nor predicted}),
        `confusion_matrix` (list of lists of ints) and `num_images`.
    """
    cm = np.asarray(confusion_matrix, np.int64)
    names = class_names(cm.shape[0])
    return {
        "miou": metrics.mean_iou(cm),
        "pixel_accuracy": metrics.pixel_accuracy(cm),
        "per_class_iou": {
            name: (None if math.isnan(iou) else float(iou))
            for name, iou in zip(names, metrics.per_class_iou(cm), strict=True)
        },
        "confusion_matrix": cm.tolist(),
        "num_images": int(num_images),
    }


def format_result(result):
    """A printable report: IoU per class, mIoU, pixel accuracy."""
    lines = ["Intersection over union per class:"]
    width = max(len(name) for name in result["per_class_iou"])
    for index, (name, iou) in enumerate(result["per_class_iou"].items()):
        value = "   n/a (absent)" if iou is None else f"{iou:.4f} ({100 * iou:5.2f}%)"
        lines.append(f"  {index:3d} {name:<{width}}  {value}")
    lines.append(f"mean IoU:       {result['miou']:.4f} ({100 * result['miou']:.2f}%)")
    accuracy = result["pixel_accuracy"]
    lines.append(f"pixel accuracy: {accuracy:.4f} ({100 * accuracy:.2f}%)")
    lines.append(f"images:         {result['num_images']}")
    return "\n".join(lines)


def write_result_json(result, path):
    """Writes the result dict as JSON, atomically."""
    with atomic_write(path, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")


def check_sources(data_dir, image_data_dir, label_data_dir, evaluation_data_list):
    """Raises unless exactly one data source is given: `data_dir`, or the three folder args."""
    folder_args = (image_data_dir, label_data_dir, evaluation_data_list)
    if data_dir is not None and any(a is not None for a in folder_args):
        raise ValueError(
            "Give either `data_dir` (TFRecords) or `image_data_dir`, `label_data_dir` and "
            f"`evaluation_data_list` (folders), not both. Received: data_dir={data_dir!r}, "
            f"image_data_dir={image_data_dir!r}"
        )
    if data_dir is None and not all(a is not None for a in folder_args):
        raise ValueError(
            "No evaluation data: give `data_dir` (TFRecords), or all of `image_data_dir`, "
            "`label_data_dir` and `evaluation_data_list`. Received: "
            f"data_dir={data_dir!r}, image_data_dir={image_data_dir!r}, "
            f"label_data_dir={label_data_dir!r}, evaluation_data_list={evaluation_data_list!r}"
        )


def evaluate(
    model,
    data_dir=None,
    image_data_dir=None,
    label_data_dir=None,
    evaluation_data_list=None,
    batch_size=DEFAULT_BATCH_SIZE,
    crop_size=DEFAULT_CROP_SIZE,
    num_classes=None,
    eval_scales=(1.0,),
    add_flipped_images=False,
    ignore_label=constants.IGNORE_LABEL,
    verbose=1,
):
    """Evaluates `model` on TFRecords or on image/label folders (see the module docstring).

    Give either `data_dir` or all three of `image_data_dir`, `label_data_dir`
    and `evaluation_data_list`.

    Args:
        model: a Keras segmentation model (RGB 0..255 in, logits out), e.g.
            from `saving.load_model`.
        data_dir: str. Folder of the val records (`val-*-of-*.tfrecord`, or
            the original's `voc_val.record`).
        image_data_dir: str. Folder of `<id>.jpg` images.
        label_data_dir: str. Folder of `<id>.png` labels: one-channel class
            indices (SegmentationClassAug) or VOC palette PNGs.
        evaluation_data_list: str. List file of image ids, one per line.
        batch_size: int. Images per forward pass. Defaults to 4.
        crop_size: (height, width). Images are padded to at least this size.
            Defaults to (513, 513).
        num_classes: int or None. Must match the model's; `None` takes it.
            Defaults to `None`.
        eval_scales: sequence of floats. Multi-scale evaluation, e.g.
            `(0.5, 0.75, 1.0, 1.25, 1.5, 1.75)`. Defaults to `(1.0,)`.
        add_flipped_images: bool. Also average left-right flipped inputs.
            Defaults to `False`.
        ignore_label: int in [0, 255]. Label of the pixels left out of the
            metrics, and of the label padding. Defaults to 255.
        verbose: int. 1 shows a progress bar, 0 is silent. Defaults to 1.

    Returns:
        The dict of `result_from_confusion_matrix`.

    Raises:
        FileNotFoundError: missing folders, list, record or listed files.
        ValueError: bad arguments, or data that cannot be decoded, differ in
            size from their label or have out-of-range labels (naming the file).
    """
    checks.positive_int("batch_size", batch_size)
    crop_size = checks.size_2d("crop_size", crop_size)
    scales = checks.positive_numbers("eval_scales", eval_scales)
    checks.int_in_range("ignore_label", ignore_label, 0, 255)
    model_classes = _model_num_classes(model)
    if num_classes is not None and num_classes != model_classes:
        raise ValueError(
            f"Invalid value for argument `num_classes`: the model predicts {model_classes} "
            f"classes. Received: num_classes={num_classes}"
        )
    check_sources(data_dir, image_data_dir, label_data_dir, evaluation_data_list)
    if data_dir is not None:
        source = _record_examples(data_dir)
    else:
        source = _folder_examples(
            image_data_dir, label_data_dir, evaluation_data_list, model_classes, ignore_label
        )

    total = np.zeros((model_classes, model_classes), np.int64)
    progbar = keras.utils.Progbar(
        source[0], verbose=verbose, unit_name="image", stateful_metrics=["images/s"]
    )
    done, start = 0, time.perf_counter()
    for images, labels in _batches(source, batch_size, crop_size, model_classes, ignore_label):
        predictions = forward.predict_labels(model, images, scales, add_flipped_images)
        confusion = metrics.confusion_matrix(labels, predictions, model_classes, ignore_label)
        total += ops.convert_to_numpy(confusion)
        done += len(images)
        rate = done / max(time.perf_counter() - start, 1e-9)
        progbar.update(done, values=[("images/s", rate)])
    return result_from_confusion_matrix(total, done)
