"""A small procedural dataset in PASCAL VOC's folder layout, for tests and the demo.

Each image is a textured background (class 0) with one to three rectangles,
ellipses or triangles of foreground classes. Every class has its own strong
colour and texture, so a tiny network learns it in minutes on a CPU, and, as in
VOC, a few pixels of void (255) line every object boundary. Output is a
deterministic function of the seed.

Example:

```python
ids = make_synthetic_voc("/tmp/voc", num_train=32, num_val=8)
# /tmp/voc/JPEGImages/train_0000.jpg, /tmp/voc/SegmentationClassAug/train_0000.png, ...
```
"""

import colorsys
import os

import cv2
import numpy as np
from PIL import Image

from tf_pacseg import checks, constants

# Strong, far-apart colours for the first foreground classes (RGB).
# Images per split by default: enough for the test suite's short runs.
NUM_TRAIN, NUM_VAL = 32, 8

_BASE_COLOURS = ((220, 30, 30), (30, 180, 40), (40, 70, 230), (240, 210, 20))
# Background: a dull grey-brown, far from every class colour.
_BACKGROUND_COLOUR = (120, 110, 100)
_SHAPES = ("rectangle", "ellipse", "triangle")
# Width in pixels of the void band around object boundaries (VOC's is ~5).
_VOID_WIDTH = 4
_SPLIT_CODES = {"train": 0, "val": 1}


def class_colour(class_id):
    """The RGB colour that foreground class `class_id` (1-based) is drawn in."""
    if class_id <= len(_BASE_COLOURS):
        return _BASE_COLOURS[class_id - 1]
    # Further classes: evenly spaced saturated hues, offset from the base four.
    hue = ((class_id - len(_BASE_COLOURS)) * 0.618034 + 0.08) % 1.0
    return tuple(int(255 * c) for c in colorsys.hsv_to_rgb(hue, 0.85, 0.9))


