"""Label-map clean-up, chosen per model on validation data and stored in the model file."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict

import numpy as np
import SimpleITK as sitk

from ..fields import checked_fields


@dataclass(frozen=True)
class Postprocessing:
    """``largest_component``: keep only the largest 26-connected foreground component
    (all labels together), as nnU-Net does when it helps on validation."""

    largest_component: bool = False

    def apply(self, labels: np.ndarray) -> np.ndarray:
        return largest_component(labels) if self.largest_component else labels

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> "Postprocessing":
        """Checked postprocessing from JSON data; raises ModelFileError naming the bad field."""
        return cls(**checked_fields(cls, data, "postprocessing"))


def largest_component(labels: np.ndarray) -> np.ndarray:
    """``labels`` with every voxel outside the largest foreground component set to 0."""
    foreground = sitk.GetImageFromArray((labels > 0).astype(np.uint8))
    components = sitk.RelabelComponent(sitk.ConnectedComponent(foreground, True), sortByObjectSize=True)
    keep = sitk.GetArrayFromImage(components) == 1
    return np.where(keep, labels, 0).astype(labels.dtype)
