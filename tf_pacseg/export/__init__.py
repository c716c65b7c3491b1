"""Exports for serving (SavedModel, ONNX, LiteRT, OpenVINO IR), each run by its runtime."""
