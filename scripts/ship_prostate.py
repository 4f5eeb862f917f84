"""Write the shipped prostate model from a calibrated run on the shipped split (three cases of
every hospital held out): the same weights, config, grid and calibration, with the prostate's
plausible volume range and provenance that names the data and sites instead of this machine's
folders.

    python scripts/ship_prostate.py runs/prostate-shipped-cal.m3dnca Resources/Models/prostate.m3dnca

See docs/models/prostate-record.md for the commands that make the calibrated run.
"""
from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from nca_core.modelfile.bundle import load_model, save_model
from prostate_site_splits import shipped_split

SITES = "BIDMC (cases 00, 02-12), UCL (01, 26-37), RUNMC (13-25)"
GOAL_DICE = 0.80  # the paper's M3D-NCA on MSD prostate; below it the model is called experimental
# A whole gland under 5 mL or over 300 mL is not a prostate outline (adult glands are about 20-30 mL,
# enlarged ones up to about 150, rare giant ones beyond 200): the light turns red outside it.
VOLUME_RANGE_ML = [5.0, 300.0]


def _description(dice: float) -> str:
    """The model's one-line description; below the goal it says the model is experimental."""
    text = f"M3D-NCA prostate (whole gland, axial T2 MRI; PROMISE12); Dice {dice:.2f} on held-out cases"
    if dice < GOAL_DICE:
        text += f"; experimental: below its {GOAL_DICE:.2f} goal, review every outline"
    return text


def shipped_provenance(provenance: dict) -> dict:
    """``provenance`` with the data described in words and the training folder left out."""
    validation = provenance.get("validation_cases", [])
    return dict(
        provenance,
        description=_description(provenance["calibration_report"]["dice_clean"]["mean"]),
        data=(f"PROMISE12 training set, teaching copy (UCL WEISS, gu98/MPHY0041_Segmentation b516c84): 38 "
              f"cases from 3 hospitals, {SITES}; trained on {provenance.get('training_cases')} cases of "
              f"all three, validated and calibrated on the other {len(validation)} (3 of each hospital: "
              f"{', '.join(validation)})"),
        grid=("field-of-view relative, as the data: the central 80% of each axial slice resampled to "
              "128x128, the slices to 32, axes towards left, posterior, superior (LPS); the data's "
              "spacing was lost upstream, so none is assumed"),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("calibrated", type=Path)
    parser.add_argument("output", type=Path)
    args = parser.parse_args()
    bundle = load_model(args.calibrated)
    if bundle.calibration is None or not bundle.preprocessing.relative_to_field_of_view:
        raise SystemExit(f"{args.calibrated}: not a calibrated field-of-view (prostate) model")
    if bundle.provenance.get("validation_cases") != shipped_split()["validation"]:
        raise SystemExit(f"{args.calibrated}: its validation cases are not the shipped split's "
                         "(scripts/prostate_site_splits.py), which this provenance describes")
    bundle.provenance = shipped_provenance(bundle.provenance)
    bundle.calibration = replace(bundle.calibration, volume_range_ml=VOLUME_RANGE_ML)
    save_model(bundle, args.output)
    print(f"{args.output}: written")


if __name__ == "__main__":
    main()
