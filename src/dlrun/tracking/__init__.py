"""Metrics destinations beside the run directory: TensorBoard, CSV and MLflow."""
