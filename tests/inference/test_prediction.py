import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import REPO, TINY_ARCHITECTURE
from PIL import Image

from tf_pacseg import constants
from tf_pacseg.data import synthetic
from tf_pacseg.inference import forward, prediction
from tf_pacseg.inference.tiling import Tiling, tiled_labels, tiled_probabilities
from tf_pacseg.testing import tf1_checkpoints
from tf_pacseg.weights import saving

ARCHITECTURE = TINY_ARCHITECTURE
# Inputs: (file name, PIL mode, height, width); odd and even sizes.
INPUTS = (
    ("rgb.png", "RGB", 45, 61),
    ("gray.png", "L", 52, 40),
    ("alpha.PNG", "RGBA", 41, 58),
    ("photo.JPG", "RGB", 50, 50),
    ("bitmap.bmp", "RGB", 47, 39),
)
BROKEN = "broken.jpeg"


def _snapshot(directory):
    """Names, sizes and modification times of a folder and everything in it."""
    entries = {".": os.stat(directory).st_mtime_ns}
    for parent, folders, files in os.walk(directory):
        for name in folders + files:
            path = os.path.join(parent, name)
            stat = os.stat(path)
            entries[os.path.relpath(path, directory)] = (stat.st_size, stat.st_mtime_ns)
    return entries


@pytest.fixture(scope="module")
def input_dir(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("photos"))
    rng = np.random.default_rng(0)
    for name, mode, height, width in INPUTS:
        # Smooth content, so that JPEG keeps it close and predictions are not noise.
        yy, xx = np.mgrid[0:height, 0:width]
        base = np.stack([yy * 4, xx * 4, (yy + xx) * 2], -1) % 256
        pixels = np.clip(base + rng.integers(-20, 20, base.shape), 0, 255).astype(np.uint8)
        image = Image.fromarray(pixels).convert(mode)
        if mode == "RGBA":
            alpha = rng.integers(0, 256, (height, width), dtype=np.uint8)
            image.putalpha(Image.fromarray(alpha))
        image.save(os.path.join(directory, name))
    with open(os.path.join(directory, BROKEN), "wb") as f:
        f.write(b"\xff\xd8\xff not really a JPEG")
    with open(os.path.join(directory, "notes.txt"), "w") as f:
        f.write("not an image")
    os.mkdir(os.path.join(directory, "nested"))
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(os.path.join(directory, "nested", "x.png"))
    return directory


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    prefix = str(tmp_path_factory.mktemp("tf1") / "model.ckpt-7")
    tf1_checkpoints.write_reference_checkpoint(prefix, **ARCHITECTURE, seed=5)
    return prefix


@pytest.fixture(scope="module")
def model(checkpoint):
    return saving.load_model(checkpoint)


def _rgb(input_dir, name):
    """The RGB pixels the network should see, decoded independently of predict.py."""
    image = Image.open(os.path.join(input_dir, name))
    if image.mode == "RGBA":
        return np.asarray(image)[..., :3]
    if image.mode == "L":
        return np.repeat(np.asarray(image)[..., None], 3, axis=-1)
    return np.asarray(image.convert("RGB"))


@pytest.fixture(scope="module")
def reference(checkpoint, input_dir):
    """{stem: the ORIGINAL graph's logits [H, W, 21]}."""
    images = [_rgb(input_dir, name).astype(np.float32) for name, *_ in INPUTS]
    logits = tf1_checkpoints.reference_logits(checkpoint, images, **ARCHITECTURE)
    stems = [os.path.splitext(name)[0] for name, *_ in INPUTS]
    return dict(zip(stems, logits, strict=True))


def _assert_labels_match(labels, logits):
    """Argmax of `logits`, except where the top two are within 1e-4 of the range."""
    top2 = np.sort(logits, axis=-1)[..., -2:]
    ambiguous = top2[..., 1] - top2[..., 0] <= 1e-4 * (logits.max() - logits.min())
    differ = labels != logits.argmax(-1)
    assert not (differ & ~ambiguous).any()
    assert differ.sum() <= 0.001 * labels.size


