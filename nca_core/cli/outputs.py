"""A case's output files: the names, the atomic write of all of them (the report last), and
whether a case is done (its report and outputs complete)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Dict

from ..atomic import atomic_group
from ..errors import NCAError
from ..space.imaging import Volume, output_reason, to_image, volume_suffix, write_image

if TYPE_CHECKING:  # the names and ``is_done`` serve before torch loads
    from ..inference.result import SegmentationResult


def output_paths(outdir: Path, case: str) -> Dict[str, Path]:
    names = {
        "segmentation": "seg.nii.gz", "variance": "variance.nii.gz", "probability": "prob.nii.gz",
        "preview": "preview.png", "report": "report.json",
    }
    return {key: Path(outdir) / f"{case}_{suffix}" for key, suffix in names.items()}


def write_outputs(
    volume: Volume,
    result: SegmentationResult,
    outdir: Path,
    save_probability: bool = False,
    preview: bool = False,
) -> Dict[str, Path]:
    """Write the case's files: all to temporary names first, renamed only when every
    one was written (the report last), so a failure leaves none of them behind."""
    paths = output_paths(outdir, volume.name)
    ensemble = result.ensemble
    images = {"segmentation": ensemble.labels, "variance": ensemble.variance_map}
    if save_probability:
        images["probability"] = ensemble.foreground_probability
    written = {key: paths[key] for key in list(images) + (["preview"] if preview else []) + ["report"]}
    target = paths["report"]
    try:
        with atomic_group() as stage:
            for key, array in images.items():
                target = paths[key]
                write_image(to_image(array, volume.reference), stage(target, volume_suffix(target)))
            if preview:
                from .preview import save_preview

                target = paths["preview"]
                save_preview(volume, result, Path(stage(target, ".png")))
            target = paths["report"]
            report = dict(result.report(), case=volume.name, input=volume.source,
                          outputs={k: str(v) for k, v in written.items() if k != "report"})
            Path(stage(target)).write_text(json.dumps(report, indent=2), encoding="utf-8")
    except (RuntimeError, OSError) as error:
        named = getattr(error, "filename", None)  # renaming into place names the file that failed
        target = Path(named) if named and Path(named) in written.values() else target
        raise NCAError(f"{target}: cannot write output ({output_reason(error)})") from None
    return written


def is_done(report: Path) -> bool:
    """Whether a case was finished: its report (written last) parses and every output it lists
    is in the report's folder. Outputs without such a report are left from an interrupted run
    and are redone."""
    try:
        outputs = json.loads(report.read_text(encoding="utf-8"))["outputs"]
        return bool(outputs) and all((report.parent / Path(listed).name).is_file() for listed in outputs.values())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False
