"""The M3DNCASegment module's code, one concern per file.

Slicer-free (tested with plain pytest): ``display`` (light, overlay, segment names and
terminology), ``geometry`` (array order, RAS/LPS), ``options`` (panel choices, model list,
dependencies), ``job`` + ``worker`` (the background process). With MRML (tested against real
MRML from slicer-core): ``volume`` (volume node -> SimpleITK image, ROI box), ``outputs``
(segmentation and variance nodes), ``logic`` (volume -> engine -> scene), ``dependencies``.
With Qt: ``panel`` (the module widget).
"""
