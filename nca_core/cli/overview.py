"""The preview's whole-head overview: where the hippocampi were looked for. One coronal slice
through the mean centre of both boxes, resampled upright in the patient frame whatever the
storage orientation (radiological view: the patient's right on the left, superior on top), the
segmentation outlined in cyan and each side's box outlined in its light's colour."""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np
import SimpleITK as sitk

from ..quality.lights import light_color

MAX_PIXELS = 400  # the display grid's longer side, at most
SIDE_LETTERS = {"left": "L", "right": "R"}


@dataclass(frozen=True)
class BoxOutline:
    """Where one side's box crosses the slice: a polygon in (x, z) LPS mm, its letter and colour."""

    letter: str
    color: str
    polygon: np.ndarray  # (N, 2); empty when the box misses the slice


@dataclass(frozen=True)
class Overview:
    """The slice in display order (rows superior to inferior, columns patient right to left)."""

    image: np.ndarray
    labels: np.ndarray
    extent: Tuple[float, float, float, float]  # x left edge, x right edge, z bottom, z top (LPS mm)
    boxes: List[BoxOutline]
    position: str  # the slice's RAS position, as Slicer shows it

    def caption(self) -> str:
        return f"coronal slice through both boxes ({self.position})"


def coronal_overview(volume, result) -> Optional[Overview]:
    """The overview of a whole-head ``result`` on ``volume``; None for a crop (no boxes)."""
    boxed = [side for side in result.sides if side.box]
    if not boxed:
        return None
    reference = volume.reference
    plane_y = float(np.mean([side.box["centre_lps_mm"][1] for side in boxed]))
    corners = _corners(reference.GetSize(), reference)
    low, high = corners.min(axis=0), corners.max(axis=0)
    spacing = max(min(reference.GetSpacing()), float(max(high[0] - low[0], high[2] - low[2])) / MAX_PIXELS)
    size = [int(np.ceil((high[0] - low[0]) / spacing)) + 1, int(np.ceil((high[2] - low[2]) / spacing)) + 1, 1]
    display = sitk.Image(size, sitk.sitkUInt8)
    display.SetSpacing([spacing, spacing, 1.0])
    display.SetDirection([1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, -1.0, 0.0])  # columns: x (to L), -z (down), y
    display.SetOrigin([float(low[0]), plane_y, float(high[2])])
    image = _on(display, volume.array, reference, sitk.sitkLinear)
    labels = _on(display, result.ensemble.labels, reference, sitk.sitkNearestNeighbor)
    half = spacing / 2
    extent = (low[0] - half, low[0] + (size[0] - 1) * spacing + half,
              high[2] - (size[1] - 1) * spacing - half, high[2] + half)
    boxes = [BoxOutline(SIDE_LETTERS.get(side.side, "?"), light_color(side.quality.light),
                        _section(side.box, plane_y)) for side in boxed]
    return Overview(image, labels, extent, boxes, f"A {-plane_y:.1f} mm")


def _corners(size, grid: sitk.Image) -> np.ndarray:
    """The physical (LPS) points of a grid's 8 corner voxels."""
    ends = [(0, s - 1) for s in size]
    return np.array([grid.TransformContinuousIndexToPhysicalPoint([float(c) for c in corner])
                     for corner in itertools.product(*ends)])


def _on(display: sitk.Image, array: np.ndarray, reference: sitk.Image, interpolator: int) -> np.ndarray:
    """An (X, Y, Z) array of the volume resampled onto the display slice: (rows, columns)."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
    image.CopyInformation(reference)
    return sitk.GetArrayFromImage(sitk.Resample(image, display, sitk.Transform(), interpolator, 0.0))[0]


def _section(box: Dict[str, object], plane_y: float) -> np.ndarray:
    """The polygon where a report's box (centre, size, spacing, direction) meets the plane y =
    ``plane_y``: the crossings of its 12 edges, ordered around their centre."""
    size = np.asarray(box["size"], dtype=float)
    axes = np.asarray(box["direction"], dtype=float).reshape(3, 3) * np.asarray(box["spacing_mm"], dtype=float)
    origin = np.asarray(box["centre_lps_mm"], dtype=float) - axes @ ((size - 1) / 2)
    ends = [(-0.5, s - 0.5) for s in size]
    corner = {c: origin + axes @ np.asarray(c) for c in itertools.product(*ends)}
    points = []
    for a, b in itertools.combinations(corner, 2):
        if sum(x != y for x, y in zip(a, b)) != 1:
            continue  # not an edge
        ya, yb = corner[a][1] - plane_y, corner[b][1] - plane_y
        if ya * yb < 0 or (ya == 0 and yb != 0):
            point = corner[a] + (corner[b] - corner[a]) * (ya / (ya - yb))
            points.append((point[0], point[2]))
    if len(points) < 3:
        return np.empty((0, 2))
    points = np.asarray(points)
    middle = points.mean(axis=0)
    order = np.argsort(np.arctan2(points[:, 1] - middle[1], points[:, 0] - middle[0]))
    return points[order]


def draw_overview(ax, overview: Overview, outline_color: str) -> None:
    """The overview on ``ax``: grey image, cyan segmentation, the boxes with their letters."""
    image = overview.image
    inside = image[image > 0] if (image > 0).any() else image
    window = np.percentile(inside, (0.5, 99.5))
    ax.imshow(image, cmap="gray", vmin=window[0], vmax=window[1], extent=overview.extent, origin="upper",
              interpolation="bilinear")
    if overview.labels.any():
        ax.contour(overview.labels > 0, levels=[0.5], colors=outline_color, linewidths=1.0,
                   extent=overview.extent, origin="upper")
    for box in overview.boxes:
        if not len(box.polygon):
            continue
        closed = np.vstack([box.polygon, box.polygon[:1]])
        ax.plot(closed[:, 0], closed[:, 1], color=box.color, linewidth=2.0)
        ax.text(closed[:, 0].mean(), closed[:, 1].max() + 3, box.letter, color=box.color, ha="center", va="bottom",
                fontsize=12, fontweight="bold", bbox=dict(facecolor="black", alpha=0.6, edgecolor="none", pad=1.5))
    style = dict(color="white", fontsize=11, fontweight="bold",
                 bbox=dict(facecolor="black", alpha=0.55, edgecolor="none", pad=1.5))
    for x, y, letter, ha, va in ((0.01, 0.5, "R", "left", "center"), (0.99, 0.5, "L", "right", "center"),
                                 (0.5, 0.99, "S", "center", "top"), (0.5, 0.01, "I", "center", "bottom")):
        ax.text(x, y, letter, transform=ax.transAxes, ha=ha, va=va, **style)
    ax.set_xlim(overview.extent[0], overview.extent[1])
    ax.set_ylim(overview.extent[2], overview.extent[3])
    ax.set_xticks([])
    ax.set_yticks([])
