"""What eval prints beside its rows counts what it says it counts."""

from __future__ import annotations

import numpy as np
from rich.console import Console

from defocuskit.eval.evaluate import evaluate_samples
from defocuskit.eval.report import print_table


def _pairs(n: int) -> list[dict]:
    rng = np.random.default_rng(0)
    return [{"key": f"s{i}", "sharp": (sharp := (rng.random((12, 12, 3)) * 255).astype(np.uint8)),
             "blur": np.clip(sharp.astype(np.int16) + 3, 0, 255).astype(np.uint8), "coc": None,
             "meta": {"source": "x", "f_number": 1.8 if i % 2 else 2.8}} for i in range(n)]


def test_the_skipped_line_counts_samples_not_the_scores_each_method_left_out() -> None:
    """Three methods that each refuse the same 2 of 4 pairs: 2 samples skipped (6 scores), not "skipped 6 samples"."""
    def picky(blur: np.ndarray, sample: dict) -> np.ndarray:
        if sample["meta"]["f_number"] == 1.8:
            raise ValueError("refuses f/1.8")
        return blur

    result = evaluate_samples(_pairs(4), {"a": picky, "b": picky, "c": picky}, progress=False)
    console = Console(width=200, record=True)
    print_table({"protocol": {"split": "test"}, "rows": result["rows"], "skipped": result["skipped"]}, console)
    said = console.export_text()
    assert "skipped 2 sample(s) (listed in report.json, 6 scores of (sample, method) in all)" in said, said
