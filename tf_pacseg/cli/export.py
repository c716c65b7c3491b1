r"""Exports a trained model for serving, then runs the export once with its own runtime.

    python checkpoints/export.py --model_dir=model --format=savedmodel \
        --output_path=served/pacseg/1
    python checkpoints/export.py --model_dir=model --format=onnx --output_path=pacseg.onnx
    python checkpoints/export.py --model_dir=model --format=tflite \
        --output_path=pacseg.tflite --input_size=513,513 --tflite_float16
    python checkpoints/export.py --model_dir=model --format=openvino --output_path=pacseg.xml

Every export takes float32 RGB images [N, H, W, 3] in 0..255 as `images` and
returns float32 `logits` [N, H, W, num_classes]; the SavedModel also has a
`serve_image_bytes` signature (JPEG/PNG bytes in, class ids out) for
TensorFlow Serving. After writing, the export's runtime (TensorFlow,
onnxruntime, LiteRT's interpreter, OpenVINO's CPU plugin) runs it on a test
image, and its logits must match the Keras model's within 1e-4 of their range
(1e-2 with float16 weights); the command fails otherwise. ONNX, LiteRT and
OpenVINO need their extra: pip install -e ".[onnx]" (".[litert]",
".[openvino]"), and the TensorFlow backend.
"""

import sys

from absl import flags

from tf_pacseg import cli
from tf_pacseg.cli.model_flags import define_model_flags, load_model_from_flags
from tf_pacseg.export.formats import FORMATS

DYNAMIC = "dynamic"

define_model_flags()
flags.DEFINE_enum("format", None, list(FORMATS), "The export format.")
flags.DEFINE_string(
    "output_path",
    None,
    "Where to write: a directory (savedmodel), or a file ending in .onnx, .tflite or .xml "
    "(openvino, which writes the .bin beside it).",
)
flags.DEFINE_string(
    "input_size",
    DYNAMIC,
    "HEIGHT,WIDTH: a fixed input size (e.g. 513,513, what edge runtimes run fastest); "
    f"{DYNAMIC}: any size (every format allows it). The batch size is always free.",
)
flags.DEFINE_bool("tflite_float16", False, "tflite: store the weights in float16 (half the file).")
flags.DEFINE_bool(
    "probabilities",
    False,
    "savedmodel: serve_image_bytes also returns `probabilities` beside `classes`.",
)
flags.mark_flags_as_required(["model_dir", "format", "output_path"])
FLAGS = flags.FLAGS


def parse_input_size(text):
    """`"513,513"` -> (513, 513); `"dynamic"` -> None; raises ValueError otherwise."""
    if text == DYNAMIC:
        return None
    try:
        height, width = (int(part) for part in text.split(","))
    except ValueError:
        height = width = 0
    if height < 1 or width < 1:
        raise ValueError(f"--input_size must be HEIGHT,WIDTH or {DYNAMIC}; received {text!r}.")
    return height, width


def _is_input_size(text):
    try:
        parse_input_size(text)
    except ValueError:
        return False
    return True


flags.register_validator(
    "input_size",
    _is_input_size,
    message=f"--input_size must be HEIGHT,WIDTH (two positive ints) or {DYNAMIC}.",
)


def main():
    from tf_pacseg.export.exporter import export_model
    from tf_pacseg.export.extras import require_format

    try:
        require_format(FLAGS.format)  # Before the slow load.
        model = load_model_from_flags()
        report = export_model(
            model,
            FLAGS.format,
            FLAGS.output_path,
            input_size=parse_input_size(FLAGS.input_size),
            tflite_float16=FLAGS.tflite_float16,
            probabilities=FLAGS.probabilities,
        )
    except (FileNotFoundError, ValueError, ImportError) as error:
        sys.exit(f"export.py: {error}")
    print(report.summary())


def run():
    """Console entry point `pacseg-export` (the shim checkpoints/export.py calls it too)."""
    cli.run(main)


if __name__ == "__main__":
    run()
