"""Tests of the evaluation report (table, JSONs, confusion PNG), the overlay legend, the wiring."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from helpers import REPO, TINY_ARCHITECTURE, randomize_weights
from PIL import Image

from tf_pacseg import constants
from tf_pacseg.cli import model_flags
from tf_pacseg.data import class_names, synthetic
from tf_pacseg.inference import evaluation, legend, metrics, prediction, report
from tf_pacseg.model.segmenter import build_model
from tf_pacseg.weights import saving

NAMES = ("road", "sky", "car", "tree")
# Class 0: 1 missed pixel; class 1: half wrong; class 2: only predicted; class 3: absent.
CM = np.array([[9, 1, 0, 0], [2, 2, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]])
CUSTOM_NAMES = tuple(f"thing{i:02d}" for i in range(constants.NUM_CLASSES))
CROP = (65, 65)


# ----------------------------------------------------------------------------
# Result dict, table, JSON.
# ----------------------------------------------------------------------------


def test_result_holds_every_score_per_class_name_and_absent_classes_as_none():
    result = report.result_from_confusion_matrix(CM, num_images=3, class_names=NAMES)
    assert result["miou"] == metrics.mean_iou(CM)
    assert result["pixel_accuracy"] == metrics.pixel_accuracy(CM)
    assert result["mean_dice"] == metrics.mean_dice(CM)
    assert result["mean_precision"] == metrics.mean_precision(CM)
    assert result["mean_recall"] == metrics.mean_recall(CM)
    for key, score in (
        ("iou", metrics.per_class_iou),
        ("precision", metrics.per_class_precision),
        ("recall", metrics.per_class_recall),
        ("dice", metrics.per_class_dice),
    ):
        per_class = result[f"per_class_{key}"]
        assert list(per_class) == list(NAMES)
        assert per_class["tree"] is None
        np.testing.assert_allclose([per_class[n] for n in NAMES[:3]], score(CM)[:3])
    assert result["confusion_matrix"] == CM.tolist()
    assert result["num_images"] == 3
    json.dumps(result, allow_nan=False)


def test_default_names_and_a_wrong_count_of_names():
    result = report.result_from_confusion_matrix(np.eye(21, dtype=int), 1)
    assert list(result["per_class_iou"]) == list(constants.VOC_CLASS_NAMES)
    assert list(report.result_from_confusion_matrix(CM, 1)["per_class_iou"])[3] == "class_3"
    with pytest.raises(ValueError, match="Expected one name per class: 4 names. Received: 2"):
        report.result_from_confusion_matrix(CM, 1, class_names=("a", "b"))


def test_table_lists_each_class_with_its_scores_then_the_means():
    result = report.result_from_confusion_matrix(CM, num_images=3, class_names=NAMES)
    lines = report.format_result(result).splitlines()
    header = lines[1].split()
    assert header == ["#", "class", "IoU", "precision", "recall", "Dice"]
    # road: TP 9, FP 2, FN 1.
    assert lines[2].split() == ["0", "road", "0.7500", "0.8182", "0.9000", "0.8571"]
    assert lines[4].split() == ["2", "car", "0.0000", "0.0000", "0.0000", "0.0000"]
    assert lines[5].split()[:3] == ["3", "tree", "absent"]
    means = [result[k] for k in ("miou", "mean_precision", "mean_recall", "mean_dice")]
    assert lines[6].split() == ["mean"] + [f"{m:.4f}" for m in means]
    assert lines[7] == f"mean IoU:       {result['miou']:.4f} ({100 * result['miou']:.2f}%)"
    assert lines[8].startswith(f"mean Dice:      {result['mean_dice']:.4f}")
    assert lines[9] == "pixel accuracy: 0.7333 (73.33%)"  # 11 of 15 pixels.
    assert lines[10] == "images:         3"


def test_json_is_written_atomically_and_reads_back(tmp_path):
    result = report.result_from_confusion_matrix(CM, num_images=3, class_names=NAMES)
    path = tmp_path / "out" / "val.json"
    report.write_json(result, str(path))
    assert json.loads(path.read_text()) == result
    assert os.listdir(tmp_path / "out") == ["val.json"]  # No temporary file left.


def test_per_image_results_are_sorted_worst_first_with_each_images_miou():
    perfect = np.diag([5, 3, 0, 0])
    matrices = [CM, perfect, np.zeros((4, 4), int), CM.T]
    entries = report.per_image_results(matrices, ids=["a", "b", "c", "d"])
    expected = sorted(
        (metrics.mean_iou(m), metrics.pixel_accuracy(m), i) for i, m in enumerate(matrices)
    )
    assert [(e["miou"], e["pixel_accuracy"], e["index"]) for e in entries] == expected
    # CM.T scores as CM: the tie goes to the first image.
    assert [e["id"] for e in entries] == ["c", "a", "d", "b"]
    assert entries[-1]["miou"] == 1.0 and entries[0]["miou"] == 0.0
    assert report.per_image_results(matrices)[0]["id"] is None
    with pytest.raises(ValueError, match="one id per image"):
        report.per_image_results(matrices, ids=["a"])


# ----------------------------------------------------------------------------
# Confusion PNG.
# ----------------------------------------------------------------------------


def _boxes_of(image, colour):
    """Bounding boxes (x0, y0, x1, y1) of the pixels of `colour`, split left/right of the middle."""
    ys, xs = np.nonzero((np.asarray(image) == colour).all(axis=-1))
    middle = (xs.min() + xs.max()) / 2
    return [
        (xs[s].min(), ys[s].min(), xs[s].max(), ys[s].max()) for s in (xs < middle, xs > middle)
    ]


def test_confusion_png_colours_follow_the_row_normalised_matrix(tmp_path):
    cm = np.array([[5, 0, 0, 0], [2, 6, 2, 0], [0, 0, 9, 0], [0, 0, 0, 0]])
    path = str(tmp_path / "confusion.png")
    report.write_confusion_png(cm, NAMES, path)
    image = Image.open(path)
    assert image.mode == "RGB"
    darkest = report.heat_colour(1.0)
    assert sum(darkest) < sum(report.heat_colour(0.6)) < sum(report.heat_colour(0.2)) < 765
    # The two perfect classes' diagonal cells, and nothing else, have the darkest colour.
    (x0, y0, x1, y1), (x2, y2, _, _) = _boxes_of(image, darkest)
    assert x1 - x0 == y1 - y0 >= 9
    step = (x2 - x0) // 2
    assert (x2 - x0, y2 - y0) == (2 * step, 2 * step)
    pixels = np.asarray(image)

    def corner(row, column):  # A cell's top-left inside pixel, clear of its number.
        return tuple(pixels[y0 + row * step + 2, x0 + column * step + 2])

    for column, share in enumerate((0.2, 0.6, 0.2, 0.0)):
        assert corner(1, column) == report.heat_colour(share)
    assert corner(0, 1) == report.heat_colour(0.0) == (255, 255, 255)
    # Class 3 has no labelled pixel: its row is one grey, like no share.
    greys = {corner(3, column) for column in range(4)}
    assert len(greys) == 1
    grey = greys.pop()
    assert grey[0] == grey[1] == grey[2] and grey != (255, 255, 255)
    assert grey not in {report.heat_colour(v) for v in np.linspace(0, 1, 101)}


def test_confusion_png_of_21_classes_is_of_a_readable_size():
    image = report.confusion_image(np.eye(21, dtype=int) * 7 + 1, constants.VOC_CLASS_NAMES)
    assert 500 <= image.width <= 1000 and 500 <= image.height <= 1000
    # Rows of 8/28 on the diagonal, 1/28 elsewhere: 21 cells of each share's colour, 20 per row.
    pixels = np.asarray(image)
    diagonal = (pixels == report.heat_colour(8 / 28)).all(axis=-1).sum()
    elsewhere = (pixels == report.heat_colour(1 / 28)).all(axis=-1).sum()
    assert 21 * 100 < diagonal and 20 * diagonal <= elsewhere
    with pytest.raises(ValueError, match="21 names"):
        report.confusion_image(np.eye(21, dtype=int), NAMES)


# ----------------------------------------------------------------------------
# Legend.
# ----------------------------------------------------------------------------


def _colours(pixels):
    return {tuple(int(c) for c in colour) for colour in pixels.reshape(-1, 3)}


@pytest.mark.parametrize("width", [30, 90, 500])
def test_legend_shows_the_colours_of_the_classes_present_only(width):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (40, width, 3), dtype=np.uint8)
    labels = np.full((40, width), 15)
    labels[:10, :10], labels[30:, -5:] = 7, 20  # person, car, tvmonitor
    result = legend.with_legend(image, labels, constants.VOC_CLASS_NAMES)
    assert result.shape[0] > 40 and result.shape[1] >= width
    np.testing.assert_array_equal(result[:40, :width], image)
    assert _colours(result[:40, width:]) <= {(255, 255, 255)}  # White padding, if any.
    strip = result[40:]
    palette = [tuple(c) for c in constants.VOC_PALETTE]
    shown = {palette[7], palette[15], palette[20]}
    # Only white paper, black names and the swatches of the classes present.
    assert _colours(strip) == {(255, 255, 255), (0, 0, 0)} | shown
    for colour in shown:  # A whole swatch of each, at least 8x8.
        assert (strip == colour).all(axis=-1).sum() >= 64


def test_legend_needs_a_name_for_every_class_shown():
    labels = np.array([[0, 5]])
    with pytest.raises(ValueError, match=r"3 names for class ids in \[0, 5\]"):
        legend.legend_strip(labels, ("a", "b", "c"), 10)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny model saved with its class names in model.json."""
    model = randomize_weights(build_model(**TINY_ARCHITECTURE), seed=4, residual_scale=0.3)
    directory = tmp_path_factory.mktemp("model")
    saving.save_model_weights(
        model, str(directory / "model.weights.h5"), class_names=list(CUSTOM_NAMES)
    )
    return str(directory)


