"""Converts a PASCAL VOC 2012-style folder into sharded TFRecords.

The layout is that of VOC2012 plus the augmented labels: `<image_dir>/<id>.jpg`,
`<label_dir>/<id>.png` and list files of ids, one split per list. Images are
stored byte for byte; labels are re-encoded as one-channel PNGs of class
indices whatever their source (index PNG, palette PNG or RGB colour PNG), so
every record reads the same way (`records.parse_example`). Folder evaluation
reads folders with the same `load_sample` (docs/design.md §5).

Bad samples (missing or undecodable files, size mismatches, labels outside the
class range) are skipped with a warning, as the original converter did, and
listed in the returned summary; `strict=True` makes the first one an error.

Example:

```python
summary = convert_voc("VOCdevkit/VOC2012", "dataset",
                      "ImageSets/Segmentation/train_aug.txt",
                      "ImageSets/Segmentation/val.txt")
print(summary)
```
"""

# Spawned pool workers import this module: TensorFlow and Keras are imported
# inside the functions that run in the main process, so that the workers only
# pay for them if the package's __init__ imports them anyway.
import collections
import concurrent.futures
import dataclasses
import io
import itertools
import multiprocessing
import os
import posixpath
import re

import cv2
import numpy as np
from absl import logging
from PIL import Image

from tf_pacseg import constants, files

# Reasons a sample is skipped; summaries count skipped samples by these.
MISSING_IMAGE = "missing image"
MISSING_LABEL = "missing label"
BAD_IMAGE = "image not a decodable JPEG"
BAD_LABEL = "label not a decodable PNG"
SIZE_MISMATCH = "label size differs from image size"
BAD_LABEL_VALUES = "label values out of range"
REASONS = (MISSING_IMAGE, MISSING_LABEL, BAD_IMAGE, BAD_LABEL, SIZE_MISMATCH, BAD_LABEL_VALUES)

_JPEG_MAGIC = b"\xff\xd8\xff"
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# Samples in flight in the pool: keeps every worker busy and memory flat when
# decoding outpaces writing.
_WINDOW = 256

# Colour -> class id for RGB label PNGs: 0xRRGGBB codes of the VOC palette, sorted.
_PALETTE_CODES = np.array([(r << 16) | (g << 8) | b for r, g, b in constants.VOC_PALETTE])
_PALETTE_ORDER = np.argsort(_PALETTE_CODES)
_SORTED_PALETTE_CODES = _PALETTE_CODES[_PALETTE_ORDER]


class InvalidSampleError(ValueError):
    """A sample that cannot be converted; `reason` is one of `REASONS`."""

    def __init__(self, reason, message):
        super().__init__(message)
        self.reason = reason

    def __reduce__(self):
        # Lets the error cross process boundaries intact.
        return (type(self), (self.reason, str(self)))


@dataclasses.dataclass(frozen=True)
class Sample:
    """One converted sample: the image file's bytes and the re-encoded label."""

    sample_id: str
    image_jpeg: bytes
    label_png: bytes
    height: int
    width: int


@dataclasses.dataclass(frozen=True)
class SkippedSample:
    split: str
    sample_id: str
    reason: str
    message: str


@dataclasses.dataclass
class SplitSummary:
    """What happened to one list file."""

    split: str
    list_path: str
    num_listed: int
    num_written: int
    files: list
    skipped: list


