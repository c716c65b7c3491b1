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
(`pipelines.eval_batches`): the same data gives the same confusion
matrix by construction.

Optionally (DeepLab's multi-scale evaluation), the scores are averaged over
resized and/or flipped copies of each image (`forward.scores`). Padded images
above `tiling`'s pixel budget (4 MP by default: never VOC's) run as
overlapping tiles (`tf_pacseg.inference.tiling`). The model may also be an
ONNX or OpenVINO export (`runtimes.ExportedModel`), which the forward pass runs
in place of the network, so an export's mIoU is measured the same way.

Example:

```python
model = saving.load_model("model")
result = evaluate(model, data_dir="dataset")
print(report.format_result(result))
```
"""

import concurrent.futures
import os
import time
import typing

import keras
import numpy as np
import tensorflow as tf
from absl import logging
from keras import ops

from tf_pacseg import checks, constants
from tf_pacseg.data import bad_records, label_png, malloc, pipelines, records, sharding, voc
from tf_pacseg.inference import forward, metrics, report
from tf_pacseg.inference.tiling import Tiling, tiled_labels

# Threads decoding folder images and labels ahead of the model.
_NUM_LOADERS = 4


def _model_num_classes(model):
    num_classes = getattr(model, "num_classes", None)
    return int(num_classes if num_classes is not None else model.output_shape[-1])


def _group_by_size(padded_sizes):
    """Indices grouped by padded size, groups in order of first appearance."""
    groups = {}
    for index, size in enumerate(padded_sizes):
        groups.setdefault(tuple(size), []).append(index)
    return list(groups.values())


class _Source(typing.NamedTuple):
    """Examples to evaluate, and how to name them in messages.

    Attributes:
        num_examples: int.
        examples: `tf.data.Dataset` of serialized examples.
        where: callable. `where(index)` names an example for messages.
        errors: list. Collects an error that ended the dataset early (an
            exception cannot cross tf.data intact).
        located: callable or None. `located(error)` of a reading error: the
            `bad_records.BadRecordError` naming the record, or None.
        num_skipped: int or None. Records left out (--skip_bad_records).
    """

    num_examples: int
    examples: tf.data.Dataset
    where: typing.Callable
    errors: list
    located: typing.Callable | None = None
    num_skipped: int | None = None


def _record_examples(data_dir, skip_bad_records):
    files = records.find_record_files(data_dir, "val")

    def located(error):
        if not isinstance(error, bad_records.READ_ERRORS):
            return None
        advice = "--skip_bad_records evaluates without the records that cannot be read."
        return bad_records.located_error(files, error, advice)

    skip_list = bad_records.scan(files) if skip_bad_records else None
    if skip_list is None:
        try:
            counts = [records.count_examples(f) for f in files]
        except tf.errors.OpError as error:
            found = located(error)
            if found is None:
                found = ValueError(f"Cannot read the record files {files}: {error.message}")
            raise found from error
        examples = tf.data.TFRecordDataset(files)
    else:
        counts = [skip_list.readable(f) for f in files]
        examples = sharding.read_records(files, None, 1, deterministic=True, skip_list=skip_list)

    def where(index):
        """'example 3 of record file val-00001-of-00002.tfrecord'."""
        for name, count in zip(files, counts, strict=True):
            if index < count:
                position = index if skip_list is None else skip_list.position(name, index)
                return f"example {position} of record file {name}"
            index -= count
        return f"example {index} past the end of the record files"

    num_skipped = None if skip_list is None else skip_list.num_skipped
    return _Source(sum(counts), examples, where, [], located, num_skipped)


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
    return _Source(len(ids), examples, where, errors)


def _batches(source, batch_size, crop_size, num_classes, ignore_label):
    """Batches (images float32 [N, H, W, 3], labels int32 [N, H, W], example indices [N]).

    A batch holds images of one padded size, so images can come out of order.
    """
    num_examples, examples, where, errors, located, _ = source
    dataset = pipelines.eval_batches(
        examples, batch_size, crop_size=crop_size, ignore_label=ignore_label, include_sizes=True
    )
    iterator = malloc.iterate(dataset)  # Folders are read through a generator op.
    done = 0
    while True:
        try:
            images, labels, sizes = next(iterator)
        except StopIteration:
            break
        except tf.errors.OpError as error:
            found = located(error) if located else None
            if found is not None:
                raise found from error
            # The failing example is one of the batch being read.
            last = max(min(done + batch_size, num_examples) - 1, done)
            location = where(done)
            if last > done:
                location = f"one of examples {done}..{last} (the first is {location})"
            raise ValueError(f"Cannot read {location}: {error.message}") from error
        images, labels, sizes = images.numpy(), labels.numpy()[..., 0], sizes.numpy()
        for i, (height, width) in enumerate(sizes):
            label_png.check_label_values(
                labels[i, :height, :width], num_classes, where(done + i), ignore_label
            )
        first, done = done, done + len(sizes)
        padded = np.maximum(sizes, np.asarray(crop_size))
        for group in _group_by_size(padded):
            height, width = padded[group[0]]
            # eval_batches pads a batch to its largest image: cropping an image
            # back to its own padded size leaves exactly the per-image padding.
            indices = [first + i for i in group]
            yield images[group, :height, :width], labels[group, :height, :width], indices
    if errors:
        raise errors[0]


def _image_confusions(labels, predictions, num_classes, ignore_label):
    """Each image's confusion matrix (int32 NumPy [C, C]) of a batch."""
    predictions = ops.convert_to_numpy(predictions)
    return [
        ops.convert_to_numpy(metrics.confusion_matrix(y, p, num_classes, ignore_label))
        for y, p in zip(labels, predictions, strict=True)
    ]


