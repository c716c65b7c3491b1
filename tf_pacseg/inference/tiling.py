"""Sliding-window inference: overlapping tiles, probabilities averaged, finished band by band.

An image too large to run whole (`Tiling.slides`) runs through the network as
overlapping tiles of `tile_size` placed every `tile_stride` pixels, the last
tile of each row and column flush with the image's far edge. Every tile thus
lies inside the image and is as large as the image allows (an image shorter
than a tile along a side gets tiles as long as that side), so a tile needs no
padding of its own: it is cut from the image exactly as the whole-image mode
sees it (evaluation's image padded to at least `crop_size`, prediction's
unpadded). Each tile's softmax probabilities (`forward.probabilities`, with
multi-scale and flips applied to the tile) are summed over the pixels it
covers and divided by the number of tiles covering each pixel.

Memory is bounded by the tile batch and one band of rows, not by the image:
the tiles run a row of tiles at a time, `tile_batch_size` per forward pass,
into an accumulator as high as a tile and as wide as the image. Once a row of
tiles is done, the rows above the next row's top are final (no later tile
reaches them) and leave the accumulator, a few at a time, as class ids
(`tiled_labels`) or probabilities (`tiled_probabilities`, a whole-image
array by definition). Tiles are converted to float32 one batch at a time, so
the only whole-image arrays are the input and the output.

The network sees one tile at a time: the image-pooling branch of the PAC and
ASPP heads pools over the tile, not the whole image.

Example:

```python
tiling = Tiling(mode="slide", tile_size=513, tile_stride=342)
labels = tiled_labels(model, image, tiling)  # uint8 [H, W] for <= 256 classes
```
"""

import dataclasses
import numbers

import numpy as np
from keras import ops

from tf_pacseg import checks, constants
from tf_pacseg.inference import forward

# Finished rows leave the accumulator this many at a time, which bounds the
# float32 temporaries of the division and argmax (64 x width x classes).
_ROWS_PER_CHUNK = 64


