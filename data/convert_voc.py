"""Shim for `tf_pacseg.cli.convert_voc` (see its --help)."""

from tf_pacseg.cli.convert_voc import run

if __name__ == "__main__":
    run()
