import json
import logging
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from helpers import REPO, TINY_ARCHITECTURE
from PIL import Image

from tf_pacseg import constants
from tf_pacseg.data import records, synthetic
from tf_pacseg.inference import evaluation, forward, metrics, report
from tf_pacseg.inference.tiling import Tiling, tiled_probabilities
from tf_pacseg.testing import tf1_checkpoints
from tf_pacseg.weights import saving

CROP = (65, 65)
BATCH = 2
NUM_CLASSES = 21
ARCHITECTURE = TINY_ARCHITECTURE
# Top-2 score gaps below this (relative to the score range) may flip between
# two correct implementations; pixels that close are counted, not compared.
AMBIGUITY = 1e-4


@pytest.fixture(scope="module")
def voc(tmp_path_factory):
    """Five val images of 40..70 px: some fit the 65x65 crop, some exceed it."""
    root = str(tmp_path_factory.mktemp("voc"))
    ids = synthetic.make_synthetic_voc(
        root, num_train=0, num_val=5, seed=1, min_size=40, max_size=70
    )
    sizes = [_read_label(root, i).shape for i in ids["val"]]
    assert any(h > CROP[0] for h, _ in sizes) and any(h <= CROP[0] for h, _ in sizes)
    return root, ids["val"]


def _folder_args(root, labels="SegmentationClassAug"):
    return dict(
        image_data_dir=os.path.join(root, "JPEGImages"),
        label_data_dir=os.path.join(root, labels),
        evaluation_data_list=os.path.join(root, "ImageSets", "Segmentation", "val.txt"),
    )


def _read_label(root, sample_id, folder="SegmentationClassAug"):
    return np.asarray(Image.open(os.path.join(root, folder, sample_id + ".png")))


def _read_jpeg(root, sample_id):
    with open(os.path.join(root, "JPEGImages", sample_id + ".jpg"), "rb") as f:
        return f.read()


def _write_records(directory, examples, num_shards=1):
    """Writes (jpeg bytes, label array) pairs as val shards, consecutive runs per shard."""
    os.makedirs(directory, exist_ok=True)
    bounds = np.linspace(0, len(examples), num_shards + 1).astype(int)
    for shard in range(num_shards):
        path = os.path.join(directory, records.shard_file_name("val", shard, num_shards))
        with tf.io.TFRecordWriter(path) as writer:
            for jpeg, label in examples[bounds[shard] : bounds[shard + 1]]:
                png = tf.io.encode_png(label[..., None]).numpy()
                writer.write(records.encode_example(jpeg, png, *label.shape))


@pytest.fixture(scope="module")
def record_dir(voc, tmp_path_factory):
    root, ids = voc
    directory = str(tmp_path_factory.mktemp("records"))
    _write_records(directory, [(_read_jpeg(root, i), _read_label(root, i)) for i in ids], 2)
    return directory


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    prefix = str(tmp_path_factory.mktemp("tf1") / "model.ckpt-100")
    tf1_checkpoints.write_reference_checkpoint(prefix, **ARCHITECTURE, seed=3)
    return prefix


@pytest.fixture(scope="module")
def model(checkpoint):
    return saving.load_model(checkpoint)


@pytest.fixture(scope="module")
def padded(voc):
    """Each example padded by hand: (image float32, label int, original (h, w))."""
    root, ids = voc
    examples = []
    for sample_id in ids:
        # TensorFlow's JPEG decoder, as the record pipeline uses.
        image = tf.io.decode_jpeg(_read_jpeg(root, sample_id), channels=3).numpy()
        label = _read_label(root, sample_id)
        height, width = label.shape
        size = (max(height, CROP[0]), max(width, CROP[1]), 3)
        padded_image = np.tile(np.float32(constants.MEAN_RGB), size[:2] + (1,))
        padded_image[:height, :width] = image
        examples.append((padded_image, label, (height, width)))
    return examples


@pytest.fixture(scope="module")
def reference(checkpoint, padded):
    """The ORIGINAL graph's logits on each padded image."""
    return tf1_checkpoints.reference_logits(
        checkpoint, [image for image, _, _ in padded], **ARCHITECTURE
    )


def _logits(model, image):
    return forward.forward_fn(model)(image[None])[0].numpy()


@pytest.fixture(scope="module")
def records_result(model, record_dir):
    return evaluation.evaluate(
        model, data_dir=record_dir, batch_size=BATCH, crop_size=CROP, verbose=0
    )


