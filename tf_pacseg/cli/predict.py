r"""Segments every image of a folder with a trained model.

    python predict.py --model_dir=model --input_dir=photos --output_dir=masks
    python predict.py --model_dir=model/model.ckpt-30000 --input_dir=photos \
        --output_dir=overlays --output_format=overlay
    python predict.py --model_dir=model --input_dir=scans --output_dir=masks \
        --inference_mode=slide --tile_batch_size=8
    python predict.py --model_path=pacseg.onnx --input_dir=photos --output_dir=masks

Images (.jpg, .jpeg, .png, .bmp, any case) run at their own size: whole, or
above --max_whole_pixels (4 MP) as overlapping tiles, which bounds memory by
the tile batch instead of the image. Outputs are named after the input
(photos/cat.jpg -> masks/cat.png). Unreadable files, and images above
--max_image_pixels, are reported and skipped. The input folder is never
written to. Runs on either Keras backend (KERAS_BACKEND=tensorflow or jax), or
(--model_path) an ONNX or OpenVINO export of checkpoints/export.py, run on the
CPU by onnxruntime or OpenVINO, with the same outputs and tiling.
"""

import sys

from absl import flags

from tf_pacseg import cli, constants
from tf_pacseg.cli.model_flags import (
    class_names_from_flags,
    define_class_names_flag,
    define_exported_model_flags,
    define_inference_flags,
    define_model_flags,
    exported_model_from_flags,
    load_model_from_flags,
    tiling_from_flags,
)

define_model_flags()
define_exported_model_flags()
define_inference_flags()
define_class_names_flag()

flags.DEFINE_string("input_dir", None, "Folder of the images to segment.")
flags.DEFINE_string(
    "output_dir", None, "Folder for the results (created); not the input folder or inside it."
)
flags.DEFINE_enum(
    "output_format",
    constants.DEFAULT_OUTPUT_FORMAT,
    list(constants.OUTPUT_FORMATS),
    "color: PNG of VOC palette colours (palette mode: pixel values are the class ids); "
    "index: one-channel PNG of class ids; overlay: PNG of the image blended with the "
    "colours; logits: float32 .npy of shape [height, width, num_classes] (mean softmax "
    "probabilities for tiled images; a whole-image array, so memory grows with the image "
    "even when tiled).",
)
flags.DEFINE_float(
    "overlay_opacity",
    constants.DEFAULT_OVERLAY_OPACITY,
    "Weight of the colours in --output_format=overlay, in [0, 1].",
)
flags.DEFINE_bool(
    "overlay_legend",
    True,
    "Draw a legend under each overlay: a colour swatch and the --class_names name of each "
    "class it shows (--nooverlay_legend: overlays the size of their image).",
)
flags.DEFINE_integer(
    "max_image_pixels",
    constants.DEFAULT_MAX_IMAGE_PIXELS,
    "Images of more pixels are skipped and reported, before decoding (a guard against "
    "decompression bombs; replaces Pillow's own limit).",
    lower_bound=1,
)
flags.mark_flags_as_required(["input_dir", "output_dir"])
flags.mark_flags_as_mutual_exclusive(["model_dir", "model_path"], required=True)
FLAGS = flags.FLAGS


def main():
    from PIL import Image

    from tf_pacseg.export.extras import MissingExtraError
    from tf_pacseg.inference import prediction

    # --max_image_pixels is the only limit: Pillow's would warn above 89 MP.
    Image.MAX_IMAGE_PIXELS = None
    try:
        tiling = tiling_from_flags()  # Before the slow load, as the folder check.
        prediction.check_folders(FLAGS.input_dir, FLAGS.output_dir)
        if FLAGS.model_path:
            model = exported_model_from_flags()
        else:
            model = load_model_from_flags(winograd=FLAGS.winograd)
        legend = FLAGS.output_format == "overlay" and FLAGS.overlay_legend
        names = class_names_from_flags(model.num_classes) if legend else None
        summary = prediction.predict_folder(
            model,
            FLAGS.input_dir,
            FLAGS.output_dir,
            output_format=FLAGS.output_format,
            overlay_opacity=FLAGS.overlay_opacity,
            class_names=names,
            tiling=tiling,
            max_image_pixels=FLAGS.max_image_pixels,
        )
    except (FileNotFoundError, ValueError, MissingExtraError) as error:
        sys.exit(f"predict.py: {error}")
    print(summary)


def run():
    """Console entry point `pacseg-predict` (the shim at the top calls it too)."""
    cli.run(main)


if __name__ == "__main__":
    run()
