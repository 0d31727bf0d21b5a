"""A full disk: one line naming the path and its disk, and the previous outputs left as they were (issue 21)."""

from __future__ import annotations

import errno
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from defocuskit.io import atomic, staging
from defocuskit.io.atomic import DiskFullError, atomic_write, disk_full_line
from defocuskit.io.staging import STAGING, staged_files

REPO = Path(__file__).resolve().parents[1]


class _FullFile:
    """A file object whose writes fail as on a full disk."""

    def __init__(self, *args, **kwargs):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def write(self, data):
        raise OSError(errno.ENOSPC, "No space left on device")


def test_atomic_write_on_a_full_disk_names_the_path_and_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "report.json"
    target.write_text('{"old": true}')
    monkeypatch.setattr(atomic, "open", _FullFile, raising=False)
    with pytest.raises(DiskFullError) as info:
        atomic_write(target, "{}" * 10000)
    assert str(info.value).startswith(f"{target}: disk full (") and "MiB free" in str(info.value)
    assert target.read_text() == '{"old": true}' and [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_staged_files_replace_together_or_not_at_all(tmp_path):
    for name, text in (("a.json", "old a"), ("b.csv", "old b"), ("c.png", "old c")):
        (tmp_path / name).write_text(text)
    with pytest.raises(DiskFullError, match="disk full"):
        with staged_files(tmp_path, ["c.png", "b.csv", "a.json"]) as stage:
            (stage / "b.csv").write_text("new b")
            raise OSError(errno.ENOSPC, "No space left on device")
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == {"a.json": "old a", "b.csv": "old b", "c.png": "old c"}
    with staged_files(tmp_path, ["c.png", "b.csv", "a.json"]) as stage:
        (stage / "a.json").write_text("new a")
        (stage / "b.csv").write_text("new b")
    # c.png was not written this time: the earlier run's file does not stay beside the new report
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == {"a.json": "new a", "b.csv": "new b"}


def _staging_folders(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(STAGING) and p.is_dir())


def test_only_the_staging_folders_a_killed_run_listed_are_cleared(tmp_path):
    names = ["c.png", "b.csv", "a.json"]
    (tmp_path / "a.json").write_text("old a")
    mine = [STAGING, f"{STAGING}.0123abcd"]  # the user's: an older version's name, and one no journal lists
    for name in mine:
        (tmp_path / name).mkdir()
        (tmp_path / name / "b.csv").write_text("mine")
    killed = ("import os, sys\nfrom defocuskit.io.staging import staged_files\n"
              f"with staged_files(sys.argv[1], {names!r}) as stage:\n"
              "    (stage / 'b.csv').write_text('half of a killed run b')\n"
              "    os.kill(os.getpid(), 9)\n")
    run = subprocess.run([sys.executable, "-c", killed, str(tmp_path)], cwd=REPO, capture_output=True, timeout=120)
    assert run.returncode == -9, run.stderr[-2000:]
    left = [n for n in _staging_folders(tmp_path) if n not in mine]
    assert len(left) == 1 and json.loads((tmp_path / staging.STAGING_JOURNAL).read_text()) == {"staging": left}
    with staged_files(tmp_path, names) as stage:
        assert stage.name not in mine + left and not (stage / "b.csv").exists()
        (stage / "a.json").write_text("new a")
    assert _staging_folders(tmp_path) == mine and all((tmp_path / n / "b.csv").read_text() == "mine" for n in mine)
    assert (tmp_path / "a.json").read_text() == "new a" and not (tmp_path / staging.STAGING_JOURNAL).exists()


def test_a_listed_staging_folder_holding_anything_else_and_a_foreign_journal_are_refused(tmp_path):
    names = ["c.png", "b.csv", "a.json"]
    (tmp_path / "a.json").write_text("old a")
    stage = tmp_path / f"{STAGING}.89abcdef"
    stage.mkdir()
    (stage / "notes.txt").write_text("mine")  # not a name the report stages
    journal = tmp_path / staging.STAGING_JOURNAL
    journal.write_text(json.dumps({"staging": [stage.name]}))
    with pytest.raises(FileExistsError, match=r"\.defocuskit-staging\.89abcdef: a staging folder a killed run left"):
        with staged_files(tmp_path, names):
            raise AssertionError("not reached")
    assert (stage / "notes.txt").read_text() == "mine" and (tmp_path / "a.json").read_text() == "old a"
    assert json.loads(journal.read_text()) == {"staging": [stage.name]}  # still listed: refused again next time
    # a tampered journal is never acted on: its entries are not names this module makes
    (tmp_path / "keep").mkdir()
    (tmp_path / "keep" / "b.csv").write_text("mine too")
    journal.write_text(json.dumps({"staging": ["keep", "..", "../keep", f"{STAGING}.89ABCDEF"]}))
    with staged_files(tmp_path, names) as new:
        (new / "a.json").write_text("new a")
    assert (stage / "notes.txt").read_text() == "mine" and not journal.exists()
    assert (tmp_path / "a.json").read_text() == "new a" and (tmp_path / "keep" / "b.csv").read_text() == "mine too"
    journal.write_text("my own notes")  # a file at the journal's name that no run wrote
    with pytest.raises(FileExistsError, match=r"\.defocuskit-staging\.json: in the way of the staging journal"):
        with staged_files(tmp_path, names):
            raise AssertionError("not reached")
    assert journal.read_text() == "my own notes"


def test_a_report_killed_while_its_files_replace_the_earlier_ones_is_finished_by_the_next_run(tmp_path):
    """kill -9 between two renames of the report's files left a new report.csv beside the old report.json: the next
    eval refused the folder ("report.csv: changed since"), for good; now it sees and finishes the killed run's files."""
    from defocuskit.eval.report import check_report_folder, write_report_files

    def report(method):
        return {"protocol": {"split": "test"}, "rows": [{"method": method}], "images": [], "notes": []}

    write_report_files(report("first"), tmp_path, None, False, False)
    killed = ("import os, sys\nfrom pathlib import Path\nfrom defocuskit.eval.report import write_report_files\n"
              "real = os.replace\n"
              "def replace(src, dst):\n"
              "    real(src, dst)\n"
              "    if str(dst).endswith('report.csv'):\n"
              "        os.kill(os.getpid(), 9)  # before report.json replaces the earlier one\n"
              "os.replace = replace\n"
              "write_report_files({'protocol': {'split': 'test'}, 'rows': [{'method': 'killed'}], 'images': [], "
              "'notes': []}, Path(sys.argv[1]), None, False, False)\n")
    run = subprocess.run([sys.executable, "-c", killed, str(tmp_path)], cwd=REPO, capture_output=True, timeout=120)
    assert run.returncode == -9, run.stderr[-2000:]
    assert "killed" in (tmp_path / "report.csv").read_text() and "first" in (tmp_path / "report.json").read_text()
    check_report_folder(tmp_path)  # the killed run's files, as they will be: not "changed since"
    write_report_files(report("third"), tmp_path, None, False, False)
    written = json.loads((tmp_path / "report.json").read_text())
    assert written["rows"] == [{"method": "third"}] and "third" in (tmp_path / "report.csv").read_text()
    assert written["sha256"]["report.csv"] == staging.file_sha256(tmp_path / "report.csv")
    assert _staging_folders(tmp_path) == [] and not (tmp_path / staging.STAGING_JOURNAL).exists()
    # and a run killed there with nothing after it: the next staged_files finishes the killed one's files first
    run = subprocess.run([sys.executable, "-c", killed, str(tmp_path)], cwd=REPO, capture_output=True, timeout=120)
    assert run.returncode == -9, run.stderr[-2000:]
    with pytest.raises(RuntimeError, match="stopped"):
        with staged_files(tmp_path, ["figure.png", "aperture.png", "report.csv", "report.json"]):
            assert "killed" in (tmp_path / "report.json").read_text()
            raise RuntimeError("stopped")  # this run's own files: not written
    assert "killed" in (tmp_path / "report.csv").read_text() and "killed" in (tmp_path / "report.json").read_text()
    check_report_folder(tmp_path)


def test_library_write_failures_count_as_disk_full_only_when_the_disk_is_full(tmp_path, monkeypatch):
    torch_style = RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing "
                               "file data/0: file write failed")
    assert disk_full_line(torch_style, [str(tmp_path)]) is None  # this disk has room: not misreported

    class Usage:
        free = 4096

    monkeypatch.setattr(atomic.shutil, "disk_usage", lambda path: Usage())
    line = disk_full_line(torch_style, [str(tmp_path / "run" / "model.safetensors")])
    assert line is not None and line.startswith(f"{tmp_path / 'run' / 'model.safetensors'}: disk full (")
    assert disk_full_line(ValueError("bad value")) is None
    wrapped = RuntimeError("saving failed")
    wrapped.__cause__ = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "x.tar"))
    assert disk_full_line(wrapped).startswith(f"{tmp_path / 'x.tar'}: disk full")


