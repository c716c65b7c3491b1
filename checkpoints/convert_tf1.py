"""Shim for `tf_pacseg.cli.convert_tf1` (see its --help)."""

from tf_pacseg.cli.convert_tf1 import run

if __name__ == "__main__":
    run()
