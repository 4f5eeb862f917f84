"""Model files: the ``.m3dnca`` format (``bundle``: weights, metadata, checks), its torch-free
header (``header``), the shipped models and name lookup (``registry``) and the conversion of the
reference implementation's checkpoints (``official``).

Owns the model suffix and the default model name. ``header`` and ``registry`` never import torch
(the Slicer panel lists models through them). May import ``network``, ``space``, ``quality`` and the
ground modules; never ``inference``, ``cli`` or ``training``.
"""
