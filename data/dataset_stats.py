"""Shim for `tf_pacseg.cli.dataset_stats` (see its --help)."""

from tf_pacseg.cli.dataset_stats import run

if __name__ == "__main__":
    run()
