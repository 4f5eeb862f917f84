"""Dice of a model on labelled cases stored or resampled as other scanners and viewers have them,
with and without bringing them to the model's grid (the "Inputs on other grids" table of
docs/models/hippocampus.md).

    python scripts/grid_robustness.py --data ../shared/data/hippocampus [--model hippocampus] \
        [--split split.json] [--cases N] [--runs 10]

The cases are the model's own validation cases (its provenance), or those of ``--split``.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable, Dict, List, Tuple

import numpy as np
import SimpleITK as sitk

from nca_core.space.grid import ModelGrid
from nca_core.quality.metrics import mean_foreground_dice
from nca_core.inference.pipeline import segment_array
from nca_core.inference.settings import SegmentSettings
from nca_core.space.preprocessing import Preprocessing
from nca_core.modelfile.registry import DEFAULT_MODEL, load
from nca_core.training.data import Case, find_pairs, load_cases, read_split

Geometry = Tuple[Tuple[float, ...], Tuple[float, ...]]  # spacing, direction
Variant = Callable[[Case], Tuple[np.ndarray, np.ndarray, Geometry]]  # image, label, geometry


def _restored(case: Case, layout: Callable[[sitk.Image], sitk.Image]) -> Tuple[np.ndarray, np.ndarray, Geometry]:
    """The case's voxels stored in another axis layout (the same anatomy in another file)."""
    stored = []
    for array in (case.image, case.label):
        image = sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))
        image.CopyInformation(case.volume.reference)
        stored.append(layout(image))
    arrays = [sitk.GetArrayFromImage(image).transpose(2, 1, 0) for image in stored]
    return arrays[0], arrays[1], (stored[0].GetSpacing(), stored[0].GetDirection())


def _resampled(case: Case, spacing: Tuple[float, float, float]) -> Tuple[np.ndarray, np.ndarray, Geometry]:
    """The case resampled to ``spacing`` over the same extent (image linear, label nearest),
    with the engine's own resampling."""
    direction = case.volume.reference.GetDirection()
    grid = ModelGrid(case.image.shape, case.volume.spacing, direction, Preprocessing(spacing=list(spacing)))
    return grid.to_model(case.image), grid.label_to_model(case.label), (tuple(spacing), direction)


VARIANTS: Dict[str, Variant] = {
    "as stored": lambda case: _restored(case, lambda image: image),
    "stored LPS-first": lambda case: _restored(case, lambda image: sitk.DICOMOrient(image, "LPS")),
    "two axes swapped": lambda case: _restored(case, lambda image: sitk.PermuteAxes(image, [2, 1, 0])),
    "0.7 mm": lambda case: _resampled(case, (0.7, 0.7, 0.7)),
    "1.3 mm": lambda case: _resampled(case, (1.3, 1.3, 1.3)),
    "0.5 x 0.5 x 2 mm": lambda case: _resampled(case, (0.5, 0.5, 2.0)),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--split", type=Path, help="split.json whose validation cases to use (default: the model's)")
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--cases", type=int, default=None, help="only the first N validation cases")
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    bundle = load(args.model)
    names = set(read_split(args.split)["validation"] if args.split else bundle.provenance["validation_cases"])
    cases = [c for c in load_cases(find_pairs(args.data), bundle.config.output_channels == 1) if c.name in names]
    cases = cases[: args.cases]
    classes = bundle.config.output_channels
    scores: Dict[str, Dict[str, List[float]]] = {name: {"without": [], "with": []} for name in VARIANTS}
    for case in cases:
        for name, variant in VARIANTS.items():
            image, label, (spacing, direction) = variant(case)
            for mode, geometry in (("without", {}), ("with", {"spacing": spacing, "direction": direction})):
                settings = SegmentSettings(model=args.model, runs=args.runs, seed=0, device="cpu")
                labels = segment_array(image, bundle, settings, **geometry).ensemble.labels
                scores[name][mode].append(mean_foreground_dice(labels, label.astype(np.uint8), classes))
        print(f"{case.name} done", flush=True)
    print(f"{len(cases)} cases, {args.runs} runs: mean Dice without / with the grid mapping")
    for name, modes in scores.items():
        print(f"  {name:30s} {np.mean(modes['without']):.4f}  {np.mean(modes['with']):.4f}")


if __name__ == "__main__":
    main()
