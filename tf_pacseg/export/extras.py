"""The optional dependencies of the export formats, named by their setup.py extra."""

import importlib

# format: (the setup.py extra, the modules it provides: converters and runtime).
FORMAT_EXTRAS = {
    "onnx": ("onnx", ("tf2onnx", "onnx", "onnxruntime")),
    "tflite": ("litert", ("ai_edge_litert.interpreter",)),
    "openvino": ("openvino", ("openvino",)),
}


class MissingExtraError(ImportError):
    """A format's optional dependency is not installed; the message names the extra."""


def require(format, module):
    """Imports `module`, one of `format`'s dependencies, or says which extra installs it.

    Args:
        format: str. A key of `FORMAT_EXTRAS`, e.g. `"onnx"`.
        module: str. The module to import, e.g. `"onnxruntime"`.

    Returns:
        The imported module.

    Raises:
        MissingExtraError: the module is missing; the message names the extra.
    """
    extra = FORMAT_EXTRAS[format][0]
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise MissingExtraError(
            f"The {format} format needs the `{extra}` extra, which installs `{module}`: "
            f'pip install -e ".[{extra}]" (in the checkout). ({error})'
        ) from error


def require_format(format):
    """Imports all that exporting and checking `format` needs (see `require`); else raises."""
    for module in FORMAT_EXTRAS.get(format, ("", ()))[1]:
        require(format, module)
