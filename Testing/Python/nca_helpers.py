"""Small builders shared by the engine and robustness tests (not a test module)."""
from __future__ import annotations

import hashlib
import json
import math
import struct
from dataclasses import replace
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np
import SimpleITK as sitk
import torch
from safetensors.torch import save as save_tensors

from nca_core.cli.main import main

REPOSITORY = Path(__file__).resolve().parents[2]
from nca_core.network.config import NCAConfig, preset
from nca_core.network.model import M3DNCA
from nca_core.modelfile.bundle import ModelBundle, digest, load_model, save_model
from nca_core.training.data import find_pairs
from nca_core.training.settings import TrainSettings


def random_model(config: NCAConfig, seed: int = 0, scale: float = 0.05) -> M3DNCA:
    """A model whose fc1 is not zero, so that steps change the state."""
    torch.manual_seed(seed)
    model = M3DNCA(config)
    with torch.no_grad():
        for rule in model.levels:
            rule.fc1.weight.normal_(0.0, scale)
    return model.eval()


def every_parameter_matters(config: NCAConfig) -> M3DNCA:
    """A model in eval mode whose every parameter matters (fc1 and BN affine not at their init)."""
    torch.manual_seed(0)
    model = M3DNCA(config)
    with torch.no_grad():
        for rule in model.levels:
            rule.fc1.weight.normal_(0, 0.05)
            rule.fc0.bias.normal_(0, 0.3)
            rule.norm.weight.uniform_(0.5, 1.5)
            rule.norm.bias.normal_(0, 0.1)
    return model.eval()


def model_file(path: Path, preset_name: str = "hippocampus", trained_like: bool = False) -> Path:
    """Write an (untrained, or random-weight) model file and return its path."""
    config = preset(preset_name)
    model = random_model(config) if trained_like else M3DNCA(config)
    save_model(ModelBundle.from_model(model, provenance={"description": "test"}), path)
    return Path(path)


def write_volume(
    path: Path,
    array_xyz: np.ndarray,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    origin: Sequence[float] = (0.0, 0.0, 0.0),
    direction: Optional[Sequence[float]] = None,
) -> Path:
    """Write an (X, Y, Z) array with the given geometry."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(array_xyz).transpose(2, 1, 0)))
    image.SetSpacing(tuple(spacing))
    image.SetOrigin(tuple(origin))
    if direction is not None:
        image.SetDirection(tuple(direction))
    sitk.WriteImage(image, str(path))
    return Path(path)


def smooth_volume(shape: Sequence[int] = (16, 14, 12), seed: int = 0) -> np.ndarray:
    """A small non-constant float32 volume (X, Y, Z)."""
    rng = np.random.default_rng(seed)
    return (rng.random(tuple(shape)) * 100).astype(np.float32)


def hashes(folder: Path) -> Dict[str, str]:
    """SHA-256 of every file below ``folder`` (relative names)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(Path(folder).rglob("*")) if p.is_file()
    }


def run_cli(capsys, *args: str):
    """Run ``m3dnca`` in-process: (exit code, stdout, stderr lines)."""
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, [line for line in captured.err.splitlines() if line.strip()]


def fast(model: Path) -> list:
    """Options that keep a segmentation cheap: one run, one step per level."""
    return ["--model", str(model), "--runs", "1", "--steps", "1,1"]


FLOAT32_GEOMETRY = ("GetSpacing", "GetOrigin", "GetDirection")


def assert_same_geometry(image: sitk.Image, reference: sitk.Image, what: str) -> None:
    """Same size; spacing, origin, direction equal to float32 precision (NIfTI stores float32)."""
    assert image.GetSize() == reference.GetSize(), what
    for getter in FLOAT32_GEOMETRY:
        found, expected = np.array(getattr(image, getter)()), np.array(getattr(reference, getter)())
        assert np.allclose(found, expected, rtol=1e-6, atol=1e-6), (what, getter, found, expected)


def small_dataset(hippocampus_dir: Path, root: Path, count: int) -> Path:
    """An MSD-style folder of symlinks to the first ``count`` real cases."""
    for sub in ("imagesTr", "labelsTr"):
        (root / sub).mkdir(parents=True)
    for image, label in find_pairs(hippocampus_dir)[:count]:
        (root / "imagesTr" / image.name).symlink_to(image)
        (root / "labelsTr" / label.name).symlink_to(label)
    return root


def quick_settings(**overrides) -> TrainSettings:
    """Hippocampus training settings for a few iterations, validating and checkpointing at the end."""
    base = TrainSettings.for_preset("hippocampus", iterations=8, validate_every=1000,
                                    checkpoint_every=1000, validation_fraction=0.25)
    return replace(base, **overrides)


