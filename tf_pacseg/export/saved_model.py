"""The inference SavedModel, for TensorFlow Serving and `tf.saved_model.load`.

Two signatures:

- `serving_default` (also the `serve` endpoint): `images`, float32
  [N, H, W, 3], RGB in 0..255 -> `logits`, float32 [N, H, W, num_classes]
  (argmax over the last axis gives the classes).
- `serve_image_bytes`: `image_bytes`, string [N], each a JPEG, PNG, BMP or
  GIF file -> `classes`, int32 [N, H, W] (and, when asked for,
  `probabilities`, float32 [N, H, W, num_classes]). The images are decoded
  and padded bottom/right with the mean pixel to the batch's largest height
  and width (to the fixed input size, if the export has one), as evaluation
  pads; the padding's pixels get class -1 (and probabilities 0).

BatchNorm and dropout run in inference mode. Written with
`keras.export.ExportArchive`, so a model of either Keras backend exports
(JAX through `jax2tf`).

```python
served = tf.saved_model.load("model/export")
logits = served.signatures["serving_default"](images=images)["logits"]
with open("cat.jpg", "rb") as f:
    classes = served.serve_image_bytes(tf.constant([f.read()]))["classes"]
```
"""

import os
import shutil

import keras
import tensorflow as tf

from tf_pacseg import constants
from tf_pacseg.files import removed_on_failure, temporary_path

IMAGES_ENDPOINT = "serve"
IMAGE_BYTES_ENDPOINT = "serve_image_bytes"
# The class of the pixels that `serve_image_bytes` adds as padding.
PADDING_CLASS = -1


def images_spec(input_size=None):
    """The `images` input: float32 [N, H, W, 3], H and W fixed by `input_size` or any."""
    height, width = input_size or (None, None)
    return tf.TensorSpec([None, height, width, 3], tf.float32, name="images")


def write_saved_model(model, export_dir, input_size=None, image_bytes=True, probabilities=False):
    """Writes the inference SavedModel of `model` (see the module docstring).

    Args:
        model: `PACSegmenter` (or any model of images to logits).
        export_dir: str. Replaced atomically (written beside, then renamed).
        input_size: optional (height, width). A fixed input size; `None`
            takes any. Defaults to `None`.
        image_bytes: bool. Adds the `serve_image_bytes` signature. Defaults
            to `True`.
        probabilities: bool. `serve_image_bytes` also returns the softmax
            probabilities. Defaults to `False`.
    """
    archive = keras.export.ExportArchive()
    if keras.backend.backend() == "jax":
        # jax2tf takes the variables up front. On TensorFlow the archive finds
        # them in the traced endpoints; tracking the model too stores every
        # weight twice (Keras 3.15).
        archive.track(model)
    serve = archive.add_endpoint(
        IMAGES_ENDPOINT,
        lambda images: {"logits": keras.ops.cast(model(images, training=False), "float32")},
        input_signature=[images_spec(input_size)],
    )
    if image_bytes:
        archive.add_endpoint(
            IMAGE_BYTES_ENDPOINT, _image_bytes_function(serve, input_size, probabilities)
        )
    partial = temporary_path(export_dir)
    shutil.rmtree(partial, ignore_errors=True)
    # Inference only: no gradient functions (which JAX-traced models cannot give).
    options = tf.saved_model.SaveOptions(experimental_custom_gradients=False)
    with removed_on_failure(partial):
        archive.write_out(partial, options=options, verbose=False)
    shutil.rmtree(export_dir, ignore_errors=True)
    os.replace(partial, export_dir)


def _image_bytes_function(serve, input_size, probabilities):
    """A traced `tf.function` of encoded images to classes, around the `serve` endpoint."""

    @tf.function(
        input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")], autograph=False
    )
    def serve_image_bytes(image_bytes):
        images, sizes = _decode_and_pad(image_bytes, input_size)
        logits = serve(images)["logits"]  # (batch, height, width, classes)
        shape = tf.shape(logits)
        rows = tf.range(shape[1])[None, :, None] < sizes[:, 0, None, None]
        cols = tf.range(shape[2])[None, None, :] < sizes[:, 1, None, None]
        inside = rows & cols  # (batch, height, width)
        classes = tf.argmax(logits, axis=-1, output_type=tf.int32)
        outputs = {"classes": tf.where(inside, classes, PADDING_CLASS)}
        if probabilities:
            scores = tf.nn.softmax(logits)
            outputs["probabilities"] = tf.where(inside[..., None], scores, 0.0)
        return outputs

    serve_image_bytes.get_concrete_function()  # ExportArchive takes traced functions.
    return serve_image_bytes


def _decode_and_pad(image_bytes, input_size):
    """Decodes a batch of encoded images and pads them bottom/right with the mean pixel.

    Returns:
        images: float32 [N, H, W, 3], H and W the largest image's (or `input_size`).
        sizes: int32 [N, 2], each image's (height, width).
    """

    def decode(data):
        image = tf.cast(tf.io.decode_image(data, channels=3, expand_animations=False), tf.float32)
        return tf.RaggedTensor.from_tensor(image, ragged_rank=1), tf.shape(image)[:2]

    ragged, sizes = tf.map_fn(
        decode,
        image_bytes,
        fn_output_signature=(
            tf.RaggedTensorSpec([None, None, 3], tf.float32, ragged_rank=1),
            tf.TensorSpec([2], tf.int32),
        ),
    )
    shape = None
    if input_size:
        tf.debugging.assert_less_equal(
            sizes,
            tf.constant([input_size], tf.int32),
            message=f"An image is larger than the input size {tuple(input_size)} of this export",
        )
        shape = [None, *input_size, 3]
    # Pixels are never negative: -1 marks the padding, which becomes the mean pixel.
    images = ragged.to_tensor(-1.0, shape=shape)
    return tf.where(images < 0.0, tf.constant(constants.MEAN_RGB, tf.float32), images), sizes


def run_saved_model(export_dir, images):
    """Runs `serving_default` of the SavedModel with TensorFlow; returns the logits (NumPy)."""
    served = tf.saved_model.load(export_dir)
    return served.signatures["serving_default"](images=tf.constant(images))["logits"].numpy()
