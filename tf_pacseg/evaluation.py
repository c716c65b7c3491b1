"""Evaluation of a segmentation model on PASCAL VOC-style data: confusion matrix and mIoU.

The protocol is the original's evaluation during training, applied the same
way to TFRecords and to image/label folders:

1. Each image is padded bottom/right to at least `crop_size` (513x513) with
   the mean pixel `MEAN_RGB`, its label with `IGNORE_LABEL`; nothing is
   scaled or cropped. Images larger than the crop keep their size.
2. The model runs on the padded image (so the padding is part of what the
   image-pooling branch sees, as in the original) and predicts the argmax of
   its logits.
3. The confusion matrix counts every pixel whose label is not 255, which
   leaves the padding out; mIoU and pixel accuracy follow (`tf_pacseg.metrics`).

Images are taken `batch_size` at a time, in list/record order, and a batch
only holds images of one padded size (split otherwise; with VOC's images of
at most 500x500 every image is 513x513), so an image's prediction does not
depend on its batch mates. Both sources decode JPEGs with TensorFlow's decoder
and batch the same way: the same data gives the same confusion matrix.

Optionally (DeepLab's multi-scale evaluation), the padded image is also
resized by each of `eval_scales` (to `(size - 1) * scale + 1`, bilinear with
align_corners, so corner pixels stay aligned) and/or flipped left-right; each
run's logits are flipped back, resized back to the padded size, and turned
into probabilities; the prediction is the argmax of their mean.

Example:

```python
model = saving.load_model("model")
result = evaluate(model, data_dir="dataset")
print(format_result(result))
```
"""

import collections
import concurrent.futures
import itertools
import json
import math
import os
import time
import weakref

import keras
import numpy as np
import tensorflow as tf

from tf_pacseg import checks, constants, input_pipeline, metrics, records, voc
from tf_pacseg.files import atomic_write
from tf_pacseg.resize import resize_bilinear

DEFAULT_CROP_SIZE = (513, 513)
DEFAULT_BATCH_SIZE = 4
# Image file extensions tried, in order, for `<image_data_dir>/<id>`; the
# original only read `<id>.jpg`.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG")
LABEL_EXTENSION = ".png"
# Threads decoding images and labels ahead of the model.
_NUM_LOADERS = 4


def class_names(num_classes):
    """VOC's class names for 21 classes, else `class_0`, `class_1`, ..."""
    if num_classes == len(constants.VOC_CLASS_NAMES):
        return constants.VOC_CLASS_NAMES
    return tuple(f"class_{i}" for i in range(num_classes))


def threaded_map(function, items, num_threads=_NUM_LOADERS, window=None):
    """`map(function, items)` computed ahead in threads, in order, with bounded memory.

    Args:
        function: callable of one item.
        items: iterable.
        num_threads: int. Worker threads; 0 maps in this thread. Defaults to 4.
        window: int. Results computed ahead at most. Defaults to 4 x num_threads.

    Yields:
        `function(item)` for each item, in order. An exception raised by
        `function` is raised here, at its item.
    """
    if num_threads < 1:
        yield from map(function, items)
        return
    window = window or 4 * num_threads
    items = iter(items)
    with concurrent.futures.ThreadPoolExecutor(num_threads) as executor:
        pending = collections.deque(
            executor.submit(function, item) for item in itertools.islice(items, window)
        )
        try:
            while pending:
                result = pending.popleft().result()
                pending.extend(executor.submit(function, i) for i in itertools.islice(items, 1))
                yield result
        finally:
            for future in pending:
                future.cancel()


def _model_num_classes(model):
    num_classes = getattr(model, "num_classes", None)
    return int(num_classes if num_classes is not None else model.output_shape[-1])


# tf.functions per model, kept while the model lives: evaluating the same
# model again (e.g. after each training epoch) does not retrace.
_PREDICT_FN_CACHE = weakref.WeakKeyDictionary()


