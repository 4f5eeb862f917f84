"""argparse ``type=`` converters shared by the command-line tools: a bad value is a usage error."""
from __future__ import annotations

import argparse
import math
from typing import Callable, List, TypeVar

from .config import MAX_STEPS

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
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError("steps are comma-separated integers, e.g. 10,10") from None
    if any(not 0 <= v <= MAX_STEPS for v in values):
        raise argparse.ArgumentTypeError(f"steps must be between 0 and {MAX_STEPS}")
    return values
