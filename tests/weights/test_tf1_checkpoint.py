"""Loading TF1 checkpoints of the original network (tf_pacseg.testing) into Keras."""

import os
import re

import numpy as np
import pytest
import tensorflow as tf

from tf_pacseg import build_model
from tf_pacseg.testing import tf1_checkpoints
from tf_pacseg.weights.tf1_checkpoint import (
    CheckpointMismatchError,
    load_tf1_checkpoint,
    read_architecture,
    tf1_variable_map,
)

UNITS = (2, 1, 1, 2)  # identity shortcuts (strided and not), stride changes, multi-grid
TINY = (1, 1, 1, 1)
EXTRAS = {("resnet_v1_50", "pac", 16), ("resnet_v2_50", "aspp", 8)}
GRID = [
    (base, head, output_stride)
    for base in ("resnet_v1_50", "resnet_v2_50")
    for head in ("pac", "aspp")
    for output_stride in (8, 16)
]


def _images(shape, seed):
    return np.random.default_rng(seed).uniform(0.0, 255.0, shape).astype("float32")


# odd square; even non-square with batch 2; odd x even
IMAGES = [_images((1, 33, 33, 3), 0), _images((2, 24, 38, 3), 1), _images((1, 17, 26, 3), 2)]


def assert_logits_match(ours, reference):
    """max |ours - reference| <= 1e-4 x the reference's logit range."""
    ours, reference = np.asarray(ours), np.asarray(reference)
    assert ours.shape == reference.shape
    spread = float(reference.max() - reference.min())
    assert spread > 1.0  # the reference is far from constant
    error = float(np.abs(ours - reference).max())
    assert error <= 1e-4 * spread, f"max error {error:.3g} vs logit range {spread:.3g}"


def _read_tensors(prefix):
    reader = tf.train.load_checkpoint(prefix)
    return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


def _write_tensors(prefix, tensors):
    """A TF1 name-based (V2 format) checkpoint holding exactly `tensors`."""
    os.makedirs(os.path.dirname(prefix), exist_ok=True)
    names = sorted(tensors)
    tf.raw_ops.SaveV2(
        prefix=prefix,
        tensor_names=names,
        shape_and_slices=[""] * len(names),
        tensors=[tensors[name] for name in names],
    )
    return prefix


def _is_extra(name):
    return name == "global_step" or name.endswith("/Momentum")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """get(config) -> (prefix, reference logits for IMAGES), written on first use."""
    cache = {}

    def get(base_architecture, head, output_stride):
        key = (base_architecture, head, output_stride)
        if key not in cache:
            directory = tmp_path_factory.mktemp("_".join(map(str, key)))
            prefix = os.fspath(directory / "model.ckpt-1234")
            logits = tf1_checkpoints.write_reference_checkpoint(
                prefix,
                base_architecture,
                head,
                output_stride,
                num_classes=21,
                units_per_block=UNITS,
                seed=GRID.index(key),
                # The released model's Estimator extras, on the configurations
                # that the extras and directory tests read.
                estimator_extras=key in EXTRAS,
                images=IMAGES,
            )
            cache[key] = prefix, logits
        return cache[key]

    return get


@pytest.fixture(scope="module")
def plain_tensors(reference):
    """Every network tensor of the resnet_v1_50 + pac checkpoint, without the extras."""
    prefix, _ = reference("resnet_v1_50", "pac", 16)
    return {k: v for k, v in _read_tensors(prefix).items() if not _is_extra(k)}


@pytest.fixture(scope="module")
def imagenet_checkpoint(tmp_path_factory):
    """Prefix of an ImageNet-style (backbone + logits) checkpoint at depth (1, 1, 1, 1)."""
    cache = {}

    def get(base_architecture):
        if base_architecture not in cache:
            prefix = os.fspath(tmp_path_factory.mktemp(base_architecture) / "model.ckpt")
            tf1_checkpoints.write_reference_checkpoint(
                prefix, base_architecture, None, units_per_block=TINY, imagenet_style=True
            )
            cache[base_architecture] = prefix
        return cache[base_architecture]

    return get


@pytest.fixture(scope="module")
def pac_model():
    """A resnet_v1_50 + pac model of the reference depth (only ever fed failing loads,
    or the full plain_tensors)."""
    return build_model("resnet_v1_50", "pac", units_per_block=UNITS)


