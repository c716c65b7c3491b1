"""Your own dataset, end to end: colour masks -> records -> training -> best/ -> evaluation,
prediction; the class names travel from the names file to every output.

A 5-class dataset of colour masks is converted with its names file; train.py
(TensorFlow, and JAX in its own process) trains a tiny model with
median-frequency class weights, evaluating every epoch and keeping the best
model; evaluate.py and predict.py then read `best/`.
"""

import glob
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from helpers import REPO
from PIL import Image
from training_runs import TINY_TRAIN_FLAGS

from tf_pacseg.data import class_names
from tf_pacseg.inference import legend

# One worker: the tests share the converted dataset and each engine's training run.
pytestmark = pytest.mark.xdist_group("own_dataset_end_to_end")

_COLOURS = ((0, 0, 0), (200, 0, 0), (0, 200, 0), (0, 0, 200), (200, 200, 0))
_NAMES = ("background", "road", "grass", "water", "sand")
_SPLITS = {"train": [f"t_{i}" for i in range(4)], "val": ["v_0", "v_1"]}
_EVALUATION = re.compile(r"Evaluation at step (\d+) .*?: mIoU ([\d.]+)")
_TINY_FLAGS = [
    *TINY_TRAIN_FLAGS,
    "--seed=1",
    "--initial_learning_rate=0.02",
]


