"""``m3dnca import-official``, registered without importing torch (``official`` imports it)."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import NCAError


def cmd_import_official(args: argparse.Namespace) -> int:
    from ..modelfile.bundle import save_model
    from ..modelfile.official import REFERENCE, import_official

    if not Path(args.output).parent.is_dir():
        raise NCAError(f"{args.output}: output folder does not exist")
    labels = [s.strip() for s in args.labels.split(",")] if args.labels else None
    bundle = import_official(args.config, args.models, labels=labels, description=args.description,
                             native_resolution=args.native_resolution)
    save_model(bundle, args.output)
    config = bundle.config
    parameters = sum(v.numel() for v in bundle.weights.values())
    print(f"{args.output}: imported {REFERENCE} model, {config.levels} levels, kernels "
          f"{config.kernel_sizes}, steps {config.steps}, downscale {config.downscale}, "
          f"{parameters} parameters")
    return 0


def add_import_command(commands) -> None:
    """Register ``import-official`` on the CLI's subcommands."""
    parser = commands.add_parser(
        "import-official", help="convert a MECLabTUDA/M3D-NCA checkpoint (config.dt + model<i>.pth) to a model file"
    )
    parser.add_argument("--config", type=Path, required=True, help="the reference run's config.dt")
    parser.add_argument("--models", type=Path, required=True, metavar="DIR",
                        help="folder with model0.pth, model1.pth, ... (e.g. models/epoch_1500)")
    parser.add_argument("-o", "--output", type=Path, required=True, metavar="FILE")
    parser.add_argument("--labels", help="comma-separated class names, one per output channel")
    parser.add_argument("--description", help="text stored in the model file's provenance")
    parser.add_argument("--native-resolution", action="store_true",
                        help="import a model trained on images resized to input_size ('rescale': true)")
    parser.set_defaults(run=cmd_import_official)
