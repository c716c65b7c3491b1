"""Exported models (ONNX, OpenVINO IR) run by their own runtimes, in place of the Keras model.

`load_exported_model` opens an export of `tf_pacseg.export` with the runtime
its file name says (`.onnx`: onnxruntime; `.xml`: OpenVINO's CPU plugin) as
an `ExportedModel`: a callable of float32 images [N, H, W, 3] in 0..255 that
returns float32 logits [N, H, W, num_classes] (NumPy), with the
`num_classes` that prediction reads. `forward.forward_fn` hands it over as
the forward pass itself, so that whole images, tiles, multi-scale and flips
run through it as through the Keras model. OpenVINO computes in float32
(`INFERENCE_PRECISION_HINT=f32`, as the export's check), or in bfloat16 on
request, faster on CPUs with bfloat16 units and about 1e-2 of the logits'
range off. Exported files carry no class names.

Example:

```python
model = load_exported_model("pacseg.onnx")
summary = prediction.predict_folder(model, "photos", "masks")
```
"""

import os

import numpy as np

from tf_pacseg import checks
from tf_pacseg.export.extras import require

# File suffix: (runtime, the export format whose extra installs it).
RUNTIMES = {".onnx": ("onnxruntime", "onnx"), ".xml": ("openvino", "openvino")}
# OpenVINO's INFERENCE_PRECISION_HINT values offered; f32 is what the export is checked at.
OPENVINO_PRECISIONS = ("f32", "bf16")


class ExportedModel:
    """An export run by its runtime, called like the Keras model in inference mode.

    Args:
        path: str. The exported file.
        runtime: str. `"onnxruntime"` or `"openvino"`.
        run: callable of float32 NumPy images [N, H, W, 3] returning logits.
        num_classes: int. The logits' last dimension.
        input_size: (height, width) or None. A fixed input size, or `None`
            for any.
    """

    def __init__(self, path, runtime, run, num_classes, input_size=None):
        self.path = path
        self.runtime = runtime
        self.num_classes = num_classes
        self.input_size = input_size
        self._run = run

    def __call__(self, images):
        images = np.asarray(images, np.float32)
        size = tuple(images.shape[1:3])
        if self.input_size is not None and size != self.input_size:
            raise checks.invalid(
                "images",
                f"a (height, width) of {self.input_size}, the fixed input size of "
                f"{self.path}; export without a fixed size (--input_size=dynamic), or run "
                "tiles of that size (--inference_mode=slide and --tile_size)",
                received=f"images of (height, width) {size}",
            )
        return np.asarray(self._run(images), np.float32)

    def __repr__(self):
        return f"ExportedModel({self.path!r}, runtime={self.runtime!r})"


def runtime_of(path):
    """The runtime that runs an exported file, by its suffix; raises for other files."""
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in RUNTIMES:
        raise checks.invalid(
            "model_path", f"an exported model ending in {' or '.join(RUNTIMES)}", path
        )
    return RUNTIMES[suffix][0]


def load_exported_model(path, openvino_precision="f32"):
    """Opens an ONNX or OpenVINO IR export of `tf_pacseg.export` for inference on the CPU.

    Args:
        path: str. A `.onnx` file, or an `.xml` file with its `.bin` beside it.
        openvino_precision: str. OpenVINO only: `"f32"`, or `"bf16"` (faster
            on CPUs with bfloat16 units, less exact). Defaults to `"f32"`.

    Returns:
        An `ExportedModel`.

    Raises:
        FileNotFoundError: no such file.
        ValueError: another suffix, or a bad `openvino_precision`.
        ImportError: the runtime's extra is not installed (the message names it).
    """
    runtime = runtime_of(path)
    checks.one_of("openvino_precision", openvino_precision, OPENVINO_PRECISIONS)
    if runtime != "openvino" and openvino_precision != "f32":
        raise checks.invalid("openvino_precision", "f32 for an ONNX model", openvino_precision)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"The exported model {path!r} does not exist.")
    if runtime == "onnxruntime":
        return _load_onnx(path)
    return _load_openvino(path, openvino_precision)


def _fixed_size(dimensions):
    """(height, width) of NHWC dimensions (ints, or None where free), or None if either is free."""
    height, width = dimensions[1:3]
    return (height, width) if isinstance(height, int) and isinstance(width, int) else None


def _load_onnx(path):
    onnxruntime = require("onnx", "onnxruntime")
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    (images,), (logits,) = session.get_inputs(), session.get_outputs()

    def run(batch):
        return session.run([logits.name], {images.name: batch})[0]

    size = _fixed_size(images.shape)
    return ExportedModel(path, "onnxruntime", run, int(logits.shape[-1]), size)


def _load_openvino(path, precision):
    openvino = require("openvino", "openvino")
    compiled = openvino.Core().compile_model(path, "CPU", {"INFERENCE_PRECISION_HINT": precision})
    request = compiled.create_infer_request()  # One, reused: no set-up per call.

    def run(batch):
        return request.infer({"images": batch})["logits"]

    shape = compiled.input("images").get_partial_shape()
    dimensions = [d.get_length() if d.is_static else None for d in shape]
    num_classes = compiled.output("logits").get_partial_shape()[3].get_length()
    return ExportedModel(path, "openvino", run, num_classes, _fixed_size(dimensions))
