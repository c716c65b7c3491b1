"""Segmenting a folder of images: colour masks, class indices, overlays or raw logits.

Every image runs at its own size, without resizing or padding (the network
takes any size and returns logits at the input's size). Unlike the original
`prediction.py`, every image of the folder is processed, not the first 30.

Example:

```python
model = saving.load_model("model")
summary = predict_folder(model, "photos", "masks", output_format="overlay")
print(summary)
```
"""

import concurrent.futures
import dataclasses
import os
import time

import keras
import numpy as np
from absl import logging
from keras import ops
from PIL import Image, ImageOps

from tf_pacseg import checks, constants
from tf_pacseg.data import voc
from tf_pacseg.files import atomic_write
from tf_pacseg.inference import forward

OUTPUT_FORMATS = ("color", "index", "overlay", "logits")
OUTPUT_EXTENSIONS = {"color": ".png", "index": ".png", "overlay": ".png", "logits": ".npy"}
DEFAULT_OVERLAY_OPACITY = 0.5
# Threads reading images ahead of the model.
_NUM_LOADERS = 4
_PALETTE = [channel for colour in constants.VOC_PALETTE for channel in colour]


def list_images(input_dir):
    """Image files of a folder (not its subfolders), sorted by name.

    Files ending in .jpg, .jpeg, .png or .bmp, in any case, count; hidden
    files (names starting with ".") do not.

    Returns:
        A list of paths.
    """
    names = sorted(
        name
        for name in os.listdir(input_dir)
        if not name.startswith(".")
        and os.path.splitext(name)[1].lower() in constants.IMAGE_EXTENSIONS
        and os.path.isfile(os.path.join(input_dir, name))
    )
    return [os.path.join(input_dir, name) for name in names]


def read_image(path):
    """Reads an image as uint8 RGB [H, W, 3].

    The EXIF orientation is applied (the image comes out as viewers show
    it); grayscale, palette, RGBA and other modes are converted to RGB
    (alpha is dropped).

    Raises:
        ValueError: the file cannot be decoded, naming it.
    """
    try:
        with Image.open(path) as image:
            image.load()
            image = ImageOps.exif_transpose(image)
            if image.mode.startswith("I;16"):
                # 16-bit grayscale: PIL's RGB conversion would clip; keep the top 8 bits.
                gray = (np.asarray(image).astype(np.uint32) >> 8).astype(np.uint8)
                return np.repeat(gray[..., None], 3, axis=-1)
            return np.asarray(image.convert("RGB"), np.uint8)
    except Exception as error:  # PIL raises many types for corrupt files.
        raise ValueError(f"cannot read image {path}: {error}") from error


def color_image(labels):
    """A mode 'P' PNG-ready image of class ids [H, W] with the VOC palette.

    Viewers show the VOC colours; reading it back with PIL gives the class ids.
    """
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() > 255):
        raise ValueError(
            "Invalid value for argument `labels`. Expected class ids in 0..255 (the VOC "
            "palette's; use output_format='index' or 'logits' for more classes). Received: "
            f"labels with ids in [{labels.min()}, {labels.max()}]"
        )
    image = Image.fromarray(labels.astype(np.uint8))  # Mode 'L' ...
    image.putpalette(_PALETTE)  # ... becomes 'P'.
    return image


def overlay_image(image, labels, opacity=DEFAULT_OVERLAY_OPACITY):
    """The image blended with the VOC colours of `labels`.

    Args:
        image: uint8 [H, W, 3].
        labels: int [H, W] class ids (0..255).
        opacity: float in [0, 1]. Weight of the colour mask. Defaults to 0.5.

    Returns:
        uint8 [H, W, 3]: round((1 - opacity) * image + opacity * colour).
    """
    colours = np.asarray(constants.VOC_PALETTE, np.float32)[np.asarray(labels)]
    blended = (1.0 - opacity) * image.astype(np.float32) + opacity * colours
    return np.clip(np.round(blended), 0, 255).astype(np.uint8)


def output_names(paths, extension):
    """Output file name of each input: its stem plus `extension`.

    Inputs whose stems collide (`a.jpg`, `a.png`) keep their whole name
    instead (`a.jpg.png`, `a.png.png`), so that no output overwrites another.

    Returns:
        A list of names, in the order of `paths`.
    """
    stems = [os.path.splitext(os.path.basename(p))[0] for p in paths]
    counts = {}
    for stem in stems:
        counts[stem.lower()] = counts.get(stem.lower(), 0) + 1
    return [
        (stem if counts[stem.lower()] == 1 else os.path.basename(path)) + extension
        for path, stem in zip(paths, stems, strict=True)
    ]


