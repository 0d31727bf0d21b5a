"""The ported published networks (Restormer, IFAN, DRBNet) train their tiny recipes under `accelerate launch` with
2 CPU processes, and the exported models appear side by side in eval --by-aperture (issue 23). In a file of its
own so that `pytest -n` runs it beside tests/test_tiny_recipes.py, not after it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_tiny_recipes import accelerate_train

from defocuskit.data.ingest import run_ingest
from defocuskit.data.sample import IngestOptions

NAMES = ("restormer", "ifan", "drbnet")


@pytest.fixture(scope="module")
def shards(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("published") / "shards"
    run_ingest({"synthetic": Path("builtin")}, IngestOptions(out=str(out), workers=0, synthetic_size=64,
                                                             synthetic_f_numbers=(1.4, 4.0)), progress=False)
    return out


def test_published_ports_train_with_two_processes_and_appear_in_eval(shards: Path, tmp_path: Path) -> None:
    from defocuskit.eval.config import EvalConfig
    from defocuskit.eval.evaluate import evaluate

    runs = tmp_path / "runs"
    for name in NAMES:
        losses = accelerate_train(f"{name}-tiny.yaml", runs / name, f"data.train={shards}", "train.max_steps=4")
        assert len(losses) == 4 and all(np.isfinite(losses)), name
    report = evaluate(shards, [runs / n / "model.safetensors" for n in NAMES], ["input"],
                      EvalConfig(limit=2, report_dir=tmp_path / "report", device="cpu", progress=False))
    rows = {(r["method"], r["f_number"]) for r in report["rows"]}
    for name in NAMES:
        assert (name, None) in rows and any(m == name and f is not None for m, f in rows), (name, rows)
    assert {r["method"]: r["n"] for r in report["rows"] if r["f_number"] is None}["drbnet"] == 2
