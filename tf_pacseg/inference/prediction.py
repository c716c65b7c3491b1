"""Segmenting a folder of images: colour masks, class indices, overlays or raw logits.

Every image runs at its own size, without resizing or padding (the network
takes any size and returns logits at the input's size): whole, or, when
`tiling` says so (by default above 4 MP), as overlapping tiles
(`tf_pacseg.inference.tiling`), which bounds the memory by the tile batch
instead of the image for every output format but `"logits"`. Unlike the
original `prediction.py`, every image of the folder is processed, not the
first 30.

Example:

```python
model = saving.load_model("model")
summary = predict_folder(model, "photos", "masks", output_format="overlay")
print(summary)
summary = predict_folder(runtimes.load_exported_model("model.onnx"), "photos", "masks")
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

from tf_pacseg import checks, constants, parallel
from tf_pacseg.files import atomic_write
from tf_pacseg.inference import forward, legend
from tf_pacseg.inference.tiling import Tiling, tiled_labels, tiled_probabilities

OUTPUT_EXTENSIONS = {"color": ".png", "index": ".png", "overlay": ".png", "logits": ".npy"}
# Threads reading images ahead of the model.
_NUM_LOADERS = 4
_PALETTE = [channel for colour in constants.VOC_PALETTE for channel in colour]
# Overlays are blended this many rows at a time, bounding their float32 temporaries.
_OVERLAY_ROWS = 256


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


def read_image(path, max_pixels=constants.DEFAULT_MAX_IMAGE_PIXELS):
    """Reads an image as uint8 RGB [H, W, 3].

    The EXIF orientation is applied (the image comes out as viewers show
    it); grayscale, palette, RGBA and other modes are converted to RGB
    (alpha is dropped).

    Args:
        path: str. The image file.
        max_pixels: int. Larger images are refused before they are decoded (a
            guard against decompression bombs). Pillow's own guard, which
            refuses images above 2 * `PIL.Image.MAX_IMAGE_PIXELS`, still
            applies unless that is set to `None`. Defaults to 178_956_970.

    Raises:
        ValueError: the file cannot be decoded or is too large, naming it.
    """
    try:
        with Image.open(path) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise ValueError(
                    f"{width}x{height} = {width * height} pixels is above the limit of "
                    f"{max_pixels} pixels (max_image_pixels, a guard against decompression "
                    "bombs; raise it for an image you trust)"
                )
            image.load()
            ImageOps.exif_transpose(image, in_place=True)
            if image.mode.startswith("I;16"):
                # 16-bit grayscale: PIL's RGB conversion would clip; keep the top 8 bits.
                gray = (np.asarray(image).astype(np.uint32) >> 8).astype(np.uint8)
                return np.repeat(gray[..., None], 3, axis=-1)
            # An RGB image is not converted: a large photo is not copied once more.
            return np.asarray(image if image.mode == "RGB" else image.convert("RGB"), np.uint8)
    except Exception as error:  # PIL raises many types for corrupt files.
        raise ValueError(f"cannot read image {path}: {error}") from error


def color_image(labels):
    """A mode 'P' PNG-ready image of class ids [H, W] with the VOC palette.

    Viewers show the VOC colours; reading it back with PIL gives the class ids.
    """
    labels = np.asarray(labels)
    if labels.size and (labels.min() < 0 or labels.max() > 255):
        raise checks.invalid(
            "labels",
            "class ids in 0..255 (the VOC palette's; use output_format='index' or 'logits' "
            "for more classes)",
            received=f"labels with ids in [{labels.min()}, {labels.max()}]",
        )
    image = Image.fromarray(labels.astype(np.uint8))  # Mode 'L' ...
    image.putpalette(_PALETTE)  # ... becomes 'P'.
    return image


def overlay_image(image, labels, opacity=constants.DEFAULT_OVERLAY_OPACITY):
    """The image blended with the VOC colours of `labels`.

    Args:
        image: uint8 [H, W, 3].
        labels: int [H, W] class ids (0..255).
        opacity: float in [0, 1]. Weight of the colour mask. Defaults to 0.5.

    Returns:
        uint8 [H, W, 3]: round((1 - opacity) * image + opacity * colour).
    """
    palette = np.asarray(constants.VOC_PALETTE, np.float32)
    labels = np.asarray(labels)
    overlay = np.empty(image.shape, np.uint8)
    for top in range(0, len(image), _OVERLAY_ROWS):
        rows = slice(top, top + _OVERLAY_ROWS)
        blended = (1.0 - opacity) * image[rows].astype(np.float32) + opacity * palette[labels[rows]]
        overlay[rows] = np.clip(np.round(blended), 0, 255)
    return overlay


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
        raise checks.invalid(
            "output_dir",
            "a folder outside the input folder, which is never written to",
            received=f"output_dir={output_dir!r}, input_dir={input_dir!r}",
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


def image_pixels(path):
    """The pixel count of an image file, read from its header (nothing is decoded).

    Raises:
        ValueError: the file is not an image, naming it.
    """
    try:
        with Image.open(path) as image:
            return image.width * image.height
    except Exception as error:  # PIL raises many types for corrupt files.
        raise ValueError(f"cannot read image {path}: {error}") from error


def predict_image(model, image, output_format=constants.DEFAULT_OUTPUT_FORMAT, tiling=None):
    """The prediction of one image, whole or as tiles as `tiling` says (logged).

    Args:
        model: a Keras segmentation model (see `predict_folder`).
        image: uint8 [H, W, 3] RGB.
        output_format: str. `"logits"` for scores, anything else for class ids.
            Defaults to `"color"`.
        tiling: `Tiling` or None. `None`: `Tiling()`, whole up to 4 MP, else
            tiles. Defaults to `None`.

    Returns:
        Class ids [H, W] (uint8 from tiles, int32 from the whole image), or
        float32 [H, W, num_classes] for `"logits"`: the logits of the whole
        image, the mean softmax probabilities of tiles.
    """
    tiling = Tiling() if tiling is None else tiling
    height, width = image.shape[:2]
    if tiling.slides(height, width):
        logging.info("Tiles for %s", tiling.describe(height, width))
        if output_format == "logits":
            return tiled_probabilities(model, image, tiling)
        return tiled_labels(model, image, tiling)
    batch = image[None].astype(np.float32)  # (1, height, width, 3): the image at its own size.
    predict = forward.scores if output_format == "logits" else forward.predict_labels
    return ops.convert_to_numpy(predict(model, batch))[0]


def _write_output(path, output_format, image, prediction, overlay_opacity, class_names):
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
            if class_names is not None:
                overlay = legend.with_legend(overlay, prediction, class_names)
            Image.fromarray(overlay).save(f, format="PNG")


def predict_folder(
    model,
    input_dir,
    output_dir,
    output_format=constants.DEFAULT_OUTPUT_FORMAT,
    overlay_opacity=constants.DEFAULT_OVERLAY_OPACITY,
    class_names=None,
    tiling=None,
    max_image_pixels=constants.DEFAULT_MAX_IMAGE_PIXELS,
    verbose=1,
):
    """Segments every image of `input_dir` into `output_dir`.

    Outputs are named after the input's stem (`foo.jpg` -> `foo.png`) and
    written atomically; files that cannot be read are reported and skipped.
    The input folder is never written to. Images that run whole are read
    ahead by threads; larger ones are read in turn, one at a time.

    Args:
        model: a Keras segmentation model (RGB 0..255 in, logits out), e.g.
            from `saving.load_model`, or an export run by its runtime
            (`runtimes.load_exported_model`).
        input_dir: str. Folder of .jpg/.jpeg/.png/.bmp images (any case).
        output_dir: str. Created if needed; must not be `input_dir` or inside it.
        output_format: str. `"color"`: PNG of VOC palette colours (mode 'P':
            the pixel values are the class ids); `"index"`: one-channel PNG of
            class ids; `"overlay"`: PNG of the image blended with the colours
            (lossless, so that class boundaries stay sharp);
            `"logits"`: float32 .npy [H, W, num_classes] (logits of whole
            images, mean probabilities of tiled ones; a whole-image array even
            when tiled). Defaults to `"color"`.
        overlay_opacity: float in [0, 1]. Weight of the colours in overlays.
            Defaults to 0.5.
        class_names: sequence of str (one per class) or None. Overlays get a
            legend strip underneath: a swatch and the name of each class they
            show (`legend.with_legend`). `None`: no legend, the overlay is
            the image's size. Defaults to `None`.
        tiling: `Tiling` or None. Whole images or tiles (see `predict_image`).
            Defaults to `None`: `Tiling()`.
        max_image_pixels: int. Larger images are skipped, reported, before
            they are decoded (see `read_image`). Defaults to 178_956_970.
        verbose: int. 1 shows a progress bar, 0 is silent. Defaults to 1.

    Returns:
        A `PredictionSummary`; `print` it for a report.

    Raises:
        FileNotFoundError: no input folder.
        ValueError: bad arguments, or a folder without images.
    """
    checks.one_of("output_format", output_format, constants.OUTPUT_FORMATS)
    checks.in_unit_interval("overlay_opacity", overlay_opacity)
    checks.positive_int("max_image_pixels", max_image_pixels)
    tiling = Tiling() if tiling is None else tiling
    check_folders(input_dir, output_dir)
    paths = list_images(input_dir)
    if not paths:
        raise ValueError(
            f"No images in {input_dir!r}: expected files ending in "
            f"{', '.join(constants.IMAGE_EXTENSIONS)} (any case)."
        )
    os.makedirs(output_dir, exist_ok=True)
    names = output_names(paths, OUTPUT_EXTENSIONS[output_format])

    def load(path, ahead=True):
        try:
            if ahead and image_pixels(path) > tiling.max_whole_pixels:
                return None, None  # Read in turn: big images are not held ahead.
            return read_image(path, max_image_pixels), None
        except ValueError as error:
            return None, str(error)

    summary = PredictionSummary(input_dir, output_dir, output_format, [], [])
    progbar = keras.utils.Progbar(
        len(paths), verbose=verbose, unit_name="image", stateful_metrics=["images/s"]
    )
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(_NUM_LOADERS) as executor:
        loaded = parallel.ordered_map(load, paths, executor, window=4 * _NUM_LOADERS)
        for done, (path, name, (image, error)) in enumerate(
            zip(paths, names, loaded, strict=True), 1
        ):
            if image is None and error is None:
                image, error = load(path, ahead=False)
            if error is not None:
                logging.warning("Skipping %s", error)
                summary.failed.append((path, error))
            else:
                output_path = os.path.join(output_dir, name)
                prediction = predict_image(model, image, output_format, tiling)
                _write_output(
                    output_path, output_format, image, prediction, overlay_opacity, class_names
                )
                del prediction  # Not held while the next image runs.
                summary.written.append(output_path)
            rate = done / max(time.perf_counter() - start, 1e-9)
            progbar.update(done, values=[("images/s", rate)])
    return summary