def scaled_size(size, scale):
    """`(size - 1) * scale + 1`, truncated: DeepLab's align-corners scaling of a size.

    Args:
        size: int32 tensor (or int) of sizes.
        scale: float.
    """
    size = tf.cast(size, tf.float32)
    return tf.cast((size - 1.0) * scale + 1.0, tf.int32)


def logits_fn(model):
    """The model's inference forward pass as a `tf.function`, traced once for all shapes.

    Cached per model: functions that call it (one call per scale and flip)
    reuse its graph instead of tracing the network again.

    Args:
        model: a Keras segmentation model: float RGB 0..255 [N, H, W, 3] in,
            logits [N, H, W, num_classes] out.

    Returns:
        A function of float32 images [N, H, W, 3] returning float32 logits.
    """
    cached = _PREDICT_FN_CACHE.setdefault(model, {})
    if "logits" not in cached:
        model_ref = weakref.ref(model)  # The cache must not keep the model alive.

        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
        def forward(images):
            return tf.cast(model_ref()(images, training=False), tf.float32)

        cached["logits"] = forward
    return cached["logits"]


@tf.function(
    input_signature=[
        tf.TensorSpec([None, None, None, None], tf.float32),
        tf.TensorSpec([2], tf.int32),
    ]
)
def _resize(images, size):
    return resize_bilinear(images, (size[0], size[1]))


@tf.function(reduce_retracing=True)
def _confusion_of_scores(scores, labels, num_classes):
    predictions = tf.argmax(scores, axis=-1, output_type=tf.int32)  # (batch, height, width)
    return metrics.confusion_matrix(labels, predictions, num_classes, constants.IGNORE_LABEL)


def make_confusion_fn(model, num_classes, eval_scales=(1.0,), add_flipped_images=False):
    """A function (images, labels) -> the batch's int32 confusion matrix.

    The network runs through `logits_fn` (one traced graph, whatever the
    scales and flips); the multi-scale bookkeeping around it is a handful
    of small ops.

    Args:
        model: a Keras segmentation model: float RGB 0..255 [N, H, W, 3] in,
            logits [N, H, W, num_classes] out.
        num_classes: int. Size of the confusion matrix.
        eval_scales: sequence of floats. Scales of the multi-scale evaluation;
            `(1.0,)` is plain single-scale. Defaults to `(1.0,)`.
        add_flipped_images: bool. Also average over left-right flips.
            Defaults to `False`.

    Returns:
        A function of float32 images [N, H, W, 3] (padded, 0..255) and int32
        labels [N, H, W].
    """
    scales = tuple(float(s) for s in eval_scales)
    forward = logits_fn(model)
    flips = (False, True) if add_flipped_images else (False,)

    def scores(images):
        if scales == (1.0,) and not add_flipped_images:
            return forward(images)  # Logits: their argmax is the prediction.
        size = tf.shape(images)[1:3]
        total = 0.0
        for scale in scales:
            scaled = images if scale == 1.0 else _resize(images, scaled_size(size, scale))
            for flip in flips:
                logits = forward(tf.reverse(scaled, [2]) if flip else scaled)
                if flip:
                    logits = tf.reverse(logits, [2])
                if scale != 1.0:
                    logits = _resize(logits, size)
                total += tf.nn.softmax(logits, axis=-1)
        return total  # Sum of probabilities, (batch, height, width, num_classes).

    def confusion(images, labels):
        images = tf.convert_to_tensor(images, tf.float32)
        labels = tf.convert_to_tensor(labels, tf.int32)
        return _confusion_of_scores(scores(images), labels, num_classes)

    return confusion


