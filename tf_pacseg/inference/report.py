"""What an evaluation reports: the console table, the JSON files and the confusion-matrix PNG.

Every number comes from a confusion matrix (rows = ground truth, columns =
prediction) through `tf_pacseg.inference.metrics`, so the table, the JSON
and the PNG agree. Classes are named by `class_names` (see
`tf_pacseg.data.class_names`). The PNG is drawn with Pillow and NumPy alone.

Example:

```python
result = result_from_confusion_matrix(cm, num_images=1449)
print(format_result(result))
write_json(result, "val.json")
write_confusion_png(cm, VOC_CLASS_NAMES, "confusion.png")
```
"""

import json
import math

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from tf_pacseg import checks
from tf_pacseg.data import class_names as class_names_lib
from tf_pacseg.files import atomic_write
from tf_pacseg.inference import metrics

# Per-class scores of the result dict and the table: (result key suffix, column title, function).
_PER_CLASS = (
    ("iou", "IoU", metrics.per_class_iou),
    ("precision", "precision", metrics.per_class_precision),
    ("recall", "recall", metrics.per_class_recall),
    ("dice", "Dice", metrics.per_class_dice),
)
# The heat map runs from white (0) to this dark blue (1, e.g. a perfect class's diagonal).
_HEAT_LOW, _HEAT_HIGH = np.array([255.0, 255.0, 255.0]), np.array([8.0, 48.0, 107.0])
_NO_PIXELS = (224, 224, 224)  # Cells of a row without labelled pixels.
_INK, _GRID = (0, 0, 0), (190, 190, 190)


def class_names_for(class_names, num_classes):
    """`class_names` as a tuple, checked to be one per class; `None` gives the default names.

    The default is `class_names.default_class_names`: VOC's for 21 classes,
    else `class_0`, `class_1`, ...
    """
    if class_names is None:
        return class_names_lib.default_class_names(num_classes)
    names = tuple(class_names)
    if len(names) != num_classes:
        raise checks.invalid(
            "class_names",
            f"one name per class: {num_classes} names",
            received=f"{len(names)} names",
        )
    return names


def _optional(value):
    """A JSON-able float, None for NaN (a class neither labelled nor predicted)."""
    return None if math.isnan(value) else float(value)


def result_from_confusion_matrix(confusion_matrix, num_images, class_names=None):
    """The result dict of a confusion matrix (rows = ground truth, columns = prediction).

    Args:
        confusion_matrix: int array-like [C, C].
        num_images: int. Number of images counted.
        class_names: sequence of C str, or None for the default names (see
            `class_names_for`). Defaults to `None`.

    Returns:
        dict with `miou`, `mean_precision`, `mean_recall`, `mean_dice`,
        `pixel_accuracy`, `per_class_iou`, `per_class_precision`,
        `per_class_recall`, `per_class_dice` (each {class name: score, or None
        for a class neither labelled nor predicted}), `confusion_matrix` (list
        of lists of ints) and `num_images`. The means are over the classes
        present, as `metrics` says.
    """
    cm = np.asarray(confusion_matrix, np.int64)
    names = class_names_for(class_names, cm.shape[0])
    result = {
        "miou": metrics.mean_iou(cm),
        "mean_precision": metrics.mean_precision(cm),
        "mean_recall": metrics.mean_recall(cm),
        "mean_dice": metrics.mean_dice(cm),
        "pixel_accuracy": metrics.pixel_accuracy(cm),
    }
    for key, _, score in _PER_CLASS:
        values = score(cm)
        result[f"per_class_{key}"] = {
            name: _optional(value) for name, value in zip(names, values, strict=True)
        }
    result["confusion_matrix"] = cm.tolist()
    result["num_images"] = int(num_images)
    return result


def format_result(result):
    """A printable table of IoU, precision, recall and Dice per class, then the means.

    Args:
        result: dict of `result_from_confusion_matrix`.
    """
    names = list(result["per_class_iou"])
    width = max(len("class"), *(len(name) for name in names))
    header = "".join(f"{title:>11}" for _, title, _ in _PER_CLASS)
    lines = ["Per class:", f"  {'#':>3} {'class':<{width}}{header}"]
    for index, name in enumerate(names):
        scores = [result[f"per_class_{key}"][name] for key, _, _ in _PER_CLASS]
        if scores[0] is None:
            row = "     absent (neither labelled nor predicted)"
        else:
            row = "".join(f"{score:>11.4f}" for score in scores)
        lines.append(f"  {index:3d} {name:<{width}}{row}")
    means = (result[key] for key in ("miou", "mean_precision", "mean_recall", "mean_dice"))
    lines.append(f"  {'':>3} {'mean':<{width}}" + "".join(f"{mean:>11.4f}" for mean in means))
    for title, key in (
        ("mean IoU", "miou"),
        ("mean Dice", "mean_dice"),
        ("pixel accuracy", "pixel_accuracy"),
    ):
        lines.append(f"{title + ':':<16}{result[key]:.4f} ({100 * result[key]:.2f}%)")
    lines.append(f"{'images:':<16}{result['num_images']}")
    return "\n".join(lines)


