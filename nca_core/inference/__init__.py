"""Inference: the checked settings of a segmentation (``settings``), device and thread choice
(``devices``, ``threads``), size and memory limits (``limits``), the pseudo-ensemble and its fast
path (``ensemble``, ``fastpath``), sides and whole heads (``sides``, ``wholehead``), the volumes of
the result (``volumes``: per side, the runs' interval, eTIV, asymmetry), and the engine's entry
point (``pipeline``) with its typed result (``result``).

Owns one segmentation from an image and a model bundle to labels, variance and the light. May
import ``network``, ``space``, ``quality``, ``modelfile`` and the ground modules; never ``cli`` or
``training``.
"""
