"""Converts a VOC-style folder into TFRecord shards (`convert_voc`) and reports what it skipped.

Images are stored byte for byte; labels are re-encoded as one-channel PNGs of
class indices whatever their source (index PNG, palette PNG, RGB PNG in VOC
colours, or colour masks in the colours of `label_colors`), so every record
reads the same way (`records.parse_example`). Samples are read by
`voc.load_sample`, the reader that folder evaluation uses too. With
`class_names`, the names are written beside the shards
(`class_names.CLASS_NAMES_FILE`) for the steps that follow.

Bad samples (missing or undecodable files, size mismatches, labels outside the
class range, colours outside the colour table, JPEG-compressed masks) are
skipped with a warning, as the original converter did, and listed in the
returned summary; `strict=True` makes the first one an error.

Example:

```python
summary = convert_voc("VOCdevkit/VOC2012", "dataset",
                      "ImageSets/Segmentation/train_aug.txt",
                      "ImageSets/Segmentation/val.txt")
print(summary)
```
"""

# The converter script imports this module, and the spawned decoding workers
# import the script again: TensorFlow and Keras are imported inside the
# functions, so that the workers do not pay for them.
import collections
import concurrent.futures
import contextlib
import dataclasses
import multiprocessing
import os

from absl import logging

from tf_pacseg import checks, constants
from tf_pacseg.data import class_names as class_names_lib
from tf_pacseg.data import label_png, voc
from tf_pacseg.data.samples import REASONS, InvalidSampleError

# TFRecord shards per split, convert_voc.py's default.
NUM_SHARDS = 4


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
    class_names_file: str | None = None

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
        if self.class_names_file:
            lines.append(f"class names: {self.class_names_file}")
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


def _encode_or_skip(split, sample_ids, results, strict, skipped, progbar):
    """The serialized example of each loaded sample, `None` for each invalid one.

    Invalid samples are logged and added to `skipped` as `SkippedSample`s;
    with `strict`, the first raises a `ValueError` instead.
    """
    from tf_pacseg.data import records  # See the note at the top.

    for sample_id, result in zip(sample_ids, results, strict=True):
        progbar.add(1)
        if isinstance(result, InvalidSampleError):
            message = f"Skipping {split} sample {sample_id!r}: {result}"
            if strict:
                raise ValueError(message) from result
            logging.warning(message)
            skipped.append(SkippedSample(split, sample_id, result.reason, str(result)))
            yield None
        else:
            yield records.encode_example(
                result.image_jpeg, result.label_png, result.height, result.width
            )


def convert_split(
    split,
    sample_ids,
    image_dir,
    label_dir,
    output_path,
    num_shards=NUM_SHARDS,
    num_classes=constants.NUM_CLASSES,
    ignore_label=constants.IGNORE_LABEL,
    strict=False,
    executor=None,
    list_path="",
    verbose=1,
    label_colors=None,
):
    """Writes the samples of one split to `num_shards` TFRecord shards.

    Shard `i` holds a contiguous run of the list, so reading the shards in
    name order gives the list order. Every shard is written under a temporary
    name and all are renamed only once the whole split is written: an
    interrupted run leaves no file that looks finished (`records.write_shards`).

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
        label_colors: `label_png.LabelColors` or None. Read labels as colour
            masks through this table (`label_png.load_label_colors`).
            Defaults to `None`.

    Returns:
        A `SplitSummary`.

    Raises:
        ValueError: in strict mode, naming the first bad sample and why.
    """
    import keras  # Imports TensorFlow; see the note at the top.

    from tf_pacseg.data import records

    checks.positive_int("num_shards", num_shards)
    tasks = [
        (i, *voc.sample_paths(image_dir, label_dir, i), num_classes, ignore_label, label_colors)
        for i in sample_ids
    ]
    progbar = keras.utils.Progbar(len(tasks), verbose=verbose, unit_name="image")
    skipped = []
    results = voc.load_samples(tasks, executor)
    examples = _encode_or_skip(split, sample_ids, results, strict, skipped, progbar)
    paths, num_written = records.write_shards(output_path, split, examples, len(tasks), num_shards)
    if num_written == 0:
        logging.warning("No %s sample was valid: the %s shards are empty.", split, split)
    return SplitSummary(split, list_path, len(sample_ids), num_written, paths, skipped)


