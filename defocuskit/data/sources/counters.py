"""Camera file counters: the order a folder's numbered file names (`IMG_0042`, `DSC00042`) give its shots, across the
counter's wrap (a camera numbers on from 9999 to 0001, so a bracket shot across it sorts out of order by name)."""

from __future__ import annotations

import re
from typing import Sequence, TypeVar

NUMBERED = re.compile(r"(\D*)(\d+)")  # a camera's file name: a prefix and the shot counter ('IMG_0042')

T = TypeVar("T")


def counter_order(numbered: Sequence[tuple[str, T]]) -> list[T]:
    """The items of one prefix's run, given with their counters as written (`"9999"`, `"0001"`), in the order the
    camera numbered them: by counter, started after the widest gap between consecutive counters on the counter's
    circle (10 ** its digits), so 9998, 9999, 0001, 0002 keep that order; counters that do not wrap keep their
    numeric order (the gap from the last back round to the first is the widest)."""
    if not numbered:
        return []
    modulus = 10 ** max(len(digits) for digits, _ in numbered)
    ranked = sorted(((int(digits), i) for i, (digits, _) in enumerate(numbered)))
    values = [value for value, _ in ranked]
    gaps = [b - a for a, b in zip(values, values[1:])]
    wrap_gap = values[0] + modulus - values[-1]
    start = 0
    if gaps and max(gaps) > wrap_gap:
        start = gaps.index(max(gaps)) + 1
    return [numbered[i][1] for _, i in ranked[start:] + ranked[:start]]
