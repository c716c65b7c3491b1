"""The command-line entry points, and what they share: quiet TensorFlow start-up, and `run(main)`.

TensorFlow prints C++ start-up lines (the oneDNN notice, CUDA and CPU-feature
probes, and on a machine without a GPU a failed `cuInit` logged as an error).
Those printed while TensorFlow loads come before its logging is set up, where
`TF_CPP_MIN_LOG_LEVEL` does not reach them; so `run` imports TensorFlow with
the process's stderr held back (and shown only if the import fails), and
importing this module sets `TF_CPP_MIN_LOG_LEVEL=3` for the lines that come
later, unless the environment sets it. Real failures still reach Python as
exceptions. To see the lines, pass absl's `--verbosity=0` (or higher), or set
`TF_CPP_MIN_LOG_LEVEL=0` (a level set in the environment wins over
`--verbosity`). `TF_ENABLE_ONEDNN_OPTS` itself is left alone: it
changes numerics, not logging.

Every entry point (`tf_pacseg.cli.train`, `.evaluate`, `.predict`,
`.convert_voc`, `.convert_tf1`, `.export`, `.check_records`, `.dataset_stats`,
`.make_synthetic_voc`, `.demo`) ends with `cli.run(main)`, `main` taking no
arguments. TensorFlow must
only be imported inside `main` (or by what it calls), so that `--verbosity`
can still take effect.

`run` also freezes Python's garbage collector at exit. The interpreter's last
collections walk every object TensorFlow, Keras and JAX made, only to free
memory the process is about to give back: 1.5 s of CPU after a short
train.py. Nothing waits for them: outputs are written (atomically) before
`main` returns, and TensorBoard's writers flush as each `as_default` block ends.
"""

import atexit
import contextlib
import gc
import os
import sys
import tempfile

from absl import app, flags

_LOG_LEVEL = "TF_CPP_MIN_LOG_LEVEL"
# Hides INFO, WARNING and ERROR lines of the C++ runtime (start-up probes log errors).
_QUIET_LEVEL = "3"
_USER_LOG_LEVEL = os.environ.get(_LOG_LEVEL)
os.environ.setdefault(_LOG_LEVEL, _QUIET_LEVEL)


def _wants_tensorflow_logs():
    if _USER_LOG_LEVEL is not None:
        return _USER_LOG_LEVEL.strip() in ("", "0")
    return flags.FLAGS["verbosity"].present and flags.FLAGS.verbosity >= 0


@contextlib.contextmanager
def _stderr_held_back():
    """Sends the process's stderr (file descriptor 2) to a file; shows it if an error is raised."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            held.seek(0)
            os.write(2, held.read())
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def run(main, uses_tensorflow=True):
    """Runs `main()` under `absl.app.run`, after rejecting stray positional arguments.

    Args:
        main: callable without arguments; the script's work, after flag parsing.
        uses_tensorflow: bool. Import TensorFlow first, without its start-up
            lines (unless `--verbosity` or `TF_CPP_MIN_LOG_LEVEL` asks for
            them). Defaults to `True`.
    """

    def checked_main(argv):
        if len(argv) > 1:
            raise app.UsageError(
                f"Unexpected arguments: {' '.join(argv[1:])} (every option is a --flag)."
            )
        if _wants_tensorflow_logs():
            os.environ[_LOG_LEVEL] = _USER_LOG_LEVEL or "0"
        elif uses_tensorflow and "tensorflow" not in sys.modules:
            with _stderr_held_back():
                import tensorflow  # noqa: F401
        return main()

    # absl's --help prints `__main__`'s docstring and the flags of the file run,
    # a shim or a console script's wrapper: show the entry point's own instead,
    # with those it defines through this package's shared flag modules.
    entry = main.__module__
    sys.modules["__main__"].__doc__ = sys.modules[entry].__doc__
    for module in flags.FLAGS.flags_by_module_dict():
        if module == entry or module.startswith(f"{__name__}.") and module.endswith("_flags"):
            for flag in flags.FLAGS.get_key_flags_for_module(module):
                flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)
    atexit.register(gc.freeze)
    app.run(checked_main)
