"""The inference forward pass, shared by evaluation and prediction, on TensorFlow or JAX.

`forward_fn(model)` is the network alone, compiled once per model and kept
while the model lives: a `tf.function` traced once for all input sizes on
TensorFlow, a `jax.jit` of `model.stateless_call` on JAX (which compiles once
per input size). `scores` runs it on a batch, optionally (DeepLab's
multi-scale evaluation) on copies resized by each of `eval_scales` to
`(size - 1) * scale + 1` (bilinear with align_corners, so corner pixels stay
aligned) and/or flipped left-right; each run's logits are flipped back,
resized back to the input size and turned into probabilities, and the scores
are their mean (`probabilities`). The bookkeeping around the network is a
handful of eager `keras.ops`, so the network is compiled once whatever the
scales and flips. Images too large to run whole run as overlapping tiles
(`tf_pacseg.inference.tiling`), each tile through `probabilities`.

Example:

```python
labels = predict_labels(model, images, eval_scales=(0.75, 1.0, 1.25))
```
"""

import weakref

import keras
import numpy as np
from keras import ops

from tf_pacseg import checks
from tf_pacseg.inference.runtimes import ExportedModel
from tf_pacseg.model.resize import resize_bilinear

# Compiled forward passes per model, kept while the model lives: evaluating
# the same model again (e.g. after each training epoch) does not retrace.
_FORWARD_CACHE = weakref.WeakKeyDictionary()


def _compile_tensorflow(model):
    import tensorflow as tf

    model_ref = weakref.ref(model)  # The cache must not keep the model alive.

    @tf.function(
        input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)], autograph=False
    )
    def forward(images):
        return tf.cast(model_ref()(images, training=False), tf.float32)

    return forward


def _compile_jax(model):
    import jax

    model_ref = weakref.ref(model)

    @jax.jit
    def stateless_forward(trainable, non_trainable, images):
        logits, _ = model_ref().stateless_call(trainable, non_trainable, images, training=False)
        return logits.astype("float32")

    def forward(images):
        model = model_ref()
        return stateless_forward(
            [v.value for v in model.trainable_variables],
            [v.value for v in model.non_trainable_variables],
            images,
        )

    return forward


_COMPILERS = {"tensorflow": _compile_tensorflow, "jax": _compile_jax}


def forward_fn(model):
    """The model's inference forward pass, compiled once per model.

    Args:
        model: a Keras segmentation model: float RGB 0..255 [N, H, W, 3] in,
            logits [N, H, W, num_classes] out; or a `runtimes.ExportedModel`.

    Returns:
        A function of float32 images [N, H, W, 3] returning float32 logits
        (a backend tensor; NumPy for an `ExportedModel`, its own forward pass).
    """
    if isinstance(model, ExportedModel):  # Compiled by its runtime already.
        return model
    backend = keras.backend.backend()
    checks.one_of("KERAS_BACKEND", backend, tuple(_COMPILERS))
    cached = _FORWARD_CACHE.setdefault(model, {})
    if backend not in cached:
        cached[backend] = _COMPILERS[backend](model)
    return cached[backend]


def scaled_size(size, scale):
    """`(size - 1) * scale + 1`, truncated, in float32: DeepLab's align-corners scaling.

    Args:
        size: int or sequence of ints.
        scale: float.

    Returns:
        A tuple of ints (an int for an int `size`).
    """
    scaled = (np.asarray(size, np.float32) - np.float32(1.0)) * np.float32(scale)
    scaled = (scaled + np.float32(1.0)).astype(np.int32)
    return int(scaled) if scaled.ndim == 0 else tuple(int(s) for s in scaled)


def probabilities(model, images, eval_scales=(1.0,), add_flipped_images=False):
    """Mean softmax probabilities of a batch over scales and flips (see the module docstring).

    Args:
        model: a Keras segmentation model (see `forward_fn`).
        images: float32 [N, H, W, 3] in 0..255 (NumPy or backend tensor).
        eval_scales: sequence of floats. Scales of the multi-scale evaluation;
            `(1.0,)` is plain single-scale. Defaults to `(1.0,)`.
        add_flipped_images: bool. Also average over left-right flips.
            Defaults to `False`.

    Returns:
        float32 [N, H, W, num_classes] (a backend tensor).
    """
    scales = checks.positive_numbers("eval_scales", eval_scales)
    forward = forward_fn(model)
    images = ops.convert_to_tensor(images, "float32")
    size = tuple(images.shape[1:3])  # (height, width)
    flips = (False, True) if add_flipped_images else (False,)
    total = 0.0
    for scale in scales:
        scaled = images if scale == 1.0 else resize_bilinear(images, scaled_size(size, scale))
        for flip in flips:
            logits = forward(ops.flip(scaled, axis=2) if flip else scaled)
            if flip:
                logits = ops.flip(logits, axis=2)
            if scale != 1.0:
                logits = resize_bilinear(logits, size)
            total = total + ops.softmax(logits, axis=-1)
    return total / (len(scales) * len(flips))


def scores(model, images, eval_scales=(1.0,), add_flipped_images=False):
    """Per-pixel class scores of a batch: logits, or mean probabilities over scales/flips.

    Args: as `probabilities`.

    Returns:
        float32 [N, H, W, num_classes]: the logits for one scale of 1 without
        flips, else `probabilities`.
    """
    scales = checks.positive_numbers("eval_scales", eval_scales)
    if scales == (1.0,) and not add_flipped_images:
        return forward_fn(model)(ops.convert_to_tensor(images, "float32"))
    return probabilities(model, images, scales, add_flipped_images)


def predict_labels(model, images, eval_scales=(1.0,), add_flipped_images=False):
    """int32 class ids [N, H, W]: the argmax of `scores` (same arguments)."""
    return ops.argmax(scores(model, images, eval_scales, add_flipped_images), axis=-1)