def _predict_labels(model, images, indices, eval_scales, add_flipped_images, tiling):
    """Class ids [N, H, W] of a batch of one padded size: whole, or each image as tiles."""
    height, width = images.shape[1:3]
    if not tiling.slides(height, width):
        return forward.predict_labels(model, images, eval_scales, add_flipped_images)
    for index in indices:
        logging.info("Tiles for image %d: %s", index, tiling.describe(height, width))
    return np.stack(
        [tiled_labels(model, image, tiling, eval_scales, add_flipped_images) for image in images]
    ).astype(np.int32)


def check_sources(data_dir, image_data_dir, label_data_dir, evaluation_data_list):
    """Raises unless exactly one data source is given: `data_dir`, or the three folder args."""
    folder_args = (image_data_dir, label_data_dir, evaluation_data_list)
    received = (
        f"data_dir={data_dir!r}, image_data_dir={image_data_dir!r}, "
        f"label_data_dir={label_data_dir!r}, evaluation_data_list={evaluation_data_list!r}"
    )
    if data_dir is not None and any(a is not None for a in folder_args):
        raise checks.invalid(
            "data_dir",
            "either `data_dir` (TFRecords) or `image_data_dir`, `label_data_dir` and "
            "`evaluation_data_list` (folders), not both",
            received=received,
        )
    if data_dir is None and not all(a is not None for a in folder_args):
        raise checks.invalid(
            "data_dir",
            "evaluation data: `data_dir` (TFRecords), or all of `image_data_dir`, "
            "`label_data_dir` and `evaluation_data_list` (folders)",
            received=received,
        )


