"""The absl flags that pick a trained model, shared by evaluate.py and predict.py."""

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


def load_model_from_flags():
    from tf_pacseg.weights import saving

    return saving.load_model(flags.FLAGS.model_dir, **architecture_overrides())
