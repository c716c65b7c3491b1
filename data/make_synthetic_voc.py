"""Shim for `tf_pacseg.cli.make_synthetic_voc` (see its --help)."""

from tf_pacseg.cli.make_synthetic_voc import run

if __name__ == "__main__":
    run()
