"""The benchmark tools the README and docs/benchmarks.md point to stop in one line on arguments they cannot run
with, before they make anything (a table of nan with exit 0, or a traceback after --out was made, before)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parents[1] / "tools"
FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "real"


@pytest.mark.parametrize(("args", "said"), [
    (["--fixtures", "/nonexistent"], "error: --fixtures /nonexistent: no VABD/train/input/"),
    (["--recipe", "nafnet-cpuu"], "did you mean 'nafnet-cpu'?"),
    (["--folds", "0009"], "error: --folds 0009: 0009 is not a fold (known: 0001, 0002, 0003, ebb)"),
    (["--minutes", "-1"], "error: --minutes -1: give a positive time limit"),
    (["--test-size", "8"], "error: --test-size 8: give at least 16 px, or 0 for the shots' own size"),
    (["--work-side", "autp"],
     "error: --work-side autp: give a long side of at least 8 px, trained, auto or 0 (own size)"),
])
def test_loso_real_refuses_what_no_fold_can_run_before_making_out(args, said, tmp_path):
    out = tmp_path / "out"
    base = ["--fixtures", str(FIXTURES)] if args[0] != "--fixtures" else []
    proc = subprocess.run([sys.executable, str(TOOLS / "loso_real.py"), "--out", str(out), *base, *args],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and said in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not out.exists()


def test_calibrate_renderer_without_fixtures_is_an_error_not_a_table_of_nan(tmp_path):
    proc = subprocess.run([sys.executable, str(TOOLS / "calibrate_renderer.py"), "--fixtures", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and f"error: {tmp_path}: no fixture stacks" in proc.stderr, proc.stderr
    assert "nan" not in proc.stdout


@pytest.mark.parametrize(("tool", "args", "said"), [
    ("dead_leaves.py", ["--size", "-5"], "error: --count 400 --size -5: give at least 1 scene of at least 16 px"),
    ("dead_leaves.py", ["--count", "0"], "error: --count 0 --size 128: give at least 1 scene"),  # wrote an empty set
    ("check_coc_estimator.py", ["--coc", "edge", "/nonexistent"], "error: no shards match"),
])
def test_more_tools_refuse_in_one_line(tool, args, said, tmp_path):
    out = tmp_path / "dl"
    lead = [str(out)] if tool == "dead_leaves.py" else []
    proc = subprocess.run([sys.executable, str(TOOLS / tool), *lead, *args], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 1 and said in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not out.exists()


@pytest.mark.parametrize(("tool", "args"), [
    ("bench_hidd_speed.py", ["--model", "m.safetensors", "--shards", "s"]),
    ("bench_hidd_samplers.py", ["--model", "m.safetensors", "--map-model", "c.safetensors", "--synthetic", "s"]),
])
def test_a_users_results_json_in_out_is_refused_before_any_work(tool, args, tmp_path):
    """--out holding a results.json the tool did not write (or a link there): one line, exit 2, the file intact
    (it was written over at the end of the run)."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "results.json").write_text('{"mine": 1}')
    (tmp_path / "elsewhere.json").write_text("theirs")
    for case in ("file", "link"):
        if case == "link":
            (out / "results.json").unlink()
            (out / "results.json").symlink_to(tmp_path / "elsewhere.json")
        proc = subprocess.run([sys.executable, str(TOOLS / tool), *args, "--out", str(out)], cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2 and f"{out / 'results.json'}: exists and was not written by {tool}" in proc.stderr
        assert "Traceback" not in proc.stderr, proc.stderr
    assert (tmp_path / "elsewhere.json").read_text() == "theirs" and sorted(p.name for p in out.iterdir()) == [
        "results.json"]


@pytest.mark.parametrize(("tool", "args"), [
    ("bench_resume.py", ["--steps", "1", "--repeats", "0"]),
    ("bench_misaligned.py", ["--fixtures", "/nonexistent"]),
])
def test_a_work_folder_of_the_users_is_never_removed(tool, args, tmp_path):
    work = tmp_path / "mine"
    work.mkdir()
    (work / "thesis.tex").write_text("precious")
    proc = subprocess.run([sys.executable, str(TOOLS / tool), "--work", str(work), *args], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert f"error: --work {work}: holds files {tool} did not make" in proc.stderr
    assert [p.name for p in work.iterdir()] == ["thesis.tex"] and (work / "thesis.tex").read_text() == "precious"
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    proc = subprocess.run([sys.executable, str(TOOLS / tool), "--work", str(a_file), *args], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 1 and f"error: --work {a_file}: exists and is not a folder" in proc.stderr
    assert a_file.read_text() == "mine"
