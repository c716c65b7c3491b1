"""Which path holds a model, and whether two models' architectures share their weights.

A model on disk is Keras weights (`<stem>.weights.h5` beside `<stem>.json`,
or a directory holding `model.weights.h5`: a training run's model_dir, a
converter's output) or a TF1 checkpoint of the original (a prefix with
`.index` and `.data-*` files, or a directory whose `checkpoint` file names
one). Loading a model (`saving.load_model`), initialising a backbone
(`training.pretrained`) and fine-tuning a whole network
(`training.initialization`) all find it, and compare architectures, here.
"""

import dataclasses
import os

from tf_pacseg.model.backbones import UNITS_PER_BLOCK
from tf_pacseg.weights import tf1_checkpoint

WEIGHTS_SUFFIX = ".weights.h5"
MODEL_STEM = "model"
KERAS = "keras"
TF1 = "tf1"
# What must agree for a network's weights to mean the same in another (the
# output stride need not), and for its backbone's.
NETWORK_KEYS = ("base_architecture", "head", "multi_grid", "units_per_block")
BACKBONE_KEYS = ("base_architecture", "units_per_block")
_EXPECTED = (
    "a *.weights.h5 file with its .json, a directory holding model.weights.h5, or a TF1 "
    "checkpoint (a prefix with .index and .data-* files, or a directory with a `checkpoint` "
    "file)"
)


@dataclasses.dataclass(frozen=True)
class ModelSource:
    """A model found on disk.

    Attributes:
        kind: str. `KERAS` or `TF1`.
        path: str. The `.weights.h5` file (KERAS), or the path as given: a
            checkpoint prefix or its directory (TF1).
    """

    kind: str
    path: str


def find_weights(path):
    """The weights of `path`: a `.weights.h5` file, or `model.weights.h5` in a directory."""
    if os.path.isdir(path):
        candidate = os.path.join(path, MODEL_STEM + WEIGHTS_SUFFIX)
        return candidate if os.path.isfile(candidate) else None
    return path if path.endswith(WEIGHTS_SUFFIX) and os.path.isfile(path) else None


def find_model(path):
    """The `ModelSource` at `path` (Keras weights first), or `None` when there is none."""
    weights = find_weights(path)
    if weights is not None:
        return ModelSource(KERAS, weights)
    if tf1_checkpoint.is_tf1_checkpoint(path):
        return ModelSource(TF1, path)
    return None


def model_source(path, subject=None, hint=""):
    """The `ModelSource` at `path`.

    Args:
        path: str. A `.weights.h5` file, a directory holding
            `model.weights.h5`, a TF1 checkpoint prefix or a directory with a
            `checkpoint` file.
        subject: str or None. What the error message calls `path`, e.g.
            `"--init_checkpoint"`. Defaults to `None`.
        hint: str. Appended to the error message. Defaults to `""`.

    Raises:
        FileNotFoundError: `path` holds no model; the message names it and
            what was expected.
    """
    source = find_model(path)
    if source is None:
        named = f"{subject} {path!r}" if subject else repr(path)
        raise FileNotFoundError(
            f"{named} does not exist or is not a model: expected {_EXPECTED}.{hint}"
        )
    return source


def normalized_architecture(architecture):
    """`architecture` (as `PACSegmenter.architecture()`) with lists, and the depth spelt out.

    `units_per_block=None` means the base architecture's own depth, so it
    compares equal to that depth written out.
    """
    units = architecture["units_per_block"] or UNITS_PER_BLOCK[architecture["base_architecture"]]
    return {
        **architecture,
        "multi_grid": list(architecture["multi_grid"]),
        "units_per_block": list(units),
    }


def check_compatible(ours, theirs, keys, subject, hint=""):
    """Raises unless architecture `theirs` (of `subject`) agrees with `ours` on `keys`.

    Args:
        ours: dict. The architecture of the model to load into.
        theirs: dict. The architecture of the model found at `subject`.
        keys: tuple of str. `NETWORK_KEYS` or `BACKBONE_KEYS`.
        subject: str. Names the source in the message, e.g.
            `"--init_checkpoint 'released/model.ckpt'"`.
        hint: str. Appended to the message. Defaults to `""`.

    Raises:
        ValueError: naming the first key that differs and both values.
    """
    ours, theirs = normalized_architecture(ours), normalized_architecture(theirs)
    for key in keys:
        if ours[key] != theirs[key]:
            raise ValueError(
                f"{subject} holds a model with {key}={theirs[key]!r}; the model to load it "
                f"into has {key}={ours[key]!r}.{hint}"
            )
