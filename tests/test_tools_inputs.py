"""The research tools refuse inputs of the wrong kind in one line before any work: a shard folder that is missing
or of another kind, a scene or fold that is not there, a model file of another method, a report that is not an
eval's, an OUT holding the user's files; and they never print a table of nothing with exit 0."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parents[1] / "tools"


def _run(tool: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TOOLS / tool), *args], capture_output=True, text=True, timeout=90,
                          cwd=cwd)


@pytest.fixture(scope="module")
def builtin(tmp_path_factory) -> Path:
    """`ingest --synthetic builtin` at 32 px, and beside it (pairs/) its test split without the references."""
    root = tmp_path_factory.mktemp("builtin")
    proc = subprocess.run([sys.executable, "-m", "defocuskit", "ingest", "--synthetic", "builtin", "--synthetic-size",
                           "32", "--out", str(root / "shards"), "--workers", "1"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    (root / "pairs").mkdir()
    with tarfile.open(root / "shards" / "test-000000.tar") as src, \
            tarfile.open(root / "pairs" / "test-000000.tar", "w") as dst:
        for member in src.getmembers():
            if "/sharp." not in member.name:
                dst.addfile(member, src.extractfile(member))
    return root


def test_reference_sharpness_refuses_no_shards_and_no_references(builtin, tmp_path):
    for args, said in (([str(tmp_path / "none")], "no shards match"),  # a traceback, before
                       ([str(builtin / "shards"), "--splits", "tset"], "no shards match"),
                       ([str(builtin / "pairs"), "--splits", "test"], "no reference (a sample with no blurred "
                                                                      "image) in split test")):  # an empty table
        proc = _run("reference_sharpness.py", *args)
        assert proc.returncode != 0 and said in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
        assert proc.stdout == ""


def test_reference_sharpness_names_the_photograph_not_the_split(builtin):
    from importlib import util

    spec = util.spec_from_file_location("reference_sharpness", TOOLS / "reference_sharpness.py")
    module = util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.photograph("vabd/test/0001/f16") == "0001"  # was "test": every VABD scene in one row
    assert module.photograph("synthetic/chelsea_v2/sharp") == "chelsea"
    assert module.photograph("synthetic/motorcycle_left/sharp") == "motorcycle_left"


@pytest.mark.parametrize(("rows", "said"), [
    ([1], "row 0 has no method"),
    ([{"method": "input", "f_number": 1.8, "psnr": 20.0}], "row 0 (input) has no n, psnr_input"),
    ([{"method": "run", "f_number": 1.8, "n": 1, "psnr": "x", "psnr_input": 20.0}], "row 0 (run) has psnr='x'"),
])
def test_report_table_refuses_rows_that_are_not_an_eval_reports(rows, said, tmp_path):
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"rows": rows}))
    proc = _run("report_table.py", str(report))
    assert proc.returncode == 1 and said in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_report_table_shows_a_metric_the_eval_did_not_score_as_a_dash(tmp_path):
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"rows": [{"method": "run", "f_number": None, "n": 2, "psnr": 22.0,
                                            "psnr_input": 20.0, "ssim": None, "ssim_input": None}]}))
    proc = _run("report_table.py", str(report), "--metric", "ssim")
    assert proc.returncode == 0 and "| run | - |" in proc.stdout, proc.stderr


@pytest.mark.parametrize(("tool", "args", "said"), [
    ("dead_leaves.py", ["OUT", "--seed", "-1"], "error: --seed -1: give a seed of at least 0"),
    ("dead_leaves.py", ["OUT", "--size", "100000000"], "error: --size 100000000: at most 4096 px"),  # MemoryError
    ("dead_leaves.py", ["FILE/out"], "FILE is a file, not a folder; give a new folder"),
    ("export_builtin_photos.py", ["OUT", "--max-side", "3"], "argument --max-side: 3: give a whole number"),
    ("export_builtin_photos.py", ["OUT", "--seed", "-1"], "argument --seed: -1: give a whole number at least 0"),
    ("export_builtin_photos.py", ["FILE/out"], "FILE is a file, not a folder; give a new folder"),
])
def test_scene_writers_refuse_before_making_out(tool, args, said, tmp_path):
    (tmp_path / "FILE").write_text("mine")
    proc = _run(tool, *args, cwd=tmp_path)
    assert proc.returncode != 0 and said in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["FILE"]


@pytest.mark.parametrize(("args", "said"), [
    (["--only", "real_pair"], "argument --only: real_pair: 'real_pair' is not one of real pair"),  # an empty table
    (["--motion", "nope"], "argument --motion: invalid choice: 'nope'"),  # after minutes of renders
    (["--min-score", "nan"], "argument --min-score: nan: give a finite number"),  # every case rejected
    (["--ladder", "abc"], "argument --ladder: 'abc': give a number more than 0"),
    (["--cache", "FILE"], "argument --cache: FILE: exists and is not a folder"),
])
def test_bench_registration_bokeh_refuses_in_one_line(args, said, tmp_path):
    (tmp_path / "FILE").write_text("mine")
    proc = _run("bench_registration_bokeh.py", *args, cwd=tmp_path)
    assert proc.returncode == 2 and said in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


@pytest.mark.parametrize("tool", ["prox_depth_coc.py", "blur_by_region.py"])
def test_vabd_region_tools_refuse_shards_of_another_scene_or_kind(tool, builtin):
    for item, said in (("0009=x", "0009=x: give ID=DIR with ID a VABD stack"),  # KeyError, before
                       ("0001=/nonexistent", "0001=/nonexistent: no shards match /nonexistent"),
                       (f"0001={builtin / 'shards'}", "not the real VABD 0001 shots")):  # a table of other photos
        proc = _run(tool, "--shards", item)
        assert proc.returncode == 2 and said in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
        assert proc.stdout == ""


@pytest.mark.parametrize("tool", ["map_by_photo.py", "tune_map_quantile.py"])
def test_map_tools_check_shards_scenes_and_out_before_training(tool, builtin, tmp_path):
    shards, out = builtin / "shards", tmp_path / "out"
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    cases = [([str(tmp_path / "none"), str(out)], "error: SHARDS no shards match"),
             ([str(shards), str(out), "--hold", "coffee,nosuch"], "'nosuch' is no scene of"),  # after coffee trained
             ([str(shards), str(mine), "--hold", "coffee"], f"error: OUT {mine}: holds files {tool} did not make"),
             ([str(shards), str(out), "--steps", "0"], "argument --steps: 0: give a whole number at least 1")]
    if tool == "tune_map_quantile.py":
        model = tmp_path / "m.safetensors"
        model.write_text("not a model")
        cases.append(([str(shards), str(out), "--hidd", str(model)],
                      f"error: --hidd {model}: not a safetensors file: a text file"))
    for args, said in cases:
        proc = _run(tool, *args)
        assert proc.returncode != 0 and said in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
        assert not out.exists()
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]


def test_in_domain_gain_checks_every_fold_before_rendering_any(tmp_path):
    fold = tmp_path / "loso" / "0001"
    (fold / "run").mkdir(parents=True)
    (fold / "run" / "model.safetensors").write_text("")
    rows = [{"method": m, "f_number": f, "psnr_input": 25.0, "psnr_gain": 0.1} for m in ("input", "run")
            for f in (1.8, 2.8, 8.0)]
    for report in ("report", "report-detail"):
        (fold / report).mkdir()
        (fold / report / "report.json").write_text(json.dumps({"rows": rows}))
    loso = str(tmp_path / "loso")
    for args, said in (([loso, "--folds", "0001"], "0001: " + str(fold / "report" / "report.json") + " has no run#2 "
                                                   "f/1.8 row"),  # a KeyError after every render was scored
                       ([loso, "--folds", "0001,0001"], "0001: given twice"),
                       ([loso, "--folds", "ebb", "--k", "ebb:5"], "ebb: not a VABD fold"),
                       ([loso, "--k", "abc"], "error: --k abc: 'abc' is not FOLD:PX")):
        proc = _run("in_domain_gain.py", *args)
        assert proc.returncode == 1 and said in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert sorted(p.name for p in fold.iterdir()) == ["report", "report-detail", "run"]  # no in-domain/ made
