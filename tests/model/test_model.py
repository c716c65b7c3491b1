"""PACSegmenter: shapes, argument checks, serialisation and the parameter count."""

import json
import math
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from harness import assert_config_round_trip, assert_saving_round_trip
from helpers import randomize_weights

import tf_pacseg
from tf_pacseg import PACSegmenter, build_model
from tf_pacseg.weights.saving import load_model, save_model_weights

TINY = (1, 1, 1, 1)


def _images(shape, seed=0):
    return np.random.default_rng(seed).uniform(0.0, 255.0, shape).astype("float32")


@pytest.fixture(scope="module")
def tiny_model():
    return randomize_weights(
        build_model("resnet_v1_50", "pac", units_per_block=TINY, num_classes=5)
    )


# --- shapes and dtypes --------------------------------------------------------------


@pytest.mark.parametrize("output_stride", [8, 16])
@pytest.mark.parametrize("head", ["pac", "aspp"])
@pytest.mark.parametrize(
    "base_architecture", ["resnet_v1_50", "resnet_v1_101", "resnet_v2_50", "resnet_v2_101"]
)
def test_logits_have_input_size_for_every_architecture(base_architecture, head, output_stride):
    model = build_model(
        base_architecture, head, output_stride=output_stride, num_classes=7, units_per_block=TINY
    )
    # batch 3 even non-square; batch 1 odd non-square, smaller than the stride.
    for shape in [(3, 16, 24, 3), (1, 5, 3, 3)]:
        logits = model(_images(shape), training=False)
        assert tuple(logits.shape) == (*shape[:3], 7)
        assert keras.backend.standardize_dtype(logits.dtype) == "float32"
        assert np.isfinite(np.asarray(logits)).all()


@pytest.mark.parametrize("dtype", ["uint8", "float16", "float64", "int32"])
def test_logits_are_float32_and_equal_for_integer_and_float_inputs(tiny_model, dtype):
    pixels = np.random.default_rng(1).integers(0, 256, (2, 13, 10, 3))
    logits = tiny_model(pixels.astype(dtype), training=False)
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"
    expected = np.asarray(tiny_model(pixels.astype("float32"), training=False))
    np.testing.assert_allclose(np.asarray(logits), expected, rtol=1e-5, atol=1e-5)


def test_traced_model_with_dynamic_shapes_matches_eager(tiny_model):
    traced = tf.function(
        lambda images: tiny_model(images, training=False),
        input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)],
    )
    for shape in [(1, 17, 23, 3), (2, 32, 16, 3)]:
        images = _images(shape, seed=shape[1])
        np.testing.assert_allclose(
            traced(images).numpy(),
            np.asarray(tiny_model(images, training=False)),
            rtol=1e-5,
            atol=1e-4,
        )
    assert traced.experimental_get_tracing_count() == 1


# --- arguments ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"output_stride": 12}, r"Received: output_stride=12"),
        ({"output_stride": 32}, r"Received: output_stride=32"),
        ({"head": "deeplab"}, r"Received: head='deeplab'"),
        ({"base_architecture": "resnet_v1_152"}, r"Received: base_architecture='resnet_v1_152'"),
        ({"num_classes": 0}, r"Received: num_classes=0"),
        ({"units_per_block": (3, 4, 6)}, r"Received: units_per_block=\(3, 4, 6\)"),
        ({"multi_grid": (1, 2)}, r"Received: multi_grid=\(1, 2\)"),
    ],
)
def test_invalid_arguments_raise_value_error_naming_the_value(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_model(**kwargs)


# --- serialisation ------------------------------------------------------------------


def test_config_round_trip_gives_same_model_and_outputs(tiny_model):
    clone = assert_config_round_trip(tiny_model, _images((1, 21, 18, 3)), {"training": False})
    config = clone.get_config()
    assert config["num_classes"] == 5 and config["units_per_block"] == list(TINY)


def test_weights_and_keras_file_round_trips_give_same_outputs(tiny_model, tmp_path):
    images = _images((2, 19, 22, 3))
    loaded = assert_saving_round_trip(tiny_model, images, tmp_path, {"training": False})
    assert isinstance(loaded, PACSegmenter)
    assert loaded.architecture() == tiny_model.architecture()


def test_save_model_weights_and_load_model_round_trip(tiny_model, tmp_path):
    weights = os.fspath(tmp_path / "run" / "model.weights.h5")
    os.makedirs(os.path.dirname(weights))
    save_model_weights(tiny_model, weights, step=7)
    with open(tmp_path / "run" / "model.json", encoding="utf-8") as f:
        description = json.load(f)
    assert description["architecture"] == tiny_model.architecture()
    assert description["step"] == 7
    images = _images((1, 25, 20, 3))
    expected = np.asarray(tiny_model(images, training=False))
    for source in (weights, os.fspath(tmp_path / "run")):  # the file, or its model_dir
        loaded = load_model(source)
        assert loaded.architecture() == tiny_model.architecture()
        np.testing.assert_array_equal(np.asarray(loaded(images, training=False)), expected)


def test_load_model_override_output_stride_reuses_pac_weights(tiny_model, tmp_path):
    """PAC's weights do not depend on the output stride (its rates are fixed)."""
    weights = os.fspath(tmp_path / "m.weights.h5")
    save_model_weights(tiny_model, weights)
    at_8 = load_model(weights, output_stride=8)
    assert at_8.output_stride == 8
    for ours, theirs in zip(at_8.weights, tiny_model.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))


