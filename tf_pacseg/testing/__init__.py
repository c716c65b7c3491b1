"""Test support: the original network and training step in TF1, for parity tests and benchmarks."""
