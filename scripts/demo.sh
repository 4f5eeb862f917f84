#!/usr/bin/env bash
# Set up, fetch a whole-head T1 and segment both hippocampi with the shipped model.
# The head is the mean T1 that ships inside the pydeface wheel on PyPI (MIT licence): an average
# of real whole-head scans, with skull, face and neck, stored slightly oblique as scanners store it.
# Any other volume can be given instead: bash scripts/demo.sh path/to/scan.nii.gz
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
input="${1:-}"
if [ -z "$input" ]; then
    input=demo-input/mean_head_t1.nii.gz
    if [ ! -f "$input" ]; then
        mkdir -p demo-input
        .venv/bin/python -m pip download --quiet --disable-pip-version-check --no-deps -d demo-input/wheel "pydeface==2.1.0"
        .venv/bin/python - "$input" <<'PY'
import glob, shutil, sys, zipfile
with zipfile.ZipFile(glob.glob("demo-input/wheel/pydeface-*.whl")[0]) as wheel, wheel.open("pydeface/data/mean_reg2mean.nii.gz") as head:
    with open(sys.argv[1] + ".part", "wb") as out:
        shutil.copyfileobj(head, out)
shutil.move(sys.argv[1] + ".part", sys.argv[1])
PY
        rm -rf demo-input/wheel
    fi
fi
.venv/bin/m3dnca segment "$input" --model hippocampus -o demo-output --preview --overwrite
echo "outputs in demo-output/ (segmentation with one label per side, variance map, report.json, preview.png)"
