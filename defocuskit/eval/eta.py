"""eval's time left: each method's own measured cost per pixel, not samples x methods counted as equal units.

The methods of one evaluation can differ in cost by orders of magnitude (the input baseline against a
40-step diffusion sampler). Counting every (sample, method) run as one unit and dividing by the recent
rate, as a plain progress bar does, is off by an order of magnitude while a slow method runs. `CostEta`
times every method on every sample (running it and scoring its output), and the samples' own cost between
methods (decoding, scoring the input); the time left is, per method, the samples it has still to score
times the mean size of the samples seen so far times its measured seconds per pixel, less the time the
running method has already spent on its current sample. Each method's first timing (warm-up: the first
call of a model) is left out of its rate once a second one exists. Until every method still to run has been
timed once (in eval: after the first sample), the time left is unknown.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from contextlib import nullcontext
from typing import Any

from rich.progress import ProgressColumn, Task, TimeRemainingColumn
from rich.text import Text

BETWEEN = "(between methods)"  # the samples' own cost: decoding, scoring the input


class _Cost:
    """One method's timings: the first apart (warm-up), the rest summed."""

    def __init__(self) -> None:
        self.first: tuple[float, float] | None = None
        self.seconds, self.pixels, self.done = 0.0, 0.0, 0

    def add(self, seconds: float, pixels: float) -> None:
        if self.first is None:
            self.first = (seconds, pixels)
        else:
            self.seconds, self.pixels = self.seconds + seconds, self.pixels + pixels

    def rate(self) -> float | None:
        """Seconds per pixel: the mean after the first timing, else the first; None before any."""
        if self.pixels > 0:
            return self.seconds / self.pixels
        if self.first is not None and self.first[1] > 0:
            return self.first[0] / self.first[1]
        return None


class CostEta:
    """The seconds left of scoring `total` samples with each of `methods`, from each method's measured cost.

    Calls, in order, per sample: `sample(pixels)`, then per method `start(name)` ... `stop()`, or `skip()`
    for a sample no method scores. `clock` gives seconds (a fake one in tests); `now` arguments default to it.
    """

    def __init__(self, methods: Iterable[str], total: int | None,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.total, self.clock = total, clock
        self.costs = {name: _Cost() for name in methods}
        self.between = _Cost()
        self.seen, self.seen_pixels = 0, 0.0
        self._mark: float | None = None  # when the current sample began
        self._in_methods = 0.0  # seconds the current sample spent in methods
        self._pixels = 0.0  # the current sample's size
        self._running: tuple[str, float] | None = None  # (method, since)

    def sample(self, pixels: float, now: float | None = None) -> None:
        """A sample of `pixels` begins: the previous one's time outside its methods is timed as `BETWEEN`."""
        now = self.clock() if now is None else now
        if self._mark is not None:
            self.between.add(max(now - self._mark - self._in_methods, 0.0), self._pixels)
        self._mark, self._in_methods, self._pixels = now, 0.0, float(pixels)
        self.seen, self.seen_pixels = self.seen + 1, self.seen_pixels + pixels

    def start(self, method: str, now: float | None = None) -> None:
        """`method` starts on the current sample."""
        self._running = (method, self.clock() if now is None else now)

    def stop(self, now: float | None = None) -> None:
        """The running method is done with the current sample (scored or skipped): its time counts."""
        if self._running is None:
            return
        (method, since), now = self._running, self.clock() if now is None else now
        self.costs[method].add(now - since, self._pixels)
        self.costs[method].done += 1
        self._in_methods += now - since
        self._running = None

    def skip(self) -> None:
        """The current sample is done for every method without running them (a pair eval cannot score)."""
        for cost in self.costs.values():
            cost.done = max(cost.done, self.seen)

    def seconds_left(self, now: float | None = None) -> float | None:
        """Seconds until every method has scored `total` samples; None while unknown (no total, a method untimed)."""
        if self.total is None:
            return None
        now = self.clock() if now is None else now
        running, pixels = self._running, self._pixels  # read once: the bar's thread asks while eval updates
        mean = self.seen_pixels / self.seen if self.seen else None
        left = 0.0
        for name, cost in self.costs.items():
            n = max(self.total - cost.done, 0)
            if n == 0:
                continue
            rate = cost.rate()
            if rate is None or mean is None:
                return None
            if running is not None and running[0] == name:  # its current sample, partly spent
                n -= 1
                left += max(rate * pixels - (now - running[1]), 0.0)
            left += n * rate * mean
        between = self.between.rate()
        if between is not None and mean is not None:  # unknown until a second sample begins: counted as none
            left += max(self.total - self.seen, 0) * between * mean
        return left


def format_left(seconds: float | None) -> str:
    """h:mm:ss, or -:--:-- when unknown."""
    if seconds is None:
        return "-:--:--"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours:d}:{minutes:02d}:{secs:02d}"


class TimeLeftColumn(ProgressColumn):
    """"H:MM:SS left" from the task's `eta` field (a CostEta); tasks without one (tiles, steps) show rich's estimate."""

    max_refresh = 0.5  # as rich's own time-remaining column: no jitter

    def __init__(self) -> None:
        super().__init__()
        self.fallback = TimeRemainingColumn()

    def render(self, task: Task) -> Text:
        """The text shown for `task`."""
        eta = task.fields.get("eta")
        if eta is None:
            return self.fallback.render(task)
        return Text(f"{format_left(eta.seconds_left())} left", style="progress.remaining")


def progress_bar(enabled: bool, console: Any) -> Any:
    """eval's bar (a rich Progress, transient, on `console`), or a context of None when not `enabled`."""
    if not enabled:
        return nullcontext(None)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeLeftColumn(), console=console, transient=True)
