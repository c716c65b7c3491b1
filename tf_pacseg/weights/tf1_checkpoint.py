"""Reading the original's TF1 name-based checkpoints into the Keras model.

Handles the released Estimator checkpoint (every network variable plus
`global_step` and `.../Momentum` slots) and DeepLab's ImageNet backbones
(`resnet_v1_101_beta`: backbone plus `<arch>/logits`). Variable names map to
layers by the convention of `tf_pacseg.model.layers`: layer `a.b.conv1` holds TF1's
`a/b/conv1/...` (docs/design.md §2).
"""

import dataclasses
import os
import re

import numpy as np
import tensorflow as tf

from tf_pacseg import constants
from tf_pacseg.model.backbones import UNITS_PER_BLOCK

# Keras weight name -> TF1-slim variable name.
_TF1_WEIGHT_NAMES = {
    "kernel": "weights",
    "bias": "biases",
    "gamma": "gamma",
    "beta": "beta",
    "moving_mean": "moving_mean",
    "moving_variance": "moving_variance",
}
_OPTIMIZER_SLOT = re.compile(r"/Momentum$")
_NON_MODEL_NAMES = ("global_step",)
_UNIT = re.compile(r"^(resnet_v[12]_(?:50|101))/block(\d)/unit_(\d+)/")


class CheckpointMismatchError(ValueError):
    """The checkpoint does not hold the variables the model needs."""


@dataclasses.dataclass
class LoadReport:
    """What `load_tf1_checkpoint` did: TF1 names loaded, and skipped with why."""

    checkpoint: str
    loaded: list
    skipped: dict  # name -> reason

    def summary(self):
        reasons = {}
        for reason in self.skipped.values():
            reasons[reason] = reasons.get(reason, 0) + 1
        parts = [f"loaded {len(self.loaded)} variables from {self.checkpoint}"]
        parts += [f"skipped {count} ({reason})" for reason, count in sorted(reasons.items())]
        return "; ".join(parts)


def resolve_checkpoint_path(path):
    """A checkpoint prefix from a prefix or a directory holding a `checkpoint` file."""
    if os.path.isdir(path):
        prefix = tf.train.latest_checkpoint(path)
        if prefix is None:
            raise FileNotFoundError(
                f"No TF1 checkpoint in directory {path!r}: it has no `checkpoint` file "
                "naming one. Pass the checkpoint prefix (e.g. model/model.ckpt-30000)."
            )
        return prefix
    if not tf.io.gfile.glob(path + ".index"):
        raise FileNotFoundError(
            f"No TF1 checkpoint at {path!r}: expected {path}.index and {path}.data-* "
            "(pass the prefix, without the .index/.data suffix)."
        )
    return path


def _read_shapes(path):
    return tf.train.load_checkpoint(path).get_variable_to_shape_map()


def is_tf1_checkpoint(path):
    """Whether `path` is a TF1 checkpoint prefix or a directory with one."""
    try:
        resolve_checkpoint_path(path)
    except FileNotFoundError:
        return False
    return True


def read_architecture(path):
    """Reads the architecture of a checkpoint from its variable names and shapes.

    Returns:
        dict with `base_architecture`, `head` (`"pac"`, `"aspp"`, or `None` for
        a backbone-only ImageNet checkpoint), `num_classes` (`None` without a
        decoder), `output_stride` (16 unless the ASPP rates say 8; PAC's rates
        do not depend on it), `multi_grid` and `units_per_block` (`None` when
        the architecture's standard depth).
    """
    shapes = _read_shapes(resolve_checkpoint_path(path))
    return _architecture_from_shapes(shapes, path)


def _architecture_from_shapes(shapes, path):
    units = {}
    bases = set()
    for name in shapes:
        match = _UNIT.match(name)
        if match:
            bases.add(match.group(1))
            block, unit = int(match.group(2)), int(match.group(3))
            units[block] = max(units.get(block, 0), unit)
    if len(bases) != 1 or sorted(units) != [1, 2, 3, 4]:
        raise CheckpointMismatchError(
            f"{path!r} is not a checkpoint of this project's networks: expected the "
            f"variables of one of {constants.BASE_ARCHITECTURES} (e.g. "
            "resnet_v1_101/block1/unit_1/...)."
        )
    base_architecture = bases.pop()
    units_per_block = tuple(units[b] for b in (1, 2, 3, 4))
    if any(name.startswith("network/feature_extraction/") for name in shapes):
        head = "pac"
    elif any(name.startswith("network/aspp/") for name in shapes):
        head = "aspp"
    else:
        head = None
    output_stride = 16
    if head == "aspp" and any(name.startswith("network/aspp/conv_3x3_24/") for name in shapes):
        output_stride = 8
    decoder = shapes.get("network/conv2d/weights")
    return {
        "base_architecture": base_architecture,
        "head": head,
        "output_stride": output_stride,
        "num_classes": int(decoder[-1]) if decoder else None,
        "multi_grid": [1, 2, 4],
        "units_per_block": (
            None if units_per_block == UNITS_PER_BLOCK[base_architecture] else list(units_per_block)
        ),
    }


