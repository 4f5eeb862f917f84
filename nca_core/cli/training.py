"""``m3dnca train``, ``evaluate`` and ``calibrate``."""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional

from .options import (add_engine_option, add_side_option, add_threads_option, open_unit_interval, positive_int,
                      positive_number, prior_shifts_list, prior_sizes_list, volume_range)
from ..errors import NCAError
from ..inference.settings import DEVICE_CHOICES
from ..space.imaging import case_name
from ..space.postprocessing import Postprocessing
from ..space.prior import MOVE_GAIN
from ..quality.nqm import DEFAULT_TARGET_DICE
from ..training.data import Case, check_cases_found, find_pairs, load_cases, read_split

if TYPE_CHECKING:
    from ..modelfile.bundle import ModelBundle
    from ..training.evaluate import CaseEvaluation
    from ..training.settings import TrainSettings
    from ..training.trainer import Trainer, TrainingResult

EXIT_OK = 0
TRAINING_EXTRAS = "bash scripts/setup.sh train, or pip install -e '.[train]' in the repository"


def _require(*packages: str) -> None:
    """Stop before any work, in one line, when an optional training package is missing."""
    missing = [name for name in packages if importlib.util.find_spec(name) is None]
    if missing:
        raise NCAError(f"{' and '.join(missing)} not installed: this command needs the training extras "
                       f"({TRAINING_EXTRAS})")


def _selected_cases(args: argparse.Namespace, merge_labels: bool) -> List[Case]:
    pairs = find_pairs(args.data)
    if args.split:
        names = read_split(args.split)[args.subset]
        check_cases_found(names, {case_name(image) for image, _ in pairs}, args.split, args.data)
        pairs = [(image, label) for image, label in pairs if case_name(image) in names]
    if args.limit:
        pairs = pairs[: args.limit]
    if not pairs:
        raise NCAError(f"{args.data}: no cases selected")
    return load_cases(pairs, merge_labels)


def cmd_train(args: argparse.Namespace) -> int:
    from ..training.settings import TrainSettings
    from ..training.trainer import Trainer

    run_dir = Path(args.output)
    saved = run_dir / "settings.json"
    if args.resume and saved.is_file():
        settings = TrainSettings.from_file(saved)
        if args.config:
            settings = _resumed_with(settings, TrainSettings.from_file(args.config, base=settings))
    elif args.config:
        settings = TrainSettings.from_file(args.config)
    else:
        settings = TrainSettings.for_preset(args.preset)
    overrides = {k: v for k, v in (("iterations", args.iterations), ("time_limit_minutes", args.time_limit),
                                   ("augment", args.augment or None)) if v is not None}
    settings = replace(settings, **overrides)
    _require("tensorboard", *(["torchio"] if settings.augment else []))
    initial = None
    if args.init:
        from ..modelfile.registry import load

        initial = load(args.init)
    trainer = Trainer(args.data, run_dir, settings, device=args.device, initial=initial, split_file=args.split)
    result = trainer.fit(resume=args.resume)
    print(f"{result.iterations} iterations, {result.seconds / 60:.1f} min; {_outcome(trainer, result)}")
    return EXIT_OK


def _outcome(trainer: Trainer, result: TrainingResult) -> str:
    """Where the model is and how it validated, or when the first one appears."""
    from ..training.trainer import BEST_MODEL

    model = trainer.run_dir / BEST_MODEL
    settings = trainer.settings
    if not model.is_file():
        return (f"no model yet (the first is saved at the first validation, iteration "
                f"{min(settings.validate_every, settings.iterations)}); continue with --resume and a larger "
                "--time-limit")
    if not trainer.validation_cases:
        return f"no validation cases, so no validation Dice; model (the latest weights): {model}"
    return f"best validation Dice {result.best_dice:.4f} at iteration {result.best_iteration}; model: {model}"


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .batch import prepare_output_folder
    from ..inference.devices import pick_device
    from ..training.evaluate import evaluate_cases, summarise, write_evaluation

    bundle = _model(args)
    cases = _selected_cases(args, merge_labels=bundle.config.output_channels == 1)
    if args.artifacts:
        _require("torchio")
    artifacts = ["none"] + (["noise", "spike", "ghosting"] if args.artifacts else [])
    device = pick_device(args.device)
    prepare_output_folder(Path(args.output))  # before the evaluation, not after it
    rows = evaluate_cases(bundle, cases, _settings(args, device), artifacts=artifacts)
    target = bundle.calibration.target_dice if bundle.calibration else DEFAULT_TARGET_DICE
    summary = summarise(rows, target)
    write_evaluation(rows, summary, args.output)
    print(json.dumps(summary, indent=2))
    return EXIT_OK


