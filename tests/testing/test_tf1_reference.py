"""Sanity tests of tf_pacseg.testing, the stand-in for the original TF1 graph and step."""

import numpy as np
import pytest
import tensorflow as tf

from tf_pacseg.testing import tf1_checkpoints, tf1_network, tf1_training

SMALL = (1, 1, 1, 1)


def _bn(prefix):
    return [f"{prefix}/{leaf}" for leaf in ("beta", "gamma", "moving_mean", "moving_variance")]


def test_resnet_v1_101_pac_full_depth_names():
    shapes = tf1_checkpoints.reference_variable_shapes("resnet_v1_101", "pac", 16, 21)
    # root 3 x (weights + 4 BN) + 33 units x 3 convs x 5 + 4 shortcuts x 5
    # + PAC 4 x 5 + decoder 1
    assert len(shapes) == 15 + 33 * 15 + 4 * 5 + 20 + 1 == 551
    assert shapes["resnet_v1_101/conv1_1/weights"] == [3, 3, 3, 64]
    assert shapes["resnet_v1_101/conv1_2/weights"] == [3, 3, 64, 64]
    assert shapes["resnet_v1_101/conv1_3/weights"] == [3, 3, 64, 128]
    assert shapes["resnet_v1_101/block3/unit_23/bottleneck_v1/conv3/BatchNorm/moving_variance"] == [
        1024
    ]
    assert shapes["resnet_v1_101/block1/unit_1/bottleneck_v1/shortcut/weights"] == [1, 1, 128, 256]
    assert "resnet_v1_101/block1/unit_2/bottleneck_v1/shortcut/weights" not in shapes
    assert shapes["resnet_v1_101/block4/unit_3/bottleneck_v1/conv2/weights"] == [3, 3, 512, 512]
    assert "resnet_v1_101/block4/unit_4/bottleneck_v1/conv1/weights" not in shapes
    assert shapes["network/feature_extraction/multi_conv2d/weights"] == [3, 3, 2048, 256]
    assert shapes["network/feature_extraction/conv2d/weights"] == [1, 1, 2048, 256]
    assert shapes["network/feature_extraction/conv2d_1/weights"] == [1, 1, 2048, 256]
    assert shapes["network/feature_extraction/conv2d_2/weights"] == [1, 1, 768, 256]
    for name in _bn("network/feature_extraction/conv2d_2/BatchNorm"):
        assert shapes[name] == [256]
    assert shapes["network/conv2d/weights"] == [1, 1, 256, 21]
    assert not any(n.endswith("/biases") for n in shapes)
    assert not any("logits" in n for n in shapes)


def test_resnet_v2_101_names():
    # Reduced depth keeps every scope name; block3 has 2 units here.
    shapes = tf1_checkpoints.reference_variable_shapes(
        "resnet_v2_101", "aspp", 16, 21, units_per_block=(1, 1, 2, 1)
    )
    # conv1 + 5 units x (preact 4 + conv1 5 + conv2 5 + conv3 2) + 4 shortcuts x 2
    # + postnorm 4 + ASPP 6 x 5 + decoder 1
    assert len(shapes) == 1 + 5 * 16 + 4 * 2 + 4 + 30 + 1
    unit = "resnet_v2_101/block1/unit_1/bottleneck_v2"
    assert shapes["resnet_v2_101/conv1/weights"] == [7, 7, 3, 64]
    assert "resnet_v2_101/conv1/biases" not in shapes
    for name in _bn(f"{unit}/preact"):
        assert shapes[name] == [64]
    assert shapes[f"{unit}/shortcut/weights"] == [1, 1, 64, 256]
    assert shapes[f"{unit}/shortcut/biases"] == [256]
    assert shapes[f"{unit}/conv1/weights"] == [1, 1, 64, 64]
    assert f"{unit}/conv1/biases" not in shapes
    assert shapes[f"{unit}/conv3/weights"] == [1, 1, 64, 256]
    assert shapes[f"{unit}/conv3/biases"] == [256]
    assert f"{unit}/conv3/BatchNorm/beta" not in shapes
    assert "resnet_v2_101/block3/unit_2/bottleneck_v2/preact/gamma" in shapes
    assert "resnet_v2_101/block3/unit_2/bottleneck_v2/shortcut/weights" not in shapes
    for name in _bn("resnet_v2_101/postnorm"):
        assert shapes[name] == [2048]
    for scope in ("conv_1x1", "conv_3x3_6", "conv_3x3_12", "conv_3x3_18"):
        assert f"network/aspp/{scope}/BatchNorm/gamma" in shapes
    assert shapes["network/aspp/conv_3x3_12/weights"] == [3, 3, 2048, 256]
    assert shapes["network/aspp/image_level_features/conv_1x1/weights"] == [1, 1, 2048, 256]
    assert shapes["network/aspp/conv_1x1_concat/weights"] == [1, 1, 1280, 256]


