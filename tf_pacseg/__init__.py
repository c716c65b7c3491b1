"""tf_pacseg: Pyramid Atrous Convolution and Boundary-aware Loss in Keras 3.

The public names load their modules on first use, so that light tools (the
dataset converter's worker processes, the synthetic data writer) do not pay
for importing Keras and TensorFlow.
"""

from tf_pacseg.lazy import lazy_exports

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

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
