"""Precision of the hippocampal volumes: the same head turned, shifted, resampled and stored LPS
(the test suite's head variants); each side's volume and its change from the head as stored.
Prints the table of docs/volumes.md.

    python scripts/volume_precision.py ../shared/data/wholehead/ch2.nii.gz \
        ../shared/data/realheads/images/IXI162-HH-1548_T1.nii.gz [--runs 10] [--model hippocampus]

"label map": the volume reported (voxels of the label map on the input's grid); "probability":
the ensemble's mean probabilities summed on the same voxels (no threshold).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "Testing" / "Python"))

from nca_core.errors import NCAError  # noqa: E402
from nca_core.inference.pipeline import segment_image  # noqa: E402
from nca_core.inference.settings import SegmentSettings  # noqa: E402
from nca_core.modelfile.registry import load  # noqa: E402
from nca_helpers import HEAD_VARIANTS  # noqa: E402


def side_ml(result, side: str) -> np.ndarray:
    """(label-map volume, probability volume) of ``side`` in mL."""
    volume = result.volumes.side(side).total
    return np.array([volume.ml, volume.probability_mm3 / 1000])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("heads", type=Path, nargs="+")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--model", default="hippocampus")
    args = parser.parse_args()
    bundle = load(args.model)
    for path in args.heads:
        head = sitk.ReadImage(str(path), sitk.sitkFloat32)
        print(f"\n{path.name}\n")
        print("| variant | left mL: label map (change), probability (change) | right mL: the same | eTIV mL | lights |")
        print("|---|---|---|---|---|")
        changes = []
        reference = None
        for name, change in [("as stored", None)] + list(HEAD_VARIANTS.items()):
            if change is None:
                image = head
            elif change[0].__name__ in ("resampled", "turned_in_grid"):
                image = change[0](head, *change[1:], sitk.sitkLinear)
            else:
                image = change[0](head, *change[1:])
            try:
                result = segment_image(image, bundle, SegmentSettings(model=args.model, runs=args.runs, device="cpu"))
            except NCAError as error:
                print(f"| {name} | not located: {error} |||||")
                continue
            volumes = np.array([side_ml(result, "left"), side_ml(result, "right")])  # (side, measure)
            if reference is None:
                reference = volumes
            delta = 100 * (volumes / reference - 1)
            changes.append(delta)
            lights = ", ".join(side.quality.light for side in result.sides)
            cells = [f"{v[0]:.3f} ({d[0]:+.1f} %), {v[1]:.3f} ({d[1]:+.1f} %)" for v, d in zip(volumes, delta)]
            print(f"| {name} | {' | '.join(cells)} | {result.volumes.etiv_ml:.0f} | {lights} |", flush=True)
        if len(changes) > 1:
            spread = np.abs(np.array(changes[1:]))  # (variant, side, measure)
            for index, measure in enumerate(("label map", "probability")):
                print(f"\n{measure}: largest change left {spread[:, 0, index].max():.1f} %, right "
                      f"{spread[:, 1, index].max():.1f} %; mean absolute change left {spread[:, 0, index].mean():.2f} %, "
                      f"right {spread[:, 1, index].mean():.2f} %; within 1 %: "
                      f"{int((spread[:, :, index] <= 1).all(axis=1).sum())} of {len(spread)} variants")


if __name__ == "__main__":
    main()
