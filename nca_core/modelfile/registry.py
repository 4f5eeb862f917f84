"""Shipped models, addressed by name (``--model hippocampus``), and their torch-free headers
(the Slicer panel's model list). Loading a model (``load``) is the one step that imports torch."""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List

if TYPE_CHECKING:
    from .bundle import ModelBundle

from ..errors import ModelFileError
from .header import MODEL_SUFFIX, ModelHeader, read_model_header

MODEL_DIR_VARIABLE = "M3DNCA_MODEL_DIR"
DEFAULT_MODEL = "hippocampus"


def model_dirs() -> List[Path]:
    """Where shipped models are looked for, first match wins.

    ``$M3DNCA_MODEL_DIR``; ``Resources/Models`` beside the package (source checkout,
    Slicer extension); the copy installed with the package (``pip install .``).
    """
    dirs = []
    if os.environ.get(MODEL_DIR_VARIABLE):
        dirs.append(Path(os.environ[MODEL_DIR_VARIABLE]))
    package = Path(__file__).resolve().parents[1]
    dirs.append(package.parent / "Resources" / "Models")
    dirs.append(package / "shipped_models")
    return [d for d in dirs if d.is_dir()]


def shipped_models() -> Dict[str, Path]:
    """Name -> file of every shipped model."""
    found: Dict[str, Path] = {}
    for folder in reversed(model_dirs()):
        for path in sorted(folder.glob("*" + MODEL_SUFFIX)):
            found[path.name[: -len(MODEL_SUFFIX)]] = path
    return found


def resolve(model: str) -> Path:
    """A model name or a path to a model file."""
    candidate = Path(model).expanduser()
    if candidate.suffix == MODEL_SUFFIX or candidate.exists() or os.sep in model:
        if not candidate.is_file():
            raise ModelFileError(f"{model}: model file not found")
        return candidate
    models = shipped_models()
    if model not in models:
        names = ", ".join(sorted(models)) or "none installed"
        raise ModelFileError(f"unknown model {model!r}; shipped models: {names}")
    return models[model]


def load(model: str) -> "ModelBundle":
    """Resolve and load a verified model (imports torch)."""
    from .bundle import load_model

    return load_model(resolve(model))


def shipped_headers() -> List[ModelHeader]:
    """Every shipped model's header; an unreadable file is listed with the problem."""
    headers = []
    for name, path in sorted(shipped_models().items()):
        try:
            headers.append(read_model_header(path, name))
        except ModelFileError as error:
            headers.append(ModelHeader(name=name, path=str(path), description=f"unreadable: {error}"))
    return headers


def find_header(model: str) -> ModelHeader:
    """The header of a shipped model name or a model file path."""
    for header in shipped_headers():
        if header.name == model:
            return header
    if Path(model).is_file():
        return read_model_header(model)
    names = ", ".join(header.name for header in shipped_headers()) or "none installed"
    raise ModelFileError(f"unknown model {model!r}; shipped models: {names}")
