"""Regenerate Resources/Templates (the head templates and where the hippocampi lie).

- ``mni152_t1_2mm.nii.gz``: the ICBM 2009a nonlinear symmetric T1 template (brain only) that
  ships inside the ``nilearn`` wheel on PyPI, resampled to 2 mm.
- ``mean_head_t1_4mm.nii.gz``: the mean whole-head T1 (skull, face, neck) that ships inside the
  ``pydeface`` wheel on PyPI (MIT licence), resampled to 4 mm: it finds a head's pose.
- ``hippocampus_atlas.json``: the training crops' box (median size of the MSD Task04 crops and
  the mean position of the hippocampus centre in them, measured on the data folder); each
  hippocampus centre on the brain template: a published MNI coordinate, moved to the centre of
  the shipped model's own segmentation of the 1 mm template (three rounds); and the affine map
  of the brain template onto the mean head (mutual information, rigid then affine).

    pip download --no-deps -d /tmp/wheels nilearn pydeface==2.1.0
    python scripts/make_head_template.py /tmp/wheels/nilearn-*.whl /tmp/wheels/pydeface-*.whl \
        ../shared/data/hippocampus
"""
from __future__ import annotations

import json
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from nca_core.inference.ensemble import run_ensemble
from nca_core.space.atlas import ATLAS_FILE, HEAD_TEMPLATE_FILE, TEMPLATE_FILE, matrix_and_offset
from nca_core.space.headpose import correlation, metric, on_grid
from nca_core.modelfile.registry import load
from nca_core.space.regions import box_grid

TEMPLATE = "nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
HEAD = "pydeface/data/mean_reg2mean.nii.gz"
OUTPUT = Path(__file__).resolve().parents[1] / "Resources" / "Templates"
# Hippocampus centres in MNI (RAS) mm, from the literature (e.g. the Harvard-Oxford atlas' centroids).
SEEDS_RAS = {"left": (-26.0, -22.0, -14.0), "right": (26.0, -22.0, -14.0)}
ROUNDS = 3


def crop_box(data: Path):
    """Median crop size and mean hippocampus centre (voxels = mm at 1 mm, RAS) of the MSD crops."""
    sizes, centres = [], []
    for path in sorted((data / "labelsTr").glob("*.nii.gz")):
        label = sitk.DICOMOrient(sitk.ReadImage(str(path)), "RAS")
        array = sitk.GetArrayFromImage(label).transpose(2, 1, 0)
        sizes.append(array.shape)
        centres.append(np.argwhere(array > 0).mean(axis=0))
    return np.median(sizes, axis=0), np.mean(centres, axis=0)


def refined_centre(template: sitk.Image, seed_lps, side: str, size, centre_voxel, bundle) -> np.ndarray:
    """The centre of the model's segmentation in a training-style box around ``seed_lps``."""
    centre = np.asarray(seed_lps, dtype=float)
    for _ in range(ROUNDS):
        grid = box_grid(centre, np.eye(3), "RAS", (1.0, 1.0, 1.0), size.astype(int), centre_voxel,
                        mirrored=side != bundle.preprocessing.side)
        crop = sitk.GetArrayFromImage(sitk.Resample(template, grid, sitk.Transform(), sitk.sitkLinear, 0.0,
                                                    sitk.sitkFloat32)).transpose(2, 1, 0)
        result = run_ensemble(bundle.build(), crop, bundle.preprocessing, runs=10, postprocessing=bundle.postprocessing)
        print(f"{side}: NQM {result.nqm:.3f}, {int((result.labels > 0).sum())} voxels")
        index = np.argwhere(result.labels > 0).mean(axis=0)
        centre = np.asarray(grid.TransformContinuousIndexToPhysicalPoint([float(i) for i in index]))
    return centre


def as_uint8(image: sitk.Image) -> sitk.Image:
    """Grey levels scaled so that the 99.9th percentile is 255."""
    top = float(np.percentile(sitk.GetArrayViewFromImage(image), 99.9))
    return sitk.Cast(sitk.Clamp(image * (255.0 / top), lowerBound=0, upperBound=255), sitk.sitkUInt8)


