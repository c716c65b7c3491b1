"""The training step's semantics, summaries, configuration checks and pre-trained loading."""

import glob
import os

import numpy as np
import pytest
import tensorflow as tf

from tf_pacseg import training
from tf_pacseg.model import losses
from tf_pacseg.training import distribute, summaries
from tf_pacseg.training.optimizers import PolyDecay
from tf_pacseg.weights import saving

TINY = dict(base_architecture="resnet_v1_50", units_per_block=(1, 1, 1, 1), num_classes=5)
CROP = 33


def _batch(seed=0, batch=2):
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 255, (batch, CROP, CROP, 3)).astype(np.float32)
    labels = rng.integers(0, 5, (batch, CROP, CROP, 1)).astype(np.int32)
    labels[0, :10] = 255
    return images, labels


def _train_steps(fine_tune_batch_norm, num_steps, initial_global_step=0):
    """Builds a tiny model, runs `num_steps` updates on one batch; returns what changed."""
    config = training.TrainConfig(
        **TINY,
        fine_tune_batch_norm=fine_tune_batch_norm,
        initial_learning_rate=0.01,
        max_iter=10,
        initial_global_step=initial_global_step,
    )
    strategy = distribute.create_strategy(num_gpu=0)
    with strategy.scope():
        model = training.build_training_model(config)
        optimizer = training.build_optimizer(config)
    step = training.TrainStep(model, optimizer, strategy)
    optimizer.iterations.assign(initial_global_step)
    before = {v.path: v.numpy() for v in model.weights}
    kernels = [v for v in model.weights if v.name == "kernel"]
    regularization = float(losses.l2_regularization(kernels, config.weight_decay))
    images, labels = _batch()
    batches = iter(
        strategy.experimental_distribute_dataset(
            tf.data.Dataset.from_tensors((images, labels)).repeat()
        )
    )
    outputs = [{k: float(v) for k, v in step(*next(batches)).items()} for _ in range(num_steps)]
    changed = {v.path: not np.array_equal(before[v.path], v.numpy()) for v in model.weights}
    return model, step, outputs, changed, regularization


def _changed(changed, name):
    return [value for path, value in changed.items() if path.endswith("/" + name)]


def test_fine_tuning_batch_norm_keeps_gamma_beta_and_lr_follows_poly_decay():
    _, step, outputs, changed, _ = _train_steps(
        fine_tune_batch_norm=True, num_steps=2, initial_global_step=3
    )
    # Batch statistics are used and tracked; beta and gamma are not trained.
    assert not any(_changed(changed, "gamma")) and not any(_changed(changed, "beta"))
    assert all(_changed(changed, "moving_mean")) and all(_changed(changed, "moving_variance"))
    assert all(_changed(changed, "kernel"))
    assert not {v.name for v in step.variables} & {"gamma", "beta"}
    # The schedule counts from initial_global_step: its first step uses lr0.
    schedule = PolyDecay(0.01, max_iter=10, initial_step=3)
    for index, output in enumerate(outputs):
        assert output["step"] == 3 + index + 1
        np.testing.assert_allclose(output["learning_rate"], float(schedule(3 + index)), rtol=1e-6)
    assert outputs[0]["learning_rate"] == pytest.approx(0.01)


def test_frozen_batch_norm_trains_gamma_beta_and_loss_includes_regularization():
    _, step, outputs, changed, regularization = _train_steps(
        fine_tune_batch_norm=False, num_steps=1
    )
    assert all(_changed(changed, "gamma")) and all(_changed(changed, "beta"))
    assert not any(_changed(changed, "moving_mean"))
    assert not any(_changed(changed, "moving_variance"))
    assert {"gamma", "beta"} <= {v.name for v in step.variables}
    # The step's regularization is that of the weights it started from.
    (first,) = outputs
    assert first["regularization"] == pytest.approx(regularization, rel=1e-5)
    assert first["regularization"] > 0
    assert first["loss"] == pytest.approx(first["data_loss"] + first["regularization"], rel=1e-6)
    # The running confusion matrix counts every non-ignored pixel.
    _, labels = _batch()
    assert int(step.confusion_matrix.numpy().sum()) == int(np.sum(labels != 255))


@pytest.mark.parametrize("use_boundary_weights", [True, False])
def test_weighted_pixel_count_is_the_loss_denominator(use_boundary_weights):
    _, labels = _batch(seed=3)
    labels[1, 5:9, 5:9] = 7  # Out of range but not ignored: counted, as in the original.
    logits = np.random.default_rng(1).normal(size=(*labels.shape[:3], 5)).astype(np.float32)
    _, count = losses.boundary_aware_loss_terms(
        labels, logits, num_classes=5, use_boundary_weights=use_boundary_weights
    )
    assert float(training.weighted_pixel_count(labels)) == float(count)


