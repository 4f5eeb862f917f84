"""A PNG preview: middle slice of the image, segmentation and variance, NQM and light in the title."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .atomic import atomic_path
from .quality import LIGHT_COLORS


def save_preview(volume, result, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ensemble = result.ensemble
    foreground = ensemble.labels > 0
    areas = foreground.sum(axis=(0, 1))
    middle = int(np.argmax(areas)) if areas.any() else volume.array.shape[2] // 2
    image = volume.array[:, :, middle].T
    variance = ensemble.variance_map[:, :, middle].T
    figure, axes = plt.subplots(1, 3, figsize=(12, 4.4))
    axes[0].imshow(image, cmap="gray", origin="lower")
    axes[0].set_title("image")
    axes[1].imshow(image, cmap="gray", origin="lower")
    axes[1].imshow(np.ma.masked_where(~foreground[:, :, middle].T, foreground[:, :, middle].T), cmap="autumn", alpha=0.6, origin="lower")
    axes[1].set_title("segmentation")
    shown = axes[2].imshow(variance, cmap="inferno", origin="lower")
    axes[2].set_title("standard deviation")
    figure.colorbar(shown, ax=axes[2], fraction=0.046)
    for axis in axes:
        axis.axis("off")
    quality = result.quality
    predicted = "" if quality.predicted_dice is None else f", predicted Dice {quality.predicted_dice:.2f}"
    nqm = "empty" if np.isinf(ensemble.nqm) else f"{ensemble.nqm:.4f}"
    figure.suptitle(f"{volume.name}: NQM {nqm}, quality {quality.light}{predicted}",
                    color=LIGHT_COLORS[quality.light], fontsize=13)
    try:
        with atomic_path(path, ".png") as temporary:
            figure.savefig(temporary, dpi=80, bbox_inches="tight")
    finally:
        plt.close(figure)
