"""A PNG preview a clinician can read: one slice through the segmentation in radiological view,
with orientation letters, the segmentation outlined in cyan, the runs' disagreement as a heat
map with its scale, the traffic light as a coloured badge, and the volume of each side with the
runs' interval (marked when its light is red)."""
from __future__ import annotations

import math
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ..atomic import atomic_path
from ..quality.lights import light_color, light_title
from ..inference.volumes import MM3_PER_ML, SideVolume, VolumeSummary
from .overview import coronal_overview, draw_overview

OUTLINE_COLOR = "cyan"
STD_SCALE = 0.5  # heat-map maximum: a class's probability split half and half between the runs
STD_HIDDEN_BELOW = 0.01  # see-through below this, as in the Slicer overlay
PANEL_HEIGHT, HEADER, FOOTER, MIN_WIDTH, ROW_HEADER = 4.0, 1.55, 0.75, 8.0, 1.1  # inches
NOTE_HEIGHT = 0.3  # inches of header added for the thick-slice note
OVERVIEW_GAP = 0.3  # inches between the whole-head overview and the first side's row
SIDE_VIEW_MM = 70.0  # a whole head's side is shown in a box this wide around its segmentation
THICK_SLICES = 1.5  # slices this much thicker than the finest spacing are shown as acquired
PLANES = ("sagittal", "coronal", "axial")  # by the physical axis across the slice: x (L), y (P), z (S)
# Letters of each LPS axis's (negative, positive) end, and which end is drawn left or on top
# (radiological view: the patient's right on the left, anterior or superior on top).
AXIS_LETTERS = (("R", "L"), ("A", "P"), ("I", "S"))
FIRST_END_SHOWN = {0: "R", 1: "A", 2: "S"}


@dataclass(frozen=True)
class SliceView:
    """Which slice is shown and how: ``axis`` is the array axis across the slice."""

    plane: str
    axis: int
    index: int
    count: int
    rows_axis: int  # the array axis running down the picture
    columns_axis: int  # the array axis running across it
    flip_rows: bool
    flip_columns: bool
    letters: Tuple[str, str, str, str]  # left, right, top, bottom
    aspect: float  # a pixel's height over its width (voxel spacing)
    position: str  # the slice's scanner position, e.g. "S 12.0 mm"

    def take(self, array: np.ndarray) -> np.ndarray:
        """The slice of an (X, Y, Z) array, rows top to bottom and columns left to right."""
        plane = np.take(array, self.index, axis=self.axis)
        kept = [a for a in range(3) if a != self.axis]
        if kept.index(self.rows_axis) != 0:
            plane = plane.T
        if self.flip_rows:
            plane = plane[::-1, :]
        if self.flip_columns:
            plane = plane[:, ::-1]
        return plane

    def caption(self) -> str:
        return f"{self.plane} slice {self.index + 1} of {self.count} ({self.position})"


def axis_physical(direction: Sequence[float]) -> Tuple[Tuple[int, int], ...]:
    """For each array axis, the nearest LPS axis (0 x, 1 y, 2 z) and the sign it points along."""
    matrix = np.asarray(direction, dtype=float).reshape(3, 3)  # column a: array axis a in LPS
    result = []
    for column in range(3):
        physical = int(np.argmax(np.abs(matrix[:, column])))
        result.append((physical, 1 if matrix[physical, column] > 0 else -1))
    return tuple(result)


def choose_view(labels: np.ndarray, reference) -> SliceView:
    """The slice with the most segmented voxels, in radiological view: in the plane the volume
    was acquired in when its slices are thick, else axial. ``reference`` is the SimpleITK
    image carrying the geometry."""
    physical = axis_physical(reference.GetDirection())
    spacing = reference.GetSpacing()
    axis = next((a for a, (p, _) in enumerate(physical) if p == 2), 2)
    if max(spacing) > THICK_SLICES * min(spacing):
        axis = int(np.argmax(spacing))
    others = sorted((a for a in range(3) if a != axis), key=lambda a: physical[a][0])
    columns_axis, rows_axis = others
    areas = (labels > 0).sum(axis=tuple(a for a in range(3) if a != axis))
    index = int(np.argmax(areas)) if areas.any() else labels.shape[axis] // 2
    column_ends = _ends(physical[columns_axis])  # (low index end, high index end) letters
    row_ends = _ends(physical[rows_axis])
    flip_columns = column_ends[0] != FIRST_END_SHOWN[physical[columns_axis][0]]
    flip_rows = row_ends[0] != FIRST_END_SHOWN[physical[rows_axis][0]]
    left, right = column_ends[::-1] if flip_columns else column_ends
    top, bottom = row_ends[::-1] if flip_rows else row_ends
    return SliceView(
        plane=PLANES[physical[axis][0]], axis=axis, index=index, count=labels.shape[axis],
        rows_axis=rows_axis, columns_axis=columns_axis, flip_rows=flip_rows, flip_columns=flip_columns,
        letters=(left, right, top, bottom), aspect=spacing[rows_axis] / spacing[columns_axis],
        position=_position(reference, axis, index, physical[axis][0]),
    )


