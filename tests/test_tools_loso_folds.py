"""tools/loso_real.py's folds: no held-out scene's photograph (reference, shots, depth map, focal mask) reaches a
fold's training photos or real pairs, its test folder holds exactly that scene's shots, and the summary over folds
keeps the VABD folds apart from fold `ebb` (another camera and protocol)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parents[1] / "tools"
sys.path.insert(0, str(TOOLS))

from loso_real import SCENES, real_pairs_folder, render_folder, summary_lines  # noqa: E402
from loso_real import test_folder as held_out_folder  # noqa: E402  (not a test)


def _targets(folder: Path, fixtures: Path) -> set[str]:
    """The fixture files (relative to the fixtures' root) a fold folder links."""
    return {os.path.relpath(os.path.realpath(p), os.path.realpath(fixtures)) for p in folder.rglob("*")
            if p.is_symlink()}


@pytest.mark.parametrize("held", [*SCENES, "ebb"])
def test_no_held_out_photograph_reaches_the_folds_training(held: str, real_fixture_root: Path, tmp_path: Path) -> None:
    fixtures = real_fixture_root
    render_folder(fixtures, held, tmp_path / "photos")
    held_out_folder(fixtures, held, tmp_path / "real")
    real_pairs_folder(fixtures, held, tmp_path / "real-pairs")
    trained = _targets(tmp_path / "photos", fixtures) | _targets(tmp_path / "real-pairs", fixtures)
    tested = _targets(tmp_path / "real", fixtures)
    if held == "ebb":
        held_files = {str(p.relative_to(fixtures)) for p in (fixtures / "EBB" / "test").rglob("*") if p.is_file()}
        expected = {f for f in held_files if f.split("/")[2] in ("input", "target")}
    else:
        held_files = {str(p.relative_to(fixtures)) for p in (fixtures / "VABD").rglob(f"{held}.*")}
        expected = {f for f in held_files if f.split("/")[2] in ("input", "1_8", "2_8", "8")}
    assert held_files and not trained & held_files
    assert tested == expected
    others = {str(p.relative_to(fixtures)) for p in fixtures.rglob("*") if p.is_file() and p.suffix != ".md"
              and not p.relative_to(fixtures).as_posix().startswith("EBB/test/target/")}  # fold ebb's shots: no render
    assert trained == others - held_files  # every other reference, depth map, focal mask and real pair is trained on


def test_summary_keeps_fold_ebb_apart_from_the_vabd_folds() -> None:
    def rows(gain: float) -> list[dict]:
        return [{"method": "run", "f_number": 1.8, "psnr": 20.0 + gain, "psnr_input": 20.0}]

    results = {"0001": {"rows": rows(0.3)}, "0003": {"rows": rows(0.1)}, "ebb": {"rows": rows(-0.5)}}
    table = summary_lines(results, 16)
    assert "| run | all | VABD | f/1.8 | 2 | +0.20 | +0.10 | +0.30 |" in table
    assert "| run | all | EBB test | f/1.8 | 1 | -0.50 | -0.50 | -0.50 |" in table
    assert len(table) == 4
