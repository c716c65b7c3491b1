"""What a converted dataset holds: images, sizes, and pixels per class, per split.

Reads the records of a split (`records.find_record_files`), decoding only
the labels, and counts each class's pixels. The counts give the class shares
and the median-frequency class weights of Eigen & Fergus (2015), used by
SegNet: `w_c = median(freq) / freq_c`, where `freq_c` is the number of
pixels of class `c` over the labelled pixels of the images that hold `c`.
Pixels of the ignore label count nowhere but in `ignored`.

Example:

```python
counts = class_pixel_counts("dataset", "train", num_classes=21)
weights = median_frequency_weights(counts)
names = class_names.resolve_class_names(data_dir="dataset")
print(format_table(dataset_statistics("dataset", names)))
```
"""

import dataclasses

import numpy as np
import tensorflow as tf
from absl import logging

from tf_pacseg import checks, constants
from tf_pacseg.data import records

# Label PNGs are uint8: a histogram of 256 bins holds every value.
_NUM_VALUES = 256
# Only the label is read: decoding the images would cost most of the time.
_LABEL_FEATURES = {constants.LABEL_ENCODED: tf.io.FixedLenFeature((), tf.string)}


@dataclasses.dataclass
class SplitCounts:
    """Image sizes and pixels per class of one split.

    Attributes:
        split: str.
        num_classes: int.
        ignore_label: int.
        num_images: int.
        height_range: (min, max) of the image heights, `None` with no image.
        width_range: (min, max) of the image widths, `None` with no image.
        pixels: int64 [num_classes]. Pixels of each class.
        images: int64 [num_classes]. Images that hold each class.
        image_pixels: int64 [num_classes]. Labelled pixels of the images
            that hold each class (the denominator of `freq_c`).
        ignored: int. Pixels of the ignore label.
        out_of_range: int. Pixels of other values at or above `num_classes`.
    """

    split: str
    num_classes: int
    ignore_label: int
    num_images: int = 0
    height_range: tuple | None = None
    width_range: tuple | None = None
    pixels: np.ndarray = None
    images: np.ndarray = None
    image_pixels: np.ndarray = None
    ignored: int = 0
    out_of_range: int = 0

    def __post_init__(self):
        for name in ("pixels", "images", "image_pixels"):
            if getattr(self, name) is None:
                setattr(self, name, np.zeros(self.num_classes, np.int64))

    def add(self, histogram, height, width):
        """Counts one image: `histogram[v]` is its number of pixels of label value `v`."""
        histogram = np.asarray(histogram, np.int64)
        class_pixels = histogram[: self.num_classes].copy()
        if self.ignore_label < self.num_classes:
            class_pixels[self.ignore_label] = 0
        ignored = int(histogram[self.ignore_label])
        present = class_pixels > 0
        self.pixels += class_pixels
        self.images += present
        self.image_pixels += present * class_pixels.sum()
        self.ignored += ignored
        self.out_of_range += int(histogram.sum() - class_pixels.sum() - ignored)
        self.height_range = _widen(self.height_range, height)
        self.width_range = _widen(self.width_range, width)
        self.num_images += 1

    @property
    def labelled(self):
        """Pixels of the classes (the ignore label and out-of-range values left out)."""
        return int(self.pixels.sum())

    def shares(self):
        """float64 [num_classes]: each class's part of the labelled pixels (zeros if none)."""
        return self.pixels / max(self.labelled, 1)

    def absent_classes(self):
        """The ids of the classes with no pixel in the split."""
        return [int(c) for c in np.flatnonzero(self.pixels == 0)]


def _widen(bounds, value):
    value = int(value)
    return (value, value) if bounds is None else (min(bounds[0], value), max(bounds[1], value))


def _label_histogram(serialized):
    """(pixels per label value [256], height, width) of one serialized example."""
    label = tf.io.parse_single_example(serialized, _LABEL_FEATURES)[constants.LABEL_ENCODED]
    label = tf.io.decode_png(label, channels=1)
    values = tf.cast(tf.reshape(label, [-1]), tf.int32)
    histogram = tf.math.bincount(
        values, minlength=_NUM_VALUES, maxlength=_NUM_VALUES, dtype=tf.int64
    )
    shape = tf.shape(label)
    return histogram, shape[0], shape[1]


def class_pixel_counts(
    data_dir,
    split="train",
    num_classes=constants.NUM_CLASSES,
    ignore_label=constants.IGNORE_LABEL,
    on_file=None,
):
    """Counts the images, their sizes and the pixels of each class in a split's records.

    Args:
        data_dir: str. The records folder (`convert_voc`'s output).
        split: str. `"train"` or `"val"`. Defaults to `"train"`.
        num_classes: int. Defaults to 21.
        ignore_label: int. Defaults to 255.
        on_file: callable or None. Called after each record file as
            `on_file(path, images in it, files done, number of files)`, for
            progress. Defaults to `None`.

    Returns:
        A `SplitCounts`.

    Raises:
        FileNotFoundError: the split has no records in `data_dir`.
    """
    checks.int_in_range("num_classes", num_classes, 1, _NUM_VALUES)
    checks.int_in_range("ignore_label", ignore_label, 0, _NUM_VALUES - 1)
    paths = records.find_record_files(data_dir, split)
    counts = SplitCounts(split, num_classes, ignore_label)
    for done, path in enumerate(paths, start=1):
        before = counts.num_images
        dataset = tf.data.TFRecordDataset(path).map(
            _label_histogram, num_parallel_calls=tf.data.AUTOTUNE
        )
        for histogram, height, width in dataset.as_numpy_iterator():
            counts.add(histogram, height, width)
        if on_file is not None:
            on_file(path, counts.num_images - before, done, len(paths))
    return counts