def _texture(class_id, yy, xx, rng):
    """A per-class brightness pattern in [-1, 1], with a random phase per image."""
    phase = rng.uniform(0, 2 * np.pi)
    period = 4 + class_id % 3
    kind = class_id % 4
    if kind == 0:  # Horizontal stripes.
        return np.sign(np.sin(2 * np.pi * yy / period + phase))
    if kind == 1:  # Checkerboard.
        return ((yy // period + xx // period) % 2) * 2.0 - 1.0
    if kind == 2:  # Diagonal stripes.
        return np.sign(np.sin(2 * np.pi * (yy + xx) / (1.5 * period) + phase))
    return np.sin(2 * np.pi * xx / period + phase) * np.cos(2 * np.pi * yy / period)  # Dots.


def _shape_mask(kind, height, width, rng):
    """A uint8 mask of one random shape covering roughly 10-40% of the image."""
    mask = np.zeros((height, width), np.uint8)
    half_h = int(rng.uniform(0.15, 0.35) * height)
    half_w = int(rng.uniform(0.15, 0.35) * width)
    cy = int(rng.integers(half_h, height - half_h))
    cx = int(rng.integers(half_w, width - half_w))
    if kind == "rectangle":
        cv2.rectangle(mask, (cx - half_w, cy - half_h), (cx + half_w, cy + half_h), 1, -1)
    elif kind == "ellipse":
        cv2.ellipse(mask, (cx, cy), (half_w, half_h), float(rng.uniform(0, 180)), 0, 360, 1, -1)
    else:
        apex_x = cx + int(rng.uniform(-1, 1) * half_w)
        points = np.array(
            [[apex_x, cy - half_h], [cx - half_w, cy + half_h], [cx + half_w, cy + half_h]]
        )
        cv2.fillPoly(mask, [points.astype(np.int32)], 1)
    return mask.astype(bool)


def make_sample(rng, height, width, num_foreground_classes=4):
    """One synthetic image and its label.

    Args:
        rng: `np.random.Generator`. The only source of randomness.
        height: int. Image height in pixels.
        width: int. Image width in pixels.
        num_foreground_classes: int. Objects take classes 1..this. Defaults to 4.

    Returns:
        (image, label): uint8 [H, W, 3] RGB and uint8 [H, W] class indices,
        with `IGNORE_LABEL` on object boundaries.
    """
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    # Background: a gentle random gradient plus fine noise.
    gradient = (yy / height - 0.5) * rng.uniform(-30, 30) + (xx / width - 0.5) * rng.uniform(
        -30, 30
    )
    noise = rng.normal(0, 8, (height, width))
    image = np.array(_BACKGROUND_COLOUR, np.float32) + (gradient + noise)[..., None]
    label = np.zeros((height, width), np.uint8)
    for _ in range(int(rng.integers(1, 4))):
        class_id = int(rng.integers(1, num_foreground_classes + 1))
        mask = _shape_mask(_SHAPES[rng.integers(len(_SHAPES))], height, width, rng)
        colour = np.array(class_colour(class_id), np.float32)
        shade = colour + 25.0 * _texture(class_id, yy, xx, rng)[..., None]
        image[mask] = shade[mask]
        label[mask] = class_id
    # Void wherever a small window sees two classes: a band _VOID_WIDTH wide.
    kernel = np.ones((_VOID_WIDTH + 1, _VOID_WIDTH + 1), np.uint8)
    boundary = cv2.dilate(label, kernel) != cv2.erode(label, kernel)
    label[boundary] = constants.IGNORE_LABEL
    return np.clip(image, 0, 255).astype(np.uint8), label


def _palette_png(label):
    """VOC's SegmentationClass form: a mode 'P' PNG whose indices are the classes."""
    image = Image.fromarray(label)
    image.putpalette([c for rgb in constants.VOC_PALETTE for c in rgb])
    return image


def make_synthetic_voc(
    output_dir,
    num_train=NUM_TRAIN,
    num_val=NUM_VAL,
    seed=0,
    num_classes=constants.NUM_CLASSES,
    num_foreground_classes=4,
    min_size=60,
    max_size=120,
):
    """Writes a synthetic dataset in VOC's layout.

    Files: `JPEGImages/<id>.jpg` (quality 95), `SegmentationClassAug/<id>.png`
    (one-channel indices), `SegmentationClass/<id>.png` (the same labels as a
    VOC palette PNG) and `ImageSets/Segmentation/{train,val}.txt`.

    Args:
        output_dir: str. Created if needed; existing files are overwritten.
        num_train: int. Training images. Defaults to 32.
        num_val: int. Validation images. Defaults to 8.
        seed: int. The same seed writes the same files. Defaults to 0.
        num_classes: int. Classes of the task; objects use classes
            1..min(num_foreground_classes, num_classes - 1). Defaults to 21.
        num_foreground_classes: int. See `num_classes`. Defaults to 4.
        min_size: int. Smallest image height/width. Defaults to 60.
        max_size: int. Largest image height/width. Defaults to 120.

    Returns:
        `{"train": ids, "val": ids}`.
    """
    if num_classes < 2:
        raise checks.invalid(
            "num_classes", "at least 2 (background and one object class)", num_classes
        )
    if not 20 <= min_size <= max_size:
        raise checks.invalid(
            "min_size",
            "20 <= min_size <= max_size",
            received=f"min_size={min_size}, max_size={max_size}",
        )
    checks.non_negative_int("num_train", num_train)
    checks.non_negative_int("num_val", num_val)
    num_foreground = min(num_foreground_classes, num_classes - 1)
    folders = {
        name: os.path.join(output_dir, name)
        for name in ("JPEGImages", "SegmentationClassAug", "SegmentationClass")
    }
    list_dir = os.path.join(output_dir, "ImageSets", "Segmentation")
    for folder in (*folders.values(), list_dir):
        os.makedirs(folder, exist_ok=True)
    ids = {}
    for split, count in (("train", num_train), ("val", num_val)):
        ids[split] = [f"{split}_{i:04d}" for i in range(count)]
        for index, sample_id in enumerate(ids[split]):
            # One generator per sample: a sample does not depend on the counts.
            rng = np.random.default_rng([seed, _SPLIT_CODES[split], index])
            height, width = (int(v) for v in rng.integers(min_size, max_size + 1, 2))
            image, label = make_sample(rng, height, width, num_foreground)
            jpeg_path = os.path.join(folders["JPEGImages"], sample_id + ".jpg")
            cv2.imwrite(jpeg_path, image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
            cv2.imwrite(os.path.join(folders["SegmentationClassAug"], sample_id + ".png"), label)
            _palette_png(label).save(os.path.join(folders["SegmentationClass"], sample_id + ".png"))
        with open(os.path.join(list_dir, f"{split}.txt"), "w", encoding="utf-8") as f:
            f.writelines(i + "\n" for i in ids[split])
    return ids