def _ends(physical: Tuple[int, int]) -> Tuple[str, str]:
    """Letters at the low and the high index end of an array axis."""
    negative, positive = AXIS_LETTERS[physical[0]]
    return (negative, positive) if physical[1] > 0 else (positive, negative)


def _position(reference, axis: int, index: int, physical: int) -> str:
    """The slice's centre along its physical axis in RAS millimetres, as Slicer shows it."""
    centre = [(size - 1) / 2 for size in reference.GetSize()]
    centre[axis] = index
    point = reference.TransformContinuousIndexToPhysicalPoint(centre)
    value = -point[physical] if physical < 2 else point[physical]  # LPS -> RAS
    return f"{'RAS'[physical]} {value:.1f} mm"


def draw_panel(ax, image_slice: np.ndarray, label_slice: np.ndarray, std_slice: Optional[np.ndarray],
               view: SliceView, window: Tuple[float, float], title: str):
    """One picture: the image in grey, the segmentation outlined in cyan, and (when
    ``std_slice`` is given) the runs' standard deviation as a heat map; returns the heat map's
    image (for a colour bar) or None. Slices come from ``view.take``."""
    ax.imshow(image_slice, cmap="gray", vmin=window[0], vmax=window[1], aspect=view.aspect,
              interpolation="nearest")
    heat = None
    if std_slice is not None:
        shown = np.ma.masked_less(std_slice, STD_HIDDEN_BELOW)
        heat = ax.imshow(shown, cmap="inferno", vmin=0.0, vmax=STD_SCALE, alpha=0.75, aspect=view.aspect,
                         interpolation="nearest")
    for value in np.unique(label_slice[label_slice > 0]):
        ax.contour(label_slice == value, levels=[0.5], colors=OUTLINE_COLOR, linewidths=1.2)
    left, right, top, bottom = view.letters
    style = dict(color="white", fontsize=11, fontweight="bold",
                 bbox=dict(facecolor="black", alpha=0.55, edgecolor="none", pad=1.5))
    ax.text(0.01, 0.5, left, transform=ax.transAxes, ha="left", va="center", **style)
    ax.text(0.99, 0.5, right, transform=ax.transAxes, ha="right", va="center", **style)
    ax.text(0.5, 0.99, top, transform=ax.transAxes, ha="center", va="top", **style)
    ax.text(0.5, 0.01, bottom, transform=ax.transAxes, ha="center", va="bottom", **style)
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    return heat


def light_badge(figure, light: str, nqm: float, predicted_dice: Optional[float], corner: Tuple[float, float],
                prefix: str = "") -> None:
    """The light as a coloured badge whose top right corner is at ``corner`` (figure fraction)."""
    nqm_text = "n/a (empty segmentation)" if math.isinf(nqm) else f"{nqm:.3f}"
    dice_text = "n/a" if predicted_dice is None else f"{predicted_dice:.2f}"
    text = f"{prefix}{light.upper()}: {light_title(light)}\nNQM {nqm_text}, predicted Dice {dice_text}"
    figure.text(corner[0], corner[1], text, ha="right", va="top", fontsize=11, fontweight="bold",
                color="black" if light == "yellow" else "white",
                bbox=dict(boxstyle="round,pad=0.5", facecolor=light_color(light), edgecolor="#404040"))


@dataclass(frozen=True)
class Row:
    """One row of the preview: a volume's (or one side's) image, labels and deviation, and its light."""

    title: str
    image: np.ndarray
    labels: np.ndarray
    std: np.ndarray
    reference: object  # SimpleITK image carrying this part's geometry
    quality: object  # nca_core.quality.nqm.Quality
    nqm: float
    volume: Optional[SideVolume] = None