def _reference_confusion(scores, examples):
    """(confusion matrix, number of ambiguous labelled pixels) from per-image scores.

    `scores[i]` covers the padded image; it is cropped back to the original
    size, as the padding is ignored.
    """
    cm = np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64)
    ambiguous = 0
    for score, (_, label, (height, width)) in zip(scores, examples, strict=True):
        score = np.asarray(score)[:height, :width]
        kept = label != constants.IGNORE_LABEL
        prediction = score.argmax(-1)
        cm += np.bincount(
            label[kept].astype(np.int64) * NUM_CLASSES + prediction[kept],
            minlength=NUM_CLASSES**2,
        ).reshape(NUM_CLASSES, NUM_CLASSES)
        top2 = np.sort(score, axis=-1)[..., -2:]
        gap = (top2[..., 1] - top2[..., 0])[kept]
        ambiguous += int((gap <= AMBIGUITY * (score.max() - score.min())).sum())
    return cm, ambiguous


def _assert_confusion_close(cm, reference, ambiguous):
    cm, reference = np.asarray(cm), np.asarray(reference)
    assert cm.sum() == reference.sum()
    # Each ambiguous pixel may move one count between two cells.
    assert np.abs(cm - reference).sum() <= 2 * ambiguous, (cm - reference, ambiguous)


def test_records_and_folders_give_the_same_confusion_matrix(model, voc, records_result):
    root, ids = voc
    index_labels = evaluation.evaluate(
        model, **_folder_args(root), batch_size=BATCH, crop_size=CROP, verbose=0
    )
    palette_labels = evaluation.evaluate(
        model, **_folder_args(root, "SegmentationClass"), batch_size=BATCH, crop_size=CROP
    )
    assert records_result["num_images"] == index_labels["num_images"] == len(ids)
    assert records_result["confusion_matrix"] == index_labels["confusion_matrix"]
    assert records_result["confusion_matrix"] == palette_labels["confusion_matrix"]
    labelled = sum(int((_read_label(root, i) != 255).sum()) for i in ids)
    assert np.sum(records_result["confusion_matrix"]) == labelled


def test_confusion_matrix_is_the_original_graphs_on_padded_images(
    model, padded, reference, records_result
):
    cm, ambiguous = _reference_confusion(reference, padded)
    _assert_confusion_close(records_result["confusion_matrix"], cm, ambiguous)
    # The network predicts several classes, so the comparison has teeth.
    assert (np.asarray(records_result["confusion_matrix"]).sum(axis=0) > 0).sum() >= 3

    ours = [_logits(model, image) for image, _, _ in padded]
    cm, ambiguous = _reference_confusion(ours, padded)
    _assert_confusion_close(records_result["confusion_matrix"], cm, ambiguous)


def test_padding_matters_so_it_is_applied(model, padded, records_result):
    """Unpadded images give other predictions: the protocol is really pinned."""
    unpadded = [_logits(model, image[:h, :w]) for image, _, (h, w) in padded]
    cm, _ = _reference_confusion(unpadded, padded)
    assert cm.tolist() != records_result["confusion_matrix"]


def test_another_ignore_label_leaves_out_its_pixels_and_pads_with_it(
    model, voc, record_dir, tmp_path, records_result
):
    root, ids = voc
    relabelled = [
        np.where(_read_label(root, i) == 255, 20, _read_label(root, i)).astype(np.uint8)
        for i in ids
    ]
    directory = str(tmp_path / "records")
    _write_records(directory, [(_read_jpeg(root, i), relabelled[k]) for k, i in enumerate(ids)])
    result = evaluation.evaluate(
        model, data_dir=directory, batch_size=BATCH, crop_size=CROP, ignore_label=20, verbose=0
    )
    # Void relabelled 20 and ignored as 20 counts exactly the pixels 255 did.
    assert result["confusion_matrix"] == records_result["confusion_matrix"]
    # 255 is then an ordinary, out-of-range value.
    with pytest.raises(ValueError, match="label values \\[255\\] .* ignore label 20"):
        evaluation.evaluate(model, data_dir=record_dir, crop_size=CROP, ignore_label=20, verbose=0)


def test_result_metrics_follow_the_confusion_matrix(records_result):
    cm = np.asarray(records_result["confusion_matrix"])
    assert cm.shape == (NUM_CLASSES, NUM_CLASSES)
    assert records_result["miou"] == pytest.approx(metrics.mean_iou(cm))
    assert records_result["pixel_accuracy"] == pytest.approx(metrics.pixel_accuracy(cm))
    per_class = records_result["per_class_iou"]
    assert list(per_class) == list(constants.VOC_CLASS_NAMES)
    for index, iou in enumerate(per_class.values()):
        if cm[index].sum() + cm[:, index].sum() == 0:
            assert iou is None
        else:
            assert iou == pytest.approx(metrics.per_class_iou(cm)[index])
    json.dumps(records_result, allow_nan=False)
    text = report.format_result(records_result)
    assert "aeroplane" in text and "mean IoU" in text and "pixel accuracy" in text


