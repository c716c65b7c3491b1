"""bench/infer.py times our exports in onnxruntime and OpenVINO beside Keras and the original."""

import os
import re
import subprocess
import sys

import pytest
from helpers import REPO

RUNTIMES = ("keras", "onnxruntime", "openvino", "reference")
SMOKE = [
    "--units_per_block=1,1,1,1",
    "--height=65",
    "--width=65",
    "--repeats=1",
    "--iterations=1",
    "--warmup=1",
    f"--runtimes={','.join(RUNTIMES)}",
]
# How the report names each runner.
LABELS = {"keras": "ours (Keras)", "reference": "original TF1 graph"}


@pytest.mark.slow
def test_inference_benchmark_times_every_runtime_against_the_original():
    env = dict(os.environ, KERAS_BACKEND="tensorflow", CUDA_VISIBLE_DEVICES="")
    result = subprocess.run(
        [sys.executable, os.fspath(REPO / "bench" / "infer.py"), *SMOKE],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for name in RUNTIMES:
        label = re.escape(LABELS.get(name, name))
        assert re.search(rf"^  {label} +[\d.]+ ms/image +[\d.]+ images/s", result.stdout, re.M)
        if name != "reference":
            assert re.search(rf"^  ratio {label} +[\d.]+x the original's rate", result.stdout, re.M)
    differences = re.search(r"max \|logit difference\| from keras: (.*)", result.stdout).group(1)
    for name in ("onnxruntime", "openvino", "reference"):  # All hold the same weights.
        assert float(re.search(rf"{name} (\S+?)(,|$)", differences).group(1)) < 1e-3
