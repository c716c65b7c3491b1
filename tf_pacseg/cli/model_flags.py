"""The absl flags that pick a trained model and how it runs: shared by evaluate and predict."""

from absl import flags

from tf_pacseg import constants


def define_model_flags():
    """Defines --model_dir, --base_architecture and --output_stride."""
    flags.DEFINE_string(
        "model_dir",
        None,
        "The model: a training model_dir (holding model.weights.h5), a *.weights.h5 file "
        "with its .json, or an original TF1 checkpoint (prefix, or a directory with a "
        "`checkpoint` file).",
    )
    define_architecture_override_flags()


def define_exported_model_flags():
    """Defines --model_path and --openvino_precision: an exported model, run by its runtime."""
    from tf_pacseg.inference.runtimes import OPENVINO_PRECISIONS

    flags.DEFINE_string(
        "model_path",
        None,
        "Instead of --model_dir: a model exported by checkpoints/export.py, run on the CPU "
        "by the runtime its name says: FILE.onnx by onnxruntime (the `onnx` extra), FILE.xml "
        "by OpenVINO (the `openvino` extra). Exports hold no class names: --class_names, "
        "else the class_names.txt beside the --data_dir records (evaluate.py), else the "
        "default.",
    )
    flags.DEFINE_enum(
        "openvino_precision",
        OPENVINO_PRECISIONS[0],
        list(OPENVINO_PRECISIONS),
        "What OpenVINO computes in (--model_path=FILE.xml): f32, as the export was checked, "
        "or bf16, faster on CPUs with bfloat16 units and about 1e-2 of the logits' range off.",
    )


def exported_model_from_flags():
    """The `runtimes.ExportedModel` of --model_path (raises ValueError on bad combinations)."""
    from tf_pacseg.inference import runtimes

    values = flags.FLAGS
    for name in ("base_architecture", "output_stride"):
        if values[name].value is not None:
            raise ValueError(f"--{name} does not apply to an exported --model_path; drop it.")
    return runtimes.load_exported_model(values.model_path, values.openvino_precision)


def define_architecture_override_flags():
    """Defines --base_architecture and --output_stride, both overrides (default: stored)."""
    flags.DEFINE_enum(
        "base_architecture",
        None,
        list(constants.BASE_ARCHITECTURES),
        "Override of the stored architecture (normally read from the model or checkpoint).",
    )
    flags.DEFINE_enum(
        "output_stride",
        None,
        [str(stride) for stride in constants.OUTPUT_STRIDES],
        "Run at this output stride instead of the stored one (TF1 PAC checkpoints: 16). "
        "The weights do not depend on it, but TF1 ASPP checkpoints name their rates "
        "(conv_3x3_6 at 16, conv_3x3_12 at 8), so they load only at their own.",
    )


def architecture_overrides():
    """The override flags' values as `build_model` arguments (unset ones left out)."""
    values = flags.FLAGS
    overrides = {}
    if values.base_architecture:
        overrides["base_architecture"] = values.base_architecture
    if values.output_stride:
        overrides["output_stride"] = int(values.output_stride)
    return overrides


