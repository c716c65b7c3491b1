r"""Segments every image of a folder with a trained model.

    python predict.py --model_dir=model --input_dir=photos --output_dir=masks
    python predict.py --model_dir=model/model.ckpt-30000 --input_dir=photos \
        --output_dir=overlays --output_format=overlay

Images (.jpg, .jpeg, .png, .bmp, any case) run at their own size; outputs are
named after the input (photos/cat.jpg -> masks/cat.png). Unreadable files are
reported and skipped. The input folder is never written to. Runs on either
Keras backend (KERAS_BACKEND=tensorflow or jax).
"""

import sys

from absl import flags

from tf_pacseg import cli
from tf_pacseg.cli.model_flags import define_model_flags, load_model_from_flags

define_model_flags()

flags.DEFINE_string("input_dir", None, "Folder of the images to segment.")
flags.DEFINE_string(
    "output_dir", None, "Folder for the results (created); not the input folder or inside it."
)
flags.DEFINE_enum(
    "output_format",
    "color",
    ["color", "index", "overlay", "logits"],
    "color: PNG of VOC palette colours (palette mode: pixel values are the class ids); "
    "index: one-channel PNG of class ids; overlay: PNG of the image blended with the "
    "colours; logits: float32 .npy of shape [height, width, num_classes].",
)
flags.DEFINE_float(
    "overlay_opacity", 0.5, "Weight of the colours in --output_format=overlay, in [0, 1]."
)
flags.mark_flags_as_required(["model_dir", "input_dir", "output_dir"])
FLAGS = flags.FLAGS


def main():
    from tf_pacseg.inference import prediction

    try:
        prediction.check_folders(FLAGS.input_dir, FLAGS.output_dir)  # Before the slow load.
        model = load_model_from_flags()
        summary = prediction.predict_folder(
            model,
            FLAGS.input_dir,
            FLAGS.output_dir,
            output_format=FLAGS.output_format,
            overlay_opacity=FLAGS.overlay_opacity,
        )
    except (FileNotFoundError, ValueError) as error:
        sys.exit(f"predict.py: {error}")
    print(summary)


def run():
    """Console entry point `pacseg-predict` (the shim at the top calls it too)."""
    cli.run(main)


if __name__ == "__main__":
    run()