def test_aspp_rates_double_at_os8():
    shapes = tf1_checkpoints.reference_variable_shapes(
        "resnet_v1_50", "aspp", 8, 21, units_per_block=SMALL
    )
    assert {n.split("/")[2] for n in shapes if n.startswith("network/aspp/conv_3x3")} == {
        "conv_3x3_12",
        "conv_3x3_24",
        "conv_3x3_36",
    }


def _static_end_points(arch, output_stride, size, units=SMALL):
    with tf.Graph().as_default():
        images = tf.compat.v1.placeholder(tf.float32, [1, size[0], size[1], 3])
        end_points = {}
        logits = tf1_network.build_reference_graph(
            images, arch, "pac", output_stride, 5, units_per_block=units, end_points=end_points
        )
        shapes = {k: v.shape.as_list() for k, v in end_points.items()}
        return shapes, logits.shape.as_list()


@pytest.mark.parametrize("arch", ["resnet_v1_50", "resnet_v2_50"])
def test_output_stride_feature_sizes(arch):
    size = (65, 46)  # odd height, even width
    s16, logits16 = _static_end_points(arch, 16, size)
    s8, logits8 = _static_end_points(arch, 8, size)
    assert s16["pool1"][1:3] == [17, 12]  # ceil(size / 4)
    assert s16["backbone"][1:3] == [5, 3]
    assert s8["backbone"][1:3] == [9, 6]
    assert s16["backbone"][3] == s8["backbone"][3] == 2048
    assert s16["decoder"][1:3] == [5, 3]
    assert logits16 == logits8 == [1, 65, 46, 5]


def test_block_units_follow_the_original_layout():
    blocks = tf1_network.block_units("resnet_v1_101")
    assert [len(b[2]) for b in blocks] == [3, 4, 23, 3]
    assert blocks[0][2] == [(1, 1), (1, 1), (2, 1)]
    assert blocks[3][2] == [(1, 1), (1, 2), (1, 4)]
    reduced = tf1_network.block_units("resnet_v2_50", (2, 1, 1, 2))
    assert reduced[0][2] == [(1, 1), (2, 1)]
    assert reduced[1][2] == [(2, 1)]
    assert reduced[3][2] == [(1, 1), (1, 2)]


def test_checkpoint_round_trip_odd_and_even_sizes(tmp_path):
    rng = np.random.default_rng(0)
    images = [
        rng.uniform(0, 255, (33, 33, 3)).astype(np.float32),
        rng.uniform(0, 255, (1, 32, 46, 3)).astype(np.float32),
    ]
    prefix = tmp_path / "ckpt" / "model.ckpt"
    out = tf1_checkpoints.write_reference_checkpoint(
        prefix, "resnet_v1_50", "pac", 16, 7, units_per_block=SMALL, seed=3, images=images
    )
    assert out[0].shape == (33, 33, 7)
    assert out[1].shape == (1, 32, 46, 7)
    assert all(np.isfinite(o).all() for o in out)
    assert np.ptp(out[0]) > 0.1  # non-trivial weights give non-trivial logits
    assert (tmp_path / "ckpt" / "checkpoint").exists()
    assert (tmp_path / "ckpt" / "model.ckpt.index").exists()
    again = tf1_checkpoints.reference_logits(
        tmp_path / "ckpt", images, "resnet_v1_50", "pac", 16, 7, units_per_block=SMALL
    )
    for a, b in zip(out, again, strict=True):
        np.testing.assert_array_equal(a, b)
    names = dict(tf1_checkpoints.list_checkpoint_variables(prefix))
    assert names["network/conv2d/weights"] == [1, 1, 256, 7]
    reader = tf.train.load_checkpoint(str(prefix))
    gamma = reader.get_tensor("resnet_v1_50/conv1_1/BatchNorm/gamma")
    var = reader.get_tensor(
        "resnet_v1_50/block1/unit_1/bottleneck_v1/conv2/BatchNorm/moving_variance"
    )
    assert 0.5 <= gamma.min() and gamma.max() <= 1.5 and gamma.std() > 0.1
    assert 0.5 <= var.min() and var.max() <= 2.0


