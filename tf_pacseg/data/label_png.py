"""Label PNGs: decoding (index, palette or colour) to class indices, checks and encoding.

Without a colour table, one-channel PNGs hold the class ids and RGB PNGs are
read through the VOC palette (VOC's own SegmentationClass). With one
(`LabelColors`, from `load_label_colors`), every label is a colour mask: each
pixel's colour must be a class's colour, or an ignore colour (stored as the
ignore label); anything else, a JPEG file or a mask whose edges were blended
by JPEG compression, makes the sample invalid.
"""

import dataclasses
import io
import re

import cv2
import numpy as np
from PIL import Image

from tf_pacseg import checks, constants
from tf_pacseg.data.samples import (
    BAD_LABEL,
    BAD_LABEL_VALUES,
    LOSSY_LABEL,
    UNKNOWN_LABEL_COLORS,
    InvalidSampleError,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"
# `--label_colors=voc`: the VOC palette.
VOC = "voc"

# Colour -> class id for RGB label PNGs: 0xRRGGBB codes of the VOC palette, sorted.
_PALETTE_CODES = np.array([(r << 16) | (g << 8) | b for r, g, b in constants.VOC_PALETTE])
_PALETTE_ORDER = np.argsort(_PALETTE_CODES)
_SORTED_PALETTE_CODES = _PALETTE_CODES[_PALETTE_ORDER]

# A mask with this many distinct colours outside its table is taken for a
# lossy copy: a wrong or incomplete table leaves a few unknown colours, JPEG
# compression (or resizing with interpolation) hundreds, blended at every edge.
_LOSSY_MIN_UNKNOWN_COLOURS = 16
# Unknown colours named in a message, most frequent first.
_LISTED_COLOURS = 3
# Said when a label read as a colour mask holds wide values, not colours.
_INDEX_LABEL_HINT = "Labels of class indices are read without --label_colors (`label_colors=None`)."
_COLOUR_LINE = re.compile(r"(?:(ignore)\s*:)?\s*(\d+)\s*[,\s]\s*(\d+)\s*[,\s]\s*(\d+)", re.I)


@dataclasses.dataclass(frozen=True)
class LabelColors:
    """The colour of each class in RGB label masks, and of the pixels left out.

    Attributes:
        colors: tuple of (r, g, b). `colors[i]` is class `i`'s colour.
        ignore_colors: tuple of (r, g, b). Colours stored as `ignore_label`.
        ignore_label: int. The label of pixels left out.
        source: str. Where the colours come from, for messages.
    """

    colors: tuple
    ignore_colors: tuple = ()
    ignore_label: int = constants.IGNORE_LABEL
    source: str = "the VOC palette"


def load_label_colors(spec, num_classes, ignore_label=constants.IGNORE_LABEL):
    """The `LabelColors` that `spec` asks for.

    Args:
        spec: str. `"voc"` for the first `num_classes` colours of the VOC
            palette (and its colour of `ignore_label`, (224, 224, 192) for
            255, when that is not a class), else the path of a colours file:
            one `r,g,b` line per class in class order (class 0 first), and
            any number of `ignore: r,g,b` lines for colours of pixels left
            out. Commas or spaces separate the numbers; blank lines and
            `#` comments are skipped.
        num_classes: int. How many class colours there must be (at most 256).
        ignore_label: int. The label that ignore colours become. Defaults to 255.

    Raises:
        ValueError: naming the file and line: an unreadable file, a line
            that is not a colour, a colour given twice, or a count of class
            colours other than `num_classes`.
    """
    # Labels are stored as uint8.
    checks.int_in_range("num_classes", num_classes, 1, len(constants.VOC_PALETTE))
    checks.int_in_range("ignore_label", ignore_label, 0, 255)
    if spec == VOC:
        ignore = (constants.VOC_PALETTE[ignore_label],) if ignore_label >= num_classes else ()
        return LabelColors(constants.VOC_PALETTE[:num_classes], ignore, ignore_label)
    colors, ignore_colors = _read_colours_file(spec)
    if len(colors) != num_classes:
        raise ValueError(
            f"The label colours file {spec!r} has {len(colors)} class colours, but there are "
            f"{num_classes} classes (`num_classes`): give one `r,g,b` line per class."
        )
    return LabelColors(colors, ignore_colors, ignore_label, f"the label colours file {spec!r}")


def _read_colours_file(path):
    """(class colours, ignore colours) of a colours file, checked line by line."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"Cannot read the label colours file {path!r}: {error}") from error
    colors, ignore_colors, seen = [], [], {}
    for number, line in enumerate(lines, start=1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        match = _COLOUR_LINE.fullmatch(text)
        colour = match and tuple(int(v) for v in match.group(2, 3, 4))
        if not colour or max(colour) > 255:
            raise ValueError(
                f"The label colours file {path!r}, line {number}: expected `r,g,b` (three "
                f"ints in [0, 255]) or `ignore: r,g,b`. Received: {line!r}"
            )
        owner = "the ignore label" if match.group(1) else f"class {len(colors)}"
        if colour in seen:
            raise ValueError(
                f"The label colours file {path!r} gives the colour {colour} to {seen[colour]} "
                f"and, on line {number}, to {owner}: each colour must mean one label."
            )
        seen[colour] = f"{owner} (line {number})"
        (ignore_colors if match.group(1) else colors).append(colour)
    if not colors:
        raise ValueError(
            f"The label colours file {path!r} holds no class colour: expected one `r,g,b` "
            "line per class."
        )
    return tuple(colors), tuple(ignore_colors)


def _open_image(data, path, kind):
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
    except Exception as error:  # PIL raises several types for corrupt files.
        raise InvalidSampleError(
            BAD_LABEL, f"label file {path} is not a decodable {kind} ({error})."
        ) from error
    return image


def _check_png_magic(data, path):
    if not data.startswith(PNG_MAGIC):
        raise InvalidSampleError(BAD_LABEL, f"label file {path} is not a PNG (wrong magic bytes).")


def decode_label_png(data, path="<label>", label_colors=None):
    """Class indices [H, W] of a label PNG: uint8, or wider for 16/32-bit PNGs.

    Without `label_colors`, one-channel PNGs (mode 'L', or 'P' whose palette
    indices are the class ids, as in VOC's SegmentationClass) are read as
    indices, and RGB PNGs are mapped through the VOC colour palette. With
    it, every PNG is read as colours (`decode_colour_mask`). Values are not
    checked against a class count here; `check_label_values` does that.

    Args:
        data: bytes. The PNG file's contents.
        path: str. The file's name, for error messages.
        label_colors: `LabelColors` or None. The colour table of colour
            masks. Defaults to `None`.

    Raises:
        InvalidSampleError: not a decodable PNG, or colours outside the palette
            or table.
    """
    if label_colors is not None:
        return decode_colour_mask(data, path, label_colors)
    _check_png_magic(data, path)
    image = _open_image(data, path, "PNG")
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


def _colour_codes(rgb):
    """0xRRGGBB int32 codes of uint8 [..., 3] colours."""
    codes = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8)
    return codes | rgb[..., 2]


def _colours_to_indices(rgb, path):
    codes = _colour_codes(rgb)
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


def decode_colour_mask(data, path, label_colors):
    """uint8 class indices [H, W] of a colour mask PNG, through `label_colors`.

    Any PNG mode with colours (RGB, RGBA with alpha dropped, palette, grey)
    is read as RGB colours. Pixels of an ignore colour become
    `label_colors.ignore_label`.

    Raises:
        InvalidSampleError: `LOSSY_LABEL` for a JPEG or a mask that looks
            JPEG-compressed, `UNKNOWN_LABEL_COLORS` naming a colour in no
            entry of the table with its pixel count and first position, or
            `BAD_LABEL` for a file that is no PNG of colours.
    """
    if data.startswith(JPEG_MAGIC):
        rgb = np.asarray(_open_image(data, path, "JPEG").convert("RGB"))
        raise InvalidSampleError(
            LOSSY_LABEL,
            f"label file {path} looks JPEG-compressed: it is a JPEG, with "
            f"{len(np.unique(_colour_codes(rgb)))} distinct colours; masks must be lossless PNG.",
        )
    _check_png_magic(data, path)
    image = _open_image(data, path, "PNG")
    if image.mode in ("I", "I;16", "I;16B", "F"):
        raise InvalidSampleError(
            BAD_LABEL,
            f"label file {path} has PNG mode {image.mode!r} (16 or 32-bit values), not colours: "
            f"a colour mask is RGB, palette or grey. {_INDEX_LABEL_HINT}",
        )
    codes = _colour_codes(np.asarray(image.convert("RGB")))
    sorted_codes, values = _lookup_table(label_colors)
    positions = np.searchsorted(sorted_codes, codes).clip(0, len(sorted_codes) - 1)
    known = sorted_codes[positions] == codes
    if not known.all():
        raise _unknown_colours_error(codes, known, path, label_colors.source)
    return values[positions]


def _lookup_table(label_colors):
    """(sorted colour codes, the uint8 label of each) of a `LabelColors`."""
    colours = [*label_colors.colors, *label_colors.ignore_colors]
    labels = [*range(len(label_colors.colors))]
    labels += [label_colors.ignore_label] * len(label_colors.ignore_colors)
    codes = _colour_codes(np.array(colours, np.uint8))
    order = np.argsort(codes)
    return codes[order], np.array(labels, np.uint8)[order]


def _unknown_colours_error(codes, known, path, source):
    """The `InvalidSampleError` of a mask with colours outside its table."""
    unknown, counts = np.unique(codes[~known], return_counts=True)
    if len(unknown) >= _LOSSY_MIN_UNKNOWN_COLOURS:
        return InvalidSampleError(
            LOSSY_LABEL,
            f"label file {path} looks JPEG-compressed: {len(np.unique(codes))} distinct colours "
            f"({len(unknown)} in no entry of {source}); masks must be lossless "
            "PNG, saved without resizing by interpolation.",
        )
    width = codes.shape[1]
    listed = []
    for index in np.argsort(-counts, kind="stable")[:_LISTED_COLOURS]:
        code = unknown[index]
        row, col = divmod(int(np.argmax(codes.ravel() == code)), width)
        listed.append(
            f"({code >> 16}, {(code >> 8) & 255}, {code & 255}) on {counts[index]} pixels, "
            f"first at (row {row}, col {col})"
        )
    more = len(unknown) - len(listed)
    return InvalidSampleError(
        UNKNOWN_LABEL_COLORS,
        f"label file {path} has colours in no entry of {source}: "
        f"{'; '.join(listed)}{f'; and {more} more' if more > 0 else ''}. Give each class's "
        "colour, and `ignore: r,g,b` for colours to leave out.",
    )


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
