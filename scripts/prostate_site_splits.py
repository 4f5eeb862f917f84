"""Leave-one-site-out splits of the shared PROMISE12 prostate cases (its README's sites):
``split_BIDMC.json``, ``split_UCL.json``, ``split_RUNMC.json``, each holding one hospital out
for validation, for ``m3dnca train --split`` and ``evaluate``/``calibrate --split``.

    python scripts/prostate_site_splits.py runs/
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

SITES = {"BIDMC": [0] + list(range(2, 13)), "UCL": [1] + list(range(26, 38)), "RUNMC": list(range(13, 26))}
CASES = 38


def site_split(site: str) -> dict:
    held_out = set(SITES[site])
    name = "promise12_{:02d}".format
    return {"train": [name(n) for n in range(CASES) if n not in held_out],
            "validation": [name(n) for n in sorted(held_out)],
            "note": f"leave-one-site-out: {site} held out"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    folder = parser.parse_args().folder
    folder.mkdir(parents=True, exist_ok=True)
    for site in SITES:
        path = folder / f"split_{site}.json"
        path.write_text(json.dumps(site_split(site), indent=1) + "\n")
        print(path)


if __name__ == "__main__":
    main()
