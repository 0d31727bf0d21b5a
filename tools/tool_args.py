"""Argument types of the benchmark tools: a number or list no run can use is refused by argparse in one line naming
the argument (exit 2), before the tool reads, renders or trains anything.

Imported by the tools run as scripts (`python tools/NAME.py`, whose folder is then first on sys.path)."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def whole(low: int, high: int | None = None, what: str = "") -> Callable[[str], int]:
    """An int type of `low`..`high` (inclusive; no upper bound where None)."""
    span = f"at least {low}" if high is None else f"{low} to {high}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: give a whole number {span}{what}") from None
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{value}: give a whole number {span}{what}")
        return value

    return parse


def finite(low: float = 0.0, above: bool = False, high: float | None = None) -> Callable[[str], float]:
    """A float type: finite, at least `low` (more than `low` with `above`), at most `high` where given."""
    span = (f"more than {low:g}" if above else f"at least {low:g}") + ("" if high is None else f", at most {high:g}")

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: give a number {span}") from None
        if not math.isfinite(value) or value < low or (above and value == low) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{text}: give a finite number {span}")
        return value

    return parse


def number_list(low: float = 0.0, above: bool = True, high: float | None = None) -> Callable[[str], str]:
    """A comma-separated list of finite numbers each as `finite(low, above, high)` takes them; the text itself."""
    one = finite(low, above, high)

    def parse(text: str) -> str:
        items = text.split(",")
        if not text.strip() or any(not item.strip() for item in items):
            raise argparse.ArgumentTypeError(f"{text!r}: give a comma-separated list of numbers, none empty")
        for item in items:
            try:
                one(item)
            except argparse.ArgumentTypeError as exc:
                raise argparse.ArgumentTypeError(str(exc) if len(items) == 1 else f"{text}: {exc}") from None
        return text

    return parse


def choice_list(known: tuple[str, ...]) -> Callable[[str], str]:
    """A comma-separated list of names, each one of `known`, none twice; the text itself."""

    def parse(text: str) -> str:
        items = text.split(",")
        wrong = [item for item in items if item not in known]
        if wrong:
            raise argparse.ArgumentTypeError(f"{text}: {wrong[0]!r} is not one of {', '.join(known)}")
        if len(set(items)) < len(items):
            raise argparse.ArgumentTypeError(f"{text}: a name given twice")
        return text

    return parse


def whole_list(low: int) -> Callable[[str], str]:
    """A comma-separated list of whole numbers, each at least `low`; the text itself."""
    one = whole(low)

    def parse(text: str) -> str:
        items = text.split(",")
        for item in items:
            try:
                one(item.strip())
            except argparse.ArgumentTypeError as exc:
                raise argparse.ArgumentTypeError(str(exc) if len(items) == 1 else f"{text}: {exc}") from None
        return text

    return parse
