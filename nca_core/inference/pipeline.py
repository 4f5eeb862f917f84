"""Segment one volume with a model: the single entry point behind the CLI and Slicer."""
from __future__ import annotations

import time
from dataclasses import replace
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

from ..network.config import NCAConfig
from .devices import pick_device
from .ensemble import EnsembleResult, ProgressCallback, RunCounter, RunTally, combine, label_map, run_ensemble
from ..errors import InputImageError, NCAError
from ..space.grid import ModelGrid, spacing_text
from ..space.imaging import check_not_constant, head_scan, intensity_array
from .limits import check_fits, check_memory, inference_bytes, size_text
from ..space.locate import Registration, StepProgress
from ..modelfile.bundle import ModelBundle
from .settings import SegmentSettings
from ..space.postprocessing import Postprocessing
from ..space.prior import NO_SHIFT
from ..quality.nqm import Quality, assess_segmentation
from ..space.regions import SIDES, left_right_axis
from .result import SegmentationResult, SideResult
from .priorsize import Shift, at_prior, checked_if_moved, choose_prior, probe_count
from .route import locates_hippocampi
from .sides import PROBE_RUNS, choose_side, label_names, mirror
from .volumes import MM3_PER_ML, VolumeSummary, estimated_tiv_ml, run_counter, side_volume, voxel_volume_mm3
from .wholehead import locate_regions, overall_quality, segment_regions


def segment_array(
    array: np.ndarray,
    bundle: ModelBundle,
    settings: SegmentSettings,
    progress: Optional[ProgressCallback] = None,
    should_cancel: Optional[Callable[[], bool]] = None,
    spacing: Optional[Sequence[float]] = None,
    direction: Optional[Sequence[float]] = None,
) -> SegmentationResult:
    """Run the pseudo-ensemble on a raw (X, Y, Z) crop and judge its quality.

    ``settings`` (checked where they were made) are checked here against the model only.
    ``spacing`` (mm) and ``direction`` (9 cosines, ITK/LPS) are the volume's geometry: with
    them it is turned and resampled to the model's training grid and the outputs mapped back
    (NQM is of the model's grid, where it was calibrated). Without them the volume is taken
    to be on the model's grid. ``settings.side`` (auto, left, right) is the side the crop shows:
    a side the model did not learn is mirrored left-right for it (see ``sides``). Raises
    NCAError subclasses (without a file name) for inputs the model cannot take.
    """
    settings.check(bundle.config.levels)
    return _segment_crop(array, bundle, settings, progress, should_cancel, spacing, direction)


