"""How results are shown: variance overlay settings, traffic-light text (colours and titles
from nca_core.quality.lights, shared with the PNG preview), segment colours and terminology. Pure
functions; the module applies them to MRML nodes. The engine's folder must be on sys.path."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np
from nca_core.quality.lights import light_color, light_title

# Slicer colour table node for the variance overlay (listed in vtkMRMLColorLogic.h).
VARIANCE_COLOR_NODE_ID = "vtkMRMLColorTableNodeFileInferno.txt"
DEFAULT_OVERLAY_OPACITY = 0.6
# Voxels whose std is below this fraction of the map's maximum are see-through...
RELATIVE_THRESHOLD = 0.05
# ...and never below this absolute std (probabilities are in [0, 1]; std at most 0.5 per class).
ABSOLUTE_THRESHOLD = 0.01


@dataclass(frozen=True)
class OverlaySettings:
    """Display of the variance map: window [minimum, maximum] and the see-through threshold."""

    window_min: float
    window_max: float
    threshold: float
    empty: bool  # True when no voxel reaches the threshold (nothing to show)


def overlay_settings(variance: np.ndarray) -> OverlaySettings:
    """Window and threshold for a variance (std) map; voxels below ``threshold`` are transparent."""
    finite = np.asarray(variance, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    peak = float(finite.max()) if finite.size else 0.0
    threshold = max(ABSOLUTE_THRESHOLD, RELATIVE_THRESHOLD * peak)
    empty = peak < threshold
    window_max = peak if not empty else threshold * 2
    return OverlaySettings(window_min=0.0, window_max=window_max, threshold=threshold, empty=empty)


def clamp_opacity(value: float) -> float:
    if value is None or math.isnan(value):
        return DEFAULT_OVERLAY_OPACITY
    return min(1.0, max(0.0, float(value)))


# --- traffic light ----------------------------------------------------------------------

def light_rgb(light: str) -> Tuple[float, float, float]:
    """The light's colour as (r, g, b) in 0-1, for MRML display nodes."""
    code = light_color(light).lstrip("#")
    return tuple(int(code[i:i + 2], 16) / 255.0 for i in (0, 2, 4))


def light_stylesheet(light: Optional[str], diameter: int = 72) -> str:
    """Qt style sheet that draws the light as a filled circle (grey outline when idle)."""
    radius = diameter // 2
    if light is None:
        return (f"QLabel {{ background-color: transparent; border: 3px solid #8c8c8c; "
                f"border-radius: {radius}px; min-width: {diameter}px; max-width: {diameter}px; "
                f"min-height: {diameter}px; max-height: {diameter}px; }}")
    return (f"QLabel {{ background-color: {light_color(light)}; border: 3px solid #404040; "
            f"border-radius: {radius}px; min-width: {diameter}px; max-width: {diameter}px; "
            f"min-height: {diameter}px; max-height: {diameter}px; }}")


def format_nqm(nqm: Optional[float]) -> str:
    if nqm is None or (isinstance(nqm, float) and math.isinf(nqm)):
        return "NQM: n/a (empty segmentation)"
    return f"NQM: {nqm:.4f}"


def format_predicted_dice(dice: Optional[float]) -> str:
    if dice is None:
        return "Predicted Dice: n/a"
    return f"Predicted Dice: {dice:.2f}"


def light_summary(light: str, nqm: Optional[float], dice: Optional[float], explanation: str) -> str:
    """One plain-text line for logs and the console: light, NQM, predicted Dice, explanation."""
    return f"{light_title(light)} ({light}); {format_nqm(nqm)}; {format_predicted_dice(dice)}; {explanation}"


def progress_text(done: int, total: int, step: str = "") -> str:
    """Progress bar text for an engine step: "registration" (stages), "segmentation" or a side's
    box ("left hippocampus": runs)."""
    if step == "registration":
        return f"Finding the hippocampi: stage {done} / {total}"
    if step and step != "segmentation":
        return f"{step[:1].upper()}{step[1:]}: runs done {done} / {total}"
    return f"Runs done: {done} / {total}"


# --- segments ----------------------------------------------------------------------------

# Distinct colours (RGB 0..1) for segments, in label order.
SEGMENT_COLORS: List[Tuple[float, float, float]] = [
    (0.86, 0.74, 0.25),
    (0.30, 0.69, 0.93),
    (0.89, 0.42, 0.76),
    (0.35, 0.80, 0.44),
    (0.95, 0.55, 0.25),
    (0.62, 0.47, 0.90),
]

_TERMINOLOGY_CONTEXT = "Segmentation category and type - DICOM master list"
_ANATOMIC_CONTEXT = "Anatomic codes - DICOM master list"
# SNOMED CT codes from Slicer's Modules/Loadable/Terminologies/Resources/
# SegmentationCategoryTypeModifier-DICOM-Master.json (5.8 and main): "Hippocampus" SCT 5366008 in
# category "Anatomical Structure" SCT 123037004; it is a paired type whose laterality is its
# type modifier ("Left" SCT 7771000, "Right" SCT 24028007), as Slicer's terminology encodes it.
_KNOWN_TYPES = {
    "hippocampus": ("SCT", "123037004", "Anatomical Structure", "SCT", "5366008", "Hippocampus"),
    "prostate": ("SCT", "123037004", "Anatomical Structure", "SCT", "41216001", "Prostate"),
}
_LATERALITY = {"left": "SCT^7771000^Left", "right": "SCT^24028007^Right"}