@dataclasses.dataclass
class ConversionSummary:
    """The result of `convert_voc`: per split, what was written and what was skipped."""

    output_path: str
    splits: dict

    @property
    def written(self):
        """`{split: number of examples written}`."""
        return {split: s.num_written for split, s in self.splits.items()}

    @property
    def skipped(self):
        """Every skipped sample, in list order, train first."""
        return [item for s in self.splits.values() for item in s.skipped]

    def skipped_counts(self):
        """`{reason: number of samples skipped for it}` (reasons with none left out)."""
        return dict(collections.Counter(item.reason for item in self.skipped))

    def __str__(self):
        return self.format()

    def format(self, max_listed=20):
        """A report: one line per split, then skipped samples by reason (`max_listed` each)."""
        lines = []
        for s in self.splits.values():
            lines.append(
                f"{s.split}: wrote {s.num_written} of {s.num_listed} listed samples "
                f"({s.list_path}) to {len(s.files)} shards in {self.output_path}"
            )
        by_reason = collections.defaultdict(list)
        for item in self.skipped:
            by_reason[item.reason].append(item)
        if not by_reason:
            lines.append("skipped: none")
        for reason in REASONS:
            items = by_reason.get(reason, [])
            if not items:
                continue
            lines.append(f"skipped, {reason}: {len(items)}")
            for item in items[:max_listed]:
                lines.append(f"  {item.split} {item.sample_id!r}: {item.message}")
            if len(items) > max_listed:
                lines.append(f"  ... and {len(items) - max_listed} more")
        return "\n".join(lines)


def read_id_list(path):
    """Reads sample ids from a list file, one per line.

    Blank lines and `#` comments are skipped. Only the first token of a line
    counts, and a path there is reduced to its file stem, so the lines `2007_000032`,
    `2007_000032 1` and `/JPEGImages/2007_000032.jpg /SegmentationClass/2007_000032.png`
    all give the id `2007_000032`.

    Args:
        path: str. The list file.

    Returns:
        The ids, in file order (duplicates kept).
    """
    ids = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            name = posixpath.basename(line.split()[0].replace("\\", "/"))
            stem, extension = os.path.splitext(name)
            ids.append(stem if extension.lower() in constants.IMAGE_EXTENSIONS else name)
    return ids


def decode_label_png(data, path="<label>"):
    """Class indices [H, W] of a label PNG: uint8, or wider for 16/32-bit PNGs.

    One-channel PNGs (mode 'L', or 'P' whose palette indices are the class ids,
    as in VOC's SegmentationClass) are read as indices; RGB PNGs are mapped
    through the VOC colour palette. Values are not checked against a class
    count here; `check_label_values` does that.

    Args:
        data: bytes. The PNG file's contents.
        path: str. The file's name, for error messages.

    Raises:
        InvalidSampleError: not a decodable PNG, or colours outside the VOC palette.
    """
    if not data.startswith(_PNG_MAGIC):
        raise InvalidSampleError(BAD_LABEL, f"label file {path} is not a PNG (wrong magic bytes).")
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except Exception as error:  # PIL raises several types for corrupt files.
        raise InvalidSampleError(
            BAD_LABEL, f"label file {path} is not a decodable PNG ({error})."
        ) from error
    if image.mode in ("L", "P"):
        return np.asarray(image, dtype=np.uint8)
    if image.mode in ("I", "I;16"):
        return np.asarray(image)
    if image.mode in ("RGB", "RGBA"):
        return _colours_to_indices(np.asarray(image.convert("RGB")), path)
    raise InvalidSampleError(
        BAD_LABEL,
        f"label file {path} has PNG mode {image.mode!r}; expected one channel of class "
        "indices ('L' or 'P') or VOC palette colours ('RGB').",
    )


def _colours_to_indices(rgb, path):
    codes = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8)
    codes |= rgb[..., 2]
    positions = np.searchsorted(_SORTED_PALETTE_CODES, codes).clip(0, 255)
    known = _SORTED_PALETTE_CODES[positions] == codes
    if not known.all():
        unknown = np.unique(codes[~known])
        listed = ", ".join(f"({c >> 16}, {(c >> 8) & 255}, {c & 255})" for c in unknown[:5])
        more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
        raise InvalidSampleError(
            BAD_LABEL_VALUES,
            f"RGB label file {path} has colours that are not in the VOC palette: "
            f"{listed}{more}. Use one-channel index labels (e.g. SegmentationClassAug) "
            "or VOC palette colours.",
        )
    return _PALETTE_ORDER[positions].astype(np.uint8)