def test_estimator_extras(tmp_path):
    prefix = tmp_path / "model.ckpt-30000"
    tf1_checkpoints.write_reference_checkpoint(
        prefix, "resnet_v2_50", "pac", 16, 21, units_per_block=SMALL, estimator_extras=True
    )
    names = dict(tf1_checkpoints.list_checkpoint_variables(prefix))
    assert names["global_step"] == []
    weights = [n for n in names if n.endswith("/weights")]
    for n in weights:
        assert names[n + "/Momentum"] == names[n]
    unit = "resnet_v2_50/block1/unit_1/bottleneck_v2"
    assert f"{unit}/conv3/biases/Momentum" in names
    # fine_tune_batch_norm (default): beta/gamma are not trained -> no slots
    assert not any(n.endswith(("beta/Momentum", "gamma/Momentum")) for n in names)
    assert not any(n.endswith(("moving_mean/Momentum", "moving_variance/Momentum")) for n in names)
    plain = [n for n in names if n != "global_step" and not n.endswith("/Momentum")]
    trained = [n for n in plain if not n.endswith(("moving_mean", "moving_variance"))]
    trained = [n for n in trained if "beta" not in n and "gamma" not in n]
    assert len(names) == len(plain) + len(trained) + 1
    shapes = tf1_checkpoints.reference_variable_shapes(
        "resnet_v2_50",
        "pac",
        units_per_block=SMALL,
        estimator_extras=True,
        fine_tune_batch_norm=False,
    )
    assert f"{unit}/preact/gamma/Momentum" in shapes


def test_imagenet_style_checkpoint(tmp_path):
    prefix = tmp_path / "model.ckpt"
    tf1_checkpoints.write_reference_checkpoint(
        prefix, "resnet_v1_50", "pac", units_per_block=SMALL, imagenet_style=True
    )
    names = dict(tf1_checkpoints.list_checkpoint_variables(prefix))
    assert names["resnet_v1_50/logits/weights"] == [1, 1, 2048, 1001]
    assert names["resnet_v1_50/logits/biases"] == [1001]
    assert not any(n.startswith("network/") for n in names)
    assert all(n.startswith("resnet_v1_50/") for n in names)
    v2 = tf1_checkpoints.reference_variable_shapes(
        "resnet_v2_50", "pac", units_per_block=SMALL, imagenet_style=True
    )
    assert v2["resnet_v2_50/conv1/biases"] == [64]  # slim's public v2 checkpoints have it


@pytest.mark.parametrize("fine_tune_batch_norm", [True, False])
def test_training_graph_trains_the_originals_variables_and_updates_moving_statistics(
    fine_tune_batch_norm,
):
    graph = tf.Graph()
    with graph.as_default():
        images = tf.compat.v1.placeholder(tf.float32, [None, 33, 33, 3])
        labels = tf.compat.v1.placeholder(tf.int32, [None, 33, 33, 1])
        step = tf1_training.build_training_graph(
            images,
            labels,
            "resnet_v1_50",
            "pac",
            units_per_block=SMALL,
            fine_tune_batch_norm=fine_tune_batch_norm,
        )
        trainable = {v.op.name for v in tf.compat.v1.trainable_variables()}
        trained = {v.op.name for v in step["trained_variables"]}
        batch_norms = [n for n in trainable if n.endswith("/gamma")]
        updates = tf.compat.v1.get_collection(tf.compat.v1.GraphKeys.UPDATE_OPS)
    frozen = {n for n in trainable if n.endswith(("/beta", "/gamma"))}
    assert len(batch_norms) > 20
    if fine_tune_batch_norm:
        assert trained == trainable - frozen
        assert len(updates) == 2 * len(batch_norms)  # moving mean and variance each
    else:
        assert trained == trainable
        assert not updates
