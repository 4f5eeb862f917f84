"""Agreement of the hippocampal volumes with the automatic DLMUSE labels of real heads (48 = left,
47 = right hippocampus): per case, then per side Pearson correlation, Bland-Altman bias and 95 %
limits of agreement (ours - DLMUSE), and the mean ratio. Prints the tables of docs/volumes.md.

    python scripts/volume_agreement.py ../shared/data/realheads [--runs 10] [--model hippocampus]
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Dict, List

import numpy as np
import SimpleITK as sitk

from nca_core.errors import NCAError
from nca_core.inference.pipeline import segment_image
from nca_core.inference.settings import SegmentSettings
from nca_core.modelfile.registry import load

DLMUSE_LABELS = {"left": 48, "right": 47}


def reference_ml(label: sitk.Image) -> Dict[str, float]:
    """DLMUSE's hippocampus volume per side (mL) on the label map's voxels."""
    array = sitk.GetArrayViewFromImage(label)
    voxel_ml = float(np.prod(label.GetSpacing())) / 1000
    return {side: float(np.count_nonzero(array == value)) * voxel_ml for side, value in DLMUSE_LABELS.items()}


def labelled_ml(label: sitk.Image) -> float:
    """All of DLMUSE's labels together (mL): a head-size reference for the eTIV (not an ICV)."""
    return float(np.count_nonzero(sitk.GetArrayViewFromImage(label))) * float(np.prod(label.GetSpacing())) / 1000


def asymmetry_index(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    return (left - right) / ((left + right) / 2)


def agreement(ours: np.ndarray, theirs: np.ndarray) -> Dict[str, float]:
    """Pearson r, Bland-Altman bias and limits (ours - theirs), mean ratio."""
    difference = ours - theirs
    bias, sd = float(difference.mean()), float(difference.std(ddof=1)) if len(difference) > 1 else math.nan
    r = float(np.corrcoef(ours, theirs)[0, 1]) if len(ours) > 2 else math.nan
    return {"n": len(ours), "r": r, "bias": bias, "low": bias - 1.96 * sd, "high": bias + 1.96 * sd,
            "ratio": float((ours / theirs).mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--model", default="hippocampus")
    args = parser.parse_args()
    bundle = load(args.model)
    images = sorted((args.folder / "images").glob("*.nii.gz"))
    rows: List[Dict[str, object]] = []
    heads: List[tuple] = []  # (eTIV, DLMUSE labelled volume) per located head
    print("| case | left ours mL (runs) | left DLMUSE mL | right ours mL (runs) | right DLMUSE mL | lights | eTIV mL "
          "| DLMUSE labelled mL |")
    print("|---|---|---|---|---|---|---|---|")
    for path in images:
        case = path.name[: -len(".nii.gz")]
        label = sitk.ReadImage(str(args.folder / "labels" / f"{case}_DLMUSE.nii.gz"))
        reference = reference_ml(label)
        try:
            result = segment_image(sitk.ReadImage(str(path), sitk.sitkFloat32), bundle,
                                   SegmentSettings(model=args.model, runs=args.runs, device="cpu"))
        except NCAError as error:
            print(f"| {case} | not located: {' '.join(str(error).split())[:90]} | {reference['left']:.2f} | | "
                  f"{reference['right']:.2f} | | | {labelled_ml(label):.0f} |", flush=True)
            continue
        cells = []
        for side in ("left", "right"):
            volume = result.volumes.side(side)
            low, high = volume.total.interval_mm3
            cells += [f"{volume.total.ml:.2f} ({low / 1000:.2f}-{high / 1000:.2f})", f"{reference[side]:.2f}"]
            rows.append({"side": side, "ours": volume.total.ml, "theirs": reference[side], "light": volume.light})
        lights = ", ".join(side.quality.light for side in result.sides)
        heads.append((result.volumes.etiv_ml, labelled_ml(label)))
        print(f"| {case} | {' | '.join(cells)} | {lights} | {result.volumes.etiv_ml:.0f} | {heads[-1][1]:.0f} |",
              flush=True)
    located = len(rows) // 2
    print(f"\nlocated: {located} of {len(images)} heads ({args.model}, {args.runs} runs)\n")
    print("| side | sides counted | n | Pearson r | bias mL (ours - DLMUSE) | 95 % limits mL | mean ratio ours/DLMUSE |")
    print("|---|---|---|---|---|---|---|")
    for side in ("left", "right"):
        for which, keep in (("all located", lambda row: True), ("not red", lambda row: row["light"] != "red")):
            chosen = [row for row in rows if row["side"] == side and keep(row)]
            if len(chosen) < 2:
                print(f"| {side} | {which} | {len(chosen)} | too few |||| ")
                continue
            stats = agreement(np.array([r["ours"] for r in chosen]), np.array([r["theirs"] for r in chosen]))
            print(f"| {side} | {which} | {stats['n']} | {stats['r']:.2f} | {stats['bias']:+.2f} | "
                  f"{stats['low']:+.2f} to {stats['high']:+.2f} | {stats['ratio']:.2f} |")
    if len(rows) > 4:
        ours, theirs = (np.array([[r[key] for r in rows if r["side"] == side] for side in ("left", "right")])
                        for key in ("ours", "theirs"))
        index = [asymmetry_index(left, right) for left, right in (ours, theirs)]
        print(f"\nasymmetry index (L - R) / mean: ours {index[0].mean():+.3f} (SD {index[0].std(ddof=1):.3f}), "
              f"DLMUSE {index[1].mean():+.3f} (SD {index[1].std(ddof=1):.3f}), Pearson r "
              f"{np.corrcoef(*index)[0, 1]:.2f}; right larger in {int((index[0] < 0).sum())} (ours) and "
              f"{int((index[1] < 0).sum())} (DLMUSE) of {len(index[0])} heads")
    if len(heads) > 2:
        etiv, labelled = np.array(heads).T
        print(f"\neTIV against DLMUSE's labelled volume (all labels): Pearson r {np.corrcoef(etiv, labelled)[0, 1]:.2f}, "
              f"mean ratio {float((etiv / labelled).mean()):.2f} (n = {len(heads)})")


if __name__ == "__main__":
    main()
