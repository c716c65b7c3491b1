"""tf_pacseg: Pyramid Atrous Convolution and Boundary-aware Loss in Keras 3."""

from tf_pacseg.model import PACSegmenter, build_model

__all__ = ["PACSegmenter", "build_model"]
