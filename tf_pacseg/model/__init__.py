"""The network in `keras.ops`: layers, atrous ResNets, PAC/ASPP heads, the segmenter, losses.

`PACSegmenter` and `build_model` load on first use; `.keras` files written when
the segmenter lived in `tf_pacseg.model` find their class here.
"""

from tf_pacseg.lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__, {"tf_pacseg.model.segmenter": ("PACSegmenter", "build_model")}
)
