r"""Evaluates a segmentation model on PASCAL VOC val: IoU per class, mIoU, pixel accuracy.

    python evaluate.py --model_dir=model --data_dir=dataset
    python evaluate.py --model_dir=model/model.ckpt-30000 \
        --image_data_dir=VOC2012/JPEGImages --label_data_dir=VOC2012/SegmentationClassAug \
        --evaluation_data_list=dataset/val.txt --output_json=val.json \
        --per_image_json=val_images.json --confusion_png=val_confusion.png
    python evaluate.py --model_path=pacseg.xml --openvino_precision=bf16 --data_dir=dataset

Each image is padded bottom/right to at least --input_height x --input_width
with the mean pixel (labels with --ignore_label, which the metrics leave out)
and evaluated at that size, as the original evaluated during training;
padded images above --max_whole_pixels (4 MP: never VOC's) run as overlapping
tiles (--inference_mode). Runs on either Keras backend (KERAS_BACKEND=tensorflow or jax),
or (--model_path) an ONNX or OpenVINO export of checkpoints/export.py, run on the
CPU by onnxruntime or OpenVINO, as predict.py runs it: so the mIoU of an export
(OpenVINO in bf16, say) can be set beside the Keras model's. An export of a fixed
--input_size runs at scale 1 on images padded to exactly that size, or with
--inference_mode=slide on tiles of that size.
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

flags.DEFINE_string(
    "data_dir",
    None,
    "Folder of TFRecords (val-*-of-*.tfrecord from data/convert_voc.py, or the "
    "original's voc_val.record). Alternative to the three folder flags.",
)
flags.DEFINE_string("image_data_dir", None, "Folder of the <id>.jpg images.")
flags.DEFINE_string(
    "label_data_dir",
    None,
    "Folder of the <id>.png labels: one-channel class indices (SegmentationClassAug) or "
    "VOC palette PNGs (SegmentationClass).",
)
flags.DEFINE_string(
    "evaluation_data_list", None, "List file of the image ids to evaluate, e.g. val.txt."
)
flags.DEFINE_integer(
    "batch_size", constants.DEFAULT_EVAL_BATCH_SIZE, "Images per forward pass.", lower_bound=1
)
flags.DEFINE_integer(
    "input_height",
    constants.CROP_SIZE[0],
    "Images are padded to at least this height.",
    lower_bound=1,
)
flags.DEFINE_integer(
    "input_width",
    constants.CROP_SIZE[1],
    "Images are padded to at least this width.",
    lower_bound=1,
)
flags.DEFINE_integer(
    "num_classes", None, "Number of classes; must match the model's (default: the model's)."
)
flags.DEFINE_list(
    "eval_scales",
    [str(scale) for scale in constants.DEFAULT_EVAL_SCALES],
    "Comma-separated image scales; several average the softmax over scales, e.g. "
    "0.5,0.75,1.0,1.25,1.5,1.75.",
)
flags.DEFINE_bool("add_flipped_images", False, "Also average over left-right flipped images.")
flags.DEFINE_integer(
    "ignore_label",
    constants.IGNORE_LABEL,
    "Label value of the pixels left out of the metrics (and of the label padding).",
    lower_bound=0,
    upper_bound=255,
)
flags.DEFINE_bool(
    "skip_bad_records",
    False,
    "With --data_dir: leave out the records that cannot be read (a damaged file is read up "
    "to the damaged record), each logged, their count in the summary and in --output_json "
    "(skipped_records). Without it, such a record stops the evaluation with one line naming "
    "it.",
)
flags.DEFINE_string("output_json", None, "Also write the results (and confusion matrix) here.")
flags.DEFINE_string(
    "per_image_json",
    None,
    "Also write each image's id (folders) or index (records), mIoU and pixel accuracy "
    "here, worst first.",
)
flags.DEFINE_string(
    "confusion_png",
    None,
    "Also draw the confusion matrix here, each row normalised (the share of the class's "
    "labelled pixels predicted as each class).",
)
flags.mark_flags_as_mutual_exclusive(["model_dir", "model_path"], required=True)
FLAGS = flags.FLAGS


def _write_reports(result, image_matrices, names):
    """The files the flags ask for, besides the table."""
    from tf_pacseg.data import voc
    from tf_pacseg.inference import report

    if FLAGS.output_json:
        report.write_json(result, FLAGS.output_json)
        print(f"wrote {FLAGS.output_json}")
    if FLAGS.per_image_json:
        matrices = [image_matrices[index] for index in range(len(image_matrices))]
        ids = voc.read_id_list(FLAGS.evaluation_data_list) if FLAGS.data_dir is None else None
        report.write_json(report.per_image_results(matrices, ids), FLAGS.per_image_json)
        print(f"wrote {FLAGS.per_image_json}")
    if FLAGS.confusion_png:
        report.write_confusion_png(result["confusion_matrix"], names, FLAGS.confusion_png)
        print(f"wrote {FLAGS.confusion_png}")


def _check_fixed_size(input_size, tiling, scales):
    """Raises ValueError naming the flag that would run a fixed-size export at another size.

    Checked before any data is read; its runtime would refuse them only at the first batch.

    Args:
        input_size: (height, width) or None. The export's fixed input size.
        tiling: `Tiling`. Of the inference flags.
        scales: list of floats. Of --eval_scales.
    """
    if input_size is None:
        return
    height, width = input_size
    fixed = f"{FLAGS.model_path} takes {height}x{width} (height x width) images only"
    crop = (FLAGS.input_height, FLAGS.input_width)
    received = f"received --input_height={crop[0]} --input_width={crop[1]}"
    if any(scale != 1.0 for scale in scales):
        raise ValueError(
            f"--eval_scales must be 1: {fixed}; received "
            f"--eval_scales={','.join(FLAGS.eval_scales)}."
        )
    if tiling.mode != "slide":
        if crop != input_size:
            raise ValueError(
                f"--input_height and --input_width must be {height} and {width}: {fixed}, and "
                "images run whole, padded to that size (or pass --inference_mode=slide with "
                f"tiles of that size); {received}."
            )
    elif tiling.tile_size != input_size:
        raise ValueError(
            f"--tile_size must give {height}x{width} tiles: {fixed}; received "
            f"--tile_size={FLAGS.tile_size}."
        )
    elif crop[0] < height or crop[1] < width:
        raise ValueError(
            f"--input_height and --input_width must be at least {height} and {width} with "
            f"--inference_mode=slide: {fixed}, and images padded to less give smaller tiles; "
            f"{received}."
        )


def main():
    from tf_pacseg.export.extras import MissingExtraError
    from tf_pacseg.inference import evaluation, report

    try:
        scales = [float(s) for s in FLAGS.eval_scales]
    except ValueError:
        sys.exit(f"evaluate.py: --eval_scales must be numbers; got {FLAGS.eval_scales}.")
    try:
        tiling = tiling_from_flags()  # Before the slow load, as the sources' check.
        evaluation.check_sources(
            FLAGS.data_dir,
            FLAGS.image_data_dir,
            FLAGS.label_data_dir,
            FLAGS.evaluation_data_list,
        )
        if FLAGS.model_path:
            model = exported_model_from_flags()
            _check_fixed_size(model.input_size, tiling, scales)
        else:
            model = load_model_from_flags(winograd=FLAGS.winograd)
        names = class_names_from_flags(model.num_classes, FLAGS.data_dir)
        image_matrices = {}  # {index: confusion matrix} of each image.
        result = evaluation.evaluate(
            model,
            data_dir=FLAGS.data_dir,
            image_data_dir=FLAGS.image_data_dir,
            label_data_dir=FLAGS.label_data_dir,
            evaluation_data_list=FLAGS.evaluation_data_list,
            batch_size=FLAGS.batch_size,
            crop_size=(FLAGS.input_height, FLAGS.input_width),
            num_classes=FLAGS.num_classes,
            eval_scales=scales,
            add_flipped_images=FLAGS.add_flipped_images,
            ignore_label=FLAGS.ignore_label,
            tiling=tiling,
            class_names=names,
            on_image=image_matrices.__setitem__ if FLAGS.per_image_json else None,
            skip_bad_records=FLAGS.skip_bad_records,
        )
    except (FileNotFoundError, ValueError, MissingExtraError) as error:
        sys.exit(f"evaluate.py: {error}")
    print(report.format_result(result))
    if "skipped_records" in result:
        print(f"{result['skipped_records']} unreadable records skipped (logged above).")
    _write_reports(result, image_matrices, names)


def run():
    """Console entry point `pacseg-evaluate` (the shim at the top calls it too)."""
    cli.run(main)


if __name__ == "__main__":
    run()
