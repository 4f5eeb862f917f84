"""Where and how large the structure is in this scan: probing the location prior's place and size.

A model with a location prior reads the structure's place and extent off the prior more than off
the image (docs/models/prostate-record.md, "What the outlines get wrong"): a gland that lies off the
field of view's centre, as behind an endorectal coil, is missed, and a large gland is cut to a
typical one's size. A model whose prior lists ``shifts`` (centre moves, stored by ``m3dnca
calibrate --prior-shifts``) or ``sizes`` (spread factors, ``--prior-sizes``) is run a few times
at each: first every shift at the prior's own size, then every size at the chosen shift. The size
whose runs agree most (the lowest NQM, as the side probe decides a crop's side) is used; a shift
is used only when its runs agree clearly more than at the prior's own place (its NQM under
``MOVE_GAIN`` times the own place's), because on a hospital whose glands lie where the prior
says, the runs at a wrong place can agree about as well (docs/models/prostate-record.md, "Prior places
probed on each scan"). The chosen probe's runs become the ensemble's first runs. A moved centre
makes the light at most yellow (``checked_if_moved``): there the runs can agree on the wrong structure.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Dict, Optional, Sequence, Tuple

from ..errors import NCAError
from ..modelfile.bundle import ModelBundle
from ..quality.nqm import Quality, at_least
from ..space.prior import MOVE_GAIN, NO_SHIFT, prior_shifts, prior_sizes, sized_prior, with_probes
from .sides import PROBE_RUNS

Shift = Tuple[float, float, float]
# An orientation code's letters (ITK: the direction each grid axis runs towards), in words.
DIRECTIONS = {"L": "left", "R": "right", "A": "anterior", "P": "posterior", "S": "superior", "I": "inferior"}
OPPOSITE = {"L": "R", "R": "L", "A": "P", "P": "A", "S": "I", "I": "S"}


@dataclass(frozen=True)
class PriorChoice:
    """The prior used for a scan: its spread factor, the move of its centre, and why."""

    factor: float
    shift: Shift
    reason: str


def probe_count(prior: Optional[Dict]) -> int:
    """How many probes a scan takes: every shift at the prior's own size (its one size when it
    has one), then every size at the chosen shift (its own size, probed already, not again); 0
    when there is nothing to probe."""
    if prior is None:
        return 0
    shifts, sizes = len(prior_shifts(prior)), prior_sizes(prior)
    at_own_size = shifts if shifts > 1 else 0
    resized = len(sizes) - (1 if at_own_size and 1.0 in sizes else 0) if len(sizes) > 1 else 0
    return at_own_size + resized


def choose_prior(bundle: ModelBundle, probe: Callable[[Shift, float], float]) -> Optional[PriorChoice]:
    """The shift, then the size, of ``bundle``'s prior whose ``probe(shift, factor)`` (the NQM of
    ``PROBE_RUNS`` runs) is lowest, the first on a tie, a shift only when under ``MOVE_GAIN``
    times the own place's; a single size is used without probing; None for a model without a prior."""
    prior = bundle.preprocessing.location_prior
    if prior is None:
        return None
    shifts, sizes = prior_shifts(prior), prior_sizes(prior)
    reasons = []
    shift = shifts[0]
    if len(shifts) > 1:
        own_size = sizes[0] if len(sizes) == 1 else 1.0
        nqms = [probe(candidate, own_size) for candidate in shifts]
        best = min(range(len(shifts)), key=nqms.__getitem__)
        shift = shifts[best] if nqms[best] < MOVE_GAIN * nqms[shifts.index(NO_SHIFT)] else NO_SHIFT
        verdict = "centre kept" if shift == NO_SHIFT else f"centre moved by {_shift_text(shift)}"
        reasons.append(f"{verdict} (a move needs an NQM under {MOVE_GAIN:g}x the own place's): "
                       + ", ".join(f"{_shift_text(s)}: {n:.3f}" for s, n in zip(shifts, nqms)))
    factor = sizes[0]
    if len(sizes) > 1:
        nqms = [probe(shift, candidate) for candidate in sizes]
        factor = sizes[min(range(len(sizes)), key=nqms.__getitem__)]
        reasons.append("spread x " + ", ".join(f"{f:g}: {n:.3f}" for f, n in zip(sizes, nqms)))
    if not reasons:
        return PriorChoice(factor, shift, f"the model's prior, its spread x {factor:g} (one size: nothing to probe)")
    return PriorChoice(factor, shift, f"lowest NQM of {PROBE_RUNS} runs ({'; '.join(reasons)})")


def checked_if_moved(quality: Quality, choice: Optional[PriorChoice], orientation: str) -> Quality:
    """``quality`` made at most yellow, the move leading its explanation (``at_least``, as for a
    doubtful head registration), when ``choice`` moved the prior's centre: away from the prior's
    own place the runs can agree on the wrong structure (docs/models/prostate-record.md, "Prior places
    probed on each scan"); ``quality`` itself otherwise. ``orientation``: the model grid's code
    (e.g. LPS), to name the move's direction."""
    if choice is None or tuple(choice.shift) == NO_SHIFT:
        return quality
    return at_least(quality, "yellow", f"the structure was looked for away from where the model expects it (moved "
                    f"{_move_text(choice.shift, orientation)}): check that the outline lies on the structure")


def _move_text(shift: Sequence[float], orientation: str) -> str:
    """The move in words, e.g. '0.15 of the grid towards anterior'."""
    return ", ".join(f"{abs(value):g} of the grid towards {DIRECTIONS[letter if value > 0 else OPPOSITE[letter]]}"
                     for letter, value in zip(orientation, shift) if value)


def _shift_text(shift: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:+g}" for v in shift) + "]"


def at_prior(bundle: ModelBundle, factor: float, shift: Sequence[float] = NO_SHIFT) -> ModelBundle:
    """``bundle`` whose prior's spread is ``factor`` times its own and whose centre is moved by
    ``shift``, with nothing left to probe (``bundle`` itself when it has no prior)."""
    prior = bundle.preprocessing.location_prior
    if prior is None:
        return bundle
    located = sized_prior(prior, factor, shift)
    return replace(bundle, preprocessing=replace(bundle.preprocessing, location_prior=located))


def with_prior_probes(bundle: ModelBundle, sizes: Optional[Sequence[float]] = None,
                      shifts: Optional[Sequence[Sequence[float]]] = None) -> ModelBundle:
    """``bundle`` that probes its prior at ``sizes`` (spread factors; ``[1]``: no probing) and
    ``shifts`` (centre moves; ``[[0, 0, 0]]``: none); None keeps the model's own.

    Raises:
        NCAError: the model has no location prior or has a side, or the sizes or shifts are not valid.
    """
    prior = bundle.preprocessing.location_prior
    if prior is None:
        raise NCAError("--prior-sizes and --prior-shifts need a model with a location prior (a field-of-view "
                       "model such as prostate)")
    if bundle.preprocessing.side is not None:
        raise NCAError("--prior-sizes and --prior-shifts need a model without a side (the prior is probed on the "
                       "scan as stored)")
    probed = with_probes(prior, sizes, shifts)
    return replace(bundle, preprocessing=replace(bundle.preprocessing, location_prior=probed))
