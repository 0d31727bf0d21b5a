"""Camera file counters: the order a folder's numbered file names (`IMG_0042`, `DSC00042`, `1P0A0917`) give its
shots, across the counter's wrap (a camera numbers on from 9999 to 0001, so a bracket shot across it sorts out of
order by name)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Sequence, TypeVar

from defocuskit.data.pairs import name_order

NUMBERED = re.compile(r"(\D*)(\d+)")  # a camera's file name: a prefix and the shot counter ('IMG_0042')
DCF = re.compile(r"([A-Za-z0-9_]{4})(\d{4})")  # DCF 2.0: four free characters, a counter 0001-9999 ('1P0A0917')

T = TypeVar("T")


def camera_counter(stem: str) -> tuple[str, str] | None:
    """A file stem's (prefix, counter as written), or None when it is not a camera's numbered name. A DCF name
    (four characters, not all digits, then four digits: `DSC09999` is `DSC0` and `9999`, `1P0A0917` is `1P0A` and
    `0917`) counts in its last four digits; any other name in its trailing digits after a prefix without digits."""
    if (match := DCF.fullmatch(stem)) and not match.group(1).isdigit():
        return match.group(1), match.group(2)
    if match := NUMBERED.fullmatch(stem):
        return match.group(1), match.group(2)
    return None


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


def paired_order(folders: Sequence[Sequence[Path]], stem: Callable[[Path], str] = lambda p: p.stem) -> list[list[Path]]:
    """Several folders' files, each in the order their n-th files are paired in (the shots taken together: a blurred
    shot and its reference numbered next to it). By `name_order`, unless every name in them is one prefix's camera
    counter (`camera_counter`): then by counter, every folder cut round the counter's wrap at one place, the one
    `counter_order` finds for all their counters together, so a pair numbered 9999 and 0001 stays a pair and the
    shots after the wrap follow those before it. `stem`: the part of a file's name that holds its counter."""
    ordered = [sorted(files, key=name_order) for files in folders]
    counters = [camera_counter(stem(path)) for files in ordered for path in files]
    if not counters or None in counters or len({prefix for prefix, _ in counters}) != 1:
        return ordered
    modulus = 10 ** max(len(digits) for _, digits in counters)
    first = int(counter_order([(digits, digits) for _, digits in counters])[0])

    def turn(path: Path) -> int:  # the counter's distance round the circle from the first shot
        return (int(camera_counter(stem(path))[1]) - first) % modulus

    return [sorted(files, key=turn) for files in ordered]  # stable: equal counters keep their name order
