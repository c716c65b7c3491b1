"""Weights files with their architecture, and loading a model from any source.

A model on disk is `<stem>.weights.h5` (Keras weights) beside `<stem>.json`
(the architecture). The converter writes that pair, and so does training,
as `model.weights.h5` / `model.json` in its model_dir. `load_model` also
reads the original's TF1 checkpoints (`sources` says which a path holds).
"""

import contextlib
import json
import os

from tf_pacseg import checks
from tf_pacseg.files import atomic_write
from tf_pacseg.model.initial_values import without_initial_values
from tf_pacseg.model.segmenter import build_model
from tf_pacseg.weights import sources, tf1_checkpoint

_FORMAT = "tf_pacseg"


def architecture_path(weights_path):
    """`x/model.weights.h5` -> `x/model.json`."""
    checks.ends_with("weights_path", weights_path, sources.WEIGHTS_SUFFIX)
    return weights_path[: -len(sources.WEIGHTS_SUFFIX)] + ".json"


def partial_weights_path(weights_path):
    """Where `save_model_weights` writes the weights before renaming them to `weights_path`."""
    # Keras picks the format from the name, so the temporary file keeps the suffix.
    return weights_path[: -len(sources.WEIGHTS_SUFFIX)] + ".partial" + sources.WEIGHTS_SUFFIX


def save_model_weights(model, weights_path, **metadata):
    """Writes the weights and the architecture JSON, each atomically.

    Both are written in full before the weights replace the old ones, so a
    write that fails (a full disk) leaves the old pair, and no temporary file.
    """
    json_path = architecture_path(weights_path)  # Checks the suffix first.
    os.makedirs(os.path.dirname(os.path.abspath(weights_path)), exist_ok=True)
    tmp_path = partial_weights_path(weights_path)
    description = {"format": _FORMAT, "architecture": model.architecture(), **metadata}
    try:
        model.save_weights(tmp_path)
        with atomic_write(json_path, "w") as f:
            json.dump(description, f, indent=2)
        os.replace(tmp_path, weights_path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp_path)
        raise


def read_model_description(weights_path):
    path = architecture_path(weights_path)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{weights_path!r} has no architecture file beside it: expected {path!r} "
            "(written with the weights by checkpoints/convert_tf1.py and train.py)."
        )
    with open(path, encoding="utf-8") as f:
        description = json.load(f)
    if description.get("format") != _FORMAT or "architecture" not in description:
        raise ValueError(f"{path!r} is not a tf_pacseg architecture file.")
    return description


def stored_class_names(path):
    """The class names in the architecture JSON of a model (its `class_names` key), if any.

    Args:
        path: str. As in `load_model`.

    Returns:
        A tuple of str, one per class; `None` for a TF1 checkpoint or a JSON
        file without `class_names`.

    Raises:
        FileNotFoundError: `path` holds no model.
        ValueError: `class_names` is not a list of distinct names, one per
            class of the stored architecture.
    """
    source = sources.model_source(path)
    if source.kind != sources.KERAS:
        return None
    description = read_model_description(source.path)
    names = description.get("class_names")
    if names is None:
        return None
    num_classes = description["architecture"]["num_classes"]
    if (
        not isinstance(names, list)
        or len(names) != num_classes
        or not all(isinstance(name, str) and name for name in names)
        or len(set(names)) != len(names)
    ):
        raise ValueError(
            f"{architecture_path(source.path)!r} holds class_names={names!r}: expected a "
            f"list of {num_classes} distinct names, one per class of its model."
        )
    return tuple(names)


def load_model(path, **overrides):
    """Builds and loads a model from a weights file, a model_dir, or a TF1 checkpoint.

    Args:
        path: str. A `.weights.h5` file with its `.json`; a directory holding
            `model.weights.h5` (a training run, a converter output); or an
            original TF1 checkpoint (prefix, or directory with a `checkpoint`
            file), converted on the fly with the architecture read from it.
        **overrides: arguments of `build_model` replacing the stored ones,
            e.g. `output_stride=8` (the weights do not depend on it).

    Returns:
        A `PACSegmenter` with the weights loaded.

    Raises:
        FileNotFoundError: `path` holds no model.
    """
    overrides = {key: value for key, value in overrides.items() if value is not None}
    source = sources.model_source(path)
    if source.kind == sources.KERAS:
        stored = read_model_description(source.path)["architecture"]

        def load(model):
            model.load_weights(source.path)

    else:
        stored = tf1_checkpoint.read_architecture(source.path)
        if stored["head"] is None:
            raise ValueError(
                f"{path!r} is a backbone-only (ImageNet) checkpoint; it has no head to "
                "segment with. Use it as --pre_trained_model for training."
            )

        def load(model):
            tf1_checkpoint.load_tf1_checkpoint(model, source.path)

    # Weights load into the layers they were saved from. Another output stride
    # changes layers (strided vs dilated convs, ASPP's rate-named branches) but
    # not the weights, which are then copied over in graph order.
    output_stride = overrides.pop("output_stride", stored["output_stride"])
    with without_initial_values():  # Every weight is loaded or transferred.
        model = build_model(**{**stored, **overrides})
        load(model)
        if output_stride != model.output_stride:
            target = build_model(**{**stored, **overrides, "output_stride": output_stride})
            transfer_weights(model, target)
            model = target
    return model


def transfer_weights(source, target):
    """Copies weights between models that differ only in output stride."""
    pairs = list(
        zip(tf1_checkpoint.leaf_layers(source), tf1_checkpoint.leaf_layers(target), strict=True)
    )
    for source_layer, target_layer in pairs:
        for source_weight, target_weight in zip(
            source_layer.weights, target_layer.weights, strict=True
        ):
            target_weight.assign(source_weight)


def convert_tf1_checkpoint(checkpoint, weights_path, **overrides):
    """Converts an original TF1 checkpoint into `<stem>.weights.h5` + `<stem>.json`.

    Returns:
        (model, `tf1_checkpoint.LoadReport`).
    """
    checks.ends_with("output_path", weights_path, sources.WEIGHTS_SUFFIX)
    architecture = tf1_checkpoint.read_architecture(checkpoint)
    if architecture["head"] is None:
        raise ValueError(
            f"{checkpoint!r} is a backbone-only (ImageNet) checkpoint. train.py reads it "
            "directly: --pre_trained_model=<prefix>."
        )
    overrides = {key: value for key, value in overrides.items() if value is not None}
    with without_initial_values():  # The checkpoint holds every weight, or loading fails.
        model = build_model(**{**architecture, **overrides})
    report = tf1_checkpoint.load_tf1_checkpoint(model, checkpoint)
    save_model_weights(model, weights_path, source=report.checkpoint)
    return model, report
