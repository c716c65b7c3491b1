"""--init_checkpoint: fine-tuning starts from a whole trained network, classifier aside."""

import dataclasses
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers import make_records, randomize_weights
from training_runs import Recorder, tiny_config, train_watched

from tf_pacseg import training
from tf_pacseg.model.backbones import UNITS_PER_BLOCK
from tf_pacseg.model.segmenter import build_model
from tf_pacseg.testing import tf1_checkpoints
from tf_pacseg.training import initialization, pretrained
from tf_pacseg.weights import saving, tf1_checkpoint

TINY = dict(base_architecture="resnet_v1_50", units_per_block=(1, 1, 1, 1))


def _model(num_classes=5, **overrides):
    config = training.TrainConfig(**{**TINY, **overrides}, num_classes=num_classes)
    return training.build_training_model(config)


def _values(model):
    return {name: v.numpy() for name, v in tf1_checkpoint.tf1_variable_map(model).items()}


@pytest.fixture(scope="module")
def released_layout(tmp_path_factory):
    """A TF1 checkpoint of the original network, 21 classes, with the Estimator's extras."""
    prefix = str(tmp_path_factory.mktemp("tf1") / "model.ckpt-30000")
    tf1_checkpoints.write_reference_checkpoint(
        prefix, head="pac", num_classes=21, seed=4, estimator_extras=True, **TINY
    )
    return prefix


def test_a_tf1_checkpoint_initialises_all_but_the_classifier_of_other_classes(released_layout):
    model = _model(num_classes=5)
    before = _values(model)
    message = initialization.load_init_checkpoint(model, released_layout)

    reader = tf.train.load_checkpoint(released_layout)
    after = _values(model)
    assert after.keys() - {initialization.CLASSIFIER}
    for name, value in after.items():
        if name == initialization.CLASSIFIER:
            np.testing.assert_array_equal(value, before[name])  # 21 classes there, 5 here.
        else:
            np.testing.assert_array_equal(value, reader.get_tensor(name), err_msg=name)
    assert f"({len(after) - 1} variables)" in message
    assert "skipped network/conv2d/weights (21 classes there, 5 here" in message


def test_a_tf1_checkpoint_of_the_same_classes_initialises_everything(released_layout):
    model = _model(num_classes=21)
    message = initialization.load_init_checkpoint(model, os.path.dirname(released_layout))
    reader = tf.train.load_checkpoint(released_layout)
    for name, value in _values(model).items():
        np.testing.assert_array_equal(value, reader.get_tensor(name), err_msg=name)
    assert "skipped" not in message


@pytest.mark.parametrize("as_directory", [False, True])
def test_a_weights_file_initialises_the_whole_network(tmp_path, as_directory):
    source = randomize_weights(_model(num_classes=5), seed=1)
    path = str(tmp_path / "model.weights.h5")
    saving.save_model_weights(source, path)
    model = _model(num_classes=5, output_stride=8)  # The weights do not depend on it.
    initialization.load_init_checkpoint(model, str(tmp_path) if as_directory else path)
    expected = _values(source)
    for name, value in _values(model).items():
        np.testing.assert_array_equal(value, expected[name], err_msg=name)


@pytest.mark.parametrize(
    "overrides, mismatch",
    [
        ({"head": "aspp"}, "head='pac'"),
        ({"units_per_block": (1, 2, 1, 1)}, r"units_per_block=\[1, 1, 1, 1\]"),
    ],
)
def test_another_architecture_is_an_error_naming_the_file_and_the_difference(
    released_layout, overrides, mismatch
):
    with pytest.raises(ValueError, match=rf"model.ckpt-30000.* {mismatch}"):
        initialization.load_init_checkpoint(_model(**overrides), released_layout)


# Both ways to start a fresh run from Keras weights: (flag, loader, what it loads).
_LOADERS = [
    ("--init_checkpoint", initialization.load_init_checkpoint, False),
    ("--pre_trained_model", pretrained.load_pretrained, True),
]


@pytest.mark.parametrize("saved, loaded", [(None, (1, 1, 1, 1)), ((1, 1, 1, 1), None)])
@pytest.mark.parametrize("flag, load, backbone_only", _LOADERS)
def test_the_default_depth_written_out_or_not_is_the_same_architecture(
    tmp_path, monkeypatch, saved, loaded, flag, load, backbone_only
):
    # resnet_v1_50's own depth made tiny, so that `None` builds a small network.
    monkeypatch.setitem(UNITS_PER_BLOCK, "resnet_v1_50", (1, 1, 1, 1))
    source = randomize_weights(build_model("resnet_v1_50", units_per_block=saved), seed=2)
    path = str(tmp_path / "model.weights.h5")
    saving.save_model_weights(source, path)
    model = build_model("resnet_v1_50", units_per_block=loaded)
    load(model, path)
    expected = tf1_checkpoint.tf1_variable_map(source, backbone_only=backbone_only)
    for name, variable in tf1_checkpoint.tf1_variable_map(model, backbone_only).items():
        np.testing.assert_array_equal(variable.numpy(), expected[name].numpy(), err_msg=name)
    with pytest.raises(ValueError, match=rf"^{flag} .* units_per_block=\[1, 1, 1, 1\]; .*\[1, 2,"):
        load(build_model("resnet_v1_50", units_per_block=(1, 2, 1, 1)), path)


