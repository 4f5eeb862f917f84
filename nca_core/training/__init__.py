"""Training, evaluation and NQM calibration of M3D-NCA models: the data (``data``, ``augment``,
``artifacts``), the loss and the trainer (``loss``, ``trainer``, ``settings``), evaluation through
the engine (``evaluate``) and calibration of the light (``calibrate``).

A library beside ``inference``: may import ``network``, ``space``, ``quality``, ``modelfile``,
``inference`` and the ground modules; never ``cli`` (its commands live in ``cli/training.py``).
"""
