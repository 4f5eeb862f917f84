"""Which route a scan takes through ``segment_image``: the whole-head route (find both
hippocampi, segment each side's box) or one crop. Without torch, so that the command line can
decide it, and register a head ahead, while the engine is still loading."""
from __future__ import annotations

import SimpleITK as sitk

from ..errors import NCAError
from ..space.atlas import HeadAtlas
from ..space.locate import is_whole_scan
from ..space.preprocessing import Preprocessing


def locates_hippocampi(image: sitk.Image, locate: str, preprocessing: Preprocessing) -> bool:
    """Whether ``segment_image`` takes the whole-head route for ``image`` with this ``locate``
    and a model with this ``preprocessing``; NCAError for ``head`` with a field-of-view model."""
    check_locate_for_model(locate, preprocessing)
    if preprocessing.relative_to_field_of_view:
        return False
    return locate == "head" or (locate == "auto" and is_whole_scan(image, HeadAtlas.load().crop_size_mm))


def check_locate_for_model(locate: str, preprocessing: Preprocessing) -> None:
    """NCAError for ``--locate head`` with a field-of-view model (it takes the whole scan)."""
    if locate == "head" and preprocessing.relative_to_field_of_view:
        raise NCAError("--locate head finds hippocampi in a whole head; this model segments the "
                       "whole field of view (use --locate auto or none)")
