"""A full disk while writing best/ stops training with one line and keeps the previous best."""

import errno
import os

import numpy as np
import pytest
from helpers import TINY_ARCHITECTURE, randomize_weights

import tf_pacseg
from tf_pacseg.files import SaveError
from tf_pacseg.inference import report
from tf_pacseg.training import TrainConfig
from tf_pacseg.training.best import BestModel
from tf_pacseg.weights import saving


def _result(miou_pixels):
    cm = np.diag([10, miou_pixels])
    cm[1, 0] = 10 - miou_pixels
    return report.result_from_confusion_matrix(cm, num_images=1)


def test_a_full_disk_keeps_the_previous_best_and_no_partial_folder(tmp_path, monkeypatch):
    config = TrainConfig(model_dir=str(tmp_path), num_classes=2, keep_best="miou")
    model = randomize_weights(tf_pacseg.build_model(**{**TINY_ARCHITECTURE, "num_classes": 2}))
    best = BestModel(config)
    assert best.update(model, _result(5), step=1)
    before = sorted(os.listdir(best.directory))

    def disk_full(model, path, **metadata):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as file:
            file.write(b"half the weights")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(saving, "save_model_weights", disk_full)
    with pytest.raises(SaveError, match="the best model \\(step 2\\)") as raised:
        best.update(model, _result(8), step=2)
    assert raised.value.errno == errno.ENOSPC
    assert "\n" not in str(raised.value)
    assert sorted(os.listdir(tmp_path)) == ["best"]
    assert sorted(os.listdir(best.directory)) == before
    assert best.miou == pytest.approx(_result(5)["miou"])