def check_label_values(label, num_classes, where, ignore_label=constants.IGNORE_LABEL):
    """Raises if `label` has values outside [0, num_classes) other than `ignore_label`.

    Args:
        label: int array of class ids.
        num_classes: int.
        where: str. What holds the label, for the message (e.g. "label file x.png").
        ignore_label: int. The value of pixels left out. Defaults to 255.

    Raises:
        InvalidSampleError: with reason `BAD_LABEL_VALUES`, listing the values.
    """
    # The common case, ten times cheaper than counting the values.
    if label.min(initial=0) >= 0 and label.max(initial=0) < num_classes:
        return
    if label.dtype == np.uint8:
        present = np.flatnonzero(np.bincount(label.ravel(), minlength=256))
    else:
        present = np.unique(label)
    bad = [int(v) for v in present if (v < 0 or v >= num_classes) and v != ignore_label]
    if bad:
        listed = ", ".join(map(str, bad[:10])) + (" ..." if len(bad) > 10 else "")
        raise InvalidSampleError(
            BAD_LABEL_VALUES,
            f"{where} has label values [{listed}] outside [0, {num_classes}) that are not "
            f"the ignore label {ignore_label}. Check `num_classes` and that the labels hold "
            "class indices.",
        )


def encode_label_png(label):
    """One-channel PNG bytes of uint8 [H, W] class indices."""
    ok, encoded = cv2.imencode(".png", np.ascontiguousarray(label, dtype=np.uint8))
    if not ok:
        raise RuntimeError(f"OpenCV could not encode a label of shape {label.shape} as PNG.")
    return encoded.tobytes()


def _image_size(data, path):
    """(height, width) of JPEG bytes, after checking that they decode."""
    if not data.startswith(_JPEG_MAGIC):
        kind = " (it is a PNG)" if data.startswith(_PNG_MAGIC) else ""
        raise InvalidSampleError(
            BAD_IMAGE, f"image file {path} is not a JPEG{kind}: wrong magic bytes."
        )
    try:
        image = Image.open(io.BytesIO(data))
        image.load()  # Decodes the whole image: catches truncated files.
    except Exception as error:  # PIL raises several types for corrupt files.
        raise InvalidSampleError(
            BAD_IMAGE, f"image file {path} is not a decodable JPEG ({error})."
        ) from error
    if image.format != "JPEG":
        raise InvalidSampleError(BAD_IMAGE, f"image file {path} is a {image.format}, not a JPEG.")
    return image.height, image.width


def sample_paths(image_dir, label_dir, sample_id):
    """(image path, label path) of a sample: `<image_dir>/<id>.jpg` and `<label_dir>/<id>.png`.

    The image may also end in another of `constants.IMAGE_EXTENSIONS`, in
    any case (it must still hold a JPEG); if none exists, the `.jpg` name is
    returned, for the message that says it is missing.
    """
    names = [sample_id + e for ext in constants.IMAGE_EXTENSIONS for e in (ext, ext.upper())]
    paths = [os.path.join(image_dir, name) for name in names]
    image_path = next((path for path in paths if os.path.isfile(path)), paths[0])
    return image_path, os.path.join(label_dir, sample_id + ".png")