def test_eval_on_a_full_disk_is_one_line_and_keeps_the_previous_report(tmp_path):
    from test_eval import _crop_pairs, _write_shards

    pairs = _crop_pairs(2)
    for p, f in zip(pairs, (2.8, 8.0)):
        p["meta"]["f_number"] = f
    shards = _write_shards(tmp_path / "shards", "test", pairs)
    report = tmp_path / "rep"
    args = ["eval", "--shards", str(shards), "--baseline", "input", "--report", str(report)]
    ok = subprocess.run([sys.executable, "-m", "defocuskit", *args], cwd=REPO, capture_output=True, text=True,
                        timeout=300)
    assert ok.returncode == 0, ok.stderr[-3000:]
    before = {p.name: p.read_bytes() for p in report.iterdir() if p.is_file() and not p.name.startswith(".")}
    assert {"report.json", "report.csv", "aperture.png"} <= set(before)
    script = (
        "import errno, sys\n"
        "from pathlib import Path\n"
        "import defocuskit.eval.report as ev  # write_report_files calls it\n"
        "def full(report, folder, by_source=False, sha256_of=None):\n"
        "    (Path(folder) / 'report.json').write_bytes(b'{' * 8192)  # what a full disk leaves\n"
        "    raise OSError(errno.ENOSPC, 'No space left on device')\n"
        "ev.write_report = full\n"
        "sys.argv = ['defocuskit', *sys.argv[1:]]\n"
        "from defocuskit.cli.app import main\n"
        "main()\n")
    full = subprocess.run([sys.executable, "-c", script, *args], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert full.returncode == 1, full.stderr[-3000:]
    lines = full.stderr.strip().splitlines()
    assert lines[-1].startswith(f"error: {report}: disk full (") and "Traceback" not in full.stderr
    after = {p.name: p.read_bytes() for p in report.iterdir() if p.is_file() and not p.name.startswith(".")}
    assert after == before
    assert json.loads(after["report.json"])["rows"] and _staging_folders(report) == []
    assert not (report / staging.STAGING_JOURNAL).exists()
    assert np.isfinite([r["psnr"] for r in json.loads(after["report.json"])["rows"]]).all()


def test_the_disk_looked_at_first_is_the_one_written_to():
    from defocuskit.cli.options import output_paths as _output_paths

    assert _output_paths(["ingest", "--raw-dir", "photos", "--out", "shards", "--workers", "2"])[0] == "shards"
    assert _output_paths(["train", "nafnet-tiny", "output_dir=/runs/a", "data.train=s"])[0] == "/runs/a"
    assert _output_paths(["eval", "--shards", "s", "--report=rep"])[0] == "rep"


def test_free_space_under_a_mebibyte_is_said_in_kibibytes_or_bytes():
    assert [atomic._size(n) for n in (600 * 2**10, 3 * 2**20 + 1, 100, 0)] == ["600 KiB", "3 MiB", "100 bytes",
                                                                               "0 bytes"]
