"""eval's time left against the truth (issue 22): runs `defocuskit eval ARGS` with its bar drawn (TTY_COMPATIBLE=1,
on stderr), logs every time the bar draws its time left (the text shown, the estimator's seconds, and rich's own
equal-units estimate for the same task: what the bar showed before), then compares both with the time the
scoring really took from that moment on.

    python tools/bench_eval_eta.py LOG.json -- --shards S --baseline input --checkpoint M ... 2>/dev/null
    python tools/bench_eval_eta.py LOG.json       # the table again from a log
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's defocuskit


def measure(log_path: str, args: list[str]) -> None:
    """Run eval with `args`, logging each draw of the bar's time left and when the scoring began and ended."""
    os.environ["TTY_COMPATIBLE"] = "1"
    from defocuskit.eval import eta as eta_mod
    from defocuskit.eval import evaluate as ev

    draws: list[list] = []
    span: dict[str, float] = {}
    render, score = eta_mod.TimeLeftColumn.render, ev._score_samples

    def logged_render(self, task):
        text = render(self, task)
        if task.fields.get("eta") is not None:
            draws.append([time.perf_counter(), task.completed, task.total, str(text),
                          task.fields["eta"].seconds_left(), task.time_remaining, task.description])
        return text

    def timed_score(*a, **k):
        span["start"] = time.perf_counter()
        try:
            return score(*a, **k)
        finally:
            span["end"] = time.perf_counter()

    eta_mod.TimeLeftColumn.render, ev._score_samples = logged_render, timed_score
    from defocuskit.cli.app import main

    sys.argv = ["defocuskit", "eval", *args]
    try:
        main()
    except SystemExit as exc:
        if exc.code:
            raise
    with open(log_path, "w") as f:
        json.dump({"args": args, "span": span, "draws": draws}, f)


def _ratio(estimate: float | None, truth: float) -> float:
    return math.inf if not estimate or truth <= 0 else max(estimate / truth, truth / estimate)


def summarize(log_path: str) -> None:
    """The first draw at each count of runs done, and how often each estimate was within 2x of the truth."""
    with open(log_path) as f:
        log = json.load(f)
    start, end = log["span"]["start"], log["span"]["end"]
    draws = log["draws"]
    print(f"scoring took {end - start:.1f} s")
    print("| runs done | at, s | shown | real time left, s | estimator / real | old equal-units ETA, s | old / real |")
    print("|---:|---:|---|---:|---:|---:|---:|")
    seen = set()
    for t, done, total, shown, new, old, _ in draws:
        if int(done) in seen:
            continue
        seen.add(int(done))
        truth = end - t
        print(f"| {int(done)}/{int(total)} | {t - start:.1f} | {shown} | {truth:.1f} | "
              f"{'-' if new is None else f'{new / truth:.2f}' if truth > 0 else '-'} | {'-' if old is None else old} | "
              f"{'-' if not old or truth <= 0 else f'{old / truth:.2f}'} |")
    first = next((d[0] for d in draws if d[4] is not None), None)  # the estimator knows every method's cost
    if first is None:
        return
    window = [d for d in draws if first <= d[0] <= start + 0.9 * (end - start)]
    if not window:
        return
    for name, i in (("estimator", 4), ("old equal-units ETA", 5)):
        ratios = sorted(_ratio(d[i], end - d[0]) for d in window)
        print(f"{name}: within 2x of the truth at {sum(r <= 2 for r in ratios)} of {len(ratios)} draws from the "
              f"first known estimate to 90 % of the time; median {ratios[len(ratios) // 2]:.2f}x, "
              f"worst {ratios[-1]:.1f}x (inf: unknown or 0)")


if __name__ == "__main__":
    log_file, rest = sys.argv[1], sys.argv[2:]
    if rest[:1] == ["--"]:
        measure(log_file, rest[1:])
    summarize(log_file)