def check_folders(input_dir, output_dir):
    """Raises unless `input_dir` exists and `output_dir` is neither it nor inside it."""
    if not os.path.isdir(input_dir):
        raise FileNotFoundError(f"The input folder {input_dir!r} does not exist.")
    real_input, real_output = os.path.realpath(input_dir), os.path.realpath(output_dir)
    if os.path.commonpath([real_input, real_output]) == real_input:
        raise ValueError(
            f"Invalid value for argument `output_dir`: it must not be the input folder or "
            f"inside it (the input folder is never written to). Received: "
            f"output_dir={output_dir!r}, input_dir={input_dir!r}"
        )


@dataclasses.dataclass
class PredictionSummary:
    """What `predict_folder` did: files written, and inputs skipped with why."""

    input_dir: str
    output_dir: str
    output_format: str
    written: list  # output paths
    failed: list  # (input path, message)

    def __str__(self):
        total = len(self.written) + len(self.failed)
        lines = [
            f"wrote {len(self.written)} of {total} images as {self.output_format} to "
            f"{self.output_dir}"
        ]
        if self.failed:
            lines.append(f"skipped {len(self.failed)} unreadable files:")
            lines.extend(f"  {message}" for _, message in self.failed)
        return "\n".join(lines)


def _write_output(path, output_format, image, prediction, overlay_opacity):
    with atomic_write(path, "wb") as f:
        if output_format == "logits":
            np.save(f, prediction)
        elif output_format == "color":
            color_image(prediction).save(f, format="PNG")
        elif output_format == "index":
            dtype = np.uint8 if prediction.max(initial=0) < 256 else np.uint16
            Image.fromarray(prediction.astype(dtype)).save(f, format="PNG")
        else:
            overlay = overlay_image(image, prediction, overlay_opacity)
            Image.fromarray(overlay).save(f, format="PNG")


def predict_folder(
    model,
    input_dir,
    output_dir,
    output_format="color",
    overlay_opacity=DEFAULT_OVERLAY_OPACITY,
    verbose=1,
):
    """Segments every image of `input_dir` into `output_dir`.

    Outputs are named after the input's stem (`foo.jpg` -> `foo.png`) and
    written atomically; files that cannot be read are reported and skipped.
    The input folder is never written to.

    Args:
        model: a Keras segmentation model (RGB 0..255 in, logits out), e.g.
            from `saving.load_model`.
        input_dir: str. Folder of .jpg/.jpeg/.png/.bmp images (any case).
        output_dir: str. Created if needed; must not be `input_dir` or inside it.
        output_format: str. `"color"`: PNG of VOC palette colours (mode 'P':
            the pixel values are the class ids); `"index"`: one-channel PNG of
            class ids; `"overlay"`: PNG of the image blended with the colours
            (lossless, so that class boundaries stay sharp);
            `"logits"`: float32 .npy [H, W, num_classes]. Defaults to `"color"`.
        overlay_opacity: float in [0, 1]. Weight of the colours in overlays.
            Defaults to 0.5.
        verbose: int. 1 shows a progress bar, 0 is silent. Defaults to 1.

    Returns:
        A `PredictionSummary`; `print` it for a report.

    Raises:
        FileNotFoundError: no input folder.
        ValueError: bad arguments, or a folder without images.
    """
    checks.one_of("output_format", output_format, OUTPUT_FORMATS)
    checks.in_unit_interval("overlay_opacity", overlay_opacity)
    check_folders(input_dir, output_dir)
    paths = list_images(input_dir)
    if not paths:
        raise ValueError(
            f"No images in {input_dir!r}: expected files ending in "
            f"{', '.join(constants.IMAGE_EXTENSIONS)} (any case)."
        )
    os.makedirs(output_dir, exist_ok=True)
    predict = forward.scores if output_format == "logits" else forward.predict_labels
    names = output_names(paths, OUTPUT_EXTENSIONS[output_format])

    def load(path):
        try:
            return read_image(path), None
        except ValueError as error:
            return None, str(error)

    summary = PredictionSummary(input_dir, output_dir, output_format, [], [])
    progbar = keras.utils.Progbar(
        len(paths), verbose=verbose, unit_name="image", stateful_metrics=["images/s"]
    )
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(_NUM_LOADERS) as executor:
        loaded = voc.ordered_map(load, paths, executor, window=4 * _NUM_LOADERS)
        for done, (path, name, (image, error)) in enumerate(
            zip(paths, names, loaded, strict=True), 1
        ):
            if error is not None:
                logging.warning("Skipping %s", error)
                summary.failed.append((path, error))
            else:
                # Each image at its own size: (1, height, width, ...) -> (height, width, ...).
                prediction = ops.convert_to_numpy(predict(model, image[None].astype(np.float32)))[0]
                output_path = os.path.join(output_dir, name)
                _write_output(output_path, output_format, image, prediction, overlay_opacity)
                summary.written.append(output_path)
            rate = done / max(time.perf_counter() - start, 1e-9)
            progbar.update(done, values=[("images/s", rate)])
    return summary
