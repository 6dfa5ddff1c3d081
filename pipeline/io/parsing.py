"""Parsing user-given values (landmarks) shared by the CLI and manifests."""

from __future__ import annotations

import math

from pipeline.errors import InputError


def parse_point(text: str) -> tuple[float, float, float]:
    """'X,Y,Z' in RAS mm to a tuple of floats; InputError otherwise."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 3 or not all(math.isfinite(v) for v in values):
        raise InputError(f"expected a point X,Y,Z in RAS mm, got {text!r}")
    return values
