"""Backbone initialisation of a fresh run: a TF1 ImageNet checkpoint or Keras weights."""

from tf_pacseg.weights import saving, tf1_checkpoint


def resolve_pretrained_path(path, base_architecture):
    """Substitutes `<arch>` (the original's default path) with the architecture."""
    if not path:
        return None
    return path.replace("<arch>", base_architecture)


def load_pretrained(model, path):
    """Initialises the backbone from a TF1 checkpoint or a Keras weights file.

    Args:
        model: `PACSegmenter`.
        path: str or None. A TF1 checkpoint prefix (or directory with a
            `checkpoint` file), a `.weights.h5` with its `.json`, or a
            directory holding `model.weights.h5`. `None`/`""`: nothing to load.

    Returns:
        str, a line saying what was loaded.

    Raises:
        FileNotFoundError: `path` names nothing loadable; the message names it.
        ValueError: the file's backbone differs from the model's.
    """
    if not path:
        return "No --pre_trained_model: training from scratch."
    weights = saving.find_weights(path)
    if weights is not None:
        source = saving.load_model(weights)
        ours = model.architecture()
        theirs = source.architecture()
        for key in ("base_architecture", "units_per_block"):
            if ours[key] != theirs[key]:
                raise ValueError(
                    f"--pre_trained_model {path!r} holds a {key}={theirs[key]!r} backbone; "
                    f"the model being trained has {key}={ours[key]!r}."
                )
        model.backbone.set_weights(source.backbone.get_weights())
        return f"Loaded the backbone from {weights}."
    if tf1_checkpoint.is_tf1_checkpoint(path):
        report = tf1_checkpoint.load_tf1_checkpoint(model, path, backbone_only=True)
        return f"Loaded the backbone: {report.summary()}."
    raise missing_pretrained(path)


def missing_pretrained(path):
    return FileNotFoundError(
        f"--pre_trained_model {path!r} does not exist or is not a model: expected a TF1 "
        "checkpoint prefix (with .index and .data-* files), a *.weights.h5 file with its "
        ".json, or a directory holding model.weights.h5. Pass --pre_trained_model= "
        "(empty) to train from scratch."
    )


def pretrained_exists(path):
    """Whether `path` names Keras weights or a TF1 checkpoint."""
    return saving.find_weights(path) is not None or tf1_checkpoint.is_tf1_checkpoint(path)