def volume_line(volume: SideVolume) -> str:
    """"volume 4.00 mL (runs 3.96-4.04, SD 0.02), 0.212 % of eTIV"; a red side's is marked."""
    text = f"volume {volume.total.ml:.2f} mL"
    interval = volume.total.interval_mm3
    if interval is not None:
        text += (f" (runs {interval[0] / MM3_PER_ML:.2f}-{interval[1] / MM3_PER_ML:.2f}, "
                 f"SD {volume.total.runs_std_mm3 / MM3_PER_ML:.2f})")
    if volume.fraction_of_etiv is not None:
        text += f", {100 * volume.fraction_of_etiv:.3f} % of eTIV"
    return text if volume.trusted else f"{text}: NOT TO BE TRUSTED ({volume.light} light)"


def overall_line(summary: VolumeSummary) -> str:
    """eTIV and asymmetry index of a whole head ("" when neither applies)."""
    parts = []
    if summary.etiv_ml is not None:
        parts.append(f"eTIV {summary.etiv_ml:.0f} mL")
    if summary.asymmetry_index is not None:
        parts.append(f"asymmetry index (L - R) / mean {summary.asymmetry_index:+.3f}")
    return "; ".join(parts) + ("" if summary.trusted or not parts else " (a red side: not to be trusted)")


def preview_rows(volume, result) -> List[Row]:
    """A row for a crop; for a whole-head result, one row per side, cut around that side."""
    ensemble = result.ensemble
    whole = (volume.array, ensemble.labels, ensemble.variance_map)
    if not any(side.box for side in result.sides):
        volume_of = result.sides[0].volume if result.sides else None
        return [Row("", *whole, volume.reference, result.quality, ensemble.nqm, volume_of)]
    rows = []
    for side in result.sides:
        found = np.argwhere(np.isin(ensemble.labels, side.label_values))
        if len(found):
            centre = (found.min(axis=0) + found.max(axis=0)) // 2
        else:  # nothing found: the box's centre
            centre = np.asarray(volume.reference.TransformPhysicalPointToIndex(side.box["centre_lps_mm"]))
        half = np.ceil(SIDE_VIEW_MM / 2 / np.asarray(volume.reference.GetSpacing())).astype(int)
        low = np.clip(centre - half, 0, None)
        high = np.minimum(centre + half + 1, ensemble.labels.shape)
        cut = tuple(slice(int(a), int(b)) for a, b in zip(low, high))
        rows.append(Row(f"{side.side} hippocampus", *(a[cut] for a in whole), volume.reference[cut],
                        side.quality, side.nqm, side.volume))
    return rows


