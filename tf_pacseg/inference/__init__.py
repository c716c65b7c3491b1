"""Running a trained model: the forward pass, evaluation and its metrics, prediction."""
