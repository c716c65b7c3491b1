"""A writer that fails leaves neither a partial export nor a damaged previous one."""

import errno
import os

import keras
import pytest
from helpers import TINY_ARCHITECTURE

from tf_pacseg.export import onnx_export, openvino_export, saved_model
from tf_pacseg.model.segmenter import build_model


@pytest.fixture(scope="module")
def model():
    return build_model(**TINY_ARCHITECTURE)


def _disk_full(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def _write_then_fail(*paths):
    """A writer's start: `paths` half written, then the disk is full."""
    for path in paths:
        with open(path, "wb") as file:
            file.write(b"half a model")
    _disk_full()


def _leftovers(directory, final_name):
    return sorted(name for name in os.listdir(directory) if name != final_name)


def test_a_failed_saved_model_write_leaves_the_previous_export(model, tmp_path, monkeypatch):
    export_dir = tmp_path / "served"
    saved_model.write_saved_model(model, str(export_dir))
    before = sorted(os.listdir(export_dir))

    def write_some_then_fail(self, path, **kwargs):
        os.makedirs(os.path.join(path, "variables"))
        _disk_full()

    # ExportArchive() makes an instance of the backend's own archive class.
    monkeypatch.setattr(type(keras.export.ExportArchive()), "write_out", write_some_then_fail)
    with pytest.raises(OSError, match="No space left"):
        saved_model.write_saved_model(model, str(export_dir))
    assert _leftovers(tmp_path, "served") == []
    assert sorted(os.listdir(export_dir)) == before


def test_a_failed_onnx_write_leaves_no_partial_file(model, tmp_path, monkeypatch):
    pytest.importorskip("tf2onnx", reason="the onnx extra is not installed")

    monkeypatch.setattr(model, "export", lambda path, **kwargs: _write_then_fail(path))
    with pytest.raises(OSError, match="No space left"):
        onnx_export.write_onnx(model, str(tmp_path / "model.onnx"))
    assert os.listdir(tmp_path) == []


def test_a_failed_openvino_write_leaves_neither_partial_file(model, tmp_path, monkeypatch):
    openvino = pytest.importorskip("openvino", reason="the openvino extra is not installed")

    def write_some_then_fail(converted, path, **kwargs):
        _write_then_fail(path, openvino_export.weights_path(path))

    monkeypatch.setattr(openvino, "save_model", write_some_then_fail)
    with pytest.raises(OSError, match="No space left"):
        openvino_export.write_openvino(model, str(tmp_path / "model.xml"))
    assert os.listdir(tmp_path) == []