# --- parity -------------------------------------------------------------------------


@pytest.mark.parametrize("base_architecture,head,output_stride", GRID)
def test_loaded_model_reproduces_tf1_logits(reference, base_architecture, head, output_stride):
    prefix, expected = reference(base_architecture, head, output_stride)
    model = build_model(base_architecture, head, output_stride=output_stride, units_per_block=UNITS)
    report = load_tf1_checkpoint(model, prefix)
    for images, logits in zip(IMAGES, expected, strict=True):
        assert_logits_match(model(images, training=False), logits)
    # Every network variable of the checkpoint went to exactly one Keras weight.
    network_variables = {n for n, _ in tf.train.list_variables(prefix) if not _is_extra(n)}
    assert set(report.loaded) == network_variables
    assert len(report.loaded) == len(model.weights) == len(tf1_variable_map(model))


@pytest.mark.parametrize("base_architecture,head,output_stride", GRID)
def test_read_architecture_recovers_the_network(reference, base_architecture, head, output_stride):
    prefix, _ = reference(base_architecture, head, output_stride)
    assert read_architecture(prefix) == {
        "base_architecture": base_architecture,
        "head": head,
        # Only ASPP's variable names depend on the output stride.
        "output_stride": output_stride if head == "aspp" else 16,
        "num_classes": 21,
        "multi_grid": [1, 2, 4],
        "units_per_block": list(UNITS),
    }


def test_full_depth_resnet_v1_101_pac_reproduces_tf1_logits(tmp_path):
    """The released model's architecture at full depth, on a small odd x even image."""
    prefix = os.fspath(tmp_path / "model.ckpt-30000")
    images = _images((1, 33, 40, 3), 3)
    expected = tf1_checkpoints.write_reference_checkpoint(
        prefix, "resnet_v1_101", "pac", images=images
    )
    architecture = read_architecture(prefix)
    assert architecture["base_architecture"] == "resnet_v1_101"
    assert architecture["units_per_block"] is None  # the standard (3, 4, 23, 3)
    model = build_model(**architecture)
    report = load_tf1_checkpoint(model, prefix)
    assert len(report.loaded) == len(model.weights) == len(tf.train.list_variables(prefix))
    assert_logits_match(model(images, training=False), expected)


# --- what else is in a checkpoint ---------------------------------------------------


def test_estimator_extras_are_skipped_and_reported(reference, pac_model):
    prefix, _ = reference("resnet_v1_50", "pac", 16)
    model = pac_model
    report = load_tf1_checkpoint(model, prefix)
    names = [name for name, _ in tf.train.list_variables(prefix)]
    slots = [name for name in names if name.endswith("/Momentum")]
    # fine_tune_batch_norm: the original trains neither beta nor gamma.
    trained = [w for w in model.trainable_weights if not w.path.endswith(("beta", "gamma"))]
    assert len(slots) == len(trained)
    assert report.skipped == {
        "global_step": "training state",
        **dict.fromkeys(slots, "optimizer slot"),
    }
    summary = report.summary()
    assert f"loaded {len(model.weights)} variables from {prefix}" in summary
    assert f"skipped {len(slots)} (optimizer slot)" in summary
    assert "skipped 1 (training state)" in summary


def test_directory_with_checkpoint_file_loads_its_latest_checkpoint(reference):
    prefix, expected = reference("resnet_v2_50", "aspp", 8)
    directory = os.path.dirname(prefix)
    assert os.path.isfile(os.path.join(directory, "checkpoint"))
    assert read_architecture(directory) == read_architecture(prefix)
    model = build_model("resnet_v2_50", "aspp", output_stride=8, units_per_block=UNITS)
    report = load_tf1_checkpoint(model, directory)
    assert report.checkpoint == prefix
    assert_logits_match(model(IMAGES[1], training=False), expected[1])


def test_missing_checkpoint_raises_file_not_found_naming_the_path(tmp_path, pac_model):
    prefix = os.fspath(tmp_path / "no_such" / "model.ckpt")
    with pytest.raises(FileNotFoundError, match=re.escape(prefix)):
        load_tf1_checkpoint(pac_model, prefix)
    empty = tmp_path / "empty_dir"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=re.escape(os.fspath(empty))):
        read_architecture(os.fspath(empty))