def write_json(value, path):
    """Writes `value` as indented JSON, atomically (NaN is refused)."""
    with atomic_write(path, "w") as f:
        json.dump(value, f, indent=2, allow_nan=False)
        f.write("\n")


def per_image_results(confusion_matrices, ids=None):
    """Each image's mIoU and pixel accuracy, worst first.

    Args:
        confusion_matrices: sequence of [C, C] int arrays, one per image in
            evaluation order.
        ids: sequence of str (image ids, in the same order), or None.
            Defaults to `None`.

    Returns:
        A list of dicts {`index`, `id` (None without ids), `miou`,
        `pixel_accuracy`}, sorted by mIoU, then pixel accuracy, then index.
        An image's mIoU is over the classes present in it (its labels or its
        prediction); an image without counted pixels scores 0.
    """
    if ids is not None and len(ids) != len(confusion_matrices):
        raise checks.invalid(
            "ids",
            f"one id per image ({len(confusion_matrices)})",
            received=f"{len(ids)} ids",
        )
    entries = [
        {
            "index": index,
            "id": None if ids is None else ids[index],
            "miou": metrics.mean_iou(cm),
            "pixel_accuracy": metrics.pixel_accuracy(cm),
        }
        for index, cm in enumerate(confusion_matrices)
    ]
    return sorted(entries, key=lambda e: (e["miou"], e["pixel_accuracy"], e["index"]))


def heat_colour(fraction):
    """The RGB of a fraction in [0, 1] in the confusion PNG: white (0) to dark blue (1)."""
    colour = _HEAT_LOW + float(fraction) * (_HEAT_HIGH - _HEAT_LOW)
    return tuple(int(c) for c in np.round(colour))


def _text_width(draw, text, font):
    left, _, right, _ = draw.textbbox((0, 0), text, font=font)
    return right - left


def _draw_column_labels(image, names, left, top, cell, font):
    """Each name written bottom-up above its column, ending at `top`."""
    draw = ImageDraw.Draw(image)
    for column, name in enumerate(names):
        width = _text_width(draw, name, font) + 2
        text = Image.new("L", (width, cell), 0)
        ImageDraw.Draw(text).text((1, cell // 2), name, fill=255, font=font, anchor="lm")
        text = text.rotate(90, expand=True)  # (cell, width), reading upwards.
        image.paste(_INK, (left + column * cell, top - text.height - 4), text)


def confusion_image(confusion_matrix, class_names):
    """The row-normalised confusion matrix as a labelled heat map (a PIL RGB image).

    Row r, column c shows the share of class r's labelled pixels predicted
    as c, coloured by `heat_colour` and written as a percentage where it
    rounds to 1% or more. Rows without labelled pixels are grey.

    Args:
        confusion_matrix: int array-like [C, C], rows = ground truth.
        class_names: sequence of C str.
    """
    cm = np.asarray(confusion_matrix, np.float64)
    names = class_names_for(class_names, cm.shape[0])
    rows = cm.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        shares = np.where(rows > 0, cm / rows, np.nan)
    num_classes = len(names)
    cell = int(np.clip(640 // num_classes, 10, 28))
    font = ImageFont.load_default()
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_width = max(_text_width(measure, name, font) for name in names) + 10
    title = "rows: ground truth, columns: prediction (% of each row; grey: no labelled pixels)"
    left, top = label_width, label_width + 24  # The grid's corner.
    width = max(left + num_classes * cell + 8, _text_width(measure, title, font) + 16)
    image = Image.new("RGB", (width, top + num_classes * cell + 8), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    draw.text((8, 6), title, fill=_INK, font=font)
    _draw_column_labels(image, names, left, top, cell, font)
    for row, name in enumerate(names):
        y = top + row * cell
        draw.text((left - 6, y + cell // 2), name, fill=_INK, font=font, anchor="rm")
        for column in range(num_classes):
            share = shares[row, column]
            fill = _NO_PIXELS if math.isnan(share) else heat_colour(share)
            x = left + column * cell
            draw.rectangle((x, y, x + cell, y + cell), fill=fill, outline=_GRID)
            percent = 0 if math.isnan(share) else round(100 * share)
            if cell >= 20 and percent >= 1:
                ink = (255, 255, 255) if share > 0.5 else _INK
                centre = (x + cell // 2 + 1, y + cell // 2 + 1)
                draw.text(centre, str(percent), fill=ink, font=font, anchor="mm")
    return image


def write_confusion_png(confusion_matrix, class_names, path):
    """Writes `confusion_image` as a PNG, atomically."""
    image = confusion_image(confusion_matrix, class_names)
    with atomic_write(path, "wb") as f:
        image.save(f, format="PNG")
