"""BatchNorm folded into the conv before it: the same logits on both backends and from TF1."""

import json
import os
import textwrap

import keras
import numpy as np
import pytest
from harness import assert_config_round_trip, assert_saving_round_trip
from helpers import randomize_weights, run_python

from tf_pacseg import build_model
from tf_pacseg.model.backbones import ResNetBackbone
from tf_pacseg.model.folding import fold_batch_norms
from tf_pacseg.model.layers import BatchNorm

TINY = (1, 1, 1, 1)
NETWORKS = [(base, head) for base in ("resnet_v1_50", "resnet_v2_50") for head in ("pac", "aspp")]


def _images(shape, seed):
    return np.random.default_rng(seed).uniform(0.0, 255.0, shape).astype("float32")


# odd square, even non-square with batch 2
IMAGES = [_images((1, 33, 33, 3), 0), _images((2, 24, 38, 3), 1)]


def assert_logits_match(ours, reference):
    """max |ours - reference| <= 1e-4 x the reference's logit range (docs/design.md §1)."""
    ours, reference = np.asarray(ours), np.asarray(reference)
    assert ours.shape == reference.shape
    spread = float(reference.max() - reference.min())
    assert spread > 1.0  # the reference is far from constant
    error = float(np.abs(ours - reference).max())
    assert error <= 1e-4 * spread, f"max error {error:.3g} vs logit range {spread:.3g}"


def _random_model(base_architecture, head, seed, **kwargs):
    model = build_model(base_architecture, head, units_per_block=TINY, **kwargs)
    return randomize_weights(model, seed=seed, residual_scale=0.35)


def _batch_norms(model):
    """Names of the BatchNorm layers, nested models opened."""
    names = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            names += _batch_norms(layer)
        elif isinstance(layer, BatchNorm):
            names.append(layer.name)
    return names


@pytest.mark.parametrize("output_stride", [16, 8])
@pytest.mark.parametrize("base_architecture,head", NETWORKS)
def test_folded_network_gives_the_unfolded_logits(base_architecture, head, output_stride):
    seed = NETWORKS.index((base_architecture, head))
    model = _random_model(base_architecture, head, seed, output_stride=output_stride)
    folded = fold_batch_norms(model)
    for images in IMAGES:
        assert_logits_match(folded(images, training=False), model(images, training=False))


@pytest.mark.parametrize("base_architecture,head", NETWORKS)
def test_only_batch_norms_after_no_conv_stay(base_architecture, head):
    model = _random_model(base_architecture, head, seed=5)
    before = [np.asarray(w).copy() for w in model.weights]
    folded = fold_batch_norms(model)
    assert folded.fold_batch_norm and not model.fold_batch_norm
    remaining = _batch_norms(folded)
    if base_architecture.startswith("resnet_v1"):
        assert remaining == []
    else:  # v2's pre-activations and final norm follow an addition, not a conv.
        assert remaining and all(name.endswith((".preact", ".postnorm")) for name in remaining)
    assert set(remaining) < set(_batch_norms(model))
    folded_pairs = [name for name in _batch_norms(model) if name not in remaining]
    # Each folded BatchNorm's 4 variables become its conv's bias.
    assert len(folded.weights) == len(model.weights) - 3 * len(folded_pairs)
    layers = {layer.name: layer for layer in folded.backbone.layers + folded.layers}
    for name in folded_pairs:
        assert layers[name.removesuffix(".BatchNorm")].use_bias, name
    for value, weight in zip(before, model.weights, strict=True):  # The source is untouched.
        np.testing.assert_array_equal(np.asarray(weight), value)


def test_folded_backbone_gives_the_unfolded_features():
    backbone = ResNetBackbone("resnet_v2_50", units_per_block=TINY)
    randomize_weights(backbone, seed=6, residual_scale=0.35)
    inputs = IMAGES[1] / 127.5 - 1.0
    assert_logits_match(
        fold_batch_norms(backbone)(inputs, training=False), backbone(inputs, training=False)
    )


