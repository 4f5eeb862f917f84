"""Per-side Dice against the atlas outline, NQM, light and time on the shared whole head
(Colin 27) as stored and in the test suite's variants (turned, shifted, resampled, LPS).

    python scripts/wholehead_robustness.py ../shared/data/wholehead [--runs 10] [--model hippocampus]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "Testing" / "Python"))

from nca_core.inference.pipeline import segment_image  # noqa: E402
from nca_core.inference.settings import SegmentSettings  # noqa: E402
from nca_core.modelfile.registry import DEFAULT_MODEL, load  # noqa: E402
from nca_helpers import HEAD_VARIANTS, variant  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    args = parser.parse_args()
    bundle = load(args.model)
    head = sitk.ReadImage(str(args.folder / "ch2.nii.gz"))
    outline = sitk.ReadImage(str(args.folder / "ch2_hippocampus_aal.nii.gz"))
    print("| variant | left Dice | left NQM, light | right Dice | right NQM, light | overall | seconds |")
    print("|---|---|---|---|---|---|---|")
    for name, change in [("as stored", None)] + list(HEAD_VARIANTS.items()):
        image, label = (head, outline) if change is None else variant(head, outline, change)
        started = time.perf_counter()
        result = segment_image(image, bundle, SegmentSettings(model=args.model, runs=args.runs, device="cpu"))
        seconds = time.perf_counter() - started
        truth = sitk.GetArrayFromImage(label).transpose(2, 1, 0)
        cells = []
        for side in result.sides:
            found = np.isin(result.ensemble.labels, side.label_values)
            expected = truth == (1 if side.side == "left" else 2)
            dice = 2 * np.count_nonzero(found & expected) / (np.count_nonzero(found) + np.count_nonzero(expected))
            cells += [f"{dice:.3f}", f"{side.nqm:.3f}, {side.quality.light}"]
        print(f"| {name} | {' | '.join(cells)} | {result.quality.light} | {seconds:.1f} |", flush=True)


if __name__ == "__main__":
    main()
