"""The check run on every export: its runtime's logits against the Keras model's.

An export is run once, by the runtime it is meant for, on a fixed
pseudo-random image, and its logits are compared with the Keras model's on
the same image. The difference is measured relative to the range of the
Keras logits (max - min), so that the bound does not depend on the logits'
scale.
"""

import numpy as np

# Largest difference, relative to the logit range, that a float32 export may show.
RELATIVE_TOLERANCE = 1e-4
# The check image's size for exports that take any size: odd, and not a
# multiple of the output stride plus one, so the align-corners resize is exercised.
DYNAMIC_CHECK_SIZE = (97, 75)


class ExportMismatchError(ValueError):
    """An export's logits differ from the Keras model's beyond the tolerance."""


def check_images(input_size=None, seed=0):
    """The image an export is checked on: float32 [1, H, W, 3], whole numbers in 0..255.

    Whole numbers, so that the same image can also go through a PNG encoder
    unchanged.

    Args:
        input_size: optional (height, width). The export's fixed input size;
            `None` (any size) uses `DYNAMIC_CHECK_SIZE`. Defaults to `None`.
        seed: int. Defaults to 0.
    """
    height, width = input_size or DYNAMIC_CHECK_SIZE
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (1, height, width, 3)).astype(np.float32)


def reference_logits(model, images):
    """The Keras model's float32 logits, in inference mode, as NumPy."""
    return np.array(model(images, training=False), dtype=np.float32)


def relative_difference(actual, expected):
    """max |actual - expected| over the range of `expected` (its max - min)."""
    actual = np.asarray(actual, np.float32)
    expected = np.asarray(expected, np.float32)
    if actual.shape != expected.shape:
        raise ExportMismatchError(
            f"The export's logits have shape {actual.shape}; the Keras model's {expected.shape}."
        )
    value_range = max(float(expected.max() - expected.min()), np.finfo(np.float32).tiny)
    return float(np.abs(actual - expected).max()) / value_range


def check_logits(name, actual, expected, tolerance=RELATIVE_TOLERANCE):
    """Returns the relative difference of `actual` from `expected`; raises past `tolerance`.

    Args:
        name: str. The export, as the message names it (e.g. `"ONNX (onnxruntime)"`).
        actual: array [N, H, W, num_classes]. The export's logits.
        expected: array of the same shape. The Keras model's logits.
        tolerance: float. The largest difference allowed, as a fraction of
            the logit range. Defaults to `RELATIVE_TOLERANCE`.

    Raises:
        ExportMismatchError: the shapes differ, or the difference exceeds `tolerance`.
    """
    difference = relative_difference(actual, expected)
    if not difference <= tolerance:  # Also catches NaN.
        raise ExportMismatchError(
            f"The {name} export's logits differ from the Keras model's: the largest "
            f"difference is {difference:.3g} of the logit range (bound {tolerance:g})."
        )
    return difference
