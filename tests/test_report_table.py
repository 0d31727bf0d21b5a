"""tools/report_table.py: the table of an eval report shows the rows over every source, not the last source's."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

TOOL = Path(__file__).resolve().parents[1] / "tools" / "report_table.py"


def _tool():
    spec = importlib.util.spec_from_file_location("report_table", TOOL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _row(method, f, source, psnr, n):
    return {"method": method, "f_number": f, "source": source, "psnr": psnr, "psnr_input": 20.0, "n": n}


def test_a_by_source_report_shows_the_overall_rows_or_the_source_asked_for(tmp_path):
    rows = []
    for source, psnr, n in ((None, 22.78, 6), ("ebb", 25.1, 3), ("vabd", 20.47, 3)):  # overall first, then sources
        rows += [_row("input", 1.8, source, psnr, n), _row("input", None, source, psnr + 2, n)]
    table = _tool().table({"rows": rows})
    assert "| input | 22.78 | 24.78 |" in table and "20.47" not in table and "f/1.8 6" in table
    assert "| input | 20.47 | 22.47 |" in _tool().table({"rows": rows}, source="vabd")
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"rows": rows}))
    for args, said in (([str(report), "--source", "dpdd"], "no rows for source 'dpdd' (the report's sources: ebb, "
                                                           "vabd)"),
                       ([str(tmp_path / "nope.json")], "nope.json: [Errno 2]"), ([str(TOOL)], "report_table.py: ")):
        proc = subprocess.run([sys.executable, str(TOOL), *args], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 1 and said in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_ssim_and_mae_keep_the_digits_their_gains_are_in():
    """SSIM and MAE gains are thousandths: at two decimals every MAE gain read -0.00 and SSIM rounded to 0.01."""
    rows = [{"method": m, "f_number": 1.8, "source": None, "n": 3, "ssim": s, "ssim_input": 0.8171, "mae": a,
             "mae_input": 0.0360} for m, s, a in (("input", 0.8171, 0.0360), ("wiener", 0.8548, 0.0315))]
    assert "| wiener | 0.8548 (+0.0377) |" in _tool().table({"rows": rows}, "ssim")
    assert "| wiener | 0.0315 (-0.0045) |" in _tool().table({"rows": rows}, "mae")
    assert "| wiener | 0.0315 (-0.0045) |" not in _tool().table({"rows": [dict(r, psnr=20.0, psnr_input=19.0)
                                                                          for r in rows]}, "psnr")
