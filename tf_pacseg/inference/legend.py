"""A legend strip under an overlay: a colour swatch and the name of each class it shows.

Drawn with Pillow: swatches in the VOC palette's colours, names in black
in Pillow's default font, without anti-aliasing, so that the strip holds
only white, black and the colours of the classes present.

Example:

```python
image = with_legend(overlay_image(image, labels), labels, VOC_CLASS_NAMES)
```
"""

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from tf_pacseg import checks, constants

_PAPER, _INK = (255, 255, 255), (0, 0, 0)


def _font_size(width):
    """Text grows with the image, so that the legend stays readable when scaled down."""
    return int(np.clip(round(width / 40), 10, 48))


def _text_mask(text, font):
    """`text` without anti-aliasing, as a mode 'L' mask of 0 and 255.

    Cropped to the ink left and right, and to the line (ascender to
    descender, so that names share a baseline) top and bottom. Rendered
    rather than measured: at small sizes, un-anti-aliased glyphs come out
    wider than `textbbox` says.
    """
    _, _, right, bottom = font.getbbox(text)
    _, line_top, _, line_bottom = font.getbbox("Ag")
    canvas = Image.new("L", (2 * right + 8, 2 * max(bottom, line_bottom) + 8), 0)
    draw = ImageDraw.Draw(canvas)
    draw.fontmode = "1"
    draw.text((4, 4), text, fill=255, font=font)
    left, top, right, bottom = canvas.getbbox() or (4, 4, 5, 5)
    return canvas.crop((left, min(top, 4 + line_top), right, max(bottom, 4 + line_bottom)))


def legend_strip(labels, class_names, width):
    """A white strip naming the classes in `labels`, each after a swatch of its colour.

    Entries run left to right in class order and wrap at `width`; an entry
    wider than `width` widens the strip.

    Args:
        labels: int array-like of class ids (any shape), indices into
            `class_names` and the VOC palette.
        class_names: sequence of str, one per class.
        width: int. Width of the image the strip goes under.

    Returns:
        uint8 [height, max(width, widest entry), 3].
    """
    present = np.unique(np.asarray(labels))
    if present.size and (present[0] < 0 or present[-1] >= len(class_names)):
        raise checks.invalid(
            "class_names",
            "a name for every class id in `labels`",
            received=f"{len(class_names)} names for class ids in [{present[0]}, {present[-1]}]",
        )
    font = ImageFont.load_default(size=_font_size(width))
    texts = {int(c): _text_mask(class_names[c], font) for c in present}
    swatch = max([text.height for text in texts.values()] + [8])
    pad = max(swatch // 2, 4)
    strip_width = max([width] + [swatch + 3 * pad + text.width for text in texts.values()])
    positions, x, y = [], pad, pad  # (class id, x, y) of each swatch.
    for class_id, text in texts.items():
        entry = swatch + pad + text.width
        if x > pad and x + entry > strip_width - pad:  # Wrap, unless first in its row.
            x, y = pad, y + swatch + pad
        positions.append((class_id, x, y))
        x += entry + 2 * pad
    strip = Image.new("RGB", (strip_width, y + swatch + pad), _PAPER)
    draw = ImageDraw.Draw(strip)
    for class_id, x, y in positions:
        colour = tuple(constants.VOC_PALETTE[class_id])
        draw.rectangle((x, y, x + swatch - 1, y + swatch - 1), fill=colour)
        text = texts[class_id]
        strip.paste(_INK, (x + swatch + pad, y + (swatch - text.height) // 2), text)
    return np.asarray(strip)


def with_legend(image, labels, class_names):
    """`image` [H, W, 3] above the `legend_strip` of `labels` (white-padded to equal widths).

    Returns:
        uint8 [H + strip height, max(W, strip width), 3]; the top-left
        [H, W] is `image` unchanged.
    """
    image = np.asarray(image, np.uint8)
    strip = legend_strip(labels, class_names, image.shape[1])
    width = strip.shape[1]
    padded = np.full((image.shape[0], width, 3), _PAPER, np.uint8)
    padded[:, : image.shape[1]] = image
    return np.concatenate([padded, strip], axis=0)
