"""How large the structure is in this scan: probing the location prior's size.

A model with a location prior reads the structure's extent off the prior's spread more than off
the image (docs/models/prostate.md, "What the outlines get wrong"): a large gland is cut to a
typical one's size. A model whose prior lists ``sizes`` (spread factors, stored by ``m3dnca
calibrate --prior-sizes``) is run a few times at each, and the size whose runs agree most (the
lowest NQM, as the side probe decides a crop's side) is used; its probe runs become the
ensemble's first runs.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Optional, Sequence

from ..errors import NCAError
from ..modelfile.bundle import ModelBundle
from ..space.prior import prior_sizes, sized_prior, with_sizes
from .sides import PROBE_RUNS


@dataclass(frozen=True)
class PriorSize:
    """The prior's size used for a scan: its spread factor and why."""

    factor: float
    reason: str


def choose_prior_size(bundle: ModelBundle, probe: Callable[[float], float]) -> Optional[PriorSize]:
    """The size of ``bundle``'s prior among its sizes whose ``probe(factor)`` (the NQM of
    ``PROBE_RUNS`` runs) is lowest, the first on a tie; one size is used without probing;
    None for a model without a prior."""
    prior = bundle.preprocessing.location_prior
    if prior is None:
        return None
    sizes = prior_sizes(prior)
    if len(sizes) == 1:
        return PriorSize(sizes[0], f"the model's prior, its spread x {sizes[0]:g} (one size: nothing to probe)")
    nqms = [probe(factor) for factor in sizes]
    best = min(range(len(sizes)), key=nqms.__getitem__)
    tried = ", ".join(f"{factor:g}: {nqm:.3f}" for factor, nqm in zip(sizes, nqms))
    return PriorSize(sizes[best], f"lowest NQM of {PROBE_RUNS} runs per spread factor ({tried})")


def at_prior_size(bundle: ModelBundle, factor: float) -> ModelBundle:
    """``bundle`` whose prior's spread is ``factor`` times its own, with no sizes left to probe
    (``bundle`` itself when it has no prior)."""
    prior = bundle.preprocessing.location_prior
    if prior is None:
        return bundle
    return replace(bundle, preprocessing=replace(bundle.preprocessing, location_prior=sized_prior(prior, factor)))


def with_prior_sizes(bundle: ModelBundle, sizes: Sequence[float]) -> ModelBundle:
    """``bundle`` that probes its prior at ``sizes`` (spread factors; ``[1]``: no probing).

    Raises:
        NCAError: the model has no location prior or has a side, or ``sizes`` are not spread factors.
    """
    prior = bundle.preprocessing.location_prior
    if prior is None:
        raise NCAError("--prior-sizes needs a model with a location prior (a field-of-view model such as prostate)")
    if bundle.preprocessing.side is not None:
        raise NCAError("--prior-sizes needs a model without a side (the sizes are probed on the scan as stored)")
    return replace(bundle, preprocessing=replace(bundle.preprocessing, location_prior=with_sizes(prior, sizes)))
