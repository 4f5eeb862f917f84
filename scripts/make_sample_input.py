"""Regenerate Resources/SampleData/mni152_hippocampus_right.nii.gz.

The ICBM 2009a nonlinear symmetric T1 template ships inside the `nilearn` wheel on PyPI.
This script extracts it from a downloaded wheel and crops a 1 mm box around the right
hippocampus, the size of a Medical Segmentation Decathlon Task04 crop.

    pip download --no-deps -d /tmp/nilearn nilearn
    python scripts/make_sample_input.py /tmp/nilearn/nilearn-*.whl
"""
from __future__ import annotations

import sys
import tempfile
import zipfile
from pathlib import Path

import SimpleITK as sitk

TEMPLATE = "nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
OUTPUT = Path(__file__).resolve().parents[1] / "Resources" / "SampleData" / "mni152_hippocampus_right.nii.gz"
CENTRE_MNI_MM = (28.0, -22.0, -14.0)  # right hippocampus, MNI (RAS) millimetres
SIZE = (36, 52, 36)


def main(wheel: str) -> None:
    with zipfile.ZipFile(wheel) as archive, tempfile.TemporaryDirectory() as folder:
        template = sitk.ReadImage(archive.extract(TEMPLATE, folder))
    x, y, z = CENTRE_MNI_MM
    centre = template.TransformPhysicalPointToIndex((-x, -y, z))  # ITK points are LPS
    start = [c - s // 2 for c, s in zip(centre, SIZE)]
    crop = sitk.RegionOfInterest(template, SIZE, start)
    OUTPUT.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(crop, str(OUTPUT), useCompression=True)
    print(f"{OUTPUT}: {crop.GetSize()} voxels at {crop.GetSpacing()} mm")


if __name__ == "__main__":
    main(sys.argv[1])