def test_multi_scale_with_scale_one_and_no_flip_is_single_scale(model, record_dir, records_result):
    for scales in ((1.0,), (1.0, 1.0)):  # (1.0, 1.0) goes through the softmax average.
        result = evaluation.evaluate(
            model,
            data_dir=record_dir,
            batch_size=BATCH,
            crop_size=CROP,
            eval_scales=scales,
            verbose=0,
        )
        assert result["confusion_matrix"] == records_result["confusion_matrix"]


def _resize(images, size):
    return tf.raw_ops.ResizeBilinear(
        images=images, size=size, align_corners=True, half_pixel_centers=False
    ).numpy()


def test_flipped_multi_scale_averaging_matches_manual_computation(model, voc, padded):
    root, _ = voc
    scales = (0.75, 1.0)
    result = evaluation.evaluate(
        model,
        **_folder_args(root),
        batch_size=BATCH,
        crop_size=CROP,
        eval_scales=scales,
        add_flipped_images=True,
        verbose=0,
    )
    probabilities = []
    for image, _, _ in padded:
        size = image.shape[:2]
        total = 0.0
        for scale in scales:
            scaled_size = [int((s - 1) * scale + 1) for s in size]
            scaled = _resize(image[None], scaled_size)
            for flip in (False, True):
                x = scaled[:, :, ::-1] if flip else scaled
                logits = forward.forward_fn(model)(np.ascontiguousarray(x)).numpy()
                logits = logits[:, :, ::-1] if flip else logits
                total = total + tf.nn.softmax(_resize(logits, size)).numpy()
        probabilities.append(total[0] / 4)
    cm, ambiguous = _reference_confusion(probabilities, padded)
    _assert_confusion_close(result["confusion_matrix"], cm, ambiguous)


def test_scaled_size_keeps_corners_aligned():
    assert forward.scaled_size((513, 65), 0.5) == (257, 33)
    assert forward.scaled_size(513, 1.75) == 897


@pytest.fixture
def voc_copy(voc, tmp_path):
    root, ids = voc
    copy = str(tmp_path / "voc")
    shutil.copytree(root, copy)
    return copy, ids


def test_missing_files_are_named(model, voc_copy):
    root, ids = voc_copy
    missing = os.path.join(root, "SegmentationClassAug", ids[3] + ".png")
    os.remove(missing)
    with pytest.raises(FileNotFoundError, match=missing):
        evaluation.evaluate(model, **_folder_args(root), crop_size=CROP, verbose=0)


def test_label_size_mismatch_is_named(model, voc_copy):
    root, ids = voc_copy
    path = os.path.join(root, "SegmentationClassAug", ids[0] + ".png")
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(path)
    with pytest.raises(ValueError, match=f"label file {path} is 10x12"):
        evaluation.evaluate(model, **_folder_args(root), crop_size=CROP, verbose=0)


def test_out_of_range_labels_are_named(model, voc_copy, tmp_path):
    root, ids = voc_copy
    path = os.path.join(root, "SegmentationClassAug", ids[0] + ".png")
    label = _read_label(root, ids[0]).copy()
    label[0, 0] = 30
    Image.fromarray(label).save(path)
    with pytest.raises(ValueError, match=rf"{path} has label values \[30\]"):
        evaluation.evaluate(model, **_folder_args(root), crop_size=CROP, verbose=0)

    directory = str(tmp_path / "bad_records")
    examples = [(_read_jpeg(root, i), _read_label(root, i)) for i in ids]
    _write_records(directory, examples)
    shard = os.path.join(directory, records.shard_file_name("val", 0, 1))
    with pytest.raises(ValueError, match=f"example 0 of record file {shard} has label values"):
        evaluation.evaluate(model, data_dir=directory, crop_size=CROP, verbose=0)


def test_undecodable_records_are_named(model, voc, tmp_path):
    root, ids = voc
    jpeg, label = _read_jpeg(root, ids[0]), _read_label(root, ids[0])
    png = tf.io.encode_png(label[:10, :12, None]).numpy()  # Not the header's size.
    directory = str(tmp_path / "records")
    os.makedirs(directory)
    shard = os.path.join(directory, records.shard_file_name("val", 0, 1))
    with tf.io.TFRecordWriter(shard) as writer:
        writer.write(records.encode_example(jpeg, png, *label.shape))
    with pytest.raises(ValueError, match=f"Cannot read example 0 of record file {shard}"):
        evaluation.evaluate(model, data_dir=directory, crop_size=CROP, verbose=0)