def pad_example(image, label, crop_size):
    """Pads one example bottom/right to at least `crop_size`, as `input_pipeline` does.

    Args:
        image: uint8 [h, w, 3].
        label: uint8 [h, w].
        crop_size: (height, width).

    Returns:
        (image, label): float32 [H, W, 3] with `MEAN_RGB` padding and int32
        [H, W] with `IGNORE_LABEL` padding, H = max(h, height), W = max(w, width).
    """
    height, width = label.shape
    padded_height, padded_width = max(height, crop_size[0]), max(width, crop_size[1])
    padded_image = np.empty((padded_height, padded_width, 3), np.float32)
    padded_image[...] = np.asarray(constants.MEAN_RGB, np.float32)
    padded_image[:height, :width] = image
    padded_label = np.full((padded_height, padded_width), constants.IGNORE_LABEL, np.int32)
    padded_label[:height, :width] = label
    return padded_image, padded_label


def _group_by_size(padded_sizes):
    """Indices grouped by padded size, groups in order of first appearance."""
    groups = {}
    for index, size in enumerate(padded_sizes):
        groups.setdefault(tuple(size), []).append(index)
    return list(groups.values())


def _check_label_values(label, num_classes, where):
    if int(label.max(initial=0)) < num_classes:
        return
    values = np.unique(label)
    bad = [int(v) for v in values if v >= num_classes and v != constants.IGNORE_LABEL]
    bad += [int(v) for v in values if v < 0]
    if bad:
        listed = ", ".join(map(str, sorted(bad)[:10])) + (" ..." if len(bad) > 10 else "")
        raise ValueError(
            f"{where} has label values [{listed}] outside [0, {num_classes}) that are not "
            f"the ignore label {constants.IGNORE_LABEL}. Check `num_classes` and that the "
            "labels hold class indices."
        )


# ----------------------------------------------------------------------------
# Sources: each yields (images float32 [N, H, W, 3], labels int32 [N, H, W]),
# N <= batch_size, all N images of one padded size.
# ----------------------------------------------------------------------------


def _record_location(index, files, counts):
    """'example 3 of val-00001-of-00002.tfrecord' for the index-th example of all files."""
    for name, count in zip(files, counts, strict=True):
        if index < count:
            return f"example {index} of record file {name}"
        index -= count
    return f"example {index} past the end of the record files"


def _record_batches(data_dir, batch_size, crop_size, num_classes):
    """(number of examples, batch generator) over the val records of `data_dir`."""
    files = records.find_record_files(data_dir, "val")
    try:
        counts = [records.count_examples(f) for f in files]
    except tf.errors.OpError as error:
        raise ValueError(f"Cannot read the record files {files}: {error.message}") from error

    def batches():
        dataset = input_pipeline.eval_dataset(
            files, batch_size, crop_size=tuple(crop_size), include_sizes=True
        )
        iterator = iter(dataset)
        done = 0
        while True:
            try:
                images, labels, sizes = next(iterator)
            except StopIteration:
                return
            except tf.errors.OpError as error:
                # The failing example is one of the batch being read.
                last = max(min(done + batch_size, sum(counts)) - 1, done)
                where = _record_location(done, files, counts)
                if last > done:
                    where = f"one of examples {done}..{last} (the first is {where})"
                raise ValueError(f"Cannot read {where}: {error.message}") from error
            images, labels, sizes = images.numpy(), labels.numpy()[..., 0], sizes.numpy()
            for i in range(len(sizes)):
                _check_label_values(
                    labels[i, : sizes[i, 0], : sizes[i, 1]],
                    num_classes,
                    _record_location(done + i, files, counts),
                )
            done += len(sizes)
            padded = np.maximum(sizes, np.asarray(crop_size))
            for group in _group_by_size(padded):
                height, width = padded[group[0]]
                # eval_dataset pads a batch to its largest image: cropping an
                # image back to its own padded size leaves exactly the
                # per-image padding.
                yield images[group, :height, :width], labels[group, :height, :width]

    return sum(counts), batches()


def _find_image(image_dir, sample_id):
    for extension in IMAGE_EXTENSIONS:
        path = os.path.join(image_dir, sample_id + extension)
        if os.path.isfile(path):
            return path
    return None


