"""Running a trained model: forward pass (whole or tiled), evaluation, reports, prediction."""
