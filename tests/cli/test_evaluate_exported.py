"""evaluate.py on exports (--model_path): ONNX and OpenVINO give the Keras model's numbers."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from helpers import REPO, TINY_ARCHITECTURE, make_records, randomize_weights
from PIL import Image

from tf_pacseg.data import class_names
from tf_pacseg.export.exporter import export_model
from tf_pacseg.model.segmenter import build_model
from tf_pacseg.weights.saving import save_model_weights

# make_records' images are 40..60 px: padded to the crop, or larger than it.
CROP = 49
TILE = 33
NAMES = tuple(f"thing_{index}" for index in range(TINY_ARCHITECTURE["num_classes"]))
# Multi-scale, flips, and every report file.
FEATURES = ("--eval_scales=0.75,1", "--add_flipped_images")
# Share of the labelled pixels whose class may differ from the Keras model's in a float32
# runtime: its logits are within ~1e-6 of their range (sums in another order), which flips
# only pixels whose two top scores are that close; the predict tests of the same exports
# allow the same 0.1% (1 of these 11235 pixels flips with ONNX, so no exact equality).
# Each flipped pixel moves one count between two cells.
MAX_FLIPPED = 1e-3
# bfloat16 is about 1e-2 of the logits' range off: it flips more pixels (0.17% of these on
# an AVX512-BF16 CPU; none where OpenVINO falls back to float32).
MAX_FLIPPED_BF16 = 0.02
# One worker: the tests share the exports, which take half a minute to write.
pytestmark = pytest.mark.xdist_group("evaluate_exported")


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    directory = make_records(os.fspath(tmp_path_factory.mktemp("data")), num_val=5)
    class_names.write_class_names(directory, NAMES)  # Exports hold none: these apply.
    return directory


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """{name: the evaluate.py flag of one tiny model}: Keras, its exports, a fixed-size ONNX."""
    directory = tmp_path_factory.mktemp("models")
    # These weights predict several classes, one of them right in places.
    model = randomize_weights(build_model(**TINY_ARCHITECTURE), seed=0)
    save_model_weights(model, os.fspath(directory / "run" / "model.weights.h5"))
    flags = {"keras": f"--model_dir={directory / 'run'}"}
    exports = (
        ("onnx", "onnx", "model.onnx", None),
        ("openvino", "openvino", "model.xml", None),
        ("fixed", "onnx", "fixed.onnx", (TILE, TILE)),
    )
    for name, format, file_name, input_size in exports:
        export_model(model, format, os.fspath(directory / file_name), input_size=input_size)
        flags[name] = f"--model_path={directory / file_name}"
    return flags


def _evaluate(*args):
    environment = dict(os.environ, KERAS_BACKEND="tensorflow", CUDA_VISIBLE_DEVICES="")
    return subprocess.run(
        [sys.executable, os.fspath(REPO / "evaluate.py"), *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _results(model_flag, records, output_dir, *args):
    """(--output_json's dict, --per_image_json's list, --confusion_png's size, stdout)."""
    os.makedirs(output_dir, exist_ok=True)
    paths = [os.path.join(output_dir, name) for name in ("val.json", "images.json", "cm.png")]
    process = _evaluate(
        model_flag,
        f"--data_dir={records}",
        f"--input_height={CROP}",
        f"--input_width={CROP}",
        "--batch_size=2",
        f"--output_json={paths[0]}",
        f"--per_image_json={paths[1]}",
        f"--confusion_png={paths[2]}",
        *args,
    )
    assert process.returncode == 0, process.stderr[-3000:]
    with open(paths[0]) as f:
        result = json.load(f)
    with open(paths[1]) as f:
        images = json.load(f)
    with Image.open(paths[2]) as png:
        size = png.size
    assert f"mean IoU:       {result['miou']:.4f}" in process.stdout
    return result, images, size, process.stdout


def _assert_close(result, expected, max_flipped):
    matrix, reference = (np.asarray(r["confusion_matrix"]) for r in (result, expected))
    assert matrix.sum() == reference.sum() > 0  # The same labelled pixels.
    assert np.abs(matrix - reference).sum() <= 2 * max_flipped * reference.sum()


@pytest.fixture(scope="module")
def keras_results(models, records, tmp_path_factory):
    return _results(models["keras"], records, tmp_path_factory.mktemp("keras"), *FEATURES)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["onnx", "openvino"])
