"""Slicer-free helpers of the M3DNCASegment module.

Nothing in this package imports ``slicer``, ``qt``, ``vtk`` or ``torch``: it is tested with
pytest outside Slicer (Testing/Python/test_slicer_module.py).
"""