@pytest.mark.parametrize("winograd", [False, True])
def test_logits_script_reproduces_the_original_graph(
    checkpoint, input_dir, reference, tmp_path, winograd
):
    before = _snapshot(input_dir)
    output_dir = str(tmp_path / "logits")
    command = [
        sys.executable,
        os.path.join(REPO, "predict.py"),
        f"--model_dir={checkpoint}",
        f"--input_dir={input_dir}",
        f"--output_dir={output_dir}",
        "--output_format=logits",
    ] + (["--winograd"] if winograd else [])
    process = subprocess.run(command, capture_output=True, text=True, cwd=str(tmp_path))
    assert process.returncode == 0, process.stderr[-3000:]
    assert sorted(os.listdir(output_dir)) == sorted(stem + ".npy" for stem in reference)
    for stem, expected in reference.items():
        logits = np.load(os.path.join(output_dir, stem + ".npy"))
        assert logits.dtype == np.float32 and logits.shape == expected.shape
        tolerance = 1e-4 * (expected.max() - expected.min())
        np.testing.assert_allclose(logits, expected, rtol=0, atol=tolerance)
    assert f"wrote {len(INPUTS)} of {len(INPUTS) + 1} images" in process.stdout
    assert BROKEN in process.stdout  # The unreadable file is named in the summary.
    assert _snapshot(input_dir) == before


def test_color_output_is_the_voc_palette_of_the_original_argmax(
    model, input_dir, reference, tmp_path
):
    before = _snapshot(input_dir)
    output_dir = str(tmp_path / "color")
    summary = prediction.predict_folder(model, input_dir, output_dir, verbose=0)
    assert len(summary.written) == len(INPUTS)
    for stem, logits in reference.items():
        image = Image.open(os.path.join(output_dir, stem + ".png"))
        assert image.mode == "P"
        palette = np.asarray(image.getpalette()[: 3 * 256]).reshape(-1, 3)
        np.testing.assert_array_equal(palette, np.asarray(constants.VOC_PALETTE))
        labels = np.asarray(image)
        _assert_labels_match(labels, logits)
        # As RGB, the pixels are the VOC colours of the classes.
        colours = np.asarray(image.convert("RGB"))
        np.testing.assert_array_equal(colours, np.asarray(constants.VOC_PALETTE)[labels])
    assert _snapshot(input_dir) == before


def test_index_and_overlay_outputs(model, input_dir, reference, tmp_path):
    index_dir, overlay_dir = str(tmp_path / "index"), str(tmp_path / "overlay")
    prediction.predict_folder(model, input_dir, index_dir, output_format="index", verbose=0)
    prediction.predict_folder(model, input_dir, overlay_dir, output_format="overlay", verbose=0)
    for name, _, height, width in INPUTS:
        stem = os.path.splitext(name)[0]
        index = Image.open(os.path.join(index_dir, stem + ".png"))
        assert index.mode == "L" and index.size == (width, height)
        labels = np.asarray(index)
        _assert_labels_match(labels, reference[stem])

        overlay = Image.open(os.path.join(overlay_dir, stem + ".png"))
        assert overlay.mode == "RGB" and overlay.size == (width, height)
        colours = np.asarray(constants.VOC_PALETTE, np.float32)[labels]
        expected = np.round(0.5 * _rgb(input_dir, name) + 0.5 * colours)
        np.testing.assert_array_equal(np.asarray(overlay), expected)


def test_grayscale_and_rgba_inputs_become_rgb(input_dir):
    for name, _, height, width in INPUTS:
        image = prediction.read_image(os.path.join(input_dir, name))
        assert image.shape == (height, width, 3) and image.dtype == np.uint8
        np.testing.assert_array_equal(image, _rgb(input_dir, name))
    gray = prediction.read_image(os.path.join(input_dir, "gray.png"))
    assert (gray[..., 0] == gray[..., 2]).all()


def test_unreadable_files_are_reported_and_skipped(model, input_dir, tmp_path):
    summary = prediction.predict_folder(
        model, input_dir, str(tmp_path / "out"), output_format="index", verbose=0
    )
    assert [path for path, _ in summary.failed] == [os.path.join(input_dir, BROKEN)]
    assert BROKEN in summary.failed[0][1]
    assert f"skipped 1 unreadable files:\n  cannot read image {input_dir}" in str(summary)
    # Only images count: notes.txt and the nested folder are not inputs.
    assert len(summary.written) == len(INPUTS)


def test_output_dir_must_not_be_the_input_dir_or_inside_it(model, input_dir):
    before = _snapshot(input_dir)
    for output_dir in (input_dir, input_dir + "/", os.path.join(input_dir, "masks")):
        with pytest.raises(
            ValueError, match="`output_dir`. Expected a folder outside the input folder"
        ):
            prediction.predict_folder(model, input_dir, output_dir, verbose=0)
    assert _snapshot(input_dir) == before