def _segment_crop(array: np.ndarray, bundle: ModelBundle, settings: SegmentSettings,
                  progress: Optional[ProgressCallback], should_cancel: Optional[Callable[[], bool]],
                  spacing: Optional[Sequence[float]], direction: Optional[Sequence[float]]) -> SegmentationResult:
    """``segment_array`` once the settings are checked against the model."""
    runs = settings.runs
    array = intensity_array(array, "")
    check_not_constant(array, "")
    grid = ModelGrid(array.shape, spacing, direction, bundle.preprocessing)
    shape = grid.model_shape
    try:
        check_fits(shape, bundle.config, bundle.preprocessing)
    except InputImageError as error:
        if bundle.preprocessing.relative_to_field_of_view:
            raise NCAError(f"the model's grid {list(shape)} is too small for its own levels; the model file is "
                           "broken") from None
        if not grid.resampled:
            raise
        raise InputImageError(f"{error} (after resampling to the model's {spacing_text(grid.change.model_spacing)} "
                              "grid)") from None
    started = time.perf_counter()
    device = pick_device(settings.device)
    check_memory(shape, bundle.config, bundle.preprocessing, device)
    model_array = grid.to_model(array)
    axis = left_right_axis(grid.code)

    classes = len(bundle.config.labels)

    def ensemble_of(volume: np.ndarray, count: int, mirrored: bool, prior: Tuple[Shift, float], first: int = 0,
                    on_progress: Optional[ProgressCallback] = None) -> EnsembleResult:
        counter = run_counter(lambda run: run_labels_on_input(run, grid, bundle.postprocessing, axis, mirrored),
                              classes)
        shift, factor = prior
        return _ensemble(at_prior(bundle, factor, shift), volume, shape, runs=count, seed=settings.seed,
                         fire_rate=settings.fire_rate, steps=settings.steps, device=device, progress=on_progress,
                         should_cancel=should_cancel, first_run=first, count_run=counter, engine=settings.engine)

    probes: Dict[Tuple[bool, Tuple[Shift, float]], EnsembleResult] = {}
    tally = RunTally(progress, total_runs(bundle, settings.side, runs))

    def probe(mirrored: bool, prior: Tuple[Shift, float]) -> float:
        if (mirrored, prior) not in probes:
            probes[mirrored, prior] = ensemble_of(mirror(model_array, axis) if mirrored else model_array,
                                                  PROBE_RUNS, mirrored, prior, on_progress=tally.next_part())
        return probes[mirrored, prior].nqm

    prior_choice = choose_prior(bundle, lambda shift, factor: probe(False, (shift, factor)))
    prior = (NO_SHIFT, 1.0) if prior_choice is None else (prior_choice.shift, prior_choice.factor)
    choice = choose_side(settings.side, bundle.preprocessing.side, lambda mirrored: probe(mirrored, prior))
    view = mirror(model_array, axis) if choice.mirrored else model_array
    probed = probes.get((choice.mirrored, prior))
    if probed is not None and runs == PROBE_RUNS:
        ensemble = probed
    elif probed is not None and runs > PROBE_RUNS:  # the probe's runs are the ensemble's first ones
        rest = ensemble_of(view, runs - PROBE_RUNS, choice.mirrored, prior, PROBE_RUNS, tally.next_part())
        ensemble = combine(probed, rest, bundle.postprocessing)
    else:
        ensemble = ensemble_of(view, runs, choice.mirrored, prior, 0, tally.next_part())
    if choice.mirrored:
        ensemble = replace(ensemble, probability=mirror(ensemble.probability, axis), std=mirror(ensemble.std, axis),
                           labels=mirror(ensemble.labels, axis))
    ensemble = on_input_grid(ensemble, grid, bundle.postprocessing)
    known_spacing = spacing if spacing is not None else bundle.preprocessing.spacing
    voxel_mm3 = voxel_volume_mm3(known_spacing if known_spacing is not None else (1, 1, 1))
    outlined_ml = np.count_nonzero(ensemble.labels) * voxel_mm3 / MM3_PER_ML
    quality = judge(ensemble, bundle, runs, settings.fire_rate, None if known_spacing is None else outlined_ml)
    quality = checked_if_moved(quality, prior_choice, grid.code)
    values = list(range(1, classes + 1))
    volume = side_volume(choice.side, quality.light, ensemble.labels, values,
                         list(label_names(bundle.config.labels, choice.side).values()), voxel_mm3, ensemble.run_counts,
                         probability_sums=ensemble.probability.reshape(classes, -1).sum(axis=1, dtype=np.float64))
    return SegmentationResult(
        ensemble=ensemble,
        quality=quality,
        model_name=settings.model,
        device=device,
        seconds=time.perf_counter() - started,
        largest_component_only=bundle.postprocessing.largest_component,
        grid=grid.change,
        input_spacing=None if spacing is None else tuple(spacing),
        sides=[SideResult(choice.side, choice.reason, ensemble.nqm, quality,
                          int(np.count_nonzero(ensemble.labels)), None, values, volume)],
        labels=label_names(bundle.config.labels, choice.side),
        volumes=VolumeSummary((volume,)),
        warns_of_thick_slices=not bundle.preprocessing.relative_to_field_of_view,
        prior=prior_choice,
    )


def segment_image(
    image: sitk.Image,
    bundle: ModelBundle,
    settings: SegmentSettings,
    progress: Optional[StepProgress] = None,
    should_cancel: Optional[Callable[[], bool]] = None,
    registration: Optional[Registration] = None,
) -> SegmentationResult:
    """Segment a scalar volume with its geometry: the one entry point from an image.

    ``settings`` (checked where they were made) are checked here against the model only.
    ``settings.locate``: ``head`` finds both hippocampi in a whole-head scan and segments each
    side's box; ``none`` takes the volume as one crop; ``auto`` picks ``head`` for a volume much
    larger than a training crop. A field-of-view model (prostate) always takes the whole volume.
    ``settings.side`` is the crop's side (auto probes), or for a head the side to segment (auto:
    both). ``progress(step, done, total)`` reports each step. ``registration``: the head's,
    when it was registered already (``head_scan(image)`` onto the head atlas, e.g. while the
    engine loaded).
    """
    settings.check(bundle.config.levels)
    if not locates_hippocampi(image, settings.locate, bundle.preprocessing):
        return _segment_crop(
            sitk.GetArrayFromImage(image).transpose(2, 1, 0), bundle, settings,
            (lambda done, total: progress("segmentation", done, total)) if progress else None, should_cancel,
            image.GetSpacing(), image.GetDirection())
    runs, side = settings.runs, settings.side
    started = time.perf_counter()
    device = pick_device(settings.device)
    scan = head_scan(image)
    located = locate_regions(scan, bundle, SIDES if side == "auto" else (side,), progress, registration)
    regions, report = located.regions, located.registration
    shape = regions[0].shape
    check_fits(shape, bundle.config, bundle.preprocessing)
    check_memory(shape, bundle.config, bundle.preprocessing, device)

    def ensemble_of(crop: np.ndarray, _side: str, on_progress: Optional[ProgressCallback],
                    count_run: RunCounter) -> EnsembleResult:
        return _ensemble(bundle, crop, shape, runs=runs, seed=settings.seed, fire_rate=settings.fire_rate,
                         steps=settings.steps, device=device, progress=on_progress, should_cancel=should_cancel,
                         count_run=count_run, engine=settings.engine)

    etiv = estimated_tiv_ml(report["determinant"])
    head = segment_regions(scan, regions, bundle, ensemble_of,
                           lambda ensemble, volume_ml: judge(ensemble, bundle, runs, settings.fire_rate, volume_ml),
                           progress, etiv)
    return SegmentationResult(
        ensemble=head.combined,
        quality=overall_quality(head.sides),
        model_name=settings.model,
        device=device,
        seconds=time.perf_counter() - started + (0.0 if registration is None else registration.seconds),
        largest_component_only=bundle.postprocessing.largest_component,
        sides=head.sides,
        labels=head.labels,
        registration=report,
        input_spacing=tuple(image.GetSpacing()),
        volumes=VolumeSummary(tuple(side.volume for side in head.sides), etiv),
    )


