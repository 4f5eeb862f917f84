"""Panel choices -> the engine's settings (``nca_core.inference.settings.SegmentSettings``) and the
model list (torch-free headers, ``nca_core.modelfile.registry``)."""
from __future__ import annotations

import os
from typing import List, Optional

from nca_core.errors import NCAError
from nca_core.inference.settings import LOCATE_CHOICES, PANEL_DEVICE_CHOICES, SIDE_CHOICES, SegmentSettings  # noqa: F401
from nca_core.modelfile.header import ModelHeader
from nca_core.modelfile.registry import find_header, shipped_headers

DEVICE_CHOICES = PANEL_DEVICE_CHOICES  # the panel's names (auto, CPU, GPU); SIDE_CHOICES, LOCATE_CHOICES: the engine's
# Panel region -> how the engine takes the volume: "auto" finds both hippocampi in a whole head
# (a crop-sized volume is taken as it is), "roi" cuts the volume to a markups ROI first, and
# "volume" takes the volume as one crop.
REGION_CHOICES = ("auto", "roi", "volume")
_REGION_LOCATE = {"auto": "auto", "roi": "none", "volume": "none"}


def region_locate(region: str) -> str:
    try:
        return _REGION_LOCATE[region]
    except KeyError:
        raise NCAError(f"region must be one of {', '.join(REGION_CHOICES)}, not {region!r}") from None


def settings(model: str, runs=10, seed=0, device="auto", fireRate: Optional[float] = None, steps=None,
             side: str = "auto", region: str = "auto") -> SegmentSettings:
    """The engine's options from the panel's or the console's values, checked against the model.
    ``fireRate`` 0 or None: the model's own rate (the panel's spin box shows 0 as "model's own")."""
    header = find_header(model)
    if region == "roi" and header.grid_shape:
        raise NCAError(f"model {header.name} maps the scan's whole field of view: use region auto or volume, "
                       "not an ROI (a cut-out would show the organ at another size)")
    return SegmentSettings.parse(
        model=header.path if os.path.isfile(model) else header.name, runs=runs, seed=seed, device=device,
        fire_rate=fireRate or None, steps=steps, side=side, locate=region_locate(region)).check(header.levels)


def model_catalog() -> List[ModelHeader]:
    return shipped_headers()
