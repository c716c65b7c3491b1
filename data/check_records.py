"""Shim for `tf_pacseg.cli.check_records` (see its --help)."""

from tf_pacseg.cli.check_records import run

if __name__ == "__main__":
    run()
