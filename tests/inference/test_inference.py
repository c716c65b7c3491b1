"""The shared forward pass, and evaluate.py / predict.py on the JAX backend."""

import gc
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import REPO, randomize_weights
from PIL import Image

from tf_pacseg import build_model
from tf_pacseg.data import synthetic
from tf_pacseg.inference import evaluation, forward, prediction
from tf_pacseg.inference.tiling import Tiling
from tf_pacseg.weights.saving import save_model_weights

NUM_CLASSES = 6  # Synthetic labels use classes 1..4; 5 stands in for an ignore label.
CROP = (49, 49)


def _tiny_model(seed=1):
    model = build_model(
        "resnet_v1_50", "pac", num_classes=NUM_CLASSES, units_per_block=(1, 1, 1, 1)
    )
    model(np.zeros((1, 33, 33, 3), np.float32))
    return randomize_weights(model, seed=seed, residual_scale=0.3)


@pytest.fixture(scope="module")
def model():
    return _tiny_model()


def test_single_scale_scores_are_the_models_logits(model):
    images = np.random.default_rng(0).uniform(0, 255, (2, 37, 45, 3)).astype(np.float32)
    expected = np.asarray(model(images, training=False))
    np.testing.assert_allclose(np.asarray(forward.scores(model, images)), expected, atol=1e-5)
    labels = np.asarray(forward.predict_labels(model, images))
    np.testing.assert_array_equal(labels, expected.argmax(-1))


def test_repeated_scale_averages_probabilities_to_the_same_prediction(model):
    images = np.random.default_rng(1).uniform(0, 255, (1, 29, 31, 3)).astype(np.float32)
    logits = np.asarray(forward.scores(model, images))
    averaged = np.asarray(forward.scores(model, images, eval_scales=(1.0, 1.0)))
    probabilities = np.exp(logits - logits.max(-1, keepdims=True))
    probabilities /= probabilities.sum(-1, keepdims=True)
    np.testing.assert_allclose(averaged, probabilities, atol=1e-5)


def test_forward_pass_is_compiled_once_per_model_and_released_with_it():
    model = _tiny_model(seed=2)
    compiled = forward.forward_fn(model)
    assert forward.forward_fn(model) is compiled
    gc.collect()  # Models that earlier tests left to the collector go first.
    count = len(forward._FORWARD_CACHE)
    del model, compiled
    gc.collect()
    assert len(forward._FORWARD_CACHE) == count - 1


def test_scores_reject_bad_scales(model):
    with pytest.raises(ValueError, match=r"Received: eval_scales=\(0\.5, 0\)"):
        forward.scores(model, np.zeros((1, 9, 9, 3), np.float32), eval_scales=(0.5, 0))


@pytest.fixture(scope="module")
def workspace(model, tmp_path_factory):
    """A saved model, a VOC folder, and the same labels with void (255) relabelled 5."""
    root = tmp_path_factory.mktemp("jax")
    save_model_weights(model, os.fspath(root / "model" / "model.weights.h5"))
    voc = os.fspath(root / "voc")
    ids = synthetic.make_synthetic_voc(
        voc, num_train=0, num_val=2, seed=3, min_size=48, max_size=48, num_classes=5
    )["val"]
    relabelled = root / "relabelled"
    relabelled.mkdir()
    for sample_id in ids:
        label = np.asarray(
            Image.open(os.path.join(voc, "SegmentationClassAug", sample_id + ".png"))
        )
        assert (label == 255).any()
        Image.fromarray(np.where(label == 255, 5, label).astype(np.uint8)).save(
            relabelled / (sample_id + ".png")
        )
    return root, voc, os.fspath(relabelled)


def _run_on_jax(script, *args):
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu", CUDA_VISIBLE_DEVICES="")
    result = subprocess.run(
        [sys.executable, os.fspath(REPO / script), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_evaluate_script_on_jax_with_another_ignore_label_matches_tensorflow(model, workspace):
    root, voc, relabelled = workspace
    lists = os.path.join(voc, "ImageSets", "Segmentation", "val.txt")
    images = os.path.join(voc, "JPEGImages")
    # TensorFlow, in this process, on the original labels (void = 255).
    expected = evaluation.evaluate(
        model,
        image_data_dir=images,
        label_data_dir=os.path.join(voc, "SegmentationClassAug"),
        evaluation_data_list=lists,
        crop_size=CROP,
        verbose=0,
    )
    assert np.sum(expected["confusion_matrix"]) > 0
    output_json = os.fspath(root / "jax.json")
    _run_on_jax(
        "evaluate.py",
        f"--model_dir={root / 'model'}",
        f"--image_data_dir={images}",
        f"--label_data_dir={relabelled}",
        f"--evaluation_data_list={lists}",
        f"--input_height={CROP[0]}",
        f"--input_width={CROP[1]}",
        "--ignore_label=5",
        f"--output_json={output_json}",
    )
    with open(output_json) as f:
        result = json.load(f)
    # Void relabelled 5 and ignored as 5 counts exactly the pixels 255 did.
    assert result["confusion_matrix"] == expected["confusion_matrix"]


def test_predict_script_on_jax_matches_tensorflow(model, workspace):
    root, voc, _ = workspace
    images = os.path.join(voc, "JPEGImages")
    expected = prediction.predict_folder(
        model, images, os.fspath(root / "tf_out"), output_format="index", verbose=0
    )
    _run_on_jax(
        "predict.py",
        f"--model_dir={root / 'model'}",
        f"--input_dir={images}",
        f"--output_dir={root / 'jax_out'}",
        "--output_format=index",
    )
    for path in expected.written:
        ours = np.asarray(Image.open(os.path.join(root / "jax_out", os.path.basename(path))))
        np.testing.assert_array_equal(ours, np.asarray(Image.open(path)))


def test_predict_script_on_jax_slides_as_tensorflow(model, workspace):
    root, voc, _ = workspace
    images = os.path.join(voc, "JPEGImages")
    tiles = Tiling(mode="slide", tile_size=33, tile_batch_size=3)  # 2x2 tiles of 48x48.
    expected = prediction.predict_folder(
        model, images, os.fspath(root / "tf_tiles"), output_format="index", tiling=tiles, verbose=0
    )
    result = _run_on_jax(
        "predict.py",
        f"--model_dir={root / 'model'}",
        f"--input_dir={images}",
        f"--output_dir={root / 'jax_tiles'}",
        "--output_format=index",
        "--inference_mode=slide",
        "--tile_size=33",
        "--tile_batch_size=3",
    )
    assert "Tiles for 48x48 image (inference_mode=slide): 4 tiles of 33x33" in result.stderr
    for path in expected.written:
        ours = np.asarray(Image.open(os.path.join(root / "jax_tiles", os.path.basename(path))))
        np.testing.assert_array_equal(ours, np.asarray(Image.open(path)))