def median_frequency_weights(counts):
    """Median-frequency class weights (Eigen & Fergus 2015): `median(freq) / freq_c`.

    `freq_c` is the pixels of class `c` over the labelled pixels of the
    images that hold `c`; the median is over the classes present. Classes
    with no pixel get weight 0, and a warning names them.

    Args:
        counts: `SplitCounts`.

    Returns:
        float64 [num_classes].

    Raises:
        ValueError: no class has a pixel.
    """
    if not counts.labelled:
        raise ValueError(
            f"The {counts.split} split has no labelled pixel ({counts.num_images} images): "
            "no class weights can be computed."
        )
    absent = counts.absent_classes()
    if absent:
        logging.warning(
            "Classes %s have no pixel in the %s split: their median-frequency weight is 0.",
            absent,
            counts.split,
        )
    return _median_frequency_weights(counts)


def _median_frequency_weights(counts):
    present = counts.pixels > 0
    weights = np.zeros(counts.num_classes)
    if present.any():
        frequencies = counts.pixels[present] / counts.image_pixels[present]
        weights[present] = np.median(frequencies) / frequencies
    return weights


def split_report(counts, class_names):
    """A JSON-ready dict of a `SplitCounts`, classes named by `class_names`."""
    weights = _median_frequency_weights(counts)  # Absent classes are listed below.
    shares = counts.shares()
    classes = [
        {
            "id": c,
            "name": name,
            "pixels": int(counts.pixels[c]),
            "share": float(shares[c]),
            "images": int(counts.images[c]),
            "median_frequency_weight": float(weights[c]),
        }
        for c, name in enumerate(class_names)
    ]
    sizes = {
        name: None if bounds is None else {"min": bounds[0], "max": bounds[1]}
        for name, bounds in (("height", counts.height_range), ("width", counts.width_range))
    }
    return {
        "num_images": counts.num_images,
        **sizes,
        "labelled_pixels": counts.labelled,
        "ignored_pixels": counts.ignored,
        "out_of_range_pixels": counts.out_of_range,
        "classes": classes,
        "absent_classes": [class_names[c] for c in counts.absent_classes()],
    }


def dataset_statistics(data_dir, class_names, ignore_label=constants.IGNORE_LABEL, on_file=None):
    """The statistics of the train and val records in `data_dir`, as a JSON-ready dict.

    Args:
        data_dir: str. The records folder.
        class_names: sequence of str. One name per class
            (`class_names.resolve_class_names`).
        ignore_label: int. Defaults to 255.
        on_file: callable or None. As in `class_pixel_counts`. Defaults to `None`.

    Returns:
        `{"data_dir", "num_classes", "ignore_label", "class_names", "splits":
        {split: split_report(...)}}`, with the splits that have records.

    Raises:
        FileNotFoundError: neither split has records.
    """
    splits = {}
    errors = []
    for split in records.SPLITS:
        try:
            counts = class_pixel_counts(data_dir, split, len(class_names), ignore_label, on_file)
        except FileNotFoundError as error:
            errors.append(str(error))
            continue
        splits[split] = split_report(counts, class_names)
    if not splits:
        raise FileNotFoundError(" ".join(errors))
    return {
        "data_dir": data_dir,
        "num_classes": len(class_names),
        "ignore_label": ignore_label,
        "class_names": list(class_names),
        "splits": splits,
    }


def _size_range(bounds):
    return "-" if bounds is None else f"{bounds['min']}-{bounds['max']}"


def format_table(statistics):
    """A text table of `dataset_statistics`' result: one line per split, then per class."""
    splits = statistics["splits"]
    lines = [
        f"{'split':<6}{'images':>9}{'height':>11}{'width':>11}{'labelled px':>15}"
        f"{'ignored px':>14}{'out of range px':>17}"
    ]
    for split, report in splits.items():
        lines.append(
            f"{split:<6}{report['num_images']:>9,}{_size_range(report['height']):>11}"
            f"{_size_range(report['width']):>11}{report['labelled_pixels']:>15,}"
            f"{report['ignored_pixels']:>14,}{report['out_of_range_pixels']:>17,}"
        )
    width = max(len("class"), *(len(name) for name in statistics["class_names"]))
    header = f"\n{'id':>3}  {'class':<{width}}"
    for split in splits:
        header += f"{split + ' pixels':>16}{'share':>9}{'images':>8}{'mf weight':>11}"
    lines.append(header)
    for c, name in enumerate(statistics["class_names"]):
        line = f"{c:>3}  {name:<{width}}"
        for report in splits.values():
            entry = report["classes"][c]
            line += (
                f"{entry['pixels']:>16,}{entry['share']:>9.2%}{entry['images']:>8,}"
                f"{entry['median_frequency_weight']:>11.3f}"
            )
        lines.append(line)
    lines.append("")
    for split, report in splits.items():
        absent = ", ".join(report["absent_classes"]) or "none"
        lines.append(f"absent from {split}: {absent}")
    return "\n".join(lines)