def define_inference_flags():
    """Defines --inference_mode, --tile_{size,stride,batch_size}, --max_whole_pixels, --winograd."""
    flags.DEFINE_enum(
        "inference_mode",
        constants.DEFAULT_INFERENCE_MODE,
        list(constants.INFERENCE_MODES),
        "whole: run the network on each whole image; slide: on overlapping tiles, their "
        "softmax probabilities averaged, with memory bounded by the tile batch instead of "
        "the image; auto: slide for images of more than --max_whole_pixels pixels.",
    )
    flags.DEFINE_integer(
        "tile_size",
        constants.DEFAULT_TILE_SIZE,
        "Side of the square tiles (default: the training crop).",
        lower_bound=1,
    )
    flags.DEFINE_integer(
        "tile_stride",
        None,
        "Pixels between neighbouring tiles, at most --tile_size (default: two thirds of "
        "it, 342 for 513: tiles overlap by a third).",
        lower_bound=1,
    )
    flags.DEFINE_integer(
        "tile_batch_size",
        constants.DEFAULT_TILE_BATCH_SIZE,
        "Tiles per forward pass.",
        lower_bound=1,
    )
    flags.DEFINE_integer(
        "max_whole_pixels",
        constants.DEFAULT_MAX_WHOLE_PIXELS,
        "With --inference_mode=auto, images of more pixels (height x width, after "
        "evaluation's padding) run as tiles. Whole-image inference takes about 0.45 GB "
        "per megapixel (ResNet-50).",
        lower_bound=1,
    )
    flags.DEFINE_boolean(
        "winograd",
        False,
        "Run the backbone's 3x3 convolutions of blocks 3 and 4 by Winograd's algorithm: "
        "float32 inference about 1.1x faster on a CPU, logits within about 1e-6 of their "
        "range. On TensorFlow each new feature map size first compiles for about 2 s, so it "
        "pays off over many images of one size (tiles, fixed-size inputs). With --model_dir.",
    )


def tiling_from_flags():
    """The inference flags' values as a `Tiling` (raises ValueError on bad combinations)."""
    from tf_pacseg.inference.tiling import Tiling

    values = flags.FLAGS
    return Tiling(
        mode=values.inference_mode,
        tile_size=values.tile_size,
        tile_stride=values.tile_stride,
        tile_batch_size=values.tile_batch_size,
        max_whole_pixels=values.max_whole_pixels,
    )


def load_model_from_flags(winograd=False):
    """The inference network of --model_dir: BatchNorms folded into the convolutions.

    Args:
        winograd: bool. Its eligible 3x3 convolutions run Winograd's algorithm
            (`tf_pacseg.model.winograd`). Defaults to `False`.
    """
    from tf_pacseg.model.folding import fold_batch_norms
    from tf_pacseg.weights import saving

    model = saving.load_model(flags.FLAGS.model_dir, **architecture_overrides())
    return fold_batch_norms(model, winograd=winograd)


def define_class_names_flag():
    """Defines --class_names."""
    flags.DEFINE_string(
        "class_names",
        None,
        "What to call the classes: a file of names, one per line (line 1 names class 0), or "
        "`voc` for VOC's 21 names. Default: the `class_names` in the model's .json, else the "
        "class_names.txt beside the --data_dir records (evaluate.py), else VOC's names for "
        "21 classes, else class_0, class_1, ...",
    )


def model_class_names(spec, model_path, num_classes, data_dir=None):
    """The names of a model's classes (see --class_names).

    Args:
        spec: str or None. A names file, `"voc"`, or `None` for the model's
            stored names, else the names file beside `data_dir`'s records,
            else `class_names.default_class_names`.
        model_path: str. The model, as `saving.load_model` takes it.
        num_classes: int. The classes the model predicts.
        data_dir: str or None. The records folder, if any. Defaults to `None`.

    Returns:
        A tuple of `num_classes` names.

    Raises:
        ValueError: names that `saving.stored_class_names` or
            `class_names.load_class_names` reject, such as a count of names
            other than `num_classes` (naming both counts).
    """
    from tf_pacseg.data import class_names
    from tf_pacseg.weights import saving

    if spec is None:
        stored = saving.stored_class_names(model_path)  # Checked against its architecture.
        if stored is not None:
            return stored
        if data_dir is not None:
            spec = class_names.find_class_names_file(data_dir)
    return class_names.load_class_names(spec, num_classes)


def class_names_from_flags(num_classes, data_dir=None):
    """`model_class_names` of --class_names and --model_dir (or of an export, which stores none)."""
    values = flags.FLAGS
    if values.model_dir is None:  # --model_path: an exported model.
        from tf_pacseg.data import class_names

        return class_names.resolve_class_names(values.class_names, num_classes, data_dir)
    return model_class_names(values.class_names, values.model_dir, num_classes, data_dir)
