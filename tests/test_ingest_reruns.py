"""Ingest run more than once into one folder: parts side by side, reruns after the folder changed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_ingest import NAME, keys_of, make_inputs, opts

from defocuskit.data import sources as sources_table
from defocuskit.data.ingest import run_ingest
from defocuskit.data.reader import read_manifest
from defocuskit.data.sample import IngestOptions
from defocuskit.io import locks

SYNTHETIC = {"synthetic": Path("builtin")}


@pytest.fixture
def fake(monkeypatch):
    """test_ingest's fake source (every `*.png` of the root a scene) as the source NAME."""
    monkeypatch.setitem(sources_table.SOURCES, NAME, "test_ingest")


def synthetic_opts(out: Path, **kw) -> IngestOptions:
    return IngestOptions(out=str(out), workers=0, synthetic_size=32, shard_size=kw.pop("shard_size", 16), **kw)


def test_a_part_starting_while_another_describes_itself_is_not_taken_for_another_plan(tmp_path):
    """Parts started together: one found another's run lock held before its holder's description was written and
    stopped with 'another run with different inputs or options' (8 parts at once: 3 of them)."""
    out = tmp_path / "out"
    single = run_ingest(SYNTHETIC, synthetic_opts(tmp_path / "one"), progress=False)
    code = ("import time; import defocuskit.io.locks as L; from pathlib import Path; "
            "from defocuskit.data.ingest import run_ingest; from defocuskit.data.sample import IngestOptions\n"
            "write = L.atomic_write\n"
            "def slow(path, *a, **k):\n"
            "    if str(path).endswith('.holder'): time.sleep(2.0)\n"
            "    return write(path, *a, **k)\n"
            "L.atomic_write = slow\n"
            f"run_ingest({{'synthetic': Path('builtin')}}, IngestOptions(out={str(out)!r}, workers=0, "
            "synthetic_size=32, shard_size=16, part=(0, 2)), progress=False)")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[1]))
    first = subprocess.Popen([sys.executable, "-c", code], env=env)
    lock, deadline = out / ".run-1of2.lock", time.time() + 60
    while not locks.is_held(lock) and time.time() < deadline and first.poll() is None:
        time.sleep(0.01)
    assert locks.is_held(lock), "the first part ended before the second could start beside it"
    second = run_ingest(SYNTHETIC, synthetic_opts(out, part=(1, 2)), progress=False)
    assert first.wait(60) == 0
    assert second["counts"]["samples"] > 0
    merged = read_manifest(out)
    assert merged["complete"] is True
    assert merged["counts"] == single["counts"] and merged["shards"] == single["shards"]


def test_a_shard_replaced_by_another_of_the_same_size_is_written_anew(tmp_path, fake):
    """A tar copied over another of the same size was taken for done (only the size was recorded): the folder held
    one sample twice, lost the other, and its manifest said complete."""
    root = make_inputs(tmp_path / "in", n_train=4, n_test=0)
    shutil.copy(root / "s00.png", root / "s02.png")  # two scenes alike: their shards have the same size
    out = tmp_path / "out"
    run_ingest({NAME: root}, opts(out, shard_size=1), progress=False)
    expected = sorted(keys_of(out))
    first, third = out / "train-000000.tar", out / "train-000002.tar"
    assert first.stat().st_size == third.stat().st_size and first.read_bytes() != third.read_bytes()
    shutil.copy(first, third)
    again = run_ingest({NAME: root}, opts(out, shard_size=1), progress=False)
    assert again["run"]["shards_written"] == 1 and again["complete"] is True
    assert sorted(keys_of(out)) == expected


def test_a_part_killed_and_rerun_writes_the_bytes_a_clean_run_writes(tmp_path, fake):
    """Each tar member carried the wall-clock time of its writing: no rerun, part or resumed run wrote the bytes of
    a clean run, and two clean runs of one command differed."""
    root = make_inputs(tmp_path / "in")
    run_ingest({NAME: root}, opts(tmp_path / "one"), progress=False)
    (root / "interrupt_at").write_text("fake/train/s04")
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        run_ingest({NAME: root}, opts(out, part=(0, 2)), progress=False)
    (root / "interrupt_at").unlink()
    for part in (1, 0):
        run_ingest({NAME: root}, opts(out, part=(part, 2)), progress=False)
    tars = sorted(p.name for p in (tmp_path / "one").glob("*.tar"))
    assert tars == sorted(p.name for p in out.glob("*.tar"))
    for name in tars:
        assert (out / name).read_bytes() == (tmp_path / "one" / name).read_bytes(), name
