"""What loading a sample gives: a `Sample`, or an `InvalidSampleError` with one of `REASONS`."""

import dataclasses

# Reasons a sample is skipped; summaries count skipped samples by these.
MISSING_IMAGE = "missing image"
MISSING_LABEL = "missing label"
BAD_IMAGE = "image not a decodable JPEG"
BAD_LABEL = "label not a decodable PNG"
SIZE_MISMATCH = "label size differs from image size"
BAD_LABEL_VALUES = "label values out of range"
# Colour masks only (`label_png.LabelColors`).
UNKNOWN_LABEL_COLORS = "label colours not in the colour table"
LOSSY_LABEL = "label looks JPEG-compressed"
REASONS = (
    MISSING_IMAGE,
    MISSING_LABEL,
    BAD_IMAGE,
    BAD_LABEL,
    SIZE_MISMATCH,
    BAD_LABEL_VALUES,
    UNKNOWN_LABEL_COLORS,
    LOSSY_LABEL,
)


class InvalidSampleError(ValueError):
    """A sample that cannot be converted; `reason` is one of `REASONS`."""

    def __init__(self, reason, message):
        super().__init__(message)
        self.reason = reason

    def __reduce__(self):
        # Lets the error cross process boundaries intact.
        return (type(self), (self.reason, str(self)))


@dataclasses.dataclass(frozen=True)
class Sample:
    """One converted sample: the image file's bytes and the re-encoded label."""

    sample_id: str
    image_jpeg: bytes
    label_png: bytes
    height: int
    width: int
