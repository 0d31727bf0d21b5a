"""The research tools refuse a number, list or fold no run can use in one line naming the argument, before they
read, render or train anything (a traceback minutes in, a silently skipped step, or a table of nothing, before)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parents[1] / "tools"
FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "real"


def _run(tool: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TOOLS / tool), *args], capture_output=True, text=True, timeout=60,
                          cwd=cwd)


@pytest.mark.parametrize(("args", "said"), [
    (["--size", "-5"], "argument --size: -5: give a whole number at least 16"),  # ingest failed after --out was made
    (["--test-size", "-1"], "argument --test-size: -1: give a whole number at least 0"),  # after training
    (["--k-fractions", "0.02,abc"], "argument --k-fractions: 0.02,abc: 'abc': give a number more than 0"),
    (["--k-fractions", "nan"], "argument --k-fractions: nan: give a finite number more than 0, at most 1"),
    (["--render-f-numbers", "abc"], "argument --render-f-numbers: 'abc': give a number more than 0"),
    (["--detail-band", "nan"], "argument --detail-band: nan: give a finite number at least 0"),  # silently skipped
    (["--real-pairs", "-1"], "argument --real-pairs: -1: give a whole number at least 0"),  # silently none
    (["--focus-gate", "-1"], "argument --focus-gate: -1: give a finite number at least 0"),
    (["--map-steps", "0"], "argument --map-steps: 0: give a whole number at least 1"),
    (["--local-gain", "nan"], "argument --local-gain: nan: give a finite number at least 0"),
])
def test_loso_real_refuses_a_number_no_fold_can_use_before_making_out(args, said, tmp_path):
    out = tmp_path / "out"
    proc = _run("loso_real.py", "--out", str(out), "--fixtures", str(FIXTURES), *args)
    assert proc.returncode == 2 and said in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not out.exists()


@pytest.mark.parametrize(("args", "said"), [
    (["--folds", "0001,0001"], "error: --folds 0001,0001: a fold given twice"),  # a traceback after one fold trained
    (["--minutes", "inf"], "error: --minutes inf: give a positive time limit"),
    (["--extra-photos", "/nonexistent"], "error: --extra-photos /nonexistent: no image/ or input/ folder"),
    (["--fixtures", "VABDONLY"], "error: --fixtures VABDONLY: no EBB/train/input/"),
    (["--out", "FILE/out"], "is a file, not a folder; give a new folder"),
])
def test_loso_real_refuses_folds_folders_and_time_it_cannot_use(args, said, tmp_path):
    (tmp_path / "VABDONLY" / "VABD" / "train" / "input").mkdir(parents=True)
    (tmp_path / "FILE").write_text("mine")
    out = ["--out", str(tmp_path / "out")] if "--out" not in args else []
    fixtures = [] if "--fixtures" in args else ["--fixtures", str(FIXTURES)]
    proc = _run("loso_real.py", *out, *fixtures, *args, cwd=tmp_path)
    assert proc.returncode == 1 and said in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["FILE", "VABDONLY"]
    assert (tmp_path / "FILE").read_text() == "mine"


@pytest.mark.parametrize(("tool", "args", "said"), [
    ("calibrate_renderer.py", ["--size", "0"], "argument --size: 0: give a whole number at least 16"),  # cv2 assert
    ("calibrate_renderer.py", ["--detail-band", "nan"], "argument --detail-band: nan: give a finite number"),
    ("calibrate_renderer.py", ["--refine-warp", "-1"], "argument --refine-warp: -1: give a finite number at least 0"),
    ("calibrate_renderer.py", ["--psf", "nope"], "argument --psf: nope: 'nope' is not one of area, band"),
    ("fit_veil.py", ["--size", "-5"], "argument --size: -5: give a whole number at least 16"),
    ("bench_eval_align.py", ["--sides", "0"], "argument --sides: 0: give a whole number at least 16"),
    ("bench_eval_align.py", ["--sides", "64,abc"], "argument --sides: 64,abc: 'abc': give a whole number"),
    ("bench_eval_align.py", ["--count", "0"], "argument --count: 0: give a whole number at least 1"),
    ("bench_eval_warp.py", ["--sides", "32"], "argument --sides: 32: give a whole number at least 64"),
    ("check_coc_estimator.py", ["--coc", "edge", "--real", "x", "--size", "0"], "argument --size: 0: give a whole"),
    ("check_coc_estimator.py", ["--coc", "edge", "x", "--limit", "0"], "argument --limit: 0: give a whole number"),
])
def test_fixture_tools_refuse_sizes_and_counts_in_one_line(tool, args, said):
    proc = _run(tool, *args)
    assert proc.returncode == 2 and said in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stdout == ""


def test_fit_veil_refuses_an_unknown_tune_stack_before_fitting_any():
    proc = _run("fit_veil.py", "--fixtures", str(FIXTURES), "--tune", "VABD 0009")
    assert proc.returncode == 1 and "error: --tune: no stack named 'VABD 0009' (stacks: VABD 0001" in proc.stderr
    assert proc.stdout == "", proc.stdout  # it fitted every stack first (minutes), before