def test_folded_model_survives_config_and_keras_file_round_trips(tmp_path):
    folded = fold_batch_norms(_random_model("resnet_v1_50", "pac", seed=7))
    clone = assert_config_round_trip(folded, IMAGES[0], {"training": False})
    assert clone.get_config()["fold_batch_norm"] is True
    loaded = assert_saving_round_trip(folded, IMAGES[0], tmp_path, {"training": False})
    assert _batch_norms(loaded) == []


def test_fold_batch_norms_rejects_a_model_without_the_option():
    inputs = keras.Input((4, 4, 3))
    model = keras.Model(inputs, BatchNorm()(keras.layers.Conv2D(2, 1)(inputs)))
    with pytest.raises(ValueError, match="Received: model of class Functional"):
        fold_batch_norms(model)


# --- the original's checkpoints ------------------------------------------------------


@pytest.mark.parametrize(
    "base_architecture,head,output_stride,winograd",
    [
        (*network, winograd)
        for network in (("resnet_v1_50", "pac", 16), ("resnet_v2_50", "aspp", 8))
        for winograd in (False, True)
    ],
)
def test_folded_network_of_a_tf1_checkpoint_reproduces_its_logits(
    tmp_path, base_architecture, head, output_stride, winograd
):
    from tf_pacseg.testing import tf1_checkpoints
    from tf_pacseg.weights.tf1_checkpoint import load_tf1_checkpoint

    prefix = os.fspath(tmp_path / "model.ckpt-1")
    units = (2, 1, 1, 2)  # identity shortcuts, stride changes, multi-grid
    expected = tf1_checkpoints.write_reference_checkpoint(
        prefix, base_architecture, head, output_stride, units_per_block=units, images=IMAGES
    )
    model = build_model(base_architecture, head, output_stride=output_stride, units_per_block=units)
    load_tf1_checkpoint(model, prefix)
    folded = fold_batch_norms(model, winograd=winograd)
    for images, logits in zip(IMAGES, expected, strict=True):
        assert_logits_match(folded(images, training=False), logits)


# --- the JAX backend ----------------------------------------------------------------

# Loads each network's weights on KERAS_BACKEND=jax, folds it (without and with
# Winograd's convolutions) and saves its logits.
_JAX_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    from tf_pacseg.model.folding import fold_batch_norms
    from tf_pacseg.model.initial_values import without_initial_values
    from tf_pacseg.model.segmenter import build_model

    networks, directory = json.loads(sys.argv[1]), sys.argv[2]
    images = np.load(directory + "/images.npy")
    for index, (base_architecture, head) in enumerate(networks):
        with without_initial_values():
            model = build_model(base_architecture, head, units_per_block=(1, 1, 1, 1))
        model.load_weights(f"{directory}/{index}.weights.h5")
        for winograd in (False, True):
            logits = fold_batch_norms(model, winograd=winograd)(images, training=False)
            np.save(f"{directory}/{index}-{winograd}.npy", np.asarray(logits))
    print(json.dumps({"tensorflow_imported": "tensorflow" in sys.modules}))
    """
)


@pytest.mark.slow
def test_folding_on_jax_gives_the_tensorflow_logits(tmp_path):
    images = IMAGES[1]
    np.save(tmp_path / "images.npy", images)
    expected = []
    for index, (base_architecture, head) in enumerate(NETWORKS):
        model = _random_model(base_architecture, head, seed=10 + index)
        model.save_weights(tmp_path / f"{index}.weights.h5")
        expected.append(np.asarray(model(images, training=False)))
    result = run_python(_JAX_SCRIPT, [json.dumps(NETWORKS), tmp_path], "jax", timeout=600)
    # Folding is keras.ops and NumPy: TensorFlow stays out of the JAX process.
    assert json.loads(result.stdout.strip().splitlines()[-1]) == {"tensorflow_imported": False}
    for index, logits in enumerate(expected):
        for winograd in (False, True):
            assert_logits_match(np.load(tmp_path / f"{index}-{winograd}.npy"), logits)