def _run(script, *flags, backend="tensorflow"):
    env = dict(os.environ, KERAS_BACKEND=backend, CUDA_VISIBLE_DEVICES="", JAX_PLATFORMS="cpu")
    process = subprocess.run(
        [sys.executable, os.path.join(REPO, script), *flags],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert process.returncode == 0, process.stderr[-5000:]
    return process


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """(folder of images, records): colour masks converted with their names file."""
    root = tmp_path_factory.mktemp("own_dataset")
    for folder in ("images", "masks"):
        (root / folder).mkdir()
    rng = np.random.default_rng(0)
    palette = np.full((256, 3), 255, np.uint8)  # White: ignored.
    palette[: len(_COLOURS)] = _COLOURS
    for sample_id in [*_SPLITS["train"], *_SPLITS["val"]]:
        label = np.kron(rng.integers(0, 5, (6, 8)), np.ones((4, 4), np.int64)).astype(np.uint8)
        label[rng.random(label.shape) < 0.05] = 255
        # The image shows its classes' colours through noise: something to learn.
        noise = rng.normal(0, 40, (*label.shape, 3))
        image = np.clip(palette[label].astype(float) + noise, 0, 255).astype(np.uint8)
        Image.fromarray(image).save(root / "images" / f"{sample_id}.jpg", quality=95)
        Image.fromarray(palette[label]).save(root / "masks" / f"{sample_id}.png")
    for split, ids in _SPLITS.items():
        (root / f"{split}.txt").write_text("\n".join(ids) + "\n")
    colours = "".join(f"{r},{g},{b}\n" for r, g, b in _COLOURS)
    (root / "colors.txt").write_text(colours + "ignore: 255,255,255\n")
    (root / "names.txt").write_text("\n".join(_NAMES) + "\n")
    records = root / "records"
    _run(
        os.path.join("data", "convert_voc.py"),
        f"--data_dir={root}",
        "--image_data_dir=images",
        "--label_data_dir=masks",
        "--train_data_list=train.txt",
        "--valid_data_list=val.txt",
        "--num_classes=5",
        f"--label_colors={root / 'colors.txt'}",
        f"--class_names={root / 'names.txt'}",
        f"--output_path={records}",
    )
    assert class_names.read_class_names(str(records / "class_names.txt")) == _NAMES
    return str(root / "images"), str(records)


@pytest.fixture(scope="module", params=["tensorflow", "jax"])
def trained(request, dataset, tmp_path_factory):
    """(backend, model_dir, log) of a training run of 3 epochs, evaluated after each."""
    _, records = dataset
    model_dir = tmp_path_factory.mktemp(f"model_{request.param}")
    export = ["--export_from=best"] if request.param == "tensorflow" else []
    process = _run(
        "train.py",
        *_TINY_FLAGS,
        f"--data_dir={records}",
        f"--model_dir={model_dir}",
        "--train_epochs=3",
        "--epochs_per_eval=1",
        "--class_weights=auto",
        "--keep_best=miou",
        *export,
        backend=request.param,
    )
    return request.param, str(model_dir), process.stderr


def _json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _event_tags(directory):
    import tensorflow as tf

    tags = set()
    for path in glob.glob(os.path.join(directory, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            tags.update(value.tag for value in event.summary.value)
    return tags


@pytest.mark.slow
def test_training_keeps_the_best_validation_model_with_its_class_names(trained):
    backend, model_dir, log = trained
    evaluations = [(int(s), float(m)) for s, m in _EVALUATION.findall(log)]
    assert [step for step, _ in evaluations] == [2, 4, 6], log[-3000:]
    best_miou = max(miou for _, miou in evaluations)
    best_step = next(step for step, miou in evaluations if miou == best_miou)

    best = os.path.join(model_dir, "best")
    evaluation = _json(os.path.join(best, "evaluation.json"))
    assert round(evaluation["miou"], 4) == best_miou
    assert list(evaluation["per_class_iou"]) == list(_NAMES)
    description = _json(os.path.join(best, "model.json"))
    assert description["step"] == best_step
    assert description["class_names"] == list(_NAMES)
    assert _json(os.path.join(model_dir, "model.json"))["class_names"] == list(_NAMES)
    # The weights were computed from the records and logged; the tables name the classes.
    assert re.search(r"Class weights \(median frequency.*\): background [\d.]+, road ", log)
    assert re.search(r"\n +1 road +[\d.]+", log)
    tags = _event_tags(os.path.join(model_dir, "eval")) | _event_tags(
        os.path.join(model_dir, "train")
    )
    assert {"iou/background", "iou/road"} <= tags
    assert not [tag for tag in tags if tag.startswith("iou/class_")]
    if backend == "tensorflow":
        assert os.path.isfile(os.path.join(model_dir, "export", "saved_model.pb"))
        assert f"Exported the inference SavedModel of {best}" in log


@pytest.mark.slow
# evaluate.py and predict.py read either engine's best/ alike.
@pytest.mark.parametrize("trained", ["tensorflow"], indirect=True)
def test_the_best_model_evaluates_and_predicts_with_its_class_names(dataset, trained, tmp_path):
    _, model_dir, _ = trained
    images, records = dataset
    best = os.path.join(model_dir, "best")
    output = tmp_path / "val.json"
    process = _run(
        "evaluate.py",
        f"--model_dir={best}",
        f"--data_dir={records}",
        "--input_height=33",
        "--input_width=33",
        f"--output_json={output}",
    )
    result = _json(output)
    assert list(result["per_class_iou"]) == list(_NAMES)
    assert "road" in process.stdout
    # The same model on the same images and padding as the training-time evaluation.
    kept = _json(os.path.join(best, "evaluation.json"))
    assert result["confusion_matrix"] == kept["confusion_matrix"]

    outputs = {}
    for output_format in ("index", "overlay"):
        outputs[output_format] = tmp_path / output_format
        _run(
            "predict.py",
            f"--model_dir={best}",
            f"--input_dir={images}",
            f"--output_dir={outputs[output_format]}",
            f"--output_format={output_format}",
        )
    prediction = np.asarray(Image.open(outputs["index"] / "v_0.png"))
    overlay = np.asarray(Image.open(outputs["overlay"] / "v_0.png").convert("RGB"))
    strip = legend.legend_strip(prediction, _NAMES, prediction.shape[1])
    np.testing.assert_array_equal(overlay[prediction.shape[0] :], strip)
    default = legend.legend_strip(prediction, class_names.default_class_names(5), strip.shape[1])
    assert default.shape != strip.shape or not np.array_equal(default, strip)
