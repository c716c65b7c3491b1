"""tf_pacseg: Pyramid Atrous Convolution and Boundary-aware Loss in Keras 3.

The public names load their modules on first use, so that light tools (the
dataset converter's worker processes, the synthetic data writer) do not pay
for importing Keras and TensorFlow.
"""

from tf_pacseg.lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "tf_pacseg.model.segmenter": ("PACSegmenter", "build_model"),
        "tf_pacseg.weights.tf1_checkpoint": (
            "load_tf1_checkpoint",
            "read_architecture",
            "CheckpointMismatchError",
        ),
        "tf_pacseg.weights.saving": ("load_model", "save_model_weights"),
        "tf_pacseg.model.losses": (
            "boundary_aware_weights",
            "boundary_aware_loss",
            "BoundaryAwareLoss",
        ),
    },
)