def test_float32_exports_give_the_keras_models_results(
    name, models, records, keras_results, tmp_path
):
    result, images, size, stdout = _results(models[name], records, tmp_path, *FEATURES)
    expected, expected_images, expected_size, _ = keras_results
    predicted = np.sum(expected["confusion_matrix"], axis=0)
    assert np.count_nonzero(predicted) > 1 and expected["miou"] > 0  # Can tell models apart.
    _assert_close(result, expected, MAX_FLIPPED)
    assert list(result["per_class_iou"]) == list(NAMES) and "thing_20" in stdout
    by_index = [{i["index"]: i["miou"] for i in found} for found in (images, expected_images)]
    assert sorted(by_index[0]) == list(range(5))
    for index, miou in by_index[1].items():  # A flipped pixel moves an image's mIoU a little.
        assert abs(by_index[0][index] - miou) <= 0.01, index
    assert size == expected_size


@pytest.mark.slow
def test_openvino_in_bfloat16_reports_an_miou_near_float32(
    models, records, keras_results, tmp_path
):
    bf16 = "--openvino_precision=bf16"
    result, *_ = _results(models["openvino"], records, tmp_path, *FEATURES, bf16)
    assert 0.0 < result["miou"] <= 1.0  # _results checked that it is printed.
    _assert_close(result, keras_results[0], MAX_FLIPPED_BF16)


@pytest.mark.slow
def test_fixed_size_export_evaluates_tiles_of_its_size(models, records, tmp_path):
    slide = ("--inference_mode=slide", f"--tile_size={TILE}")
    expected, *_ = _results(models["keras"], records, tmp_path / "keras", *slide)
    result, *_ = _results(models["fixed"], records, tmp_path / "fixed", *slide)
    _assert_close(result, expected, MAX_FLIPPED)


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, message",
    [
        (
            (f"--input_height={CROP}", f"--input_width={CROP}"),
            f"--input_height and --input_width must be {TILE} and {TILE}: .*fixed.onnx takes "
            f"{TILE}x{TILE} .*received --input_height={CROP} --input_width={CROP}",
        ),
        (  # Images larger than the crop keep their size: the runtime refuses them.
            (f"--input_height={TILE}", f"--input_width={TILE}"),
            rf"\({TILE}, {TILE}\), the fixed input size of .*fixed\.onnx; .*"
            r"\(--inference_mode=slide and --tile_size\).*images of \(height, width\) \(\d+, \d+\)",
        ),
        (
            ("--inference_mode=slide", f"--tile_size={CROP}"),
            f"--tile_size must give {TILE}x{TILE} tiles: .*received --tile_size={CROP}",
        ),
        (
            ("--inference_mode=slide", f"--tile_size={TILE}", "--input_height=32"),
            f"--input_height and --input_width must be at least {TILE} and {TILE} with "
            "--inference_mode=slide",
        ),
        (
            ("--inference_mode=slide", f"--tile_size={TILE}", "--eval_scales=0.5,1"),
            r"--eval_scales must be 1: .*received --eval_scales=0.5,1\.",
        ),
    ],
)
def test_fixed_size_export_refuses_other_sizes_naming_the_flag(models, records, args, message):
    process = _evaluate(models["fixed"], f"--data_dir={records}", *args)
    assert process.returncode == 1 and "Traceback" not in process.stderr, process.stderr
    (line,) = [line for line in process.stderr.splitlines() if line.startswith("evaluate.py:")]
    assert re.search(message, line), line


def test_model_dir_and_model_path_are_exclusive_and_one_is_required(tmp_path):
    both = _evaluate("--model_dir=run", "--model_path=m.onnx", f"--data_dir={tmp_path}")
    assert both.returncode != 0
    assert "Exactly one of (model_dir, model_path)" in both.stderr, both.stderr[-2000:]
    neither = _evaluate(f"--data_dir={tmp_path}")
    assert neither.returncode != 0
    assert "Exactly one of (model_dir, model_path)" in neither.stderr, neither.stderr[-2000:]


def test_architecture_overrides_are_refused_with_an_export(tmp_path):
    process = _evaluate("--model_path=m.onnx", "--output_stride=8", f"--data_dir={tmp_path}")
    assert process.returncode == 1
    assert "evaluate.py: --output_stride does not apply to an exported --model_path" in (
        process.stderr
    )
