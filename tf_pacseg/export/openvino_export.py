"""The OpenVINO IR export (`.xml` + `.bin`), converted and run by OpenVINO.

Input `images`, float32 [N, H, W, 3] in 0..255 -> output `logits`, float32
[N, H, W, num_classes]; weights in float32. OpenVINO's TensorFlow frontend
reads the inference SavedModel through `Core.read_model`, not
`openvino.convert_model`, which reports each conversion to Intel's usage
telemetry (importing `openvino` reports once, unless opted out with
`opt_in_out --opt_out`). The check compiles the IR for OpenVINO's CPU plugin
with `INFERENCE_PRECISION_HINT=f32` (the plugin's default on CPUs with
bfloat16 or float16 units is to compute in those). Needs the `openvino`
extra and the TensorFlow backend.

```python
compiled = openvino.Core().compile_model("model.xml", "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
logits = compiled({"images": images})["logits"]
```
"""

import os
import tempfile

from tf_pacseg import checks
from tf_pacseg.export.extras import require
from tf_pacseg.export.saved_model import write_saved_model
from tf_pacseg.files import removed_on_failure


def weights_path(xml_path):
    """`model.xml` -> `model.bin`, the weights OpenVINO reads beside the graph."""
    return os.path.splitext(xml_path)[0] + ".bin"


def write_openvino(model, path, input_size=None):
    """Writes `model` as OpenVINO IR: `path` (`.xml`) and its `.bin`, each replaced atomically.

    Args:
        model: a Keras model of images to logits.
        path: str. The `.xml` file.
        input_size: optional (height, width). A fixed input size; `None`
            takes any. Defaults to `None`.
    """
    if not path.endswith(".xml"):
        raise checks.invalid("path", "a name ending in .xml", path)
    openvino = require("openvino", "openvino")
    directory, name = os.path.split(os.path.abspath(path))
    partial = os.path.join(directory, f".{name[: -len('.xml')]}.partial.xml")
    with (
        tempfile.TemporaryDirectory() as temporary,
        removed_on_failure(partial, weights_path(partial)),
    ):
        saved_model = os.path.join(temporary, "saved_model")
        write_saved_model(model, saved_model, input_size=input_size, image_bytes=False)
        converted = openvino.Core().read_model(saved_model)
        openvino.save_model(converted, partial, compress_to_fp16=False)
    os.replace(weights_path(partial), weights_path(path))
    os.replace(partial, path)


def run_openvino(path, images):
    """Runs the IR with OpenVINO's CPU plugin, computing in float32; returns the logits."""
    openvino = require("openvino", "openvino")
    compiled = openvino.Core().compile_model(path, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return compiled({"images": images})["logits"]