def total_runs(bundle: ModelBundle, side: str, runs: int) -> int:
    """How many runs a crop (or a field-of-view scan) takes, its probes' included: ``PROBE_RUNS``
    for each place and size of the prior to probe (``priorsize.probe_count``), else for both
    orientations when its side is to be found; the chosen probe's runs are the ensemble's first ones."""
    prior_probes = probe_count(bundle.preprocessing.location_prior)
    probes = prior_probes or (2 if side == "auto" and bundle.preprocessing.side is not None else 0)
    return runs + PROBE_RUNS * probes - (PROBE_RUNS if probes and runs >= PROBE_RUNS else 0)


def _ensemble(bundle: ModelBundle, array: np.ndarray, shape: Sequence[int], **options: Any) -> EnsembleResult:
    """``run_ensemble`` with the model's preprocessing and postprocessing; out of memory is one line."""
    try:
        return run_ensemble(bundle.build(), array, bundle.preprocessing, postprocessing=bundle.postprocessing,
                            **options)
    except (MemoryError, RuntimeError) as error:
        if not _out_of_memory(error):
            raise
        need = size_text(inference_bytes(shape, bundle.config, bundle.preprocessing))
        raise NCAError(f"ran out of memory (estimated need {need}); crop or downsample the volume") from None


def on_input_grid(ensemble: EnsembleResult, grid: ModelGrid, postprocessing: Postprocessing) -> EnsembleResult:
    """The ensemble's outputs mapped from the model's grid back to the input's (labels cleaned
    with ``postprocessing`` where they are recomputed); NQM unchanged."""
    if not grid.changes_grid:
        return ensemble
    probability = grid.channels_to_input(ensemble.probability)
    # Turned axes move the labels exactly; resampled ones are thresholded anew, as on the model grid.
    labels = postprocessing.apply(label_map(probability)) if grid.resampled else grid.to_input(ensemble.labels)
    return replace(ensemble, probability=probability, std=grid.channels_to_input(ensemble.std), labels=labels)


def run_labels_on_input(probability: np.ndarray, grid: ModelGrid, postprocessing: Postprocessing, axis: int,
                        mirrored: bool) -> np.ndarray:
    """One run's label map as ``on_input_grid`` makes the ensemble's, for counting its voxels:
    resampled to the input's grid where the input was resampled (turned axes move voxels without
    changing their count, so there the model grid's map counts the same)."""
    if not grid.resampled:
        return postprocessing.apply(label_map(probability))
    on_model_grid = mirror(probability, axis) if mirrored else probability
    return postprocessing.apply(label_map(grid.channels_to_input(on_model_grid)))


def judge(ensemble: EnsembleResult, bundle: ModelBundle, runs: int, fire_rate: Optional[float] = None,
          volume_ml: Optional[float] = None) -> Quality:
    """The traffic light of one pseudo-ensemble run with these options; ``volume_ml``: its outline's
    volume on the scan's own voxels (None: unknown, so not judged)."""
    return assess_segmentation(ensemble.nqm, int(np.count_nonzero(ensemble.labels)),
                               runs_can_disagree(bundle.config, runs, fire_rate), bundle.calibration, volume_ml)


def runs_can_disagree(config: NCAConfig, runs: int, fire_rate: Optional[float]) -> bool:
    """Whether the pseudo-ensemble is stochastic at all: 2+ runs whose cells may skip a step."""
    return runs >= 2 and (config.fire_rate if fire_rate is None else fire_rate) > 0


def _out_of_memory(error: BaseException) -> bool:
    text = str(error)
    return isinstance(error, MemoryError) or "out of memory" in text or "can't allocate memory" in text
