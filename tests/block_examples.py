"""Images whose labels can be checked against them after augmentation.

A block label (16x16 squares of classes 0..4 and the ignore label) painted in
saturated, far-apart colours: after any scale, crop or flip, a pixel inside a
block must still have its class's colour.
"""

import numpy as np

from tf_pacseg import constants

IGNORE = constants.IGNORE_LABEL

# Saturated, far-apart colours of classes 0..4; IGNORE blocks are grey.
CLASS_COLOURS = np.array(
    [[230, 20, 20], [20, 230, 20], [20, 20, 230], [230, 230, 20], [20, 230, 230]], np.uint8
)
IGNORE_COLOUR = np.array([128, 128, 128], np.uint8)


def block_example(height, width, seed, block=16):
    """A label of random 16x16 blocks (classes 0..4 and IGNORE) and its colour image."""
    rng = np.random.default_rng(seed)
    grid = rng.choice([0, 1, 2, 3, 4, IGNORE], size=(-(-height // block), -(-width // block)))
    label = np.kron(grid, np.ones((block, block), np.int64))[:height, :width]
    colours = np.concatenate([CLASS_COLOURS, np.repeat(IGNORE_COLOUR[None], 256 - 5, 0)])
    image = colours[label]
    return image.astype(np.uint8), label[..., None].astype(np.uint8)


def interior_mismatches(image, label, radius=2, tol=60):
    """(interior pixel count, mismatches): pixels whose label neighbourhood is one class."""
    image = np.asarray(image, np.float32)
    label = np.asarray(label)[..., 0]
    windows = np.lib.stride_tricks.sliding_window_view(label, (2 * radius + 1,) * 2)
    constant = (windows == windows[..., radius : radius + 1, radius : radius + 1]).all((-1, -2))
    centre = label[radius : label.shape[0] - radius, radius : label.shape[1] - radius]
    interior = constant & (centre < len(CLASS_COLOURS))
    pixels = image[radius : image.shape[0] - radius, radius : image.shape[1] - radius]
    expected = CLASS_COLOURS[np.minimum(centre, len(CLASS_COLOURS) - 1)].astype(np.float32)
    wrong = (np.abs(pixels - expected).max(-1) > tol) & interior
    return int(interior.sum()), int(wrong.sum())
