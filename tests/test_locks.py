"""Run locks never write over or remove a file of the user's at the lock's or the holder's name (issue 21)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from defocuskit.io import locks

REPO = Path(__file__).resolve().parents[1]


def test_a_killed_runs_holder_is_replaced_and_a_users_file_at_either_name_is_left(tmp_path):
    lock = tmp_path / ".train.lock"
    holder = locks.holder_path(lock)
    # what kill -9 leaves: the lock file (empty, no process holds it) and the dead run's description
    lock.touch()
    holder.write_text(json.dumps({"pid": 999999, "host": "h", "what": "train", "started": "then"}))
    with locks.hold(lock, "train", "busy") as mine:
        assert json.loads(holder.read_text())["pid"] == mine["pid"]
    assert not holder.exists() and lock.exists()
    holder.write_text("my notes on the run")  # a user's file at the holder's name
    with pytest.raises(FileExistsError, match=r"\.train\.holder: in the way of a run lock \(not the description"):
        with locks.hold(lock, "train", "busy"):
            raise AssertionError("not reached")
    assert holder.read_text() == "my notes on the run" and not locks.is_held(lock)  # refused and released
    holder.unlink()
    lock.write_text("my lock notes")  # a user's file at the lock's name
    with pytest.raises(FileExistsError, match=r"\.train\.lock: in the way of a run lock \(a lock file is empty"):
        with locks.hold(lock, "train", "busy"):
            raise AssertionError("not reached")
    assert lock.read_text() == "my lock notes" and not holder.exists()


def test_eval_stops_in_one_line_at_a_users_file_at_the_holders_name(tmp_path):
    report = tmp_path / "rep"
    report.mkdir()
    (report / ".eval.holder").write_text("mine")
    from test_eval import _crop_pairs, _write_shards

    shards = _write_shards(tmp_path / "shards", "test", _crop_pairs(1))
    run = subprocess.run([sys.executable, "-m", "defocuskit", "eval", "--shards", str(shards), "--baseline", "input",
                          "--report", str(report)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr[-2000:]
    assert run.stderr.strip().splitlines()[-1].startswith(f"error: {report / '.eval.holder'}: in the way of a run lock")
    assert (report / ".eval.holder").read_text() == "mine" and not (report / "report.json").exists()


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX flock")
def test_readers_probing_a_lock_at_once_never_see_each_other_as_its_holder(tmp_path):
    """Two evaluations checking one shard folder at once each probe its run lock: a probe must not read the other
    probe as a writer ("a run is writing it now"), and a writer starting during a probe must not be turned away."""
    import fcntl
    import os
    import threading

    lock = tmp_path / ".run-1of1.lock"
    lock.touch()
    other = os.open(lock, os.O_RDONLY)
    fcntl.flock(other, fcntl.LOCK_SH | fcntl.LOCK_NB)  # another reader's probe, this instant
    ended = threading.Timer(0.3, os.close, [other])  # the probe ends a moment later
    try:
        assert not locks.is_held(lock)
        ended.start()
        with locks.hold(lock, "ingest", "the folder is busy") as holder:
            assert holder["what"] == "ingest" and locks.is_held(lock)
    finally:
        if ended.ident is not None:
            ended.join()  # the timer closes the probe's descriptor
        else:
            os.close(other)
    assert not locks.is_held(lock)


def test_a_failed_eval_leaves_no_lock_in_the_folders_it_made(tmp_path, monkeypatch):
    """An eval that failed after it took its locks (here: no pair scored) left `.eval.lock` (and the images
    folder's lock) in folders it had made: removed, and the folders with them where nothing else is in them; a
    folder that was there before keeps what it holds, and its lock file (empty: a lock dies with its process) does
    not stop the next eval."""
    import torch
    from safetensors.torch import save_file
    from test_eval import _crop_pairs, _write_shards

    from defocuskit.eval.config import EvalConfig, EvalError
    from defocuskit.eval.evaluate import evaluate
    from defocuskit.eval.lpips import ENV_VAR, LPIPSAlex

    torch.manual_seed(0)
    save_file({k: v.contiguous() for k, v in LPIPSAlex().state_dict().items() if k not in ("shift", "scale")},
              tmp_path / "lpips.safetensors")
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "lpips.safetensors"))  # LPIPS on pairs under its 31 px: none scored
    bad = _write_shards(tmp_path / "bad", "test", _crop_pairs(1, size=(24, 32)))
    new = tmp_path / "new"
    config = EvalConfig(split="test", report_dir=new / "rep", save_images=new / "images", progress=False)
    with pytest.raises(EvalError, match="none of the 1 pairs"):
        evaluate(bad, [], ["input"], config)
    assert [p.name for p in new.iterdir()] == ["images"]  # the report folder removed
    assert [p.name for p in (new / "images").iterdir()] == [".defocuskit-eval-images.json"]  # the run's list kept
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    with pytest.raises(EvalError, match="none of the 1 pairs"):
        evaluate(bad, [], ["input"], EvalConfig(split="test", report_dir=mine / "rep", progress=False))
    assert [p.name for p in mine.iterdir()] == ["notes.txt"] and (mine / "notes.txt").read_text() == "mine"
    with pytest.raises(EvalError, match="none of the 1 pairs"):
        evaluate(bad, [], ["input"], EvalConfig(split="test", report_dir=mine, progress=False))
    assert sorted(p.name for p in mine.iterdir()) == [".eval.lock", "notes.txt"]  # not this run's folder: left
    assert not locks.is_held(mine / ".eval.lock")
    monkeypatch.delenv(ENV_VAR)
    report = evaluate(bad, [], ["input"], EvalConfig(split="test", report_dir=mine, progress=False))
    assert report["rows"] and (mine / "report.json").is_file() and (mine / "notes.txt").read_text() == "mine"


def test_a_folder_the_failed_eval_made_is_kept_with_what_another_wrote_in_it(tmp_path, monkeypatch):
    from test_eval import _crop_pairs, _write_shards

    import defocuskit.eval.evaluate as evaluate_module
    from defocuskit.eval.config import EvalConfig

    report = tmp_path / "new" / "rep"

    def fails(*args, **kwargs):
        (report / "theirs.txt").write_text("written meanwhile")
        raise RuntimeError("stopped")

    monkeypatch.setattr(evaluate_module, "evaluate_samples", fails)
    shards = _write_shards(tmp_path / "shards", "test", _crop_pairs(1))
    with pytest.raises(RuntimeError, match="stopped"):
        evaluate_module.evaluate(shards, [], ["input"], EvalConfig(split="test", report_dir=report, progress=False))
    assert [p.name for p in report.iterdir()] == ["theirs.txt"]  # the lock removed, the folder and the file kept


def test_a_run_waiting_on_a_lock_its_holder_removes_holds_the_file_at_the_name(tmp_path, monkeypatch):
    """`hold(remove_on_error=True)` removes the lock file while it holds it: a run that waited on that file then
    holds the one at the lock's name, so a third run is refused, not let in beside it."""
    lock = tmp_path / "rep" / ".eval.lock"
    script = ("import sys, time; from defocuskit.io import locks\n"
              "with locks.hold(sys.argv[1], 'eval', 'busy', remove_on_error=True):\n"
              "    print('held', flush=True); time.sleep(0.5); raise SystemExit(3)\n")
    monkeypatch.setattr(locks, "GRACE_S", 60.0)  # this run waits for the first one however slow the machine
    first = subprocess.Popen([sys.executable, "-c", script, str(lock)], stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        assert first.stdout.readline().strip() == "held"
        with locks.hold(lock, "eval", "busy") as holder:  # waits (GRACE_S) for the first to fail and let go
            assert first.wait(timeout=60) == 3
            assert lock.exists() and locks.is_held(lock) and holder["pid"] != first.pid
            monkeypatch.setattr(locks, "GRACE_S", 0.2)
            with pytest.raises(locks.LockedError, match="busy"):
                with locks.hold(lock, "eval", "busy"):
                    raise AssertionError("two holders")
    finally:
        first.kill()
        first.wait()
