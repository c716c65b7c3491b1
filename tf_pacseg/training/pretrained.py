"""Backbone initialisation of a fresh run: a TF1 ImageNet checkpoint or Keras weights."""

from tf_pacseg.weights import saving, sources, tf1_checkpoint

_FROM_SCRATCH = " Pass --pre_trained_model= (empty) to train from scratch."


def resolve_pretrained_path(path, base_architecture):
    """Substitutes `<arch>` (the original's default path) with the architecture."""
    if not path:
        return None
    return path.replace("<arch>", base_architecture)


def pretrained_source(path):
    """The `sources.ModelSource` of `--pre_trained_model` `path`.

    Raises:
        FileNotFoundError: `path` names nothing loadable; the message names it.
    """
    return sources.model_source(path, "--pre_trained_model", hint=_FROM_SCRATCH)


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
    source = pretrained_source(path)
    if source.kind == sources.TF1:
        report = tf1_checkpoint.load_tf1_checkpoint(model, source.path, backbone_only=True)
        return f"Loaded the backbone: {report.summary()}."
    trained = saving.load_model(source.path)
    sources.check_compatible(
        model.architecture(),
        trained.architecture(),
        sources.BACKBONE_KEYS,
        f"--pre_trained_model {path!r}",
    )
    model.backbone.set_weights(trained.backbone.get_weights())
    return f"Loaded the backbone from {source.path}."