def evaluate(
    model,
    data_dir=None,
    image_data_dir=None,
    label_data_dir=None,
    evaluation_data_list=None,
    batch_size=constants.DEFAULT_EVAL_BATCH_SIZE,
    crop_size=constants.CROP_SIZE,
    num_classes=None,
    eval_scales=constants.DEFAULT_EVAL_SCALES,
    add_flipped_images=False,
    ignore_label=constants.IGNORE_LABEL,
    class_names=None,
    on_image=None,
    tiling=None,
    skip_bad_records=False,
    verbose=1,
):
    """Evaluates `model` on TFRecords or on image/label folders (see the module docstring).

    Give either `data_dir` or all three of `image_data_dir`, `label_data_dir`
    and `evaluation_data_list`.

    Args:
        model: a Keras segmentation model (RGB 0..255 in, logits out), e.g.
            from `saving.load_model`, or an export run by its runtime
            (`runtimes.load_exported_model`; a fixed-size export takes only
            images padded, or tiles, of its size, at scale 1).
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
        class_names: sequence of str, one per class, or None for
            `class_names.default_class_names`. Defaults to `None`.
        on_image: callable or None. Called as `on_image(index, cm)` with
            each image's confusion matrix (int32 NumPy [C, C]) and its index
            in list/record order; images of a batch that differ in padded
            size may come out of order. Defaults to `None`.
        tiling: `tiling.Tiling` or None. Whole padded images, or overlapping
            tiles of them (by default above 4 MP, so never VOC's images).
            Defaults to `None`: `Tiling()`.
        skip_bad_records: bool. With `data_dir`: leave out the records that
            cannot be read (`bad_records`), each logged; without it, such a
            record stops the evaluation with a `BadRecordError` naming it.
            Defaults to `False`.
        verbose: int. 1 shows a progress bar, 0 is silent. Defaults to 1.

    Returns:
        The dict of `report.result_from_confusion_matrix`; with
        `skip_bad_records`, also `skipped_records` (int).

    Raises:
        FileNotFoundError: missing folders, list, record or listed files.
        ValueError: bad arguments, or data that cannot be decoded, differ in
            size from their label or have out-of-range labels (naming the file;
            `bad_records.BadRecordError` for a record that cannot be read).
    """
    checks.positive_int("batch_size", batch_size)
    crop_size = checks.size_2d("crop_size", crop_size)
    scales = checks.positive_numbers("eval_scales", eval_scales)
    checks.int_in_range("ignore_label", ignore_label, 0, 255)
    tiling = Tiling() if tiling is None else tiling
    model_classes = _model_num_classes(model)
    if num_classes is not None and num_classes != model_classes:
        raise checks.invalid(
            "num_classes",
            f"None or {model_classes} (the model predicts {model_classes} classes)",
            num_classes,
        )
    class_names = report.class_names_for(class_names, model_classes)
    check_sources(data_dir, image_data_dir, label_data_dir, evaluation_data_list)
    if data_dir is not None:
        source = _record_examples(data_dir, skip_bad_records)
    elif skip_bad_records:
        raise checks.invalid("skip_bad_records", "False with folders (it skips records)", True)
    else:
        source = _folder_examples(
            image_data_dir, label_data_dir, evaluation_data_list, model_classes, ignore_label
        )

    total = np.zeros((model_classes, model_classes), np.int64)
    progbar = keras.utils.Progbar(
        source.num_examples, verbose=verbose, unit_name="image", stateful_metrics=["images/s"]
    )
    done, start = 0, time.perf_counter()
    batches = _batches(source, batch_size, crop_size, model_classes, ignore_label)
    for images, labels, indices in batches:
        predictions = _predict_labels(model, images, indices, scales, add_flipped_images, tiling)
        if on_image is None:
            confusion = metrics.confusion_matrix(labels, predictions, model_classes, ignore_label)
            total += ops.convert_to_numpy(confusion)
        else:  # The images' matrices add up to the batch's.
            confusions = _image_confusions(labels, predictions, model_classes, ignore_label)
            for index, confusion in zip(indices, confusions, strict=True):
                total += confusion
                on_image(index, confusion)
        done += len(images)
        rate = done / max(time.perf_counter() - start, 1e-9)
        progbar.update(done, values=[("images/s", rate)])
    result = report.result_from_confusion_matrix(total, done, class_names)
    if source.num_skipped is not None:
        result["skipped_records"] = source.num_skipped
    return result