def load_example(image_path, label_path, num_classes):
    """Decodes and checks one image and its label.

    The image is decoded by TensorFlow (as the TFRecord pipeline does, so
    that both give the same pixels); the label is a one-channel PNG of class
    indices, a VOC palette PNG, or an RGB PNG of VOC palette colours.

    Args:
        image_path: str. JPEG (or PNG) image.
        label_path: str. PNG label.
        num_classes: int. Valid labels are [0, num_classes) and 255.

    Returns:
        (image, label): uint8 [H, W, 3] RGB and uint8 [H, W].

    Raises:
        ValueError: an undecodable file, differing sizes, or out-of-range
            labels, naming the file.
    """
    with open(image_path, "rb") as f:
        data = f.read()
    try:
        image = tf.io.decode_image(data, channels=3, expand_animations=False).numpy()
    except tf.errors.OpError as error:
        raise ValueError(
            f"Image file {image_path} is not a decodable image: {error.message}"
        ) from error
    with open(label_path, "rb") as f:
        label = voc.decode_label_png(f.read(), label_path)
    if label.shape != image.shape[:2]:
        raise ValueError(
            f"Label file {label_path} is {label.shape[0]}x{label.shape[1]} (height x width) "
            f"but image file {image_path} is {image.shape[0]}x{image.shape[1]}."
        )
    _check_label_values(label, num_classes, f"Label file {label_path}")
    return image, label


def _folder_batches(
    image_data_dir, label_data_dir, evaluation_data_list, batch_size, crop_size, num_classes
):
    """(number of examples, batch generator) over the listed images and labels."""
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
    pairs, missing = [], []
    for sample_id in ids:
        image_path = _find_image(image_data_dir, sample_id)
        label_path = os.path.join(label_data_dir, sample_id + LABEL_EXTENSION)
        if image_path is None:
            missing.append(os.path.join(image_data_dir, sample_id + IMAGE_EXTENSIONS[0]))
        if not os.path.isfile(label_path):
            missing.append(label_path)
        pairs.append((image_path, label_path))
    if missing:
        listed = "\n  ".join(missing[:10]) + (
            f"\n  ... and {len(missing) - 10} more" if len(missing) > 10 else ""
        )
        raise FileNotFoundError(
            f"{len(missing)} files listed in {evaluation_data_list} do not exist:\n  {listed}"
        )

    def batches():
        examples = threaded_map(lambda pair: load_example(*pair, num_classes), pairs)
        chunk = []
        for index, example in enumerate(examples, 1):
            chunk.append(pad_example(*example, crop_size))
            if len(chunk) == batch_size or index == len(pairs):
                # Grouped as `_record_batches` groups a batch of the dataset.
                for group in _group_by_size([label.shape for _, label in chunk]):
                    yield (
                        np.stack([chunk[i][0] for i in group]),
                        np.stack([chunk[i][1] for i in group]),
                    )
                chunk = []

    return len(pairs), batches()


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
    model_classes = _model_num_classes(model)
    if num_classes is not None and num_classes != model_classes:
        raise ValueError(
            f"Invalid value for argument `num_classes`: the model predicts {model_classes} "
            f"classes. Received: num_classes={num_classes}"
        )
    check_sources(data_dir, image_data_dir, label_data_dir, evaluation_data_list)
    if data_dir is not None:
        num_images, batches = _record_batches(data_dir, batch_size, crop_size, model_classes)
    else:
        num_images, batches = _folder_batches(
            image_data_dir,
            label_data_dir,
            evaluation_data_list,
            batch_size,
            crop_size,
            model_classes,
        )

    confusion = make_confusion_fn(model, model_classes, scales, add_flipped_images)
    total = np.zeros((model_classes, model_classes), np.int64)
    progbar = keras.utils.Progbar(
        num_images, verbose=verbose, unit_name="image", stateful_metrics=["images/s"]
    )
    done, start = 0, time.perf_counter()
    for images, labels in batches:
        total += confusion(images, labels).numpy()
        done += len(images)
        rate = done / max(time.perf_counter() - start, 1e-9)
        progbar.update(done, values=[("images/s", rate)])
    return result_from_confusion_matrix(total, done)