def _check_folders(data_dir, image_dir, label_dir):
    for path, what, hint in (
        (data_dir, "data", "Pass the VOC folder that holds JPEGImages/ as `data_dir`."),
        (image_dir, "image", "Check `image_data_dir`."),
        (
            label_dir,
            "label",
            "SegmentationClassAug (the augmented labels of Hariharan et al.) is distributed "
            "apart from VOC2012; download it into `data_dir`, or pass "
            "`label_data_dir='SegmentationClass'` to use VOC's own palette labels.",
        ),
    ):
        if not os.path.isdir(path):
            raise FileNotFoundError(f"The {what} folder {path!r} does not exist. {hint}")


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


def _read_lists(data_dir, train_data_list, valid_data_list):
    """`{split: (list path, ids)}` of the splits that have a list file."""
    splits = {}
    for split, list_file in (("train", train_data_list), ("val", valid_data_list)):
        if list_file:
            list_path = _resolve_list(list_file, data_dir)
            ids = voc.read_id_list(list_path)
            if not ids:
                raise ValueError(f"List file {list_path!r} holds no image ids.")
            splits[split] = (list_path, ids)
    if not splits:
        raise ValueError(
            "Nothing to convert: both `train_data_list` and `valid_data_list` are empty."
        )
    return splits


def _default_num_workers(num_samples):
    # A spawned worker takes seconds to start (it imports the package), about
    # the time this process needs for a thousand images on its own.
    if num_samples < 1000:
        return 0
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return min(cpus or 1, 32)


@contextlib.contextmanager
def _decoding_pool(num_workers):
    """A pool of `num_workers` decoding processes; `None` (decode here) for 0 or 1."""
    if num_workers <= 1:
        yield None
        return
    # Spawned, not forked: this process runs TensorFlow's threads.
    executor = concurrent.futures.ProcessPoolExecutor(
        num_workers, mp_context=multiprocessing.get_context("spawn")
    )
    try:
        yield executor
    finally:
        executor.shutdown(wait=True, cancel_futures=True)


def convert_voc(
    data_dir,
    output_path,
    train_data_list,
    valid_data_list,
    image_data_dir="JPEGImages",
    label_data_dir="SegmentationClassAug",
    num_shards=NUM_SHARDS,
    num_classes=constants.NUM_CLASSES,
    ignore_label=constants.IGNORE_LABEL,
    strict=False,
    num_workers=None,
    verbose=1,
    label_colors=None,
    class_names=None,
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
        label_colors: str or None. Read the labels as colour masks: `"voc"`
            for the VOC palette, or a colours file of one `r,g,b` line per
            class and `ignore: r,g,b` lines (`label_png.load_label_colors`).
            `None` reads them as described under `label_data_dir`. Defaults
            to `None`.
        class_names: str or None. `"voc"` or a file of one name per line
            (`class_names.load_class_names`), written beside the shards as
            `class_names.txt`; `None` writes no names. Defaults to `None`.

    Returns:
        A `ConversionSummary`; `print` it for a report.

    Raises:
        FileNotFoundError: a missing folder or list file.
        ValueError: an empty list file, a bad colours or names file, or in
            strict mode the first bad sample.
    """
    if class_names is not None:
        class_names = class_names_lib.load_class_names(class_names, num_classes)
    if label_colors is not None:
        label_colors = label_png.load_label_colors(label_colors, num_classes, ignore_label)
    image_dir = os.path.join(data_dir, image_data_dir)
    label_dir = os.path.join(data_dir, label_data_dir)
    _check_folders(data_dir, image_dir, label_dir)
    splits = _read_lists(data_dir, train_data_list, valid_data_list)
    if num_workers is None:
        num_workers = _default_num_workers(sum(len(ids) for _, ids in splits.values()))
    summaries = {}
    with _decoding_pool(num_workers) as executor:
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
                label_colors=label_colors,
            )
    names_file = None
    if class_names is not None:
        names_file = class_names_lib.write_class_names(output_path, class_names)
    return ConversionSummary(output_path, summaries, names_file)