def load_sample(
    sample_id,
    image_path,
    label_path,
    num_classes=constants.NUM_CLASSES,
    ignore_label=constants.IGNORE_LABEL,
):
    """Reads and validates one image/label pair.

    The one reader of VOC-style folders: the converter writes what it returns
    into records, and folder evaluation encodes it as a record too, so that
    both decode the same bytes with the same parser.

    Args:
        sample_id: str. The id, carried into the result.
        image_path: str. The JPEG file.
        label_path: str. The label PNG (indices, palette or VOC colours).
        num_classes: int. Label values must be in [0, num_classes) or
            `ignore_label`. Defaults to 21.
        ignore_label: int. Label of pixels left out. Defaults to 255.

    Returns:
        A `Sample` with the image file's exact bytes and the label re-encoded
        as a one-channel PNG of class indices.

    Raises:
        InvalidSampleError: with `reason` in `REASONS` and a message naming the file.
    """
    if not os.path.isfile(image_path):
        raise InvalidSampleError(MISSING_IMAGE, f"image file {image_path} does not exist.")
    if not os.path.isfile(label_path):
        raise InvalidSampleError(MISSING_LABEL, f"label file {label_path} does not exist.")
    with open(image_path, "rb") as f:
        image_jpeg = f.read()
    height, width = _image_size(image_jpeg, image_path)
    with open(label_path, "rb") as f:
        label = decode_label_png(f.read(), label_path)
    if label.shape != (height, width):
        raise InvalidSampleError(
            SIZE_MISMATCH,
            f"label file {label_path} is {label.shape[0]}x{label.shape[1]} (height x width) "
            f"but image file {image_path} is {height}x{width}.",
        )
    check_label_values(label, num_classes, f"label file {label_path}", ignore_label)
    return Sample(sample_id, image_jpeg, encode_label_png(label.astype(np.uint8)), height, width)


def _load_task(task):
    """Pool entry point: a `Sample`, or the `InvalidSampleError` (returned, not raised)."""
    try:
        return load_sample(*task)
    except InvalidSampleError as error:
        return error


def ordered_map(function, items, executor=None, window=_WINDOW):
    """`map(function, items)` computed ahead by `executor`, in order, with bounded memory.

    Args:
        function: callable of one item (picklable for a process pool).
        items: iterable.
        executor: a `concurrent.futures.Executor`, or `None` to map in this
            thread. Defaults to `None`.
        window: int. Items in flight at most. Defaults to 256.

    Yields:
        `function(item)` for each item, in order. An exception raised by
        `function` is raised here, at its item.
    """
    if executor is None:
        yield from map(function, items)
        return
    items = iter(items)
    pending = collections.deque(
        executor.submit(function, item) for item in itertools.islice(items, window)
    )
    try:
        while pending:
            result = pending.popleft().result()
            pending.extend(executor.submit(function, item) for item in itertools.islice(items, 1))
            yield result
    finally:
        for future in pending:
            future.cancel()


def load_samples(tasks, executor=None):
    """`load_sample(*task)` for each task, in order: a `Sample` or its `InvalidSampleError`.

    Args:
        tasks: iterable of `load_sample` argument tuples.
        executor: a `concurrent.futures.Executor` that decodes ahead, or
            `None` to decode in this thread. Defaults to `None`.
    """
    return ordered_map(_load_task, tasks, executor)


def _shard_paths(output_path, split, num_shards):
    from tf_pacseg.data import records  # Imports TensorFlow; see the note at the top.

    return [
        os.path.join(output_path, records.shard_file_name(split, i, num_shards))
        for i in range(num_shards)
    ]


def _remove_stale_shards(output_path, split, num_shards):
    """Deletes shards of `split` left by an earlier run with another shard count."""
    pattern = re.compile(rf"{re.escape(split)}-\d{{5}}-of-(\d{{5}})\.tfrecord")
    for name in sorted(os.listdir(output_path)):
        match = pattern.fullmatch(name)
        if match and int(match.group(1)) != num_shards:
            logging.info("Removing %s, a shard of an earlier conversion.", name)
            os.remove(os.path.join(output_path, name))


