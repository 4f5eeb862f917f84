"""M3D-NCA engine: neural cellular automata for 3D medical image segmentation.

Pure Python (torch, numpy, SimpleITK); no Slicer imports. The Slicer module and the
`m3dnca` command line are thin layers over this package.
"""

__version__ = "0.1.0"