def _size_2d(name, value):
    """An int or (height, width) as a (height, width) tuple of ints >= 1."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = (value, value)
    return tuple(int(v) for v in checks.size_2d(name, value))


@dataclasses.dataclass(frozen=True)
class Tiling:
    """How images run through the network: whole, or as overlapping tiles.

    Args:
        mode: str. `"whole"`: every image at once; `"slide"`: every image as
            tiles; `"auto"`: as tiles above `max_whole_pixels`. Defaults to
            `"auto"`.
        tile_size: int or (height, width). Defaults to 513 (the training crop).
        tile_stride: int, (height, width) or None. Offset between
            neighbouring tiles, at most `tile_size`. Defaults to `None`: two
            thirds of `tile_size`, rounded (342 for 513: a third of overlap).
        tile_batch_size: int. Tiles per forward pass. Defaults to 4.
        max_whole_pixels: int. `"auto"` runs images of more pixels as tiles.
            Defaults to 4_000_000.
    """

    mode: str = constants.DEFAULT_INFERENCE_MODE
    tile_size: tuple = constants.DEFAULT_TILE_SIZE
    tile_stride: tuple = None
    tile_batch_size: int = constants.DEFAULT_TILE_BATCH_SIZE
    max_whole_pixels: int = constants.DEFAULT_MAX_WHOLE_PIXELS

    def __post_init__(self):
        checks.one_of("mode", self.mode, constants.INFERENCE_MODES)
        size = _size_2d("tile_size", self.tile_size)
        stride = self.tile_stride
        if stride is None:
            stride = tuple(max(1, round(t * constants.TILE_STRIDE_FRACTION)) for t in size)
        stride = _size_2d("tile_stride", stride)
        if any(s > t for s, t in zip(stride, size, strict=True)):
            raise checks.invalid(
                "tile_stride",
                f"at most tile_size={size} along each side, so that the tiles cover the image",
                stride,
            )
        checks.positive_int("tile_batch_size", self.tile_batch_size)
        checks.positive_int("max_whole_pixels", self.max_whole_pixels)
        object.__setattr__(self, "tile_size", size)
        object.__setattr__(self, "tile_stride", stride)

    def slides(self, height, width):
        """Whether an image of this size runs as tiles."""
        return self.mode == "slide" or (
            self.mode == "auto" and height * width > self.max_whole_pixels
        )

    def grid(self, height, width):
        """The tiles of an image: ((tile height, tile width), row tops, column lefts)."""
        shape = tuple(min(t, n) for t, n in zip(self.tile_size, (height, width), strict=True))
        tops = tile_starts(height, shape[0], self.tile_stride[0])
        lefts = tile_starts(width, shape[1], self.tile_stride[1])
        return shape, tops, lefts

    def describe(self, height, width):
        """Why and how an image of this size runs as tiles, for the log."""
        (tile_h, tile_w), tops, lefts = self.grid(height, width)
        reason = (
            f"{height * width:,} pixels > max_whole_pixels={self.max_whole_pixels:,}"
            if self.mode == "auto"
            else "inference_mode=slide"
        )
        return (
            f"{width}x{height} image ({reason}): {len(tops) * len(lefts)} tiles of "
            f"{tile_w}x{tile_h}, stride {self.tile_stride[1]}x{self.tile_stride[0]}"
        )


def tile_starts(length, tile, stride):
    """Offsets of the tiles along one side: every `stride`, the last flush with the end.

    Args:
        length: int. The side's length.
        tile: int. The tile's length along it, at most `length`.
        stride: int. Offset between neighbouring tiles.

    Returns:
        A list of ints, increasing, from 0 to `length - tile`.
    """
    return [*range(0, length - tile, stride), length - tile]


def _coverage(length, starts, tile):
    """float32 [length]: how many tiles cover each position along one side."""
    counts = np.zeros(length, np.float32)
    for start in starts:
        counts[start : start + tile] += 1.0
    return counts


def tile_probabilities(model, image, tiling, eval_scales=(1.0,), add_flipped_images=False):
    """The probabilities of every tile of an image, row of tiles by row of tiles.

    Args:
        model: a Keras segmentation model (see `forward.forward_fn`).
        image: [H, W, 3] in 0..255, uint8 or float (NumPy).
        tiling: `Tiling`. The tile size, stride and batch size.
        eval_scales: sequence of floats. Multi-scale, applied to each tile.
            Defaults to `(1.0,)`.
        add_flipped_images: bool. Also average each tile's left-right flip.
            Defaults to `False`.

    Yields:
        (top, left, float32 [tile height, tile width, num_classes]) per tile,
        in row-major order of `tiling.grid`.
    """
    (tile_h, tile_w), tops, lefts = tiling.grid(*image.shape[:2])
    positions = [(top, left) for top in tops for left in lefts]
    for begin in range(0, len(positions), tiling.tile_batch_size):
        batch = positions[begin : begin + tiling.tile_batch_size]
        # float32 one batch at a time: the whole image is never converted.
        tiles = np.stack([image[y : y + tile_h, x : x + tile_w] for y, x in batch])
        probabilities = ops.convert_to_numpy(
            forward.probabilities(model, tiles.astype(np.float32), eval_scales, add_flipped_images)
        )
        for (top, left), tile in zip(batch, probabilities, strict=True):
            yield top, left, tile


def probability_bands(model, image, tiling, eval_scales=(1.0,), add_flipped_images=False):
    """The mean tile probabilities of an image, a few finished rows at a time, top to bottom.

    Arguments as for `tile_probabilities`.

    Yields:
        (top, float32 [rows, W, num_classes]): the mean probabilities of image
        rows `top` to `top + rows`, consecutive blocks covering the image.
    """
    height, width = image.shape[:2]
    (tile_h, tile_w), tops, lefts = tiling.grid(height, width)
    row_coverage, column_coverage = _coverage(height, tops, tile_h), _coverage(width, lefts, tile_w)
    band, band_top = None, 0  # band[i]: the sums of image row band_top + i.
    tiles = tile_probabilities(model, image, tiling, eval_scales, add_flipped_images)
    for top, left, probabilities in tiles:
        if band is None:
            band = np.zeros((tile_h, width, probabilities.shape[-1]), np.float32)
        if top != band_top:  # A new row of tiles: the rows above its top are final.
            yield from _finished_rows(band, band_top, top, row_coverage, column_coverage)
            shift = top - band_top
            band[: tile_h - shift] = band[shift:]
            band[tile_h - shift :] = 0.0
            band_top = top
        band[:, left : left + tile_w] += probabilities
    yield from _finished_rows(band, band_top, height, row_coverage, column_coverage)


def _finished_rows(band, band_top, end, row_coverage, column_coverage):
    """Yields (top, mean probabilities) of image rows band_top..end, in chunks."""
    for begin in range(band_top, end, _ROWS_PER_CHUNK):
        stop = min(begin + _ROWS_PER_CHUNK, end)
        counts = row_coverage[begin:stop, None, None] * column_coverage[None, :, None]
        yield begin, band[begin - band_top : stop - band_top] / counts


def tiled_labels(model, image, tiling, eval_scales=(1.0,), add_flipped_images=False):
    """Class ids of an image from its tiles: the argmax of the mean tile probabilities.

    Arguments as for `tile_probabilities`. Memory: the image, the output and
    one band of rows (see the module docstring).

    Returns:
        [H, W] class ids: uint8 for up to 256 classes, else int32.
    """
    labels = None
    for top, rows in probability_bands(model, image, tiling, eval_scales, add_flipped_images):
        if labels is None:
            dtype = np.uint8 if rows.shape[-1] <= 256 else np.int32
            labels = np.empty(image.shape[:2], dtype)
        labels[top : top + len(rows)] = rows.argmax(-1)
    return labels


def tiled_probabilities(model, image, tiling, eval_scales=(1.0,), add_flipped_images=False):
    """float32 [H, W, num_classes]: the mean tile probabilities of an image, whole.

    Arguments as for `tile_probabilities`. The output holds a float per pixel
    and class (9 GB for a 108 MP image of 21 classes); `tiled_labels` does not.
    """
    scores = None
    for top, rows in probability_bands(model, image, tiling, eval_scales, add_flipped_images):
        if scores is None:
            scores = np.empty((*image.shape[:2], rows.shape[-1]), np.float32)
        scores[top : top + len(rows)] = rows
    return scores
