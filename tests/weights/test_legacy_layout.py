"""Models written before the package was reorganised (commit b7cc896) still load.

tests/fixtures/legacy_layout.json records what the old code wrote for the
tiny architecture (`helpers.TINY_ARCHITECTURE`, 21 classes): `model.json`,
the datasets of `model.weights.h5`, the TensorFlow engine's training
checkpoint and the JAX engine's `.npz` checkpoint (names and shapes), and the
names the layers are registered under in Keras. The weights themselves are
too big to keep. Regenerate it with this file run as a script on the old tree:

    git archive b7cc896 | tar -x -C /tmp/old
    KERAS_BACKEND=tensorflow PYTHONPATH=/tmp/old:tests \
        python <this file> tests/fixtures/legacy_layout.json
"""

import json
import os
import subprocess
import sys
import tempfile

import h5py
import keras
import numpy as np
import pytest
from helpers import TESTS, TINY_ARCHITECTURE, randomize_weights, run_python

import tf_pacseg
from tf_pacseg import training

FIXTURE = TESTS / "fixtures" / "legacy_layout.json"
STEP = 5
# Prints `jax_engine_layout(argv[1])`, run with KERAS_BACKEND=jax.
_JAX_LAYOUT_SCRIPT = (
    f"import sys, json; sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})\n"
    "import test_legacy_layout as t; print(json.dumps(t.jax_engine_layout(sys.argv[1])))"
)


def _config(model_dir):
    return training.TrainConfig(
        **TINY_ARCHITECTURE,
        num_gpu=0,
        batch_size=2,
        input_height=33,
        input_width=33,
        pre_trained_model="",
        data_dir="",
        model_dir=model_dir,
        seed=1,
    )


def _save_new_engine(model_dir):
    """Builds the engine of the Keras backend and saves it at `STEP` into `model_dir`."""
    # Variable paths hold per-process counters (seed_generator_1, ...).
    keras.backend.clear_session()
    engine = training.create_engine(_config(model_dir))
    engine.build()
    # b7cc896's engines (the fixture's) save through their checkpointer.
    save = engine.save if hasattr(engine, "save") else engine.checkpointer.save
    save(STEP, input_position=STEP)


def _h5_datasets(path):
    """Sorted [name, shape] of every dataset in an HDF5 file."""
    found = []
    with h5py.File(path, "r") as f:
        f.visititems(
            lambda name, item: (
                found.append([name, list(item.shape)]) if isinstance(item, h5py.Dataset) else None
            )
        )
    return sorted(found)


def _layers(layer):
    """`layer` and, recursively, the layers of the models in it."""
    yield layer
    for child in getattr(layer, "layers", ()):
        yield from _layers(child)


def registered_names():
    """Sorted Keras registered names of the tiny model and all its layers."""
    model = tf_pacseg.build_model(**TINY_ARCHITECTURE)
    return sorted({keras.saving.get_registered_name(type(layer)) for layer in _layers(model)})


def tf_engine_layout(model_dir):
    """What the TensorFlow engine writes at a save: model.json, the .h5, the checkpoint."""
    import tensorflow as tf

    _save_new_engine(model_dir)
    with open(os.path.join(model_dir, "model.json"), encoding="utf-8") as f:
        model_json = f.read()
    prefix = tf.train.latest_checkpoint(model_dir)
    return {
        "model_json": model_json,
        "weights_h5": _h5_datasets(os.path.join(model_dir, "model.weights.h5")),
        "tf_checkpoint": sorted(
            [name, list(shape)] for name, shape in tf.train.list_variables(prefix)
        ),
    }


def jax_engine_layout(model_dir):
    """The JAX engine's `ckpt-<step>.npz`: its arrays and the variable paths it stores."""
    _save_new_engine(model_dir)
    with np.load(os.path.join(model_dir, f"ckpt-{STEP}.npz")) as arrays:
        return {
            "arrays": sorted([key, list(arrays[key].shape)] for key in arrays.files),
            "model_paths": [str(p) for p in arrays["model_paths"]],
            "optimizer_paths": [str(p) for p in arrays["optimizer_paths"]],
        }


def _record(path):
    """Writes the fixture from the tf_pacseg on the path; the JAX part in a subprocess."""
    with tempfile.TemporaryDirectory() as work:
        layout = {"registered_names": registered_names(), **tf_engine_layout(work)}
        result = subprocess.run(
            [sys.executable, "-c", _JAX_LAYOUT_SCRIPT, os.path.join(work, "jax")],
            env=dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu"),
            cwd=work,  # Not the checkout: `-c` puts the working directory on the path.
            capture_output=True,
            text=True,
            check=True,
        )
    layout["jax_checkpoint"] = json.loads(result.stdout.strip().splitlines()[-1])
    with open(path, "w", encoding="utf-8") as f:
        json.dump(layout, f, indent=1)
        f.write("\n")


@pytest.fixture(scope="module")
def legacy():
    with open(FIXTURE, encoding="utf-8") as f:
        return json.load(f)


@pytest.fixture(scope="module")
def tf_layout(tmp_path_factory):
    return tf_engine_layout(os.fspath(tmp_path_factory.mktemp("tf_engine")))


# Layer classes added since the fixture was written (1x1 convolutions as
# matrix products on JAX).
ADDED_LAYER_NAMES = {"tf_pacseg>Conv2D"}


def test_the_layers_keep_their_registered_names(legacy):
    """Every name the old code registered still resolves; only the added ones are new."""
    names = set(registered_names())
    assert names - ADDED_LAYER_NAMES <= set(legacy["registered_names"])
    assert ADDED_LAYER_NAMES <= names
    for name in legacy["registered_names"]:
        resolved = keras.saving.get_registered_object(name) or getattr(keras.layers, name, None)
        assert resolved is not None, name


def test_training_writes_the_same_model_json(legacy, tf_layout):
    assert tf_layout["model_json"] == legacy["model_json"]


def test_weights_files_keep_their_dataset_names_and_shapes(legacy, tf_layout):
    assert tf_layout["weights_h5"] == legacy["weights_h5"]


def test_tf_training_checkpoints_keep_their_keys_and_shapes(legacy, tf_layout):
    assert tf_layout["tf_checkpoint"] == legacy["tf_checkpoint"]


def test_jax_training_checkpoints_keep_their_arrays_and_variable_paths(legacy, tmp_path):
    result = run_python(_JAX_LAYOUT_SCRIPT, [tmp_path / "jax"], backend="jax")
    layout = json.loads(result.stdout.strip().splitlines()[-1])
    assert layout == legacy["jax_checkpoint"]


def test_a_model_dir_with_the_old_model_json_loads(legacy, tmp_path):
    model = randomize_weights(tf_pacseg.build_model(**TINY_ARCHITECTURE))
    tf_pacseg.save_model_weights(model, os.fspath(tmp_path / "model.weights.h5"))
    (tmp_path / "model.json").write_text(legacy["model_json"], encoding="utf-8")
    loaded = tf_pacseg.load_model(os.fspath(tmp_path))
    assert loaded.architecture() == model.architecture()
    images = np.random.default_rng(0).uniform(0, 255, (1, 23, 18, 3)).astype("float32")
    np.testing.assert_array_equal(
        np.asarray(loaded(images, training=False)), np.asarray(model(images, training=False))
    )


if __name__ == "__main__":
    print(f"Recording the layout of {tf_pacseg.__file__}", file=sys.stderr)
    _record(sys.argv[1])
