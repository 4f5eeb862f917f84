"""Splits of the shared PROMISE12 prostate cases by hospital (its README's sites):
``split_BIDMC.json``, ``split_UCL.json``, ``split_RUNMC.json``, each holding one hospital out
for validation; ``split_shipped.json``, the shipped model's, holding every fourth case of each
hospital out (3 per hospital); all for ``m3dnca train --split`` and ``evaluate``/``calibrate
--split``; and ``prostate_settings.json``, the settings of the recorded runs (docs/models/prostate-record.md) for
``m3dnca train --config``.

    python scripts/prostate_site_splits.py runs/
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from nca_core.training.settings import TrainSettings

SITES = {"BIDMC": [0] + list(range(2, 13)), "UCL": [1] + list(range(26, 38)), "RUNMC": list(range(13, 26))}
CASES = 38
# The prostate preset (field-of-view grid, location prior) with the recorded runs' choices:
# augmentation aimed at another hospital's contrast, a moving average of the weights.
RUN_CHOICES = {
    "augment": True, "ema_decay": 0.998, "iterations": 4000, "validate_every": 400, "time_limit_minutes": 80,
    "augmentation": {"scales": 0.2, "degrees": 10, "log_gamma": 0.7, "bias_field": 0.5, "noise_std": 0.05},
}


def site_split(site: str) -> dict:
    """Train on the other hospitals, validate on ``site``'s cases."""
    return _split(SITES[site], f"leave-one-site-out: {site} held out")


def shipped_split() -> dict:
    """Train on three quarters of every hospital, validate on the rest (its 2nd, 6th and 10th case)."""
    held_out = [case for cases in SITES.values() for case in cases[1::4]]
    return _split(held_out, "every hospital: its 2nd, 6th and 10th case held out")


def _split(held_out: list, note: str) -> dict:
    name = "promise12_{:02d}".format
    return {"train": [name(n) for n in range(CASES) if n not in held_out],
            "validation": [name(n) for n in sorted(held_out)], "note": note}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    folder = parser.parse_args().folder
    folder.mkdir(parents=True, exist_ok=True)
    splits = {f"split_{site}.json": site_split(site) for site in SITES}
    splits["split_shipped.json"] = shipped_split()
    for file_name, split in splits.items():
        path = folder / file_name
        path.write_text(json.dumps(split, indent=1) + "\n")
        print(path)
    settings = folder / "prostate_settings.json"
    settings.write_text(json.dumps(TrainSettings.for_preset("prostate", **RUN_CHOICES).to_dict(), indent=1) + "\n")
    print(settings)


if __name__ == "__main__":
    main()