def test_read_architecture_rejects_a_foreign_checkpoint(tmp_path):
    prefix = _write_tensors(os.fspath(tmp_path / "x.ckpt"), {"vgg_16/conv1/weights": np.ones(3)})
    with pytest.raises(CheckpointMismatchError, match="not a checkpoint of this project"):
        read_architecture(prefix)


# --- ImageNet backbones -------------------------------------------------------------


@pytest.mark.parametrize("base_architecture", ["resnet_v1_50", "resnet_v2_50"])
def test_backbone_only_loads_every_backbone_tensor_and_leaves_the_head(
    imagenet_checkpoint, base_architecture
):
    prefix = imagenet_checkpoint(base_architecture)
    architecture = read_architecture(prefix)
    assert architecture["head"] is None and architecture["num_classes"] is None

    model = build_model(base_architecture, "pac", units_per_block=TINY)
    backbone = tf1_variable_map(model, backbone_only=True)
    others = {
        name: np.asarray(var).copy()
        for name, var in tf1_variable_map(model).items()
        if name not in backbone
    }
    assert others and all(name.startswith("network/") for name in others)
    report = load_tf1_checkpoint(model, prefix, backbone_only=True)

    tensors = _read_tensors(prefix)
    logits = {f"{base_architecture}/logits/weights", f"{base_architecture}/logits/biases"}
    assert set(report.loaded) == set(backbone)
    assert all(report.skipped[name] == "ImageNet classifier" for name in logits)
    if base_architecture.startswith("resnet_v2"):
        # slim's public v2 checkpoints have a root-conv bias the original's graph
        # lacks; the original's loader skips it, so must we.
        assert f"{base_architecture}/conv1/biases" in report.skipped
    assert set(report.loaded) | set(report.skipped) == set(tensors)
    for name, variable in backbone.items():
        np.testing.assert_array_equal(np.asarray(variable), tensors[name], err_msg=name)
    for name, variable in tf1_variable_map(model).items():
        if name in others:
            np.testing.assert_array_equal(np.asarray(variable), others[name], err_msg=name)


def test_imagenet_checkpoint_into_full_model_names_missing_head(imagenet_checkpoint):
    prefix = imagenet_checkpoint("resnet_v1_50")
    model = build_model("resnet_v1_50", "pac", units_per_block=TINY)
    with pytest.raises(CheckpointMismatchError, match=r"network/conv2d/weights \(expected shape"):
        load_tf1_checkpoint(model, prefix)
    with pytest.raises(CheckpointMismatchError, match="It holds a resnet_v1_50 ImageNet backbone"):
        load_tf1_checkpoint(
            build_model("resnet_v2_50", "pac", units_per_block=TINY), prefix, backbone_only=True
        )


# --- mismatches ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,shape",
    [
        ("resnet_v1_50/block2/unit_1/bottleneck_v1/conv2/weights", (3, 3, 128, 128)),
        ("resnet_v1_50/conv1_1/BatchNorm/moving_variance", (64,)),
        ("network/feature_extraction/multi_conv2d/weights", (3, 3, 2048, 256)),
        ("network/conv2d/weights", (1, 1, 256, 21)),
    ],
)
def test_missing_variable_is_named_with_its_expected_shape(
    tmp_path, plain_tensors, pac_model, name, shape
):
    tensors = {k: v for k, v in plain_tensors.items() if k != name}
    prefix = _write_tensors(os.fspath(tmp_path / "model.ckpt"), tensors)
    with pytest.raises(CheckpointMismatchError) as error:
        load_tf1_checkpoint(pac_model, prefix)
    assert "Missing 1 variables" in str(error.value)
    assert f"{name} (expected shape {shape})" in str(error.value)


def test_other_num_classes_names_the_decoder_and_both_shapes(tmp_path, plain_tensors, pac_model):
    tensors = dict(plain_tensors)
    tensors["network/conv2d/weights"] = np.ones((1, 1, 256, 5), "float32")
    prefix = _write_tensors(os.fspath(tmp_path / "model.ckpt"), tensors)
    assert read_architecture(prefix)["num_classes"] == 5
    with pytest.raises(CheckpointMismatchError) as error:
        load_tf1_checkpoint(pac_model, prefix)
    assert "network/conv2d/weights: expected (1, 1, 256, 21), found (1, 1, 256, 5)" in str(
        error.value
    )


