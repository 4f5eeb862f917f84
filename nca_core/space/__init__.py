"""Image space: reading and writing volumes (``imaging``), the model's voxel grid (``grid``),
intensity preparation and label clean-up (``preprocessing``, ``standardise``, ``postprocessing``),
a field-of-view model's location prior (``prior``), and finding the hippocampi in a whole head
(``regions``, ``locate``).

Owns voxels, spacing, orientation and crops; knows nothing of the network or of model files.
May import numpy, SimpleITK and the ground modules of ``nca_core`` (``errors``, ``fields``) only.
"""
