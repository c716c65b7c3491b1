"""`--profile`: where our training step's time goes, by op type and in the kernel."""

import os
import re
import subprocess
import sys

import pytest
from helpers import REPO


@pytest.mark.slow
def test_profile_prints_op_types_and_the_process_cpu_time():
    args = [
        "--only=ours",
        "--units_per_block=1,1,1,1",
        "--crop_size=33",
        "--batch_size=2",
        "--num_gpu=0",
        "--repeats=1",
        "--steps=2",
        "--warmup=1",
        "--profile",
    ]
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(
        [sys.executable, os.fspath(REPO / "bench/train_step.py"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    table = re.search(
        r"profile: self time per call by op type, 2 calls \(([\d.]+) ms\)", result.stdout
    )
    assert table and float(table.group(1)) > 0, result.stdout
    assert re.search(r"Conv2D\w*\s+[\d.]+ ms", result.stdout), result.stdout
    assert "convolution, weight gradients" in result.stdout
    process = re.search(
        r"process: ([\d.]+) s user and ([\d.]+) s system CPU time \(\d+%\), ([\d,]+) page faults",
        result.stdout,
    )
    assert process and float(process.group(1)) > 0, result.stdout
