"""The intracranial volume of the ICBM 2009a template behind the eTIV (nca_core/inference/volumes.py,
TEMPLATE_ICV_ML): the volume of the template's own average brain mask, read from the nilearn wheel
on PyPI (the same file scripts/make_head_template.py makes the shipped template from).

The wheel's T1 (``mni_icbm152_t1_tal_nlin_sym_09a_converted``) is the 1 mm ICBM 2009a template,
skull-stripped (nilearn's words) with the release's average brain mask: its non-zero voxels
(holes filled) are taken as that mask. The wheel has no CSF map and no other intracranial mask; the
GM + WM probability sum is printed beside it for comparison. See docs/volumes.md.

    pip download --no-deps -d /tmp/nilearn nilearn
    python scripts/template_icv.py /tmp/nilearn/nilearn-*.whl
"""
from __future__ import annotations

import sys
import tempfile
import zipfile

import numpy as np
import SimpleITK as sitk

DATA = "nilearn/datasets/data/mni_icbm152_{}_tal_nlin_sym_09a_converted.nii.gz"


def read(archive: zipfile.ZipFile, tissue: str, folder: str) -> sitk.Image:
    return sitk.ReadImage(archive.extract(DATA.format(tissue), folder))


def main(wheel: str) -> None:
    with zipfile.ZipFile(wheel) as archive, tempfile.TemporaryDirectory() as folder:
        t1, gm, wm = (read(archive, tissue, folder) for tissue in ("t1", "gm", "wm"))
    voxel_ml = float(np.prod(t1.GetSpacing())) / 1000.0
    mask = sitk.BinaryFillhole(sitk.Cast(t1 > 0, sitk.sitkUInt8), fullyConnected=True)
    mask_ml = float(sitk.GetArrayViewFromImage(mask).sum()) * voxel_ml
    tissue = sum(sitk.GetArrayFromImage(image).astype(np.float64) / 255.0 for image in (gm, wm))
    print(f"ICBM 2009a brain mask (support of the skull-stripped T1, holes filled): {mask_ml:.3f} mL")
    print(f"GM + WM probability sum (no CSF): {tissue.sum() * voxel_ml:.1f} mL")
    print(f"TEMPLATE_ICV_ML = {mask_ml:.3f}")


if __name__ == "__main__":
    main(sys.argv[1])
