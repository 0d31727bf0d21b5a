"""eval's time left from each method's measured cost (issue 22): within 2x of the truth where methods of very
different cost share the bar, where the old equal-units ETA (rich's, over samples x methods) is not."""

from __future__ import annotations

import random
import time
from pathlib import Path

import numpy as np

from defocuskit.eval.eta import CostEta, TimeLeftColumn, format_left

# seconds per 1.5 MP image, as in the issue: the input baseline, Wiener, a NAFNet and a 40-step HIDD sampler
COSTS = {"input": 0.02, "wiener": 0.6, "nafnet": 2.5, "hidd": 25.0}


def _within(estimate: float | None, truth: float, factor: float = 2.0) -> bool:
    return estimate is not None and truth / factor <= estimate <= truth * factor


def test_time_left_follows_each_methods_cost_where_equal_units_do_not() -> None:
    """36 samples x 4 methods on a fake clock: decoding, noisy timings (+-25 %), a 3x slower first sample (warm-up),
    images of three sizes. Checked as each method starts and halfway through it."""
    from rich.progress import Progress

    rng = random.Random(0)
    now = [0.0]
    n = 36
    eta = CostEta(COSTS, n, clock=lambda: now[0])
    old = Progress(get_time=lambda: now[0], disable=True)  # the bar as it was: rich's ETA over equal units
    task = old.add_task("scoring", total=n * len(COSTS))
    checks: list[tuple[int, int, float, float | None, float | None]] = []  # (sample, units, at, new, old)
    for i in range(n):
        height, width = rng.choice([(1024, 1536), (1536, 1024), (1000, 1500)])
        now[0] += 0.3  # decoding
        eta.sample(height * width)
        now[0] += 0.1  # scoring the input
        for name, cost in COSTS.items():
            eta.start(name)
            seconds = cost * height * width / 1.5e6 * rng.uniform(0.8, 1.25) * (3.0 if i == 0 else 1.0)
            for _ in range(2):
                checks.append((i, int(old.tasks[0].completed), now[0], eta.seconds_left(), old.tasks[0].time_remaining))
                now[0] += seconds / 2
            eta.stop()
            old.advance(task)
    end = now[0]
    assert eta.seconds_left() == 0.0
    assert all(new is None for i, _, _, new, _ in checks if i == 0)  # unknown until every method has been timed
    after_two = [(units, end - at, new, before) for i, units, at, new, before in checks if i >= 2]
    bad = [(units, round(truth, 1), new) for units, truth, new, _ in after_two if not _within(new, truth)]
    assert not bad, f"time left off by more than 2x (units done, truth, estimate): {bad}"
    # the old ETA (rich's recent rate over equal units) at the same moments: unknown or off by more than 2x at
    # over a quarter of them (here 101 of 272), by 10x or more while the sampler runs after the cheap methods
    off = [max(truth / before, before / truth) if before else float("inf") for _, truth, _, before in after_two
           if not _within(before, truth)]
    assert len(off) > len(after_two) / 4 and max(off) > 10, (len(off), len(after_two), max(off, default=None))
    _, _, at, new, _ = next(c for c in checks if c[1] == 11)  # the moment: 11 of 144 runs done
    assert end - at > 900 and _within(new, end - at, 1.3)


def test_unknown_total_skips_and_overrun() -> None:
    now = [0.0]
    assert CostEta(["a"], None, clock=lambda: now[0]).seconds_left() is None
    eta = CostEta(["a", "b"], 3, clock=lambda: now[0])
    eta.sample(100)
    eta.skip()  # a pair no method scores: done for both, untimed
    eta.sample(100)
    for name, seconds in (("a", 1.0), ("b", 10.0)):
        eta.start(name)
        now[0] += seconds
        eta.stop()
    assert eta.seconds_left() == 11.0  # one sample left, each method's cost
    eta.sample(100)
    eta.start("a")
    now[0] += 5.0  # running past its estimate: its share is spent, not negative
    assert eta.seconds_left() == 10.0
    assert format_left(3725.4) == "1:02:05" and format_left(None) == "-:--:--"


def test_evaluate_bar_shows_the_estimators_time_left(tmp_path: Path, monkeypatch) -> None:
    """`evaluate` with a cheap method (input) and a slow one (a Wiener that sleeps 40 ms): read inside the slow
    method, the bar's time left is the estimator's, within 2x of the time the scoring then took."""
    import io

    import webdataset as wds
    from rich.console import Console

    from defocuskit.data.shards import encode_members
    from defocuskit.eval import baselines
    from defocuskit.eval.config import EvalConfig
    from defocuskit.eval.evaluate import evaluate
    from defocuskit.eval.runners import ACTIVE_BAR

    rng = np.random.default_rng(0)
    (tmp_path / "shards").mkdir()
    with wds.ShardWriter(str(tmp_path / "shards" / "test-%06d.tar"), maxcount=100, verbose=0) as sink:
        for i in range(10):
            sharp = rng.integers(0, 256, (32, 48, 3), dtype=np.uint8)
            blur = (sharp // 2 + 60).astype(np.uint8)
            sink.write({"__key__": f"p{i}", **encode_members(sharp, blur, None, {"source": "vabd", "f_number": 2.8,
                                                                                   "focal_length_mm": 50.0})})
    seen: list[tuple[float, float | None, str]] = []  # (when, estimator's seconds left, what the bar shows)
    ends: list[float] = []

    def slow_wiener(blur, meta, coc=None, noise=True):
        bar = ACTIVE_BAR.get()
        task = next(t for t in bar.tasks if "eta" in t.fields)
        column = next(c for c in bar.columns if isinstance(c, TimeLeftColumn))
        seen.append((time.perf_counter(), task.fields["eta"].seconds_left(), str(column.render(task))))
        time.sleep(0.04)
        ends.append(time.perf_counter())
        return blur * 0.9

    monkeypatch.setattr(baselines, "wiener_baseline", slow_wiener)
    evaluate(tmp_path / "shards", [], ["input", "wiener"],
             EvalConfig(split="test", report_dir=tmp_path / "report", progress=True, by_aperture=False),
             console=Console(file=io.StringIO()))
    assert len(seen) == 10 and seen[0][1] is None  # unknown before the first sample
    for when, left, shown in seen[2:8]:
        assert shown.endswith(" left") and shown.count(":") == 2
        assert _within(left, ends[-1] - when), (left, ends[-1] - when)
