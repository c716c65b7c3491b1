"""How a fresh run starts: the backbone (`pre_trained_model`) or the whole network
(`init_checkpoint`, fine-tuning a trained model), else from scratch.

A run resuming from its model_dir ignores both.
"""

import numpy as np

from tf_pacseg.training.pretrained import load_pretrained, pretrained_source
from tf_pacseg.weights import saving, sources, tf1_checkpoint

# The decoder's 1x1 conv: the only variable whose shape depends on num_classes.
CLASSIFIER = "network/conv2d/weights"
_CLASSIFIER_LAYER = "network.conv2d"
_BACKBONE_ONLY = (
    " Train with the checkpoint's architecture, or initialise only the backbone with "
    "--pre_trained_model."
)


def check_sources(config):
    """Raises `FileNotFoundError` when `config`'s initialisation source does not exist."""
    if config.init_checkpoint:
        sources.model_source(config.init_checkpoint, "--init_checkpoint")
    if config.pre_trained_model:
        pretrained_source(config.pre_trained_model)


def loaded_layers(config, resuming):
    """The layers whose weights the run's start loads: a predicate on layer names.

    The network is built without drawing their initial values
    (`tf_pacseg.model.initial_values`). A resumed run restores every layer;
    --init_checkpoint loads all but the classifier, which keeps its drawn
    values when the number of classes differs; --pre_trained_model, the
    backbone.
    """
    if resuming:
        return lambda name: True
    if config.init_checkpoint:
        return lambda name: name != _CLASSIFIER_LAYER
    if config.pre_trained_model:
        return lambda name: name.startswith(f"{config.base_architecture}.")
    return lambda name: False


def initialize(model, config):
    """Loads `config.init_checkpoint` or `config.pre_trained_model` into `model`.

    Returns:
        str, a line saying what was loaded and what was left out.
    """
    if config.init_checkpoint:
        return load_init_checkpoint(model, config.init_checkpoint)
    return load_pretrained(model, config.pre_trained_model)


def load_init_checkpoint(model, path):
    """Initialises the whole network, backbone and head, from a trained model.

    The classifier (`network/conv2d`, the decoder's 1x1 conv) is left as it
    is when the number of classes differs: fine-tuning on another dataset
    trains it from scratch.

    Args:
        model: `PACSegmenter`.
        path: str. The original's TF1 checkpoint (prefix, or directory with a
            `checkpoint` file; the released model's layout), a `.weights.h5`
            with its `.json`, or a directory holding `model.weights.h5`.

    Returns:
        str, a line saying what was loaded and what was skipped.

    Raises:
        FileNotFoundError: `path` names no model.
        ValueError: another architecture (backbone, depth, head) or variable
            shape; the message names the file and the difference.
    """
    subject = f"--init_checkpoint {path!r}"
    sources.model_source(path, "--init_checkpoint")
    try:
        # Built at our output stride: the weights do not depend on it.
        trained = saving.load_model(path, output_stride=model.output_stride)
    except ValueError as error:  # A file that does not match its own architecture.
        raise ValueError(f"{subject}: {error}") from error
    sources.check_compatible(
        model.architecture(), trained.architecture(), sources.NETWORK_KEYS, subject, _BACKBONE_ONLY
    )
    targets = tf1_checkpoint.tf1_variable_map(model)
    values = tf1_checkpoint.tf1_variable_map(trained)
    skipped = []
    if model.num_classes != trained.num_classes:
        skipped.append(
            f"{CLASSIFIER} ({trained.num_classes} classes there, {model.num_classes} "
            "here: trained from scratch)"
        )
        del targets[CLASSIFIER]
    # Same architecture: the same variables and, but for the classifier, shapes.
    for name, variable in targets.items():
        variable.assign(np.asarray(values[name]))
    line = f"Initialised the whole network from {path} ({len(targets)} variables)"
    return line + (f"; skipped {'; '.join(skipped)}." if skipped else ".")