def cmd_calibrate(args: argparse.Namespace) -> int:
    from .batch import prepare_output_folder
    from ..inference.devices import pick_device
    from ..modelfile.bundle import save_model
    from ..training.calibrate import choose_postprocessing, fit_calibration, judge, plot_calibration
    from ..training.evaluate import evaluate_cases, summarise, write_evaluation

    _refuse_to_overwrite_the_model(args.model, args.output)
    if args.output.is_dir():
        raise NCAError(f"{args.output}: is a folder; give the calibrated model's file name")
    bundle = _model(args)
    cases = _selected_cases(args, merge_labels=bundle.config.output_channels == 1)
    if not args.no_artifacts:
        _require("torchio")
    artifacts = ["none"] + ([] if args.no_artifacts else ["noise", "spike", "ghosting"])
    device = pick_device(args.device)
    prepare_output_folder(args.output.parent)  # before the evaluation, not after it
    if args.cross_validate > 1 and len(cases) < args.cross_validate:
        raise NCAError(f"cross-validation with {args.cross_validate} folds needs at least {args.cross_validate} "
                       f"cases, found {len(cases)}; calibrate on more cases or pass --cross-validate 1 to skip it")
    rows = evaluate_cases(bundle, cases, _settings(args, device), artifacts=artifacts, postprocessing=Postprocessing())
    bundle.postprocessing, choice = choose_postprocessing(rows, args.largest_component)
    if bundle.postprocessing.largest_component:
        rows = [replace(r, dice=r.dice_largest_component) for r in rows]
    sizes = f", prior sizes {','.join(f'{f:g}' for f in args.prior_sizes)}" if args.prior_sizes else ""
    if args.prior_shifts:
        sizes += f", prior shifts {';'.join(','.join(f'{v:g}' for v in shift) for shift in args.prior_shifts)}"
    description = (f"{len(cases)} cases of {Path(args.data).name}"
                   f"{' (' + args.subset + ' split)' if args.split else ''}, artifacts: {', '.join(artifacts)}, "
                   f"{args.runs} runs{sizes}")
    try:
        calibration = fit_calibration([r.nqm for r in rows], [r.dice for r in rows], args.target_dice, description)
    except ValueError as error:
        raise NCAError(f"calibration failed: {error}") from None
    calibration = replace(calibration, volume_range_ml=_volume_range(args.volume_range, bundle))
    rows = [judge(row, calibration) for row in rows]
    summary = dict(summarise(rows, args.target_dice), calibration=calibration.to_dict(), postprocessing=choice)
    if args.cross_validate > 1:
        summary["held_out"] = _held_out_rates(rows, args.cross_validate, args.target_dice)
    bundle.calibration = calibration
    bundle.provenance = dict(bundle.provenance, calibration_report=summary)
    out = Path(args.output)
    save_model(bundle, out)
    report_dir = out.parent / (out.name + ".calibration")
    write_evaluation(rows, summary, report_dir)
    plot_calibration(rows, calibration, report_dir / "dice_vs_nqm.png")
    print(json.dumps(summary, indent=2))
    print(f"calibrated model: {out}; plot: {report_dir / 'dice_vs_nqm.png'}")
    return EXIT_OK


def _model(args: argparse.Namespace) -> "ModelBundle":
    """The model evaluate and calibrate use: ``--model``, probing its prior at ``--prior-sizes`` and
    ``--prior-shifts`` when given."""
    from ..inference.priorsize import with_prior_probes
    from ..modelfile.registry import load

    bundle = load(args.model)
    if args.prior_sizes is None and args.prior_shifts is None:
        return bundle
    return with_prior_probes(bundle, args.prior_sizes, args.prior_shifts)


def _volume_range(given: Optional[List[float]], bundle: "ModelBundle") -> Optional[List[float]]:
    """The plausible volume range a calibrated model keeps: ``--volume-range`` (``none``: [],
    no range), else the model's own."""
    if given is not None:
        return given or None
    return bundle.calibration.volume_range_ml if bundle.calibration is not None else None


def _refuse_to_overwrite_the_model(model: str, output: Path) -> None:
    """calibrate writes a new model file; its input is never replaced."""
    from ..modelfile.registry import resolve

    if output.exists() and os.path.samefile(resolve(model), output):
        raise NCAError(f"{output}: is the input model (--model {model}); write the calibrated model to another file")


def _held_out_rates(rows: List[CaseEvaluation], folds: int, target_dice: float) -> Dict:
    """The light's detection rates on held-out cases; when a fold cannot be fitted, the reason
    instead (said on stderr; the calibration on all cases is still written)."""
    from ..training.calibrate import cross_validated_rates

    try:
        return cross_validated_rates(rows, folds, target_dice)
    except ValueError as error:
        reason = f"cross-validation with {folds} folds failed: {error}"
        print(f"m3dnca: warning: {reason}; no held-out rates (the light's rates below are on the calibration "
              "cases themselves)", file=sys.stderr)
        return {"folds": folds, "failed": reason}


def _settings(args: argparse.Namespace, device: str):
    """The segmentation settings of evaluate/calibrate (the one settings type of segment)."""
    from ..inference.settings import SegmentSettings

    return SegmentSettings.parse(model=args.model, runs=args.runs, seed=args.seed, device=device, side=args.side,
                                 engine=args.engine)


