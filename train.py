"""Shim for `tf_pacseg.cli.train` (see its --help)."""

from tf_pacseg.cli.train import run

if __name__ == "__main__":
    run()
