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
