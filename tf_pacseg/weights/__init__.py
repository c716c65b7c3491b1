"""Models on disk: Keras weights with their architecture, and the original's TF1 checkpoints."""
