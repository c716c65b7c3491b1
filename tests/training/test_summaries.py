"""What `tf_pacseg.training.summaries` writes, read back from the event files."""

import glob
import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tf_pacseg import constants
from tf_pacseg.training import summaries


def _write(tmp_path, write):
    """Runs `write()` under a fresh default writer; returns {tag: [(step, value proto)]}."""
    writer = tf.summary.create_file_writer(str(tmp_path))
    with writer.as_default():
        write()
    writer.close()
    events = {}
    for path in glob.glob(str(tmp_path / "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                events.setdefault(value.tag, []).append((event.step, value))
    return events


def _number(value):
    return float(tf.make_ndarray(value.tensor))


def test_scalars_are_read_back_as_tensorboard_scalars(tmp_path):
    def write():
        summaries.scalar("loss", 0.25, step=3)
        summaries.write_scalars({"learning_rate": 0.007, "loss": 0.5}, step=4)

    events = _write(tmp_path, write)
    assert sorted(events) == ["learning_rate", "loss"]
    assert [(step, _number(v)) for step, v in events["loss"]] == [(3, 0.25), (4, 0.5)]
    step, value = events["learning_rate"][0]
    assert step == 4 and _number(value) == pytest.approx(0.007)
    assert value.metadata.plugin_data.plugin_name == "scalars"


def test_segmentation_metrics_skip_classes_without_iou(tmp_path):
    result = {
        "miou": 0.5,
        "pixel_accuracy": 0.75,
        "per_class_iou": {"background": 0.875, "aeroplane": None, "bicycle": 0.125},
    }
    events = _write(tmp_path, lambda: summaries.write_segmentation_metrics(result, step=7))
    values = {tag: _number(v) for tag, [(step, v)] in events.items() if step == 7}
    assert values == {
        "mean_iou": 0.5,
        "pixel_accuracy": 0.75,
        "iou/background": 0.875,
        "iou/bicycle": 0.125,
    }


def _decode_images(value):
    """TensorBoard's image layout: [width, height, png, png, ...] -> (width, height, arrays)."""
    strings = tf.make_ndarray(value.tensor)
    arrays = [np.asarray(Image.open(io.BytesIO(png))) for png in strings[2:]]
    return int(strings[0]), int(strings[1]), arrays


def test_images_are_pngs_in_tensorboards_layout_at_most_max_outputs(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (3, 5, 7, 3), dtype=np.uint8)
    grey = np.repeat(np.linspace(0.0, 1.0, 5 * 7).reshape(1, 5, 7, 1), 2, axis=0)

    def write():
        summaries.image("rgb", images, step=1)
        summaries.image("grey", grey, step=2, max_outputs=1)

    events = _write(tmp_path, write)
    [(step, value)] = events["rgb"]
    assert step == 1 and value.metadata.plugin_data.plugin_name == "images"
    width, height, decoded = _decode_images(value)
    assert (width, height) == (7, 5) and len(decoded) == summaries.MAX_IMAGES
    for ours, expected in zip(decoded, images, strict=False):
        np.testing.assert_array_equal(ours, expected)
    [(_, value)] = events["grey"]
    _, _, [decoded] = _decode_images(value)
    # Floats in [0, 1] become uint8 0..255, one channel.
    assert decoded.shape == (5, 7) and decoded[0, 0] == 0 and decoded[-1, -1] == 255
    np.testing.assert_allclose(decoded, grey[0, ..., 0] * 255, atol=1)


def test_batch_pictures_show_input_label_and_prediction_side_by_side(tmp_path):
    images = np.full((3, 6, 8, 3), 100.0, np.float32)
    labels = np.zeros((3, 6, 8, 1), np.int32)
    labels[:, :, 4:] = 1
    labels[:, 0] = constants.IGNORE_LABEL
    logits = np.zeros((3, 6, 8, 2), np.float32)
    logits[..., 1] = 1.0  # Predicts class 1 everywhere.

    events = _write(
        tmp_path,
        lambda: summaries.write_batch_images(5, images, labels, logits, 2, constants.IGNORE_LABEL),
    )
    assert sorted(events) == [
        "boundary_aware_weights",
        "boundary_edges",
        "input_ground_truth_prediction",
    ]
    width, height, pictures = _decode_images(events["input_ground_truth_prediction"][0][1])
    assert (width, height, len(pictures)) == (24, 6, summaries.MAX_IMAGES)
    palette = np.asarray(constants.VOC_PALETTE, np.uint8)
    picture = pictures[0]
    np.testing.assert_array_equal(picture[:, :8], 100)
    np.testing.assert_array_equal(picture[1:, 8:12], np.broadcast_to(palette[0], (5, 4, 3)))
    np.testing.assert_array_equal(picture[1:, 12:16], np.broadcast_to(palette[1], (5, 4, 3)))
    np.testing.assert_array_equal(picture[0, 8:16], np.broadcast_to(palette[255], (8, 3)))
    np.testing.assert_array_equal(picture[:, 16:], np.broadcast_to(palette[1], (6, 8, 3)))
    for tag in ("boundary_aware_weights", "boundary_edges"):
        width, height, maps = _decode_images(events[tag][0][1])
        assert (width, height, len(maps)) == (8, 6, summaries.MAX_IMAGES)
        assert maps[0].shape == (6, 8)  # One grey channel.
