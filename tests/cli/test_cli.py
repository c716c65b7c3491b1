"""The entry scripts: quiet TensorFlow start-up, stray arguments, package lookup."""

import os
import re
import subprocess
import sys

import pytest
from helpers import REPO

# Glog-style lines of TensorFlow's C++ runtime (`I0000 00:00:...`), and the
# absl notice printed before the first one.
_CPP_LOG_LINE = re.compile(r"^([IWEF]\d{4} |WARNING: All log messages before absl)", re.M)

# Each script with the flags it requires.
SCRIPTS = {
    "evaluate.py": ["--model_dir=model"],
    "predict.py": ["--model_dir=model", "--input_dir=in", "--output_dir=out"],
    "checkpoints/convert_tf1.py": ["--checkpoint=ckpt", "--output_path=x.weights.h5"],
    "data/convert_voc.py": ["--data_dir=voc"],
    "data/make_synthetic_voc.py": ["--output_dir=voc"],
    "data/check_records.py": ["--data_dir=voc"],
    "data/dataset_stats.py": ["--data_dir=dataset"],
    "checkpoints/export.py": ["--model_dir=model", "--format=savedmodel", "--output_path=out"],
}


def _run(script, *args, **env):
    environment = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    environment.pop("PYTHONPATH", None)  # The scripts must find the package themselves.
    environment.update(KERAS_BACKEND="tensorflow", **env)
    return subprocess.run(
        [sys.executable, os.fspath(REPO / script), *args],
        cwd=os.path.dirname(REPO),  # Not the checkout: no package on the path by accident.
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_help_prints_no_tensorflow_lines(script):
    result = _run(script, "--help")
    assert "flags:" in result.stdout, result.stderr[-2000:]  # absl exits 1 after help.
    assert not _CPP_LOG_LINE.search(result.stderr), result.stderr[-2000:]
    # Its required flags are listed, also those defined in the shared flag modules.
    for flag in SCRIPTS[script]:
        assert f"  {flag.split('=')[0]}:" in result.stdout, result.stdout


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_stray_positional_arguments_are_rejected_by_name(script):
    result = _run(script, *SCRIPTS[script], "stray", "argument")
    assert result.returncode != 0
    assert "Unexpected arguments: stray argument" in result.stderr


def test_tensorflow_start_up_lines_are_hidden_unless_asked(tmp_path):
    # A run that imports TensorFlow and fails on a missing checkpoint.
    args = ["--checkpoint=" + os.fspath(tmp_path / "missing"), "--output_path=x.weights.h5"]
    quiet = _run("checkpoints/convert_tf1.py", *args)
    assert quiet.returncode == 1 and "No TF1 checkpoint" in quiet.stderr
    assert not _CPP_LOG_LINE.search(quiet.stderr), quiet.stderr[-2000:]
    verbose = _run("checkpoints/convert_tf1.py", *args, "--verbosity=0")
    assert verbose.returncode == 1 and _CPP_LOG_LINE.search(verbose.stderr)
    # A level set by the user wins over --verbosity.
    user = _run("checkpoints/convert_tf1.py", *args, "--verbosity=0", TF_CPP_MIN_LOG_LEVEL="3")
    assert user.returncode == 1 and not _CPP_LOG_LINE.search(user.stderr)
