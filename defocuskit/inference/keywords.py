"""The numbers the Python API's keywords take, judged by their type before their range: a string, a bool, a list, or a
float where a whole number goes is a TypeError naming the keyword (it was a comparison's TypeError from deep inside,
a float silently truncated, NaN failing as 'cannot convert float NaN to integer', a bool read as 1); and the yes-or-no
keywords, where only True or False goes ('no' was read as true)."""

from __future__ import annotations

import operator
from typing import Any

import numpy as np


def whole(name: str, value: Any) -> int | None:
    """None, or `value` as an int: a Python or numpy integer (a one-number integer tensor too); else TypeError
    naming `name=`. Its range is the caller's to judge."""
    if value is None:
        return None
    if not isinstance(value, (bool, np.bool_)):
        try:
            return operator.index(value)
        except TypeError:
            pass
    raise TypeError(f"{name}= must be a whole number, got {value!r}")


def real(name: str, value: Any) -> float | None:
    """None, or `value` as a float: an int, a float, a numpy number or a one-number tensor; a string, a bool or a
    container is a TypeError naming `name=`. Its range (NaN and inf included) is the caller's to judge."""
    if value is None:
        return None
    if not isinstance(value, (bool, np.bool_, str, bytes)):
        try:
            return float(value)
        except (TypeError, ValueError, RuntimeError):
            pass
    raise TypeError(f"{name}= must be a number, got {value!r}")


def flag(name: str, value: Any) -> bool:
    """`value` as a bool: True or False (a numpy bool too); anything else is a TypeError naming `name=` (the string
    'no' was read as true, 0 and None as false)."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(f"{name}= must be True or False, got {value!r}")


def tiling_keywords(tile: Any, overlap: Any, max_tile_pixels: Any, batch: Any, progress: Any) -> dict[str, Any]:
    """The tiling keywords of deblur() and coc_map() as whole numbers (or None), for DeblurModel._restore; their
    ranges are judged by inference.tiling.check_tiling."""
    return {"tile": whole("tile", tile), "overlap": whole("overlap", overlap), "progress": flag("progress", progress),
            "max_tile_pixels": whole("max_tile_pixels", max_tile_pixels), "batch": whole("batch", batch)}
