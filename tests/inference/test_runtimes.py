"""Prediction through exported models: ONNX and OpenVINO IR give the Keras model's masks."""

import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import REPO, TINY_ARCHITECTURE, randomize_weights
from PIL import Image

from tf_pacseg.export.exporter import export_model
from tf_pacseg.export.verification import relative_difference
from tf_pacseg.inference import prediction, runtimes
from tf_pacseg.inference.tiling import Tiling
from tf_pacseg.model.segmenter import build_model

# (file name, height, width): odd and even sizes.
INPUTS = (("first.png", 45, 61), ("second.png", 52, 40))
SUFFIXES = {"onnx": ".onnx", "openvino": ".xml"}
SLIDE = Tiling(mode="slide", tile_size=33, tile_stride=22, tile_batch_size=3)
# One worker: the tests share the exports.
pytestmark = pytest.mark.xdist_group("runtimes")


@pytest.fixture(scope="module")
def model():
    return randomize_weights(build_model(**TINY_ARCHITECTURE), seed=3, residual_scale=0.3)


@pytest.fixture(scope="module")
def exports(model, tmp_path_factory):
    """{format: the model exported to it, any input size}."""
    directory = tmp_path_factory.mktemp("exports")
    paths = {}
    for format, suffix in SUFFIXES.items():
        paths[format] = os.fspath(directory / f"model{suffix}")
        export_model(model, format, paths[format])
    return paths


@pytest.fixture(scope="module")
def input_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for name, height, width in INPUTS:
        yy, xx = np.mgrid[0:height, 0:width]
        base = np.stack([yy * 4, xx * 4, (yy + xx) * 2], -1) % 256
        pixels = np.clip(base + rng.integers(-20, 20, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(directory / name)
    return os.fspath(directory)


def _outputs(model, input_dir, output_dir, output_format, tiling=None):
    """{stem: the array predict_folder wrote}, for `index` or `logits`."""
    prediction.predict_folder(
        model, input_dir, output_dir, output_format=output_format, tiling=tiling, verbose=0
    )
    extension = prediction.OUTPUT_EXTENSIONS[output_format]
    read = np.load if output_format == "logits" else lambda p: np.asarray(Image.open(p))
    stems = [os.path.splitext(name)[0] for name, *_ in INPUTS]
    return {stem: read(os.path.join(output_dir, stem + extension)) for stem in stems}


def _assert_same_labels(actual, expected):
    for stem, labels in expected.items():
        assert actual[stem].shape == labels.shape
        assert np.mean(actual[stem] == labels) >= 0.999, stem


@pytest.mark.parametrize("format", sorted(SUFFIXES))
def test_exported_model_predicts_the_keras_masks_and_logits(
    format, model, exports, input_dir, tmp_path
):
    exported = runtimes.load_exported_model(exports[format])
    assert exported.num_classes == TINY_ARCHITECTURE["num_classes"]
    assert exported.input_size is None
    for output_format in ("index", "logits"):
        expected = _outputs(model, input_dir, tmp_path / "keras" / output_format, output_format)
        actual = _outputs(exported, input_dir, tmp_path / format / output_format, output_format)
        if output_format == "index":
            _assert_same_labels(actual, expected)
        else:
            for stem, logits in expected.items():
                assert actual[stem].shape == logits.shape
                assert relative_difference(actual[stem], logits) <= 1e-4, stem


@pytest.mark.parametrize("format", sorted(SUFFIXES))
def test_exported_model_predicts_the_keras_masks_from_tiles(
    format, model, exports, input_dir, tmp_path
):
    exported = runtimes.load_exported_model(exports[format])
    expected = _outputs(model, input_dir, tmp_path / "keras", "index", SLIDE)
    actual = _outputs(exported, input_dir, tmp_path / format, "index", SLIDE)
    _assert_same_labels(actual, expected)
    probabilities = _outputs(exported, input_dir, tmp_path / "probabilities", "logits", SLIDE)
    for stem, labels in expected.items():  # Tiles average probabilities: each sums to 1.
        np.testing.assert_allclose(probabilities[stem].sum(-1), 1.0, atol=1e-5)
        assert np.mean(probabilities[stem].argmax(-1) == labels) >= 0.999


def test_openvino_in_bfloat16_stays_close_to_float32(model, exports):
    images = np.random.default_rng(1).integers(0, 256, (2, 41, 37, 3)).astype(np.float32)
    exported = runtimes.load_exported_model(exports["openvino"], openvino_precision="bf16")
    expected = np.asarray(model(images, training=False))
    assert relative_difference(exported(images), expected) <= 0.05


def test_fixed_size_export_refuses_other_sizes(model, tmp_path):
    path = os.fspath(tmp_path / "fixed.onnx")
    export_model(model, "onnx", path, input_size=(33, 41))
    exported = runtimes.load_exported_model(path)
    assert exported.input_size == (33, 41)
    assert exported(np.zeros((2, 33, 41, 3), np.float32)).shape == (2, 33, 41, 21)
    with pytest.raises(ValueError, match=r"fixed input size .*\(height, width\) \(34, 41\)"):
        exported(np.zeros((1, 34, 41, 3), np.float32))


def test_other_files_and_options_are_refused_by_name(exports, tmp_path):
    with pytest.raises(ValueError, match=r"ending in \.onnx or \.xml.*model\.weights\.h5"):
        runtimes.load_exported_model("model.weights.h5")
    with pytest.raises(ValueError, match="openvino_precision"):
        runtimes.load_exported_model(exports["onnx"], openvino_precision="bf16")
    with pytest.raises(FileNotFoundError, match="missing.xml"):
        runtimes.load_exported_model(os.fspath(tmp_path / "missing.xml"))


def test_a_missing_runtime_names_its_extra(exports, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # Importing it fails.
    with pytest.raises(ImportError, match=r"`onnx` extra.*onnxruntime"):
        runtimes.load_exported_model(exports["onnx"])


def test_predict_script_runs_an_export_with_a_default_legend(exports, input_dir, tmp_path):
    output_dir = tmp_path / "overlays"
    command = [
        sys.executable,
        os.path.join(REPO, "predict.py"),
        f"--model_path={exports['onnx']}",
        f"--input_dir={input_dir}",
        f"--output_dir={output_dir}",
        "--output_format=overlay",
        "--inference_mode=slide",
        "--tile_size=33",
    ]
    process = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert process.returncode == 0, process.stderr[-3000:]
    assert f"wrote {len(INPUTS)} of {len(INPUTS)} images" in process.stdout
    for name, height, width in INPUTS:
        overlay = Image.open(output_dir / name)
        assert overlay.width >= width and overlay.height > height  # The legend strip below.


def test_predict_script_refuses_both_models_and_overrides_of_an_export(exports, tmp_path):
    base = [sys.executable, os.path.join(REPO, "predict.py"), "--input_dir=in", "--output_dir=o"]
    both = subprocess.run(
        [*base, "--model_dir=model", f"--model_path={exports['onnx']}"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert both.returncode != 0 and "model_dir" in both.stderr and "model_path" in both.stderr
    os.mkdir(tmp_path / "in")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "in" / "a.png")
    override = subprocess.run(
        [*base, f"--model_path={exports['onnx']}", "--output_stride=8"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert override.returncode != 0
    assert "--output_stride does not apply to an exported --model_path" in override.stderr
