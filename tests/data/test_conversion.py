import concurrent.futures
import io
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from helpers import REPO
from PIL import Image

from tf_pacseg import constants
from tf_pacseg.data import class_names, conversion, records, samples, synthetic, voc

_LABEL_DIRS = ("SegmentationClassAug", "SegmentationClass")

# id -> reason it must be skipped; the rest of the lists must be written.
_BROKEN = {
    "train_0001": samples.MISSING_IMAGE,
    "train_0002": samples.MISSING_LABEL,
    "train_0003": samples.BAD_IMAGE,  # A PNG named .jpg.
    "train_0004": samples.BAD_IMAGE,  # JPEG magic bytes, then a truncated stream.
    "train_0005": samples.SIZE_MISMATCH,
    "absent_0000": samples.MISSING_IMAGE,  # Listed, no files at all.
    "val_0001": samples.BAD_LABEL_VALUES,  # Holds the value 30.
    "val_0002": samples.BAD_LABEL,  # Not a PNG.
}
_GOOD = {"train": ["train_0000", "train_0006", "train_0007"], "val": ["val_0000", "val_0003"]}


def _path(root, folder, sample_id, extension):
    return os.path.join(root, folder, sample_id + extension)


def _write_label(root, sample_id, label):
    """Writes `label` in both label folders: index PNG and VOC palette PNG."""
    Image.fromarray(label).save(_path(root, "SegmentationClassAug", sample_id, ".png"))
    palette = Image.fromarray(label)
    palette.putpalette([c for rgb in constants.VOC_PALETTE for c in rgb])
    palette.save(_path(root, "SegmentationClass", sample_id, ".png"))


@pytest.fixture(scope="module")
def voc_dir(tmp_path_factory):
    """A synthetic VOC folder with one broken sample per failure mode."""
    root = str(tmp_path_factory.mktemp("voc"))
    synthetic.make_synthetic_voc(root, num_train=8, num_val=4, seed=1)
    os.remove(_path(root, "JPEGImages", "train_0001", ".jpg"))
    for folder in _LABEL_DIRS:
        os.remove(_path(root, folder, "train_0002", ".png"))
    shutil.copy(
        _path(root, "SegmentationClassAug", "train_0000", ".png"),
        _path(root, "JPEGImages", "train_0003", ".jpg"),
    )
    with open(_path(root, "JPEGImages", "train_0004", ".jpg"), "r+b") as f:
        f.truncate(300)
    height, width = np.asarray(Image.open(_path(root, "JPEGImages", "train_0005", ".jpg"))).shape[
        :2
    ]
    _write_label(root, "train_0005", np.zeros((height + 1, width), np.uint8))
    label = np.asarray(Image.open(_path(root, "SegmentationClassAug", "val_0001", ".png"))).copy()
    label[:2, :2] = 30
    _write_label(root, "val_0001", label)
    for folder in _LABEL_DIRS:
        with open(_path(root, folder, "val_0002", ".png"), "wb") as f:
            f.write(b"not a png")
    # The list formats the converter tolerates: bare ids, extra columns, paths, blanks.
    lists = os.path.join(root, "ImageSets", "Segmentation")
    with open(os.path.join(lists, "train.txt"), "w") as f:
        f.write("train_0000\ntrain_0001 1\n\n/JPEGImages/train_0002.jpg /SegmentationClass/x.png\n")
        f.write("train_0003\ntrain_0004\ntrain_0005\nabsent_0000\ntrain_0006\ntrain_0007.jpg\n")
    return root


def _read_records(paths):
    """Independent of `records.parse_example`: raw protos, decoded with PIL."""
    examples = []
    for serialized in tf.data.TFRecordDataset(paths):
        feature = tf.train.Example.FromString(serialized.numpy()).features.feature
        examples.append(
            {
                "image": feature["image/encoded"].bytes_list.value[0],
                "label": np.asarray(
                    Image.open(io.BytesIO(feature["label/encoded"].bytes_list.value[0]))
                ),
                "height": feature["image/height"].int64_list.value[0],
                "width": feature["image/width"].int64_list.value[0],
                "formats": (
                    feature["image/format"].bytes_list.value[0],
                    feature["label/format"].bytes_list.value[0],
                ),
            }
        )
    return examples


