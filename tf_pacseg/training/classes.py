"""What a run takes from its dataset's classes at start-up: their names and loss weights.

`resolve_classes` turns `TrainConfig.class_names` (a names file, "voc", or
None: the records' `class_names.txt`, else the default names) into one name
per class, and `class_weights="auto"` into median-frequency weights counted
on the training records (`statistics.median_frequency_weights`). The counts
are the records', so a resumed run computes the same weights again; the log
shows them each time.
"""

import dataclasses

from absl import logging

from tf_pacseg.data import class_names, statistics
from tf_pacseg.training.config import AUTO_CLASS_WEIGHTS


def resolve_classes(config):
    """`config` with its class names and class weights read from files and records.

    Args:
        config: `TrainConfig`.

    Returns:
        A `TrainConfig` whose `class_names` is a tuple of `num_classes` names
        and whose `class_weights` is None or a tuple of `num_classes` floats.

    Raises:
        ValueError: a names file that cannot be read, or whose count of
            names is not `num_classes` (naming both counts).
        FileNotFoundError: `class_weights="auto"` and no training records.
    """
    names = class_names.resolve_class_names(config.class_names, config.num_classes, config.data_dir)
    weights = config.class_weights
    if weights is not None:
        source = "given"
        if weights == AUTO_CLASS_WEIGHTS:
            weights = median_frequency_class_weights(config)
            source = "median frequency of the training records' pixels"
        logging.info(
            "Class weights (%s): %s.",
            source,
            ", ".join(f"{name} {weight:.4g}" for name, weight in zip(names, weights, strict=True)),
        )
    return dataclasses.replace(config, class_names=names, class_weights=weights)


def median_frequency_class_weights(config):
    """Median-frequency weights of the training records' classes, a tuple of floats.

    Classes without a pixel in the training records get 0 (and a warning).
    """
    counts = statistics.class_pixel_counts(
        config.data_dir, "train", config.num_classes, config.ignore_label
    )
    return tuple(float(w) for w in statistics.median_frequency_weights(counts))
