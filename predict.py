"""Shim for `tf_pacseg.cli.predict` (see its --help)."""

from tf_pacseg.cli.predict import run

if __name__ == "__main__":
    run()
