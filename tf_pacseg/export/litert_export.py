"""The LiteRT (`.tflite`) export, converted by TensorFlow Lite and run by LiteRT's interpreter.

Signature `serving_default`: `images`, float32 [N, H, W, 3] in 0..255 ->
`logits`, float32 [N, H, W, num_classes]. Built-in LiteRT ops only (no
TensorFlow "select" ops, which LiteRT's runtime does not carry), so a
model that needs one fails at conversion, naming the op. Weights are
float32, or float16 on request (half the file; the interpreter computes in
float32). Converted from the inference SavedModel, as Keras' own LiteRT
export does, but keeping the `logits` name. Needs the TensorFlow backend;
running the check needs the `litert` extra.

```python
runner = ai_edge_litert.interpreter.Interpreter("model.tflite").get_signature_runner()
logits = runner(images=images)["logits"]
```
"""

import os
import tempfile

import tensorflow as tf

from tf_pacseg.export.extras import require, require_format
from tf_pacseg.export.saved_model import write_saved_model
from tf_pacseg.files import atomic_write


def write_litert(model, path, input_size=None, float16=False):
    """Writes `model` as a `.tflite` file (replaced atomically).

    Args:
        model: a Keras model of images to logits.
        path: str. The `.tflite` file.
        input_size: optional (height, width). A fixed input size; `None`
            takes any (the interpreter is resized to each input). Defaults to `None`.
        float16: bool. Stores the weights in float16. Defaults to `False`.
    """
    require_format("tflite")  # Before the slow conversion.
    with tempfile.TemporaryDirectory() as directory:
        saved_model = os.path.join(directory, "saved_model")
        write_saved_model(model, saved_model, input_size=input_size, image_bytes=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(
            saved_model, signature_keys=["serving_default"]
        )
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if float16:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        flatbuffer = converter.convert()
    with atomic_write(path) as f:
        f.write(flatbuffer)


def run_litert(path, images):
    """Runs the `.tflite` file with LiteRT's interpreter; returns the logits."""
    litert = require("tflite", "ai_edge_litert.interpreter")
    runner = litert.Interpreter(model_path=path).get_signature_runner("serving_default")
    return runner(images=images)["logits"]