def test_argument_errors(model, input_dir, tmp_path):
    with pytest.raises(ValueError, match="output_format"):
        prediction.predict_folder(model, input_dir, str(tmp_path / "o"), output_format="jpeg")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        prediction.predict_folder(model, str(tmp_path / "nothing"), str(tmp_path / "o"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="No images"):
        prediction.predict_folder(model, str(empty), str(tmp_path / "o"))
    with pytest.raises(ValueError, match="Received: overlay_opacity=1.5"):
        prediction.predict_folder(model, input_dir, str(tmp_path / "o"), overlay_opacity=1.5)
    with pytest.raises(ValueError, match=r"Received: labels with ids in \[0, 300\]"):
        prediction.color_image(np.array([[0, 300]]))


def test_outputs_are_named_after_the_stem_unless_stems_collide():
    names = prediction.output_names(["d/a.jpg", "d/b.png", "d/A.png", "d/c.bmp"], ".png")
    assert names == ["a.jpg.png", "b.png", "A.png.png", "c.png"]


def test_images_above_the_pixel_limit_are_refused_before_decoding(input_dir, monkeypatch):
    path = os.path.join(input_dir, "rgb.png")  # 61x45 = 2745 pixels.
    assert prediction.read_image(path, max_pixels=2745).shape == (45, 61, 3)
    with pytest.raises(
        ValueError,
        match=f"cannot read image {path}: 61x45 = 2745 pixels is above the limit of 2744 "
        r"pixels \(max_image_pixels",
    ):
        prediction.read_image(path, max_pixels=2744)
    # Pillow's own guard, where it is the lower, names the file too.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ValueError, match=f"cannot read image {path}: .*exceeds limit of 2000"):
        prediction.read_image(path)


def test_large_overlays_are_blended_in_bands_exactly(monkeypatch):
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (45, 30, 3), np.uint8)
    labels = rng.integers(0, 21, (45, 30))
    expected = prediction.overlay_image(image, labels, 0.3)
    monkeypatch.setattr(prediction, "_OVERLAY_ROWS", 7)
    np.testing.assert_array_equal(prediction.overlay_image(image, labels, 0.3), expected)
    colours = np.asarray(constants.VOC_PALETTE, np.float32)[labels]
    blended = np.round(0.7 * image.astype(np.float32) + np.float32(0.3) * colours)
    np.testing.assert_array_equal(expected, blended.astype(np.uint8))


def test_script_slides_over_large_images_and_skips_those_above_the_limit(
    checkpoint, model, tmp_path
):
    input_dir = tmp_path / "scans"
    input_dir.mkdir()
    large, _ = synthetic.make_sample(np.random.default_rng(3), 300, 420)
    Image.fromarray(large).save(input_dir / "large.png")
    small = large[:100, :120]
    Image.fromarray(small).save(input_dir / "small.png")
    Image.fromarray(np.zeros((400, 500, 3), np.uint8)).save(input_dir / "huge.png")
    output_dir = tmp_path / "masks"
    command = [
        sys.executable,
        os.path.join(REPO, "predict.py"),
        f"--model_dir={checkpoint}",
        f"--input_dir={input_dir}",
        f"--output_dir={output_dir}",
        "--output_format=index",
        "--max_whole_pixels=20000",  # small: 12,000 pixels, whole; large: 126,000, tiled.
        "--tile_size=129",
        "--max_image_pixels=199999",  # huge: 200,000 pixels, refused.
    ]
    process = subprocess.run(command, capture_output=True, text=True, cwd=str(tmp_path))
    assert process.returncode == 0, process.stderr[-3000:]
    assert "Tiles for 420x300 image (126,000 pixels > max_whole_pixels=20,000): " in (
        process.stderr
    )
    assert "Tiles for 120x100" not in process.stderr and "Traceback" not in process.stderr
    assert (
        f"cannot read image {input_dir / 'huge.png'}: 500x400 = 200000 pixels is above the "
        "limit of 199999 pixels" in process.stdout
    )
    assert sorted(os.listdir(output_dir)) == ["large.png", "small.png"]
    tiles = Tiling(mode="slide", tile_size=129)
    np.testing.assert_array_equal(
        np.asarray(Image.open(output_dir / "large.png")), tiled_labels(model, large, tiles)
    )
    whole = forward.predict_labels(model, small[None].astype(np.float32))[0]
    np.testing.assert_array_equal(np.asarray(Image.open(output_dir / "small.png")), whole)


def test_logits_of_tiled_images_are_their_mean_probabilities(model):
    image, _ = synthetic.make_sample(np.random.default_rng(5), 80, 100)
    tiles = Tiling(mode="slide", tile_size=49)
    scores = prediction.predict_image(model, image, "logits", tiles)
    np.testing.assert_array_equal(scores, tiled_probabilities(model, image, tiles))
    np.testing.assert_allclose(scores.sum(-1), 1.0, atol=1e-5)
