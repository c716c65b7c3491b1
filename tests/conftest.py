"""Settings for every test, and the helper modules' place on the import path.

The tests live in folders that mirror the package (tests/model/, tests/data/,
...), and import the helper modules beside this file (`helpers`, `harness`,
`training_runs`, `jax_training`) by name: this folder goes on the path
explicitly, so that they import under any of pytest's import modes.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

TESTS = os.path.dirname(os.path.abspath(__file__))
if TESTS not in sys.path:
    sys.path.insert(0, TESTS)
