"""tools/bench_gpu_inference.py in its --tiny CPU mode: every row it promises is measured (the GPU figures are in
docs/benchmarks.md); this keeps the script from rotting."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

TOOL = Path(__file__).resolve().parents[1] / "tools" / "bench_gpu_inference.py"


def test_tiny_mode_measures_every_row(tmp_path: Path) -> None:
    out, profile = tmp_path / "tiny.json", tmp_path / "profile.txt"
    run = subprocess.run([sys.executable, str(TOOL), "--tiny", "--no-compile", "--repeat", "1", "--out", str(out),
                          "--profile-out", str(profile)], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "OMP_NUM_THREADS": "1", "DEFOCUSKIT_THREADS": "1"})
    assert run.returncode == 0, run.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    promised = {"rddm/fp32", "rddm/bf16", "dcn/eager", "nafnet/fp32", "nafnet/bf16", "hidd/released/fp32",
                "hidd/released/bf16", "hidd/released-eager", "hidd/released-graphed", "hidd/fast-eager",
                "hidd/fast-graphed", "hidd/net-eager", "hidd/net-bf16"}
    assert set(rows) == promised
    for name, row in rows.items():
        main = row.get("s_per_image", row.get("ms_per_call"))
        assert main is not None and math.isfinite(main) and main > 0, (name, row)
    assert rows["hidd/released-graphed"]["max_abs_diff"] == 0  # on a CPU both are the eager network
    assert 0 < rows["rddm/bf16"]["max_abs_diff"] < 0.1 and rows["nafnet/bf16"]["speedup"] > 0
    assert "grid_sampler" in profile.read_text()  # the operator table of one RDDM image
    assert "| rddm/fp32 |" in run.stdout
    again = subprocess.run([sys.executable, str(TOOL), "--tiny", "--no-compile", "--repeat", "1", "--out", str(out),
                            "--profile-out", str(profile), "--hidd-steps", "1"], capture_output=True, text=True,
                           timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1", "DEFOCUSKIT_THREADS": "1"})
    assert again.returncode == 0, again.stderr[-2000:]  # its own files: replaced


def test_a_users_file_or_a_folder_at_out_is_refused_before_any_row(tmp_path: Path) -> None:
    notes, folder = tmp_path / "notes.json", tmp_path / "folder"
    notes.write_text('{"my": "results"}')
    folder.mkdir()
    for args, said in ((["--out", str(notes)], f"--out {notes}: exists and was not written by bench_gpu_inference"),
                       (["--profile-out", str(notes)], f"--profile-out {notes}: exists and was not written by"),
                       (["--out", str(folder)], f"--out {folder}: is a folder"),
                       (["--out", str(notes / "x.json")], f"--out {notes / 'x.json'}: {notes} is not a folder")):
        run = subprocess.run([sys.executable, str(TOOL), "--tiny", "--repeat", "1", *args], capture_output=True,
                             text=True, timeout=300)
        assert run.returncode == 2 and run.stderr.startswith(f"error: {said}"), run.stderr
        assert len(run.stderr.strip().splitlines()) == 1 and run.stdout == ""
    assert notes.read_text() == '{"my": "results"}' and list(folder.iterdir()) == []