def convert_split(
    split,
    sample_ids,
    image_dir,
    label_dir,
    output_path,
    num_shards=4,
    num_classes=constants.NUM_CLASSES,
    ignore_label=constants.IGNORE_LABEL,
    strict=False,
    executor=None,
    list_path="",
    verbose=1,
):
    """Writes the samples of one split to `num_shards` TFRecord shards.

    Shard `i` holds a contiguous run of the list, so reading the shards in
    name order gives the list order. Every shard is written under a temporary
    name and all are renamed only once the whole split is written: an
    interrupted run leaves no file that looks finished.

    Args:
        split: str. `"train"` or `"val"`; names the shards.
        sample_ids: list of str. The ids, in output order.
        image_dir: str. Folder of `<id>.jpg` images.
        label_dir: str. Folder of `<id>.png` labels.
        output_path: str. Folder for the shards (created if needed).
        executor: a `concurrent.futures.Executor` that decodes samples, or
            `None` to decode in this process. Defaults to `None`.
        list_path: str. The list file, for messages. Defaults to `""`.
        num_shards, num_classes, ignore_label, strict, verbose: as in
            `convert_voc`.

    Returns:
        A `SplitSummary`.

    Raises:
        ValueError: in strict mode, naming the first bad sample and why.
    """
    import keras  # Imports TensorFlow; see the note at the top.
    import tensorflow as tf

    from tf_pacseg.data import records

    if not isinstance(num_shards, int) or num_shards < 1:
        raise ValueError(
            "Invalid value for argument `num_shards`. Expected a strictly positive integer. "
            f"Received: num_shards={num_shards!r}"
        )
    os.makedirs(output_path, exist_ok=True)
    paths = _shard_paths(output_path, split, num_shards)
    temporary = [files.temporary_path(p) for p in paths]
    tasks = [
        (i, *sample_paths(image_dir, label_dir, i), num_classes, ignore_label) for i in sample_ids
    ]
    progbar = keras.utils.Progbar(len(tasks), verbose=verbose, unit_name="image")
    skipped, num_written, shard, writer = [], 0, -1, None
    try:
        results = load_samples(tasks, executor)
        for index, result in enumerate(results):
            # Contiguous runs: sample `index` of n goes to shard index * num_shards // n.
            while shard < index * num_shards // len(tasks):
                if writer is not None:
                    writer.close()
                shard += 1
                writer = tf.io.TFRecordWriter(temporary[shard])
            if isinstance(result, InvalidSampleError):
                message = f"Skipping {split} sample {sample_ids[index]!r}: {result}"
                if strict:
                    raise ValueError(message) from result
                logging.warning(message)
                skipped.append(SkippedSample(split, sample_ids[index], result.reason, str(result)))
            else:
                writer.write(
                    records.encode_example(
                        result.image_jpeg, result.label_png, result.height, result.width
                    )
                )
                num_written += 1
            progbar.add(1)
        # Shards past the last sample (more shards than samples) exist but are empty.
        while shard < num_shards - 1:
            if writer is not None:
                writer.close()
            shard += 1
            writer = tf.io.TFRecordWriter(temporary[shard])
        writer.close()
        writer = None
        for tmp, path in zip(temporary, paths, strict=True):
            os.replace(tmp, path)
    finally:
        if writer is not None:
            writer.close()
        for tmp in temporary:
            if os.path.exists(tmp):
                os.remove(tmp)
    _remove_stale_shards(output_path, split, num_shards)
    if num_written == 0:
        logging.warning("No %s sample was valid: the %s shards are empty.", split, split)
    return SplitSummary(split, list_path, len(sample_ids), num_written, paths, skipped)


def _resolve_list(path, data_dir):
    """A list file relative to `data_dir`, else as given (the original's meaning)."""
    candidates = [path] if os.path.isabs(path) else [os.path.join(data_dir, path), path]
    for candidate in candidates:
        if os.path.isfile(candidate):
            return candidate
    raise FileNotFoundError(
        f"List file {path!r} not found (looked for {' and '.join(map(repr, candidates))}). "
        "Pass a path to a file of image ids, absolute or relative to `data_dir`."
    )


def _check_dir(path, what, hint):
    if not os.path.isdir(path):
        raise FileNotFoundError(f"The {what} folder {path!r} does not exist. {hint}")


def _default_num_workers(num_samples):
    # A spawned worker takes seconds to start (it imports the package), about
    # the time this process needs for a thousand images on its own.
    if num_samples < 1000:
        return 0
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return min(cpus or 1, 32)