def tf1_variable_map(model, backbone_only=False):
    """{TF1 variable name: Keras variable} for `model` (a `PACSegmenter`)."""
    root = model.backbone if backbone_only else model
    mapping = {}
    for layer in leaf_layers(root):
        scope = layer.name.replace(".", "/")
        for variable in layer.weights:
            mapping[f"{scope}/{_TF1_WEIGHT_NAMES[variable.name]}"] = variable
    return mapping


def leaf_layers(model):
    """The layers holding weights, nested models flattened, in graph order."""
    for layer in model.layers:
        if hasattr(layer, "layers"):
            yield from leaf_layers(layer)
        elif layer.weights:
            yield layer


def _describe(architecture):
    if architecture["head"] is None:
        return f"a {architecture['base_architecture']} ImageNet backbone"
    return (
        f"{architecture['base_architecture']} + {architecture['head']} "
        f"({architecture['num_classes']} classes)"
    )


def load_tf1_checkpoint(model, path, backbone_only=False):
    """Loads a TF1 checkpoint of the original code into `model`.

    Args:
        model: `tf_pacseg.PACSegmenter`.
        path: str. Checkpoint prefix, or a directory with a `checkpoint` file.
        backbone_only: bool. Load only the backbone (e.g. from the ImageNet
            `resnet_v1_101_beta` checkpoint), skipping its `logits` and leaving
            the head and decoder as they are. Defaults to `False`.

    Returns:
        `LoadReport` of the loaded and skipped TF1 variable names.

    Raises:
        CheckpointMismatchError: a variable the model needs is missing or has
            another shape, or the checkpoint has variables of the model's
            scopes the model lacks; the message names them and, when it can
            tell, the checkpoint's architecture.
    """
    prefix = resolve_checkpoint_path(path)
    reader = tf.train.load_checkpoint(prefix)
    shapes = reader.get_variable_to_shape_map()
    targets = tf1_variable_map(model, backbone_only=backbone_only)

    scopes = (
        (f"{model.base_architecture}/",)
        if backbone_only
        else (f"{model.base_architecture}/", "network/")
    )
    skipped = {}
    unexpected = []
    for name in shapes:
        if name in targets:
            continue
        if _OPTIMIZER_SLOT.search(name):
            skipped[name] = "optimizer slot"
        elif name in _NON_MODEL_NAMES:
            skipped[name] = "training state"
        elif name.startswith(f"{model.base_architecture}/logits/"):
            skipped[name] = "ImageNet classifier"
        elif name == f"{model.base_architecture}/conv1/biases":
            # slim's ImageNet ResNet v2 has a root bias; the original's root
            # conv has none and its initialisation drops it too.
            skipped[name] = "ImageNet root bias"
        elif backbone_only and name.startswith("network/"):
            skipped[name] = "head/decoder (backbone_only)"
        elif name.startswith(scopes):
            unexpected.append(name)
        else:
            skipped[name] = "outside the model's scopes"

    missing = sorted(name for name in targets if name not in shapes)
    wrong_shape = [
        (name, tuple(var.shape), tuple(shapes[name]))
        for name, var in targets.items()
        if name in shapes and tuple(shapes[name]) != tuple(var.shape)
    ]
    if missing or wrong_shape or unexpected:
        raise CheckpointMismatchError(
            _mismatch_message(model, prefix, shapes, targets, missing, wrong_shape, unexpected)
        )

    for name, variable in targets.items():
        variable.assign(np.asarray(reader.get_tensor(name), dtype=variable.dtype))
    return LoadReport(checkpoint=prefix, loaded=sorted(targets), skipped=skipped)


def _mismatch_message(model, prefix, shapes, targets, missing, wrong_shape, unexpected):
    lines = [f"Checkpoint {prefix!r} does not match the model."]
    try:
        found = _architecture_from_shapes(shapes, prefix)
    except CheckpointMismatchError:
        found = None
    wanted = model.architecture()
    if found is not None and (
        found["base_architecture"] != wanted["base_architecture"]
        or (found["head"] is not None and found["head"] != wanted["head"])
    ):
        lines.append(
            f"It holds {_describe(found)}; the model is {_describe(wanted)}. Build the "
            f"model with base_architecture={found['base_architecture']!r}"
            + (f", head={found['head']!r}" if found["head"] else "")
            + " (or let the scripts read the architecture from the checkpoint)."
        )
    limit = 10
    if missing:
        lines.append(f"Missing {len(missing)} variables, e.g.:")
        lines += [f"  {n} (expected shape {tuple(targets[n].shape)})" for n in missing[:limit]]
    if wrong_shape:
        lines.append(f"{len(wrong_shape)} variables have another shape:")
        lines += [f"  {n}: expected {want}, found {got}" for n, want, got in wrong_shape[:limit]]
    if unexpected:
        lines.append(f"{len(unexpected)} variables are not in the model, e.g.:")
        lines += [f"  {n} {tuple(shapes[n])}" for n in sorted(unexpected)[:limit]]
    return "\n".join(lines)
