"""Precision of the hippocampal volumes: the same head turned, shifted, resampled and stored LPS
(the test suite's head variants); each side's volume and its change from the head as stored.
Prints the table of docs/volumes.md.

    python scripts/volume_precision.py ../shared/data/wholehead/ch2.nii.gz \
        ../shared/data/realheads/images/IXI002-Guys-0828_T1.nii.gz [--runs 10] [--model hippocampus]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "Testing" / "Python"))

from nca_core.errors import NCAError  # noqa: E402
from nca_core.pipeline import segment_image  # noqa: E402
from nca_core.registry import load  # noqa: E402
from nca_helpers import HEAD_VARIANTS  # noqa: E402


def side_ml(result, side: str) -> float:
    volume = result.volumes.side(side)
    return float("nan") if volume is None else volume.total.ml


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
        print("| variant | left mL | change | right mL | change | eTIV mL | lights |")
        print("|---|---|---|---|---|---|---|")
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
                result = segment_image(image, bundle, args.model, runs=args.runs, device="cpu")
            except NCAError as error:
                print(f"| {name} | not located: {error} |||||")
                continue
            volumes = np.array([side_ml(result, "left"), side_ml(result, "right")])
            if reference is None:
                reference = volumes
            delta = 100 * (volumes / reference - 1)
            changes.append(delta)
            lights = ", ".join(side.quality.light for side in result.sides)
            print(f"| {name} | {volumes[0]:.3f} | {delta[0]:+.1f} % | {volumes[1]:.3f} | {delta[1]:+.1f} % | "
                  f"{result.volumes.etiv_ml:.0f} | {lights} |", flush=True)
        if len(changes) > 1:
            spread = np.abs(np.array(changes[1:]))
            print(f"\nlargest change: left {spread[:, 0].max():.1f} %, right {spread[:, 1].max():.1f} %; "
                  f"mean absolute change: left {spread[:, 0].mean():.2f} %, right {spread[:, 1].mean():.2f} %")


if __name__ == "__main__":
    main()
