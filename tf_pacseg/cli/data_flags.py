"""The absl flags that say which label values a dataset may hold: shared by the dataset tools."""

from absl import flags

from tf_pacseg import constants


def define_label_value_flags():
    """Defines --num_classes and --ignore_label, as convert_voc and check_records read labels."""
    flags.DEFINE_integer(
        "num_classes",
        constants.NUM_CLASSES,
        "Label values must be below this, or --ignore_label.",
        lower_bound=1,
    )
    flags.DEFINE_integer(
        "ignore_label",
        constants.IGNORE_LABEL,
        "Label value of void pixels, allowed beside the class ids.",
        lower_bound=0,
        upper_bound=255,
    )