def _add_case_selection(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", type=Path, required=True, help="MSD-style folder")
    parser.add_argument("--model", required=True, help="shipped model name or model file")
    parser.add_argument("--split", type=Path, help="a run's split.json to pick cases from")
    parser.add_argument("--subset", default="validation", choices=["train", "validation"])
    parser.add_argument("--limit", type=positive_int, metavar="N", help="use only the first N cases")
    parser.add_argument("--runs", type=positive_int, default=10, help="pseudo-ensemble size (default 10)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", choices=DEVICE_CHOICES, default="auto")
    add_side_option(parser)
    add_engine_option(parser)
    add_threads_option(parser)
    parser.add_argument("--prior-sizes", type=prior_sizes_list, metavar="F,F,...",
                        help="a model with a location prior: the spread factors to try on each scan (the "
                             "lowest NQM wins), e.g. 1,1.15,1.3,1.5; calibrate stores them in its model")
    parser.add_argument("--prior-shifts", type=prior_shifts_list, metavar="X,Y,Z;...",
                        help="a model with a location prior: the moves of its centre to try on each scan, in "
                             "fractions of the grid, one of them 0,0,0, before the sizes (a move is kept when its "
                             f"NQM is under {MOVE_GAIN:g}x the own place's), e.g. --prior-shifts='0,-0.15,0;0,0,0;0,0.15,0'; "
                             "calibrate stores them in its model")
    parser.add_argument("-o", "--output", type=Path, required=True)


# What a checkpoint holds (the weights, the optimiser's state) or its split fixes: kept on resume.
KEPT_ON_RESUME = {
    "model": lambda settings: settings.config,
    "preprocessing": lambda settings: settings.given_preprocessing,
    "merge_labels": lambda settings: settings.merge_labels,
    "learning_rate": lambda settings: settings.learning_rate,
    "betas": lambda settings: list(settings.betas),
    "lr_gamma": lambda settings: settings.lr_gamma,
    "validation_fraction": lambda settings: settings.validation_fraction,
    "standardise_intensity": lambda settings: settings.standardise_intensity,
}


def _resumed_with(saved: "TrainSettings", given: "TrainSettings") -> "TrainSettings":
    """``given`` (``--config`` laid over the run's settings) for a run resumed from ``saved``
    settings; prints which change.

    Raises:
        NCAError: ``given`` changes what the checkpoint or the run's split fixes.
    """
    for name, value in KEPT_ON_RESUME.items():
        if value(given) != value(saved):
            raise NCAError(f"--config changes {name}, which a resumed run keeps; start a new run in "
                           "another folder for that")
    changed = [name for name, value in saved.to_dict().items() if given.to_dict()[name] != value]
    if changed:
        print(f"resuming with changed settings: {', '.join(changed)}")
    return given


def add_training_commands(commands) -> None:
    train = commands.add_parser("train", help="train a model on an MSD-style dataset")
    train.add_argument("--data", type=Path, required=True)
    source = train.add_mutually_exclusive_group()
    source.add_argument("--preset", default="hippocampus")
    source.add_argument("--config", type=Path, help="training settings JSON (see settings.json of a run); with "
                        "--resume, the run goes on with these (same model)")
    train.add_argument("-o", "--output", type=Path, required=True, metavar="RUN_DIR")
    train.add_argument("--iterations", type=positive_int)
    train.add_argument("--time-limit", type=positive_number, metavar="MINUTES",
                       help="stop (resumably) after this much training time in all, counting earlier sittings")
    train.add_argument("--augment", action="store_true", help="TorchIO augmentation: small rotation and scaling, gamma, bias field, noise")
    train.add_argument("--resume", action="store_true", help="continue the run in RUN_DIR")
    train.add_argument("--init", metavar="MODEL", help="start from this model's weights (fine-tuning)")
    train.add_argument("--split", type=Path, help="reuse another run's split.json")
    train.add_argument("--device", choices=DEVICE_CHOICES, default="auto")
    train.set_defaults(run=cmd_train)

    evaluate = commands.add_parser("evaluate", help="Dice, NQM and light per case; CSV + JSON")
    _add_case_selection(evaluate)
    evaluate.add_argument("--artifacts", action="store_true", help="also noise, spike and ghosting versions")
    evaluate.set_defaults(run=cmd_evaluate)

    calibrate = commands.add_parser("calibrate", help="fit Dice ~ NQM and store it in a model file")
    _add_case_selection(calibrate)
    calibrate.add_argument("--target-dice", type=open_unit_interval, default=DEFAULT_TARGET_DICE)
    calibrate.add_argument("--no-artifacts", action="store_true", help="clean images only")
    calibrate.add_argument("--largest-component", choices=["auto", "yes", "no"], default="auto",
                           help="keep only the largest foreground component (auto: if it raises the clean "
                                "cases' mean Dice)")
    calibrate.add_argument("--cross-validate", type=int, default=5, metavar="K",
                           help="also report the light's detection rates on held-out cases, K folds by case")
    calibrate.add_argument("--volume-range", type=volume_range, metavar="LOW,HIGH",
                           help="the structure's plausible volume in mL, e.g. 5,300 for a prostate: an outline "
                                "outside it is red whatever its NQM; none: no range (default: the model's own, if any)")
    calibrate.set_defaults(run=cmd_calibrate)
