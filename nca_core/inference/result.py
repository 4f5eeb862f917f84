"""What a segmentation gives: the pseudo-ensemble's outputs on the input's voxels, the light,
and one entry per side, with the report written beside the outputs."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

from .ensemble import EnsembleResult
from ..space.grid import GridChange
from ..quality.nqm import Quality
from .priorsize import PriorChoice
from .volumes import SideVolume, VolumeSummary


THICK_SLICE_MM = 3.0  # coarser than this, the hippocampus (a few mm across) is poorly sampled


@dataclass
class SideResult:
    """One side's segmentation: which side, why, its NQM and light (``box``: where it was cut
    from a whole scan, None for a crop)."""

    side: Optional[str]
    reason: str
    nqm: float
    quality: Quality
    foreground_voxels: int
    box: Optional[Dict[str, Any]]
    label_values: Sequence[int] = ()
    volume: Optional[SideVolume] = None

    def report(self) -> Dict[str, Any]:
        return {
            "side": self.side,
            "side_reason": self.reason,
            "nqm": None if math.isinf(self.nqm) else round(self.nqm, 6),
            "quality": self.quality.light,
            "predicted_dice": None if self.quality.predicted_dice is None else round(self.quality.predicted_dice, 4),
            "explanation": self.quality.explanation,
            "caveats": list(self.quality.caveats),
            "foreground_voxels": self.foreground_voxels,
            "box": self.box,
            "label_values": list(self.label_values),
            "volume": None if self.volume is None else self.volume.report(),
        }


@dataclass
class SegmentationResult:
    """The pseudo-ensemble's outputs with the quality verdict."""

    ensemble: EnsembleResult
    quality: Quality
    model_name: str
    device: str
    seconds: float
    largest_component_only: bool = False  # the model's postprocessing removed other components
    grid: Optional[GridChange] = None  # how the input was brought to the model's grid (None: unknown geometry)
    sides: List[SideResult] = field(default_factory=list)
    labels: Dict[int, str] = field(default_factory=dict)  # label value -> name
    registration: Optional[Dict[str, Any]] = None  # how a whole scan was matched to the head template
    input_spacing: Optional[Tuple[float, ...]] = None  # the input's voxel spacing in mm (None: unknown)
    volumes: Optional[VolumeSummary] = None  # per side in ``sides``; eTIV and asymmetry for whole heads
    warns_of_thick_slices: bool = True  # False for models trained on thick slices (prostate T2)
    prior: Optional[PriorChoice] = None  # the location prior's size and place used (None: the model has no prior)

    @property
    def nqm(self) -> float:
        return self.ensemble.nqm

    @property
    def thick_slices(self) -> Optional[str]:
        """A warning when the input's slices are thicker than ``THICK_SLICE_MM``, else None."""
        if not self.warns_of_thick_slices or not self.input_spacing or max(self.input_spacing) <= THICK_SLICE_MM:
            return None
        return (f"thick slices ({max(self.input_spacing):g} mm, over {THICK_SLICE_MM:g} mm): the hippocampus is "
                "poorly sampled; a 1 mm 3D T1 is more reliable")

    def report(self) -> Dict[str, Any]:
        nqm = self.ensemble.nqm
        return {
            "nqm": None if math.isinf(nqm) else round(nqm, 6),
            "empty_segmentation": not self.ensemble.labels.any(),
            "quality": self.quality.light,
            "predicted_dice": None if self.quality.predicted_dice is None else round(self.quality.predicted_dice, 4),
            "explanation": self.quality.explanation,
            "caveats": list(self.quality.caveats),
            "runs": self.ensemble.runs,
            "model": self.model_name,
            "device": self.device,
            "seconds": round(self.seconds, 3),
            "foreground_voxels": int((self.ensemble.labels > 0).sum()),
            "largest_component_only": self.largest_component_only,
            "grid": None if self.grid is None else self.grid.to_dict(),
            "labels": {str(value): name for value, name in self.labels.items()},
            "registration": self.registration,
            "largest_spacing_mm": None if not self.input_spacing else round(max(self.input_spacing), 4),
            "thick_slices": self.thick_slices,
            "volumes": None if self.volumes is None else self.volumes.report(),
            "prior": None if self.prior is None else asdict(self.prior),
            "sides": [side.report() for side in self.sides],
        }
