"""Labelled datasets: the Medical Segmentation Decathlon layout or image/label folders."""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Collection, Dict, List, Sequence, Tuple

import numpy as np

from ..errors import NCAError
from ..space.grid import ModelGrid
from ..space.imaging import Volume, case_name, is_volume_file, read_volume
from ..space.preprocessing import Preprocessing

FOLDER_PAIRS = (("imagesTr", "labelsTr"), ("images", "labels"))
# The advice for a 4D or vector volume: the training commands have no --channel.
SINGLE_CHANNEL_ONLY = "training reads single-channel 3D volumes: save the one to use (0 to {last}) as a 3D file"


@dataclass
class Case:
    """One labelled volume, arrays in (X, Y, Z) order."""

    name: str
    image: np.ndarray  # float32 raw intensities
    label: np.ndarray  # uint8, 0 = background
    volume: Volume  # geometry of the image

    def grid(self, preprocessing: Preprocessing) -> ModelGrid:
        """The mapping between this case's grid and a model's."""
        return ModelGrid(self.image.shape, self.volume.spacing, self.volume.reference.GetDirection(), preprocessing)

    def on_model_grid(self, preprocessing: Preprocessing) -> "Case":
        """This case's image and label on the model's grid (the geometry stays the original's)."""
        grid = self.grid(preprocessing)
        if not grid.changes_grid:
            return self
        return Case(self.name, grid.to_model(self.image), grid.label_to_model(self.label), self.volume)


def find_pairs(root: Path) -> List[Tuple[Path, Path]]:
    """(image, label) paths from dataset.json (MSD) or from matching folder names."""
    root = Path(root)
    manifest = root / "dataset.json"
    if manifest.is_file():
        pairs = [(i, l) for i, l in _manifest_pairs(manifest) if i.is_file() and l.is_file()]
        if pairs:
            return pairs
    for images, labels in FOLDER_PAIRS:
        if (root / images).is_dir() and (root / labels).is_dir():
            label_files = {case_name(p): p for p in (root / labels).iterdir() if is_volume_file(p)}
            pairs = [
                (p, label_files[case_name(p)])
                for p in sorted((root / images).iterdir())
                if is_volume_file(p) and case_name(p) in label_files
            ]
            if pairs:
                return pairs
    raise NCAError(
        f"{root}: no labelled cases found (expected dataset.json, imagesTr/+labelsTr/ "
        "or images/+labels/ with matching file names)"
    )


def _manifest_pairs(manifest: Path) -> List[Tuple[Path, Path]]:
    """The (image, label) paths a dataset.json lists under 'training'; NCAError if malformed."""
    try:
        content = json.loads(manifest.read_text())
    except ValueError as error:
        raise NCAError(f"{manifest}: not valid JSON ({error})") from None
    if not isinstance(content, dict):
        raise NCAError(f"{manifest}: must be a JSON object with a 'training' list")
    entries = content.get("training", [])
    if not isinstance(entries, list):
        raise NCAError(f"{manifest}: 'training' must be a list of {{\"image\": ..., \"label\": ...}} entries")
    for index, entry in enumerate(entries):
        if not (isinstance(entry, dict) and all(isinstance(entry.get(key), str) for key in ("image", "label"))):
            raise NCAError(f"{manifest}: training entry {index} needs 'image' and 'label' paths, "
                           f"found {json.dumps(entry)[:80]}")
    return [(manifest.parent / e["image"], manifest.parent / e["label"]) for e in entries]


def load_case(image_path: Path, label_path: Path, merge_labels: bool) -> Case:
    volume = read_volume(image_path, choose_channel=SINGLE_CHANNEL_ONLY)
    label = read_volume(label_path, choose_channel=SINGLE_CHANNEL_ONLY).array
    if label.shape != volume.array.shape:
        raise NCAError(f"{label_path}: label shape {label.shape} != image shape {volume.array.shape}")
    label = _label_map(label, label_path)
    if merge_labels:
        label = (label > 0).astype(np.uint8)
    return Case(name=volume.name, image=volume.array, label=label, volume=volume)


def _label_map(values: np.ndarray, path: Path) -> np.ndarray:
    """The label volume as uint8 class numbers; NCAError if it holds anything else
    (an intensity image given as a label, say)."""
    whole = np.rint(values)
    is_whole = np.array_equal(whole, values)
    if not is_whole or whole.min() < 0 or whole.max() > 255:
        raise NCAError(f"{path}: not a label map (values must be whole numbers 0 to 255; found "
                       f"{float(values.min()):g} to {float(values.max()):g}, "
                       f"{'all whole' if is_whole else 'fractions included'})")
    return whole.astype(np.uint8)


def load_cases(pairs: Sequence[Tuple[Path, Path]], merge_labels: bool) -> List[Case]:
    return [load_case(i, l, merge_labels) for i, l in pairs]


def split_names(names: Sequence[str], validation_fraction: float, seed: int) -> Dict[str, List[str]]:
    """A reproducible train/validation split of case names."""
    shuffled = sorted(names)
    random.Random(seed).shuffle(shuffled)
    count = max(1, round(len(shuffled) * validation_fraction)) if validation_fraction > 0 else 0
    return {"train": sorted(shuffled[count:]), "validation": sorted(shuffled[:count])}


SPLIT_LISTS = ("train", "validation")


def read_split(path: Path) -> Dict[str, List[str]]:
    """A run's split.json: 'train' and 'validation' lists of case names (and notes)."""
    try:
        split = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise NCAError(f"{path}: not a split file ({error})") from None
    problem = _split_problem(split)
    if problem:
        raise NCAError(f"{path}: not a split file with 'train' and 'validation' lists of case names ({problem})")
    return split


def _split_problem(split: Any) -> str:
    """What keeps ``split`` from being a split, or '' when it is one."""
    if not isinstance(split, dict):
        return "the file holds no JSON object"
    for key in SPLIT_LISTS:
        names = split.get(key)
        if not isinstance(names, list):
            return f"'{key}' is {'missing' if names is None else 'not a list'}"
        if not all(isinstance(name, str) for name in names):
            return f"'{key}' holds something other than names"
    return ""


def check_cases_found(names: Sequence[str], found: Collection[str], split_path: Path, data_dir: Path) -> None:
    """Refuse a split that names cases the data folder lacks."""
    missing = [name for name in names if name not in found]
    if missing:
        raise NCAError(f"{split_path}: cases not found in {data_dir}: {missing[:5]}")


def one_hot(label: np.ndarray, classes: int) -> np.ndarray:
    """(K, X, Y, Z) float32 targets for classes 1..K."""
    return np.stack([(label == k + 1) for k in range(classes)]).astype(np.float32)
