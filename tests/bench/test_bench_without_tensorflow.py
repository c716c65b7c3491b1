"""The GPU benchmarks of ours run where JAX and Keras are installed but TensorFlow is not."""

import os
import subprocess
import sys

import pytest
from helpers import REPO

TINY = ["--only=ours", "--units_per_block=1,1,1,1", "--repeats=1", "--warmup=1"]
SCRIPTS = {
    "bench/train_step.py": [*TINY, "--crop_size=33", "--batch_size=2", "--steps=1"],
    "bench/infer.py": [*TINY, "--height=33", "--width=33", "--iterations=1"],
}


@pytest.fixture(scope="module")
def environment(tmp_path_factory):
    """KERAS_BACKEND=jax, with a `tensorflow` package first on the path that fails to import."""
    blocker = tmp_path_factory.mktemp("no_tensorflow")
    (blocker / "tensorflow").mkdir()
    (blocker / "tensorflow" / "__init__.py").write_text(
        'raise ImportError("TensorFlow is not installed here (blocked by the test)")\n'
    )
    env = dict(os.environ, KERAS_BACKEND="jax", PYTHONPATH=os.fspath(blocker))
    probe = subprocess.run(
        [sys.executable, "-c", "import tensorflow"], env=env, capture_output=True, text=True
    )
    assert "blocked by the test" in probe.stderr  # The block works.
    return env


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_benchmark_of_ours_runs_on_jax_without_tensorflow(script, environment):
    result = subprocess.run(
        [sys.executable, os.fspath(REPO / script), *SCRIPTS[script]],
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "backend jax" in result.stdout
    assert "images/s" in result.stdout
    flops = result.stdout.split("model FLOPs per image ")[1].split(" G")[0]
    assert float(flops) > 0