def test_config_rejects_invalid_values_naming_them():
    with pytest.raises(ValueError, match="head"):
        training.TrainConfig(head="fcn")
    with pytest.raises(ValueError, match="batch_size=0"):
        training.TrainConfig(batch_size=0)
    with pytest.raises(ValueError, match="units_per_block"):
        training.TrainConfig(units_per_block=(1, 1, 1))
    with pytest.raises(ValueError, match="mixed_precision"):
        training.TrainConfig(mixed_precision="float8")
    with pytest.raises(ValueError, match="debug=True, mixed_precision='mixed_float16'"):
        training.TrainConfig(debug=True, mixed_precision="mixed_float16")


def test_more_gpus_than_visible_is_a_clear_error():
    visible = len(tf.config.list_physical_devices("GPU"))
    with pytest.raises(ValueError, match=rf"--num_gpu={visible + 1} but only {visible} GPU"):
        distribute.create_strategy(num_gpu=visible + 1)


def test_batch_size_must_split_over_replicas():
    class TwoReplicas:
        num_replicas_in_sync = 2

    assert distribute.check_batch_size(8, TwoReplicas()) == 4
    with pytest.raises(ValueError, match="--batch_size=7 .* replicas \\(2"):
        distribute.check_batch_size(7, TwoReplicas())


def test_pretrained_path_substitutes_architecture():
    default = "./init_checkpoints/<arch>/model.ckpt"
    assert (
        training.resolve_pretrained_path(default, "resnet_v2_50")
        == "./init_checkpoints/resnet_v2_50/model.ckpt"
    )
    assert training.resolve_pretrained_path("", "resnet_v1_101") is None


def test_missing_pretrained_model_is_an_error_naming_it(tmp_path):
    missing = str(tmp_path / "nothing" / "model.ckpt")
    with pytest.raises(FileNotFoundError, match="nothing/model.ckpt"):
        training.load_pretrained(None, missing)


def test_pretrained_keras_weights_load_the_backbone_only(tmp_path):
    source = training.build_training_model(training.TrainConfig(**TINY))
    path = str(tmp_path / "source.weights.h5")
    saving.save_model_weights(source, path)
    target = training.build_training_model(training.TrainConfig(**TINY))
    message = training.load_pretrained(target, path)
    assert "backbone" in message
    for ours, theirs in zip(target.backbone.weights, source.backbone.weights, strict=True):
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    head = [v for v in target.weights if v.path.startswith("network.conv2d")]
    theirs = {v.path: v.numpy() for v in source.weights}
    assert head and not np.array_equal(head[0].numpy(), theirs[head[0].path])


def test_pretrained_tf1_checkpoint_loads_the_backbone(tmp_path):
    from tf_pacseg.weights import tf1_checkpoint

    source = training.build_training_model(training.TrainConfig(**TINY))
    names = tf1_checkpoint.tf1_variable_map(source, backbone_only=True)
    # A name-based checkpoint, as DeepLab's ImageNet backbones are.
    saver = tf.compat.v1.train.Saver(var_list={name: v.value for name, v in names.items()})
    prefix = saver.save(None, str(tmp_path / "model.ckpt"))
    target = training.build_training_model(training.TrainConfig(**TINY))
    assert f"loaded {len(names)} variables" in training.load_pretrained(target, prefix)
    for ours, theirs in zip(target.backbone.weights, source.backbone.weights, strict=True):
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


def test_summaries_write_tensorboard_scalars_and_images(tmp_path):
    labels = np.zeros((1, 8, 8, 1), np.int32)
    labels[0, 2:6, 2:6] = 3
    labels[0, 0, 0] = 255
    edges = np.asarray(losses.boundary_edges(labels, 5))[0, ..., 0]
    assert edges[1, 2] > 0 and edges[2, 1] > 0 and edges[3, 3] == 0 and edges[7, 7] == 0
    np.testing.assert_array_equal(summaries.colorize(labels)[0, 3, 3], [128, 128, 0])  # Class 3.
    logits = tf.one_hot(labels[..., 0], 5) * 10.0
    images = np.full((1, 8, 8, 3), 200.0, np.float32)
    writer = tf.summary.create_file_writer(str(tmp_path))
    with writer.as_default():
        summaries.write_scalars({"loss": 1.5}, step=7)
        summaries.write_batch_images(7, images, labels, logits, 5, 255)
    writer.flush()
    found = {}
    for event_file in glob.glob(os.path.join(tmp_path, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(event_file):
            for value in event.summary.value:
                found[value.tag] = (value.metadata.plugin_data.plugin_name, value.tensor)
    assert found["loss"][0] == "scalars"
    assert tf.make_ndarray(found["loss"][1]) == pytest.approx(1.5)
    picture = tf.make_ndarray(found["input_ground_truth_prediction"][1])
    assert found["input_ground_truth_prediction"][0] == "images"
    assert picture[:2].tolist() == [b"24", b"8"]  # Width (3 x 8), height.
    decoded = tf.io.decode_png(picture[2]).numpy()
    np.testing.assert_array_equal(decoded[3, 8 + 3], decoded[3, 16 + 3])  # GT == prediction.
    assert {"boundary_aware_weights", "boundary_edges"} <= set(found)