def test_load_model_override_output_stride_keeps_aspp_branch_order(tmp_path):
    """ASPP at OS8 is the OS16 network with doubled rates: branch k keeps its kernel
    (conv_3x3_6 -> conv_3x3_12, 12 -> 24, 18 -> 36)."""
    at_16 = randomize_weights(build_model("resnet_v2_50", "aspp", units_per_block=TINY), seed=3)
    weights = os.fspath(tmp_path / "aspp.weights.h5")
    save_model_weights(at_16, weights)
    at_8 = load_model(weights, output_stride=8)
    for rate in (6, 12, 18):
        np.testing.assert_array_equal(
            np.asarray(at_8.get_layer(f"network.aspp.conv_3x3_{2 * rate}").kernel),
            np.asarray(at_16.get_layer(f"network.aspp.conv_3x3_{rate}").kernel),
        )


def test_load_model_names_the_missing_path(tmp_path):
    missing = os.fspath(tmp_path / "nothing.weights.h5")
    with pytest.raises(FileNotFoundError, match="nothing.weights.h5"):
        load_model(missing)


def test_save_model_weights_rejects_a_name_without_the_suffix_and_writes_nothing(
    tiny_model, tmp_path
):
    directory = tmp_path / "out"
    directory.mkdir()
    with pytest.raises(ValueError, match=r"Expected a file name ending in \.weights\.h5"):
        save_model_weights(tiny_model, os.fspath(directory / "model.h5"))
    assert not any(tmp_path.rglob("*.h5"))


# --- training-path behaviour of the model -------------------------------------------


def test_fine_tune_batch_norm_false_keeps_all_moving_statistics():
    model = randomize_weights(
        build_model("resnet_v2_50", "aspp", units_per_block=TINY, fine_tune_batch_norm=False)
    )
    before = {w.path: np.asarray(w) for w in model.non_trainable_weights}
    model(_images((2, 17, 17, 3)), training=True)
    assert before and all(
        np.array_equal(np.asarray(w), before[w.path]) for w in model.non_trainable_weights
    )


def test_weight_decay_is_tf1_slim_l2_on_every_conv_kernel(tiny_model):
    """slim's l2_regularizer: weight_decay * sum(w**2) / 2 per kernel, biases excluded."""
    kernels = [w for w in tiny_model.trainable_weights if w.path.endswith("kernel")]
    expected = sum(1e-4 * np.sum(np.square(np.asarray(w))) / 2 for w in kernels)
    assert len(tiny_model.losses) == len(kernels)
    np.testing.assert_allclose(float(sum(tiny_model.losses)), expected, rtol=1e-5)


# --- parameter count ------------------------------------------------------------------


def _expected_resnet_v1_101_pac_counts(num_classes=21):
    """(trainable, non-trainable) parameters, counted from docs/design.md §3 by hand."""
    trainable = non_trainable = 0

    def conv(k, cin, cout, batch_norm=True):
        nonlocal trainable, non_trainable
        trainable += k * k * cin * cout  # no biases anywhere in v1 + PAC
        if batch_norm:
            trainable += 2 * cout  # gamma, beta
            non_trainable += 2 * cout  # moving mean, variance

    conv(3, 3, 64)  # conv1_1
    conv(3, 64, 64)  # conv1_2
    conv(3, 64, 128)  # conv1_3
    channels = 128
    for depth, units in zip((64, 128, 256, 512), (3, 4, 23, 3), strict=True):
        for _ in range(units):
            if channels != 4 * depth:
                conv(1, channels, 4 * depth)  # shortcut
            conv(1, channels, depth)  # conv1
            conv(3, depth, depth)  # conv2
            conv(1, depth, 4 * depth)  # conv3
            channels = 4 * depth
    conv(1, 2048, 256)  # feature_extraction/conv2d
    conv(3, 2048, 256)  # multi_conv2d: one shared kernel + BatchNorm
    conv(1, 2048, 256)  # conv2d_1 (image pooling)
    conv(1, 3 * 256, 256)  # conv2d_2
    conv(1, 256, num_classes, batch_norm=False)  # network/conv2d
    return trainable, non_trainable


def test_full_resnet_v1_101_pac_parameter_count_matches_the_architecture():
    model = build_model("resnet_v1_101", "pac")
    trainable, non_trainable = _expected_resnet_v1_101_pac_counts()
    assert trainable + non_trainable == 48_702_912
    assert sum(math.prod(w.shape) for w in model.trainable_weights) == trainable
    assert sum(math.prod(w.shape) for w in model.non_trainable_weights) == non_trainable
    assert model.count_params() == trainable + non_trainable


def test_package_exports_the_model():
    assert tf_pacseg.build_model is build_model
    assert tf_pacseg.PACSegmenter is PACSegmenter
