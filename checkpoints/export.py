"""Shim for `tf_pacseg.cli.export` (see its --help)."""

from tf_pacseg.cli.export import run

if __name__ == "__main__":
    run()
