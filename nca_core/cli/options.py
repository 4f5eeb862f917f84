"""argparse ``type=`` converters shared by the command-line tools: a bad value is a usage error."""
from __future__ import annotations

import argparse
import math
from typing import Callable, List, TypeVar

from ..errors import NCAError
from ..inference.settings import ENGINE_CHOICES, LOCATE_CHOICES, SIDE_CHOICES, parse_steps
from ..quality.nqm import volume_range_problem


T = TypeVar("T")


def _within(convert: Callable[[str], T], is_valid: Callable[[T], bool], requirement: str) -> Callable[[str], T]:
    """A converter that refuses values for which ``is_valid`` is false, saying ``requirement``."""
    def parse(text: str) -> T:
        value = convert(text)
        if not is_valid(value):
            raise argparse.ArgumentTypeError(requirement)
        return value

    parse.__name__ = convert.__name__  # argparse: "invalid int value: 'abc'", as for type=int
    return parse


positive_int = _within(int, lambda value: value >= 1, "must be at least 1")
channel_index = _within(int, lambda value: value >= 0, "must be 0 or more")
positive_number = _within(float, lambda value: value > 0 and math.isfinite(value), "must be a number greater than 0")
open_unit_interval = _within(float, lambda value: 0.0 < value < 1.0, "must be in (0, 1)")
fire_rate_option = _within(float, lambda value: 0.0 <= value < 1.0, "must be in [0, 1)")


def add_threads_option(parser: argparse.ArgumentParser) -> None:
    """``--threads N``, for every command that runs inference (see ``threads.use_threads``)."""
    parser.add_argument("--threads", type=positive_int, default=None, metavar="N",
                        help="CPU threads (default: one per usable core)")


def steps_list(text: str) -> List[int]:
    """``--steps``: parsed as everywhere else (``options.parse_steps``)."""
    try:
        steps = parse_steps(text)
    except NCAError as error:
        raise argparse.ArgumentTypeError(str(error).replace("--steps ", "steps ", 1)) from None
    if steps is None:
        raise argparse.ArgumentTypeError("steps are comma-separated integers, e.g. 10,10")
    return steps


def prior_sizes_list(text: str) -> List[float]:
    """``--prior-sizes``: numbers separated by commas (checked as spread factors where they are
    stored, ``priorsize.with_prior_probes``)."""
    try:
        return [float(part) for part in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError("sizes are numbers separated by commas, e.g. 1,1.15,1.3,1.5") from None


def prior_shifts_list(text: str) -> List[List[float]]:
    """``--prior-shifts``: moves of three numbers, x,y,z, separated by semicolons (checked as
    centre moves where they are stored, ``priorsize.with_prior_probes``)."""
    try:
        shifts = [[float(v) for v in part.split(",")] for part in text.split(";") if part.strip()]
    except ValueError:
        shifts = []
    if not shifts or any(len(shift) != 3 for shift in shifts):
        raise argparse.ArgumentTypeError("shifts are x,y,z moves separated by semicolons, e.g. '0,-0.1,0;0,0,0'")
    return shifts


def volume_range(text: str) -> List[float]:
    """``--volume-range``: two numbers in mL, low and high (checked by ``nqm.volume_range_problem``);
    ``none``: no range ([])."""
    if text.strip().lower() == "none":
        return []
    try:
        values = [float(part) for part in text.replace(",", " ").split()]
    except ValueError:
        raise argparse.ArgumentTypeError("a volume range is two numbers in mL, low and high, e.g. 5,300") from None
    problem = volume_range_problem(values)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return values


def add_side_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--side", choices=SIDE_CHOICES, default="auto",
                        help="which hippocampus a crop shows (auto: tried both ways, the lower NQM wins); "
                             "for a whole head, the side to segment (auto: both)")


def add_locate_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--locate", choices=LOCATE_CHOICES, default="auto",
                        help="head: find both hippocampi in a whole-head T1; none: segment the volume as it "
                             "is; auto: head when the volume is much larger than a training crop")


def add_engine_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--engine", choices=ENGINE_CHOICES, default="auto",
                        help="how the NCA steps run: fused (compiled CPU kernels, needs numba), torch, or "
                             "auto (fused on the CPU where numba is installed)")