def segment_color(index: int) -> Tuple[float, float, float]:
    return SEGMENT_COLORS[index % len(SEGMENT_COLORS)]


def segment_name(label: str) -> str:
    """A readable segment name from a model label ("anterior hippocampus" -> "Anterior hippocampus")."""
    label = (label or "").strip()
    return label[:1].upper() + label[1:] if label else "Segment"


def laterality(label: str) -> Optional[str]:
    """"left" or "right" when the label names a side ("left anterior hippocampus"), else None."""
    words = (label or "").lower().split()
    return words[0] if words and words[0] in _LATERALITY else None


def terminology_entry(label: str) -> Optional[str]:
    """Slicer TerminologyEntry tag value (7 parts joined by '~': context, category, type, type
    modifier, region context, region, region modifier) when the label names a known structure,
    else None (the segment keeps only its name and colour). A side in the label becomes the
    type's laterality modifier."""
    lowered = (label or "").lower()
    for key, codes in _KNOWN_TYPES.items():
        if key in lowered:
            cat = "^".join(codes[0:3])
            typ = "^".join(codes[3:6])
            modifier = _LATERALITY.get(laterality(label) or "", "^^")
            return "~".join([_TERMINOLOGY_CONTEXT, cat, typ, modifier, _ANATOMIC_CONTEXT, "^^", "^^"])
    return None


def segment_specs(labels):
    """(label value, name, colour, terminology or None) for every label. ``labels`` is the
    engine's {value: name} (a result's ``labels``) or a model's list of names (value k = class k)."""
    if not isinstance(labels, dict):
        labels = {index + 1: label for index, label in enumerate(labels)}
    return [(int(value), segment_name(label), segment_color(int(value) - 1), terminology_entry(label))
            for value, label in sorted(labels.items(), key=lambda item: int(item[0]))]


def side_summaries(sides) -> List[str]:
    """One line per side of a report's ``sides`` ("Left: Good (green), NQM ...")."""
    lines = []
    for side in sides or []:
        title = (side.get("side") or "crop").capitalize()
        lines.append(f"{title}: {light_title(side.get('quality'))} ({side.get('quality')}); "
                     f"{format_nqm(side.get('nqm'))}; {format_predicted_dice(side.get('predicted_dice'))}")
    return lines


# --- volumes ---------------------------------------------------------------------------------

def _ml(mm3) -> str:
    return f"{float(mm3) / 1000:.2f}"


def volume_cells(side: dict) -> Tuple[str, str, str, str]:
    """(side, volume, runs' interval, light) of a report's side entry, as plain text; a red
    side's volume says it is not to be trusted."""
    volume = side.get("volume") or {}
    title = (side.get("side") or "crop").capitalize()
    if not volume:
        return title, "n/a", "", str(side.get("quality"))
    text = f"{_ml(volume['mm3'])} mL"
    if not volume.get("trusted", True):
        text += " (not to be trusted)"
    interval = volume.get("runs_interval_mm3")
    spread = "" if not interval else (f"{_ml(interval[0])}\u2013{_ml(interval[1])} mL, "
                                      f"SD {_ml(volume['runs_std_mm3'])}")
    return title, text, spread, f"{light_title(volume.get('light'))} ({volume.get('light')})"


def volume_overall(volumes: Optional[dict]) -> str:
    """eTIV and asymmetry index of a report's ``volumes`` ("" for a crop)."""
    volumes = volumes or {}
    parts = []
    if volumes.get("etiv_ml") is not None:
        parts.append(f"eTIV {volumes['etiv_ml']:.0f} mL")
    if volumes.get("asymmetry_index") is not None:
        parts.append(f"asymmetry (L\u2212R)/mean {volumes['asymmetry_index']:+.3f}")
    return "; ".join(parts)


def volume_lines(sides, volumes: Optional[dict]) -> List[str]:
    """Plain text for the console: a line per side (volume, runs' interval, light), then eTIV."""
    lines = []
    for side in sides or []:
        title, volume, spread, light = volume_cells(side)
        lines.append(f"{title} volume: {volume}" + (f" (runs {spread})" if spread else "") + f"; {light}")
    overall = volume_overall(volumes)
    return lines + ([overall] if overall else [])


def volume_table(sides, volumes: Optional[dict]) -> str:
    """The panel's small table (rich text): a row per side with volume, runs' interval and a
    light dot; eTIV and asymmetry under it. "" without sides."""
    if not sides:
        return ""
    cell = "<td style='padding: 1px 6px;'>{}</td>"
    rows = ["<tr>" + "".join(f"<th style='padding: 1px 6px;' align='left'>{h}</th>"
                             for h in ("Side", "Volume", "Runs (min\u2013max, SD)", "Light")) + "</tr>"]
    for side in sides:
        title, volume, spread, light = volume_cells(side)
        colour = light_color((side.get("volume") or {}).get("light") or side.get("quality") or "unknown")
        dot = f"<span style='color: {colour};'>\u25cf</span> {light}"
        rows.append("<tr>" + "".join(cell.format(text) for text in (title, volume, spread, dot)) + "</tr>")
    overall = volume_overall(volumes)
    footer = f"<br>{overall}" if overall else ""
    return f"<table>{''.join(rows)}</table>{footer}"