def convert_voc(
    data_dir,
    output_path,
    train_data_list,
    valid_data_list,
    image_data_dir="JPEGImages",
    label_data_dir="SegmentationClassAug",
    num_shards=4,
    num_classes=constants.NUM_CLASSES,
    ignore_label=constants.IGNORE_LABEL,
    strict=False,
    num_workers=None,
    verbose=1,
):
    """Converts a VOC-style folder into `train-*` and `val-*` TFRecord shards.

    Args:
        data_dir: str. The VOC folder (e.g. `VOCdevkit/VOC2012`).
        output_path: str. Folder for the shards (created if needed); this is
            the `data_dir` of training and evaluation.
        train_data_list: str or None. List file of training ids, absolute or
            relative to `data_dir` (else to the working directory, as in the
            original converter). `None` or `""` skips the split.
        valid_data_list: str or None. The same for the validation ids.
        image_data_dir: str. Image folder, relative to `data_dir` unless
            absolute. Defaults to `"JPEGImages"`.
        label_data_dir: str. Label folder, relative to `data_dir` unless
            absolute: index PNGs (`"SegmentationClassAug"`) or VOC palette PNGs
            (`"SegmentationClass"`). Defaults to `"SegmentationClassAug"`.
        num_shards: int. Shards per split. Defaults to 4.
        num_classes: int. Label values must be in [0, num_classes) or
            `ignore_label`. Defaults to 21.
        ignore_label: int. Label of pixels left out. Defaults to 255.
        strict: bool. Raise on the first bad sample instead of skipping it.
            Defaults to `False`.
        num_workers: int or None. Decoding processes; 0 or 1 decodes in this
            process; `None` uses every CPU for large lists and none for small
            ones. Defaults to `None`.
        verbose: int. 1 shows progress bars, 0 is silent. Defaults to 1.

    Returns:
        A `ConversionSummary`; `print` it for a report.

    Raises:
        FileNotFoundError: a missing folder or list file.
        ValueError: an empty list file, or in strict mode the first bad sample.
    """
    image_dir = os.path.join(data_dir, image_data_dir)
    label_dir = os.path.join(data_dir, label_data_dir)
    _check_dir(data_dir, "data", "Pass the VOC folder that holds JPEGImages/ as `data_dir`.")
    _check_dir(image_dir, "image", "Check `image_data_dir`.")
    _check_dir(
        label_dir,
        "label",
        "SegmentationClassAug (the augmented labels of Hariharan et al.) is distributed "
        "apart from VOC2012; download it into `data_dir`, or pass "
        "`label_data_dir='SegmentationClass'` to use VOC's own palette labels.",
    )
    splits = {}
    for split, list_file in (("train", train_data_list), ("val", valid_data_list)):
        if list_file:
            list_path = _resolve_list(list_file, data_dir)
            ids = read_id_list(list_path)
            if not ids:
                raise ValueError(f"List file {list_path!r} holds no image ids.")
            splits[split] = (list_path, ids)
    if not splits:
        raise ValueError(
            "Nothing to convert: both `train_data_list` and `valid_data_list` are empty."
        )

    if num_workers is None:
        num_workers = _default_num_workers(sum(len(ids) for _, ids in splits.values()))
    executor = None
    if num_workers > 1:
        # Spawned, not forked: this process runs TensorFlow's threads.
        executor = concurrent.futures.ProcessPoolExecutor(
            num_workers, mp_context=multiprocessing.get_context("spawn")
        )
    summaries = {}
    try:
        for split, (list_path, ids) in splits.items():
            logging.info("Converting %d %s samples from %s.", len(ids), split, list_path)
            summaries[split] = convert_split(
                split,
                ids,
                image_dir,
                label_dir,
                output_path,
                num_shards=num_shards,
                num_classes=num_classes,
                ignore_label=ignore_label,
                strict=strict,
                executor=executor,
                list_path=list_path,
                verbose=verbose,
            )
    finally:
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
    return ConversionSummary(output_path, summaries)
