"""`--keep_best=miou`: model_dir/best/ holds the best evaluation's model, swapped in whole."""

import json
import os

import numpy as np
import pytest
from helpers import TINY_ARCHITECTURE, randomize_weights

import tf_pacseg
from tf_pacseg.inference import report
from tf_pacseg.training import TrainConfig
from tf_pacseg.training.best import BestModel
from tf_pacseg.weights import saving

_NAMES = ("background", "road", "grass", "water", "sand")


def _config(model_dir):
    return TrainConfig(
        model_dir=str(model_dir), num_classes=5, class_names=_NAMES, keep_best="miou"
    )


def _model(seed):
    model = tf_pacseg.build_model(**{**TINY_ARCHITECTURE, "num_classes": 5})
    return randomize_weights(model, seed=seed)


def _result(correct):
    """An evaluation whose mIoU grows with `correct` (pixels of class 1 right of 10)."""
    cm = np.diag([10, correct, 10, 10, 10])
    cm[1, 0] = 10 - correct
    return report.result_from_confusion_matrix(cm, num_images=3, class_names=_NAMES)


def _read_best(model_dir):
    best = os.path.join(model_dir, "best")
    with open(os.path.join(best, "evaluation.json"), encoding="utf-8") as f:
        evaluation = json.load(f)
    description = saving.read_model_description(os.path.join(best, "model.weights.h5"))
    return evaluation, description


def _weights(model):
    return [np.asarray(w) for w in model.get_weights()]


def test_only_improvements_replace_the_best_model(tmp_path):
    best = BestModel(_config(tmp_path))
    first, second = _model(1), _model(2)
    assert best.update(first, _result(5), step=10)
    assert not best.update(second, _result(4), step=20)  # Worse.
    assert not best.update(second, _result(5), step=30)  # Not better.
    assert not best.update(second, {**_result(9), "miou": float("nan")}, step=40)
    evaluation, description = _read_best(tmp_path)
    assert evaluation == json.loads(json.dumps(_result(5)))
    assert description["step"] == 10 and description["class_names"] == list(_NAMES)
    assert list(evaluation["per_class_iou"]) == list(_NAMES)
    loaded = saving.load_model(str(tmp_path / "best"))
    for ours, theirs in zip(_weights(loaded), _weights(first), strict=True):
        np.testing.assert_array_equal(ours, theirs)

    assert best.update(second, _result(8), step=50)
    evaluation, description = _read_best(tmp_path)
    assert evaluation["miou"] == best.miou == pytest.approx(_result(8)["miou"])
    assert description["step"] == 50
    assert sorted(os.listdir(tmp_path)) == ["best"]  # No temporary left.
    assert sorted(os.listdir(tmp_path / "best")) == [
        "evaluation.json",
        "model.json",
        "model.weights.h5",
    ]


def test_a_resumed_run_reads_the_best_value_back(tmp_path):
    BestModel(_config(tmp_path)).update(_model(1), _result(7), step=10)
    resumed = BestModel(_config(tmp_path))
    assert resumed.restore() == pytest.approx(_result(7)["miou"])
    assert not resumed.update(_model(2), _result(6), step=20)
    assert _read_best(tmp_path)[1]["step"] == 10
    assert BestModel(_config(tmp_path / "fresh")).restore() is None


def test_a_swap_killed_between_its_renames_is_completed_on_resume(tmp_path):
    model_dir, other = tmp_path / "run", tmp_path / "other"
    BestModel(_config(model_dir)).update(_model(1), _result(6), step=20)
    BestModel(_config(other)).update(_model(2), _result(7), step=30)
    # Killed between the renames: the old best moved aside, the new one complete.
    os.replace(model_dir / "best", model_dir / ".best.previous")
    os.replace(other / "best", model_dir / ".best.partial")

    resumed = BestModel(_config(model_dir))
    assert resumed.restore() == pytest.approx(_result(7)["miou"])
    assert _read_best(model_dir)[1]["step"] == 30  # The new best, not the one moved aside.
    resumed.update(_model(3), _result(9), step=40)
    assert sorted(os.listdir(model_dir)) == ["best"]


class _Engine:
    """Records the model `export` is given."""

    def __init__(self):
        self.exported = None

    def export(self, export_dir, model=None):
        self.exported = (export_dir, model)
        return "the inference SavedModel"


def test_export_from_best_exports_the_best_model(tmp_path):
    best = BestModel(_config(tmp_path))
    engine = _Engine()
    assert best.export(engine, str(tmp_path / "export")) is None  # No best/ yet.
    assert engine.exported is None
    model = _model(1)
    best.update(model, _result(5), step=10)
    what = best.export(engine, str(tmp_path / "export"))
    assert what == f"the inference SavedModel of {tmp_path / 'best'}"
    export_dir, exported = engine.exported
    assert export_dir == str(tmp_path / "export")
    for ours, theirs in zip(_weights(exported), _weights(model), strict=True):
        np.testing.assert_array_equal(ours, theirs)