@pytest.fixture(scope="module")
def model(model_dir):
    return saving.load_model(model_dir)


def test_overlay_with_class_names_gets_the_legend_of_its_classes(model, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    yy, xx = np.mgrid[0:45, 0:70]
    pixels = np.stack([yy * 5, xx * 3, (yy + xx) * 2], -1).astype(np.uint8)
    Image.fromarray(pixels).save(photos / "a.png")
    outputs = {}
    for name, output_format, names in (
        ("index", "index", None),
        ("plain", "overlay", None),
        ("legend", "overlay", CUSTOM_NAMES),
    ):
        prediction.predict_folder(
            model, str(photos), str(tmp_path / name), output_format, class_names=names, verbose=0
        )
        outputs[name] = np.asarray(Image.open(tmp_path / name / "a.png"))
    labels, plain, with_legend = outputs["index"], outputs["plain"], outputs["legend"]
    assert plain.shape == (45, 70, 3)
    np.testing.assert_array_equal(with_legend[:45, :70], plain)
    palette = [tuple(c) for c in constants.VOC_PALETTE]
    shown = {palette[c] for c in np.unique(labels)}
    assert _colours(with_legend[45:]) == {(255, 255, 255), (0, 0, 0)} | shown


# ----------------------------------------------------------------------------
# Class names of a model, per-image matrices, evaluate.py.
# ----------------------------------------------------------------------------


def test_model_class_names_come_from_the_flag_the_model_json_the_records_or_the_default(
    model_dir, tmp_path
):
    assert saving.stored_class_names(model_dir) == CUSTOM_NAMES
    assert model_flags.model_class_names(None, model_dir, 21) == CUSTOM_NAMES
    assert model_flags.model_class_names("voc", model_dir, 21) == constants.VOC_CLASS_NAMES
    names_file = tmp_path / "names.txt"
    names_file.write_text("a\nb\nc\n")
    with pytest.raises(ValueError, match="has 3 names, but there are 21 classes"):
        model_flags.model_class_names(str(names_file), model_dir, 21)
    # A model without stored names: the names beside the records, else the default.
    bare = build_model(**{**TINY_ARCHITECTURE, "num_classes": 3})
    saving.save_model_weights(bare, str(tmp_path / "bare" / "model.weights.h5"))
    bare_dir = str(tmp_path / "bare")
    assert saving.stored_class_names(bare_dir) is None
    assert model_flags.model_class_names(None, bare_dir, 3) == ("class_0", "class_1", "class_2")
    records_dir = tmp_path / "records"
    class_names.write_class_names(str(records_dir), ("x", "y", "z"))
    assert model_flags.model_class_names(None, bare_dir, 3, str(records_dir)) == ("x", "y", "z")


def test_stored_class_names_of_another_count_are_refused(tmp_path):
    model = build_model(**{**TINY_ARCHITECTURE, "num_classes": 3})
    saving.save_model_weights(model, str(tmp_path / "model.weights.h5"), class_names=["a", "b"])
    with pytest.raises(ValueError, match="expected a list of 3 distinct names"):
        saving.stored_class_names(str(tmp_path))


@pytest.fixture(scope="module")
def voc_dir(tmp_path_factory):
    """Five val images of 40..70 px: batches of mixed padded sizes, split by size."""
    root = str(tmp_path_factory.mktemp("voc"))
    ids = synthetic.make_synthetic_voc(
        root, num_train=0, num_val=5, seed=1, min_size=40, max_size=70
    )["val"]
    return root, ids


def _folder_args(root):
    return dict(
        image_data_dir=os.path.join(root, "JPEGImages"),
        label_data_dir=os.path.join(root, "SegmentationClassAug"),
        evaluation_data_list=os.path.join(root, "ImageSets", "Segmentation", "val.txt"),
    )


def test_per_image_matrices_belong_to_their_images_and_add_up(model, voc_dir):
    root, ids = voc_dir
    matrices = {}
    result = evaluation.evaluate(
        model,
        **_folder_args(root),
        batch_size=3,
        crop_size=CROP,
        class_names=CUSTOM_NAMES,
        on_image=matrices.__setitem__,
        verbose=0,
    )
    assert sorted(matrices) == list(range(len(ids)))
    np.testing.assert_array_equal(sum(matrices.values()), result["confusion_matrix"])
    assert list(result["per_class_iou"]) == list(CUSTOM_NAMES)
    for index, sample_id in enumerate(ids):
        # Rows are ground truth: each row sum is the image's count of that label.
        label = np.asarray(
            Image.open(os.path.join(root, "SegmentationClassAug", f"{sample_id}.png"))
        )
        counts = np.bincount(label[label != constants.IGNORE_LABEL], minlength=21)
        np.testing.assert_array_equal(matrices[index].sum(axis=1), counts)
    # The same numbers without the callback.
    plain = evaluation.evaluate(
        model, **_folder_args(root), batch_size=3, crop_size=CROP, verbose=0
    )
    assert plain["confusion_matrix"] == result["confusion_matrix"]


def test_evaluate_script_writes_per_image_json_and_confusion_png(model_dir, voc_dir, tmp_path):
    root, ids = voc_dir
    names_file = tmp_path / "names.txt"
    names_file.write_text("".join(f"{name}\n" for name in constants.VOC_CLASS_NAMES[::-1]))
    folder = _folder_args(root)
    outputs = {name: str(tmp_path / "out" / name) for name in ("val.json", "images.json", "cm.png")}
    command = [
        sys.executable,
        os.path.join(REPO, "evaluate.py"),
        f"--model_dir={model_dir}",
        f"--image_data_dir={folder['image_data_dir']}",
        f"--label_data_dir={folder['label_data_dir']}",
        f"--evaluation_data_list={folder['evaluation_data_list']}",
        f"--input_height={CROP[0]}",
        f"--input_width={CROP[1]}",
        f"--class_names={names_file}",
        f"--output_json={outputs['val.json']}",
        f"--per_image_json={outputs['images.json']}",
        f"--confusion_png={outputs['cm.png']}",
    ]
    process = subprocess.run(command, capture_output=True, text=True, cwd=str(tmp_path))
    assert process.returncode == 0, process.stderr[-3000:]
    with open(outputs["val.json"]) as f:
        result = json.load(f)
    # The names file wins over the model's stored names.
    assert list(result["per_class_dice"]) == list(constants.VOC_CLASS_NAMES[::-1])
    assert re.search(r"^\s+0 tvmonitor\s+\d\.\d{4}", process.stdout, re.M)  # Class 0's row.
    assert f"mean Dice:      {result['mean_dice']:.4f}" in process.stdout
    with open(outputs["images.json"]) as f:
        images = json.load(f)
    assert sorted(e["id"] for e in images) == sorted(ids)
    assert [ids[e["index"]] for e in images] == [e["id"] for e in images]
    assert [e["miou"] for e in images] == sorted(e["miou"] for e in images)
    assert all(0 <= e["miou"] <= 1 and 0 <= e["pixel_accuracy"] <= 1 for e in images)
    png = Image.open(outputs["cm.png"])
    assert png.format == "PNG" and 300 <= png.width <= 1000
    assert sorted(os.listdir(tmp_path / "out")) == sorted(outputs)
