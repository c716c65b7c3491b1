"""Exports: each format round-trips the tiny network, checked by its own runtime."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from helpers import REPO, TINY_ARCHITECTURE, randomize_weights, run_python

from tf_pacseg.constants import MEAN_RGB
from tf_pacseg.export import exporter
from tf_pacseg.export.exporter import FLOAT16_RELATIVE_TOLERANCE, export_model
from tf_pacseg.export.formats import SUFFIXES
from tf_pacseg.export.litert_export import run_litert
from tf_pacseg.export.onnx_export import run_onnx
from tf_pacseg.export.openvino_export import run_openvino
from tf_pacseg.export.saved_model import PADDING_CLASS
from tf_pacseg.export.verification import (
    RELATIVE_TOLERANCE,
    ExportMismatchError,
    check_images,
    check_logits,
    reference_logits,
    relative_difference,
)
from tf_pacseg.model.segmenter import build_model
from tf_pacseg.weights.saving import save_model_weights

FIXED_SIZE = (65, 65)


@pytest.fixture(scope="module")
def model():
    return randomize_weights(build_model(**TINY_ARCHITECTURE), seed=5, residual_scale=0.3)


def _batch(*sizes):
    """Images of one size, stacked: float32 [len(sizes), H, W, 3]."""
    return np.concatenate([check_images(size, seed=seed) for seed, size in enumerate(sizes, 1)])


def _assert_matches(model, logits, images):
    assert relative_difference(logits, reference_logits(model, images)) <= RELATIVE_TOLERANCE


def test_saved_model_round_trips_and_serves_encoded_images(model, tmp_path):
    path = os.fspath(tmp_path / "export")
    report = export_model(model, "savedmodel", path, probabilities=True)
    assert report.relative_difference <= RELATIVE_TOLERANCE
    served = tf.saved_model.load(path)
    images = _batch((49, 37), (49, 37))
    logits = served.signatures["serving_default"](images=tf.constant(images))["logits"]
    _assert_matches(model, logits.numpy(), images)

    # A PNG and a JPEG of different sizes: padded to the larger height and width with the
    # mean pixel.
    small = check_images((33, 41), seed=2)[0]
    jpeg = tf.io.encode_jpeg(check_images((45, 29), seed=3)[0].astype(np.uint8))
    large = tf.io.decode_jpeg(jpeg).numpy().astype(np.float32)  # What the export decodes.
    encoded = tf.stack([tf.io.encode_png(small.astype(np.uint8)), jpeg])
    outputs = served.signatures["serve_image_bytes"](image_bytes=encoded)
    classes, probabilities = outputs["classes"].numpy(), outputs["probabilities"].numpy()
    assert classes.shape == (2, 45, 41) and probabilities.shape == (2, 45, 41, 21)
    padded = np.empty((2, 45, 41, 3), np.float32)
    padded[:] = MEAN_RGB
    padded[0, :33, :41], padded[1, :45, :29] = small, large
    inside = np.zeros((2, 45, 41), bool)
    inside[0, :33, :41] = inside[1, :45, :29] = True
    logits = served.signatures["serving_default"](images=tf.constant(padded))["logits"].numpy()
    np.testing.assert_array_equal(classes, np.where(inside, logits.argmax(-1), PADDING_CLASS))
    np.testing.assert_allclose(probabilities.sum(-1), inside.astype(np.float32), atol=1e-5)


# Keras' numpy-2 patch of tf2onnx probes `np.object`.
@pytest.mark.filterwarnings("ignore:In the future `np.object`:FutureWarning")
def test_onnx_round_trips_at_a_fixed_size(model, tmp_path):
    import onnxruntime

    path = os.fspath(tmp_path / "model.onnx")
    report = export_model(model, "onnx", path, input_size=FIXED_SIZE)
    assert report.relative_difference <= RELATIVE_TOLERANCE
    assert report.check_shape == (1, *FIXED_SIZE, 3)
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    assert [(x.name, x.shape) for x in session.get_inputs()] == [("images", ["batch", 65, 65, 3])]
    assert [x.name for x in session.get_outputs()] == ["logits"]
    images = _batch(FIXED_SIZE, FIXED_SIZE)  # Any batch size.
    _assert_matches(model, run_onnx(path, images), images)


def test_litert_round_trips_at_any_size(model, tmp_path):
    path = os.fspath(tmp_path / "model.tflite")
    report = export_model(model, "tflite", path)
    assert report.relative_difference <= RELATIVE_TOLERANCE
    # About 4 bytes a weight: float32.
    assert 3.9 * model.count_params() < report.size_bytes < 4.2 * model.count_params()
    images = _batch((49, 37), (49, 37))  # Another size and batch than the check's.
    _assert_matches(model, run_litert(path, images), images)


@pytest.mark.slow
def test_litert_float16_weights_halve_the_file(model, tmp_path):
    path = os.fspath(tmp_path / "model.tflite")
    report = export_model(model, "tflite", path, input_size=FIXED_SIZE, tflite_float16=True)
    assert report.tolerance == FLOAT16_RELATIVE_TOLERANCE
    assert report.relative_difference <= FLOAT16_RELATIVE_TOLERANCE
    assert 1.9 * model.count_params() < report.size_bytes < 2.2 * model.count_params()


def test_openvino_round_trips_at_any_size(model, tmp_path):
    path = os.fspath(tmp_path / "model.xml")
    report = export_model(model, "openvino", path)
    assert report.relative_difference <= RELATIVE_TOLERANCE
    assert report.paths == (path, os.fspath(tmp_path / "model.bin"))
    assert report.size_bytes > 3.9 * model.count_params()  # float32 weights
    images = _batch((49, 37), (49, 37))
    _assert_matches(model, run_openvino(path, images), images)
    assert sorted(os.listdir(tmp_path)) == ["model.bin", "model.xml"]  # No partial files left.


def test_a_mismatching_export_is_an_error_naming_the_difference(model, tmp_path, monkeypatch):
    def write(model, path, input_size):
        open(path, "wb").close()

    def run_perturbed(path, images):
        logits = reference_logits(model, images)
        logits.flat[123] += 3e-4 * (logits.max() - logits.min())
        return logits

    monkeypatch.setitem(exporter._WRITERS, "onnx", write)
    monkeypatch.setitem(exporter._RUNNERS, "onnx", ("ONNX (onnxruntime)", run_perturbed))
    message = (
        r"The ONNX \(onnxruntime\) export's logits differ from the Keras model's: the largest "
        r"difference is 0\.0003 of the logit range \(bound 0\.0001\)\."
    )
    with pytest.raises(ExportMismatchError, match=message):
        export_model(model, "onnx", os.fspath(tmp_path / "model.onnx"), input_size=(33, 33))


def test_check_logits_bounds_the_difference_relative_to_the_range():
    expected = np.linspace(-5.0, 5.0, 24, dtype=np.float32).reshape(1, 2, 3, 4)
    assert check_logits("x", expected + 5e-4, expected) == pytest.approx(5e-5, rel=1e-3)
    with pytest.raises(ExportMismatchError, match=r"largest difference is 0\.0002 "):
        check_logits("x", expected + 2e-3, expected)
    with pytest.raises(ExportMismatchError, match="largest difference is nan"):
        check_logits("x", np.where(expected > 0, np.nan, expected), expected)
    with pytest.raises(ExportMismatchError, match=r"shape \(1, 2, 3, 3\)"):
        check_logits("x", expected[..., :3], expected)


@pytest.mark.parametrize(
    "format, module, extra",
    [
        ("onnx", "onnxruntime", "onnx"),
        ("tflite", "ai_edge_litert.interpreter", "litert"),
        ("openvino", "openvino", "openvino"),
    ],
)
def test_a_missing_extra_is_named_with_its_install_command(
    model, tmp_path, monkeypatch, format, module, extra
):
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now fails.
    path = os.fspath(tmp_path / f"model{SUFFIXES[format]}")
    with pytest.raises(
        ImportError,
        match=re.escape(
            f'needs the `{extra}` extra, which installs `{module}`: pip install -e ".[{extra}]"'
        ),
    ):
        export_model(model, format, path)
    assert not os.listdir(tmp_path)  # Refused before writing anything.


@pytest.mark.parametrize(
    "arguments, message",
    [
        (dict(format="keras"), "Expected one of"),
        (dict(format="onnx", output_name="model.tflite"), r"ending in \.onnx"),
        (
            dict(format="openvino", tflite_float16=True),
            r"`tflite_float16`. Expected False for format='openvino'",
        ),
        (
            dict(format="tflite", output_name="m.tflite", probabilities=True),
            "`probabilities`. Expected False",
        ),
        (dict(format="savedmodel", input_size=(65, 0)), "two strictly positive ints"),
    ],
)
def test_invalid_arguments_are_refused_before_writing(model, tmp_path, arguments, message):
    arguments = dict(arguments)
    output_path = os.fspath(tmp_path / arguments.pop("output_name", "model.xml"))
    with pytest.raises(ValueError, match=message):
        export_model(model, output_path=output_path, **arguments)
    assert not os.listdir(tmp_path)


def _run_export_script(*args):
    environment = dict(os.environ, KERAS_BACKEND="tensorflow", CUDA_VISIBLE_DEVICES="")
    environment.pop("PYTHONPATH", None)  # The shim must find the package itself.
    return subprocess.run(
        [sys.executable, os.fspath(REPO / "checkpoints" / "export.py"), *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_export_script_refuses_a_malformed_input_size():
    result = _run_export_script(
        "--model_dir=model", "--format=onnx", "--output_path=m.onnx", "--input_size=65x65"
    )
    assert result.returncode != 0
    assert "--input_size must be HEIGHT,WIDTH (two positive ints) or dynamic" in result.stderr


@pytest.mark.slow
def test_export_script_writes_and_checks_an_export(model, tmp_path):
    save_model_weights(model, os.fspath(tmp_path / "run" / "model.weights.h5"))
    output = tmp_path / "model.tflite"
    result = _run_export_script(
        f"--model_dir={tmp_path / 'run'}",
        "--format=tflite",
        f"--output_path={output}",
        "--input_size=33,41",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r"LiteRT \(interpreter\) logits on a \(1, 33, 41, 3\) image", result.stdout)
    images = _batch((33, 41))
    _assert_matches(model, run_litert(os.fspath(output), images), images)


_JAX_SAVED_MODEL = """
import sys
import numpy as np
import tensorflow as tf
sys.path.insert(0, "tests")
from helpers import TINY_ARCHITECTURE, randomize_weights
from tf_pacseg.export.saved_model import write_saved_model
from tf_pacseg.export.verification import check_images, reference_logits, relative_difference
from tf_pacseg.model.segmenter import build_model

model = randomize_weights(build_model(**TINY_ARCHITECTURE), seed=5, residual_scale=0.3)
write_saved_model(model, sys.argv[1], input_size=(41, 33))
served = tf.saved_model.load(sys.argv[1])
images = check_images((41, 33))
logits = served.signatures["serving_default"](images=tf.constant(images))["logits"].numpy()
assert relative_difference(logits, reference_logits(model, images)) <= 1e-4
encoded = tf.io.encode_png(images[0, :30, :20].astype(np.uint8))
classes = served.serve_image_bytes(tf.stack([encoded]))["classes"].numpy()
assert classes.shape == (1, 41, 33) and (classes[0, 30:] == -1).all(), classes
too_large = tf.io.encode_png(np.zeros((42, 33, 3), np.uint8))
try:
    served.serve_image_bytes(tf.stack([too_large]))
    raise SystemExit("an image larger than the input size was accepted")
except tf.errors.InvalidArgumentError as error:
    assert "larger than the input size (41, 33) of this export" in str(error), error
"""


@pytest.mark.slow
def test_jax_model_exports_a_fixed_size_saved_model(tmp_path):
    run_python(_JAX_SAVED_MODEL, [tmp_path / "export"], backend="jax")