def save_preview(volume, result, path: Path) -> None:
    """Write the preview PNG of one segmented volume (``result``: a SegmentationResult): a row
    for a crop, one per side for a whole head, each with its light."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = preview_rows(volume, result)
    overview = coronal_overview(volume, result)
    panel_height = PANEL_HEIGHT
    row_height = panel_height + (ROW_HEADER if len(rows) > 1 else 0)
    width = MIN_WIDTH + 2.0
    overview_height = PANEL_HEIGHT + ROW_HEADER + OVERVIEW_GAP if overview else 0.0
    height = HEADER + (NOTE_HEIGHT if result.thick_slices else 0.0) + overview_height + len(rows) * row_height + FOOTER
    figure = plt.figure(figsize=(width, height))
    top = 1 - 0.12 / height
    figure.text(0.15 / width, top, volume.name, ha="left", va="top", fontsize=13, fontweight="bold")
    figure.text(0.15 / width, top - 0.6 / height, f"model {Path(result.model_name).name}", ha="left", va="top",
                fontsize=10)
    light_badge(figure, result.quality.light, result.ensemble.nqm if len(rows) == 1 else max(r.nqm for r in rows),
                result.quality.predicted_dice, (1 - 0.15 / width, top), "overall: " if len(rows) > 1 else "")
    captions = []
    for number, row in enumerate(rows):
        bottom = FOOTER + (len(rows) - 1 - number) * row_height
        captions.append(_draw_row(figure, row, bottom, panel_height, width, height, result.ensemble.runs,
                                  with_badge=len(rows) > 1))
    if overview:
        _draw_overview_row(figure, overview, FOOTER + len(rows) * row_height + OVERVIEW_GAP, width, height)
    header = captions[0] if len(rows) == 1 else "both hippocampi of a whole head, one row per side"
    figure.text(0.15 / width, top - 0.35 / height, f"{header}, radiological view", ha="left", va="top", fontsize=10)
    crop_volume = rows[0].volume if len(rows) == 1 else None
    summary_line = (f"{crop_volume.total.name}: {volume_line(crop_volume)}" if crop_volume else
                    overall_line(result.volumes) if len(rows) > 1 and result.volumes else "")
    if summary_line:
        figure.text(0.15 / width, top - 0.85 / height, summary_line, ha="left", va="top", fontsize=10,
                    fontweight="bold", color=_volume_color(crop_volume, result))
    if result.thick_slices:
        figure.text(0.15 / width, top - (1.1 if summary_line else 0.85) / height,
                    textwrap.fill(f"Note: {result.thick_slices}.", 120), ha="left", va="top", fontsize=10,
                    fontweight="bold", color="#b35900")
    explanation = result.quality.explanation
    figure.text(0.15 / width, 0.38 / height, textwrap.fill(f"Light: {explanation}.", 140), ha="left", va="bottom",
                fontsize=9)
    figure.text(0.15 / width, 0.1 / height, "NQM: the runs' summed standard deviation over their summed "
                "probability; the lower, the more the runs agree.", ha="left", va="bottom", fontsize=9)
    try:
        with atomic_path(path, ".png") as temporary:
            figure.savefig(temporary, dpi=90)
    finally:
        plt.close(figure)


def _draw_overview_row(figure, overview, bottom: float, width: float, height: float) -> None:
    """The whole head's overview panel with its title above it, at ``bottom`` inches."""
    left, right, low, high = overview.extent
    panel_width = min(width - 0.6, PANEL_HEIGHT * (right - left) / (high - low))
    ax = figure.add_axes([(width - panel_width) / 2 / width, bottom / height, panel_width / width,
                          PANEL_HEIGHT / height])
    draw_overview(ax, overview, OUTLINE_COLOR)
    row_top = (bottom + PANEL_HEIGHT + ROW_HEADER - 0.1) / height
    figure.text(0.15 / width, row_top, f"Where it looked: {overview.caption()}", ha="left", va="top",
                fontsize=11, fontweight="bold")
    figure.text(0.15 / width, row_top - 0.3 / height, "each side's search box outlined in the colour of its "
                "light, the segmentation in cyan", ha="left", va="top", fontsize=10)


def _draw_row(figure, row: Row, bottom: float, panel_height: float, width: float, height: float, runs: int,
              with_badge: bool) -> str:
    """Draw one row (image panel, deviation panel, colour bar); returns its slice caption."""
    view = choose_view(row.labels, row.reference)
    image, labels, std = (view.take(a) for a in (row.image, row.labels, row.std))
    window = tuple(float(v) for v in np.percentile(row.image, (0.5, 99.5)))
    panel_width = min(2.0 * panel_height, max(0.5 * panel_height,
                                              panel_height * image.shape[1] / (image.shape[0] * view.aspect)))
    panel_width = min(panel_width, (width - 2.2) / 2)
    left = (width - 2 * panel_width - 1.3) / 2  # room for the colour bar on the right

    def box(x: float, w: float):
        return [x / width, bottom / height, w / width, panel_height / height]

    draw_panel(figure.add_axes(box(left, panel_width)), image, labels, None, view, window,
               "image, segmentation outlined in cyan")
    heat = draw_panel(figure.add_axes(box(left + panel_width + 0.25, panel_width)), image, labels, std, view, window,
                      f"disagreement of the {runs} runs")
    colour_bar = figure.colorbar(heat, cax=figure.add_axes(box(left + 2 * panel_width + 0.4, 0.15)))
    colour_bar.set_label("standard deviation over the runs\n(0: all agree, 0.5: split half and half)", fontsize=8)
    if with_badge:
        row_top = (bottom + panel_height + ROW_HEADER - 0.1) / height
        figure.text(0.15 / width, row_top, f"{row.title}: {view.caption()}", ha="left", va="top", fontsize=11,
                    fontweight="bold")
        light_badge(figure, row.quality.light, row.nqm, row.quality.predicted_dice, (1 - 0.15 / width, row_top))
        if row.volume is not None:
            figure.text(0.15 / width, row_top - 0.3 / height, volume_line(row.volume), ha="left", va="top",
                        fontsize=10, color="black" if row.volume.trusted else light_color(row.volume.light))
    return view.caption()


def _volume_color(volume: Optional[SideVolume], result) -> str:
    """Black, or the red light's colour for a volume (or a head's summary) not to be trusted."""
    trusted = volume.trusted if volume is not None else (result.volumes is None or result.volumes.trusted)
    return "black" if trusted else light_color("red")
