"""Settings for every test, and the helper modules' place on the import path.

The tests live in folders that mirror the package (tests/model/, tests/data/,
...), and import the helper modules beside this file (`helpers`, `harness`,
`training_runs`, `jax_training`) by name: this folder goes on the path
explicitly, so that they import under any of pytest's import modes.

The settings and hooks below (XLA without LLVM's optimisations, one JAX
compilation cache for the session, the slow tests first) make `make test`
finish sooner on few cores.
"""

import os
import shutil
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# The tests' JAX processes compile without LLVM's optimisation passes: the tiny
# models' programs compile in half the time. Floats may round differently, so
# the steps compared with the original keep XLA's defaults (jax_training.py).
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")

TESTS = os.path.dirname(os.path.abspath(__file__))
if TESTS not in sys.path:
    sys.path.insert(0, TESTS)

_JAX_CACHE = "JAX_COMPILATION_CACHE_DIR"


def pytest_configure(config):
    """One JAX compilation cache for the session, empty at its start.

    The tests' JAX processes compile the same tiny model's programs (an
    initialiser per weight shape among them): cold, that is most of their
    time. The xdist workers and every subprocess inherit the variables set
    here. A hit returns what the same program compiled to: no result depends
    on the cache.
    """
    if hasattr(config, "workerinput") or _JAX_CACHE in os.environ:
        return
    config.jax_cache = tempfile.mkdtemp(prefix="tf_pacseg-jax-cache-")
    os.environ[_JAX_CACHE] = config.jax_cache
    # Every compilation, however short: the tiny model's take well under a second each.
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"


def pytest_unconfigure(config):
    if getattr(config, "jax_cache", None):
        shutil.rmtree(config.jax_cache, ignore_errors=True)


def pytest_collection_modifyitems(items):
    """The end-to-end runs (marked slow, a minute or more each) first.

    With `--dist loadgroup` (pyproject.toml) xdist hands the workers one test
    at a time, so the long runs spread over them and short tests fill in at
    the end, instead of one long run starting last on one worker.
    """
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
