"""The export formats' names and file endings (light: the entry point's flags list them)."""

FORMATS = ("savedmodel", "onnx", "tflite", "openvino")
# The ending `output_path` must have; a SavedModel is a directory of any name.
SUFFIXES = {"onnx": ".onnx", "tflite": ".tflite", "openvino": ".xml"}
