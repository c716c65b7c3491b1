"""A VOC-style folder: id lists, sample paths, and loading and checking its samples.

The layout is that of VOC2012 plus the augmented labels: `<image_dir>/<id>.jpg`,
`<label_dir>/<id>.png` and list files of ids, one split per list. `load_sample`
is the one reader of such folders: the converter (`conversion.convert_voc`)
writes what it returns into records, and folder evaluation encodes it as a
record too (docs/design.md §5).
"""

# The converter's spawned worker processes import this module to run
# `_load_task`: it imports neither TensorFlow nor Keras.
import io
import os
import posixpath

import numpy as np
from PIL import Image

from tf_pacseg import constants, parallel
from tf_pacseg.data import label_png
from tf_pacseg.data.samples import (
    BAD_IMAGE,
    MISSING_IMAGE,
    MISSING_LABEL,
    SIZE_MISMATCH,
    InvalidSampleError,
    Sample,
)


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


def _image_size(data, path):
    """(height, width) of JPEG bytes, after checking that they decode."""
    if not data.startswith(label_png.JPEG_MAGIC):
        kind = " (it is a PNG)" if data.startswith(label_png.PNG_MAGIC) else ""
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


def load_sample(
    sample_id,
    image_path,
    label_path,
    num_classes=constants.NUM_CLASSES,
    ignore_label=constants.IGNORE_LABEL,
    label_colors=None,
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
        label_colors: `label_png.LabelColors` or None. Read labels as colour
            masks through this table; a missing label PNG with a `.jpg`
            beside it is then named as JPEG-compressed. Defaults to `None`.

    Returns:
        A `Sample` with the image file's exact bytes and the label re-encoded
        as a one-channel PNG of class indices.

    Raises:
        InvalidSampleError: with `reason` in `REASONS` and a message naming the file.
    """
    if not os.path.isfile(image_path):
        raise InvalidSampleError(MISSING_IMAGE, f"image file {image_path} does not exist.")
    if not os.path.isfile(label_path):
        jpeg_path = label_colors and _jpeg_beside(label_path)
        if not jpeg_path or os.path.abspath(jpeg_path) == os.path.abspath(image_path):
            raise InvalidSampleError(MISSING_LABEL, f"label file {label_path} does not exist.")
        label_path = jpeg_path  # Decoding names it JPEG-compressed.
    with open(image_path, "rb") as f:
        image_jpeg = f.read()
    height, width = _image_size(image_jpeg, image_path)
    with open(label_path, "rb") as f:
        label = label_png.decode_label_png(f.read(), label_path, label_colors)
    if label.shape != (height, width):
        raise InvalidSampleError(
            SIZE_MISMATCH,
            f"label file {label_path} is {label.shape[0]}x{label.shape[1]} (height x width) "
            f"but image file {image_path} is {height}x{width}.",
        )
    label_png.check_label_values(label, num_classes, f"label file {label_path}", ignore_label)
    png = label_png.encode_label_png(label.astype(np.uint8))
    return Sample(sample_id, image_jpeg, png, height, width)


def _jpeg_beside(path):
    """A `.jpg` or `.jpeg` file (any case) with `path`'s stem, else `None`."""
    stem = os.path.splitext(path)[0]
    candidates = (stem + e for ext in (".jpg", ".jpeg") for e in (ext, ext.upper()))
    return next((c for c in candidates if os.path.isfile(c)), None)


def _load_task(task):
    """Pool entry point: a `Sample`, or the `InvalidSampleError` (returned, not raised)."""
    try:
        return load_sample(*task)
    except InvalidSampleError as error:
        return error


def load_samples(tasks, executor=None):
    """`load_sample(*task)` for each task, in order: a `Sample` or its `InvalidSampleError`.

    Args:
        tasks: iterable of `load_sample` argument tuples.
        executor: a `concurrent.futures.Executor` that decodes ahead, or
            `None` to decode in this thread. Defaults to `None`.
    """
    return parallel.ordered_map(_load_task, tasks, executor)
