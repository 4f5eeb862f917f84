#!/usr/bin/env bash
# Set up and segment the bundled sample MRI (MNI152 template crop) with the shipped model.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/m3dnca segment Resources/SampleData/mni152_hippocampus_right.nii.gz \
    --model hippocampus -o demo-output --preview --overwrite "$@"
echo "outputs in demo-output/ (segmentation, variance map, report.json, preview.png)"
