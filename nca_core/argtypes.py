"""argparse ``type=`` converters shared by the command-line tools: a bad value is a usage error."""
from __future__ import annotations

import argparse
import math
from typing import List

from .config import MAX_STEPS


def steps_list(text: str) -> List[int]:
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError("steps are comma-separated integers, e.g. 10,10") from None
    if any(not 0 <= v <= MAX_STEPS for v in values):
        raise argparse.ArgumentTypeError(f"steps must be between 0 and {MAX_STEPS}")
    return values


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def positive_number(text: str) -> float:
    value = float(text)
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError("must be a number greater than 0")
    return value


def open_unit_interval(text: str) -> float:
    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError("must be in (0, 1)")
    return value


def channel_index(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def fire_rate_option(text: str) -> float:
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError("must be in [0, 1)")
    return value