def test_failed_load_leaves_the_model_untouched(tmp_path, plain_tensors, pac_model):
    tensors = {k: v for k, v in plain_tensors.items() if k != "network/conv2d/weights"}
    prefix = _write_tensors(os.fspath(tmp_path / "model.ckpt"), tensors)
    before = [np.asarray(w).copy() for w in pac_model.weights]
    with pytest.raises(CheckpointMismatchError):
        load_tf1_checkpoint(pac_model, prefix)
    for value, weight in zip(before, pac_model.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(weight), value)


def test_v2_checkpoint_into_v1_model_names_the_architecture_and_the_fix(reference, pac_model):
    prefix, _ = reference("resnet_v2_50", "pac", 16)
    with pytest.raises(CheckpointMismatchError) as error:
        load_tf1_checkpoint(pac_model, prefix)
    message = str(error.value)
    assert "It holds resnet_v2_50 + pac (21 classes); the model is resnet_v1_50" in message
    assert "base_architecture='resnet_v2_50'" in message
    assert (
        "resnet_v1_50/block1/unit_1/bottleneck_v1/conv1/weights (expected shape (1, 1, 128, 64))"
        in message
    )


@pytest.mark.parametrize("checkpoint_head,model_head", [("pac", "aspp"), ("aspp", "pac")])
def test_other_head_names_the_checkpoints_head(reference, checkpoint_head, model_head):
    prefix, _ = reference("resnet_v1_50", checkpoint_head, 16)
    model = build_model("resnet_v1_50", model_head, units_per_block=UNITS)
    with pytest.raises(CheckpointMismatchError) as error:
        load_tf1_checkpoint(model, prefix)
    message = str(error.value)
    assert f"head={checkpoint_head!r}" in message
    scope = "feature_extraction" if checkpoint_head == "pac" else "aspp"
    assert f"network/{scope}/" in message  # the checkpoint's head, not in the model


def test_aspp_output_stride_8_checkpoint_into_16_model_names_the_rate_scopes(reference):
    prefix, _ = reference("resnet_v1_50", "aspp", 8)
    model = build_model("resnet_v1_50", "aspp", output_stride=16, units_per_block=UNITS)
    with pytest.raises(CheckpointMismatchError) as error:
        load_tf1_checkpoint(model, prefix)
    message = str(error.value)
    assert "network/aspp/conv_3x3_6/weights (expected shape (3, 3, 2048, 256))" in message
    assert "network/aspp/conv_3x3_36/weights (3, 3, 2048, 256)" in message


@pytest.mark.parametrize(
    "name",
    [
        "resnet_v1_50/block1/unit_1/bottleneck_v1/conv4/weights",
        "resnet_v1_50/block1/unit_3/bottleneck_v1/conv1/weights",  # a deeper network
        "network/feature_extraction/conv2d_3/weights",
    ],
)
def test_unexpected_variable_in_the_models_scopes_is_named(
    tmp_path, plain_tensors, pac_model, name
):
    tensors = {**plain_tensors, name: np.zeros((1, 1, 4, 4), "float32")}
    prefix = _write_tensors(os.fspath(tmp_path / "model.ckpt"), tensors)
    with pytest.raises(CheckpointMismatchError) as error:
        load_tf1_checkpoint(pac_model, prefix)
    assert "1 variables are not in the model" in str(error.value)
    assert f"{name} (1, 1, 4, 4)" in str(error.value)


def test_variables_outside_the_models_scopes_are_skipped(tmp_path, plain_tensors, pac_model):
    tensors = {**plain_tensors, "other_net/weights": np.zeros(3, "float32")}
    prefix = _write_tensors(os.fspath(tmp_path / "model.ckpt"), tensors)
    report = load_tf1_checkpoint(pac_model, prefix)
    assert report.skipped == {"other_net/weights": "outside the model's scopes"}
    assert len(report.loaded) == len(plain_tensors)


def test_shallower_checkpoint_into_deeper_model_names_the_missing_units(tmp_path, plain_tensors):
    prefix = _write_tensors(os.fspath(tmp_path / "model.ckpt"), plain_tensors)
    model = build_model("resnet_v1_50", "pac", units_per_block=(2, 2, 1, 2))
    with pytest.raises(
        CheckpointMismatchError,
        match=r"resnet_v1_50/block2/unit_2/bottleneck_v1/conv1/weights \(expected shape "
        r"\(1, 1, 512, 128\)\)",
    ):
        load_tf1_checkpoint(model, prefix)
