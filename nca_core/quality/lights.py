"""The traffic light's order (better to worse), palette and titles, shared by the PNG preview and the Slicer module.

Imports nothing, so that the Slicer side can use it without loading the engine.
"""
from __future__ import annotations

LIGHT_ORDER = ("green", "unknown", "yellow", "red")  # worse to the right

LIGHT_COLORS = {
    "green": "#2ca02c",
    "yellow": "#f2c200",
    "red": "#d62728",
    "unknown": "#8c8c8c",
}

LIGHT_TITLES = {
    "green": "Good",
    "yellow": "Check",
    "red": "Review carefully",
    "unknown": "No verdict",  # an uncalibrated model, or runs that cannot disagree: see the explanation
}


def light_color(light: str) -> str:
    """The light's colour (#rrggbb); an unknown name gets the 'unknown' grey."""
    return LIGHT_COLORS.get(light, LIGHT_COLORS["unknown"])


def light_title(light: str) -> str:
    """A word or two for the light, e.g. 'Check' for yellow."""
    return LIGHT_TITLES.get(light, LIGHT_TITLES["unknown"])