def test_a_weights_file_of_other_shapes_is_an_error_naming_it(tmp_path):
    path = str(tmp_path / "model.weights.h5")
    saving.save_model_weights(_model(), path)
    # Its description claims another depth than its weights have.
    description = saving.read_model_description(path)
    description["architecture"]["units_per_block"] = [1, 2, 1, 1]
    with open(saving.architecture_path(path), "w", encoding="utf-8") as f:
        json.dump(description, f)
    with pytest.raises(ValueError, match="--init_checkpoint .*model.weights.h5"):
        initialization.load_init_checkpoint(_model(units_per_block=(1, 2, 1, 1)), path)


def test_init_checkpoint_excludes_pre_trained_model_but_drops_its_default():
    with pytest.raises(ValueError, match="init_checkpoint='a'.*pre_trained_model='b'"):
        training.TrainConfig(init_checkpoint="a", pre_trained_model="b")
    assert training.TrainConfig(init_checkpoint="a").pre_trained_model is None
    assert training.TrainConfig().pre_trained_model  # Still the original's default.


def test_the_flag_reaches_the_config():
    from absl import flags

    from tf_pacseg.cli import train_flags as training_flags

    values = flags.FlagValues()
    training_flags.define_flags(values)
    values(["train.py", "--init_checkpoint=released/model.ckpt-30000", "--num_classes=3"])
    config = training_flags.config_from_flags(values)
    assert config.init_checkpoint == "released/model.ckpt-30000"
    assert config.pre_trained_model is None and config.num_classes == 3


def test_a_missing_init_checkpoint_is_an_error_naming_it(tmp_path):
    missing = str(tmp_path / "released" / "model.ckpt")
    config = training.TrainConfig(init_checkpoint=missing)
    with pytest.raises(FileNotFoundError, match=f"--init_checkpoint '{missing}'"):
        initialization.check_sources(config)


@pytest.mark.slow
def test_training_starts_from_the_init_checkpoint_and_a_resume_ignores_it(
    tmp_path, released_layout, caplog, monkeypatch
):
    caplog.set_level("INFO", logger="absl")
    config = tiny_config(
        make_records(str(tmp_path)),
        str(tmp_path / "model"),
        init_checkpoint=released_layout,
        max_iter=1,
    )
    # Watched runs: the same training, without the export that nothing here reads.
    assert train_watched(monkeypatch, Recorder(), config).step == 1
    assert "Initialised the whole network from" in caplog.text
    assert "skipped network/conv2d/weights" in caplog.text
    caplog.clear()
    caplog.set_level("INFO", logger="absl")  # Again: the first run leaves it above INFO.
    config = dataclasses.replace(config, max_iter=2)
    assert train_watched(monkeypatch, Recorder(), config).step == 2
    assert "Ignoring --init_checkpoint: model_dir holds a checkpoint." in caplog.text
    assert "Initialised" not in caplog.text


class _FirstWeights(Recorder):
    """Keeps the weights the first step starts from: the run's initialisation."""

    def before_step(self, engine):
        if len(self.batches) == 1:
            self.first = {v.path: np.array(v.value) for v in engine.evaluation_model().weights}


@pytest.mark.parametrize("flag", ["init_checkpoint", "pre_trained_model"])
def test_a_run_draws_the_initial_values_of_what_it_does_not_load(
    tmp_path, released_layout, monkeypatch, flag
):
    # The released layout has 21 classes: --init_checkpoint leaves the classifier drawn.
    config = tiny_config(
        make_records(str(tmp_path)), str(tmp_path / "model"), max_iter=1, **{flag: released_layout}
    )
    drawn, draw = [], keras.initializers.VarianceScaling.__call__  # he_normal, glorot_uniform

    def recorded(self, shape, dtype=None, **kwargs):
        drawn.append(tuple(shape))
        return draw(self, shape, dtype, **kwargs)

    monkeypatch.setattr(keras.initializers.VarianceScaling, "__call__", recorded)
    recorder = _FirstWeights()
    train_watched(monkeypatch, recorder, config)
    drawn_by_run = drawn[:]  # Not those of the model built below.
    # Built without drawing the loaded weights: none of the loaded or drawn ones is zero.
    never_zero = ("kernel", "gamma", "moving_variance")
    checked = {path: value for path, value in recorder.first.items() if path.endswith(never_zero)}
    assert checked and [path for path, value in checked.items() if not np.any(value)] == []
    reader = tf.train.load_checkpoint(released_layout)
    expected = {
        variable.path: reader.get_tensor(name)
        for name, variable in tf1_checkpoint.tf1_variable_map(_model()).items()
        if name != initialization.CLASSIFIER
        and (flag == "init_checkpoint" or not name.startswith("network/"))
    }
    for path, value in expected.items():
        np.testing.assert_array_equal(recorder.first[path], value, err_msg=path)
    # Only the kernels that nothing loads were drawn.
    kernels = [path for path in recorder.first if path.endswith("kernel")]
    unloaded = [recorder.first[path].shape for path in kernels if path not in expected]
    assert unloaded
    assert sorted(drawn_by_run) == sorted(unloaded)
