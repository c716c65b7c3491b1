"""tf_pacseg: Pyramid Atrous Convolution and Boundary-aware Loss in Keras 3.

The public names load their modules on first use, so that light tools (the
dataset converter's worker processes, the synthetic data writer) do not pay
for importing Keras and TensorFlow.
"""

import importlib

_EXPORTS = {
    "PACSegmenter": "tf_pacseg.model",
    "build_model": "tf_pacseg.model",
    "load_tf1_checkpoint": "tf_pacseg.tf1_checkpoint",
    "read_architecture": "tf_pacseg.tf1_checkpoint",
    "CheckpointMismatchError": "tf_pacseg.tf1_checkpoint",
    "load_model": "tf_pacseg.saving",
    "save_model_weights": "tf_pacseg.saving",
    "boundary_aware_weights": "tf_pacseg.losses",
    "boundary_aware_loss": "tf_pacseg.losses",
    "BoundaryAwareLoss": "tf_pacseg.losses",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'tf_pacseg' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(list(globals()) + __all__)
