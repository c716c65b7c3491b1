import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import REPO
from PIL import Image

from tf_pacseg.data import class_names, label_png, records, statistics

_NAMES = ("background", "road", "grass", "water", "sand")


def _jpeg(height, width):
    buffer = io.BytesIO()
    Image.fromarray(np.full((height, width, 3), 128, np.uint8)).save(buffer, format="JPEG")
    return buffer.getvalue()


def _labels(seed, sizes, classes):
    rng = np.random.default_rng(seed)
    labels = []
    for height, width in sizes:
        label = rng.choice(classes, (height, width)).astype(np.uint8)
        label[rng.random((height, width)) < 0.1] = 255
        labels.append(label)
    return labels


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Records of 5 classes: sand (4) is absent from val; one train label holds a 30."""
    root = str(tmp_path_factory.mktemp("records"))
    labels = {
        "train": _labels(0, [(11, 17), (20, 9), (13, 13), (7, 30), (16, 12)], [0, 1, 2, 3, 4]),
        "val": _labels(1, [(12, 14), (19, 8)], [0, 1, 2, 3]),
    }
    labels["train"][1][0, :3] = 30
    labels["train"][2][:] = np.where(labels["train"][2] == 255, 255, 0)  # Background only.
    for split, split_labels in labels.items():
        examples = [
            records.encode_example(
                _jpeg(*label.shape), label_png.encode_label_png(label), *label.shape
            )
            for label in split_labels
        ]
        records.write_shards(root, split, examples, len(examples), num_shards=2)
    class_names.write_class_names(root, _NAMES)
    return root, labels


def test_counts_equal_a_numpy_count_over_the_labels_written(dataset):
    root, labels = dataset
    seen = []
    counts = statistics.class_pixel_counts(
        root, "train", num_classes=5, on_file=lambda *args: seen.append(args)
    )

    everything = np.concatenate([label.ravel() for label in labels["train"]])
    histogram = np.bincount(everything, minlength=256)
    np.testing.assert_array_equal(counts.pixels, histogram[:5])
    assert counts.ignored == histogram[255]
    assert counts.out_of_range == 3
    assert counts.labelled == histogram[:5].sum()
    np.testing.assert_allclose(counts.shares(), histogram[:5] / histogram[:5].sum())
    holds = np.array([[np.any(label == c) for c in range(5)] for label in labels["train"]])
    np.testing.assert_array_equal(counts.images, holds.sum(0))
    labelled = np.array([np.sum(label < 5) for label in labels["train"]])
    np.testing.assert_array_equal(counts.image_pixels, (holds * labelled[:, None]).sum(0))
    assert counts.num_images == 5
    assert counts.height_range == (7, 20) and counts.width_range == (9, 30)
    shards = records.find_record_files(root, "train")
    assert [(path, done, total) for path, _, done, total in seen] == [
        (shards[0], 1, 2),
        (shards[1], 2, 2),
    ]
    assert sum(num_images for _, num_images, _, _ in seen) == 5


def test_median_frequency_weights_on_a_hand_computed_example():
    counts = statistics.SplitCounts("train", num_classes=4, ignore_label=255)
    # Image 1: 6 pixels of class 0, 2 of class 1 and 5 ignored; image 2: 4 of 0, 4 of 2.
    counts.add(np.bincount([0] * 6 + [1] * 2 + [255] * 5, minlength=256), 13, 1)
    counts.add(np.bincount([0] * 4 + [2] * 4, minlength=256), 8, 1)
    # freq = 10/16, 2/8, 4/8; median 0.5; class 3 is absent.
    np.testing.assert_allclose(
        statistics.median_frequency_weights(counts), [0.8, 2.0, 1.0, 0.0], rtol=1e-12
    )
    assert counts.absent_classes() == [3]


def test_median_frequency_weights_need_a_labelled_pixel():
    counts = statistics.SplitCounts("val", num_classes=3, ignore_label=255)
    counts.add(np.bincount([255] * 4, minlength=256), 2, 2)
    with pytest.raises(ValueError, match="val split has no labelled pixel"):
        statistics.median_frequency_weights(counts)


def test_statistics_name_the_classes_and_those_absent(dataset):
    root, labels = dataset
    report = statistics.dataset_statistics(root, _NAMES)

    assert report["class_names"] == list(_NAMES)
    val = report["splits"]["val"]
    assert val["num_images"] == 2
    assert val["height"] == {"min": 12, "max": 19} and val["width"] == {"min": 8, "max": 14}
    assert val["absent_classes"] == ["sand"]
    assert report["splits"]["train"]["absent_classes"] == []
    histogram = np.bincount(np.concatenate([x.ravel() for x in labels["val"]]), minlength=256)
    assert [c["pixels"] for c in val["classes"]] == histogram[:5].tolist()
    assert val["classes"][4]["median_frequency_weight"] == 0
    table = statistics.format_table(report)
    assert "absent from val: sand" in table and "absent from train: none" in table
    assert f"{histogram[1]:>16,}{histogram[1] / histogram[:5].sum():>9.2%}" in table


def test_script_prints_the_table_and_writes_the_json(dataset, tmp_path):
    root, _ = dataset
    script = os.path.join(REPO, "data", "dataset_stats.py")
    result = subprocess.run(
        [sys.executable, script, "--help"], capture_output=True, text=True, timeout=300
    )
    assert "--output_json" in result.stdout and "median-frequency" in result.stdout

    output = str(tmp_path / "stats.json")
    result = subprocess.run(
        [sys.executable, script, f"--data_dir={root}", f"--output_json={output}"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "[2/2] " in result.stdout and "water" in result.stdout  # Names from class_names.txt.
    with open(output, encoding="utf-8") as f:
        written = json.load(f)
    expected = json.loads(json.dumps(statistics.dataset_statistics(root, _NAMES)))
    assert written == expected
    assert os.listdir(tmp_path) == ["stats.json"]

    result = subprocess.run(
        [sys.executable, script, f"--data_dir={tmp_path}"], capture_output=True, text=True
    )
    assert result.returncode != 0 and "No train records" in result.stderr
