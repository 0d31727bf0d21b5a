"""`defocuskit demo --out`: what stands there is judged before any work, and one demo at a time writes it."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

FINISHED = {"preset": "default", "size": 32, "steps_scale": 0.002, "minutes_cap": 30.0, "models": [],
            "complete": True, "train_s": 1.0}


def _no_ingest(monkeypatch: pytest.MonkeyPatch) -> None:
    """The demo's ingest replaced by a marker: a test that reaches it has let the demo begin its work."""
    import defocuskit.data.ingest as ingest

    def started(*args, **kwargs):
        raise RuntimeError("the demo began its work")

    monkeypatch.setattr(ingest, "run_ingest", started)


def test_too_many_workers_are_refused_before_a_finished_demo_is_marked_unfinished(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from defocuskit.cli.demo import run_demo
    from defocuskit.data.sample import IngestError

    _no_ingest(monkeypatch)
    out = tmp_path / "demo"
    out.mkdir()
    (out / "demo.json").write_text(json.dumps(FINISHED))
    with pytest.raises(IngestError, match=r"^--workers 100000: at most"):
        run_demo(out, steps_scale=0.002, size=32, workers=100000, device="cpu")
    assert json.loads((out / "demo.json").read_text()) == FINISHED and sorted(p.name for p in out.iterdir()) == [
        "demo.json"]


@pytest.mark.parametrize("folder,preset", [("shards", "default"), ("shards-misaligned", "misaligned")])
def test_a_tar_of_the_users_in_the_demos_shard_folder_is_refused_before_any_work(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, folder: str, preset: str) -> None:
    from defocuskit.cli.demo import run_demo

    _no_ingest(monkeypatch)
    out = tmp_path / "demo"
    (out / folder).mkdir(parents=True)
    (out / folder / "train-000000.tar").write_bytes(b"mine")
    with pytest.raises(ValueError, match=rf"{folder}/train-000000.tar: exists and was not written here by defocuskit"):
        run_demo(out, steps_scale=0.002, size=32, workers=0, device="cpu", preset=preset)
    assert sorted(p.name for p in out.iterdir()) == [folder]  # no demo.json, report folder or lock
    assert (out / folder / "train-000000.tar").read_bytes() == b"mine"


def test_a_second_demo_into_the_same_out_stops_at_once_naming_the_first(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from defocuskit.cli.demo import run_demo

    _no_ingest(monkeypatch)
    out = tmp_path / "demo"
    ready = tmp_path / "holding"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from defocuskit.io import locks\n"
        f"with locks.hold(Path({str(out)!r}) / '.demo.lock', 'demo', 'busy'):\n"
        f"    Path({str(ready)!r}).write_text('1'); time.sleep(60)\n")])
    try:
        deadline = time.monotonic() + 60
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ready.exists()
        with pytest.raises(ValueError, match=r"--out .*: another demo is writing this folder \(pid \d+ .*\); wait for "
                                             r"it to finish or give another --out"):
            run_demo(out, steps_scale=0.002, size=32, workers=0, device="cpu")
        assert not (out / "demo.json").exists()
    finally:
        holder.kill()
        holder.wait()


def test_a_damaged_shard_met_by_the_demo_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    import defocuskit.cli.demo as demo
    from defocuskit.cli.app import app
    from defocuskit.data.reader import ShardError

    def damaged(**kwargs):
        raise ShardError("demo/shards/train-000000.tar: damaged shard: not a complete tar file")

    monkeypatch.setattr(demo, "run_demo", damaged)
    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path / "demo"), "--workers", "0", "--device", "cpu"])
    assert result.exit_code == 2 and "error: demo/shards/train-000000.tar: damaged shard" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