def _convert(voc_dir, output, **kwargs):
    kwargs = {"num_shards": 2, "num_workers": 0, "verbose": 0, **kwargs}
    return conversion.convert_voc(
        voc_dir,
        str(output),
        "ImageSets/Segmentation/train.txt",
        "ImageSets/Segmentation/val.txt",
        **kwargs,
    )


@pytest.mark.parametrize("label_data_dir", _LABEL_DIRS)
def test_writes_exactly_the_good_samples_in_list_order(voc_dir, tmp_path, label_data_dir):
    summary = _convert(voc_dir, tmp_path, label_data_dir=label_data_dir)

    assert summary.written == {"train": 3, "val": 2}
    for split, ids in _GOOD.items():
        examples = _read_records(records.find_record_files(str(tmp_path), split))
        assert len(examples) == len(ids)
        for sample_id, example in zip(ids, examples, strict=True):
            with open(_path(voc_dir, "JPEGImages", sample_id, ".jpg"), "rb") as f:
                assert example["image"] == f.read()
            source = Image.open(_path(voc_dir, label_data_dir, sample_id, ".png"))
            np.testing.assert_array_equal(example["label"], np.asarray(source))
            assert example["label"].ndim == 2  # One channel, whatever the source.
            assert (example["height"], example["width"]) == example["label"].shape
            assert example["formats"] == (b"jpeg", b"png")


def test_summary_names_every_skipped_sample_and_reason(voc_dir, tmp_path):
    summary = _convert(voc_dir, tmp_path)

    assert {s.sample_id: s.reason for s in summary.skipped} == _BROKEN
    assert summary.skipped_counts()[samples.MISSING_IMAGE] == 2
    report = str(summary)
    for sample_id, reason in _BROKEN.items():
        assert sample_id in report and reason in report
    messages = {s.sample_id: s.message for s in summary.skipped}
    assert "is a PNG" in messages["train_0003"]
    assert "[30]" in messages["val_0001"]


def test_size_mismatch_message_gives_both_sizes(voc_dir, tmp_path):
    summary = _convert(voc_dir, tmp_path)
    message = next(s.message for s in summary.skipped if s.sample_id == "train_0005")
    image_height, image_width = Image.open(_path(voc_dir, "JPEGImages", "train_0005", ".jpg")).size[
        ::-1
    ]
    assert f"is {image_height + 1}x{image_width} (height x width)" in message
    assert f"is {image_height}x{image_width}." in message


def test_strict_mode_raises_naming_the_first_bad_sample(voc_dir, tmp_path):
    with pytest.raises(ValueError, match=r"'train_0001'.*train_0001\.jpg does not exist"):
        _convert(voc_dir, tmp_path, strict=True)
    # The interrupted split left nothing behind, not even temporary files.
    assert os.listdir(tmp_path) == []


def test_leaves_only_the_named_shards(voc_dir, tmp_path):
    _convert(voc_dir, tmp_path, num_shards=3)
    expected = {records.shard_file_name(s, i, 3) for s in ("train", "val") for i in range(3)}
    assert set(os.listdir(tmp_path)) == expected
    assert records.shard_file_name("train", 0, 3) == "train-00000-of-00003.tfrecord"


def test_more_shards_than_samples_gives_empty_shards(voc_dir, tmp_path):
    summary = _convert(voc_dir, tmp_path, num_shards=12)
    counts = [len(_read_records([path])) for path in summary.splits["val"].files]
    assert len(counts) == 12 and sum(counts) == 2


