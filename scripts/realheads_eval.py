"""Per-head table on real scanner-space heads with automatic labels (``../shared/data/realheads``):
located or refused, each side's Dice and centroid distance against the labels, light and seconds.

    python scripts/realheads_eval.py ../shared/data/realheads [--runs 10] [--variant NAME] [--locate-only]

``--locate-only`` registers only and gives the distance of each box's hippocampus centre from
the labelled one (fast, for tuning localisation). ``--variant`` turns, cuts or resamples each
head first (the test suite's real-head variants, ``Testing/Python/head_variants.py``).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "Testing" / "Python"))

from head_variants import REAL_HEAD_VARIANTS, LABEL_OF_SIDE, agreement, centroid_mm, real_head_variant  # noqa: E402
from nca_core.errors import NCAError  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--model", default="hippocampus")
    parser.add_argument("--variant", default="as stored", choices=["as stored"] + list(REAL_HEAD_VARIANTS))
    parser.add_argument("--locate-only", action="store_true")
    parser.add_argument("--only", nargs="*", help="subject ids to run (default: all)")
    args = parser.parse_args()
    from nca_core.inference.pipeline import segment_image
    from nca_core.inference.settings import SegmentSettings
    from nca_core.modelfile.registry import load

    bundle = load(args.model)
    images = sorted((args.folder / "images").glob("*.nii.gz"))
    if args.only:
        images = [path for path in images if any(key in path.name for key in args.only)]
    print(f"variant: {args.variant}")
    print("| head | located | left Dice | left mm | left light | right Dice | right mm | right light | s |")
    print("|---|---|---|---|---|---|---|---|---|")
    dices, failures = [], 0
    for path in images:
        label_path = args.folder / "labels" / path.name.replace("_T1.nii.gz", "_T1_DLMUSE.nii.gz")
        image, labels = sitk.ReadImage(str(path)), sitk.ReadImage(str(label_path))
        if args.variant != "as stored":
            image, labels = real_head_variant(image, labels, args.variant)
        name = path.name.split("-")[0]
        started = time.perf_counter()
        if args.locate_only:
            print(f"| {name} | {_locate_only(image, labels, bundle)} | {time.perf_counter() - started:.1f} |", flush=True)
            continue
        try:
            result = segment_image(image, bundle, SegmentSettings(model=args.model, runs=args.runs, device="cpu"))
        except NCAError as error:
            failures += 1
            print(f"| {name} | refused: {str(error)[:70]} | | | | | | | {time.perf_counter() - started:.1f} |")
            continue
        seconds = time.perf_counter() - started
        cells = []
        for side, match in zip(result.sides, agreement(result, labels, image)):
            dices.append(match.dice)
            cells += [f"{match.dice:.3f}", f"{match.distance_mm:.1f}", f"{side.quality.light} {side.nqm:.3f}"]
        print(f"| {name} | yes | {' | '.join(cells)} | {seconds:.1f} |", flush=True)
    if dices:
        print(f"\nlocated {len(images) - failures}/{len(images)}; Dice per side median {statistics.median(dices):.3f}, "
              f"min {min(dices):.3f}")


def _locate_only(image: sitk.Image, labels: sitk.Image, bundle) -> str:
    from nca_core.space.atlas import HeadAtlas
    from nca_core.space.locate import register

    atlas = HeadAtlas.load()
    try:
        registration = register(image, atlas)
    except NCAError as error:
        return f"refused: {str(error)[:60]}"
    truth = sitk.GetArrayFromImage(labels).transpose(2, 1, 0)
    cells = []
    for side, label in LABEL_OF_SIDE.items():
        centre = np.asarray(registration.transform.TransformPoint(atlas.centres[side]))
        cells.append(f"{side} {np.linalg.norm(centre - centroid_mm(truth == label, image)):.1f} mm")
    return ", ".join(cells) + f" (brain r {registration.correlation:.2f}, head r {registration.head_correlation:.2f})"


if __name__ == "__main__":
    main()