def template_to_head(template: sitk.Image, head: sitk.Image):
    """The brain template fitted onto the mean head: the best of a few translations below the
    head's centre of mass, then rigid, then affine (mutual information inside the brain)."""
    mask = sitk.Cast(template > 0, sitk.sitkUInt8)
    initial = sitk.CenteredTransformInitializer(template, head, sitk.Euler3DTransform(),
                                                sitk.CenteredTransformInitializerFilter.MOMENTS)
    probe = metric(mask, [1], [0.0], sampling=0.05)
    starts = []
    for dz in (-45.0, -30.0, -15.0, 0.0, 15.0):
        for dy in (-10.0, 0.0, 10.0):
            start = sitk.Euler3DTransform(initial)
            x, y, z = initial.GetTranslation()
            start.SetTranslation((x, y + dy, z + dz))
            probe.SetInitialTransform(start, inPlace=False)
            starts.append((probe.MetricEvaluate(template, head), start))
    start = min(starts, key=lambda item: item[0])[1]
    transform: sitk.Transform = start
    for stage in (sitk.VersorRigid3DTransform(), sitk.AffineTransform(3)):
        stage.SetCenter(start.GetCenter())
        stage.SetMatrix(transform.GetMatrix())
        stage.SetTranslation(transform.GetTranslation())
        method = metric(mask, [2, 1], [2.0, 0.0], sampling=0.05)
        method.SetOptimizerAsRegularStepGradientDescent(2.0, 1e-3, 100, relaxationFactor=0.6,
                                                        gradientMagnitudeTolerance=1e-6)
        method.SetOptimizerScalesFromPhysicalShift()
        method.SetInitialTransform(stage, inPlace=True)
        method.Execute(template, head)
        transform = stage
    print(f"brain template on the mean head: correlation {correlation(template, head, mask, transform):.3f}")
    matrix, offset = matrix_and_offset(transform)
    return {"matrix": [round(float(v), 6) for v in matrix.reshape(-1)], "offset": [round(float(v), 4) for v in offset]}


def main(wheel: str, head_wheel: str, data: str) -> None:
    with zipfile.ZipFile(wheel) as archive, tempfile.TemporaryDirectory() as folder:
        template = sitk.Cast(sitk.ReadImage(archive.extract(TEMPLATE, folder)), sitk.sitkFloat32)
    with zipfile.ZipFile(head_wheel) as archive, tempfile.TemporaryDirectory() as folder:
        head = sitk.Cast(sitk.ReadImage(archive.extract(HEAD, folder)), sitk.sitkFloat32)
    size, centre_voxel = crop_box(Path(data))
    bundle = load("hippocampus")
    centres = {}
    for side, (x, y, z) in SEEDS_RAS.items():
        lps = refined_centre(template, (-x, -y, z), side, size, centre_voxel, bundle)
        centres[side] = [round(-lps[0], 1), round(-lps[1], 1), round(lps[2], 1)]
    coarse = sitk.Resample(sitk.SmoothingRecursiveGaussian(template, 0.85), [int(s) // 2 for s in template.GetSize()],
                           sitk.Transform(), sitk.sitkLinear, template.GetOrigin(), (2.0, 2.0, 2.0),
                           template.GetDirection(), 0.0, sitk.sitkFloat32)
    coarse = sitk.Cast(sitk.Clamp(coarse, lowerBound=0, upperBound=255), sitk.sitkUInt8)
    OUTPUT.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(coarse, str(OUTPUT / TEMPLATE_FILE), useCompression=True)
    sitk.WriteImage(as_uint8(on_grid(head, 4.0)), str(OUTPUT / HEAD_TEMPLATE_FILE), useCompression=True)
    to_head = template_to_head(sitk.Cast(coarse, sitk.sitkFloat32), on_grid(head, 2.0))
    atlas = {
        "template": "ICBM 2009a nonlinear symmetric T1 (brain), from the nilearn wheel, resampled to 2 mm",
        "centres_ras_mm": centres,
        "centres_how": "published MNI hippocampus centroids refined to the shipped hippocampus model's "
                       f"segmentation of the 1 mm template ({ROUNDS} rounds)",
        "crop_size_mm": [float(s) for s in size],
        "centre_in_crop_mm": [round(float(c), 1) for c in centre_voxel],
        "crop_how": "median size of the MSD Task04 crops and the mean hippocampus centre in them (RAS, 1 mm)",
        "head_template": "mean whole-head T1 of the pydeface 2.1.0 wheel (MIT licence), resampled to 4 mm",
        "template_to_head_lps": to_head,
        "template_to_head_how": "brain template onto the mean head at 2 mm: mutual information inside the brain, "
                                "the best of 15 translations, then rigid, then affine",
    }
    (OUTPUT / ATLAS_FILE).write_text(json.dumps(atlas, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(atlas, indent=2))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3])
