"""Which path holds a model, and when two architectures share their weights."""

import os

import pytest
import tensorflow as tf

from tf_pacseg.weights import sources


@pytest.fixture(scope="module")
def tf1_prefix(tmp_path_factory):
    """A name-based TF1 checkpoint (one variable), with its `checkpoint` file."""
    directory = tmp_path_factory.mktemp("tf1")
    saver = tf.compat.v1.train.Saver(var_list={"x": tf.Variable(1.0)})
    return saver.save(None, os.fspath(directory / "model.ckpt"))


def test_keras_weights_are_found_as_a_file_or_in_a_directory(tmp_path):
    weights = tmp_path / "model.weights.h5"
    weights.write_bytes(b"")
    expected = sources.ModelSource(sources.KERAS, os.fspath(weights))
    assert sources.model_source(os.fspath(weights)) == expected
    assert sources.model_source(os.fspath(tmp_path)) == expected


def test_a_tf1_checkpoint_is_found_by_prefix_or_directory(tf1_prefix):
    directory = os.path.dirname(tf1_prefix)
    assert sources.model_source(tf1_prefix) == sources.ModelSource(sources.TF1, tf1_prefix)
    assert sources.model_source(directory) == sources.ModelSource(sources.TF1, directory)


def test_keras_weights_come_before_a_tf1_checkpoint_in_the_same_directory(tf1_prefix):
    directory = os.path.dirname(tf1_prefix)
    weights = os.path.join(directory, "model.weights.h5")
    with open(weights, "wb"):
        pass
    try:
        assert sources.find_model(directory) == sources.ModelSource(sources.KERAS, weights)
    finally:
        os.remove(weights)


def test_no_model_is_an_error_naming_the_path_the_flag_and_the_hint(tmp_path):
    missing = os.fspath(tmp_path / "nothing" / "model.ckpt")
    assert sources.find_model(missing) is None
    with pytest.raises(FileNotFoundError, match=f"^--flag '{missing}' does not exist .* Hint.$"):
        sources.model_source(missing, "--flag", hint=" Hint.")
    not_weights = tmp_path / "model.h5"  # A file, but not of a known kind.
    not_weights.write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"model\.h5' does not exist or is not a model"):
        sources.model_source(os.fspath(not_weights))


def _architecture(**overrides):
    return {
        "base_architecture": "resnet_v1_50",
        "head": "pac",
        "output_stride": 16,
        "num_classes": 21,
        "multi_grid": [1, 2, 4],
        "units_per_block": None,
        **overrides,
    }


def test_the_default_depth_written_out_is_the_same_architecture():
    explicit = _architecture(units_per_block=(3, 4, 6, 3), multi_grid=(1, 2, 4))
    assert sources.normalized_architecture(_architecture())["units_per_block"] == [3, 4, 6, 3]
    for ours, theirs in ((_architecture(), explicit), (explicit, _architecture())):
        sources.check_compatible(ours, theirs, sources.NETWORK_KEYS, "x")
        sources.check_compatible(ours, theirs, sources.BACKBONE_KEYS, "x")


@pytest.mark.parametrize(
    "theirs, keys, match",
    [
        ({"units_per_block": [3, 4, 23, 3]}, "BACKBONE_KEYS", r"units_per_block=\[3, 4, 23, 3\]"),
        (
            {"base_architecture": "resnet_v2_50"},
            "BACKBONE_KEYS",
            "base_architecture='resnet_v2_50'",
        ),
        ({"head": "aspp"}, "NETWORK_KEYS", "head='aspp'"),
        ({"multi_grid": [1, 1, 1]}, "NETWORK_KEYS", r"multi_grid=\[1, 1, 1\]"),
    ],
)
def test_another_architecture_is_an_error_naming_the_source_and_both_values(theirs, keys, match):
    with pytest.raises(ValueError, match=rf"^--flag 'a' holds a model with {match}; .* Hint\.$"):
        sources.check_compatible(
            _architecture(), _architecture(**theirs), getattr(sources, keys), "--flag 'a'", " Hint."
        )


def test_the_head_and_the_output_stride_do_not_matter_to_a_backbone():
    theirs = _architecture(head="aspp", output_stride=8, num_classes=5, multi_grid=[1, 1, 1])
    sources.check_compatible(_architecture(), theirs, sources.BACKBONE_KEYS, "x")