def test_argument_errors(model, voc, record_dir):
    root, _ = voc
    with pytest.raises(ValueError, match="not both"):
        evaluation.evaluate(model, data_dir=record_dir, **_folder_args(root), verbose=0)
    with pytest.raises(ValueError, match="Expected evaluation data: `data_dir`"):
        evaluation.evaluate(model, image_data_dir=root, verbose=0)
    with pytest.raises(ValueError, match="predicts 21 classes"):
        evaluation.evaluate(model, data_dir=record_dir, num_classes=5, verbose=0)
    with pytest.raises(ValueError, match="eval_scales"):
        evaluation.evaluate(model, data_dir=record_dir, eval_scales=(0.5, -1.0), verbose=0)
    with pytest.raises(FileNotFoundError, match="No val records"):
        evaluation.evaluate(model, data_dir=root, verbose=0)


def test_evaluate_script_on_original_checkpoint_writes_json(
    checkpoint, voc, padded, reference, tmp_path
):
    root, ids = voc
    output_json = str(tmp_path / "out" / "val.json")
    folder = _folder_args(root)
    command = [
        sys.executable,
        os.path.join(REPO, "evaluate.py"),
        f"--model_dir={checkpoint}",
        f"--image_data_dir={folder['image_data_dir']}",
        f"--label_data_dir={folder['label_data_dir']}",
        f"--evaluation_data_list={folder['evaluation_data_list']}",
        f"--input_height={CROP[0]}",
        f"--input_width={CROP[1]}",
        f"--batch_size={BATCH}",
        f"--output_json={output_json}",
    ]
    process = subprocess.run(command, capture_output=True, text=True, cwd=str(tmp_path))
    assert process.returncode == 0, process.stderr[-3000:]
    with open(output_json) as f:
        result = json.load(f)
    assert set(result) == {
        "miou",
        "mean_precision",
        "mean_recall",
        "mean_dice",
        "pixel_accuracy",
        "per_class_iou",
        "per_class_precision",
        "per_class_recall",
        "per_class_dice",
        "confusion_matrix",
        "num_images",
    }
    assert result["num_images"] == len(ids)
    assert f"mean IoU:       {result['miou']:.4f}" in process.stdout
    assert "tvmonitor" in process.stdout
    # The numbers the original graph gives on the same padded images.
    cm, ambiguous = _reference_confusion(reference, padded)
    _assert_confusion_close(result["confusion_matrix"], cm, ambiguous)


def test_auto_mode_tiles_padded_images_above_the_budget(model, record_dir, padded, caplog):
    caplog.set_level(logging.INFO, logger="absl")  # Whatever verbosity earlier tests left.
    # 65x65 padded images run whole, the larger ones as 33x33 tiles of the padded image.
    tiles = Tiling(mode="auto", tile_size=33, max_whole_pixels=CROP[0] * CROP[1])
    result = evaluation.evaluate(
        model, data_dir=record_dir, batch_size=BATCH, crop_size=CROP, tiling=tiles, verbose=0
    )
    scores = [
        tiled_probabilities(model, image, tiles)
        if tiles.slides(*image.shape[:2])
        else _logits(model, image)
        for image, _, _ in padded
    ]
    tiled = [i for i, (image, _, _) in enumerate(padded) if tiles.slides(*image.shape[:2])]
    assert 0 < len(tiled) < len(padded)
    cm, ambiguous = _reference_confusion(scores, padded)
    _assert_confusion_close(result["confusion_matrix"], cm, ambiguous)
    for index in tiled:
        assert f"Tiles for image {index}: " in caplog.text
    # One tile as large as each padded image is the whole image.
    one_tile = Tiling(mode="slide", tile_size=100)
    result = evaluation.evaluate(
        model, data_dir=record_dir, batch_size=BATCH, crop_size=CROP, tiling=one_tile, verbose=0
    )
    cm, ambiguous = _reference_confusion([_logits(model, image) for image, _, _ in padded], padded)
    _assert_confusion_close(result["confusion_matrix"], cm, ambiguous)


def test_evaluate_script_rejects_overlapping_tile_flags_before_loading(tmp_path):
    command = [
        sys.executable,
        os.path.join(REPO, "evaluate.py"),
        f"--model_dir={tmp_path / 'absent'}",
        f"--data_dir={tmp_path}",
        "--tile_size=65",
        "--tile_stride=66",
    ]
    process = subprocess.run(command, capture_output=True, text=True, cwd=str(tmp_path))
    assert process.returncode != 0 and "Traceback" not in process.stderr
    assert "evaluate.py: Invalid value for argument `tile_stride`" in process.stderr