def test_rerun_with_other_shard_count_removes_stale_shards(voc_dir, tmp_path):
    _convert(voc_dir, tmp_path, num_shards=3)
    _convert(voc_dir, tmp_path, num_shards=2)
    assert sorted(os.listdir(tmp_path)) == sorted(
        records.shard_file_name(s, i, 2) for s in ("train", "val") for i in range(2)
    )


def test_pool_output_matches_in_process_output(voc_dir, tmp_path):
    image_dir = os.path.join(voc_dir, "JPEGImages")
    label_dir = os.path.join(voc_dir, "SegmentationClassAug")
    ids = voc.read_id_list(os.path.join(voc_dir, "ImageSets", "Segmentation", "train.txt"))
    serial = conversion.convert_split(
        "train", ids, image_dir, label_dir, str(tmp_path / "a"), verbose=0
    )
    with concurrent.futures.ThreadPoolExecutor(2) as executor:
        pooled = conversion.convert_split(
            "train", ids, image_dir, label_dir, str(tmp_path / "b"), executor=executor, verbose=0
        )
    assert serial.skipped == pooled.skipped
    for a, b in zip(serial.files, pooled.files, strict=True):
        with open(a, "rb") as fa, open(b, "rb") as fb:
            assert fa.read() == fb.read()


def test_original_record_file_is_found_and_parses(voc_dir, tmp_path):
    _convert(voc_dir, tmp_path / "shards", num_shards=1)
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    os.replace(
        tmp_path / "shards" / records.shard_file_name("train", 0, 1), legacy / "voc_train.record"
    )

    files = records.find_record_files(str(legacy), "train")
    assert files == [str(legacy / "voc_train.record")]
    parsed = list(tf.data.TFRecordDataset(files).map(records.parse_example))
    assert len(parsed) == len(_GOOD["train"])
    for sample_id, (image, label) in zip(_GOOD["train"], parsed, strict=True):
        with open(_path(voc_dir, "JPEGImages", sample_id, ".jpg"), "rb") as f:
            np.testing.assert_array_equal(image, tf.io.decode_jpeg(f.read(), channels=3))
        source = np.asarray(Image.open(_path(voc_dir, "SegmentationClassAug", sample_id, ".png")))
        np.testing.assert_array_equal(label[..., 0], source)


def test_missing_folder_and_list_errors_name_the_path(voc_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="label folder .*Nope.* does not exist"):
        _convert(voc_dir, tmp_path, label_data_dir="Nope")
    with pytest.raises(FileNotFoundError, match="List file 'missing.txt' not found"):
        conversion.convert_voc(voc_dir, str(tmp_path), "missing.txt", None)


