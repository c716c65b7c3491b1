"""checkpoints/convert_tf1.py and saving.convert_tf1_checkpoint on reference checkpoints."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import REPO

from tf_pacseg.testing import tf1_checkpoints
from tf_pacseg.weights.saving import convert_tf1_checkpoint, load_model

SCRIPT = REPO / "checkpoints" / "convert_tf1.py"
UNITS = (1, 1, 1, 1)
IMAGES = [
    np.random.default_rng(seed).uniform(0.0, 255.0, shape).astype("float32")
    for seed, shape in enumerate([(1, 29, 29, 3), (1, 24, 38, 3)])
]


def _run_converter(*args):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "KERAS_BACKEND": "tensorflow"}
    return subprocess.run(
        [sys.executable, os.fspath(SCRIPT), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _assert_logits_match(ours, reference):
    ours, reference = np.asarray(ours), np.asarray(reference)
    spread = float(reference.max() - reference.min())
    assert ours.shape == reference.shape and spread > 1.0
    assert float(np.abs(ours - reference).max()) <= 1e-4 * spread


@pytest.fixture(scope="module")
def estimator_checkpoint(tmp_path_factory):
    """An Estimator-style resnet_v2_50 + aspp checkpoint at output stride 8."""
    directory = tmp_path_factory.mktemp("model_dir")
    prefix = os.fspath(directory / "model.ckpt-500")
    logits = tf1_checkpoints.write_reference_checkpoint(
        prefix,
        "resnet_v2_50",
        "aspp",
        output_stride=8,
        num_classes=6,
        units_per_block=UNITS,
        seed=11,
        estimator_extras=True,
        images=IMAGES,
    )
    return prefix, logits


def test_script_converts_a_checkpoint_directory_to_weights_and_json(estimator_checkpoint, tmp_path):
    prefix, expected = estimator_checkpoint
    output = os.fspath(tmp_path / "aspp.weights.h5")
    result = _run_converter(f"--checkpoint={os.path.dirname(prefix)}", f"--output_path={output}")
    assert result.returncode == 0, result.stderr
    assert f"from {prefix}" in result.stdout  # the directory's latest checkpoint
    assert "skipped 1 (training state)" in result.stdout
    assert f"wrote {output}" in result.stdout

    with open(tmp_path / "aspp.json", encoding="utf-8") as f:
        description = json.load(f)
    assert description["architecture"] == {
        "base_architecture": "resnet_v2_50",
        "head": "aspp",
        "output_stride": 8,
        "num_classes": 6,
        "multi_grid": [1, 2, 4],
        "units_per_block": list(UNITS),
    }
    assert description["source"] == prefix

    model = load_model(output)
    for images, logits in zip(IMAGES, expected, strict=True):
        _assert_logits_match(model(images, training=False), logits)


def test_script_exits_non_zero_naming_a_bad_checkpoint_path(tmp_path):
    missing = os.fspath(tmp_path / "nowhere" / "model.ckpt-1")
    output = tmp_path / "out.weights.h5"
    result = _run_converter(f"--checkpoint={missing}", f"--output_path={output}")
    assert result.returncode != 0
    assert missing in result.stderr
    assert not output.exists()


def test_script_requires_its_flags():
    result = _run_converter()
    assert result.returncode != 0
    assert "--checkpoint" in result.stderr and "--output_path" in result.stderr


def test_convert_rejects_an_output_name_without_the_weights_suffix(estimator_checkpoint, tmp_path):
    prefix, _ = estimator_checkpoint
    with pytest.raises(ValueError, match=r"Received: output_path='.*model\.h5'"):
        convert_tf1_checkpoint(prefix, os.fspath(tmp_path / "model.h5"))
    assert not list(tmp_path.iterdir())


def test_convert_creates_the_output_directory(estimator_checkpoint, tmp_path):
    prefix, _ = estimator_checkpoint
    output = tmp_path / "new" / "dir" / "model.weights.h5"
    convert_tf1_checkpoint(prefix, os.fspath(output))
    assert output.is_file() and output.with_name("model.json").is_file()


def test_convert_refuses_a_backbone_only_checkpoint(tmp_path):
    prefix = os.fspath(tmp_path / "imagenet" / "model.ckpt")
    tf1_checkpoints.write_reference_checkpoint(
        prefix, "resnet_v1_50", None, units_per_block=(1, 1, 1, 1), imagenet_style=True
    )
    with pytest.raises(ValueError, match="backbone-only"):
        convert_tf1_checkpoint(prefix, os.fspath(tmp_path / "model.weights.h5"))
    with pytest.raises(ValueError, match="backbone-only"):
        load_model(prefix)


def test_load_model_converts_a_tf1_checkpoint_on_the_fly(estimator_checkpoint):
    prefix, expected = estimator_checkpoint
    model = load_model(prefix)
    assert model.architecture()["output_stride"] == 8
    _assert_logits_match(model(IMAGES[0], training=False), expected[0])
