"""How a fresh run starts: the backbone (`pre_trained_model`) or the whole network
(`init_checkpoint`, fine-tuning a trained model), else from scratch.

A run resuming from its model_dir ignores both.
"""

import numpy as np

from tf_pacseg.model.backbones import UNITS_PER_BLOCK
from tf_pacseg.training.pretrained import load_pretrained, missing_pretrained, pretrained_exists
from tf_pacseg.weights import saving, tf1_checkpoint

# The decoder's 1x1 conv: the only variable whose shape depends on num_classes.
CLASSIFIER = "network/conv2d/weights"
# What must agree for the weights to mean the same (the output stride need not).
_ARCHITECTURE_KEYS = ("base_architecture", "head", "multi_grid", "units_per_block")


def check_sources(config):
    """Raises `FileNotFoundError` when `config`'s initialisation source does not exist."""
    if config.init_checkpoint and not pretrained_exists(config.init_checkpoint):
        raise FileNotFoundError(
            f"--init_checkpoint {config.init_checkpoint!r} does not exist or is not a model: "
            "expected a TF1 checkpoint prefix of the original (with .index and .data-* "
            "files), a *.weights.h5 file with its .json, or a directory holding "
            "model.weights.h5."
        )
    if config.pre_trained_model and not pretrained_exists(config.pre_trained_model):
        raise missing_pretrained(config.pre_trained_model)


def initialize(model, config):
    """Loads `config.init_checkpoint` or `config.pre_trained_model` into `model`.

    Returns:
        str, a line saying what was loaded and what was left out.
    """
    if config.init_checkpoint:
        return load_init_checkpoint(model, config.init_checkpoint)
    return load_pretrained(model, config.pre_trained_model)


def _architecture(model):
    architecture = model.architecture()
    units = architecture["units_per_block"] or UNITS_PER_BLOCK[architecture["base_architecture"]]
    return {**architecture, "units_per_block": list(units)}


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
    try:
        # Built at our output stride: the weights do not depend on it.
        source = saving.load_model(path, output_stride=model.output_stride)
    except ValueError as error:  # A file that does not match its own architecture.
        raise ValueError(f"--init_checkpoint {path!r}: {error}") from error
    ours, theirs = _architecture(model), _architecture(source)
    for key in _ARCHITECTURE_KEYS:
        if ours[key] != theirs[key]:
            raise ValueError(
                f"--init_checkpoint {path!r} holds a model with {key}={theirs[key]!r}; the "
                f"model being trained has {key}={ours[key]!r}. Train with the checkpoint's "
                "architecture, or initialise only the backbone with --pre_trained_model."
            )
    targets = tf1_checkpoint.tf1_variable_map(model)
    values = tf1_checkpoint.tf1_variable_map(source)
    skipped = []
    if ours["num_classes"] != theirs["num_classes"]:
        skipped.append(
            f"{CLASSIFIER} ({theirs['num_classes']} classes there, {ours['num_classes']} "
            "here: trained from scratch)"
        )
        del targets[CLASSIFIER]
    # Same architecture: the same variables and, but for the classifier, shapes.
    for name, variable in targets.items():
        variable.assign(np.asarray(values[name]))
    line = f"Initialised the whole network from {path} ({len(targets)} variables)"
    return line + (f"; skipped {'; '.join(skipped)}." if skipped else ".")
