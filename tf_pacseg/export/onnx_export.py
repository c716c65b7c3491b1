"""The ONNX export, written by Keras (through tf2onnx) and run by onnxruntime.

One input `images`, float32 [N, H, W, 3] in 0..255, and one output
`logits`, float32 [N, H, W, num_classes]; free dimensions are named
`batch`, `height` and `width`. Needs the `onnx` extra and the TensorFlow
backend.

```python
session = onnxruntime.InferenceSession("model.onnx")
(logits,) = session.run(["logits"], {"images": images})
```
"""

import os

from tf_pacseg.export.extras import require, require_format
from tf_pacseg.export.saved_model import images_spec
from tf_pacseg.files import removed_on_failure, temporary_path

_DIMENSION_NAMES = ("batch", "height", "width")


def write_onnx(model, path, input_size=None):
    """Writes `model` as an ONNX file (replaced atomically).

    Args:
        model: a Keras model of images to logits.
        path: str. The `.onnx` file.
        input_size: optional (height, width). A fixed input size; `None`
            takes any. Defaults to `None`.
    """
    require_format("onnx")  # Before the slow conversion.
    from tf_pacseg.model import dilated_conv  # TensorFlow's, as the conversion is.

    partial = temporary_path(path)
    with removed_on_failure(partial):
        spec = images_spec(input_size)
        with dilated_conv.padding_first():  # What ONNX Runtime runs at any size.
            model.export(partial, format="onnx", input_signature=[spec], verbose=False)
        _name_output_and_dimensions(partial)
    os.replace(partial, path)


def _name_output_and_dimensions(path):
    """Names the output `logits` (tf2onnx calls it `Identity:0`) and the free dimensions."""
    onnx = require("onnx", "onnx")
    proto = onnx.load(path)
    graph = proto.graph
    (output,) = graph.output
    for node in graph.node:
        for index, name in enumerate(node.output):
            if name == output.name:
                node.output[index] = "logits"
    output.name = "logits"
    for value in (*graph.input, *graph.output):
        dims = value.type.tensor_type.shape.dim
        for dim, name in zip(dims[:3], _DIMENSION_NAMES, strict=True):  # The channels are fixed.
            if not dim.HasField("dim_value"):
                dim.dim_param = name
    onnx.checker.check_model(proto)
    onnx.save(proto, path)


def run_onnx(path, images):
    """Runs the ONNX file with onnxruntime on the CPU; returns the logits."""
    onnxruntime = require("onnx", "onnxruntime")
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    (logits,) = session.run(["logits"], {"images": images})
    return logits
