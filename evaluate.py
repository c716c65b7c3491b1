"""Shim for `tf_pacseg.cli.evaluate` (see its --help)."""

from tf_pacseg.cli.evaluate import run

if __name__ == "__main__":
    run()
