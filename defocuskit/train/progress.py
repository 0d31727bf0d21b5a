"""What the loop shows and logs: the progress bar (with the time left under a budget) and the recipe flattened
for experiment trackers."""

from __future__ import annotations

import math
import sys
from typing import Any

BUDGET_BAR_FORMAT = "{desc}{percentage:3.0f}%|{bar}| {steps} [{elapsed}<{left} {ends}, {step_rate}{postfix}]"


def training_bar(max_steps: int, start: int, max_minutes: float | None, disable: bool = False, **kwargs: Any) -> Any:
    """The training progress bar: steps of max_steps with an ETA; under a time budget (train.max_minutes) the
    time left is the sooner of the budget's end and the steps' ETA, and says which ends the run."""
    from tqdm.auto import tqdm

    class BudgetBar(tqdm):  # tqdm.auto's class: a terminal or a notebook bar
        @property
        def format_dict(self) -> dict[str, Any]:
            d = super().format_dict
            elapsed, n, total = d["elapsed"], d["n"], d["total"]
            rate = (n - d.get("initial", 0)) / elapsed if elapsed > 0 and n > d.get("initial", 0) else None
            by_steps = (total - n) / rate if rate else math.inf
            by_budget = max(0.0, max_minutes * 60.0 - elapsed)
            left = min(by_steps, by_budget)
            d.update(steps=f"{n}/{total} steps", left=self.format_interval(left),
                     ends="budget" if by_budget <= by_steps else "max_steps",
                     step_rate=f"{rate:.2f} step/s" if rate else "? step/s",
                     # the bar and the percentage: the share of the run done, whichever of the two ends it
                     n=int(1000 * elapsed / (elapsed + left)) if elapsed + left > 0 else 1000, total=1000)
            return d

    options = dict(total=max_steps, initial=start, disable=disable, dynamic_ncols=True,
                   mininterval=0.5 if sys.stderr.isatty() else 30.0)  # a log file gets a line every 30 s, not per step
    options.update(kwargs)
    if max_minutes is None:
        return tqdm(**options)
    return BudgetBar(bar_format=BUDGET_BAR_FORMAT, **options)




def flat_config(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config as one level of dotted keys, values as numbers, strings or booleans."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flat_config(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v if isinstance(v, (int, float, str, bool)) else str(v)
    return out