@pytest.mark.slow
def test_script_converts_with_worker_processes_and_reports(voc_dir, tmp_path):
    command = [
        sys.executable,
        os.path.join(REPO, "data", "convert_voc.py"),
        f"--data_dir={voc_dir}",
    ]
    result = subprocess.run(
        [*command, f"--output_path={tmp_path}", "--num_workers=2"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "train: wrote 3 of 9 listed samples" in result.stdout
    assert "absent_0000" in result.stdout
    examples = _read_records(records.find_record_files(str(tmp_path), "val"))
    assert len(examples) == 2

    result = subprocess.run([*command, "--image_data_dir=Nope"], capture_output=True, text=True)
    assert result.returncode != 0
    assert "image folder" in result.stderr and "Nope" in result.stderr


# A 5-class dataset of colour masks: class i is drawn in _COLOURS[i], void in white.
_COLOURS = ((0, 0, 0), (200, 0, 0), (0, 200, 0), (0, 0, 200), (200, 200, 0))
_NAMES = ("background", "road", "grass", "water", "sand")
_COLOUR_GOOD = {"train": ["c_0000", "c_0001", "c_0002"], "val": ["c_0003"]}
_COLOUR_BROKEN = {
    "c_unknown": samples.UNKNOWN_LABEL_COLORS,
    "c_lossy": samples.LOSSY_LABEL,  # A PNG of a JPEG-compressed mask.
    "c_jpg": samples.LOSSY_LABEL,  # The mask is only a .jpg.
}


def _render(label):
    table = np.full((256, 3), 255, np.uint8)
    table[: len(_COLOURS)] = _COLOURS
    return table[label]


@pytest.fixture(scope="module")
def colour_dir(tmp_path_factory):
    """Images, colour masks in masks/, list files and colours and names files."""
    root = tmp_path_factory.mktemp("colour")
    for folder in ("JPEGImages", "masks"):
        (root / folder).mkdir()
    rng = np.random.default_rng(3)
    labels = {}
    for sample_id in [*_COLOUR_GOOD["train"], *_COLOUR_GOOD["val"], *_COLOUR_BROKEN]:
        label = np.kron(rng.integers(0, 5, (6, 8)), np.ones((4, 4), np.int64)).astype(np.uint8)
        label[rng.random(label.shape) < 0.1] = 255
        labels[sample_id] = label
        image = rng.integers(0, 256, (*label.shape, 3), dtype=np.uint8)
        Image.fromarray(image).save(root / "JPEGImages" / f"{sample_id}.jpg")
        Image.fromarray(_render(label)).save(root / "masks" / f"{sample_id}.png")
    unknown = _render(labels["c_unknown"])
    unknown[3, 4:6] = (10, 20, 30)
    Image.fromarray(unknown).save(root / "masks" / "c_unknown.png")
    buffer = io.BytesIO()
    Image.fromarray(_render(labels["c_lossy"])).save(buffer, format="JPEG", quality=80)
    Image.open(buffer).convert("RGB").save(root / "masks" / "c_lossy.png")
    os.remove(root / "masks" / "c_jpg.png")
    Image.fromarray(_render(labels["c_jpg"])).save(root / "masks" / "c_jpg.jpg", quality=95)
    (root / "train.txt").write_text("\n".join([*_COLOUR_GOOD["train"], *_COLOUR_BROKEN]))
    (root / "val.txt").write_text("\n".join(_COLOUR_GOOD["val"]))
    colours = "".join(
        f"{r},{g},{b}  # {name}\n" for (r, g, b), name in zip(_COLOURS, _NAMES, strict=True)
    )
    (root / "colors.txt").write_text(colours + "ignore: 255,255,255\n")
    (root / "names.txt").write_text("\n".join(_NAMES) + "\n")
    return str(root), labels


def _convert_colours(colour_dir, output, **kwargs):
    root, _ = colour_dir
    return conversion.convert_voc(
        root,
        str(output),
        "train.txt",
        "val.txt",
        label_data_dir="masks",
        num_classes=5,
        label_colors=os.path.join(root, "colors.txt"),
        class_names=os.path.join(root, "names.txt"),
        num_shards=1,
        num_workers=0,
        verbose=0,
        **kwargs,
    )


def test_colour_masks_convert_to_class_indices_with_ignore(colour_dir, tmp_path):
    summary = _convert_colours(colour_dir, tmp_path)
    _, labels = colour_dir

    assert summary.written == {"train": 3, "val": 1}
    for split, ids in _COLOUR_GOOD.items():
        examples = _read_records(records.find_record_files(str(tmp_path), split))
        assert len(examples) == len(ids)
        for sample_id, example in zip(ids, examples, strict=True):
            np.testing.assert_array_equal(example["label"], labels[sample_id])
            assert (example["label"] == 255).any()  # The white pixels, left out.


def test_colour_conversion_writes_the_class_names_beside_the_shards(colour_dir, tmp_path):
    summary = _convert_colours(colour_dir, tmp_path)
    path = os.path.join(tmp_path, class_names.CLASS_NAMES_FILE)
    assert summary.class_names_file == path
    assert class_names.read_class_names(path) == _NAMES
    assert f"class names: {path}" in str(summary)


def test_colour_masks_with_unknown_or_lossy_colours_are_skipped_and_named(colour_dir, tmp_path):
    summary = _convert_colours(colour_dir, tmp_path)
    assert {s.sample_id: s.reason for s in summary.skipped} == _COLOUR_BROKEN
    messages = {s.sample_id: s.message for s in summary.skipped}
    assert (
        "c_unknown.png has colours in no entry of the label colours file" in messages["c_unknown"]
    )
    assert "(10, 20, 30) on 2 pixels, first at (row 3, col 4)" in messages["c_unknown"]
    assert "c_lossy.png looks JPEG-compressed:" in messages["c_lossy"]
    assert "distinct colours" in messages["c_lossy"]
    assert "c_jpg.jpg looks JPEG-compressed: it is a JPEG" in messages["c_jpg"]
    report = str(summary)
    assert f"skipped, {samples.LOSSY_LABEL}: 2" in report


def test_colour_masks_in_strict_mode_stop_at_the_unknown_colour(colour_dir, tmp_path):
    with pytest.raises(ValueError, match=r"'c_unknown'.*\(10, 20, 30\) on 2 pixels"):
        _convert_colours(colour_dir, tmp_path, strict=True)
    assert not os.path.exists(os.path.join(tmp_path, class_names.CLASS_NAMES_FILE))


def test_bad_colours_or_names_stop_before_anything_is_written(colour_dir, tmp_path):
    root, _ = colour_dir
    with pytest.raises(ValueError, match="has 5 class colours, but there are 6 classes"):
        conversion.convert_voc(
            root,
            str(tmp_path),
            "train.txt",
            None,
            num_classes=6,
            label_colors=os.path.join(root, "colors.txt"),
        )
    with pytest.raises(ValueError, match="has 5 names, but there are 21 classes"):
        conversion.convert_voc(
            root, str(tmp_path), "train.txt", None, class_names=os.path.join(root, "names.txt")
        )
    assert os.listdir(tmp_path) == []


def test_colour_workers_import_no_tensorflow(colour_dir):
    root, _ = colour_dir
    script = (
        "import sys\n"
        "from tf_pacseg.data import label_png, voc\n"
        "colours = label_png.load_label_colors(sys.argv[1], 5)\n"
        "paths = voc.sample_paths(sys.argv[2], sys.argv[3], 'c_0000')\n"
        "sample = voc._load_task(('c_0000', *paths, 5, 255, colours))\n"
        "print(type(sample).__name__, 'tensorflow' in sys.modules, 'keras' in sys.modules)\n"
    )
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            script,
            os.path.join(root, "colors.txt"),
            os.path.join(root, "JPEGImages"),
            os.path.join(root, "masks"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["Sample", "False", "False"]


@pytest.mark.slow
def test_script_converts_colour_masks_and_rejects_a_bad_colours_file(colour_dir, tmp_path):
    root, labels = colour_dir
    command = [
        sys.executable,
        os.path.join(REPO, "data", "convert_voc.py"),
        f"--data_dir={root}",
        "--train_data_list=train.txt",
        "--valid_data_list=val.txt",
        "--label_data_dir=masks",
        "--num_classes=5",
        f"--class_names={os.path.join(root, 'names.txt')}",
    ]
    result = subprocess.run(
        [
            *command,
            f"--label_colors={os.path.join(root, 'colors.txt')}",
            f"--output_path={tmp_path}",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert "train: wrote 3 of 6 listed samples" in result.stdout
    assert class_names.read_class_names(str(tmp_path / "class_names.txt")) == _NAMES
    examples = _read_records(records.find_record_files(str(tmp_path), "val"))
    np.testing.assert_array_equal(examples[0]["label"], labels["c_0003"])

    result = subprocess.run(
        [*command, f"--label_colors={os.path.join(root, 'names.txt')}"],
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert "names.txt', line 1: expected `r,g,b`" in result.stderr
