"""Judging a segmentation: the NCA quality metric and its calibration (``nqm``), the traffic
light's palette and titles (``lights``) and Dice (``metrics``).

Owns the words of the verdict (green, yellow, red, unknown). ``lights`` imports nothing, so the
Slicer side can use it without loading the engine. May import numpy and the ground modules of
``nca_core`` (``errors``, ``fields``) only.
"""
