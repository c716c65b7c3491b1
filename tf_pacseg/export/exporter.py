"""`export_model`: writes one export format, runs it with its runtime, compares the logits.

| format       | written by                          | checked with                      |
| ------------ | ----------------------------------- | --------------------------------- |
| `savedmodel` | `keras.export.ExportArchive`        | `tf.saved_model.load`             |
| `onnx`       | `model.export(format="onnx")`       | onnxruntime (CPU)                 |
| `tflite`     | TensorFlow Lite's converter         | LiteRT's interpreter              |
| `openvino`   | `openvino.convert_model`            | OpenVINO's CPU plugin, f32        |

Example:

```python
report = export_model(model, "onnx", "model.onnx", input_size=(513, 513))
print(report.summary())
```
"""

import dataclasses
import os

import keras

from tf_pacseg import checks
from tf_pacseg.export import litert_export, onnx_export, openvino_export, saved_model
from tf_pacseg.export.extras import require_format
from tf_pacseg.export.formats import FORMATS, SUFFIXES
from tf_pacseg.export.verification import (
    RELATIVE_TOLERANCE,
    check_images,
    check_logits,
    reference_logits,
)
from tf_pacseg.model.folding import fold_batch_norms

# float16 weights round each weight by up to 2**-11 of itself: the logits move
# by about 1e-3 of their range, where float32 conversions stay near 1e-6.
FLOAT16_RELATIVE_TOLERANCE = 1e-2

_WRITERS = {
    "savedmodel": saved_model.write_saved_model,
    "onnx": onnx_export.write_onnx,
    "tflite": litert_export.write_litert,
    "openvino": openvino_export.write_openvino,
}
_RUNNERS = {
    "savedmodel": ("SavedModel (TensorFlow)", saved_model.run_saved_model),
    "onnx": ("ONNX (onnxruntime)", onnx_export.run_onnx),
    "tflite": ("LiteRT (interpreter)", litert_export.run_litert),
    "openvino": ("OpenVINO IR (CPU plugin, f32)", openvino_export.run_openvino),
}


@dataclasses.dataclass(frozen=True)
class ExportReport:
    """What `export_model` wrote and how far its runtime's logits are from Keras'.

    Attributes:
        format: str. One of `FORMATS`.
        paths: tuple of str. What was written (the `.xml` and `.bin` for OpenVINO).
        size_bytes: int. Their size on disk, all files together.
        relative_difference: float. The largest logit difference, as a
            fraction of the Keras logits' range.
        tolerance: float. The bound it was checked against.
        check_shape: tuple of ints. The check image's shape.
    """

    format: str
    paths: tuple
    size_bytes: int
    relative_difference: float
    tolerance: float
    check_shape: tuple

    def summary(self):
        return (
            f"wrote {', '.join(self.paths)} ({self.size_bytes / 2**20:.1f} MiB); "
            f"{_RUNNERS[self.format][0]} logits on a {self.check_shape} image are within "
            f"{self.relative_difference:.2g} of the Keras logits' range (bound {self.tolerance:g})"
        )


def export_model(
    model, format, output_path, input_size=None, tflite_float16=False, probabilities=False
):
    """Writes `model` in `format`, then runs the export once with its runtime and checks it.

    The export's logits on a fixed pseudo-random image (of `input_size`, or
    `verification.DYNAMIC_CHECK_SIZE`) must be within `RELATIVE_TOLERANCE` of
    the Keras logits' range (`FLOAT16_RELATIVE_TOLERANCE` for float16 weights).
    The export is left in place when it fails the check, for inspection.

    Args:
        model: `PACSegmenter` (or any Keras model of images to logits).
        format: str. One of `FORMATS`.
        output_path: str. A directory for `savedmodel`; else a file ending in
            `.onnx`, `.tflite` or `.xml` (OpenVINO writes the `.bin` beside it).
        input_size: optional (height, width). A fixed input size; `None`
            takes any. Defaults to `None`.
        tflite_float16: bool. `tflite` only: float16 weights. Defaults to `False`.
        probabilities: bool. `savedmodel` only: `serve_image_bytes` also
            returns the probabilities. Defaults to `False`.

    Returns:
        An `ExportReport`.

    Raises:
        verification.ExportMismatchError: the runtime's logits are too far off.
        ImportError: the format's extra is not installed (the message names it).
    """
    options, tolerance = _format_options(format, output_path, tflite_float16, probabilities)
    if input_size is not None:
        input_size = checks.size_2d("input_size", input_size)
    require_format(format)
    # The deployed network has its BatchNorms folded into the convolutions; the check
    # below compares it with the model as given.
    _WRITERS[format](fold_batch_norms(model), output_path, input_size=input_size, **options)
    images = check_images(input_size)
    name, run = _RUNNERS[format]
    expected = reference_logits(model, images)
    difference = check_logits(name, run(output_path, images), expected, tolerance)
    paths = (output_path,)
    if format == "openvino":
        paths += (openvino_export.weights_path(output_path),)
    return ExportReport(format, paths, _size(paths), difference, tolerance, images.shape)


def _format_options(format, output_path, tflite_float16, probabilities):
    """Checks the arguments against `format`; returns (its writer's options, the tolerance)."""
    checks.one_of("format", format, FORMATS)
    suffix = SUFFIXES.get(format)
    if suffix and not output_path.endswith(suffix):
        raise checks.invalid(
            "output_path", f"a name ending in {suffix} for format={format!r}", output_path
        )
    if tflite_float16 and format != "tflite":
        raise checks.invalid("tflite_float16", f"False for format={format!r}", True)
    if probabilities and format != "savedmodel":
        raise checks.invalid("probabilities", f"False for format={format!r}", True)
    if format == "savedmodel":
        return {"probabilities": probabilities}, RELATIVE_TOLERANCE
    # The converters read TensorFlow graphs (a JAX model's SavedModel wraps XLA code).
    checks.one_of("KERAS_BACKEND", keras.backend.backend(), ("tensorflow",))
    if format == "tflite":
        tolerance = FLOAT16_RELATIVE_TOLERANCE if tflite_float16 else RELATIVE_TOLERANCE
        return {"float16": tflite_float16}, tolerance
    return {}, RELATIVE_TOLERANCE


def _size(paths):
    """Bytes on disk of files and directories (walked)."""
    total = 0
    for path in paths:
        if os.path.isdir(path):
            for directory, _, names in os.walk(path):
                total += sum(os.path.getsize(os.path.join(directory, n)) for n in names)
        else:
            total += os.path.getsize(path)
    return total
