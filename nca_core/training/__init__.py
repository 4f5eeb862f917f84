"""Training, evaluation and NQM calibration of M3D-NCA models."""
