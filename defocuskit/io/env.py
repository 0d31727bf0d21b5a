"""Whole-number settings read from environment variables ($DEFOCUSKIT_THREADS, $DEFOCUSKIT_BAND_PIXELS)."""

from __future__ import annotations

import os


def env_count(name: str, minimum: int, unit: str) -> int | None:
    """$name as a whole number of `unit` at least `minimum`; None where it is unset or blank; a ValueError naming
    the variable and its value otherwise."""
    given = os.environ.get(name, "").strip()
    if not given:
        return None
    try:
        value = int(given)
    except ValueError:
        raise ValueError(f"${name}={given!r}: not a whole number of {unit}") from None
    if value < minimum:
        raise ValueError(f"${name}={given!r}: give {minimum} or more {unit}")
    return value