def turned(image: sitk.Image, degrees: float, axis: int) -> sitk.Image:
    """The same voxels turned about the volume's centre (the header's direction and origin)."""
    angles = [0.0, 0.0, 0.0]
    angles[axis] = math.radians(degrees)
    rotation = sitk.Euler3DTransform((0, 0, 0), *angles)
    matrix = np.asarray(rotation.GetMatrix()).reshape(3, 3)
    centre = np.asarray(image.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in image.GetSize()]))
    out = sitk.Image(image)
    out.SetDirection([float(d) for d in (matrix @ np.asarray(image.GetDirection()).reshape(3, 3)).reshape(-1)])
    out.SetOrigin([float(o) for o in centre + matrix @ (np.asarray(image.GetOrigin()) - centre)])
    return out


def turned_in_grid(image: sitk.Image, degrees: float, axis: int, interpolator: int) -> sitk.Image:
    """The head turned inside the same axis-aligned grid (resampled, as a tilted head is scanned)."""
    return sitk.Resample(turned(image, degrees, axis), image, sitk.Transform(), interpolator, 0, image.GetPixelID())


def shifted(image: sitk.Image, offset) -> sitk.Image:
    out = sitk.Image(image)
    out.SetOrigin([o + d for o, d in zip(image.GetOrigin(), offset)])
    return out


def resampled(image: sitk.Image, spacing, interpolator) -> sitk.Image:
    size = [int(round(n * s / t)) for n, s, t in zip(image.GetSize(), image.GetSpacing(), spacing)]
    return sitk.Resample(image, size, sitk.Transform(), interpolator, image.GetOrigin(), spacing,
                         image.GetDirection(), 0, image.GetPixelID())


def lps(image: sitk.Image) -> sitk.Image:
    return sitk.DICOMOrient(image, "LPS")


def variant(image, label, change):
    """The head and its outline changed alike (labels by nearest neighbour)."""
    if change[0] in (resampled, turned_in_grid):
        return (change[0](image, *change[1:], sitk.sitkLinear),
                change[0](label, *change[1:], sitk.sitkNearestNeighbor))
    return change[0](image, *change[1:]), change[0](label, *change[1:])


HEAD_VARIANTS = {  # name -> change for ``variant``: the head turned (in the header, or resampled in its
    # grid), shifted, resampled, stored LPS
    "yaw+15": (turned, 15.0, 2), "yaw-15": (turned, -15.0, 2), "roll+15": (turned, 15.0, 0),
    "pitch-15": (turned, -15.0, 1), "yaw+15 in grid": (turned_in_grid, 15.0, 2),
    "roll-15 in grid": (turned_in_grid, -15.0, 0), "shift+15": (shifted, (15.0, 15.0, 15.0)),
    "shift-15": (shifted, (-15.0, -15.0, -15.0)), "0.8mm": (resampled, (0.8, 0.8, 0.8)),
    "1.5mm": (resampled, (1.5, 1.5, 1.5)), "anisotropic": (resampled, (0.9, 1.5, 1.2)), "lps": (lps,),
}


def preview_badges(png: Path) -> list:
    """The lights of the coloured badges in a preview PNG, top to bottom (read from its pixels:
    bands of rows in the picture's right margin holding a light's exact colour)."""
    import matplotlib.image

    from nca_core.quality.lights import LIGHT_COLORS

    pixels = matplotlib.image.imread(str(png))[..., :3]
    width = pixels.shape[1]
    margin = pixels[:, int(0.88 * width):int(0.98 * width)]  # right of every picture and colour bar
    badges = []  # (first row, light)
    for light, colour in LIGHT_COLORS.items():
        rgb = np.array([int(colour[i:i + 2], 16) / 255 for i in (1, 3, 5)])
        rows = np.flatnonzero((np.abs(margin - rgb).max(axis=2) < 1.5 / 255).sum(axis=1) >= 20)
        if len(rows):
            starts = rows[np.concatenate([[True], np.diff(rows) > 30])]  # text lines split a badge
            badges += [(int(start), light) for start in starts]
    return [light for _, light in sorted(badges)]


def header_and_data(path: Path):
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + length]), data[8 + length :]


def rewrite(path: Path, metadata_changes: dict, weights=None, rehash: bool = True) -> None:
    """Re-save a model file with changed metadata (and a matching checksum if ``rehash``)."""
    original = load_model(path)
    header, _ = header_and_data(path)
    metadata = dict(header["__metadata__"], **metadata_changes)
    weights = weights if weights is not None else original.weights
    if rehash:
        metadata.pop("sha256")
        metadata["sha256"] = digest(metadata, weights)
    path.write_bytes(save_tensors(weights, metadata=metadata))
